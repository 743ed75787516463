//! The P6OS agent as a library: `/init` of the initramfs, PID 1 of the minimal base, the
//! upgrade and registration commands. The `p6os-agent` binary is [`main`] and nothing else.
//!
//! **Pure modules** (text and bytes in, values out; no syscalls, no files, no clock; unit tested
//! beside the code, and the parsers of untrusted bytes fuzzed in `fuzz/`): `cli`, `cmdline`,
//! `uevent`, `bootdisk`, `efivar`, `modules`, `mountinfo`, `plan`, `policy`, `netconf`,
//! `slots`, `firstboot::source`, `firstboot::render`, `firstboot::applied`, `grow::rules`,
//! `register::state`.
//! The on-disk contract (GPT, entry names, the slot manifest) is `p6os_layout`'s.
//!
//! **Modules that touch the machine**: `sys` (syscalls), `loader` (EFI variables), `boot`
//! (the initramfs stage), `service` (PID 1), `sysconfig`, `net`, `fatal`, `log`, `health`,
//! `units`, `firstboot` (discovery and the transaction), `grow` (disk growth), `upgrade`,
//! `register`.

#[macro_use]
pub mod log;

pub mod boot;
pub mod bootdisk;
pub mod bootfail;
pub mod cli;
pub mod clock;
pub mod cmdline;
pub mod diagnostics;
pub mod dm;
pub mod efivar;
pub mod fatal;
pub mod firstboot;
pub mod grow;
pub mod health;
pub mod loader;
pub mod modules;
pub mod mountinfo;
pub mod net;
pub mod netconf;
pub mod plan;
pub mod policy;
pub mod register;
pub mod service;
pub mod slots;
pub mod sys;
pub mod sysconfig;
pub mod uevent;
pub mod units;
pub mod upgrade;

use std::ffi::OsString;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};

use cli::Mode;

/// The whole program: what `p6os-agent`'s `main` runs.
pub fn main() {
    log::mark_start();
    fatal::install_panic_hook();
    let args: Vec<OsString> = std::env::args_os().collect();
    let code = match panic::catch_unwind(AssertUnwindSafe(|| run(&args))) {
        Ok(code) => code,
        // The hook has logged it (and, as PID 1, rebooted).
        Err(_) => fatal::die("panic escaped to main"),
    };
    if sys::is_pid1() {
        fatal::die(&format!("pid 1 would exit with status {code}"));
    }
    std::process::exit(code)
}

fn run(args: &[OsString]) -> i32 {
    let mut mode = cli::mode_from_args(args);
    if sys::is_pid1() {
        mode = cli::mode_as_pid1(mode);
    }
    match mode {
        Mode::Initramfs => match boot::run(&cli::init_args(args)) {
            Err(e) => fatal::die(&log::error_chain(&e)),
            Ok(never) => match never {},
        },
        Mode::Service => service::run(),
        Mode::Upgrade(a) => upgrade::upgrade(&a),
        Mode::Status(f) => upgrade::status(f),
        Mode::Rollback(after) => upgrade::rollback(after),
        Mode::InstallInto(a) => upgrade::install_into(&a),
        Mode::AssessBoot => {
            if log::attach_kmsg().is_err() {
                log::forget_pending();
            }
            upgrade::assess::at_boot();
            0
        }
        Mode::Register => {
            if log::attach_kmsg().is_err() {
                log::forget_pending();
            }
            register::main()
        }
        Mode::FirstBoot => units::firstboot(),
        Mode::ImportImages => units::import_images(),
        Mode::Version => {
            let _ = writeln!(std::io::stdout(), "p6os-agent {}", cli::VERSION);
            0
        }
        Mode::Help => {
            let _ = write!(std::io::stdout(), "{}", cli::USAGE);
            0
        }
        Mode::Usage(problem) => {
            let _ = write!(std::io::stderr(), "p6os-agent: {problem}\n\n{}", cli::USAGE);
            2
        }
    }
}
