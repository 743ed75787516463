//! The frame of every page: head, skip link, navigation (what the user's role may see), the
//! user and the log-out button; the response headers of pages (a strict Content-Security-Policy:
//! scripts and styles from the console only, no inline script, no framing); refusals as pages.

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use p6os_protocol::users::Role;

use crate::access::Principal;
use crate::error::ApiError;

/// The pages in the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Fleet,
    Pending,
    Bundles,
    Rollouts,
    Configs,
    Users,
    Audit,
}

impl Nav {
    const ALL: [Nav; 7] = [
        Nav::Fleet,
        Nav::Pending,
        Nav::Bundles,
        Nav::Rollouts,
        Nav::Configs,
        Nav::Users,
        Nav::Audit,
    ];

    fn href(self) -> &'static str {
        match self {
            Nav::Fleet => "/ui/",
            Nav::Pending => "/ui/pending",
            Nav::Bundles => "/ui/bundles",
            Nav::Rollouts => "/ui/rollouts",
            Nav::Configs => "/ui/configs",
            Nav::Users => "/ui/users",
            Nav::Audit => "/ui/audit",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Nav::Fleet => "Fleet",
            Nav::Pending => "Pending",
            Nav::Bundles => "Bundles",
            Nav::Rollouts => "Rollouts",
            Nav::Configs => "Site configurations",
            Nav::Users => "Users and tokens",
            Nav::Audit => "Audit log",
        }
    }

    /// The role that sees the page.
    fn role(self) -> Role {
        match self {
            Nav::Audit => Role::Admin,
            _ => Role::Viewer,
        }
    }
}

/// The security headers of every page.
pub fn secure_headers(response: &mut Response) {
    let h = response.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "same-origin");
    set(h, header::CACHE_CONTROL, "no-store");
}

/// An HTML response with the page headers.
pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response();
    secure_headers(&mut r);
    r
}

fn head(title: &str, csrf: Option<&str>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · P6OS console" }
            @if let Some(csrf) = csrf {
                meta name="p6os-csrf" content=(csrf);
            }
            link rel="stylesheet" href="/ui/assets/app.css";
            script src="/ui/assets/app.js" defer {}
        }
    }
}

/// A whole page for the signed-in `who`.
pub fn page(who: &Principal, current: Nav, title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, who.csrf.as_deref()))
            body {
                a.skip href="#main" { "Skip to the content" }
                header.top {
                    span.brand { "P6OS console" }
                    nav aria-label="Main" {
                        ul {
                            @for n in Nav::ALL {
                                @if who.may(n.role()) {
                                    li {
                                        @if n == current {
                                            a href=(n.href()) aria-current="page" { (n.label()) }
                                        } @else {
                                            a href=(n.href()) { (n.label()) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    div.me {
                        span { (who.user) " (" (who.role.as_str()) ")" }
                        button type="button" data-logout { "Log out" }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    html_response(StatusCode::OK, markup)
}

/// A page without the navigation (login, refusals).
pub fn bare(status: StatusCode, title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, None))
            body {
                main id="main" class="narrow" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    html_response(status, markup)
}

/// A refusal on a page route: to the login page when not signed in (back here afterwards),
/// else the reason as a page.
pub fn refusal(e: &ApiError, path: &str) -> Response {
    if e.status == StatusCode::UNAUTHORIZED {
        let to = format!("/ui/login?next={}", urlencode(path));
        let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
        secure_headers(&mut r);
        return r;
    }
    error_page(e)
}

/// An error as a page.
pub fn error_page(e: &ApiError) -> Response {
    let title = match e.status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        s if s.is_server_error() => "Something went wrong",
        _ => "Cannot show this",
    };
    bare(
        e.status,
        title,
        html! {
            p role="alert" {
                @if e.status.is_server_error() {
                    "Internal error: the cause is in the console's log."
                } @else {
                    (e.error)
                }
            }
            p { a href="/ui/" { "Back to the fleet" } }
        },
    )
}

/// A page handler's error: shown as a page.
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> PageError {
        PageError(e)
    }
}

impl From<crate::db::DbError> for PageError {
    fn from(e: crate::db::DbError) -> PageError {
        PageError(ApiError::from(e))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let mut r = error_page(&self.0);
        if self.0.status.is_server_error() {
            // The request log prints the cause once, as for the API; the page does not.
            r.extensions_mut()
                .insert(crate::error::InternalDetail(self.0.error));
        }
        r
    }
}

pub type PageResult = Result<Response, PageError>;

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

/// `k=v, k=v`, or `-`.
pub fn labels(l: &BTreeMap<String, String>) -> String {
    if l.is_empty() {
        return "-".into();
    }
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `3m ago` and the like.
pub fn ago(t: Option<u64>, now: u64) -> String {
    crate::client::format::ago(t, now)
}

/// A `<time>` with the exact UTC time as its title.
pub fn when(t: Option<u64>, now: u64) -> Markup {
    match t {
        Some(secs) => {
            let exact = chrono::DateTime::from_timestamp(secs as i64, 0)
                .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default();
            html! { time datetime=(exact) title=(exact) { (ago(t, now)) } }
        }
        None => html! { "never" },
    }
}

/// The error region of a form (filled by the script).
pub fn form_error() -> Markup {
    html! { p.error role="alert" aria-live="assertive" {} }
}
