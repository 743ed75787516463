//! Fatal errors and panics: log `p6os-agent: fatal: ...`, then (as PID 1) wait, sync and
//! reboot so that boot counting can fall back to the other slot. Never returns as PID 1.

use std::thread;
use std::time::Duration;

use crate::log::{self, Level};
use crate::policy::Shutdown;
use crate::sys;

/// Time to read the message on the console before the reboot.
const FATAL_DELAY: Duration = Duration::from_secs(5);

/// Logs the error; as PID 1 reboots, otherwise exits with status 1.
pub fn die(msg: &str) -> ! {
    // /dev may have been mounted since the last attempt; lines kept so far follow.
    let _ = log::attach_kmsg();
    log::log(Level::Fatal, msg);
    if sys::is_pid1() {
        reboot_after_fatal()
    }
    std::process::exit(1)
}

fn reboot_after_fatal() -> ! {
    log::log(
        Level::Fatal,
        &format!("rebooting in {} s", FATAL_DELAY.as_secs()),
    );
    thread::sleep(FATAL_DELAY);
    sys::sync();
    loop {
        let err = sys::reboot(Shutdown::Reboot);
        log::log(Level::Fatal, &format!("reboot failed: {err}; retrying"));
        thread::sleep(FATAL_DELAY);
    }
}

/// Every panic is fatal: logged on one line, then as PID 1 the reboot happens from the
/// hook itself (the shipped agent is built with `panic = "abort"`: nothing unwinds). Elsewhere
/// the process aborts after the hook (test builds unwind to the `catch_unwind` in main).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let _ = log::attach_kmsg();
        let msg = info.to_string().replace('\n', " ");
        log::log(Level::Fatal, &msg);
        if sys::is_pid1() {
            reboot_after_fatal()
        }
    }));
}
