//! The P6OS console: the management server that appliances' agents pair and report to, and
//! the operator's view of the fleet (registration, desired versions, signed bundles).
//!
//! Layout: a pure core (`core`: pairing decisions, heartbeat events, selectors; `range`: HTTP
//! ranges; `openapi`: the API document) and a thin I/O shell (`db`: SQLite; `api`: the axum
//! handlers; `client`: the operator CLI over HTTP). The wire types live in `p6os_protocol`.
//!
//! Secrets: the admin and pairing tokens are kept only as sha256 digests in memory, device
//! tokens only as sha256 hex in the database; no token is ever logged.

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod core;
pub mod db;
pub mod error;
pub mod init;
pub mod openapi;
pub mod range;
pub mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use p6os_bundle::keys::PublicKey;

/// Where the request log and server messages go (stderr in production; tests capture it).
#[derive(Clone)]
pub struct Log(Arc<dyn Fn(&str) + Send + Sync>);

impl Log {
    /// Lines to standard error.
    pub fn stderr() -> Log {
        Log(Arc::new(|line| eprintln!("{line}")))
    }

    /// Lines to a function (tests collect them).
    pub fn to_fn(f: impl Fn(&str) + Send + Sync + 'static) -> Log {
        Log(Arc::new(f))
    }

    pub fn line(&self, line: &str) {
        (self.0)(line)
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Log")
    }
}

/// Everything the server needs; built by the CLI from flags and files, or by tests.
/// `Debug` leaves the tokens out.
#[derive(Clone)]
pub struct Config {
    pub db: PathBuf,
    pub bundles: PathBuf,
    pub admin_token: String,
    pub pairing_token: String,
    /// Bundles signed by other keys are refused on upload.
    pub trusted_keys: Vec<PublicKey>,
    /// Returned to devices: how often they report.
    pub heartbeat_secs: u32,
    /// Returned to pending devices: how soon they ask again.
    pub pending_retry_secs: u32,
    pub log: Log,
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

/// Serves `app` on `listener` (plain TCP, or [`tls::TlsListener`]) until `shutdown` completes
/// (in-flight requests finish first).
pub async fn run<L>(
    app: axum::Router,
    listener: L,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Io)
}

/// [`app`] then [`run`].
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    run(app(config)?, listener, shutdown).await
}
