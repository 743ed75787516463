//! Site setup at the appliance's console: on a device that has never been configured, the
//! agent announces a short pause on every console (serial and the first virtual terminal);
//! a key pressed there opens the setup screens of `p6os site` (`p6os_site`) on that console,
//! filled with the document found (or empty), and the document saved goes through the same
//! first-boot transaction as one from a configuration drive. Nobody at the keyboard: the boot
//! goes on unchanged after the pause.
//!
//! Who can use it: whoever sits at the console, the same person a USB stick or the power
//! button already trusts. So it follows the configuration-drive policy (`trust`): offered only
//! while the device is unprovisioned; a provisioned device takes only signed documents and the
//! pause is not offered. `p6os.setup=off` (kernel argument, e.g. the recipe's `kernel_args`)
//! turns it off for a fleet; `p6os.setup=N` sets the pause to N seconds (default 3).
//!
//! Pure: the kernel argument and the decision. I/O: the consoles, the pause, the screens.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use p6os_config::unattended::{to_yaml, Unattended};
use p6os_site::terminal::{self, AfterSave, Idle, Outcome};
use p6os_site::{App, ExtraCheck};

use super::trust::Provisioning;
use crate::cmdline::Params;

/// The kernel argument.
pub const CMDLINE_KEY: &str = "p6os.setup";
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(3);
/// The screens leave without saving after this long without a key: a noisy serial line (or a
/// key pressed by chance) must not hold the boot for ever.
const IDLE: Duration = Duration::from_secs(15 * 60);
const MAX_PAUSE_SECS: u64 = 600;

/// What the kernel command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Off,
    Pause(Duration),
}

/// `p6os.setup=off|N` from the command line; a value that cannot be read keeps the default
/// (and says so): a typo must not stop the boot nor take the offer away.
pub fn setting(cmdline: &str) -> (Setting, Option<String>) {
    match Params::parse(cmdline).last(CMDLINE_KEY) {
        None => (Setting::Pause(DEFAULT_PAUSE), None),
        Some(Some("off")) | Some(Some("0")) => (Setting::Off, None),
        Some(Some(v)) => match v.parse::<u64>() {
            Ok(n) if n <= MAX_PAUSE_SECS => (Setting::Pause(Duration::from_secs(n)), None),
            _ => (
                Setting::Pause(DEFAULT_PAUSE),
                Some(format!(
                    "{CMDLINE_KEY}={v} is not off or a number of seconds up to {MAX_PAUSE_SECS}; pausing {} s",
                    DEFAULT_PAUSE.as_secs()
                )),
            ),
        },
        Some(None) => (Setting::Pause(DEFAULT_PAUSE), None),
    }
}

/// Whether this boot offers the setup screens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Offer(Duration),
    NotOffered(&'static str),
}

pub fn decide(setting: Setting, provisioning: &Provisioning) -> Decision {
    match (setting, provisioning) {
        (Setting::Off, _) => Decision::NotOffered("turned off (p6os.setup=off)"),
        (Setting::Pause(_), Provisioning::Provisioned { .. }) => Decision::NotOffered(
            "the device is provisioned: it takes only signed documents (p6os config sign), from a drive, the ESP or the console",
        ),
        (Setting::Pause(d), Provisioning::Unprovisioned) => Decision::Offer(d),
    }
}

/// A console the pause is announced on.
struct Console {
    name: String,
    file: File,
    saved: Option<rustix::termios::Termios>,
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ =
                rustix::termios::tcsetattr(&self.file, rustix::termios::OptionalActions::Now, t);
        }
    }
}

/// The terminals the kernel prints to (`/proc/consoles`: `ttyS0`, `tty1` for `tty0`), and the
/// first virtual terminal.
fn console_names() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/consoles").unwrap_or_default();
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| {
            if n == "tty0" {
                "tty1".to_string()
            } else {
                n.to_string()
            }
        })
        .filter(|n| n.starts_with("tty"))
        .collect();
    // The screen and keyboard of the machine: offered there too, even when the kernel
    // prints only to a serial port.
    if !names.iter().any(|n| n == "tty1") && Path::new("/dev/tty1").exists() {
        names.push("tty1".to_string());
    }
    names.sort();
    names.dedup();
    names
}

fn open_console(name: &str) -> Option<Console> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(Path::new("/dev").join(name))
        .ok()?;
    let saved = rustix::termios::tcgetattr(&file).ok()?;
    let mut raw = saved.clone();
    raw.make_raw();
    rustix::termios::tcsetattr(&file, rustix::termios::OptionalActions::Now, &raw).ok()?;
    let _ = rustix::termios::tcflush(&file, rustix::termios::QueueSelector::IFlush);
    Some(Console {
        name: name.to_string(),
        file,
        saved: Some(saved),
    })
}

/// Offers the setup screens: announces the pause on every console and waits; a key opens the
/// screens there. The document saved, as text; `None` when nobody pressed a key, or left
/// without saving, or the screens could not run (logged).
pub fn offer(pause: Duration, found: Option<(&str, &[u8])>, check: ExtraCheck) -> Option<Vec<u8>> {
    let mut consoles: Vec<Console> = console_names()
        .iter()
        .filter_map(|n| open_console(n))
        .collect();
    if consoles.is_empty() {
        info!("site setup: no console to offer it on");
        return None;
    }
    let what = match found {
        Some((origin, _)) => format!("to review or change the configuration from {origin}"),
        None => "to set up this appliance (no configuration was found)".to_string(),
    };
    info!(
        "site setup: offered on {} for {} s",
        consoles
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        pause.as_secs()
    );
    let chosen = wait_for_key(&mut consoles, pause, &what)?;
    let console = consoles.swap_remove(chosen);
    drop(consoles);
    info!(
        "site setup: a key was pressed on {}: the setup screens are open there",
        console.name
    );
    let text = found.and_then(|(_, bytes)| std::str::from_utf8(bytes).ok());
    let shown_as = found.map_or("new unattended.yaml".to_string(), |(origin, _)| {
        origin.to_string()
    });
    let mut app = App::open(Path::new(&shown_as), text).with_extra_check(check);
    app.destination = "this appliance: it is applied at once and the boot goes on".to_string();
    let original = app.original.clone();
    match screens(&console, app) {
        Ok(Some(doc)) if *doc == original && found.is_some() => {
            info!("site setup: saved unchanged; the document found is applied as it is");
            None
        }
        Ok(Some(doc)) => {
            info!("site setup: a document was saved on {}", console.name);
            Some(to_yaml(&doc).into_bytes())
        }
        Ok(None) => {
            info!("site setup: left without saving; the boot goes on as before");
            None
        }
        Err(e) => {
            warn!("site setup: the screens stopped: {e}; the boot goes on as before");
            None
        }
    }
}

/// Announces the pause with a countdown on every console; the index of the console a key
/// was pressed on.
fn wait_for_key(consoles: &mut [Console], pause: Duration, what: &str) -> Option<usize> {
    let deadline = Instant::now() + pause;
    let mut shown = u64::MAX;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let secs = left.as_secs() + 1;
        if secs != shown {
            // A whole line each second: serial consoles and their logs see it at once.
            shown = secs;
            let line = format!("p6os-agent: press any key within {secs} s {what}\r\n");
            for c in consoles.iter_mut() {
                let _ = c.file.write_all(line.as_bytes());
            }
        }
        let mut fds: Vec<rustix::event::PollFd> = consoles
            .iter()
            .map(|c| rustix::event::PollFd::new(&c.file, rustix::event::PollFlags::IN))
            .collect();
        let wait = left.min(Duration::from_millis(250));
        let timeout = rustix::event::Timespec::try_from(wait).ok();
        if rustix::event::poll(&mut fds, timeout.as_ref()).unwrap_or(0) == 0 {
            continue;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().contains(rustix::event::PollFlags::IN))
            .collect();
        drop(fds);
        for (i, is_ready) in ready.into_iter().enumerate() {
            if is_ready {
                let mut buf = [0u8; 64];
                if matches!(consoles[i].file.read(&mut buf), Ok(n) if n > 0) {
                    return Some(i);
                }
            }
        }
    }
}

/// Runs the screens with `console` as standard input and output (the terminal crossterm
/// uses), the kernel's messages held back meanwhile; everything put back afterwards.
fn screens(console: &Console, mut app: App) -> std::io::Result<Option<Box<Unattended>>> {
    let _quiet = QuietKernel::new();
    let _stdio = StdioOn::new(console.file.as_fd())?;
    if let Some(t) = &console.saved {
        // Cooked settings back: crossterm makes its own raw mode and undoes it.
        let _ = rustix::termios::tcsetattr(&console.file, rustix::termios::OptionalActions::Now, t);
    }
    let outcome = terminal::run(&mut app, Idle::LeaveAfter(IDLE), |_| Ok(AfterSave::Leave))?;
    let Outcome::Done(saved) = outcome;
    Ok(saved)
}

/// Standard input, output and error on a console for a while (blocking), put back when dropped.
struct StdioOn {
    saved: [OwnedFd; 3],
}

impl StdioOn {
    fn new(tty: std::os::fd::BorrowedFd<'_>) -> std::io::Result<StdioOn> {
        use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
        use rustix::io::fcntl_dupfd_cloexec;
        let saved = [
            fcntl_dupfd_cloexec(rustix::stdio::stdin(), 3)?,
            fcntl_dupfd_cloexec(rustix::stdio::stdout(), 3)?,
            fcntl_dupfd_cloexec(rustix::stdio::stderr(), 3)?,
        ];
        let flags = fcntl_getfl(tty)?;
        fcntl_setfl(tty, flags - OFlags::NONBLOCK)?;
        // From here on, dropping puts the saved descriptors back, however far this got.
        let on = StdioOn { saved };
        rustix::stdio::dup2_stdin(tty)?;
        rustix::stdio::dup2_stdout(tty)?;
        rustix::stdio::dup2_stderr(tty)?;
        Ok(on)
    }
}

impl Drop for StdioOn {
    fn drop(&mut self) {
        let _ = std::io::stdout().flush();
        let _ = rustix::stdio::dup2_stdin(&self.saved[0]);
        let _ = rustix::stdio::dup2_stdout(&self.saved[1]);
        let _ = rustix::stdio::dup2_stderr(&self.saved[2]);
    }
}

/// The kernel's console log level lowered to emergencies only while the screens are up (its
/// messages would draw over them), put back when dropped.
struct QuietKernel {
    saved: Option<String>,
}

const PRINTK: &str = "/proc/sys/kernel/printk";

impl QuietKernel {
    fn new() -> QuietKernel {
        let saved = std::fs::read_to_string(PRINTK).ok();
        if saved.is_some() {
            let _ = std::fs::write(PRINTK, "1");
        }
        QuietKernel { saved }
    }
}

impl Drop for QuietKernel {
    fn drop(&mut self) {
        if let Some(level) = self
            .saved
            .as_ref()
            .and_then(|s| s.split_whitespace().next())
        {
            let _ = std::fs::write(PRINTK, level);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_argument_turns_it_off_or_sets_the_pause() {
        assert_eq!(setting("quiet").0, Setting::Pause(DEFAULT_PAUSE));
        assert_eq!(setting("p6os.setup=off").0, Setting::Off);
        assert_eq!(setting("p6os.setup=0").0, Setting::Off);
        assert_eq!(
            setting("p6os.setup=10").0,
            Setting::Pause(Duration::from_secs(10))
        );
        let (s, note) = setting("p6os.setup=soon");
        assert_eq!(s, Setting::Pause(DEFAULT_PAUSE));
        assert!(note.unwrap().contains("p6os.setup=soon"));
        assert!(setting("p6os.setup=100000").1.is_some());
    }

    #[test]
    fn only_an_unprovisioned_device_offers_it() {
        let pause = Setting::Pause(DEFAULT_PAUSE);
        assert_eq!(
            decide(pause, &Provisioning::Unprovisioned),
            Decision::Offer(DEFAULT_PAUSE)
        );
        let provisioned = Provisioning::Provisioned {
            digest: "sha256:00".into(),
            serial: None,
            from: super::super::trust::SourceKind::Image,
        };
        assert!(
            matches!(decide(pause, &provisioned), Decision::NotOffered(why) if why.contains("signed"))
        );
        assert!(matches!(
            decide(Setting::Off, &Provisioning::Unprovisioned),
            Decision::NotOffered(_)
        ));
    }
}
