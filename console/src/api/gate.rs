//! The gate in front of every route: who is calling, whether the route's [`Access`] lets them
//! in, CSRF for web sessions, the operator's label scope on per-appliance routes, and the audit
//! log of every operator action.
//!
//! Credentials, tried in this order:
//! - `Authorization: Bearer <admin token>`: the bootstrap admin;
//! - `Authorization: Bearer p6ou_...`: a personal API token;
//! - any other bearer token: a device's, checked by the device handler itself (only the
//!   database knows whose it is, and the handler looks it up in its own transaction);
//! - the session cookie of a web login. A state-changing request made with it must carry the
//!   session's CSRF token in `X-CSRF-Token` and, if the browser sent an `Origin`, come from the
//!   console's own origin.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method as HttpMethod};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use p6os_protocol::users::{Role, Via};

use super::extract::drain;
use super::AppState;
use crate::access::{
    same_origin, session_from_cookies, Access, Principal, Scope, Transport, BOOTSTRAP_USER,
    TOKEN_PREFIX,
};
use crate::auth::{bearer, digest, digest_hex, digests_equal};
use crate::db::{appliances, audit, diagnostics, rollouts, users};
use crate::error::ApiError;

/// The state of one route's gate.
#[derive(Clone)]
pub struct Gate {
    pub st: AppState,
    pub access: Access,
}

/// The CSRF header of session requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What a request presents.
enum Credential {
    Nothing,
    /// A bearer token that is neither the admin token nor a personal token.
    DeviceBearer(String),
    Operator(Principal),
}

/// The transport of a request (set by `serve`; plain http when absent, as in tests).
pub fn transport(req_extensions: &axum::http::Extensions) -> Transport {
    req_extensions
        .get::<Transport>()
        .copied()
        .unwrap_or(Transport::Http)
}

/// The peer's address as text ("-" when unknown).
pub fn peer(extensions: &axum::http::Extensions) -> String {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "-".to_string(), |ConnectInfo(a)| a.ip().to_string())
}

fn bootstrap() -> Principal {
    Principal {
        user: BOOTSTRAP_USER.to_string(),
        role: Role::Admin,
        scope: Scope::default(),
        via: Via::BootstrapToken,
        csrf: None,
    }
}

/// Sent by the pages' script on its live refreshes (`ui/assets/app.js`).
const LIVE_HEADER: &str = "x-p6os-live";

async fn authenticate(
    st: &AppState,
    headers: &HeaderMap,
    transport: Transport,
) -> Result<Credential, ApiError> {
    let now = st.clock.now();
    if let Some(token) = bearer(headers) {
        if st.admin.matches(token) {
            return Ok(Credential::Operator(bootstrap()));
        }
        if token.starts_with(TOKEN_PREFIX) {
            let hash = digest_hex(token);
            return st
                .db
                .run(move |c| users::token_principal(c, &hash, now).map_err(ApiError::from))
                .await?
                .map(Credential::Operator)
                .ok_or_else(|| ApiError::unauthorized("invalid, expired or revoked token"));
        }
        return Ok(Credential::DeviceBearer(digest_hex(token)));
    }
    let Some(session) = session_id(headers, transport) else {
        return Ok(Credential::Nothing);
    };
    let hash = digest_hex(&session);
    // The pages' own refreshes say so; a forged header only leaves the session's clock alone.
    let used = match headers.contains_key(LIVE_HEADER) {
        true => users::SessionUse::Refresh,
        false => users::SessionUse::Activity,
    };
    st.db
        .run(move |c| users::session_principal(c, &hash, now, used).map_err(ApiError::from))
        .await?
        .map(Credential::Operator)
        .ok_or_else(|| ApiError::unauthorized("your session has ended: log in again"))
}

/// The session id in the request's cookies, if any.
pub fn session_id(headers: &HeaderMap, transport: Transport) -> Option<String> {
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ");
    session_from_cookies(&cookies, transport).map(str::to_string)
}

fn no_credentials() -> ApiError {
    ApiError::unauthorized(
        "missing credentials (Authorization: Bearer <token>, or log in to the web console)",
    )
}

/// Whether the request changes something (and so is audited and, with a session, needs CSRF).
pub fn changes_state(method: &HttpMethod) -> bool {
    !matches!(
        *method,
        HttpMethod::GET | HttpMethod::HEAD | HttpMethod::OPTIONS
    )
}

/// Holds a session's state-changing request to its CSRF token and to the console's origin.
pub fn check_csrf(
    p: &Principal,
    headers: &HeaderMap,
    transport: Transport,
) -> Result<(), ApiError> {
    let presented = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    let valid = match (presented, &p.csrf) {
        (Some(given), Some(expected)) => digests_equal(&digest(given), &digest(expected)),
        _ => false,
    };
    if !valid {
        return Err(ApiError::forbidden(
            "missing or wrong X-CSRF-Token: state-changing requests made with the session \
             cookie must carry the token the login returned",
        ));
    }
    let header_str = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if !same_origin(
        header_str(header::ORIGIN),
        header_str(header::HOST),
        transport,
    ) {
        return Err(ApiError::forbidden(
            "cross-origin request refused: the Origin is not this console",
        ));
    }
    Ok(())
}

/// The object a route's path names, for the scope check.
#[derive(Debug, PartialEq, Eq)]
pub enum Target<'a> {
    Appliance(&'a str),
    Diagnostics(&'a str),
    Rollout(&'a str),
}

/// What `path` (matched by the route `matched`) names, if it is a per-object route.
pub fn route_target<'a>(matched: &str, path: &'a str) -> Option<Target<'a>> {
    let mut route = matched.split('/');
    let mut segments = path.split('/');
    // "", "api", "v1", <collection>, <param>
    let (collection, param) = loop {
        match (route.next(), segments.next()) {
            (Some(r), Some(s)) if r.starts_with('{') => break (None, s),
            (Some(r), Some(_)) if ["appliances", "diagnostics", "rollouts"].contains(&r) => {
                let (Some(p), Some(s)) = (route.next(), segments.next()) else {
                    return None;
                };
                if !p.starts_with('{') {
                    return None;
                }
                break (Some(r), s);
            }
            (Some(_), Some(_)) => {}
            _ => return None,
        }
    };
    match collection? {
        "appliances" => Some(Target::Appliance(param)),
        "diagnostics" => Some(Target::Diagnostics(param)),
        "rollouts" => Some(Target::Rollout(param)),
        _ => None,
    }
}

/// 404 (as for an unknown object, so a scoped user learns nothing of what is outside) unless
/// the object `target` names exists and is in `scope`. The name is taken from the raw path:
/// anything that is not exactly a stored id (percent-encoded, malformed, unknown) is refused
/// here, so the handler (which decodes its path) cannot be led to another object.
async fn check_scope(st: &AppState, scope: &Scope, target: Target<'_>) -> Result<(), ApiError> {
    let scope = scope.clone();
    match target {
        Target::Appliance(id) => in_scope(st, &scope, id).await,
        Target::Diagnostics(n) => {
            let missing = || ApiError::not_found(format!("no diagnostics {n}"));
            let number = n.parse::<u64>().map_err(|_| missing())?;
            let row = st
                .db
                .run(move |c| diagnostics::get(c, number).map_err(ApiError::from))
                .await?
                .ok_or_else(missing)?;
            in_scope(st, &scope, &row.appliance_id)
                .await
                .map_err(|_| missing())
        }
        Target::Rollout(id) => {
            let missing = || ApiError::not_found(format!("no rollout {id}"));
            let number = id.parse::<u64>().map_err(|_| missing())?;
            let rollout = st
                .db
                .run(move |c| rollouts::get(c, number).map_err(ApiError::from))
                .await?
                .ok_or_else(missing)?;
            if scope.covers(&rollout.request.selector) {
                Ok(())
            } else {
                Err(missing())
            }
        }
    }
}

/// 404 unless appliance `id` (exactly as given: never decoded) exists and is in `scope`; the
/// whole fleet passes without a look.
pub async fn in_scope(st: &AppState, scope: &Scope, id: &str) -> Result<(), ApiError> {
    if scope.whole_fleet() {
        return Ok(());
    }
    let key = id.to_string();
    let found = st
        .db
        .run(move |c| appliances::get(c, &key).map_err(ApiError::from))
        .await?;
    match found {
        Some(a) if scope.admits(&a.labels) => Ok(()),
        _ => Err(ApiError::not_found(format!("no appliance {id}"))),
    }
}

/// 403 unless everything `selector` picks is in the caller's scope.
pub fn require_covers(
    who: &Principal,
    selector: &std::collections::BTreeMap<String, String>,
    field: &str,
) -> Result<(), ApiError> {
    if who.scope.covers(selector) {
        return Ok(());
    }
    let scope: Vec<String> = who
        .scope
        .0
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    Err(ApiError {
        status: axum::http::StatusCode::FORBIDDEN,
        error: format!(
            "your scope is {}: the {field} must name it, so that it picks only appliances you \
             may act on",
            scope.join(",")
        ),
        field: Some(field.to_string()),
    })
}

/// Refuses a request before its handler, draining its body first (a client still sending
/// gets the answer rather than a reset).
async fn refuse(req: Request, e: ApiError) -> Response {
    let path = req.uri().path().to_string();
    let e = drain(req.into_body(), e).await;
    if crate::api::is_page(&path) {
        crate::ui::layout::refusal(&e, &path)
    } else {
        e.into_response()
    }
}

/// The middleware (see the module documentation).
pub async fn gate(State(g): State<Gate>, mut req: Request, next: Next) -> Response {
    if g.access == Access::Anyone {
        return next.run(req).await;
    }
    let transport = transport(req.extensions());
    let credential = match authenticate(&g.st, req.headers(), transport).await {
        Ok(c) => c,
        Err(e) => return refuse(req, e).await,
    };
    let principal = match (g.access, credential) {
        (_, Credential::Nothing) => return refuse(req, no_credentials()).await,
        (Access::Anyone | Access::Device | Access::DeviceOr(_), Credential::DeviceBearer(_)) => {
            return next.run(req).await
        }
        (Access::Device, Credential::Operator(_)) => {
            return refuse(
                req,
                ApiError::forbidden("operator credentials cannot be used on device endpoints"),
            )
            .await
        }
        (Access::Operator(_), Credential::DeviceBearer(hash)) => {
            let known =
                g.st.db
                    .run(move |c| appliances::id_for_token(c, &hash).map_err(ApiError::from))
                    .await;
            let e = match known {
                Ok(Some(_)) => {
                    ApiError::forbidden("a device token cannot be used on operator endpoints")
                }
                Ok(None) => ApiError::unauthorized("invalid token"),
                Err(e) => e,
            };
            return refuse(req, e).await;
        }
        (_, Credential::Operator(p)) => p,
    };
    let needed = g.access.role().unwrap_or(Role::Admin);
    if !principal.may(needed) {
        let e = ApiError::forbidden(format!(
            "{} is a {}: this needs the {} role",
            principal.user,
            principal.role.as_str(),
            needed.as_str()
        ));
        return audited(&g.st, &principal, req, Err(e)).await;
    }
    if principal.via == Via::Session && changes_state(req.method()) {
        if let Err(e) = check_csrf(&principal, req.headers(), transport) {
            return audited(&g.st, &principal, req, Err(e)).await;
        }
    }
    if !principal.scope.whole_fleet() {
        let matched = req
            .extensions()
            .get::<MatchedPath>()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default();
        let path = req.uri().path().to_string();
        if let Some(target) = route_target(&matched, &path) {
            if let Err(e) = check_scope(&g.st, &principal.scope, target).await {
                return audited(&g.st, &principal, req, Err(e)).await;
            }
        }
    }
    req.extensions_mut().insert(principal.clone());
    audited(&g.st, &principal, req, Ok(next)).await
}

/// Runs the request (or answers `refused`) and records it in the audit log if it changes
/// state or was refused here (a viewer trying an operator action, a read outside the scope).
async fn audited(
    st: &AppState,
    principal: &Principal,
    req: Request,
    outcome: Result<Next, ApiError>,
) -> Response {
    let worth_recording = changes_state(req.method()) || outcome.is_err();
    let record = worth_recording.then(|| audit::NewEntry {
        at_ms: super::now_ms(),
        actor: principal.user.clone(),
        via: Some(principal.via),
        source: peer(req.extensions()),
        action: format!(
            "{} {}",
            req.method(),
            req.extensions()
                .get::<MatchedPath>()
                .map_or("?", |m| m.as_str())
        ),
        target: req.uri().path().to_string(),
        status: 0,
    });
    let response = match outcome {
        Ok(next) => next.run(req).await,
        Err(e) => refuse(req, e).await,
    };
    if let Some(mut entry) = record {
        entry.status = response.status().as_u16();
        write_audit(st, entry).await;
    }
    response
}

/// Records `entry`; a failure is logged, the answer stands (it has been decided already).
pub async fn write_audit(st: &AppState, entry: audit::NewEntry) {
    if let Err(e) = st
        .db
        .run(move |c| audit::record(c, &entry).map_err(ApiError::from))
        .await
    {
        tracing::error!(error = %e.error, "cannot record an audit entry");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_object_routes_name_their_object() {
        assert_eq!(
            route_target("/api/v1/appliances/{id}", "/api/v1/appliances/s1"),
            Some(Target::Appliance("s1"))
        );
        assert_eq!(
            route_target(
                "/api/v1/appliances/{id}/config/{config}",
                "/api/v1/appliances/s1/config/7"
            ),
            Some(Target::Appliance("s1"))
        );
        assert_eq!(
            route_target(
                "/api/v1/diagnostics/{n}/content",
                "/api/v1/diagnostics/3/content"
            ),
            Some(Target::Diagnostics("3"))
        );
        assert_eq!(
            route_target("/api/v1/rollouts/{id}/pause", "/api/v1/rollouts/9/pause"),
            Some(Target::Rollout("9"))
        );
        assert_eq!(
            route_target("/api/v1/appliances", "/api/v1/appliances"),
            None
        );
        assert_eq!(route_target("/api/v1/rollouts", "/api/v1/rollouts"), None);
        assert_eq!(
            route_target("/api/v1/users/{name}", "/api/v1/users/x"),
            None
        );
        assert_eq!(
            route_target("/api/v1/tokens/{id}", "/api/v1/tokens/1"),
            None
        );
    }
}
