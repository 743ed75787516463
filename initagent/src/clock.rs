//! The clock of an appliance whose CMOS battery died (the RTC reads 2001): it never runs
//! earlier than the image's build ([`EPOCH_FILE`], written by the builder) or than the last
//! trusted time the agent saved on the state partition ([`SAVED_FILE`]), as systemd does with
//! its clock epoch; and when the console's certificate is "not valid yet" the clock is set from
//! the console's authenticated `Date` (`upgrade::http::server_time`) before the exchange is
//! retried. The clock only ever moves forward here.
//!
//! The decisions are pure ([`floor`], [`forward`], [`parse_seconds`]); [`set`], [`read`] and
//! [`save`] touch the machine.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// In the slot: the image's build epoch, decimal Unix seconds (the newest file in the image).
pub const EPOCH_FILE: &str = p6os_layout::slot::CLOCK_EPOCH_PATH;
/// On the state partition (relative to its mount point): the last trusted time the agent saw.
pub const SAVED_FILE: &str = "p6os/clock";
/// The saved time is refreshed when it is older than this (a write a day, not one a beat).
pub const SAVE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Where a lower bound of the time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The image's build epoch.
    Image,
    /// The last trusted time saved on the state partition.
    Saved,
    /// The console's `Date`, over TLS.
    Console,
}

impl Source {
    pub fn describe(self) -> &'static str {
        match self {
            Source::Image => "the image's build time",
            Source::Saved => "the last time seen",
            Source::Console => "the console's time",
        }
    }
}

/// The time to set when `now` is before the latest of `bounds`, and where it came from.
pub fn floor(
    now: SystemTime,
    bounds: &[(Source, Option<SystemTime>)],
) -> Option<(SystemTime, Source)> {
    bounds
        .iter()
        .filter_map(|(source, time)| time.map(|t| (t, *source)))
        .max_by_key(|(t, _)| *t)
        .filter(|(t, _)| *t > now)
}

/// The time to set from a trusted `told` time: only forward, and only when the difference
/// matters (more than a minute: a slow answer must not make the clock jitter).
pub fn forward(now: SystemTime, told: SystemTime) -> Option<SystemTime> {
    (told > now + Duration::from_secs(60)).then_some(told)
}

/// No time read from a file is believed beyond this (2200-01-01): a bad saved time must not
/// push the clock where every certificate looks expired, or beyond what `clock_settime` takes.
pub const LATEST: u64 = 7_258_118_400;

/// Decimal Unix seconds (surrounding whitespace allowed), up to [`LATEST`].
pub fn parse_seconds(text: &str) -> Option<SystemTime> {
    let seconds: u64 = text.trim().parse().ok()?;
    (seconds <= LATEST).then(|| UNIX_EPOCH + Duration::from_secs(seconds))
}

/// An HTTP date (`Mon, 01 Jan 2001 00:00:05 GMT`) for the log; Unix seconds for a time an HTTP
/// date cannot show (before 1970 or after 9999: `httpdate` would panic).
pub fn show(time: SystemTime) -> String {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) if since.as_secs() < 253_402_300_800 => httpdate::fmt_http_date(time),
        Ok(since) => format!("{} s after 1970", since.as_secs()),
        Err(_) => "a time before 1970".to_string(),
    }
}

/// A time saved by [`save`] or an epoch file, if readable.
pub fn read(path: &Path) -> Option<SystemTime> {
    let text = crate::sys::read_capped(path.to_str()?, 64).ok()?;
    parse_seconds(&String::from_utf8_lossy(&text))
}

/// Writes `time` to `path` (temporary file, fsync, rename).
pub fn save(path: &Path, time: SystemTime) -> io::Result<()> {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("new");
    // A fresh file (never through a symlink someone left at the temporary name).
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    io::Write::write_all(&mut file, format!("{seconds}\n").as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

/// Sets the system clock (`CLOCK_REALTIME`). The hardware clock is left as it is.
pub fn set(time: SystemTime) -> io::Result<()> {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let ts = libc::timespec {
        tv_sec: since.as_secs() as libc::time_t,
        tv_nsec: since.subsec_nanos() as libc::c_long,
    };
    // SAFETY: a valid timespec on the stack.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// At boot: moves the clock up to the image's epoch (in the mounted slot `root`) or the saved
/// time (under the mounted `state`), whichever is later, when it is behind both. Never fails.
pub fn apply_floor(root: &str, state: &str) {
    let now = SystemTime::now();
    let bounds = [
        (Source::Image, read(&Path::new(root).join(&EPOCH_FILE[1..]))),
        (Source::Saved, read(&Path::new(state).join(SAVED_FILE))),
    ];
    if let Some((time, source)) = floor(now, &bounds) {
        match set(time) {
            Ok(()) => info!(
                "clock: {} is before {}: set to {}",
                show(now),
                source.describe(),
                show(time)
            ),
            Err(e) => warn!("clock: cannot set it to {}: {e}", show(time)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn the_clock_moves_up_to_the_latest_bound_only_when_behind() {
        let bounds = [
            (Source::Image, Some(at(2_000))),
            (Source::Saved, Some(at(3_000))),
        ];
        assert_eq!(floor(at(1_000), &bounds), Some((at(3_000), Source::Saved)));
        assert_eq!(floor(at(2_500), &bounds), Some((at(3_000), Source::Saved)));
        assert_eq!(floor(at(3_000), &bounds), None);
        assert_eq!(floor(at(9_000), &bounds), None);
        let image_only = [(Source::Image, Some(at(2_000))), (Source::Saved, None)];
        assert_eq!(
            floor(at(1_000), &image_only),
            Some((at(2_000), Source::Image))
        );
        assert_eq!(floor(at(1_000), &[(Source::Image, None)]), None);
        assert_eq!(floor(at(1_000), &[]), None);
    }

    #[test]
    fn a_trusted_time_only_moves_the_clock_forward_by_more_than_a_minute() {
        assert_eq!(forward(at(1_000), at(100_000)), Some(at(100_000)));
        assert_eq!(forward(at(1_000), at(1_060)), None);
        assert_eq!(forward(at(1_000), at(1_061)), Some(at(1_061)));
        assert_eq!(forward(at(100_000), at(1_000)), None);
    }

    #[test]
    fn epoch_files_are_decimal_seconds() {
        assert_eq!(parse_seconds("1764720000\n"), Some(at(1_764_720_000)));
        assert_eq!(parse_seconds(" 0 "), Some(UNIX_EPOCH));
        assert_eq!(parse_seconds("7258118400"), Some(at(7_258_118_400)));
        for bad in [
            "",
            "-1",
            "1.5",
            "abc",
            "7258118401",
            "253402300800",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn saved_times_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p6os/clock");
        assert_eq!(read(&path), None);
        save(&path, at(1_764_720_000)).unwrap();
        assert_eq!(read(&path), Some(at(1_764_720_000)));
        assert_eq!(show(at(1_764_720_000)), "Wed, 03 Dec 2025 00:00:00 GMT");
        assert_eq!(show(at(253_402_300_800)), "253402300800 s after 1970");
    }
}
