//! Operator accounts (admin), personal API tokens (each user their own; admins anyone's) and
//! the audit log (admin).

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use p6os_protocol::users::{
    check_password, check_user_name, AuditPage, Role, TokenCreated, TokenPage, TokenRequest, User,
    UserPage, UserRequest, UserUpdate,
};

use super::extract::{JsonBody, Operator, Param};
use super::session::hash_password;
use super::{json, AppState};
use crate::access::{self, Principal, BOOTSTRAP_USER, TOKEN_PREFIX};
use crate::auth::{digest_hex, new_token};
use crate::core::check_labels;
use crate::db::{audit, users};
use crate::error::ApiError;
use crate::page::{query_pairs, PageQuery};

fn unknown_user(name: &str) -> ApiError {
    ApiError::not_found(format!("no user {name}"))
}

/// Admins manage accounts and tokens, which no scope can bound: an admin has the whole fleet.
fn admin_unscoped() -> ApiError {
    ApiError::field(
        "scope",
        "an admin always has the whole fleet: give a scope to operators and viewers only",
    )
}

fn check_name_field(name: &str, field: &str) -> Result<(), ApiError> {
    check_user_name(name).map_err(|e| ApiError::field(field, e))
}

/// `POST /api/v1/users`: 201, 409 if the name is taken.
pub async fn create(
    State(st): State<AppState>,
    _: Operator,
    JsonBody(req): JsonBody<UserRequest>,
) -> Result<Response, ApiError> {
    check_name_field(&req.name, "name")?;
    check_labels(&req.scope, "scope")?;
    if req.role == Role::Admin && !req.scope.is_empty() {
        return Err(admin_unscoped());
    }
    let hash = match req.password.clone() {
        Some(p) => {
            check_password(&p).map_err(|e| ApiError::field("password", e))?;
            Some(hash_password(&st, p).await?)
        }
        None => None,
    };
    let now = st.clock.now();
    let name = req.name.clone();
    let created = st
        .db
        .run(move |c| {
            users::create(c, &req.name, req.role, &req.scope, hash.as_deref(), now)
                .map_err(ApiError::from)
        })
        .await?;
    match created {
        Some(u) => Ok(json(StatusCode::CREATED, u.view(now))),
        None => Err(ApiError::conflict(format!("user {name} exists already"))),
    }
}

/// `GET /api/v1/users?limit=&after=`: a page, by name.
pub async fn list(
    State(st): State<AppState>,
    _: Operator,
    RawQuery(query): RawQuery,
) -> Result<Json<UserPage>, ApiError> {
    let page = PageQuery::only(query_pairs(query.as_deref())?)?;
    let now = st.clock.now();
    let (rows, next) = st
        .db
        .run(move |c| users::list(c, &page).map_err(ApiError::from))
        .await?;
    Ok(Json(UserPage {
        items: rows.iter().map(|u| u.view(now)).collect(),
        next,
    }))
}

/// `GET /api/v1/users/{name}`.
pub async fn get(
    State(st): State<AppState>,
    _: Operator,
    Param(name): Param,
) -> Result<Json<User>, ApiError> {
    check_name_field(&name, "name")?;
    let now = st.clock.now();
    let key = name.clone();
    st.db
        .run(move |c| users::get(c, &key).map_err(ApiError::from))
        .await?
        .map(|u| Json(u.view(now)))
        .ok_or_else(|| unknown_user(&name))
}

/// `PUT /api/v1/users/{name}`: the fields given change. The bootstrap admin keeps its role,
/// stays enabled and unscoped; nobody disables or demotes themselves (an admin could lock
/// the last door).
pub async fn update(
    State(st): State<AppState>,
    Operator(who): Operator,
    Param(name): Param,
    JsonBody(req): JsonBody<UserUpdate>,
) -> Result<Json<User>, ApiError> {
    check_name_field(&name, "name")?;
    let protected = name == BOOTSTRAP_USER || name == who.user;
    if protected {
        let whose = if name == BOOTSTRAP_USER {
            "the bootstrap admin"
        } else {
            "your own account"
        };
        if req.role.is_some_and(|r| r != Role::Admin) {
            return Err(ApiError::field("role", format!("{whose} stays an admin")));
        }
        if req.disabled == Some(true) {
            return Err(ApiError::field(
                "disabled",
                format!("{whose} cannot be disabled"),
            ));
        }
        if req.scope.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::field(
                "scope",
                format!("{whose} keeps the whole fleet"),
            ));
        }
    }
    if let Some(scope) = &req.scope {
        check_labels(scope, "scope")?;
    }
    let key = name.clone();
    let current = st
        .db
        .run(move |c| users::get(c, &key).map_err(ApiError::from))
        .await?
        .ok_or_else(|| unknown_user(&name))?;
    let role = req.role.unwrap_or(current.role);
    let scope = req.scope.as_ref().unwrap_or(&current.scope);
    if role == Role::Admin && !scope.is_empty() {
        return Err(admin_unscoped());
    }
    let hash = match req.password.clone() {
        Some(p) => {
            check_password(&p).map_err(|e| ApiError::field("password", e))?;
            Some(hash_password(&st, p).await?)
        }
        None => None,
    };
    let now = st.clock.now();
    let key = name.clone();
    st.db
        .run(move |c| users::update(c, &key, &req, hash.as_deref()).map_err(ApiError::from))
        .await?
        .map(|u| Json(u.view(now)))
        .ok_or_else(|| unknown_user(&name))
}

/// `DELETE /api/v1/users/{name}`: 204; their tokens and sessions end with them.
pub async fn delete(
    State(st): State<AppState>,
    Operator(who): Operator,
    Param(name): Param,
) -> Result<Response, ApiError> {
    check_name_field(&name, "name")?;
    if name == BOOTSTRAP_USER {
        return Err(ApiError::forbidden("the bootstrap admin cannot be deleted"));
    }
    if name == who.user {
        return Err(ApiError::forbidden("you cannot delete your own account"));
    }
    let key = name.clone();
    if st
        .db
        .run(move |c| users::delete(c, &key).map_err(ApiError::from))
        .await?
    {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(unknown_user(&name))
    }
}

/// Whose tokens `who` may act on: their own; an admin anyone's.
fn may_act_for(who: &Principal, user: &str) -> Result<(), ApiError> {
    if who.user == user || who.may(Role::Admin) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only an admin may manage another user's tokens",
        ))
    }
}

/// `POST /api/v1/tokens`: a new personal token (its secret only in this answer); 201.
pub async fn create_token(
    State(st): State<AppState>,
    Operator(who): Operator,
    JsonBody(req): JsonBody<TokenRequest>,
) -> Result<Response, ApiError> {
    let name = req.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::field(
            "name",
            "a token's name is 1 to 64 printable characters (what it is for: laptop, ci)",
        ));
    }
    let days = req.days.unwrap_or(access::DEFAULT_TOKEN_DAYS);
    if !(1..=access::MAX_TOKEN_DAYS).contains(&days) {
        return Err(ApiError::field(
            "days",
            format!("from 1 to {} days", access::MAX_TOKEN_DAYS),
        ));
    }
    let user = req.user.clone().unwrap_or_else(|| who.user.clone());
    check_name_field(&user, "user")?;
    may_act_for(&who, &user)?;
    let secret = format!("{TOKEN_PREFIX}{}", new_token().map_err(ApiError::internal)?);
    let hash = digest_hex(&secret);
    let now = st.clock.now();
    let expires_at = now + u64::from(days) * 86_400;
    let owner = user.clone();
    let made = st
        .db
        .run(move |c| {
            let t = users::NewToken {
                user: &owner,
                name: &name,
                hash: &hash,
                now,
                expires_at,
            };
            users::create_token(c, &t).map_err(ApiError::from)
        })
        .await?;
    match made {
        Ok(token) => Ok(json(StatusCode::CREATED, TokenCreated { token, secret })),
        Err(users::TokenRefusal::NoUser) => Err(unknown_user(&user)),
        Err(users::TokenRefusal::TooMany) => Err(ApiError::conflict(format!(
            "{user} holds {} tokens already: revoke one first",
            access::MAX_TOKENS_PER_USER
        ))),
    }
}

/// `GET /api/v1/tokens?user=&limit=&after=`: the caller's tokens; an admin's `user=` shows
/// another's, and without it everyone's.
pub async fn list_tokens(
    State(st): State<AppState>,
    Operator(who): Operator,
    RawQuery(query): RawQuery,
) -> Result<Json<TokenPage>, ApiError> {
    let mut pairs = query_pairs(query.as_deref())?;
    let page = PageQuery::take(&mut pairs)?;
    page.below()?;
    let mut user = None;
    for (k, v) in pairs {
        match k.as_str() {
            "user" => {
                check_name_field(&v, "user")?;
                user = Some(v);
            }
            _ => {
                return Err(ApiError::field(
                    k.clone(),
                    format!("unknown query parameter {k:?} (user, limit, after)"),
                ))
            }
        }
    }
    let user = match user {
        Some(u) => {
            may_act_for(&who, &u)?;
            Some(u)
        }
        None if who.may(Role::Admin) => None,
        None => Some(who.user.clone()),
    };
    let (items, next) = st
        .db
        .run(move |c| users::list_tokens(c, user.as_deref(), &page).map_err(ApiError::from))
        .await?;
    Ok(Json(TokenPage { items, next }))
}

/// `DELETE /api/v1/tokens/{id}`: 204; it stops working at once.
pub async fn revoke_token(
    State(st): State<AppState>,
    Operator(who): Operator,
    Param(id): Param,
) -> Result<Response, ApiError> {
    let n: u64 = id
        .parse()
        .map_err(|_| ApiError::field("id", "a token id is a number"))?;
    let token = st
        .db
        .run(move |c| users::get_token(c, n).map_err(ApiError::from))
        .await?;
    // Another user's token is "not found" to a non-admin: ids tell nothing.
    let Some(token) = token.filter(|t| may_act_for(&who, &t.user).is_ok()) else {
        return Err(ApiError::not_found(format!("no token {n}")));
    };
    st.db
        .run(move |c| users::delete_token(c, token.id).map_err(ApiError::from))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The audit query: `actor=` and the page.
fn audit_query(query: Option<&str>) -> Result<(Option<String>, PageQuery), ApiError> {
    let mut pairs = query_pairs(query)?;
    let page = PageQuery::take(&mut pairs)?;
    let mut actor = None;
    for (k, v) in pairs {
        match k.as_str() {
            "actor" => actor = Some(v),
            _ => {
                return Err(ApiError::field(
                    k.clone(),
                    format!("unknown query parameter {k:?} (actor, limit, after)"),
                ))
            }
        }
    }
    Ok((actor, page))
}

/// `GET /api/v1/audit?actor=&limit=&after=`: newest first.
pub async fn audit_log(
    State(st): State<AppState>,
    _: Operator,
    RawQuery(query): RawQuery,
) -> Result<Json<AuditPage>, ApiError> {
    let (actor, page) = audit_query(query.as_deref())?;
    page.below()?;
    let (items, next) = st
        .db
        .run(move |c| audit::list(c, actor.as_deref(), &page).map_err(ApiError::from))
        .await?;
    Ok(Json(AuditPage { items, next }))
}

/// Audit entries read per database call of an export.
const EXPORT_PAGE: usize = 1000;

/// `GET /api/v1/audit/export?actor=`: the whole log (or one actor's), newest first, as JSON
/// lines (`application/x-ndjson`), streamed a thousand rows at a time.
pub async fn audit_export(
    State(st): State<AppState>,
    _: Operator,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (actor, _) = audit_query(query.as_deref())?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        let mut after = None;
        loop {
            let page = PageQuery {
                limit: EXPORT_PAGE,
                after: after.clone(),
            };
            let who = actor.clone();
            let read = st
                .db
                .run(move |c| audit::list(c, who.as_deref(), &page).map_err(ApiError::from))
                .await;
            let (items, next) = match read {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e.error, "audit export stopped");
                    let _ = tx.send(Err(std::io::Error::other("read failed"))).await;
                    return;
                }
            };
            let mut chunk = Vec::new();
            for entry in &items {
                // An entry always serializes.
                if serde_json::to_writer(&mut chunk, entry).is_ok() {
                    chunk.push(b'\n');
                }
            }
            if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return;
            }
            match next {
                Some(n) => after = Some(n),
                None => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"p6os-audit.jsonl\"",
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
