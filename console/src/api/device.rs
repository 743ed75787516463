//! Device endpoints: pairing (authenticated by the fleet's pairing token in the body) and
//! heartbeats (authenticated by the device's own token, for its own id only).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use p6os_protocol::{Facts, Heartbeat, HeartbeatResponse, PairRequest, PairResponse};

use super::extract::{parse_json, DeviceToken, JsonBody, Param, RawJson};
use super::{json, now, AppState};
use crate::auth::{digest_hex, new_token};
use crate::core::{check_id_field, check_labels, check_name, clean_facts, clean_heartbeat};
use crate::db::appliances::{self, Paired};
use crate::error::ApiError;
use p6os_protocol::check_version;

fn check_facts(facts: &Facts) -> Result<(), ApiError> {
    check_name(&facts.name, "facts.name")?;
    check_labels(&facts.labels, "facts.labels")
}

/// `POST /api/v1/appliances/{id}/pair`: 403 for a wrong pairing token (nothing stored),
/// 202 pending for an id no operator registered, 409 for an id that is paired already,
/// 200 with a new device token otherwise.
pub async fn pair(
    State(st): State<AppState>,
    Param(id): Param,
    JsonBody(req): JsonBody<PairRequest>,
) -> Result<Response, ApiError> {
    if !st.pairing.matches(&req.pairing_token) {
        return Err(ApiError::forbidden("wrong pairing token"));
    }
    check_id_field(&id)?;
    let mut req = req;
    clean_facts(&mut req.facts);
    check_facts(&req.facts)?;
    let token = new_token().map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    let hash = digest_hex(&token);
    let facts = req.facts;
    let outcome = st
        .db
        .run(move |c| appliances::pair(c, &id, &facts, &hash, now()))
        .await?;
    Ok(match outcome {
        Paired::Pending => json(
            StatusCode::ACCEPTED,
            PairResponse::Pending {
                retry_secs: st.pending_retry_secs,
                message: "this id is not registered yet: the console lists it as pending \
                          until an operator registers it"
                    .into(),
            },
        ),
        Paired::AlreadyPaired => {
            return Err(ApiError::conflict(
                "this id is paired already: to pair it again (a reinstalled device), an operator \
                 deletes it and registers it again",
            ))
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

/// `POST /api/v1/appliances/{id}/heartbeat`: stores the report, answers with the desired
/// version and its bundle. The token is checked before the body is parsed.
pub async fn heartbeat(
    State(st): State<AppState>,
    DeviceToken(hash): DeviceToken,
    Param(id): Param,
    RawJson(body): RawJson,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    check_id_field(&id)?;
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
            appliances::heartbeat(c, &id, &beat, now())?
                .ok_or_else(|| ApiError::unauthorized("invalid device token"))
        })
        .await?;
    Ok(Json(HeartbeatResponse {
        desired_version: answer.desired_version,
        bundle: answer.bundle,
        heartbeat_secs: st.heartbeat_secs,
        allow_downgrade: answer.allow_downgrade,
    }))
}
