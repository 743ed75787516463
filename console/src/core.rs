//! The console's decisions as pure functions (pairing has its own module, `pairing`):
//! which events a heartbeat is worth, label checks and selectors, list filters.
//! No I/O, no clock: the shell (`db`, `api`) passes times and rows in.

use std::collections::BTreeMap;

use p6os_protocol::{
    check_id, check_label, check_version, Appliance, Facts, Heartbeat, OutcomeKind, Phase, Status,
};

use crate::error::ApiError;

/// Longest appliance name.
pub const MAX_NAME_LEN: usize = 128;

/// An event to record: a short kind and a message.
pub type NewEvent = (&'static str, String);

/// The events a heartbeat is worth, compared with the previous one: a new running version,
/// a new upgrade phase, a new last-upgrade outcome. Identical heartbeats are worth none.
pub fn heartbeat_events(old: Option<&Heartbeat>, new: &Heartbeat) -> Vec<NewEvent> {
    let mut events = Vec::new();
    match old {
        None => events.push((
            "first-heartbeat",
            format!(
                "running {} from slot {} ({})",
                new.version,
                new.slot,
                health_str(new)
            ),
        )),
        Some(old) if old.version != new.version || old.slot != new.slot => events.push((
            "version-changed",
            format!(
                "running {} from slot {} (was {} from slot {})",
                new.version, new.slot, old.version, old.slot
            ),
        )),
        Some(_) => {}
    }
    let phase = |h: Option<&Heartbeat>| {
        h.and_then(|h| h.progress.as_ref())
            .map(|p| (p.version.clone(), p.phase))
    };
    if let Some(p) = &new.progress {
        if phase(old) != phase(Some(new)) {
            let mut message = format!("upgrade to {}: {}", p.version, phase_str(p.phase));
            if let Some(m) = &p.message {
                message.push_str(&format!(" ({m})"));
            }
            events.push(("upgrade-progress", message));
        }
    }
    let last = old.and_then(|h| h.last_upgrade.as_ref());
    if let Some(u) = &new.last_upgrade {
        if Some(u) != last {
            let mut message = format!("upgrade to {}: {}", u.version, outcome_str(u.outcome));
            if let Some(slot) = &u.slot {
                message.push_str(&format!(" (slot {slot})"));
            }
            if let Some(reason) = &u.reason {
                message.push_str(&format!(": {reason}"));
            }
            events.push(("upgrade-outcome", message));
        }
    }
    events
}

fn health_str(h: &Heartbeat) -> &'static str {
    match h.health {
        p6os_protocol::Health::Good => "good",
        p6os_protocol::Health::Assessing => "assessing",
        p6os_protocol::Health::Unknown => "health unknown",
    }
}

pub fn phase_str(p: Phase) -> &'static str {
    match p {
        Phase::Downloading => "downloading",
        Phase::Rebooting => "rebooting",
        Phase::Failed => "failed",
    }
}

pub fn outcome_str(o: OutcomeKind) -> &'static str {
    match o {
        OutcomeKind::Installed => "installed",
        OutcomeKind::Blessed => "blessed",
        OutcomeKind::RolledBack => "rolled back",
        OutcomeKind::Failed => "failed",
    }
}

/// Labels a paired device ends up with: its own (unattended.yaml), overridden by the ones the
/// operator gave (the operator's word wins).
pub fn merge_labels(
    device: &BTreeMap<String, String>,
    operator: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = device.clone();
    out.extend(operator.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// Whether `labels` include every pair of `selector`.
pub fn matches_selector(
    labels: &BTreeMap<String, String>,
    selector: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub fn check_labels(labels: &BTreeMap<String, String>, field: &str) -> Result<(), ApiError> {
    for (k, v) in labels {
        check_label(k, v).map_err(|e| ApiError::field(format!("{field}.{k}"), e))?;
    }
    Ok(())
}

pub fn check_name(name: &Option<String>, field: &str) -> Result<(), ApiError> {
    if let Some(name) = name {
        if name.is_empty()
            || name.chars().count() > MAX_NAME_LEN
            || name.chars().any(char::is_control)
        {
            return Err(ApiError::field(
                field,
                format!(
                    "the name must be 1 to {MAX_NAME_LEN} characters without control characters"
                ),
            ));
        }
    }
    Ok(())
}

pub fn check_id_field(id: &str) -> Result<(), ApiError> {
    check_id(id).map_err(|e| ApiError::field("id", e))
}

pub fn check_version_field(version: &Option<String>, field: &str) -> Result<(), ApiError> {
    if let Some(v) = version {
        check_version(v).map_err(|e| ApiError::field(field, e))?;
    }
    Ok(())
}

/// Longest device-provided text kept (host names, models, reasons, messages), in bytes.
pub const MAX_TEXT: usize = 1024;
/// Most disks, NICs and addresses kept from one device.
pub const MAX_ITEMS: usize = 64;

/// Device-provided text made safe to store and to print on an operator's terminal: control
/// characters (escape sequences) become spaces, and it is cut to [`MAX_TEXT`] bytes.
pub fn clean_text(s: &mut String) {
    if s.chars().any(char::is_control) {
        *s = s
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
    }
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

fn clean_opt(s: &mut Option<String>) {
    if let Some(s) = s {
        clean_text(s);
    }
}

/// [`clean_text`] on every string of the facts; lists cut to [`MAX_ITEMS`].
pub fn clean_facts(f: &mut Facts) {
    for s in [
        &mut f.hostname,
        &mut f.cpu_model,
        &mut f.arch,
        &mut f.base_os,
        &mut f.kernel,
        &mut f.image_name,
        &mut f.image_version,
        &mut f.agent_version,
        &mut f.slot,
    ] {
        clean_text(s);
    }
    f.disks.truncate(MAX_ITEMS);
    for d in &mut f.disks {
        clean_text(&mut d.name);
        clean_opt(&mut d.model);
    }
    f.nics.truncate(MAX_ITEMS);
    for n in &mut f.nics {
        clean_text(&mut n.name);
        clean_opt(&mut n.mac);
        n.addresses.truncate(MAX_ITEMS);
        n.addresses.iter_mut().for_each(clean_text);
    }
}

/// [`clean_text`] on every string of a heartbeat (and its facts).
pub fn clean_heartbeat(h: &mut Heartbeat) {
    clean_text(&mut h.slot);
    clean_text(&mut h.version);
    if let Some(u) = &mut h.last_upgrade {
        clean_text(&mut u.version);
        clean_opt(&mut u.slot);
        clean_opt(&mut u.reason);
    }
    if let Some(p) = &mut h.progress {
        clean_text(&mut p.version);
        clean_opt(&mut p.message);
    }
    if let Some(f) = &mut h.facts {
        clean_facts(f);
    }
}

/// `k=v` (a label selector term, a list filter).
pub fn parse_label_term(term: &str) -> Result<(String, String), String> {
    let (k, v) = term
        .split_once('=')
        .ok_or_else(|| format!("{term:?} is not key=value"))?;
    check_label(k, v)?;
    Ok((k.to_string(), v.to_string()))
}

/// The appliance list's filters (`?status=ready&label=k=v&version=V`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub status: Option<Status>,
    pub labels: BTreeMap<String, String>,
    /// The reported (running) version.
    pub version: Option<String>,
}

impl ListFilter {
    /// From the query's pairs; an unknown parameter or a bad value is a 400 naming it.
    pub fn parse(pairs: &[(String, String)]) -> Result<ListFilter, ApiError> {
        let mut filter = ListFilter::default();
        for (key, value) in pairs {
            match key.as_str() {
                "status" => {
                    filter.status = Some(Status::parse(value).ok_or_else(|| {
                        ApiError::field(
                            "status",
                            format!("unknown status {value:?} (pending, unpaired or ready)"),
                        )
                    })?)
                }
                "label" => {
                    let (k, v) =
                        parse_label_term(value).map_err(|e| ApiError::field("label", e))?;
                    filter.labels.insert(k, v);
                }
                "version" => {
                    check_version(value).map_err(|e| ApiError::field("version", e))?;
                    filter.version = Some(value.clone());
                }
                other => {
                    return Err(ApiError::field(
                        other,
                        format!(
                        "unknown query parameter {other:?} (status, label, version, limit, after)"
                    ),
                    ))
                }
            }
        }
        Ok(filter)
    }

    pub fn matches(&self, a: &Appliance) -> bool {
        self.status.is_none_or(|s| s == a.status)
            && matches_selector(&a.labels, &self.labels)
            && self
                .version
                .as_ref()
                .is_none_or(|v| a.reported.as_ref().map(|r| &r.version) == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p6os_protocol::{Health, Progress, UpgradeOutcome};

    fn beat(version: &str) -> Heartbeat {
        Heartbeat {
            slot: "a".into(),
            version: version.into(),
            health: Health::Good,
            last_upgrade: None,
            progress: None,
            facts: None,
        }
    }

    #[test]
    fn device_text_is_made_safe_for_terminals() {
        let mut s = "nuc\u{1b}[2J\u{7}\nx".to_string();
        clean_text(&mut s);
        assert_eq!(s, "nuc [2J  x");
        let mut long = "é".repeat(MAX_TEXT);
        clean_text(&mut long);
        assert!(long.len() <= MAX_TEXT && long.len() >= MAX_TEXT - 1);
        let mut b = beat("1.0");
        b.progress = Some(Progress {
            version: "2.0".into(),
            phase: Phase::Failed,
            done_bytes: 0,
            total_bytes: 1,
            message: Some("bad\u{1b}]0;title\u{7}".into()),
        });
        clean_heartbeat(&mut b);
        assert_eq!(b.progress.unwrap().message.unwrap(), "bad ]0;title ");
    }

    #[test]
    fn heartbeat_events_only_on_change() {
        let one = beat("1.0");
        assert_eq!(heartbeat_events(None, &one)[0].0, "first-heartbeat");
        assert!(heartbeat_events(Some(&one), &one).is_empty());
        let two = beat("2.0");
        let e = heartbeat_events(Some(&one), &two);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, "version-changed");

        let mut downloading = one.clone();
        downloading.progress = Some(Progress {
            version: "2.0".into(),
            phase: Phase::Downloading,
            done_bytes: 1,
            total_bytes: 10,
            message: None,
        });
        assert_eq!(
            heartbeat_events(Some(&one), &downloading)[0].0,
            "upgrade-progress"
        );
        let mut further = downloading.clone();
        further.progress.as_mut().unwrap().done_bytes = 5;
        assert!(heartbeat_events(Some(&downloading), &further).is_empty());

        let mut rolled = one.clone();
        rolled.last_upgrade = Some(UpgradeOutcome {
            version: "2.0".into(),
            outcome: OutcomeKind::RolledBack,
            slot: Some("b".into()),
            reason: Some("health check failed".into()),
        });
        let e = heartbeat_events(Some(&one), &rolled);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, "upgrade-outcome");
        assert!(e[0].1.contains("rolled back"), "{}", e[0].1);
        assert!(e[0].1.contains("health check failed"), "{}", e[0].1);
        assert!(heartbeat_events(Some(&rolled), &rolled).is_empty());
    }

    #[test]
    fn labels_and_selectors() {
        let device = BTreeMap::from([("site".to_string(), "a".to_string())]);
        let operator = BTreeMap::from([
            ("site".to_string(), "b".to_string()),
            ("tier".to_string(), "edge".to_string()),
        ]);
        let merged = merge_labels(&device, &operator);
        assert_eq!(merged["site"], "b");
        assert!(matches_selector(&merged, &operator));
        assert!(!matches_selector(&device, &operator));
        assert!(matches_selector(&device, &BTreeMap::new()));
        assert_eq!(
            parse_label_term("a=b").unwrap(),
            ("a".to_string(), "b".to_string())
        );
        assert!(parse_label_term("ab").is_err());
        assert!(parse_label_term("a=b c").is_err());
    }

    #[test]
    fn list_filter() {
        let q = |s: &str| -> Vec<(String, String)> { serde_urlencoded::from_str(s).unwrap() };
        let f = ListFilter::parse(&q("status=ready&label=a%3Db&label=c=d&version=1.0")).unwrap();
        assert_eq!(f.status, Some(Status::Ready));
        assert_eq!(f.labels.len(), 2);
        assert_eq!(f.version.as_deref(), Some("1.0"));
        let e = ListFilter::parse(&q("status=gone")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("status"));
        let e = ListFilter::parse(&q("colour=red")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("colour"));
    }
}
