//! What the operator commands print: tables and readable details. Pure: the time is passed in.

use std::fmt::Write as _;

use p6os_protocol::{Appliance, Bundle, Event, Facts, Health, Heartbeat};

use crate::core::{outcome_str, phase_str};

/// `12s ago`, `3m ago`, `2h ago`, `5d ago`, or `never`.
pub fn ago(t: Option<u64>, now: u64) -> String {
    let Some(t) = t else {
        return "never".into();
    };
    let s = now.saturating_sub(t);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// `1.5 GiB` style sizes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn health(h: Health) -> &'static str {
    match h {
        Health::Good => "good",
        Health::Assessing => "assessing",
        Health::Unknown => "unknown",
    }
}

/// Columns padded to their widest cell.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn appliance_table(all: &[Appliance], now: u64) -> String {
    let mut rows = vec![[
        "ID",
        "STATUS",
        "VERSION",
        "SLOT",
        "HEALTH",
        "DESIRED",
        "LAST SEEN",
    ]
    .map(String::from)
    .to_vec()];
    for a in all {
        let r = a.reported.as_ref();
        let dash = || "-".to_string();
        rows.push(vec![
            a.id.clone(),
            a.status.as_str().into(),
            r.map(|r| r.version.clone())
                .or_else(|| a.facts.as_ref().map(|f| f.image_version.clone()))
                .unwrap_or_else(dash),
            r.map(|r| r.slot.clone()).unwrap_or_else(dash),
            r.map(|r| health(r.health).to_string()).unwrap_or_else(dash),
            a.desired_version.clone().unwrap_or_else(dash),
            ago(a.last_seen, now),
        ]);
    }
    table(&rows)
}

fn facts(out: &mut String, f: &Facts) {
    let _ = writeln!(out, "facts:");
    let _ = writeln!(out, "  hostname:      {}", f.hostname);
    // What the device says of itself; selectors match the operator's labels above, never these.
    if let Some(name) = &f.name {
        let _ = writeln!(out, "  name (reported by the device): {name}");
    }
    if !f.labels.is_empty() {
        let labels: Vec<String> = f.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            out,
            "  labels (reported by the device, not matched by selectors): {}",
            labels.join(", ")
        );
    }
    let _ = writeln!(out, "  cpu:           {} x {}", f.cpu_count, f.cpu_model);
    let _ = writeln!(out, "  memory:        {}", bytes(f.memory_bytes));
    let _ = writeln!(out, "  arch:          {}", f.arch);
    let _ = writeln!(out, "  base os:       {}", f.base_os);
    let _ = writeln!(out, "  kernel:        {}", f.kernel);
    let _ = writeln!(out, "  image:         {} {}", f.image_name, f.image_version);
    let _ = writeln!(out, "  agent version: {}", f.agent_version);
    let _ = writeln!(out, "  slot:          {}", f.slot);
    let _ = writeln!(out, "  disks:");
    for d in &f.disks {
        let _ = writeln!(
            out,
            "    {} {}{}{}",
            d.name,
            bytes(d.size_bytes),
            d.model
                .as_ref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default(),
            if d.removable { " removable" } else { "" }
        );
    }
    let _ = writeln!(out, "  nics:");
    for n in &f.nics {
        let _ = writeln!(
            out,
            "    {} {} {}",
            n.name,
            n.mac.as_deref().unwrap_or("-"),
            if n.addresses.is_empty() {
                "(no address)".to_string()
            } else {
                n.addresses.join(", ")
            }
        );
    }
}

fn reported(out: &mut String, h: &Heartbeat) {
    let _ = writeln!(out, "reported:");
    let _ = writeln!(
        out,
        "  version:       {} (slot {}, health {})",
        h.version,
        h.slot,
        health(h.health)
    );
    if let Some(u) = &h.last_upgrade {
        let _ = writeln!(
            out,
            "  last upgrade:  {} {}{}{}",
            u.version,
            outcome_str(u.outcome),
            u.slot
                .as_ref()
                .map(|s| format!(" (slot {s})"))
                .unwrap_or_default(),
            u.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    if let Some(p) = &h.progress {
        let percent = (p.done_bytes as f64 * 100.0 / p.total_bytes.max(1) as f64).min(100.0);
        let _ = writeln!(
            out,
            "  progress:      {} {} {percent:.0}% ({} of {}){}",
            p.version,
            phase_str(p.phase),
            bytes(p.done_bytes),
            bytes(p.total_bytes),
            p.message
                .as_ref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
    }
}

pub fn appliance_details(a: &Appliance, now: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "id:              {}", a.id);
    let _ = writeln!(out, "status:          {}", a.status.as_str());
    let _ = writeln!(out, "name:            {}", a.name.as_deref().unwrap_or("-"));
    let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(
        out,
        "labels:          {}",
        if labels.is_empty() {
            "-".into()
        } else {
            labels.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "device key:      {}",
        match &a.key_fingerprint {
            Some(fp) => fp.clone(),
            None => format!("(none yet; pairing: {})", a.pairing.as_str()),
        }
    );
    if let Some(fp) = &a.requested_fingerprint {
        let _ = writeln!(
            out,
            "awaiting:        key {fp} asked to pair: `appliances approve {} --fingerprint {fp}`",
            a.id
        );
    }
    if let Some(i) = &a.image {
        let _ = writeln!(out, "image:           {} on {}", i.image_name, i.arch);
    }
    let _ = writeln!(
        out,
        "desired version: {}",
        a.desired_version.as_deref().unwrap_or("(none: stay)")
    );
    let _ = writeln!(out, "created:         {}", ago(Some(a.created_at), now));
    let _ = writeln!(out, "paired:          {}", ago(a.paired_at, now));
    let _ = writeln!(out, "last seen:       {}", ago(a.last_seen, now));
    match &a.reported {
        Some(h) => reported(&mut out, h),
        None => out.push_str("reported:        nothing yet\n"),
    }
    match &a.facts {
        Some(f) => facts(&mut out, f),
        None => out.push_str("facts:           none yet (the device has not asked to pair)\n"),
    }
    out
}

pub fn events(events: &[Event]) -> String {
    let mut out = String::new();
    for e in events {
        let _ = writeln!(
            out,
            "{}  {:<16} {}",
            p6os_protocol::rfc3339(e.at),
            e.kind,
            e.message
        );
    }
    out
}

pub fn bundle_table(all: &[Bundle]) -> String {
    let mut rows = vec![["NAME", "VERSION", "ARCH", "SIZE", "KEY", "SHA256"]
        .map(String::from)
        .to_vec()];
    for b in all {
        rows.push(vec![
            b.name.clone(),
            b.version.clone(),
            b.arch.clone(),
            bytes(b.size),
            b.key_id.clone(),
            b.sha256.clone(),
        ]);
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review (c): what a device says of its name and labels is shown as the device's, apart
    /// from the appliance's own (which selectors match).
    #[test]
    fn reported_labels_are_shown_as_the_devices() {
        let a: Appliance = serde_json::from_value(serde_json::json!({
            "id": "store-40", "status": "pending", "created_at": 0,
            "facts": {
                "hostname": "x", "name": "seeded", "labels": { "ring": "canary" },
                "cpu_model": "c", "cpu_count": 1, "memory_bytes": 1, "disks": [], "nics": [],
                "arch": "x86_64", "base_os": "b", "kernel": "k", "image_name": "i",
                "image_version": "1", "agent_version": "1", "slot": "a"
            }
        }))
        .unwrap();
        let text = appliance_details(&a, 10);
        assert!(text.contains("\nlabels:          -\n"), "{text}");
        assert!(
            text.contains("labels (reported by the device, not matched by selectors): ring=canary"),
            "{text}"
        );
        assert!(
            text.contains("name (reported by the device): seeded"),
            "{text}"
        );
    }

    #[test]
    fn units() {
        assert_eq!(ago(None, 10), "never");
        assert_eq!(ago(Some(5), 10), "5s ago");
        assert_eq!(ago(Some(0), 7200), "2h ago");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn table_aligns() {
        let t = table(&[
            vec!["A".into(), "B".into()],
            vec!["long".into(), "x".into()],
        ]);
        assert_eq!(t, "A     B\nlong  x\n");
    }
}
