//! Diagnostics: the operator asks (admin), the device's heartbeat answer carries the request
//! (`device::heartbeat`), the device uploads the bundle (its own token, an outstanding request
//! of its own, at most the size asked), the operator lists and downloads.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::BodyExt;
use p6os_protocol::diagnostics::{Diagnostics, DiagnosticsCreate, DiagnosticsPage};
use sha2::{Digest, Sha256};

use super::extract::{content_length, drain, too_large, JsonBody, Operator, Param};
use super::{json, now, AppState};
use crate::auth::{bearer, digest_hex, hex};
use crate::core::check_id_field;
use crate::db::appliances;
use crate::db::diagnostics::{self as db, Created, Upload};
use crate::diagnostics::{max_bytes, CAPS};
use crate::error::ApiError;
use crate::page::{query_pairs, PageQuery};

/// The whole of an upload must arrive within this.
const UPLOAD_DEADLINE: Duration = Duration::from_secs(300);
/// The content type of a bundle (a zstd-compressed tar) on the wire, both ways.
pub const CONTENT_TYPE: &str = "application/octet-stream";

fn number(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::field(
            "id",
            format!("{text:?} is not a diagnostics request number"),
        )
    })
}

fn not_found(id: u64) -> ApiError {
    ApiError::not_found(format!("no diagnostics request {id}"))
}

/// `POST /api/v1/appliances/{id}/diagnostics`: 201 a new request, 200 the outstanding one.
pub async fn create(
    State(st): State<AppState>,
    _: Operator,
    Param(id): Param,
    JsonBody(req): JsonBody<DiagnosticsCreate>,
) -> Result<Response, ApiError> {
    check_id_field(&id)?;
    let max = max_bytes(req.max_bytes)?;
    let now = now();
    let shown = id.clone();
    let created = st.db.run(move |c| db::create(c, &id, max, now)).await?;
    Ok(match created {
        Created::New(r) => json(StatusCode::CREATED, r.view(now)),
        Created::Existing(r) => json(StatusCode::OK, r.view(now)),
        Created::NoAppliance => return Err(ApiError::not_found(format!("no appliance {shown}"))),
    })
}

/// `GET /api/v1/appliances/{id}/diagnostics?limit=&after=`: a page, newest first.
pub async fn list(
    State(st): State<AppState>,
    _: Operator,
    Param(id): Param,
    RawQuery(query): RawQuery,
) -> Result<Json<DiagnosticsPage>, ApiError> {
    check_id_field(&id)?;
    let page = PageQuery::only(query_pairs(query.as_deref())?)?;
    let after = match &page.after {
        Some(a) => Some(a.parse::<u64>().map_err(|_| {
            ApiError::field(
                "after",
                format!("{a:?}: pass the `next` of the previous page"),
            )
        })?),
        None => None,
    };
    let now = now();
    let shown = id.clone();
    let listed = st
        .db
        .run(move |c| {
            if appliances::get(c, &id)?.is_none() {
                return Ok::<_, ApiError>(Err(ApiError::not_found(format!("no appliance {id}"))));
            }
            Ok(db::list(c, &id, after, &page)?.ok_or_else(|| {
                ApiError::field(
                    "after",
                    format!("no diagnostics request {after:?} of {id}: pass the `next` of the previous page"),
                )
            }))
        })
        .await??;
    let _ = shown;
    let (items, next) = listed;
    Ok(Json(DiagnosticsPage {
        items: items.iter().map(|r| r.view(now)).collect(),
        next,
    }))
}

/// `GET /api/v1/diagnostics/{n}`.
pub async fn get(
    State(st): State<AppState>,
    _: Operator,
    Param(n): Param,
) -> Result<Json<Diagnostics>, ApiError> {
    let n = number(&n)?;
    let row = st
        .db
        .run(move |c| db::get(c, n).map_err(ApiError::from))
        .await?
        .ok_or_else(|| not_found(n))?;
    Ok(Json(row.view(now())))
}

/// `GET /api/v1/diagnostics/{n}/content`: the bundle, with its sha256 as the `ETag`.
pub async fn download(
    State(st): State<AppState>,
    _: Operator,
    Param(n): Param,
) -> Result<Response, ApiError> {
    let n = number(&n)?;
    let (row, bytes) = st
        .db
        .run(move |c| Ok::<_, ApiError>((db::get(c, n)?, db::content(c, n)?)))
        .await?;
    let row = row.ok_or_else(|| not_found(n))?;
    let Some(bytes) = bytes else {
        return Err(ApiError::not_found(format!(
            "diagnostics request {n} holds no bundle ({})",
            row.status(now()).as_str()
        )));
    };
    let mut response = (StatusCode::OK, bytes).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    // Bytes a device made, served from the console's origin: a download, never a page.
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    if let Some(sha) = row
        .sha256
        .and_then(|s| HeaderValue::try_from(format!("\"{s}\"")).ok())
    {
        h.insert(header::ETAG, sha);
    }
    Ok(response)
}

/// `PUT /api/v1/diagnostics/{n}/content` (a device token): the bundle of an outstanding request
/// of that device, at most the size asked. 404 for another device's request (or none), 409
/// when it is not outstanding, 413 over the size (after a bounded drain, as every refusal).
pub async fn upload(
    State(st): State<AppState>,
    Param(n): Param,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let admitted = admit(&st, &n, &headers).await;
    let (n, device, limit) = match admitted {
        Ok(x) => x,
        Err(e) => return Err(drain(body, e).await),
    };
    if content_length(&headers).is_some_and(|len| len > limit) {
        return Err(drain(body, too_large(limit)).await);
    }
    let bytes = read_bounded(body, limit).await?;
    let sha256 = hex(&Sha256::digest(&bytes));
    let now = now();
    let stored = st
        .db
        .run(move |c| {
            let up = Upload {
                id: n,
                device: &device,
                bytes: &bytes,
                sha256: &sha256,
                now,
            };
            db::store(c, &up, CAPS).map_err(ApiError::from)
        })
        .await?
        .map_err(|refusal| refusal.error(n))?;
    Ok(json(StatusCode::OK, stored.view(now)))
}

/// The device token's appliance, the request's number and its size limit; or why not.
async fn admit(
    st: &AppState,
    n: &str,
    headers: &HeaderMap,
) -> Result<(u64, String, u64), ApiError> {
    let token = bearer(headers).ok_or_else(|| {
        ApiError::unauthorized("missing bearer token (Authorization: Bearer <token>)")
    })?;
    if st.admin.matches(token) {
        return Err(ApiError::forbidden(
            "the admin token cannot be used on device endpoints",
        ));
    }
    let hash = digest_hex(token);
    let n = number(n)?;
    let now = now();
    let (device, limit) = st
        .db
        .run(move |c| {
            let device = appliances::id_for_token(c, &hash)?
                .ok_or_else(|| ApiError::unauthorized("invalid device token"))?;
            let row = db::get(c, n)?;
            crate::diagnostics::may_upload(row.as_ref(), &device, now)
                .map_err(|refusal| refusal.error(n))?;
            let limit = row.map_or(0, |r| r.max_bytes);
            Ok::<_, ApiError>((device, limit))
        })
        .await?;
    super::extract::content_type_is(headers, CONTENT_TYPE)?;
    Ok((n, device, limit))
}

/// The body, at most `limit` bytes, within [`UPLOAD_DEADLINE`] (else 408); over the limit,
/// the rest is drained (bounded) and the answer is 413.
async fn read_bounded(body: Body, limit: u64) -> Result<Vec<u8>, ApiError> {
    let mut body = body;
    let mut out = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ApiError::bad_request("the upload was interrupted"))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if out.len() as u64 + data.len() as u64 > limit {
                return Ok(false);
            }
            out.extend_from_slice(&data);
        }
        Ok::<bool, ApiError>(true)
    };
    match tokio::time::timeout(UPLOAD_DEADLINE, read).await {
        Ok(Ok(true)) => Ok(out),
        Ok(Ok(false)) => Err(drain(body, too_large(limit)).await),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "the upload did not arrive in time",
        )),
    }
}
