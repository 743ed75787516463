//! Operator endpoints: the fleet, desired versions, events, and the API document.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use p6os_protocol::identity::check_fingerprint;
use p6os_protocol::{
    check_id, Appliance, AppliancePage, ApproveRequest, DesiredRequest, DesiredResponse, EventPage,
    ImageRequest, RegisterRequest, SelectorDesiredRequest,
};

use super::extract::{JsonBody, Operator, Param};
use super::gate::require_covers;
use super::{json, now, AppState};
use crate::core::{check_id_field, check_labels, check_name, check_version_field, ListFilter};
use crate::db::appliances::{self, Registered};
use crate::db::pairing::{self, Approved};
use crate::error::ApiError;
use crate::page::{query_pairs, PageQuery};

fn unknown(id: &str) -> ApiError {
    ApiError::not_found(format!("no appliance {id}"))
}

/// `GET /openapi.json` (no authentication).
pub async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document().clone())
}

/// `POST /api/v1/appliances`: 201, or 409 if the id is already registered.
pub async fn register(
    State(st): State<AppState>,
    Operator(who): Operator,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> Result<Response, ApiError> {
    check_id_field(&req.id)?;
    check_name(&req.name, "name")?;
    check_labels(&req.labels, "labels")?;
    if !who.scope.admits(&req.labels) {
        return Err(require_covers(&who, &req.labels, "labels").unwrap_err());
    }
    if let Some(fp) = &req.fingerprint {
        check_fingerprint(fp).map_err(|e| ApiError::field("fingerprint", e))?;
    }
    let id = req.id.clone();
    match st
        .db
        .run(move |c| appliances::register(c, &req, now()))
        .await?
    {
        Registered::Created(a) => Ok(json(StatusCode::CREATED, a)),
        Registered::Conflict(status) => Err(ApiError::conflict(format!(
            "appliance {id} is already registered ({})",
            status.as_str()
        ))),
    }
}

/// `POST /api/v1/appliances/{id}/approve`: bind the id to the device key with this fingerprint.
pub async fn approve(
    State(st): State<AppState>,
    _: Operator,
    Param(id): Param,
    JsonBody(req): JsonBody<ApproveRequest>,
) -> Result<Json<Appliance>, ApiError> {
    check_id_field(&id)?;
    check_fingerprint(&req.fingerprint).map_err(|e| ApiError::field("fingerprint", e))?;
    let key = id.clone();
    match st
        .db
        .run(move |c| pairing::approve(c, &key, &req.fingerprint, now()))
        .await?
    {
        Approved::Done(a) => Ok(Json(*a)),
        Approved::Unknown => Err(unknown(&id)),
    }
}

/// `PUT /api/v1/appliances/{id}/image`: the image whose bundles the device gets.
pub async fn set_image(
    State(st): State<AppState>,
    _: Operator,
    Param(id): Param,
    JsonBody(req): JsonBody<ImageRequest>,
) -> Result<Json<Appliance>, ApiError> {
    check_id_field(&id)?;
    for (field, value) in [("image_name", &req.image_name), ("arch", &req.arch)] {
        check_id(value).map_err(|e| ApiError::field(field, e))?;
    }
    let key = id.clone();
    st.db
        .run(move |c| pairing::set_image(c, &key, &req, now()))
        .await?
        .map(Json)
        .ok_or_else(|| unknown(&id))
}

/// `GET /api/v1/appliances?status=&label=k=v&version=&limit=&after=`: a page, by id.
pub async fn list(
    State(st): State<AppState>,
    Operator(who): Operator,
    RawQuery(query): RawQuery,
) -> Result<Json<AppliancePage>, ApiError> {
    let mut pairs = query_pairs(query.as_deref())?;
    let page = PageQuery::take(&mut pairs)?;
    let mut filter = ListFilter::parse(&pairs)?;
    // A scoped operator sees their appliances only; a filter outside the scope sees none.
    match who.scope.narrow(&filter.labels) {
        Ok(labels) => filter.labels = labels,
        Err(_) => {
            return Ok(Json(AppliancePage {
                items: Vec::new(),
                next: None,
            }))
        }
    }
    let (items, next) = st
        .db
        .run(move |c| appliances::list(c, &filter, &page).map_err(ApiError::from))
        .await?;
    Ok(Json(AppliancePage { items, next }))
}

/// `GET /api/v1/appliances/{id}`.
pub async fn get(
    State(st): State<AppState>,
    _: Operator,
    Param(id): Param,
) -> Result<Json<Appliance>, ApiError> {
    check_id_field(&id)?;
    let found = {
        let id = id.clone();
        st.db
            .run(move |c| appliances::get(c, &id).map_err(ApiError::from))
            .await?
    };
    found.map(Json).ok_or_else(|| unknown(&id))
}

/// `DELETE /api/v1/appliances/{id}`: 204; its device token stops working.
pub async fn delete(
    State(st): State<AppState>,
    _: Operator,
    Param(id): Param,
) -> Result<Response, ApiError> {
    check_id_field(&id)?;
    let deleted = {
        let id = id.clone();
        st.db
            .run(move |c| {
                let deleted = appliances::delete(c, &id)?;
                // It may have been the last unfinished member of a rollout's wave.
                if deleted {
                    crate::db::rollouts::recheck(c, now())?;
                }
                Ok::<_, ApiError>(deleted)
            })
            .await?
    };
    if deleted {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(unknown(&id))
    }
}

/// `PUT /api/v1/appliances/{id}/desired`.
pub async fn set_desired(
    State(st): State<AppState>,
    _: Operator,
    Param(id): Param,
    JsonBody(req): JsonBody<DesiredRequest>,
) -> Result<Json<Appliance>, ApiError> {
    check_id_field(&id)?;
    check_version_field(&req.version, "version")?;
    let found = {
        let id = id.clone();
        st.db
            .run(move |c| {
                let desired = appliances::Desired {
                    version: req.version,
                    allow_downgrade: req.allow_downgrade,
                };
                // One transaction: no rollout can take the member between the check and
                // the change.
                c.write(|tx| {
                    // A member of an active rollout gets its version from the rollout.
                    if let Some(h) = crate::db::rollouts::holding_id(tx, &id)? {
                        return Err(ApiError::conflict(h.message()));
                    }
                    appliances::set_desired_one(tx, &id, &desired, now()).map_err(ApiError::from)
                })
            })
            .await?
    };
    found.map(Json).ok_or_else(|| unknown(&id))
}

/// `PUT /api/v1/desired`: every appliance whose labels include the (non-empty) selector.
pub async fn set_desired_by_selector(
    State(st): State<AppState>,
    Operator(who): Operator,
    JsonBody(req): JsonBody<SelectorDesiredRequest>,
) -> Result<Json<DesiredResponse>, ApiError> {
    if req.selector.is_empty() {
        return Err(ApiError::field(
            "selector",
            "the selector is empty: name at least one label (set every appliance one by one)",
        ));
    }
    check_labels(&req.selector, "selector")?;
    require_covers(&who, &req.selector, "selector")?;
    check_version_field(&req.version, "version")?;
    let matched = st
        .db
        .run(move |c| {
            let desired = appliances::Desired {
                version: req.version,
                allow_downgrade: req.allow_downgrade,
            };
            c.write(|tx| {
                // Members of an active rollout get their version from the rollout.
                if let Some(h) = crate::db::rollouts::holding_selector(tx, &req.selector)? {
                    return Err(ApiError::conflict(h.message()));
                }
                appliances::set_desired_by_selector_in(tx, &req.selector, &desired, now())
                    .map_err(ApiError::from)
            })
        })
        .await?;
    Ok(Json(DesiredResponse { matched }))
}

/// `GET /api/v1/appliances/{id}/events?limit=&after=`: a page, oldest first (the newest
/// `MAX_EVENTS` are kept).
pub async fn events(
    State(st): State<AppState>,
    _: Operator,
    Param(id): Param,
    RawQuery(query): RawQuery,
) -> Result<Json<EventPage>, ApiError> {
    check_id_field(&id)?;
    let page = PageQuery::only(query_pairs(query.as_deref())?)?;
    let after = match &page.after {
        None => 0,
        Some(a) => a
            .parse::<i64>()
            .map_err(|_| ApiError::field("after", format!("after {a:?} is not an event's seq")))?,
    };
    let found = {
        let id = id.clone();
        st.db
            .run(move |c| appliances::events(c, &id, after, &page).map_err(ApiError::from))
            .await?
    };
    found
        .map(|(items, next)| Json(EventPage { items, next }))
        .ok_or_else(|| unknown(&id))
}
