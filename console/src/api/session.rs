//! Web sessions: log in (JSON for scripts and the page's own script, a form for the login
//! page), log out, who am I, and an operator's own password.
//!
//! A login always starts a new session with a new random id (a session id planted before the
//! login is never promoted), answers with the session's CSRF token, and sets the cookie
//! HttpOnly, SameSite=Strict, and Secure with the `__Host-` prefix over https. Failed logins
//! back off per account ([`crate::access::refused_until`], checked before the password) and
//! per source address ([`crate::limit::LoginLimits`]); an unknown user's password is checked
//! against a decoy hash, so the answer takes as long as for a real one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use p6os_protocol::users::{
    check_password, check_user_name, LoginAnswer, LoginRequest, Me, PasswordChange, UserUpdate,
};

use super::extract::{JsonBody, Operator};
use super::gate::{session_id, transport, write_audit};
use super::{now_ms, AppState};
use crate::access::{self, session_cookie, Transport};
use crate::auth::{digest_hex, new_token};
use crate::db::{audit, users};
use crate::error::ApiError;
use crate::password;

/// How long a login waits for a free hashing slot before it is answered 503.
const HASHING_WAIT: Duration = Duration::from_secs(10);

/// Checks `password` against `stored` (or the decoy) on a blocking thread, at most
/// [`password::MAX_CONCURRENT`] at once.
pub async fn verify_password(
    st: &AppState,
    password: String,
    stored: Option<String>,
) -> Result<bool, ApiError> {
    let slot = hashing_slot(st).await?;
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let real = stored.is_some();
        let ok = password::verify(&password, stored.as_deref().unwrap_or(password::decoy()));
        real && ok
    })
    .await
    .map_err(|_| ApiError::internal("the password thread stopped"))
}

/// Hashes `password` on a blocking thread, within the same limit as [`verify_password`].
pub async fn hash_password(st: &AppState, password: String) -> Result<String, ApiError> {
    let slot = hashing_slot(st).await?;
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        password::hash(&password)
    })
    .await
    .map_err(|_| ApiError::internal("the password thread stopped"))?
    .map_err(ApiError::internal)
}

/// One of the [`password::MAX_CONCURRENT`] hashing slots. The blocking closure owns it: a
/// client that hangs up drops its request's future, not the hash under way, so the slot stays
/// taken until the hash ends.
async fn hashing_slot(st: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    tokio::time::timeout(HASHING_WAIT, st.hashing.clone().acquire_owned())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the console is busy checking passwords: try again in a moment",
    )
}

fn refused() -> ApiError {
    ApiError::unauthorized("wrong user name or password")
}

/// A started session: the answer and the cookie.
pub struct Started {
    pub answer: LoginAnswer,
    pub cookie: String,
}

/// Checks a login and starts a session (the shared part of the JSON and the form login).
/// Every attempt is in the audit log.
pub async fn log_in(
    st: &AppState,
    req: LoginRequest,
    source: IpAddr,
    transport: Transport,
) -> Result<Started, ApiError> {
    let audit_entry = |action: &str, status: StatusCode| audit::NewEntry {
        at_ms: now_ms(),
        actor: if check_user_name(&req.user).is_ok() {
            req.user.clone()
        } else {
            "-".to_string()
        },
        via: None,
        source: source.to_string(),
        action: action.to_string(),
        target: "/api/v1/login".to_string(),
        status: status.as_u16(),
    };
    // Refused by the per-source limit: nothing is checked, nothing recorded (a flood of
    // these must not push operators' actions out of the capped audit log).
    if let Some(wait) = st.logins.source_wait(source) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many logins from this address: try again in {} s",
                wait.as_secs().max(1)
            ),
        ));
    }
    let outcome = check_login(st, &req, transport).await;
    let entry = match &outcome {
        Ok(_) => audit_entry("login", StatusCode::OK),
        Err(e) => audit_entry("login-refused", e.status),
    };
    write_audit(st, entry).await;
    outcome
}

async fn check_login(
    st: &AppState,
    req: &LoginRequest,
    transport: Transport,
) -> Result<Started, ApiError> {
    let now = st.clock.now();
    let attempt = if check_user_name(&req.user).is_ok() {
        let name = req.user.clone();
        st.db
            .run(move |c| users::count_attempt(c, &name, now).map_err(ApiError::from))
            .await?
    } else {
        users::Attempt::Unknown
    };
    let user = match attempt {
        users::Attempt::Unknown => None,
        users::Attempt::Refused(until) => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many failed logins for this account: try again in {} s (an admin \
                     can unlock it)",
                    until.saturating_sub(now)
                ),
            ))
        }
        users::Attempt::Counted(u) => Some(*u),
    };
    let usable = user.as_ref().filter(|u| !u.disabled);
    let stored = usable.and_then(|u| u.password_hash.clone());
    let password_ok = verify_password(st, req.password.clone(), stored).await?;
    let Some(user) = usable.filter(|_| password_ok) else {
        return Err(refused());
    };
    let session = new_token().map_err(ApiError::internal)?;
    let csrf = new_token().map_err(ApiError::internal)?;
    let (user_id, session_hash, csrf_stored) = (user.id, digest_hex(&session), csrf.clone());
    st.db
        .run(move |c| {
            users::login_succeeded(c, user_id, &session_hash, &csrf_stored, now)
                .map_err(ApiError::from)
        })
        .await?;
    Ok(Started {
        answer: LoginAnswer {
            user: user.name.clone(),
            role: user.role,
            csrf,
            expires_at: now + access::SESSION_MAX_SECS,
        },
        cookie: session_cookie(transport, &session),
    })
}

/// The peer's address (loopback when unknown, as in tests without `serve`).
pub fn source_ip(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |ConnectInfo(a)| a.ip())
}

/// `POST /api/v1/login`: 200 with the CSRF token and the session cookie; 401 for a wrong name
/// or password (which one is not said); 429 while backing off.
pub async fn login(
    State(st): State<AppState>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (source, transport) = (
        source_ip(request.extensions()),
        transport(request.extensions()),
    );
    let JsonBody(req) =
        <JsonBody<LoginRequest> as axum::extract::FromRequest<()>>::from_request(request, &())
            .await?;
    let started = log_in(&st, req, source, transport).await?;
    Ok(([(header::SET_COOKIE, started.cookie)], Json(started.answer)).into_response())
}

/// `POST /api/v1/logout`: ends the session of the cookie (the gate checked its CSRF token)
/// and clears the cookie; 204.
pub async fn logout(
    State(st): State<AppState>,
    Operator(_who): Operator,
    headers: HeaderMap,
    request_extensions: axum::http::Extensions,
) -> Result<Response, ApiError> {
    let transport = transport(&request_extensions);
    if let Some(id) = session_id(&headers, transport) {
        let hash = digest_hex(&id);
        st.db
            .run(move |c| users::end_session(c, &hash).map_err(ApiError::from))
            .await?;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, access::clear_session_cookie(transport))],
    )
        .into_response())
}

/// `GET /api/v1/me`.
pub async fn me(Operator(who): Operator) -> Json<Me> {
    Json(Me {
        user: who.user,
        role: who.role,
        scope: who.scope.0,
        via: who.via,
    })
}

/// `PUT /api/v1/me/password`: the current password (unless the user has none yet), then the
/// new one; every session of the user ends (log in again). 204.
pub async fn change_password(
    State(st): State<AppState>,
    Operator(who): Operator,
    JsonBody(req): JsonBody<PasswordChange>,
) -> Result<Response, ApiError> {
    check_password(&req.new).map_err(|e| ApiError::field("new", e))?;
    let name = who.user.clone();
    let user = st
        .db
        .run(move |c| users::get(c, &name).map_err(ApiError::from))
        .await?
        .ok_or_else(|| ApiError::not_found("your account is gone"))?;
    if let Some(stored) = user.password_hash.clone() {
        // Checking the current password is a login attempt: it backs off the same way.
        let now = st.clock.now();
        let name = who.user.clone();
        let attempt = st
            .db
            .run(move |c| users::count_attempt(c, &name, now).map_err(ApiError::from))
            .await?;
        if let users::Attempt::Refused(until) = attempt {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many wrong passwords: try again in {} s",
                    until.saturating_sub(now)
                ),
            ));
        }
        let current = req.current.clone().unwrap_or_default();
        if !verify_password(&st, current, Some(stored)).await? {
            return Err(ApiError::field("current", "the current password is wrong"));
        }
    }
    let hash = hash_password(&st, req.new).await?;
    let name = who.user.clone();
    st.db
        .run(move |c| {
            users::update(c, &name, &UserUpdate::default(), Some(&hash)).map_err(ApiError::from)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
