//! Maintenance windows (pure): whether a member may start an upgrade at a given instant, in
//! the local time of each window's IANA time zone (chrono-tz; daylight saving included).

use std::collections::BTreeMap;

use chrono::{Datelike, TimeZone, Timelike};
use chrono_tz::Tz;
use p6os_protocol::rollout::{MaintenanceWindow, Weekday};

use crate::core::matches_selector;
use crate::error::ApiError;

/// Minutes since midnight of `HH:MM` (00:00 to 24:00).
pub fn parse_hhmm(s: &str) -> Result<u32, String> {
    let bad = || format!("{s:?} is not a time HH:MM (00:00 to 24:00)");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

pub fn parse_zone(s: &str) -> Result<Tz, String> {
    s.parse::<Tz>().map_err(|_| {
        format!("{s:?} is not an IANA time zone (for example Europe/Paris, America/New_York, UTC)")
    })
}

/// Checks the windows; the error names `windows[i].FIELD`.
pub fn check_windows(windows: &[MaintenanceWindow]) -> Result<(), ApiError> {
    const MAX: usize = 64;
    if windows.len() > MAX {
        return Err(ApiError::field("windows", format!("at most {MAX} windows")));
    }
    for (i, w) in windows.iter().enumerate() {
        let field = |f: &str| format!("windows[{i}].{f}");
        crate::core::check_labels(&w.selector, &field("selector"))?;
        let start = parse_hhmm(&w.start).map_err(|e| ApiError::field(field("start"), e))?;
        let end = parse_hhmm(&w.end).map_err(|e| ApiError::field(field("end"), e))?;
        if start == end {
            return Err(ApiError::field(
                field("end"),
                "the window is empty (end equals start); for a whole day use 00:00 to 24:00",
            ));
        }
        if start == 24 * 60 {
            return Err(ApiError::field(
                field("start"),
                "a window cannot start at 24:00",
            ));
        }
        parse_zone(&w.time_zone).map_err(|e| ApiError::field(field("time_zone"), e))?;
    }
    Ok(())
}

fn weekday(d: chrono::Weekday) -> Weekday {
    match d {
        chrono::Weekday::Mon => Weekday::Mon,
        chrono::Weekday::Tue => Weekday::Tue,
        chrono::Weekday::Wed => Weekday::Wed,
        chrono::Weekday::Thu => Weekday::Thu,
        chrono::Weekday::Fri => Weekday::Fri,
        chrono::Weekday::Sat => Weekday::Sat,
        chrono::Weekday::Sun => Weekday::Sun,
    }
}

/// Whether `w` (already checked) is open at `now` (Unix seconds). A window whose `end` is
/// before its `start` runs into the next day; `days` are the days it starts on.
pub fn is_open(w: &MaintenanceWindow, now: u64) -> bool {
    let (Ok(start), Ok(end), Ok(tz)) = (
        parse_hhmm(&w.start),
        parse_hhmm(&w.end),
        parse_zone(&w.time_zone),
    ) else {
        return false;
    };
    let Some(local) = tz.timestamp_opt(now as i64, 0).single() else {
        return false;
    };
    let minute = local.hour() * 60 + local.minute();
    let today = weekday(local.weekday());
    let yesterday = weekday(local.weekday().pred());
    let on = |d: Weekday| w.days.is_empty() || w.days.contains(&d);
    if start < end {
        on(today) && (start..end).contains(&minute)
    } else {
        (on(today) && minute >= start) || (on(yesterday) && minute < end)
    }
}

/// Whether a member with `labels` may start now: the windows whose selectors match it decide
/// (any one open is enough); a member no window matches may start at any time.
pub fn may_start_now(
    windows: &[MaintenanceWindow],
    labels: &BTreeMap<String, String>,
    now: u64,
) -> bool {
    let mut mine = windows
        .iter()
        .filter(|w| matches_selector(labels, &w.selector))
        .peekable();
    mine.peek().is_none() || mine.any(|w| is_open(w, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(days: &[Weekday], start: &str, end: &str, tz: &str) -> MaintenanceWindow {
        MaintenanceWindow {
            selector: BTreeMap::new(),
            days: days.to_vec(),
            start: start.into(),
            end: end.into(),
            time_zone: tz.into(),
        }
    }

    /// 2026-01-05 is a Monday; `hh:mm` UTC that day plus `days`.
    fn utc(days: u64, hh: u64, mm: u64) -> u64 {
        1_767_571_200 + days * 86_400 + hh * 3600 + mm * 60
    }

    #[test]
    fn times_parse_strictly() {
        assert_eq!(parse_hhmm("00:00"), Ok(0));
        assert_eq!(parse_hhmm("02:30"), Ok(150));
        assert_eq!(parse_hhmm("24:00"), Ok(1440));
        for bad in [
            "2:30", "24:01", "12:60", "1230", "ab:cd", "", "-1:00", "12:5",
        ] {
            assert!(parse_hhmm(bad).is_err(), "{bad}");
        }
        assert!(parse_zone("Europe/Paris").is_ok());
        assert!(parse_zone("Mars/Olympus").is_err());
    }

    #[test]
    fn checks_name_the_field() {
        let ok = window(&[], "02:00", "05:00", "UTC");
        assert!(check_windows(std::slice::from_ref(&ok)).is_ok());
        let cases = [
            (window(&[], "2am", "05:00", "UTC"), "windows[1].start"),
            (window(&[], "02:00", "25:00", "UTC"), "windows[1].end"),
            (window(&[], "02:00", "02:00", "UTC"), "windows[1].end"),
            (window(&[], "24:00", "02:00", "UTC"), "windows[1].start"),
            (
                window(&[], "02:00", "05:00", "Paris"),
                "windows[1].time_zone",
            ),
        ];
        for (bad, field) in cases {
            let e = check_windows(&[ok.clone(), bad]).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{}", e.error);
        }
        let mut bad_label = ok.clone();
        bad_label.selector.insert("site".into(), "a b".into());
        let e = check_windows(&[bad_label]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("windows[0].selector.site"));
    }

    #[test]
    fn open_in_the_local_time_of_its_zone() {
        // 02:00-05:00 Paris is 01:00-04:00 UTC in January (CET, UTC+1).
        let w = window(&[], "02:00", "05:00", "Europe/Paris");
        assert!(!is_open(&w, utc(0, 0, 59)));
        assert!(is_open(&w, utc(0, 1, 0)));
        assert!(is_open(&w, utc(0, 3, 59)));
        assert!(!is_open(&w, utc(0, 4, 0)));
        // In July (CEST, UTC+2) the same window is 00:00-03:00 UTC: 2026-07-06 is a Monday.
        let july = 1_783_296_000;
        assert!(is_open(&w, july + 30 * 60));
        assert!(!is_open(&w, july + 3 * 3600));
    }

    #[test]
    fn days_and_windows_past_midnight() {
        let weekend = window(&[Weekday::Sat, Weekday::Sun], "22:00", "02:00", "UTC");
        // Friday 23:00: not a start day. Saturday 23:00: open; Sunday 01:00 (from Saturday):
        // open; Monday 01:00 (from Sunday): open; Monday 23:00: closed; Tuesday 01:00: closed.
        assert!(!is_open(&weekend, utc(4, 23, 0)));
        assert!(is_open(&weekend, utc(5, 23, 0)));
        assert!(is_open(&weekend, utc(6, 1, 0)));
        assert!(is_open(&weekend, utc(7, 1, 0)));
        assert!(!is_open(&weekend, utc(7, 23, 0)));
        assert!(!is_open(&weekend, utc(8, 1, 0)));
        assert!(!is_open(&weekend, utc(5, 2, 0)));
        let monday = window(&[Weekday::Mon], "00:00", "24:00", "UTC");
        assert!(is_open(&monday, utc(0, 0, 0)));
        assert!(is_open(&monday, utc(0, 23, 59)));
        assert!(!is_open(&monday, utc(1, 0, 0)));
    }

    #[test]
    fn the_windows_matching_a_member_decide() {
        let mut store = window(&[], "02:00", "05:00", "UTC");
        store.selector.insert("site".into(), "store".into());
        let mut lab = window(&[], "10:00", "11:00", "UTC");
        lab.selector.insert("site".into(), "lab".into());
        let windows = [store, lab];
        let labels = |site: &str| BTreeMap::from([("site".to_string(), site.to_string())]);
        let night = utc(0, 3, 0);
        let morning = utc(0, 10, 30);
        assert!(may_start_now(&windows, &labels("store"), night));
        assert!(!may_start_now(&windows, &labels("store"), morning));
        assert!(!may_start_now(&windows, &labels("lab"), night));
        assert!(may_start_now(&windows, &labels("lab"), morning));
        // No window for this member: any time. No windows at all: any time.
        assert!(may_start_now(&windows, &labels("office"), night));
        assert!(may_start_now(&[], &labels("store"), morning));
        // Two windows for one member: either.
        let mut both = windows.to_vec();
        both[1].selector = BTreeMap::new();
        assert!(may_start_now(&both, &labels("store"), morning));
    }
}
