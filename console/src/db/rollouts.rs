//! Staged rollouts in the database: creation (members fixed, waves assigned), the operator's
//! orders, the views (paged), and the step each member's heartbeat takes (`on_heartbeat`).
//! The decisions are `crate::rollout`'s; each public function is one transaction, or runs in
//! the caller's (the heartbeat's).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::appliances::{add_event, selector_sql};
use super::sql::{Arg, Sql, SqlError};
use super::{from_json, to_json, Conn, Context, DbError};
use crate::args;
use crate::page::{Page, PageQuery};
use crate::rollout::{self, window, Action, Gate, Standing, Step};
use p6os_protocol::rollout::{
    DeviceState, Rollout, RolloutDevice, RolloutRequest, RolloutState, Totals,
};
use p6os_protocol::Heartbeat;

/// A rollout's row.
struct Row {
    id: u64,
    request: RolloutRequest,
    state: RolloutState,
    reason: Option<String>,
    wave: usize,
    acknowledged: u64,
    created_at: u64,
    updated_at: u64,
}

impl Row {
    fn standing(&self) -> Standing {
        Standing {
            state: self.state,
            wave: self.wave,
            acknowledged: self.acknowledged,
        }
    }
}

const COLUMNS: &str =
    "id, request_json, state, reason, wave, acknowledged_failures, created_at, updated_at";

/// A row's columns before parsing: id, request, state, reason, and the numbers.
type RawRow = (i64, String, String, Option<String>, [i64; 4]);

fn read_row(r: &super::sql::Row) -> Result<RawRow, SqlError> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        [r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?],
    ))
}

fn finish_row(raw: RawRow) -> Result<Row, DbError> {
    let (id, request, state, reason, [wave, ack, created, updated]) = raw;
    let n = |v: i64| v.max(0) as u64;
    Ok(Row {
        id: n(id),
        request: from_json(&request, "rollout request")?,
        state: RolloutState::parse(&state).unwrap_or(RolloutState::Paused),
        reason,
        wave: n(wave) as usize,
        acknowledged: n(ack),
        created_at: n(created),
        updated_at: n(updated),
    })
}

fn load(c: &mut dyn Sql, id: u64) -> Result<Option<Row>, DbError> {
    c.query_opt(
        &format!("SELECT {COLUMNS} FROM rollouts WHERE id = ?1"),
        &args![id],
    )
    .and_then(|r| r.map(|r| read_row(&r)).transpose())
    .ctx("get rollout")?
    .map(finish_row)
    .transpose()
}

/// The rollout's row, locked until the transaction ends (PostgreSQL; SQLite's write
/// transaction holds every row): one console at a time decides a rollout's next step, and
/// sees what the one before it committed.
fn load_locked(c: &mut dyn Sql, id: u64) -> Result<Option<Row>, DbError> {
    c.query_opt(
        &format!(
            "SELECT {COLUMNS} FROM rollouts WHERE id = ?1{}",
            c.dialect().for_update()
        ),
        &args![id],
    )
    .and_then(|r| r.map(|r| read_row(&r)).transpose())
    .ctx("lock rollout")?
    .map(finish_row)
    .transpose()
}

/// The members' totals per wave (as many as the rollout has waves).
fn wave_totals(c: &mut dyn Sql, id: u64, waves: usize) -> Result<Vec<Totals>, DbError> {
    let mut out = vec![Totals::default(); waves];
    let rows: Vec<(i64, String, i64)> = c
        .query(
            "SELECT wave, state, CAST(COUNT(*) AS BIGINT) FROM rollout_devices
             WHERE rollout_id = ?1 GROUP BY wave, state",
            &args![id],
        )
        .and_then(|rows| {
            rows.iter()
                .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .collect()
        })
        .ctx("rollout totals")?;
    for (wave, state, n) in rows {
        if let (Some(t), Some(state)) = (
            out.get_mut(wave.max(0) as usize),
            DeviceState::parse(&state),
        ) {
            t.add(state, n.max(0) as u64);
        }
    }
    Ok(out)
}

fn view(c: &mut dyn Sql, row: Row) -> Result<Rollout, DbError> {
    let waves = wave_totals(c, row.id, row.request.waves.len())?;
    let mut totals = Totals::default();
    for w in &waves {
        for s in DeviceState::ALL {
            totals.add(s, count(w, s));
        }
    }
    Ok(Rollout {
        id: row.id,
        counted_failures: rollout::counted_failures(&row.standing(), &waves),
        state: row.state,
        reason: row.reason,
        wave: row.wave as u32,
        totals,
        waves,
        created_at: row.created_at,
        updated_at: row.updated_at,
        request: row.request,
    })
}

fn count(t: &Totals, s: DeviceState) -> u64 {
    match s {
        DeviceState::Waiting => t.waiting,
        DeviceState::Downloading => t.downloading,
        DeviceState::Installing => t.installing,
        DeviceState::Trial => t.trial,
        DeviceState::Blessed => t.blessed,
        DeviceState::RolledBack => t.rolled_back,
        DeviceState::Refused => t.refused,
    }
}

/// Runs the pure decision on the rollout's totals and stores its outcome.
fn step(c: &mut dyn Sql, row: &mut Row, now: u64) -> Result<(), DbError> {
    let waves = wave_totals(c, row.id, row.request.waves.len())?;
    match rollout::decide(row.request.failure_threshold, &row.standing(), &waves) {
        Step::Stay => return Ok(()),
        Step::Pause(reason) => {
            row.state = RolloutState::Paused;
            row.reason = Some(reason);
        }
        Step::Advance(k) => row.wave = k,
        Step::Complete => {
            row.state = RolloutState::Completed;
            row.reason = Some("every wave finished".into());
        }
    }
    save(c, row, now)
}

fn save(c: &mut dyn Sql, row: &Row, now: u64) -> Result<(), DbError> {
    c.execute(
        "UPDATE rollouts SET state = ?2, reason = ?3, wave = ?4, acknowledged_failures = ?5,
             updated_at = ?6 WHERE id = ?1",
        &args![
            row.id,
            row.state.as_str(),
            row.reason.as_deref(),
            row.wave,
            row.acknowledged,
            now
        ],
    )
    .ctx("save rollout")?;
    tracing::info!(
        rollout = row.id,
        state = row.state.as_str(),
        wave = row.wave,
        reason = row.reason.as_deref().unwrap_or(""),
        "rollout"
    );
    Ok(())
}

/// The active rollout (running or paused) holding one of the appliances `sql_ids` selects
/// (`SELECT id FROM appliances WHERE ...` with `args`): its id, version, state and the member.
fn active_holding(c: &mut dyn Sql, sql_ids: &str, args: &[Arg]) -> Result<Option<Holder>, DbError> {
    c.query_opt(
        &format!(
            "SELECT r.id, r.version, r.state, d.appliance_id FROM rollout_devices d
             JOIN rollouts r ON r.id = d.rollout_id
             WHERE r.state IN ('running', 'paused') AND d.appliance_id IN ({sql_ids})
             ORDER BY d.appliance_id LIMIT 1"
        ),
        args,
    )
    .and_then(|r| {
        r.map(|r| {
            Ok(Holder {
                rollout: r.get::<i64>(0)?.max(0) as u64,
                version: r.get(1)?,
                state: r.get(2)?,
                appliance: r.get(3)?,
            })
        })
        .transpose()
    })
    .ctx("find active rollout")
}

/// An active rollout that holds an appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub rollout: u64,
    pub version: String,
    pub state: String,
    pub appliance: String,
}

impl Holder {
    /// The 409's message.
    pub fn message(&self) -> String {
        format!(
            "appliance {} is in rollout {} of version {} ({}): wait until it completes or \
             abort it (`rollouts abort {}`)",
            self.appliance, self.rollout, self.version, self.state, self.rollout
        )
    }
}

/// The active rollout holding appliance `id`, if any (a manual desired version is refused).
/// Holds the operator lock (PostgreSQL) until the caller's transaction ends: no rollout is
/// created between this check and what the caller does next.
pub fn holding_id(c: &mut dyn Sql, id: &str) -> Result<Option<Holder>, DbError> {
    super::sql::hold(c, super::sql::Lock::Operator).ctx("operator lock")?;
    active_holding(c, "?1", &args![id])
}

/// The active rollout holding one of the appliances `selector` matches, if any.
pub fn holding_selector(
    c: &mut dyn Sql,
    selector: &BTreeMap<String, String>,
) -> Result<Option<Holder>, DbError> {
    super::sql::hold(c, super::sql::Lock::Operator).ctx("operator lock")?;
    let mut sql = String::from("SELECT id FROM appliances WHERE status != 'pending'");
    let mut args = Vec::new();
    selector_sql(c.dialect(), selector, &mut sql, &mut args);
    active_holding(c, &sql, &args)
}

pub enum Created {
    Done(Box<Rollout>),
    /// The selector matches no registered appliance.
    NoMembers,
    /// No bundle of that version is held.
    NoBundle,
    /// A member is in another active rollout.
    Overlap(Holder),
}

/// Creates a rollout (already checked): its members are the registered appliances the
/// selector matches now, in id order, split into waves; their states come from their last
/// heartbeats; the first wave starts.
pub fn create(conn: &mut Conn, req: &RolloutRequest, now: u64) -> Result<Created, DbError> {
    conn.write(|tx| create_in(tx, req, now))
}

fn create_in(tx: &mut dyn Sql, req: &RolloutRequest, now: u64) -> Result<Created, DbError> {
    // Overlap checks and manual desires take turns with creations.
    super::sql::hold(tx, super::sql::Lock::Operator).ctx("operator lock")?;
    let mut sql = String::from("SELECT id FROM appliances WHERE status != 'pending'");
    let mut args: Vec<Arg> = Vec::new();
    selector_sql(tx.dialect(), &req.selector, &mut sql, &mut args);
    let has_bundle = tx
        .query_opt(
            "SELECT 1 FROM bundles WHERE version = ?1 LIMIT 1",
            &args![&req.version],
        )
        .ctx("find bundle version")?
        .is_some();
    if !has_bundle {
        return Ok(Created::NoBundle);
    }
    let members: Vec<(String, Option<String>)> = tx
        .query(
            &format!("SELECT id, reported_json FROM appliances WHERE id IN ({sql}) ORDER BY id"),
            &args,
        )
        .and_then(|rows| rows.iter().map(|r| Ok((r.get(0)?, r.get(1)?))).collect())
        .ctx("rollout members")?;
    if members.is_empty() {
        return Ok(Created::NoMembers);
    }
    // One active rollout per appliance: a second one over any member is refused.
    if let Some(h) = active_holding(tx, &sql, &args)? {
        return Ok(Created::Overlap(h));
    }
    let id: i64 = tx
        .query_one(
            "INSERT INTO rollouts (version, request_json, state, created_at, updated_at)
             VALUES (?1, ?2, 'running', ?3, ?3) RETURNING id",
            &args![&req.version, to_json(req), now],
        )
        .and_then(|r| r.get(0))
        .ctx("insert rollout")?;
    let targets = rollout::wave_targets(&req.waves, members.len() as u64);
    for (i, (member, reported)) in members.iter().enumerate() {
        let beat: Option<Heartbeat> = reported
            .as_deref()
            .map(|r| from_json(r, "heartbeat"))
            .transpose()?;
        let (state, reason) = rollout::device_state(&req.version, beat.as_ref());
        let wave = rollout::wave_of(i as u64, &targets);
        tx.execute(
            "INSERT INTO rollout_devices (rollout_id, appliance_id, wave, state, reason,
                 updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            &args![id, member, wave, state.as_str(), reason, now],
        )
        .ctx("insert member")?;
    }
    let mut row = load(tx, id as u64)?.ok_or(DbError::Query {
        what: "reload rollout",
        source: SqlError::NoRow,
    })?;
    step(tx, &mut row, now)?;
    let view = view(tx, row)?;
    Ok(Created::Done(Box::new(view)))
}

/// Runs the decision of every running rollout: after members left (a deleted appliance), a
/// wave may have finished.
pub fn recheck(conn: &mut Conn, now: u64) -> Result<(), DbError> {
    conn.write(|tx| {
        let ids: Vec<i64> = tx
            .query("SELECT id FROM rollouts WHERE state = 'running'", &[])
            .and_then(|rows| rows.iter().map(|r| r.get(0)).collect())
            .ctx("running rollouts")?;
        for id in ids {
            if let Some(mut row) = load_locked(tx, id as u64)? {
                if row.state == RolloutState::Running {
                    step(tx, &mut row, now)?;
                }
            }
        }
        Ok(())
    })
}

pub fn get(conn: &mut Conn, id: u64) -> Result<Option<Rollout>, DbError> {
    conn.read(|c| match load(c, id)? {
        Some(row) => view(c, row).map(Some),
        None => Ok(None),
    })
}

/// A page of rollouts, by id, after the id `page.after`.
pub fn list(conn: &mut Conn, after: u64, page: &PageQuery) -> Result<Page<Rollout>, DbError> {
    conn.read(|c| {
        let raws: Vec<RawRow> = c
            .query(
                &format!("SELECT {COLUMNS} FROM rollouts WHERE id > ?1 ORDER BY id LIMIT ?2"),
                &args![after, page.fetch()],
            )
            .and_then(|rows| rows.iter().map(read_row).collect())
            .ctx("list rollouts")?;
        let mut out = Vec::with_capacity(raws.len());
        for raw in raws {
            out.push(view(c, finish_row(raw)?)?);
        }
        Ok(page.page(out, |r| r.id.to_string()))
    })
}

/// A page of a rollout's members, by id (optionally only those in `state`); `None` if the
/// rollout is unknown.
pub fn devices(
    conn: &mut Conn,
    id: u64,
    state: Option<DeviceState>,
    page: &PageQuery,
) -> Result<Option<Page<RolloutDevice>>, DbError> {
    conn.read(|c| devices_in(c, id, state, page))
}

fn devices_in(
    c: &mut dyn Sql,
    id: u64,
    state: Option<DeviceState>,
    page: &PageQuery,
) -> Result<Option<Page<RolloutDevice>>, DbError> {
    if load(c, id)?.is_none() {
        return Ok(None);
    }
    let mut sql = String::from(
        "SELECT appliance_id, wave, state, reason, handed, updated_at FROM rollout_devices
         WHERE rollout_id = ?1 AND appliance_id > ?2",
    );
    let mut args: Vec<Arg> = args![id, page.after.clone().unwrap_or_default()].to_vec();
    if let Some(s) = state {
        args.push(s.as_str().into());
        let _ = write!(sql, " AND state = ?{}", args.len());
    }
    args.push(page.fetch().into());
    let _ = write!(sql, " ORDER BY appliance_id LIMIT ?{}", args.len());
    let rows: Vec<RolloutDevice> = c
        .query(&sql, &args)
        .and_then(|rows| {
            rows.iter()
                .map(|r| {
                    Ok(RolloutDevice {
                        id: r.get(0)?,
                        wave: r.get::<i64>(1)?.max(0) as u32,
                        state: DeviceState::parse(&r.get::<String>(2)?)
                            .unwrap_or(DeviceState::Waiting),
                        reason: r.get(3)?,
                        started: r.get(4)?,
                        updated_at: r.get::<i64>(5)?.max(0) as u64,
                    })
                })
                .collect()
        })
        .ctx("list rollout members")?;
    Ok(Some(page.page(rows, |d| d.id.clone())))
}

pub enum Acted {
    Done(Box<Rollout>),
    Unknown,
    /// The order makes no sense in the rollout's state: why.
    Refused(String),
}

/// An operator's order. Resuming acknowledges the failures so far (they are not counted
/// again) and decides at once; aborting tells the members that were handed the version but
/// have not started that there is no version for them any more.
pub fn act(conn: &mut Conn, id: u64, action: Action, now: u64) -> Result<Acted, DbError> {
    conn.write(|tx| act_in(tx, id, action, now))
}

fn act_in(tx: &mut dyn Sql, id: u64, action: Action, now: u64) -> Result<Acted, DbError> {
    let Some(mut row) = load_locked(tx, id)? else {
        return Ok(Acted::Unknown);
    };
    let (state, reason) = match rollout::transition(row.state, action) {
        Ok(next) => next,
        Err(why) => return Ok(Acted::Refused(format!("rollout {id}: {why}"))),
    };
    row.state = state;
    row.reason = reason;
    match action {
        Action::Resume => {
            let waves = wave_totals(tx, id, row.request.waves.len())?;
            row.acknowledged = waves.iter().map(Totals::failures).sum();
            save(tx, &row, now)?;
            step(tx, &mut row, now)?;
        }
        Action::Abort => {
            save(tx, &row, now)?;
            let cleared: Vec<String> = tx
                .query(
                    "UPDATE appliances SET desired_version = NULL, allow_downgrade = FALSE,
                         missing_bundle = NULL
                     WHERE id IN (SELECT appliance_id FROM rollout_devices
                                  WHERE rollout_id = ?1 AND handed = TRUE AND state = 'waiting')
                       AND desired_version = ?2
                     RETURNING id",
                    &args![id, &row.request.version],
                )
                .and_then(|rows| rows.iter().map(|r| r.get(0)).collect())
                .ctx("abort rollout")?;
            for a in cleared {
                add_event(
                    tx,
                    &a,
                    now,
                    "desired",
                    &format!(
                        "rollout {id} aborted before this device started: desired version cleared"
                    ),
                )?;
            }
        }
        Action::Pause => save(tx, &row, now)?,
    }
    let view = view(tx, row)?;
    Ok(Acted::Done(Box::new(view)))
}

/// What a member's heartbeat answers, as far as its rollout goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Not in an active rollout: the appliance's desired version, as always.
    NotMember,
    /// No version now (its turn has not come).
    Hold,
    /// Under way or done: the appliance's desired version.
    Desired,
    /// Its turn came now: the desired version was set to the rollout's (and whether it may be
    /// a downgrade).
    Handed(String, bool),
}

/// A member's step at its heartbeat (in the heartbeat's transaction): its state from the
/// report; if it changed, the rollout's decision; then whether it may start now, handing it
/// the version (its desired version, with an event) the first time. A member whose image has
/// no bundle of the version pauses the rollout (a bundle deleted mid-rollout).
pub fn on_heartbeat(
    tx: &mut dyn Sql,
    id: &str,
    beat: &Heartbeat,
    image: (Option<&str>, Option<&str>),
    now: u64,
) -> Result<Answer, DbError> {
    let member: Option<i64> = tx
        .query_opt(
            "SELECT d.rollout_id FROM rollout_devices d
             JOIN rollouts r ON r.id = d.rollout_id
             WHERE d.appliance_id = ?1 AND r.state IN ('running', 'paused') LIMIT 1",
            &args![id],
        )
        .and_then(|r| r.map(|r| r.get(0)).transpose())
        .ctx("rollout membership")?;
    let Some(rollout_id) = member else {
        return Ok(Answer::NotMember);
    };
    // The rollout locked first, then the member read again: what another console committed
    // for this rollout in the meantime is seen.
    let Some(mut row) = load_locked(tx, rollout_id as u64)? else {
        return Ok(Answer::NotMember);
    };
    if !row.state.is_active() {
        return Ok(Answer::NotMember);
    }
    let Some((wave, old_state, handed)): Option<(i64, String, bool)> = tx
        .query_opt(
            "SELECT wave, state, handed FROM rollout_devices
             WHERE rollout_id = ?1 AND appliance_id = ?2",
            &args![rollout_id, id],
        )
        .and_then(|r| r.map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).transpose())
        .ctx("rollout member")?
    else {
        return Ok(Answer::NotMember);
    };
    let (state, reason) = rollout::device_state(&row.request.version, Some(beat));
    if DeviceState::parse(&old_state) != Some(state) {
        tx.execute(
            "UPDATE rollout_devices SET state = ?3, reason = ?4, updated_at = ?5
             WHERE rollout_id = ?1 AND appliance_id = ?2",
            &args![rollout_id, id, state.as_str(), reason, now],
        )
        .ctx("member state")?;
        step(tx, &mut row, now)?;
    }
    let labels: String = tx
        .query_one(
            "SELECT labels_json FROM appliances WHERE id = ?1",
            &args![id],
        )
        .and_then(|r| r.get(0))
        .ctx("member labels")?;
    let labels: BTreeMap<String, String> = from_json(&labels, "labels")?;
    let open = window::may_start_now(&row.request.windows, &labels, now);
    let mut gate = rollout::gate(row.state, row.wave, state, wave.max(0) as usize, open);
    // Handed it now, or fetching it: the bundle must be there.
    let wants_bundle = gate == Gate::Start
        || (handed && matches!(state, DeviceState::Waiting | DeviceState::Downloading));
    if let (true, (Some(name), Some(arch))) = (wants_bundle, image) {
        if super::bundles::find(tx, name, &row.request.version, arch)?.is_none() {
            if row.state == RolloutState::Running {
                row.state = RolloutState::Paused;
                row.reason = Some(format!(
                    "no bundle of version {} for image {name} on {arch} (deleted?): upload it, \
                     then resume",
                    row.request.version
                ));
                save(tx, &row, now)?;
            }
            if gate == Gate::Start {
                gate = Gate::Hold;
            }
        }
    }
    Ok(match gate {
        Gate::Hold => Answer::Hold,
        Gate::Proceed => Answer::Desired,
        Gate::Start if handed => Answer::Desired,
        Gate::Start => {
            hand(tx, &row, id, wave, now)?;
            Answer::Handed(row.request.version.clone(), row.request.allow_downgrade)
        }
    })
}

/// Sets the member's desired version to the rollout's, with an event.
fn hand(tx: &mut dyn Sql, row: &Row, id: &str, wave: i64, now: u64) -> Result<(), DbError> {
    let allow = row.request.allow_downgrade;
    tx.execute(
        "UPDATE appliances SET desired_version = ?2, allow_downgrade = ?3, missing_bundle = NULL
         WHERE id = ?1",
        &args![id, &row.request.version, allow],
    )
    .ctx("hand version")?;
    tx.execute(
        "UPDATE rollout_devices SET handed = TRUE, updated_at = ?3
         WHERE rollout_id = ?1 AND appliance_id = ?2",
        &args![row.id, id, now],
    )
    .ctx("member handed")?;
    let mut message = format!(
        "rollout {} (wave {}): desired version set to {}",
        row.id,
        wave + 1,
        row.request.version
    );
    if allow {
        let _ = write!(
            message,
            "; downgrade to {} allowed by operator",
            row.request.version
        );
    }
    add_event(tx, id, now, "desired", &message)
}
