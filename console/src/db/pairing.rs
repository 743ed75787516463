//! Pairing: which device key an appliance id is bound to (the decisions are
//! `crate::pairing`'s), the operator's approval, and the image recorded at pairing. Each public
//! function is one transaction.

use super::appliances::{add_event, get_in};
use super::sql::Sql;
use super::{to_json, Conn, Context, DbError};
use crate::args;
use crate::core;
use crate::limit::IdRate;
use crate::pairing::{self, ApproveAction, Binding, PairAction};
use p6os_protocol::{Appliance, Facts, ImageRequest, PairingPolicy, Status};

pub enum Paired {
    /// Not paired (unknown id stored as pending, or the key waits for approval).
    Pending,
    /// The pending list is full (`pending` ids, none older than a day): nothing stored. The
    /// device is answered as if pending.
    PendingFull {
        pending: usize,
    },
    /// The id is asked for too often, and not by its bound key: nothing stored.
    IdRateExceeded,
    /// The proof answers a challenge not newer than the one that last got a token (a
    /// replayed proof): nothing stored, no token.
    ChallengeUsed,
    Ready,
}

/// A device that proved it holds `key` (fingerprint `fingerprint`) asks to pair as `id`.
/// `token_hash` is the digest of the token the caller returns if this pairs; at most
/// `max_pending` unknown ids are kept.
pub struct PairAsk<'a> {
    pub id: &'a str,
    pub facts: &'a Facts,
    pub key: &'a str,
    pub fingerprint: &'a str,
    pub token_hash: &'a str,
    pub max_pending: usize,
    pub id_rate: IdRate,
    /// When the challenge the proof answers was issued (Unix ms).
    pub challenge_ms: u64,
    pub now: u64,
}

/// The id's binding, its row locked until the transaction ends (PostgreSQL): two consoles
/// pairing one id take turns.
fn binding_in(c: &mut dyn Sql, id: &str) -> Result<Option<Binding>, DbError> {
    let row: Option<(String, Option<String>, Option<String>, String)> = c
        .query_opt(
            &format!(
                "SELECT status, key_fingerprint, requested_fingerprint, pairing
                 FROM appliances WHERE id = ?1{}",
                c.dialect().for_update()
            ),
            &args![id],
        )
        .and_then(|r| {
            r.map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .transpose()
        })
        .ctx("read binding")?;
    Ok(row.map(|(status, bound, requested, policy)| Binding {
        status: Status::parse(&status).unwrap_or(Status::Pending),
        bound,
        requested,
        policy: PairingPolicy::parse(&policy).unwrap_or_default(),
    }))
}

pub fn pair(conn: &mut Conn, ask: &PairAsk) -> Result<Paired, DbError> {
    conn.write(|tx| pair_in(tx, ask))
}

fn pair_in(tx: &mut dyn Sql, ask: &PairAsk) -> Result<Paired, DbError> {
    let PairAsk {
        id,
        facts,
        key,
        fingerprint,
        token_hash,
        id_rate,
        challenge_ms,
        now,
        ..
    } = *ask;
    let existing = binding_in(tx, id)?;
    let facts_json = to_json(facts);
    let action = pairing::pair_action(existing.as_ref(), fingerprint);
    if id_rate == IdRate::Exceeded && !matches!(action, PairAction::Pair | PairAction::ReissueToken)
    {
        return Ok(Paired::IdRateExceeded);
    }
    let outcome = match action {
        PairAction::StorePending => store_pending(tx, ask, &facts_json)?,
        PairAction::AwaitApproval { new_key } => {
            if new_key {
                tx.execute(
                    "UPDATE appliances SET requested_fingerprint = ?2 WHERE id = ?1",
                    &args![id, fingerprint],
                )
                .ctx("request approval")?;
                add_event(
                    tx,
                    id,
                    now,
                    "key-awaits-approval",
                    &format!(
                        "device {} asked to pair with key {fingerprint}: it waits for an \
                         operator's approval",
                        facts.hostname
                    ),
                )?;
            }
            // The facts of a device that is not bound are not stored over a bound one's.
            if existing
                .as_ref()
                .is_some_and(|b| b.status == Status::Pending)
            {
                tx.execute(
                    "UPDATE appliances SET facts_json = ?2 WHERE id = ?1",
                    &args![id, &facts_json],
                )
                .ctx("refresh pending")?;
            }
            Paired::Pending
        }
        action @ (PairAction::Pair | PairAction::ReissueToken) => {
            let Some(a) = get_in(tx, id)? else {
                return Ok(Paired::Pending);
            };
            let last: Option<i64> = tx
                .query_one(
                    "SELECT last_challenge_ms FROM appliances WHERE id = ?1",
                    &args![id],
                )
                .and_then(|r| r.get(0))
                .ctx("read last challenge")?;
            if !pairing::challenge_is_new(challenge_ms, last.map(|l| l.max(0) as u64)) {
                return Ok(Paired::ChallengeUsed);
            }
            let name = a.name.clone().or_else(|| facts.name.clone());
            let labels = core::merge_labels(&facts.labels, &a.labels);
            // The image is recorded at the first pairing and changed only by an operator.
            let (image_name, arch) = match &a.image {
                Some(i) => (i.image_name.clone(), i.arch.clone()),
                None => (facts.image_name.clone(), facts.arch.clone()),
            };
            tx.execute(
                "UPDATE appliances SET status = 'ready', name = ?2, labels_json = ?3,
                     facts_json = ?4, token_hash = ?5, paired_at = coalesce(paired_at, ?6),
                     last_seen = ?6, key_fingerprint = ?7, device_key = ?8,
                     requested_fingerprint = NULL, image_name = ?9, arch = ?10,
                     last_challenge_ms = ?11
                 WHERE id = ?1",
                &args![
                    id,
                    name,
                    to_json(&labels),
                    &facts_json,
                    token_hash,
                    now,
                    fingerprint,
                    key,
                    image_name,
                    arch,
                    challenge_ms
                ],
            )
            .ctx("pair")?;
            let message = match action {
                PairAction::Pair => {
                    format!("paired with key {fingerprint}: the device got its token")
                }
                _ => format!(
                    "the device proved its key {fingerprint} and got a new token (the old one \
                     stopped working)"
                ),
            };
            add_event(tx, id, now, "paired", &message)?;
            Paired::Ready
        }
    };
    Ok(outcome)
}

fn count_pending(tx: &mut dyn Sql) -> Result<usize, DbError> {
    tx.query_one(
        "SELECT CAST(count(*) AS BIGINT) FROM appliances WHERE status = 'pending'",
        &[],
    )
    .and_then(|r| r.get::<i64>(0))
    .map(|n| n.max(0) as usize)
    .ctx("count pending")
}

/// An unknown id: stored as pending if the list has room, after dropping pending ids older
/// than [`pairing::PENDING_MAX_AGE_SECS`] when it is full.
fn store_pending(tx: &mut dyn Sql, ask: &PairAsk, facts_json: &str) -> Result<Paired, DbError> {
    let PairAsk {
        id,
        facts,
        fingerprint,
        max_pending,
        now,
        ..
    } = *ask;
    // Two consoles (or connections) must not both count room for one more.
    super::sql::hold(tx, super::sql::Lock::Pending).ctx("pending lock")?;
    let mut pending = count_pending(tx)?;
    if pending >= max_pending {
        let before = now.saturating_sub(pairing::PENDING_MAX_AGE_SECS);
        let expired = tx
            .execute(
                "DELETE FROM appliances WHERE status = 'pending' AND created_at < ?1",
                &args![before],
            )
            .ctx("expire pending")?;
        if expired > 0 {
            tracing::info!(
                expired,
                "pending list full: dropped pending ids older than a day"
            );
            pending = count_pending(tx)?;
        }
    }
    if pending >= max_pending {
        return Ok(Paired::PendingFull { pending });
    }
    // No name and no labels: a stranger holding the public pairing token must not choose
    // what selectors match. What it sent stays in its facts, as reported.
    tx.execute(
        "INSERT INTO appliances (id, status, name, labels_json, facts_json, created_at,
             requested_fingerprint)
         VALUES (?1, 'pending', NULL, '{}', ?2, ?3, ?4)
         ON CONFLICT (id) DO NOTHING",
        &args![id, facts_json, now, fingerprint],
    )
    .ctx("store pending")?;
    add_event(
        tx,
        id,
        now,
        "pair-requested",
        &format!(
            "unregistered device {} asked to pair with key {fingerprint}: pending",
            facts.hostname
        ),
    )?;
    Ok(Paired::Pending)
}

pub enum Approved {
    Unknown,
    Done(Box<Appliance>),
}

/// An operator binds `id` to the key with `fingerprint` (see [`pairing::approve_action`]).
pub fn approve(
    conn: &mut Conn,
    id: &str,
    fingerprint: &str,
    now: u64,
) -> Result<Approved, DbError> {
    conn.write(|tx| approve_in(tx, id, fingerprint, now))
}

fn approve_in(
    tx: &mut dyn Sql,
    id: &str,
    fingerprint: &str,
    now: u64,
) -> Result<Approved, DbError> {
    let Some(binding) = binding_in(tx, id)? else {
        return Ok(Approved::Unknown);
    };
    let message = match pairing::approve_action(&binding, fingerprint) {
        ApproveAction::AlreadyBound => None,
        ApproveAction::Bind => {
            tx.execute(
                "UPDATE appliances SET status = 'unpaired', key_fingerprint = ?2,
                     requested_fingerprint = NULL
                 WHERE id = ?1",
                &args![id, fingerprint],
            )
            .ctx("approve")?;
            Some(format!(
                "an operator approved the device key {fingerprint}: it pairs at its next try"
            ))
        }
        ApproveAction::Rebind => {
            tx.execute(
                "UPDATE appliances SET status = 'unpaired', key_fingerprint = ?2,
                     device_key = NULL, token_hash = NULL, requested_fingerprint = NULL
                 WHERE id = ?1",
                &args![id, fingerprint],
            )
            .ctx("rebind")?;
            Some(format!(
                "an operator bound this id to another device key {fingerprint} (was {}): the \
                 old device's token stopped working",
                binding.bound.as_deref().unwrap_or("no key")
            ))
        }
    };
    if let Some(message) = message {
        add_event(tx, id, now, "key-approved", &message)?;
    }
    let a = get_in(tx, id)?;
    Ok(a.map_or(Approved::Unknown, |a| Approved::Done(Box::new(a))))
}

/// An operator sets the image whose bundles `id` gets; `None` if the id is unknown.
pub fn set_image(
    conn: &mut Conn,
    id: &str,
    image: &ImageRequest,
    now: u64,
) -> Result<Option<Appliance>, DbError> {
    conn.write(|tx| set_image_in(tx, id, image, now))
}

fn set_image_in(
    tx: &mut dyn Sql,
    id: &str,
    image: &ImageRequest,
    now: u64,
) -> Result<Option<Appliance>, DbError> {
    let n = tx
        .execute(
            "UPDATE appliances SET image_name = ?2, arch = ?3, missing_bundle = NULL WHERE id = ?1",
            &args![id, &image.image_name, &image.arch],
        )
        .ctx("set image")?;
    if n == 0 {
        return Ok(None);
    }
    add_event(
        tx,
        id,
        now,
        "image",
        &format!(
            "an operator set the image to {} on {}",
            image.image_name, image.arch
        ),
    )?;
    get_in(tx, id)
}
