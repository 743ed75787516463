//! The login page: a plain form (no script needed) posted to `/ui/login`, checked by the same
//! code as `POST /api/v1/login` (back-off, decoy hash, audit), then back to the page asked for.

use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;
use p6os_protocol::users::LoginRequest;

use super::layout::{bare, secure_headers};
use crate::access::same_origin;
use crate::api::gate::transport;
use crate::api::session::{log_in, source_ip};
use crate::api::AppState;
use crate::error::ApiError;

/// Where to go after the login: a page of the console, never another site (`//host`).
fn next_page(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.contains("//") && !n.contains('\\') => n.into(),
        _ => "/ui/".into(),
    }
}

fn form(next: &str, user: &str, problem: Option<&str>, status: StatusCode) -> Response {
    bare(
        status,
        "Log in",
        html! {
            form.login method="post" action="/ui/login" {
                input type="hidden" name="next" value=(next);
                p {
                    label for="user" { "User name" }
                    input id="user" name="user" type="text" autocomplete="username"
                        required autofocus value=(user);
                }
                p {
                    label for="password" { "Password" }
                    input id="password" name="password" type="password"
                        autocomplete="current-password" required;
                }
                @if let Some(p) = problem {
                    p.error role="alert" { (p) }
                }
                p { button type="submit" { "Log in" } }
            }
        },
    )
}

#[derive(serde::Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// `GET /ui/login`.
pub async fn page(RawQuery(query): RawQuery) -> Response {
    let next = serde_urlencoded::from_str::<NextQuery>(query.as_deref().unwrap_or(""))
        .ok()
        .and_then(|q| q.next);
    form(&next_page(next.as_deref()), "", None, StatusCode::OK)
}

#[derive(serde::Deserialize)]
struct LoginForm {
    user: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// Login forms are small.
const MAX_FORM: usize = 8 * 1024;

/// `POST /ui/login` (`application/x-www-form-urlencoded`): 303 to the page asked for with the
/// session cookie, or the form again with the reason.
pub async fn submit(State(st): State<AppState>, request: Request) -> Response {
    let (source, transport) = (
        source_ip(request.extensions()),
        transport(request.extensions()),
    );
    let headers: HeaderMap = request.headers().clone();
    let header_str = |name| headers.get(name).and_then(|v| v.to_str().ok());
    // A login forged by another site would sign the victim in to the forger's account.
    if !same_origin(
        header_str(header::ORIGIN),
        header_str(header::HOST),
        transport,
    ) {
        let e = ApiError::forbidden("cross-origin login refused");
        return form("/ui/", "", Some(&e.error), e.status);
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_FORM).await {
        Ok(b) => b,
        Err(_) => {
            return form(
                "/ui/",
                "",
                Some("the form is too large"),
                StatusCode::BAD_REQUEST,
            )
        }
    };
    let Ok(f) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return form(
            "/ui/",
            "",
            Some("fill in both fields"),
            StatusCode::BAD_REQUEST,
        );
    };
    let next = next_page(f.next.as_deref());
    let req = LoginRequest {
        user: f.user.clone(),
        password: f.password,
    };
    match log_in(&st, req, source, transport).await {
        Ok(started) => {
            let mut r = (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, next),
                    (header::SET_COOKIE, started.cookie),
                ],
            )
                .into_response();
            secure_headers(&mut r);
            r
        }
        Err(e) => {
            let message = if e.status.is_server_error() {
                "the console cannot check passwords now: try again".to_string()
            } else {
                e.error
            };
            form(&next, &f.user, Some(&message), e.status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_page;

    #[test]
    fn the_page_after_the_login_is_one_of_the_consoles() {
        assert_eq!(next_page(Some("/ui/rollouts/3")), "/ui/rollouts/3");
        for bad in [
            "//evil.example/ui/",
            "https://evil.example",
            "/api/v1/x",
            "/ui//x",
        ] {
            assert_eq!(next_page(Some(bad)), "/ui/", "{bad}");
        }
        assert_eq!(next_page(None), "/ui/");
    }
}
