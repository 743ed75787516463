//! Device endpoints: pairing (the fleet's pairing token in the body lets a device ask; its
//! identity key decides, see `crate::pairing`) and
//! heartbeats (authenticated by the device's own token, for its own id only).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use p6os_protocol::identity::{DeviceKey, MAX_CHALLENGE_LEN};
use p6os_protocol::{Facts, Heartbeat, HeartbeatResponse, PairRequest, PairResponse};

use super::extract::{parse_json, DeviceToken, Param, RawJson};
use super::{json, now_ms, AppState};
use crate::auth::{digest_hex, new_token};
use crate::core::{check_id_field, check_labels, check_name, clean_facts, clean_heartbeat};
use crate::db::appliances;
use crate::db::pairing::{self, PairAsk, Paired};
use crate::error::ApiError;
use p6os_protocol::check_version;

pub(super) fn check_facts(facts: &Facts) -> Result<(), ApiError> {
    check_name(&facts.name, "facts.name")?;
    check_labels(&facts.labels, "facts.labels")
}

/// The pair route's per-source limit, a layer that runs before the handler reads the body:
/// a source over its rate gets 429 with Retry-After and its body is never read (the
/// connection closes rather than waiting for it).
pub async fn limit_pair_source(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let Some(wait) = st.limits.source_wait(peer.ip()) else {
        return next.run(req).await;
    };
    let secs = wait.as_millis().div_ceil(1000).max(1);
    let mut response = too_many(&format!(
        "too many pairing requests from this address: ask again in {secs} s"
    ))
    .into_response();
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(secs as u64));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// `POST /api/v1/appliances/{id}/pair`, in two rounds (see `crate::pairing`): the device's key
/// without a proof gets a challenge; the same request with the signed challenge pairs (200
/// with a new device token) or waits (202 pending: the id is not registered, or this key is not
/// the approved one, or the pending list is full; the answer does not say which). 403 for a
/// wrong pairing token, 429 when the id asks too often (the source's rate is
/// [`limit_pair_source`]'s); none of those stores anything, and neither does a request without
/// a valid proof.
pub async fn pair(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Param(id): Param,
    RawJson(body): RawJson,
) -> Result<Response, ApiError> {
    let req: PairRequest = parse_json(&body)?;
    if !st.pairing.matches(&req.pairing_token) {
        return Err(ApiError::forbidden("wrong pairing token"));
    }
    check_id_field(&id)?;
    let key_text = req.device_key.as_deref().ok_or_else(|| {
        ApiError::field(
            "device_key",
            "this console pairs devices by their identity key: update the agent",
        )
    })?;
    let key =
        DeviceKey::parse(key_text).map_err(|e| ApiError::field("device_key", e.to_string()))?;
    let key_text = key.encode();
    let now_ms = now_ms();
    let now = now_ms / 1000;
    let Some(proof) = req.proof else {
        return Ok(json(
            StatusCode::OK,
            PairResponse::Challenge {
                challenge: st.challenges.make(&id, &key_text, now_ms),
            },
        ));
    };
    let challenge_ms = (proof.challenge.len() <= MAX_CHALLENGE_LEN)
        .then(|| {
            st.challenges
                .check(&proof.challenge, &id, &key_text, now_ms)
        })
        .flatten()
        .ok_or_else(|| {
            ApiError::field(
                "proof.challenge",
                "not a challenge of this console for this id and key, or older than 5 \
                 minutes: ask for a new one",
            )
        })?;
    key.verify_pair(&id, &proof.challenge, &proof.signature)
        .map_err(|e| ApiError::field("proof.signature", e.to_string()))?;
    // Over the id's rate, only the key the id is bound to gets through (decided with the
    // record, in `appliances::pair`): strangers cannot lock the real device out.
    let id_rate = st.limits.id_rate(&id);
    let mut facts = req.facts;
    clean_facts(&mut facts);
    check_facts(&facts)?;
    let token = new_token().map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    let hash = digest_hex(&token);
    let fingerprint = key.fingerprint();
    let max_pending = st.max_pending;
    let asked_for = id.clone();
    let outcome = st
        .db
        .run(move |c| {
            pairing::pair(
                c,
                &PairAsk {
                    id: &id,
                    facts: &facts,
                    key: &key_text,
                    fingerprint: &fingerprint,
                    token_hash: &hash,
                    max_pending,
                    id_rate,
                    challenge_ms,
                    now,
                },
            )
        })
        .await?;
    let pending = || {
        json(
            StatusCode::ACCEPTED,
            PairResponse::Pending {
                retry_secs: st.pending_retry_secs,
                message: "not paired yet: an operator registers this id or approves this \
                          device's key (its fingerprint is in `p6os-agent status`)"
                    .into(),
            },
        )
    };
    Ok(match outcome {
        Paired::Pending => pending(),
        Paired::ChallengeUsed => {
            return Err(ApiError::field(
                "proof.challenge",
                "challenge already used; ask for a new one",
            ));
        }
        Paired::IdRateExceeded => {
            return Err(too_many("this id asks to pair too often: wait a minute"));
        }
        // Answered like any pending id: a full list is not the requester's business.
        Paired::PendingFull { pending: n } => {
            if st.limits.pending_full_warning_due() {
                tracing::warn!(
                    "pending list full ({n}): pair request from {} for {asked_for} not stored \
                     (register or delete pending ids, or raise --max-pending; this warning \
                     comes at most once a minute)",
                    peer.ip()
                );
            }
            pending()
        }
        Paired::Ready => json(
            StatusCode::OK,
            PairResponse::Ready {
                device_token: token,
                heartbeat_secs: st.heartbeat_secs,
            },
        ),
    })
}

fn too_many(message: &str) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
}

/// `POST /api/v1/appliances/{id}/heartbeat`: stores the report, answers with the desired
/// version and its bundle. The token is checked before the body is parsed.
pub async fn heartbeat(
    State(st): State<AppState>,
    DeviceToken(hash): DeviceToken,
    Param(id): Param,
    RawJson(body): RawJson,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    check_id_field(&id)?;
    let clock = st.clock.clone();
    let answer = st
        .db
        .run(move |c| {
            match appliances::id_for_token(c, &hash)? {
                None => return Err(ApiError::unauthorized("invalid device token")),
                Some(owner) if owner != id => {
                    return Err(ApiError::forbidden(
                        "this device token belongs to another appliance",
                    ))
                }
                Some(_) => {}
            }
            let mut beat: Heartbeat = parse_json(&body)?;
            clean_heartbeat(&mut beat);
            check_version(&beat.version).map_err(|e| ApiError::field("version", e))?;
            if let Some(facts) = &beat.facts {
                check_facts(facts)?;
            }
            let now = clock.now();
            let answer = appliances::heartbeat(c, &id, &beat, now)?
                .ok_or_else(|| ApiError::unauthorized("invalid device token"))?;
            let config = super::siteconfig::offer(c, &id)?;
            let diagnostics = crate::db::diagnostics::deliver(c, &id, now)?;
            Ok((answer, config, diagnostics))
        })
        .await?;
    let (answer, config, diagnostics) = answer;
    Ok(Json(HeartbeatResponse {
        desired_version: answer.desired_version,
        bundle: answer.bundle,
        heartbeat_secs: st.heartbeat_secs,
        allow_downgrade: answer.allow_downgrade,
        config,
        diagnostics,
    }))
}
