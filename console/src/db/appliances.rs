//! Appliances and their events: each public function is one transaction.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::sql::{Arg, Dialect, Row, Sql, SqlError};
use super::{from_json, to_json, Conn, Context, DbError};
use crate::args;
use crate::core::{self, ListFilter};
use crate::page::{Page, PageQuery};
use p6os_protocol::{
    Appliance, BundleRef, Event, Heartbeat, ImageRequest, PairingPolicy, RegisterRequest, Status,
};

const COLUMNS: &str = "id, status, name, labels_json, facts_json, desired_version, reported_json, \
                       created_at, paired_at, last_seen, key_fingerprint, requested_fingerprint, \
                       pairing, image_name, arch";

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
    key_fingerprint: Option<String>,
    requested_fingerprint: Option<String>,
    pairing: String,
    image_name: Option<String>,
    arch: Option<String>,
}

fn raw(r: &Row) -> Result<RawAppliance, SqlError> {
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
        key_fingerprint: r.get(10)?,
        requested_fingerprint: r.get(11)?,
        pairing: r.get(12)?,
        image_name: r.get(13)?,
        arch: r.get(14)?,
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
        key_fingerprint: r.key_fingerprint,
        requested_fingerprint: r.requested_fingerprint,
        pairing: PairingPolicy::parse(&r.pairing).unwrap_or_default(),
        image: match (r.image_name, r.arch) {
            (Some(image_name), Some(arch)) => Some(ImageRequest { image_name, arch }),
            _ => None,
        },
        id: r.id,
    })
}

pub(super) fn get_in(c: &mut dyn Sql, id: &str) -> Result<Option<Appliance>, DbError> {
    let row = c
        .query_opt(
            &format!("SELECT {COLUMNS} FROM appliances WHERE id = ?1"),
            &args![id],
        )
        .ctx("get appliance")?;
    row.map(|r| raw(&r).ctx("get appliance").and_then(finish))
        .transpose()
}

pub fn get(conn: &mut Conn, id: &str) -> Result<Option<Appliance>, DbError> {
    conn.auto(|c| get_in(c, id))
}

/// A page of the appliances that pass `filter`, sorted by id, after `page.after`: the
/// filter is SQL (labels through `json_each`), so only a page is ever read.
pub fn list(
    conn: &mut Conn,
    filter: &ListFilter,
    page: &PageQuery,
) -> Result<Page<Appliance>, DbError> {
    let dialect = conn.dialect();
    let mut sql = format!("SELECT {COLUMNS} FROM appliances WHERE 1 = 1");
    let mut args: Vec<Arg> = Vec::new();
    if let Some(s) = filter.status {
        args.push(s.as_str().to_string().into());
        let _ = write!(sql, " AND status = ?{}", args.len());
    }
    selector_sql(dialect, &filter.labels, &mut sql, &mut args);
    if let Some(v) = &filter.version {
        args.push(v.clone().into());
        let _ = write!(
            sql,
            " AND {} = ?{}",
            dialect.json_text("reported_json", "version"),
            args.len()
        );
    }
    if let Some(after) = &page.after {
        args.push(after.clone().into());
        let _ = write!(sql, " AND id > ?{}", args.len());
    }
    args.push(page.fetch().into());
    let _ = write!(sql, " ORDER BY id LIMIT ?{}", args.len());
    let rows = conn
        .auto(|c| c.query(&sql, &args))
        .ctx("list appliances")?
        .iter()
        .map(|r| raw(r).ctx("list appliances").and_then(finish))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.page(rows, |a| a.id.clone()))
}

/// `AND` terms for "the labels include every one of `selector`", appended to `sql` with their
/// arguments (numbered after those already in `args`).
pub(crate) fn selector_sql(
    dialect: Dialect,
    selector: &BTreeMap<String, String>,
    sql: &mut String,
    args: &mut Vec<Arg>,
) {
    for (k, v) in selector {
        args.push(k.clone().into());
        args.push(v.clone().into());
        let _ = write!(
            sql,
            " AND {}",
            dialect.label_match("labels_json", args.len() - 1, args.len())
        );
    }
}

/// Events kept per appliance: adding one deletes the oldest beyond this many.
pub const MAX_EVENTS: usize = 1000;

/// Deletes `id`'s events but the newest `MAX_EVENTS`.
fn cap_events(tx: &mut dyn Sql, id: &str) -> Result<(), DbError> {
    tx.execute(
        "DELETE FROM events WHERE appliance_id = ?1 AND seq <= (
             SELECT seq FROM events WHERE appliance_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
        &args![id, MAX_EVENTS],
    )
    .ctx("cap events")?;
    Ok(())
}

pub(crate) fn add_event(
    tx: &mut dyn Sql,
    id: &str,
    at: u64,
    kind: &str,
    message: &str,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO events (appliance_id, at, kind, message) VALUES (?1, ?2, ?3, ?4)",
        &args![id, at, kind, message],
    )
    .ctx("add event")?;
    cap_events(tx, id)
}

pub enum Registered {
    Created(Box<Appliance>),
    /// Already registered (unpaired or ready).
    Conflict(Status),
}

/// Registers an id: new, or a pending one (keeping the facts it sent, but taking the
/// operator's name and labels only: whoever asked holds just the public pairing token). A
/// fingerprint binds the id to that device key.
pub fn register(conn: &mut Conn, req: &RegisterRequest, now: u64) -> Result<Registered, DbError> {
    conn.write(|tx| register_in(tx, req, now))
}

fn register_in(tx: &mut dyn Sql, req: &RegisterRequest, now: u64) -> Result<Registered, DbError> {
    let existing = get_in(tx, &req.id)?;
    let policy = req.pairing.as_str();
    let key_note = match &req.fingerprint {
        Some(fp) => format!(" for the device key {fp}"),
        None => match req.pairing {
            PairingPolicy::Approve => ", the device's key to be approved".to_string(),
            PairingPolicy::FirstKey => ", the first device key that asks is bound".to_string(),
        },
    };
    match existing {
        Some(a) if a.status != Status::Pending => return Ok(Registered::Conflict(a.status)),
        Some(_) => {
            tx.execute(
                "UPDATE appliances SET status = 'unpaired', name = ?2, labels_json = ?3,
                     pairing = ?4, key_fingerprint = ?5
                 WHERE id = ?1",
                &args![
                    &req.id,
                    req.name.as_deref(),
                    to_json(&req.labels),
                    policy,
                    req.fingerprint.as_deref()
                ],
            )
            .ctx("register pending")?;
            add_event(
                tx,
                &req.id,
                now,
                "registered",
                &format!("registered by an operator (was pending){key_note}"),
            )?;
        }
        None => {
            tx.execute(
                "INSERT INTO appliances (id, status, name, labels_json, created_at, pairing,
                     key_fingerprint)
                 VALUES (?1, 'unpaired', ?2, ?3, ?4, ?5, ?6)",
                &args![
                    &req.id,
                    req.name.as_deref(),
                    to_json(&req.labels),
                    now,
                    policy,
                    req.fingerprint.as_deref()
                ],
            )
            .ctx("register")?;
            add_event(
                tx,
                &req.id,
                now,
                "registered",
                &format!("registered by an operator{key_note}"),
            )?;
        }
    }
    let a = get_in(tx, &req.id)?;
    Ok(a.map_or(Registered::Conflict(Status::Pending), |a| {
        Registered::Created(Box::new(a))
    }))
}

/// Deletes an appliance and its events; its device token stops working. False if unknown.
pub fn delete(conn: &mut Conn, id: &str) -> Result<bool, DbError> {
    let n = conn
        .auto(|c| c.execute("DELETE FROM appliances WHERE id = ?1", &args![id]))
        .ctx("delete appliance")?;
    Ok(n > 0)
}

/// The appliance a device token belongs to.
pub fn id_for_token(conn: &mut Conn, token_hash: &str) -> Result<Option<String>, DbError> {
    conn.auto(|c| id_for_token_in(c, token_hash))
}

pub(crate) fn id_for_token_in(
    c: &mut dyn Sql,
    token_hash: &str,
) -> Result<Option<String>, DbError> {
    c.query_opt(
        "SELECT id FROM appliances WHERE token_hash = ?1 AND status = 'ready'",
        &args![token_hash],
    )
    .and_then(|r| r.map(|r| r.get(0)).transpose())
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
    conn: &mut Conn,
    id: &str,
    beat: &Heartbeat,
    now: u64,
) -> Result<Option<Beat>, DbError> {
    conn.write(|tx| heartbeat_in(tx, id, beat, now))
}

type HeartbeatRow = (
    (Option<String>, Option<String>),
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
);

fn heartbeat_in(
    tx: &mut dyn Sql,
    id: &str,
    beat: &Heartbeat,
    now: u64,
) -> Result<Option<Beat>, DbError> {
    let row: Option<HeartbeatRow> = tx
        .query_opt(
            &format!(
                "SELECT image_name, arch, reported_json, desired_version, missing_bundle,
                     allow_downgrade
                 FROM appliances WHERE id = ?1 AND status = 'ready'{}",
                tx.dialect().for_update()
            ),
            &args![id],
        )
        .and_then(|r| {
            r.map(|r| {
                Ok((
                    (r.get(0)?, r.get(1)?),
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .transpose()
        })
        .ctx("read for heartbeat")?;
    let Some((image, reported, mut desired, missing, mut allow_downgrade)) = row else {
        return Ok(None);
    };
    // A member of an active rollout waits for its turn with no version (`db::rollouts`).
    let image_ref = (image.0.as_deref(), image.1.as_deref());
    match super::rollouts::on_heartbeat(tx, id, beat, image_ref, now)? {
        super::rollouts::Answer::Hold => (desired, allow_downgrade) = (None, false),
        super::rollouts::Answer::Handed(version, allow) => {
            (desired, allow_downgrade) = (Some(version), allow)
        }
        super::rollouts::Answer::NotMember | super::rollouts::Answer::Desired => {}
    }
    let old: Option<Heartbeat> = reported.map(|r| from_json(&r, "heartbeat")).transpose()?;
    // Fresh facts replace the stored ones; the report is kept without them.
    let mut beat = beat.clone();
    // The image whose bundles the device gets is the one recorded at pairing, whatever the
    // device reports now: a device cannot fetch another image's bundles by claiming it.
    if let Some(fresh) = beat.facts.take() {
        if let (Some(name), Some(arch)) = &image {
            if (&fresh.image_name, &fresh.arch) != (name, arch) {
                add_event(
                    tx,
                    id,
                    now,
                    "image-mismatch",
                    &format!(
                        "the device reports image {} on {}; it gets bundles of {name} on {arch} \
                         (recorded at pairing; an operator can change it)",
                        fresh.image_name, fresh.arch
                    ),
                )?;
            }
        }
        tx.execute(
            "UPDATE appliances SET facts_json = ?2 WHERE id = ?1",
            &args![id, to_json(&fresh)],
        )
        .ctx("store facts")?;
    }
    let beat = &beat;
    for (kind, message) in core::heartbeat_events(old.as_ref(), beat) {
        add_event(tx, id, now, kind, &message)?;
    }
    let mut missing_after = None;
    let bundle = match (&desired, image) {
        (Some(version), (Some(image_name), Some(arch))) => {
            let target = Target { image_name, arch };
            let found = super::bundles::find(tx, &target.image_name, version, &target.arch)?;
            if found.is_none() {
                if missing.as_deref() != Some(version.as_str()) {
                    add_event(
                        tx,
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
    tx.execute(
        "UPDATE appliances SET reported_json = ?2, last_seen = ?3, missing_bundle = ?4 WHERE id = ?1",
        &args![id, to_json(beat), now, missing_after],
    )
    .ctx("store heartbeat")?;
    Ok(Some(Beat {
        allow_downgrade: allow_downgrade && desired.is_some(),
        desired_version: desired,
        bundle,
    }))
}

/// What chooses a bundle: the image recorded at pairing.
struct Target {
    image_name: String,
    arch: String,
}

fn set_desired_in(
    tx: &mut dyn Sql,
    a: &Appliance,
    desired: &Desired,
    now: u64,
) -> Result<(), DbError> {
    let version = &desired.version;
    // A cleared version allows nothing.
    let allow = desired.allow_downgrade && version.is_some();
    let allowed_before: bool = tx
        .query_one(
            "SELECT allow_downgrade FROM appliances WHERE id = ?1",
            &args![&a.id],
        )
        .and_then(|r| r.get(0))
        .ctx("read allow_downgrade")?;
    if &a.desired_version == version && allowed_before == allow {
        return Ok(());
    }
    tx.execute(
        "UPDATE appliances SET desired_version = ?2, allow_downgrade = ?3, missing_bundle = NULL
         WHERE id = ?1",
        &args![&a.id, version.as_deref(), allow],
    )
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
    conn: &mut Conn,
    id: &str,
    desired: &Desired,
    now: u64,
) -> Result<Option<Appliance>, DbError> {
    conn.write(|tx| set_desired_one(tx, id, desired, now))
}

/// [`set_desired`] in the caller's transaction.
pub(crate) fn set_desired_one(
    tx: &mut dyn Sql,
    id: &str,
    desired: &Desired,
    now: u64,
) -> Result<Option<Appliance>, DbError> {
    let Some(a) = get_in(tx, id)? else {
        return Ok(None);
    };
    set_desired_in(tx, &a, desired, now)?;
    get_in(tx, id)
}

/// Sets the desired version of every appliance whose labels include the selector's; the ids,
/// sorted. In SQL: the selector is matched by SQLite, the rows are not loaded.
pub fn set_desired_by_selector(
    conn: &mut Conn,
    selector: &BTreeMap<String, String>,
    desired: &Desired,
    now: u64,
) -> Result<Vec<String>, DbError> {
    conn.write(|tx| set_desired_by_selector_in(tx, selector, desired, now))
}

/// [`set_desired_by_selector`] in the caller's transaction.
pub(crate) fn set_desired_by_selector_in(
    tx: &mut dyn Sql,
    selector: &BTreeMap<String, String>,
    desired: &Desired,
    now: u64,
) -> Result<Vec<String>, DbError> {
    let mut matching = String::from("FROM appliances WHERE 1 = 1");
    let mut args: Vec<Arg> = Vec::new();
    selector_sql(tx.dialect(), selector, &mut matching, &mut args);
    let matched: Vec<String> = tx
        .query(&format!("SELECT id {matching} ORDER BY id"), &args)
        .and_then(|rows| rows.iter().map(|r| r.get(0)).collect())
        .ctx("match selector")?;
    // The appliances whose desired version (or downgrade permission) changes get an event,
    // then the new values.
    let version = &desired.version;
    // A cleared version allows nothing.
    let allow = desired.allow_downgrade && version.is_some();
    let message = match version {
        Some(v) if allow => {
            format!("desired version set to {v}; downgrade to {v} allowed by operator")
        }
        Some(v) => format!("desired version set to {v}"),
        None => "desired version cleared".to_string(),
    };
    // Parameters after the selector's: the version, whether a downgrade is allowed, then
    // (events only) the time and the message.
    let n = args.len();
    let changing = format!(
        "{matching} AND (desired_version IS DISTINCT FROM ?{} OR allow_downgrade IS DISTINCT FROM ?{})",
        n + 1,
        n + 2
    );
    let mut event_args = args.clone();
    event_args.extend(args![version.as_deref(), allow, now, message]);
    let changed: Vec<String> = tx
        .query(
            &format!(
                "INSERT INTO events (appliance_id, at, kind, message)
                 SELECT id, CAST(?{} AS BIGINT), 'desired', CAST(?{} AS TEXT) {changing}
                 RETURNING appliance_id",
                n + 3,
                n + 4
            ),
            &event_args,
        )
        .and_then(|rows| rows.iter().map(|r| r.get(0)).collect())
        .ctx("desired events")?;
    let mut update_args = args;
    update_args.extend(args![version.as_deref(), allow]);
    tx.execute(
        &format!(
            "UPDATE appliances SET desired_version = ?{0}, allow_downgrade = ?{1},
                 missing_bundle = NULL
             WHERE id IN (SELECT id {changing})",
            n + 1,
            n + 2
        ),
        &update_args,
    )
    .ctx("set desired")?;
    for id in &changed {
        cap_events(tx, id)?;
    }
    Ok(matched)
}

/// A page of an appliance's events, oldest first, after the `seq` `page.after`; `None` if the
/// id is unknown.
pub fn events(
    conn: &mut Conn,
    id: &str,
    after: i64,
    page: &PageQuery,
) -> Result<Option<Page<Event>>, DbError> {
    conn.read(|c| {
        if !super::exists_in(c, "SELECT 1 FROM appliances WHERE id = ?1", id)? {
            return Ok(None);
        }
        let rows: Vec<Event> = c
            .query(
                "SELECT seq, at, kind, message FROM events WHERE appliance_id = ?1 AND seq > ?2
                 ORDER BY seq LIMIT ?3",
                &args![id, after, page.fetch()],
            )
            .and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        Ok(Event {
                            seq: r.get(0)?,
                            at: r.get::<i64>(1)?.max(0) as u64,
                            kind: r.get(2)?,
                            message: r.get(3)?,
                        })
                    })
                    .collect()
            })
            .ctx("list events")?;
        Ok(Some(page.page(rows, |e| e.seq.to_string())))
    })
}
