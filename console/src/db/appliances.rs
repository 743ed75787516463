//! Appliances and their events: each public function is one transaction.

use std::collections::BTreeMap;

use p6os_protocol::{Appliance, BundleRef, Event, Facts, Heartbeat, RegisterRequest, Status};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use super::{from_json, to_json, Context, DbError};
use crate::core::{self, PairAction};

const COLUMNS: &str = "id, status, name, labels_json, facts_json, desired_version, reported_json, \
                       created_at, paired_at, last_seen";

fn write_tx(conn: &mut Connection) -> Result<Transaction<'_>, DbError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("begin")
}

/// A row in the `COLUMNS` order, with its JSON columns still as text (parsed by `finish`).
struct RawAppliance {
    id: String,
    status: String,
    name: Option<String>,
    labels: String,
    facts: Option<String>,
    desired_version: Option<String>,
    reported: Option<String>,
    created_at: i64,
    paired_at: Option<i64>,
    last_seen: Option<i64>,
}

fn raw(r: &Row) -> rusqlite::Result<RawAppliance> {
    Ok(RawAppliance {
        id: r.get(0)?,
        status: r.get(1)?,
        name: r.get(2)?,
        labels: r.get(3)?,
        facts: r.get(4)?,
        desired_version: r.get(5)?,
        reported: r.get(6)?,
        created_at: r.get(7)?,
        paired_at: r.get(8)?,
        last_seen: r.get(9)?,
    })
}

fn finish(r: RawAppliance) -> Result<Appliance, DbError> {
    let secs = |t: i64| t.max(0) as u64;
    Ok(Appliance {
        status: Status::parse(&r.status).unwrap_or(Status::Pending),
        name: r.name,
        labels: from_json(&r.labels, "labels")?,
        facts: r.facts.map(|f| from_json(&f, "facts")).transpose()?,
        desired_version: r.desired_version,
        reported: r.reported.map(|h| from_json(&h, "heartbeat")).transpose()?,
        created_at: secs(r.created_at),
        paired_at: r.paired_at.map(secs),
        last_seen: r.last_seen.map(secs),
        id: r.id,
    })
}

fn get_in(conn: &Connection, id: &str) -> Result<Option<Appliance>, DbError> {
    let raw = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM appliances WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], raw).optional())
        .ctx("get appliance")?;
    raw.map(finish).transpose()
}

pub fn get(conn: &mut Connection, id: &str) -> Result<Option<Appliance>, DbError> {
    get_in(conn, id)
}

/// Every appliance (of one status), sorted by id.
pub fn list(conn: &mut Connection, status: Option<Status>) -> Result<Vec<Appliance>, DbError> {
    list_in(conn, status)
}

fn list_in(conn: &Connection, status: Option<Status>) -> Result<Vec<Appliance>, DbError> {
    let rows: Vec<RawAppliance> = match status {
        Some(s) => conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM appliances WHERE status = ?1 ORDER BY id"
            ))
            .and_then(|mut st| st.query_map([s.as_str()], raw)?.collect()),
        None => conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM appliances ORDER BY id"))
            .and_then(|mut st| st.query_map([], raw)?.collect()),
    }
    .ctx("list appliances")?;
    rows.into_iter().map(finish).collect()
}

pub(crate) fn add_event(
    tx: &Connection,
    id: &str,
    at: u64,
    kind: &str,
    message: &str,
) -> Result<(), DbError> {
    tx.prepare_cached(
        "INSERT INTO events (appliance_id, at, kind, message) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| s.execute(params![id, at as i64, kind, message]))
    .ctx("add event")?;
    Ok(())
}

pub enum Registered {
    Created(Box<Appliance>),
    /// Already registered (unpaired or ready).
    Conflict(Status),
}

/// Registers an id: new, or a pending one (keeping the facts it sent; the operator's name and
/// labels override the device's).
pub fn register(
    conn: &mut Connection,
    req: &RegisterRequest,
    now: u64,
) -> Result<Registered, DbError> {
    let tx = write_tx(conn)?;
    let existing = get_in(&tx, &req.id)?;
    match existing {
        Some(a) if a.status != Status::Pending => return Ok(Registered::Conflict(a.status)),
        Some(a) => {
            let name = req.name.clone().or(a.name);
            let labels = core::merge_labels(&a.labels, &req.labels);
            tx.prepare_cached(
                "UPDATE appliances SET status = 'unpaired', name = ?2, labels_json = ?3 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![req.id, name, to_json(&labels)]))
            .ctx("register pending")?;
            add_event(
                &tx,
                &req.id,
                now,
                "registered",
                "registered by an operator (was pending)",
            )?;
        }
        None => {
            tx.prepare_cached(
                "INSERT INTO appliances (id, status, name, labels_json, created_at)
                 VALUES (?1, 'unpaired', ?2, ?3, ?4)",
            )
            .and_then(|mut s| {
                s.execute(params![req.id, req.name, to_json(&req.labels), now as i64])
            })
            .ctx("register")?;
            add_event(&tx, &req.id, now, "registered", "registered by an operator")?;
        }
    }
    let a = get_in(&tx, &req.id)?;
    tx.commit().ctx("commit register")?;
    Ok(a.map_or(Registered::Conflict(Status::Pending), |a| {
        Registered::Created(Box::new(a))
    }))
}

/// Deletes an appliance and its events; its device token stops working. False if unknown.
pub fn delete(conn: &mut Connection, id: &str) -> Result<bool, DbError> {
    let n = conn
        .prepare_cached("DELETE FROM appliances WHERE id = ?1")
        .and_then(|mut s| s.execute([id]))
        .ctx("delete appliance")?;
    Ok(n > 0)
}

pub enum Paired {
    Pending,
    Ready,
    /// The id is paired already: nothing changed.
    AlreadyPaired,
}

/// A pairing request with the right pairing token. `token_hash` is the digest of the token
/// the caller will return if this pairs.
pub fn pair(
    conn: &mut Connection,
    id: &str,
    facts: &Facts,
    token_hash: &str,
    now: u64,
) -> Result<Paired, DbError> {
    let tx = write_tx(conn)?;
    let existing = get_in(&tx, id)?;
    let facts_json = to_json(facts);
    let outcome = match core::pair_action(existing.as_ref().map(|a| a.status)) {
        PairAction::StorePending => {
            tx.prepare_cached(
                "INSERT INTO appliances (id, status, name, labels_json, facts_json, created_at)
                 VALUES (?1, 'pending', ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id,
                    facts.name,
                    to_json(&facts.labels),
                    facts_json,
                    now as i64
                ])
            })
            .ctx("store pending")?;
            add_event(
                &tx,
                id,
                now,
                "pair-requested",
                &format!(
                    "unregistered device {} asked to pair: pending",
                    facts.hostname
                ),
            )?;
            Paired::Pending
        }
        PairAction::StayPending => {
            tx.prepare_cached("UPDATE appliances SET facts_json = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![id, facts_json]))
                .ctx("refresh pending")?;
            Paired::Pending
        }
        PairAction::RefuseRePair => {
            add_event(
                &tx,
                id,
                now,
                "re-pair-refused",
                &format!(
                    "device {} asked to pair this id, which is paired already: refused",
                    facts.hostname
                ),
            )?;
            Paired::AlreadyPaired
        }
        PairAction::Pair => {
            let (name, labels) = existing.map(|a| (a.name, a.labels)).unwrap_or_default();
            let name = name.or_else(|| facts.name.clone());
            let labels = core::merge_labels(&facts.labels, &labels);
            tx.prepare_cached(
                "UPDATE appliances SET status = 'ready', name = ?2, labels_json = ?3,
                     facts_json = ?4, token_hash = ?5, paired_at = ?6, last_seen = ?6
                 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id,
                    name,
                    to_json(&labels),
                    facts_json,
                    token_hash,
                    now as i64
                ])
            })
            .ctx("pair")?;
            add_event(&tx, id, now, "paired", "paired: the device got its token")?;
            Paired::Ready
        }
    };
    tx.commit().ctx("commit pair")?;
    Ok(outcome)
}

/// The appliance a device token belongs to.
pub fn id_for_token(conn: &Connection, token_hash: &str) -> Result<Option<String>, DbError> {
    conn.prepare_cached("SELECT id FROM appliances WHERE token_hash = ?1 AND status = 'ready'")
        .and_then(|mut s| s.query_row([token_hash], |r| r.get(0)).optional())
        .ctx("find token")
}

/// The heartbeat's answer, before the interval is added.
pub struct Beat {
    pub desired_version: Option<String>,
    pub bundle: Option<BundleRef>,
    /// The operator allowed the desired version to be a downgrade.
    pub allow_downgrade: bool,
}

/// An operator's order: the desired version, and whether it may be older than what runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub version: Option<String>,
    pub allow_downgrade: bool,
}

/// Stores a heartbeat (already authenticated for `id`), records what changed, and finds the
/// bundle for the desired version (same image name and arch as the device).
pub fn heartbeat(
    conn: &mut Connection,
    id: &str,
    beat: &Heartbeat,
    now: u64,
) -> Result<Option<Beat>, DbError> {
    let tx = write_tx(conn)?;
    let row = tx
        .prepare_cached(
            "SELECT facts_json, reported_json, desired_version, missing_bundle, allow_downgrade
             FROM appliances WHERE id = ?1 AND status = 'ready'",
        )
        .and_then(|mut s| {
            s.query_row([id], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, bool>(4)?,
                ))
            })
            .optional()
        })
        .ctx("read for heartbeat")?;
    let Some((facts, reported, desired, missing, allow_downgrade)) = row else {
        return Ok(None);
    };
    let old: Option<Heartbeat> = reported.map(|r| from_json(&r, "heartbeat")).transpose()?;
    // Fresh facts replace the stored ones; the report is kept without them.
    let mut beat = beat.clone();
    let facts = match beat.facts.take() {
        Some(fresh) => {
            let text = to_json(&fresh);
            tx.prepare_cached("UPDATE appliances SET facts_json = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![id, text]))
                .ctx("store facts")?;
            Some(text)
        }
        None => facts,
    };
    let beat = &beat;
    for (kind, message) in core::heartbeat_events(old.as_ref(), beat) {
        add_event(&tx, id, now, kind, &message)?;
    }
    let mut missing_after = None;
    let bundle = match (&desired, facts) {
        (Some(version), Some(facts)) => {
            let target: Target = from_json(&facts, "facts")?;
            let found = super::bundles::find(&tx, &target.image_name, version, &target.arch)?;
            if found.is_none() {
                if missing.as_deref() != Some(version.as_str()) {
                    add_event(
                        &tx,
                        id,
                        now,
                        "bundle-missing",
                        &format!(
                            "desired version {version}: no bundle for image {} on {}",
                            target.image_name, target.arch
                        ),
                    )?;
                }
                missing_after = Some(version.clone());
            }
            found.map(|b| BundleRef {
                path: p6os_protocol::bundle_content_path(&b.sha256),
                version: b.version,
                sha256: b.sha256,
                size: b.size,
            })
        }
        _ => None,
    };
    tx.prepare_cached(
        "UPDATE appliances SET reported_json = ?2, last_seen = ?3, missing_bundle = ?4 WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![id, to_json(beat), now as i64, missing_after]))
    .ctx("store heartbeat")?;
    tx.commit().ctx("commit heartbeat")?;
    Ok(Some(Beat {
        allow_downgrade: allow_downgrade && desired.is_some(),
        desired_version: desired,
        bundle,
    }))
}

/// The two facts that choose a bundle (the rest of the stored facts is ignored here).
#[derive(serde::Deserialize)]
struct Target {
    image_name: String,
    arch: String,
}

fn set_desired_in(
    tx: &Transaction,
    a: &Appliance,
    desired: &Desired,
    now: u64,
) -> Result<(), DbError> {
    let version = &desired.version;
    // A cleared version allows nothing.
    let allow = desired.allow_downgrade && version.is_some();
    let allowed_before: bool = tx
        .prepare_cached("SELECT allow_downgrade FROM appliances WHERE id = ?1")
        .and_then(|mut s| s.query_row([&a.id], |r| r.get(0)))
        .ctx("read allow_downgrade")?;
    if &a.desired_version == version && allowed_before == allow {
        return Ok(());
    }
    tx.prepare_cached(
        "UPDATE appliances SET desired_version = ?2, allow_downgrade = ?3, missing_bundle = NULL
         WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![a.id, version, allow]))
    .ctx("set desired")?;
    let message = match version {
        Some(v) if allow => {
            format!("desired version set to {v}; downgrade to {v} allowed by operator")
        }
        Some(v) => format!("desired version set to {v}"),
        None => "desired version cleared".to_string(),
    };
    add_event(tx, &a.id, now, "desired", &message)
}

/// Sets one appliance's desired version; `None` if the id is unknown.
pub fn set_desired(
    conn: &mut Connection,
    id: &str,
    desired: &Desired,
    now: u64,
) -> Result<Option<Appliance>, DbError> {
    let tx = write_tx(conn)?;
    let Some(a) = get_in(&tx, id)? else {
        return Ok(None);
    };
    set_desired_in(&tx, &a, desired, now)?;
    let a = get_in(&tx, id)?;
    tx.commit().ctx("commit desired")?;
    Ok(a)
}

/// Sets the desired version of every appliance whose labels include the selector's; the ids.
pub fn set_desired_by_selector(
    conn: &mut Connection,
    selector: &BTreeMap<String, String>,
    desired: &Desired,
    now: u64,
) -> Result<Vec<String>, DbError> {
    let tx = write_tx(conn)?;
    let all = list_in(&tx, None)?;
    let mut matched = Vec::new();
    for a in all
        .iter()
        .filter(|a| core::matches_selector(&a.labels, selector))
    {
        set_desired_in(&tx, a, desired, now)?;
        matched.push(a.id.clone());
    }
    tx.commit().ctx("commit desired")?;
    Ok(matched)
}

/// An appliance's events in order; `None` if the id is unknown.
pub fn events(conn: &mut Connection, id: &str) -> Result<Option<Vec<Event>>, DbError> {
    if !super::exists(conn, "SELECT 1 FROM appliances WHERE id = ?1", id)? {
        return Ok(None);
    }
    conn.prepare_cached(
        "SELECT seq, at, kind, message FROM events WHERE appliance_id = ?1 ORDER BY seq",
    )
    .and_then(|mut s| {
        s.query_map([id], |r| {
            Ok(Event {
                seq: r.get(0)?,
                at: r.get::<_, i64>(1)?.max(0) as u64,
                kind: r.get(2)?,
                message: r.get(3)?,
            })
        })?
        .collect()
    })
    .map(Some)
    .ctx("list events")
}
