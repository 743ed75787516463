//! Staged rollouts, the operator's endpoints (admin token): create, list, show, members, and
//! pause, resume, abort. The decisions are `crate::rollout`'s, the storage `db::rollouts`'.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use p6os_protocol::rollout::{
    DeviceState, Rollout, RolloutDevicePage, RolloutPage, RolloutRequest,
};

use super::extract::{JsonBody, Operator, Param};
use super::gate::require_covers;
use super::{json, AppState};
use crate::db::rollouts::{self, Acted, Created};
use crate::error::ApiError;
use crate::page::{query_pairs, PageQuery};
use crate::rollout::{check_request, Action};

fn rollout_id(text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>()
        .ok()
        .filter(|n| *n > 0 && *n <= i64::MAX as u64)
        .ok_or_else(|| ApiError::field("id", format!("{text:?} is not a rollout id (a number)")))
}

fn unknown(id: u64) -> ApiError {
    ApiError::not_found(format!("no rollout {id}"))
}

/// `POST /api/v1/rollouts`: 201 with the rollout; 400 naming the field (no member, no bundle
/// of the version); 409 when a member is in another active rollout (named).
pub async fn create(
    State(st): State<AppState>,
    Operator(who): Operator,
    JsonBody(req): JsonBody<RolloutRequest>,
) -> Result<Response, ApiError> {
    check_request(&req)?;
    require_covers(&who, &req.selector, "selector")?;
    let now = st.clock.now();
    let version = req.version.clone();
    let created = st
        .db
        .run(move |c| rollouts::create(c, &req, now).map_err(ApiError::from))
        .await?;
    match created {
        Created::Done(r) => Ok(json(StatusCode::CREATED, r)),
        Created::NoMembers => Err(ApiError::field(
            "selector",
            "the selector matches no registered appliance",
        )),
        Created::NoBundle => Err(ApiError::field(
            "version",
            format!("no bundle of version {version} is held: upload it first (`bundles add`)"),
        )),
        Created::Overlap(holder) => Err(ApiError::conflict(holder.message())),
    }
}

/// `GET /api/v1/rollouts?limit=&after=`: a page, by id.
pub async fn list(
    State(st): State<AppState>,
    Operator(who): Operator,
    RawQuery(query): RawQuery,
) -> Result<Json<RolloutPage>, ApiError> {
    let page = PageQuery::only(query_pairs(query.as_deref())?)?;
    let after = match &page.after {
        None => 0,
        Some(a) => a
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= i64::MAX as u64)
            .ok_or_else(|| ApiError::field("after", format!("after {a:?} is not a rollout id")))?,
    };
    let (items, next) = st
        .db
        .run(move |c| rollouts::list(c, after, &page).map_err(ApiError::from))
        .await?;
    // A scoped operator sees the rollouts that stay within their scope (a page may come
    // out shorter; `next` still follows the whole list).
    let items = items
        .into_iter()
        .filter(|r| who.scope.covers(&r.request.selector))
        .collect();
    Ok(Json(RolloutPage { items, next }))
}

/// `GET /api/v1/rollouts/{id}`: the rollout with its totals, in all and per wave.
pub async fn get(
    State(st): State<AppState>,
    _: Operator,
    Param(id): Param,
) -> Result<Json<Rollout>, ApiError> {
    let id = rollout_id(&id)?;
    st.db
        .run(move |c| rollouts::get(c, id).map_err(ApiError::from))
        .await?
        .map(Json)
        .ok_or_else(|| unknown(id))
}

/// `GET /api/v1/rollouts/{id}/devices?state=&limit=&after=`: a page of members, by id.
pub async fn devices(
    State(st): State<AppState>,
    _: Operator,
    Param(id): Param,
    RawQuery(query): RawQuery,
) -> Result<Json<RolloutDevicePage>, ApiError> {
    let id = rollout_id(&id)?;
    let mut pairs = query_pairs(query.as_deref())?;
    let page = PageQuery::take(&mut pairs)?;
    let mut state = None;
    for (key, value) in pairs {
        match key.as_str() {
            "state" => {
                state = Some(DeviceState::parse(&value).ok_or_else(|| {
                    ApiError::field(
                        "state",
                        format!(
                            "unknown state {value:?} (waiting, downloading, installing, trial, \
                             blessed, rolled_back, refused)"
                        ),
                    )
                })?)
            }
            other => {
                return Err(ApiError::field(
                    other,
                    format!("unknown query parameter {other:?} (state, limit, after)"),
                ))
            }
        }
    }
    st.db
        .run(move |c| rollouts::devices(c, id, state, &page).map_err(ApiError::from))
        .await?
        .map(|(items, next)| Json(RolloutDevicePage { items, next }))
        .ok_or_else(|| unknown(id))
}

async fn act(st: AppState, id: String, action: Action) -> Result<Json<Rollout>, ApiError> {
    let id = rollout_id(&id)?;
    let now = st.clock.now();
    match st
        .db
        .run(move |c| rollouts::act(c, id, action, now).map_err(ApiError::from))
        .await?
    {
        Acted::Done(r) => Ok(Json(*r)),
        Acted::Unknown => Err(unknown(id)),
        Acted::Refused(why) => Err(ApiError::conflict(why)),
    }
}

/// `POST /api/v1/rollouts/{id}/pause`: no member starts until resumed (those under way go on).
pub async fn pause(
    State(st): State<AppState>,
    _: Operator,
    Param(id): Param,
) -> Result<Json<Rollout>, ApiError> {
    act(st, id, Action::Pause).await
}

/// `POST /api/v1/rollouts/{id}/resume`: the failures so far are acknowledged.
pub async fn resume(
    State(st): State<AppState>,
    _: Operator,
    Param(id): Param,
) -> Result<Json<Rollout>, ApiError> {
    act(st, id, Action::Resume).await
}

/// `POST /api/v1/rollouts/{id}/abort`: for good; members not started get no version.
pub async fn abort(
    State(st): State<AppState>,
    _: Operator,
    Param(id): Param,
) -> Result<Json<Rollout>, ApiError> {
    act(st, id, Action::Abort).await
}
