//! `rollouts create|list|show|pause|resume|abort`: the operator's side of staged rollouts,
//! with the parsing of the command line's wave and window syntax and the tables (pure).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use clap::Subcommand;
use p6os_protocol::rollout::{
    MaintenanceWindow, Rollout, RolloutDevice, RolloutDevicePage, RolloutPage, RolloutRequest,
    Totals, Wave, Weekday,
};
use p6os_protocol::API;

use super::{all_pages, labels, print_json, Client, Failure};

#[derive(Debug, Subcommand)]
pub enum RolloutsCommand {
    /// Roll VERSION out to the registered appliances the selector matches, in waves.
    Create {
        #[arg(long)]
        version: String,
        /// k=v[,k=v]: the members (default: every registered appliance).
        #[arg(long, value_name = "K=V[,K=V]")]
        selector: Option<String>,
        /// A wave's cumulative size, a count (`1`) or a percentage (`10%`); repeatable, in
        /// order, the last `100%`. Default: 1, 10%, 100%.
        #[arg(long = "wave", value_name = "N|P%")]
        waves: Vec<String>,
        /// Pause by itself when this many members failed (rolled back or refused).
        #[arg(long, default_value_t = 1, value_name = "N")]
        failure_threshold: u32,
        /// `[K=V[,K=V]@][DAY[,DAY]... ]HH:MM-HH:MM ZONE`, e.g.
        /// `site=store-12@sat,sun 02:00-05:00 Europe/Paris`; repeatable. Members a window's
        /// selector matches start only inside one of their windows.
        #[arg(long = "window", value_name = "WINDOW")]
        windows: Vec<String>,
        /// Let VERSION be older than what members run.
        #[arg(long)]
        allow_downgrade: bool,
        #[arg(long)]
        json: bool,
    },
    /// List the rollouts, oldest first.
    List {
        #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// One rollout: totals per wave and its members.
    Show {
        id: u64,
        /// Only the members in this state (waiting, downloading, installing, trial, blessed,
        /// rolled_back, refused).
        #[arg(long)]
        state: Option<String>,
        /// Only the first N members (by id); without it, every page is fetched.
        #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// No member starts an upgrade until resumed (those under way go on).
    Pause {
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// Go on; the failures so far are not counted again.
    Resume {
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// Stop for good: members that have not started get no version.
    Abort {
        id: u64,
        #[arg(long)]
        json: bool,
    },
}

/// `1` or `10%`.
pub fn parse_wave(s: &str) -> Result<Wave, String> {
    let bad = || format!("--wave {s:?}: a count (1) or a percentage (10%)");
    match s.strip_suffix('%') {
        Some(p) => p.parse().map(Wave::Percent).map_err(|_| bad()),
        None => s.parse().map(Wave::Count).map_err(|_| bad()),
    }
}

fn parse_day(s: &str) -> Option<Weekday> {
    use Weekday::*;
    Some(match s {
        "mon" => Mon,
        "tue" => Tue,
        "wed" => Wed,
        "thu" => Thu,
        "fri" => Fri,
        "sat" => Sat,
        "sun" => Sun,
        _ => return None,
    })
}

/// `[K=V[,K=V]@][DAY[,DAY]... ]HH:MM-HH:MM ZONE` (the times and zone are checked by the
/// console, which names the field).
pub fn parse_window(s: &str) -> Result<MaintenanceWindow, String> {
    let bad = |why: &str| {
        format!("--window {s:?}: {why} (expected [K=V[,K=V]@][DAY,DAY ]HH:MM-HH:MM ZONE)")
    };
    let (selector, rest) = match s.split_once('@') {
        Some((sel, rest)) => (
            labels(&[sel.to_string()]).map_err(|e| bad(&e.to_string()))?,
            rest,
        ),
        None => (BTreeMap::new(), s),
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    let (days, times, zone) = match words[..] {
        [times, zone] => (Vec::new(), times, zone),
        [days, times, zone] => {
            let days = days
                .split(',')
                .map(|d| parse_day(d).ok_or_else(|| bad(&format!("{d:?} is not mon..sun"))))
                .collect::<Result<Vec<_>, _>>()?;
            (days, times, zone)
        }
        _ => return Err(bad("wrong number of words")),
    };
    let (start, end) = times.split_once('-').ok_or_else(|| bad("no START-END"))?;
    Ok(MaintenanceWindow {
        selector,
        days,
        start: start.into(),
        end: end.into(),
        time_zone: zone.into(),
    })
}

fn totals_line(t: &Totals) -> String {
    let mut parts = vec![format!("{} members", t.devices)];
    for (n, what) in [
        (t.waiting, "waiting"),
        (t.downloading, "downloading"),
        (t.installing, "installing"),
        (t.trial, "trial"),
        (t.blessed, "blessed"),
        (t.rolled_back, "rolled back"),
        (t.refused, "refused"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    parts.join(", ")
}

fn selector_text(s: &BTreeMap<String, String>) -> String {
    if s.is_empty() {
        return "(every appliance)".into();
    }
    s.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn rollout_table(all: &[Rollout]) -> String {
    let mut rows = vec![[
        "ID", "STATE", "VERSION", "WAVE", "MEMBERS", "BLESSED", "FAILED", "SELECTOR",
    ]
    .map(String::from)
    .to_vec()];
    for r in all {
        rows.push(vec![
            r.id.to_string(),
            r.state.as_str().to_string(),
            r.request.version.clone(),
            format!("{}/{}", r.wave + 1, r.waves.len()),
            r.totals.devices.to_string(),
            r.totals.blessed.to_string(),
            r.totals.failures().to_string(),
            selector_text(&r.request.selector),
        ]);
    }
    super::format::table(&rows)
}

pub fn rollout_details(r: &Rollout, members: &[RolloutDevice]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rollout {}: version {} ({})",
        r.id,
        r.request.version,
        r.state.as_str()
    );
    if let Some(reason) = &r.reason {
        let _ = writeln!(out, "  reason: {reason}");
    }
    let _ = writeln!(out, "  selector: {}", selector_text(&r.request.selector));
    let _ = writeln!(
        out,
        "  failures: {} counted, threshold {}",
        r.counted_failures, r.request.failure_threshold
    );
    for w in &r.request.windows {
        let days = if w.days.is_empty() {
            "every day".to_string()
        } else {
            format!("{:?}", w.days).to_lowercase()
        };
        let _ = writeln!(
            out,
            "  window: {} {days} {}-{} {}",
            selector_text(&w.selector),
            w.start,
            w.end,
            w.time_zone
        );
    }
    let _ = writeln!(out, "  total: {}", totals_line(&r.totals));
    for (i, (t, size)) in r.waves.iter().zip(&r.request.waves).enumerate() {
        let mark = if i as u32 <= r.wave {
            "started"
        } else {
            "not started"
        };
        let size = match size {
            Wave::Count(n) => n.to_string(),
            Wave::Percent(p) => format!("{p}%"),
        };
        let _ = writeln!(out, "  wave {} ({size}, {mark}): {}", i + 1, totals_line(t));
    }
    if !members.is_empty() {
        let mut rows = vec![["MEMBER", "WAVE", "STATE", "STARTED", "REASON"]
            .map(String::from)
            .to_vec()];
        for m in members {
            rows.push(vec![
                m.id.clone(),
                (m.wave + 1).to_string(),
                m.state.as_str().to_string(),
                if m.started { "yes" } else { "no" }.to_string(),
                m.reason.clone().unwrap_or_default(),
            ]);
        }
        out.push('\n');
        out.push_str(&super::format::table(&rows));
    }
    out
}

fn print(r: &Rollout, json: bool, verb: &str) {
    if json {
        print_json(r);
    } else {
        println!(
            "rollout {} of {} {verb}: {} ({})",
            r.id,
            r.request.version,
            r.state.as_str(),
            totals_line(&r.totals)
        );
        if let Some(reason) = &r.reason {
            println!("  reason: {reason}");
        }
    }
}

pub fn rollouts(client: &Client, command: RolloutsCommand) -> Result<(), Failure> {
    let path = format!("{API}/rollouts");
    match command {
        RolloutsCommand::Create {
            version,
            selector,
            waves,
            failure_threshold,
            windows,
            allow_downgrade,
            json,
        } => {
            let req = RolloutRequest {
                version,
                selector: match selector {
                    Some(s) => labels(&[s])?,
                    None => BTreeMap::new(),
                },
                waves: if waves.is_empty() {
                    p6os_protocol::rollout::default_waves()
                } else {
                    waves
                        .iter()
                        .map(|w| parse_wave(w))
                        .collect::<Result<_, _>>()
                        .map_err(Failure::Usage)?
                },
                failure_threshold,
                windows: windows
                    .iter()
                    .map(|w| parse_window(w))
                    .collect::<Result<_, _>>()
                    .map_err(Failure::Usage)?,
                allow_downgrade,
            };
            let r: Rollout = client.post(&path, &req)?;
            print(&r, json, "created");
        }
        RolloutsCommand::List { limit, json } => {
            let all = all_pages(client, &path, &[], limit, |p: RolloutPage| {
                (p.items, p.next)
            })?;
            if json {
                print_json(&all);
            } else {
                print!("{}", rollout_table(&all));
            }
        }
        RolloutsCommand::Show {
            id,
            state,
            limit,
            json,
        } => {
            let r: Rollout = client.get(&format!("{path}/{id}"))?;
            let query: Vec<(String, String)> = state
                .into_iter()
                .map(|s| ("state".to_string(), s))
                .collect();
            let members = all_pages(
                client,
                &format!("{path}/{id}/devices"),
                &query,
                limit,
                |p: RolloutDevicePage| (p.items, p.next),
            )?;
            if json {
                print_json(&serde_json::json!({ "rollout": r, "members": members }));
            } else {
                print!("{}", rollout_details(&r, &members));
            }
        }
        RolloutsCommand::Pause { id, json } => {
            let r: Rollout = client.post(&format!("{path}/{id}/pause"), &())?;
            print(&r, json, "paused");
        }
        RolloutsCommand::Resume { id, json } => {
            let r: Rollout = client.post(&format!("{path}/{id}/resume"), &())?;
            print(&r, json, "resumed");
        }
        RolloutsCommand::Abort { id, json } => {
            let r: Rollout = client.post(&format!("{path}/{id}/abort"), &())?;
            print(&r, json, "aborted");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_and_windows_from_the_command_line() {
        assert_eq!(parse_wave("1"), Ok(Wave::Count(1)));
        assert_eq!(parse_wave("10%"), Ok(Wave::Percent(10)));
        assert!(parse_wave("ten").is_err());
        assert!(parse_wave("%").is_err());
        let w = parse_window("site=store-12@sat,sun 02:00-05:00 Europe/Paris").unwrap();
        assert_eq!(w.selector["site"], "store-12");
        assert_eq!(w.days, [Weekday::Sat, Weekday::Sun]);
        assert_eq!((w.start.as_str(), w.end.as_str()), ("02:00", "05:00"));
        assert_eq!(w.time_zone, "Europe/Paris");
        let w = parse_window("22:00-02:00 UTC").unwrap();
        assert!(w.selector.is_empty() && w.days.is_empty());
        for bad in [
            "02:00 UTC",
            "sat 02:00-05:00",
            "funday 02:00-05:00 UTC",
            "a b c d",
            "x@02:00-03:00 UTC",
        ] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }
}
