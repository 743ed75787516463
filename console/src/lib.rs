//! The P6OS console: the management server that appliances' agents pair and report to, and
//! the operator's view of the fleet (registration, desired versions, signed bundles).
//!
//! Layout: a pure core (`core`: pairing decisions, heartbeat events, selectors; `range`: HTTP
//! ranges; `openapi`: the API document) and a thin I/O shell (`db`: SQLite; `api`: the axum
//! handlers; `client`: the operator CLI over HTTP). The wire types live in `p6os_protocol`.
//!
//! Secrets: the admin and pairing tokens are kept only as sha256 digests in memory, device
//! tokens only as sha256 hex in the database; no token is ever logged (the request log has the
//! method and path of a request, never its query, headers or body).
//!
//! Logging goes through `tracing` ([`init_logging`] for the binary); tests install their own
//! subscriber.

pub mod access;
pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod clock;
pub mod core;
pub mod db;
pub mod diagnostics;
pub mod error;
pub mod init;
pub mod limit;
pub mod openapi;
pub mod page;
pub mod pairing;
pub mod password;
pub mod range;
pub mod rollout;
pub mod serve;
pub mod siteconfig;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod ui;

use std::future::Future;
use std::path::PathBuf;

use p6os_bundle::keys::PublicKey;

/// The console's log: `tracing` events as lines on standard error (the request log, one event
/// per request, and server messages), filtered by `RUST_LOG` in `EnvFilter` syntax
/// (`RUST_LOG=debug`, `RUST_LOG=p6os_console=debug,tower_http=trace`), `info` by default. Does
/// nothing if a subscriber is already set (a test's).
pub fn init_logging() {
    use std::io::IsTerminal as _;
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The filter of [`init_logging`]: `rust_log`'s directives (invalid ones are ignored), else `info`.
pub fn log_filter(rust_log: Option<&str>) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing::level_filters::LevelFilter::INFO.into())
        .parse_lossy(rust_log.unwrap_or(""))
}

/// Everything the server needs; built by the CLI from flags and files, or by tests.
/// `Debug` leaves the tokens out.
#[derive(Clone)]
pub struct Config {
    pub db: db::DbLocation,
    pub bundles: PathBuf,
    pub admin_token: String,
    pub pairing_token: String,
    /// Bundles signed by other keys are refused on upload.
    pub trusted_keys: Vec<PublicKey>,
    /// Returned to devices: how often they report.
    pub heartbeat_secs: u32,
    /// Returned to pending devices: how soon they ask again.
    pub pending_retry_secs: u32,
    /// Most ids kept as pending (asked to pair, not registered); more are answered like any
    /// pending id (202) but not stored, after pending ids older than a day are dropped.
    pub max_pending: usize,
    /// Pairing requests a second from one source address (IPv6: one /64), after a burst of
    /// six seconds' worth; more are refused (429) before anything is parsed.
    pub pairing_rate: u32,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("db", &self.db)
            .field("bundles", &self.bundles)
            .field("admin_token", &"(hidden)")
            .field("pairing_token", &"(hidden)")
            .field("trusted_keys", &self.trusted_keys)
            .field("heartbeat_secs", &self.heartbeat_secs)
            .field("pending_retry_secs", &self.pending_retry_secs)
            .field("max_pending", &self.max_pending)
            .field("pairing_rate", &self.pairing_rate)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("cannot create the bundles directory {path}")]
    BundlesDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the admin token is empty")]
    EmptyAdminToken,
    #[error("the pairing token is empty")]
    EmptyPairingToken,
    #[error("the server stopped")]
    Io(#[source] std::io::Error),
}

/// A token from `file` (trimmed), else from the environment variable `env`; an error message
/// naming both when neither gives a non-empty token.
pub fn read_token(file: Option<&std::path::Path>, env: &str, flag: &str) -> Result<String, String> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))?,
        None => std::env::var(env).unwrap_or_default(),
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(match file {
            Some(path) => format!("{flag} {} is empty", path.display()),
            None => format!("no token: give {flag} FILE or set {env}"),
        });
    }
    Ok(token.to_string())
}

/// The application: opens the database (migrating it) and the bundles directory.
pub fn app(config: Config) -> Result<axum::Router, ServeError> {
    Ok(api::router(api::AppState::open(config)?))
}

/// [`app`] with another clock (tests drive rollouts and maintenance windows with it).
pub fn app_with_clock(
    config: Config,
    clock: std::sync::Arc<dyn clock::Clock>,
) -> Result<axum::Router, ServeError> {
    Ok(api::router(api::AppState::open_with_clock(config, clock)?))
}

/// Serves `app` on `listener` (https if `tls` is given) within `limits` until `shutdown`
/// completes (in-flight requests finish first). See [`serve`].
pub async fn run(
    app: axum::Router,
    listener: tokio::net::TcpListener,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    limits: serve::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve::run(app, listener, tls, limits, shutdown).await
}

/// [`app`] then [`run`] over plain http with the default limits of this process.
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let limits = serve::Limits::for_this_process();
    run(app(config)?, listener, None, limits, shutdown).await
}

#[cfg(test)]
mod tests {
    use tracing::level_filters::LevelFilter;

    use super::log_filter;

    #[test]
    fn the_log_filter_is_info_unless_rust_log_says_otherwise() {
        assert_eq!(log_filter(None).max_level_hint(), Some(LevelFilter::INFO));
        assert_eq!(
            log_filter(Some("")).max_level_hint(),
            Some(LevelFilter::INFO)
        );
        assert_eq!(
            log_filter(Some("debug")).max_level_hint(),
            Some(LevelFilter::DEBUG)
        );
        assert_eq!(
            log_filter(Some("warn,tower_http=trace")).max_level_hint(),
            Some(LevelFilter::TRACE)
        );
        // A directive that does not parse is dropped; the default stays.
        assert_eq!(
            log_filter(Some("p6os_console=loud")).max_level_hint(),
            Some(LevelFilter::INFO)
        );
    }
}
