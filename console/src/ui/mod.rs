//! The web console: server-rendered HTML pages (maud escapes every value, so text a device
//! reports is shown as text), a small script and a style sheet built into the binary. Pages
//! read through the same database functions as the API; every action on a page is a call of
//! the JSON API (`fetch` with the session cookie and its CSRF token), so anything a page does,
//! a script or a test can do without a browser.
//!
//! - `layout`: the page frame, navigation, security headers, refusals as pages.
//! - `login`: the login form (works without JavaScript).
//! - `fleet`: the overview, one appliance, pending ids.
//! - `ops`: bundles, rollouts (live progress per wave), site configurations.
//! - `admin`: users and tokens, the audit log.
//!
//! Live updates: the script polls the page it shows every few seconds (while the tab is
//! visible) and swaps the regions marked `data-live`; no framework, no server push.

pub mod admin;
pub mod fleet;
pub mod layout;
pub mod login;
pub mod ops;

use axum::http::header;
use axum::response::{IntoResponse, Response};

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /ui/assets/app.js`.
pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /ui/assets/app.css`.
pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// `GET /`: the web console.
pub async fn root() -> Response {
    axum::response::Redirect::to("/ui/").into_response()
}
