//! Log lines to the console (stdout) and to /dev/kmsg, each prefixed `p6os-agent: `.
//!
//! Lines logged before /dev/kmsg is open are kept and written to it once it is.
//! Nothing here panics: write errors are ignored, a poisoned lock is used anyway.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

pub const PREFIX: &str = "p6os-agent: ";
/// kmsg records longer than this are truncated (the kernel's limit is about 1 KiB).
const KMSG_MAX_LINE: usize = 900;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Fatal,
}

impl Level {
    fn tag(self) -> &'static str {
        match self {
            Level::Info => "",
            Level::Warn => "warning: ",
            Level::Fatal => "fatal: ",
        }
    }

    /// syslog priority prefix understood (and stripped) by /dev/kmsg.
    fn kmsg_priority(self) -> &'static str {
        match self {
            Level::Info => "<6>",
            Level::Warn => "<4>",
            Level::Fatal => "<2>",
        }
    }
}

static START: OnceLock<Instant> = OnceLock::new();
static KMSG: OnceLock<File> = OnceLock::new();
static PENDING: Mutex<Vec<(Level, String)>> = Mutex::new(Vec::new());

/// Records the start time; call first thing in main.
pub fn mark_start() {
    START.get_or_init(Instant::now);
}

/// Milliseconds since `mark_start`.
pub fn elapsed_ms() -> u128 {
    START.get().map_or(0, |s| s.elapsed().as_millis())
}

/// The console lines for one message: every line prefixed, empty messages kept.
pub fn format_lines(level: Level, msg: &str) -> Vec<String> {
    let mut lines: Vec<String> = msg
        .split('\n')
        .map(|l| format!("{PREFIX}{}{}", level.tag(), l.trim_end_matches('\r')))
        .collect();
    if lines.len() > 1 && msg.ends_with('\n') {
        lines.pop();
    }
    lines
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn pending() -> MutexGuard<'static, Vec<(Level, String)>> {
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_kmsg(mut kmsg: &File, level: Level, lines: &[String]) {
    for line in lines {
        let record = format!(
            "{}{}\n",
            level.kmsg_priority(),
            truncate(line, KMSG_MAX_LINE)
        );
        // One write per record; kmsg may drop lines when rate limited.
        let _ = kmsg.write_all(record.as_bytes());
    }
}

pub fn log(level: Level, msg: &str) {
    let lines = format_lines(level, msg);
    {
        let mut out = io::stdout().lock();
        for line in &lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
    match KMSG.get() {
        Some(kmsg) => write_kmsg(kmsg, level, &lines),
        None => pending().extend(lines.into_iter().map(|l| (level, l))),
    }
}

/// Opens /dev/kmsg and writes the lines logged so far to it.
pub fn attach_kmsg() -> io::Result<()> {
    if KMSG.get().is_some() {
        return Ok(());
    }
    let file = OpenOptions::new().write(true).open("/dev/kmsg")?;
    let kmsg = KMSG.get_or_init(|| file);
    for (level, line) in pending().drain(..) {
        write_kmsg(kmsg, level, std::slice::from_ref(&line));
    }
    Ok(())
}

/// Drops lines kept for kmsg (when it cannot be opened, they would only grow).
pub fn forget_pending() {
    pending().clear();
}

macro_rules! info {
    ($($arg:tt)*) => {
        $crate::log::log($crate::log::Level::Info, &format!($($arg)*))
    };
}

macro_rules! warn {
    ($($arg:tt)*) => {
        $crate::log::log($crate::log::Level::Warn, &format!($($arg)*))
    };
}

/// Formats an error with its sources, each once: `mount /dev/vda2 on /sysroot: No such device`.
pub use p6os_config::diag::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_prefixed() {
        assert_eq!(
            format_lines(Level::Info, "mounted root /dev/vda2 (squashfs, ro)"),
            vec!["p6os-agent: mounted root /dev/vda2 (squashfs, ro)"]
        );
        assert_eq!(
            format_lines(Level::Warn, "a\nb\n"),
            vec!["p6os-agent: warning: a", "p6os-agent: warning: b"]
        );
        assert_eq!(
            format_lines(Level::Fatal, "root not found"),
            vec!["p6os-agent: fatal: root not found"]
        );
        assert_eq!(format_lines(Level::Info, ""), vec!["p6os-agent: "]);
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abc", 2), "ab");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("", 0), "");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("mount /dev/vda2 on /sysroot")]
    struct Outer(#[source] io::Error);

    #[test]
    fn chains_sources() {
        let err = Outer(io::Error::from_raw_os_error(libc::ENODEV));
        assert_eq!(
            error_chain(&err),
            "mount /dev/vda2 on /sysroot: No such device (os error 19)"
        );
    }
}
