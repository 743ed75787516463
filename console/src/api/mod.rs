//! The HTTP API: state, routes, the request log (tower-http's `TraceLayer`: a `tracing` span
//! per request and one event when it is answered), and the extractors every handler shares
//! (the caller, strict JSON bodies, path ids); every route behind its `gate`. Handlers live
//! in `device`, `operator`, `bundles`, `rollouts`, `siteconfig`, `diagnostics`, `session` and
//! `users`; the contract they implement is `p6os_protocol`.

pub mod bodies;
mod bundles;
mod device;
mod diagnostics;
pub mod extract;
pub mod gate;
mod operator;
mod rollouts;
pub mod session;
mod siteconfig;
mod users;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::handler::Handler;
use axum::http::{self, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use p6os_bundle::keys::PublicKey;
use p6os_protocol::users::Role;
use p6os_protocol::API;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::access::Access;
use crate::auth::Secret;
use crate::clock::{Clock, SystemClock};
use crate::db::{self, Db};
use crate::error::{ApiError, InternalDetail};
use crate::limit::{LoginLimits, PairLimits};
use crate::pairing::Challenges;
use crate::{ui, Config, ServeError};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub db: Db,
    pub bundles: PathBuf,
    pub admin: Secret,
    pub pairing: Secret,
    pub trusted: Vec<PublicKey>,
    pub heartbeat_secs: u32,
    pub pending_retry_secs: u32,
    pub max_pending: usize,
    pub challenges: Challenges,
    pub limits: PairLimits,
    /// Login attempts per source address.
    pub logins: LoginLimits,
    /// Password hashes computed at once (`password::MAX_CONCURRENT`).
    pub hashing: Arc<tokio::sync::Semaphore>,
    /// Unix seconds for heartbeats and rollouts (tests drive it).
    pub clock: Arc<dyn Clock>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Opens the database (migrating it) and creates the bundles directory.
    pub fn open(config: Config) -> Result<AppState, ServeError> {
        AppState::open_with_clock(config, Arc::new(SystemClock))
    }

    /// [`AppState::open`] with another clock (tests drive rollouts and windows with it).
    pub fn open_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<AppState, ServeError> {
        if config.admin_token.trim().is_empty() {
            return Err(ServeError::EmptyAdminToken);
        }
        if config.pairing_token.trim().is_empty() {
            return Err(ServeError::EmptyPairingToken);
        }
        std::fs::create_dir_all(&config.bundles).map_err(|source| ServeError::BundlesDir {
            path: config.bundles.clone(),
            source,
        })?;
        remove_stale_uploads(&config.bundles);
        let db = Db::open(&config.db)?;
        let challenges = Challenges::new(db.run_now(|c| db::secret(c, "pair-challenge"))?);
        let now = clock.now();
        db.run_now(move |c| db::users::ensure_bootstrap(c, now))?;
        Ok(AppState(Arc::new(Inner {
            db,
            bundles: config.bundles,
            admin: Secret::new(config.admin_token.trim()),
            pairing: Secret::new(config.pairing_token.trim()),
            trusted: config.trusted_keys,
            heartbeat_secs: config.heartbeat_secs,
            pending_retry_secs: config.pending_retry_secs,
            max_pending: config.max_pending,
            challenges,
            limits: PairLimits::new(config.pairing_rate, config.pending_retry_secs),
            logins: LoginLimits::default(),
            hashing: Arc::new(tokio::sync::Semaphore::new(crate::password::MAX_CONCURRENT)),
            clock,
        })))
    }
}

/// Removes `.upload-*.tmp` files that a killed console left in the bundles directory, once
/// they are an hour old: the directory may be shared by several consoles (one database),
/// whose uploads in progress stay.
const STALE_UPLOAD: std::time::Duration = std::time::Duration::from_secs(3600);

fn remove_stale_uploads(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_UPLOAD);
        if name.starts_with(".upload-") && name.ends_with(".tmp") && old {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!(
                    path = %entry.path().display(),
                    error = %e,
                    "cannot remove a stale upload"
                );
            }
        }
    }
}

/// Unix seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Delete => "delete",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
            Method::Put => MethodFilter::PUT,
            Method::Delete => MethodFilter::DELETE,
        }
    }
}

/// A router that remembers what it serves and who may call it, so a test can hold
/// `/openapi.json` to it and walk every route with every kind of caller.
struct Routes<'a> {
    state: Option<&'a AppState>,
    router: Router<AppState>,
    served: Vec<(Method, &'static str, Access)>,
}

impl Routes<'_> {
    fn add<H, T>(self, method: Method, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_routed(method, path, access, on(method.filter(), handler))
    }

    /// A route behind its gate (`gate::gate`, holding callers to `access`).
    fn add_routed(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        routed: MethodRouter<AppState>,
    ) -> Self {
        self.served.push((method, path, access));
        let routed = match self.state {
            Some(st) => routed.route_layer(axum::middleware::from_fn_with_state(
                gate::Gate {
                    st: st.clone(),
                    access,
                },
                gate::gate,
            )),
            None => routed,
        };
        self.router = self.router.route(path, routed);
        self
    }
}

/// The pair route, behind its per-source limit when there is a state to count in (`None`:
/// only the list of routes is wanted).
fn pair_route(state: Option<&AppState>) -> MethodRouter<AppState> {
    let routed = on(Method::Post.filter(), device::pair);
    match state {
        Some(st) => routed.route_layer(axum::middleware::from_fn_with_state(
            st.clone(),
            device::limit_pair_source,
        )),
        None => routed,
    }
}

fn routes(state: Option<&AppState>) -> Routes<'_> {
    use Access::{Anyone, Device, DeviceOr, Operator as Op};
    use Method::{Delete, Get, Post, Put};
    use Role::{Admin, Operator, Viewer};
    const A: &str = "/api/v1/appliances";
    debug_assert!(A.starts_with(API));
    Routes {
        state,
        router: Router::new(),
        served: Vec::new(),
    }
    .add(Get, "/openapi.json", Anyone, operator::openapi)
    .add_routed(
        Post,
        "/api/v1/appliances/{id}/pair",
        Anyone,
        pair_route(state),
    )
    .add(
        Post,
        "/api/v1/appliances/{id}/heartbeat",
        Device,
        device::heartbeat,
    )
    .add(
        Get,
        "/api/v1/bundles/{sha256}/content",
        DeviceOr(Viewer),
        bundles::content,
    )
    .add(Post, A, Op(Operator), operator::register)
    .add(Get, A, Op(Viewer), operator::list)
    .add(Get, "/api/v1/appliances/{id}", Op(Viewer), operator::get)
    .add(
        Delete,
        "/api/v1/appliances/{id}",
        Op(Operator),
        operator::delete,
    )
    .add(
        Put,
        "/api/v1/appliances/{id}/desired",
        Op(Operator),
        operator::set_desired,
    )
    .add(
        Get,
        "/api/v1/appliances/{id}/events",
        Op(Viewer),
        operator::events,
    )
    .add(
        Post,
        "/api/v1/appliances/{id}/approve",
        Op(Operator),
        operator::approve,
    )
    .add(
        Put,
        "/api/v1/appliances/{id}/image",
        Op(Operator),
        operator::set_image,
    )
    .add(
        Put,
        "/api/v1/desired",
        Op(Operator),
        operator::set_desired_by_selector,
    )
    .add(Post, "/api/v1/bundles", Op(Operator), bundles::upload)
    .add(Get, "/api/v1/bundles", Op(Viewer), bundles::list)
    .add(Post, "/api/v1/rollouts", Op(Operator), rollouts::create)
    .add(Get, "/api/v1/rollouts", Op(Viewer), rollouts::list)
    .add(Get, "/api/v1/rollouts/{id}", Op(Viewer), rollouts::get)
    .add(
        Get,
        "/api/v1/rollouts/{id}/devices",
        Op(Viewer),
        rollouts::devices,
    )
    .add(
        Post,
        "/api/v1/rollouts/{id}/pause",
        Op(Operator),
        rollouts::pause,
    )
    .add(
        Post,
        "/api/v1/rollouts/{id}/resume",
        Op(Operator),
        rollouts::resume,
    )
    .add(
        Post,
        "/api/v1/rollouts/{id}/abort",
        Op(Operator),
        rollouts::abort,
    )
    .add(Put, "/api/v1/config", Op(Operator), siteconfig::set)
    .add(
        Get,
        "/api/v1/appliances/{id}/config",
        Op(Viewer),
        siteconfig::show,
    )
    .add(
        Get,
        "/api/v1/appliances/{id}/config/history",
        Op(Viewer),
        siteconfig::history,
    )
    .add(
        Get,
        "/api/v1/appliances/{id}/config/{config}",
        Device,
        siteconfig::document,
    )
    .add(
        Post,
        "/api/v1/appliances/{id}/config/report",
        Device,
        siteconfig::report,
    )
    .add(
        Post,
        "/api/v1/appliances/{id}/diagnostics",
        Op(Operator),
        diagnostics::create,
    )
    .add(
        Get,
        "/api/v1/appliances/{id}/diagnostics",
        Op(Viewer),
        diagnostics::list,
    )
    .add(Get, "/api/v1/diagnostics/{n}", Op(Viewer), diagnostics::get)
    .add(
        Get,
        "/api/v1/diagnostics/{n}/content",
        Op(Operator),
        diagnostics::download,
    )
    .add(
        Put,
        "/api/v1/diagnostics/{n}/content",
        Device,
        diagnostics::upload,
    )
    .add(Post, "/api/v1/login", Anyone, session::login)
    .add(Post, "/api/v1/logout", Op(Viewer), session::logout)
    .add(Get, "/api/v1/me", Op(Viewer), session::me)
    .add(
        Put,
        "/api/v1/me/password",
        Op(Viewer),
        session::change_password,
    )
    .add(Post, "/api/v1/users", Op(Admin), users::create)
    .add(Get, "/api/v1/users", Op(Admin), users::list)
    .add(Get, "/api/v1/users/{name}", Op(Admin), users::get)
    .add(Put, "/api/v1/users/{name}", Op(Admin), users::update)
    .add(Delete, "/api/v1/users/{name}", Op(Admin), users::delete)
    .add(Post, "/api/v1/tokens", Op(Viewer), users::create_token)
    .add(Get, "/api/v1/tokens", Op(Viewer), users::list_tokens)
    .add(
        Delete,
        "/api/v1/tokens/{id}",
        Op(Viewer),
        users::revoke_token,
    )
    .add(Get, "/api/v1/audit", Op(Admin), users::audit_log)
    .add(Get, "/api/v1/audit/export", Op(Admin), users::audit_export)
    .add(Get, "/", Anyone, ui::root)
    .add(Get, "/ui/assets/app.js", Anyone, ui::app_js)
    .add(Get, "/ui/assets/app.css", Anyone, ui::app_css)
    .add(Get, "/ui/login", Anyone, ui::login::page)
    .add(Post, "/ui/login", Anyone, ui::login::submit)
    .add(Get, "/ui/", Op(Viewer), ui::fleet::overview)
    .add(Get, "/ui/pending", Op(Viewer), ui::fleet::pending)
    .add(Get, "/ui/appliances/{id}", Op(Viewer), ui::fleet::appliance)
    .add(Get, "/ui/bundles", Op(Viewer), ui::ops::bundles_page)
    .add(Get, "/ui/rollouts", Op(Viewer), ui::ops::rollouts_page)
    .add(Get, "/ui/rollouts/{id}", Op(Viewer), ui::ops::rollout_page)
    .add(Get, "/ui/configs", Op(Viewer), ui::ops::configs_page)
    .add(Get, "/ui/users", Op(Viewer), ui::admin::users_page)
    .add(Get, "/ui/audit", Op(Admin), ui::admin::audit_page)
}

/// Every (method, path) of the API the router serves (not the web console's pages), paths in
/// the router's (and OpenAPI's) `{param}` syntax.
pub fn served_routes() -> Vec<(&'static str, &'static str)> {
    routes(None)
        .served
        .into_iter()
        .filter(|(_, p, _)| !is_page(p))
        .map(|(m, p, _)| (m.as_str(), p))
        .collect()
}

/// Whether a route is the web console's (HTML), not the API's.
pub fn is_page(path: &str) -> bool {
    path == "/" || path.starts_with("/ui/")
}

/// Every route with what it asks of its caller.
pub fn route_access() -> Vec<(Method, &'static str, Access)> {
    routes(None).served
}

/// The application: routes, JSON 404/405, and the request log.
pub fn router(state: AppState) -> Router {
    routes(Some(&state))
        .router
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
        .with_state(state)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(log_response)
                .on_body_chunk(())
                .on_eos(())
                // A 5xx is logged by `log_response`, with its cause, once.
                .on_failure(()),
        )
}

/// The span of a request: its method and path. Never the query, headers or body, so never a
/// token (tokens travel in `Authorization` and in JSON bodies).
fn request_span<B>(req: &http::Request<B>) -> Span {
    tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
}

/// One event per request, in its span: the status, the latency and, for a 500, the cause
/// (the client only learns that it failed).
fn log_response<B>(response: &http::Response<B>, latency: Duration, _span: &Span) {
    let status = response.status().as_u16();
    let latency = format!("{:.1}ms", latency.as_secs_f64() * 1000.0);
    match response.extensions().get::<InternalDetail>() {
        Some(InternalDetail(cause)) => {
            tracing::error!(status, %latency, %cause, "failed");
        }
        None if response.status().is_server_error() => {
            tracing::error!(status, %latency, "failed");
        }
        None => tracing::info!(status, %latency, "answered"),
    }
}

/// `(status, json)` as a response.
fn json<T: serde::Serialize>(status: StatusCode, body: T) -> Response {
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod stale_upload_tests {
    use std::time::{Duration, SystemTime};

    #[test]
    fn only_uploads_older_than_an_hour_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join(".upload-fresh.tmp");
        let old = dir.path().join(".upload-old.tmp");
        let bundle = dir.path().join("abc.p6b");
        for p in [&fresh, &old, &bundle] {
            std::fs::write(p, b"x").unwrap();
        }
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        for p in [&old, &bundle] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(two_hours_ago)
                .unwrap();
        }
        super::remove_stale_uploads(dir.path());
        assert!(fresh.exists(), "another console's upload in progress");
        assert!(!old.exists());
        assert!(bundle.exists());
    }
}
