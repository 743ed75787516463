//! Extractors: who is calling (the operator the gate let in, a device), the path parameter, and strict JSON bodies
//! whose errors name the field (`facts.cpu_count`).

use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use p6os_protocol::MAX_JSON_BODY;
use serde::de::DeserializeOwned;

use super::AppState;
use crate::access::Principal;
use crate::auth::{bearer, digest_hex};
use crate::db::appliances;
use crate::error::ApiError;

/// The single path parameter, unchecked (handlers check it after authentication).
pub struct Param(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Param {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Param, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| Param(p))
            .map_err(|e| ApiError::field("id", format!("bad path parameter: {}", e.body_text())))
    }
}

fn no_token() -> ApiError {
    ApiError::unauthorized("missing bearer token (Authorization: Bearer <token>)")
}

/// The operator the gate let in (`api::gate`: the route's `Access` names the role needed).
pub struct Operator(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Operator, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Operator)
            // Only a route declared `Access::Anyone` or `Access::Device` gets here without one.
            .ok_or_else(|| ApiError::internal("an operator handler on a route without a gate"))
    }
}

/// A bearer token that is not the admin token: the sha256 hex of what was presented, for the
/// handler to look up in its own transaction.
pub struct DeviceToken(pub String);

impl FromRequestParts<AppState> for DeviceToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<DeviceToken, ApiError> {
        let token = bearer(&parts.headers).ok_or_else(no_token)?;
        if st.admin.matches(token) {
            return Err(ApiError::forbidden(
                "the admin token cannot be used on device endpoints",
            ));
        }
        Ok(DeviceToken(digest_hex(token)))
    }
}

/// An operator the gate let in, or the token of a paired device (checked here).
pub enum Caller {
    Operator,
    Device,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Caller, ApiError> {
        if parts.extensions.get::<Principal>().is_some() {
            return Ok(Caller::Operator);
        }
        let token = bearer(&parts.headers).ok_or_else(no_token)?;
        let hash = digest_hex(token);
        st.db
            .run(move |c| appliances::id_for_token(c, &hash).map_err(ApiError::from))
            .await?
            .map(|_| Caller::Device)
            .ok_or_else(|| ApiError::unauthorized("invalid token"))
    }
}

/// Whether the request's `Content-Type` is `want` (parameters such as `charset` allowed).
pub fn content_type_is(headers: &HeaderMap, want: &str) -> Result<(), ApiError> {
    let actual = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = actual.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "expected Content-Type {want}, got {}",
                if actual.is_empty() { "none" } else { actual }
            ),
        ))
    }
}

/// The declared body length, if any.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

pub fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than {limit} bytes"),
    )
}

/// A JSON body of at most `MAX_JSON_BODY` bytes, deserialized strictly.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<JsonBody<T>, ApiError> {
        if let Err(e) = content_type_is(req.headers(), "application/json") {
            return Err(drain(req.into_body(), e).await);
        }
        if content_length(req.headers()).is_some_and(|n| n > DRAIN_LIMIT as u64) {
            return Err(too_large(MAX_JSON_BODY as u64));
        }
        let bytes = read_limited(req.into_body(), MAX_JSON_BODY).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A JSON body of at most `MAX_JSON_BODY` bytes, not parsed yet: for handlers that
/// authenticate before they look at the body (a stranger learns nothing about its schema).
pub struct RawJson(pub Vec<u8>);

impl<S: Send + Sync> FromRequest<S> for RawJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<RawJson, ApiError> {
        if let Err(e) = content_type_is(req.headers(), "application/json") {
            return Err(drain(req.into_body(), e).await);
        }
        if content_length(req.headers()).is_some_and(|n| n > DRAIN_LIMIT as u64) {
            return Err(too_large(MAX_JSON_BODY as u64));
        }
        read_limited(req.into_body(), MAX_JSON_BODY)
            .await
            .map(RawJson)
    }
}

/// A body that may be over its limit is still read (and dropped) up to this many bytes before
/// the 413 goes out: a client still sending would otherwise see a reset instead of the answer.
const DRAIN_LIMIT: usize = 1 << 20;
/// How long a refused body is drained at most.
const DRAIN_TIME: Duration = Duration::from_secs(5);
/// The whole of a JSON body must arrive within this (the client timeout only bounds the gap
/// between two pieces: a client sending a byte now and then would otherwise hold its
/// connection for ever).
pub const JSON_BODY_DEADLINE: Duration = Duration::from_secs(30);

/// Reads and drops the body (at most `DRAIN_LIMIT` bytes, for at most `DRAIN_TIME`), then
/// gives back `error`: a client still sending a refused body gets the answer rather than a
/// reset connection.
pub async fn drain(body: axum::body::Body, error: ApiError) -> ApiError {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut seen = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
    error
}

/// The whole body within [`JSON_BODY_DEADLINE`] (else 408), or 413 if it is longer than
/// `limit`.
async fn read_limited(body: axum::body::Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut out = Vec::new();
    let mut seen = 0usize;
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ApiError::bad_request("cannot read the request body"))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen += data.len();
            if seen > DRAIN_LIMIT {
                break;
            }
            if seen <= limit {
                out.extend_from_slice(&data);
            }
        }
        Ok::<(), ApiError>(())
    };
    match tokio::time::timeout(JSON_BODY_DEADLINE, read).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            ))
        }
    }
    if seen > limit {
        return Err(too_large(limit as u64));
    }
    Ok(out)
}

/// Deserializes strictly; errors are 400s naming the field path where there is one.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    Ok(value)
}

fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_json::error::Category;
    let inner = e.inner();
    if !matches!(inner.classify(), Category::Data) {
        return ApiError::bad_request(format!("malformed JSON: {inner}"));
    }
    let path = e.path().to_string();
    let mut field = if path == "." { String::new() } else { path };
    // For a missing field the path is the enclosing object: add the field's name.
    let message = inner.to_string();
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        if !field.is_empty() {
            field.push('.');
        }
        field.push_str(name);
    }
    ApiError {
        status: StatusCode::BAD_REQUEST,
        error: message,
        field: (!field.is_empty()).then_some(field),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p6os_protocol::{Heartbeat, PairRequest};

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<PairRequest>(br#"{"pairing_token":"t","facts":{"cpu_count":"x"}}"#)
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("facts.cpu_count"), "{e:?}");
        // Operator requests refuse unknown fields; device messages tolerate them (newer agents).
        let e =
            parse_json::<p6os_protocol::DesiredRequest>(br#"{"version":"1","x":1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("x"), "{e:?}");
        parse_json::<Heartbeat>(br#"{"slot":"a","version":"1","health":"good","x":1}"#).unwrap();
        let e = parse_json::<Heartbeat>(br#"{"slot":"a","health":"good"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("version"), "{e:?}");
        let e = parse_json::<Heartbeat>(br#"{"slot":"a","#).unwrap_err();
        assert_eq!(e.field, None);
        assert!(e.error.starts_with("malformed JSON"), "{}", e.error);
        let e = parse_json::<Heartbeat>(br#"{"slot":"a","version":"1","health":"good"} x"#)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
