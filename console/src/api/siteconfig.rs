//! Remote reconfiguration endpoints: the operator sets a site configuration for an appliance
//! or a selector and reads it back (secrets redacted) and its history; a device fetches only
//! the document set last for itself, and reports on it.

use axum::extract::rejection::PathRejection;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use p6os_protocol::siteconfig::{
    ConfigDocument, ConfigHistoryPage, ConfigRef, ConfigReport, ConfigShow, SetConfigRequest,
    SetConfigResponse,
};
use p6os_protocol::API;

use super::extract::{parse_json, DeviceToken, JsonBody, Operator, Param, RawJson};
use super::gate::{in_scope, require_covers};
use super::{json, now, AppState};
use crate::core::check_id_field;
use crate::db::siteconfig::{self as store, NewConfig, Reported};
use crate::db::sql::Sql;
use crate::db::{self, appliances};
use crate::error::ApiError;
use crate::page::{query_pairs, PageQuery};
use crate::siteconfig::{self as core, Refused, Target};

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Field(e) => e.into_response(),
            Refused::Document(r) => json(StatusCode::BAD_REQUEST, r),
        }
    }
}

fn unknown(id: &str) -> ApiError {
    ApiError::not_found(format!("no appliance {id}"))
}

/// `PUT /api/v1/config`: checks the document (every problem with line and column, nothing
/// stored when there is one) and sets it for the target.
pub async fn set(
    State(st): State<AppState>,
    Operator(who): Operator,
    JsonBody(req): JsonBody<SetConfigRequest>,
) -> Result<Json<SetConfigResponse>, Refused> {
    let target = core::target(&req)?;
    match &target {
        Target::Id(id) => in_scope(&st, &who.scope, id).await?,
        Target::Selector(s) => require_covers(&who, s, "selector")?,
    }
    let checked = core::check(&req.document, req.signature.as_deref(), &target)?;
    let redacted_json = db::to_json(&checked.redacted);
    let (digest, serial) = (checked.digest.clone(), checked.serial);
    let t = target.clone();
    let stored = st
        .db
        .run(move |c| {
            let new = NewConfig {
                digest: &checked.digest,
                document: req.document.as_bytes(),
                signature: req.signature.as_deref(),
                serial: checked.serial,
                redacted_json: &redacted_json,
            };
            let target = match &t {
                Target::Id(id) => store::Target::Id(id),
                Target::Selector(s) => store::Target::Selector(s),
            };
            store::set(c, &new, &target, now()).map_err(ApiError::from)
        })
        .await?;
    match (stored, target) {
        (None, Target::Id(id)) => Err(unknown(&id).into()),
        (Some((_, ids)), Target::Selector(_)) if ids.is_empty() => Err(ApiError::not_found(
            "no registered appliance matches the selector; nothing was stored",
        )
        .into()),
        (Some((config, targets)), _) => Ok(Json(SetConfigResponse {
            config,
            digest,
            serial,
            targets,
        })),
        (None, Target::Selector(_)) => Err(ApiError::internal("no answer for a selector").into()),
    }
}

/// `GET /api/v1/appliances/{id}/config`: the current configuration, secrets redacted.
pub async fn show(
    State(st): State<AppState>,
    _: Operator,
    Param(id): Param,
) -> Result<Json<ConfigShow>, ApiError> {
    check_id_field(&id)?;
    let key = id.clone();
    let found = st
        .db
        .run(move |c| {
            c.read(|c| {
                if !db::exists_in(c, "SELECT 1 FROM appliances WHERE id = ?1", &key)? {
                    return Ok(Err(unknown(&key)));
                }
                store::show(c, &key).map(Ok).map_err(ApiError::from)
            })
        })
        .await??;
    let (current, document) = found
        .ok_or_else(|| ApiError::not_found(format!("no site configuration was set for {id}")))?;
    Ok(Json(ConfigShow {
        appliance: id,
        current,
        document,
    }))
}

/// `GET /api/v1/appliances/{id}/config/history?limit=&after=`: newest first.
pub async fn history(
    State(st): State<AppState>,
    _: Operator,
    Param(id): Param,
    RawQuery(query): RawQuery,
) -> Result<Json<ConfigHistoryPage>, ApiError> {
    check_id_field(&id)?;
    let page = PageQuery::only(query_pairs(query.as_deref())?)?;
    let before = match &page.after {
        None => None,
        Some(a) => Some(a.parse::<u64>().map_err(|_| {
            ApiError::field("after", format!("after {a:?} is not a history entry's seq"))
        })?),
    };
    let (items, next) = st
        .db
        .run(move |c| {
            c.read(|c| {
                if !db::exists_in(c, "SELECT 1 FROM appliances WHERE id = ?1", &id)? {
                    return Err(unknown(&id));
                }
                store::history(c, &id, before, &page).map_err(ApiError::from)
            })
        })
        .await?;
    Ok(Json(ConfigHistoryPage { items, next }))
}

/// The device token's appliance must be `id`.
fn own(c: &mut dyn Sql, hash: &str, id: &str) -> Result<(), ApiError> {
    match appliances::id_for_token_in(c, hash)? {
        None => Err(ApiError::unauthorized("invalid device token")),
        Some(owner) if owner != id => Err(ApiError::forbidden(
            "this device token belongs to another appliance",
        )),
        Some(_) => Ok(()),
    }
}

/// `GET /api/v1/appliances/{id}/config/{config}`: the document, for the device it was set
/// for last only (404 for any other number: whether it exists is not the device's business).
pub async fn document(
    State(st): State<AppState>,
    DeviceToken(hash): DeviceToken,
    path: Result<axum::extract::Path<(String, String)>, PathRejection>,
) -> Result<Json<ConfigDocument>, ApiError> {
    let axum::extract::Path((id, config)) =
        path.map_err(|e| ApiError::field("config", format!("bad path: {}", e.body_text())))?;
    check_id_field(&id)?;
    let number: u64 = config
        .parse()
        .map_err(|_| ApiError::field("config", format!("{config:?} is not a number")))?;
    let found = st
        .db
        .run(move |c| {
            c.read(|c| {
                own(c, &hash, &id)?;
                store::document_for(c, &id, number).map_err(ApiError::from)
            })
        })
        .await?;
    let (bytes, signature) = found
        .ok_or_else(|| ApiError::not_found("not the site configuration set for this appliance"))?;
    Ok(Json(ConfigDocument {
        config: number,
        document: String::from_utf8(bytes).map_err(ApiError::internal)?,
        signature,
    }))
}

/// `POST /api/v1/appliances/{id}/config/report`: 204; 409 when it is not the configuration
/// set last (the device drops the report).
pub async fn report(
    State(st): State<AppState>,
    DeviceToken(hash): DeviceToken,
    Param(id): Param,
    RawJson(body): RawJson,
) -> Result<Response, ApiError> {
    check_id_field(&id)?;
    let done = st
        .db
        .run(move |c| {
            c.auto(|c| own(c, &hash, &id))?;
            let mut report: ConfigReport = parse_json(&body)?;
            core::clean_report(&mut report);
            store::report(c, &id, &report, now()).map_err(ApiError::from)
        })
        .await?;
    match done {
        Reported::Stored => Ok(StatusCode::NO_CONTENT.into_response()),
        Reported::NotCurrent => Err(ApiError::conflict(
            "not the site configuration set last for this appliance",
        )),
    }
}

/// What a heartbeat's answer announces: the configuration set last for `id`, while the
/// device has not reported on it.
pub(super) fn offer(c: &mut db::Conn, id: &str) -> Result<Option<ConfigRef>, ApiError> {
    Ok(c.auto(|c| store::pending(c, id))?
        .map(|(config, digest, size)| ConfigRef {
            config,
            digest,
            size,
            path: format!("{API}/appliances/{id}/config/{config}"),
        }))
}
