//! The accept loop: HTTP/1.1 (hyper) over plain TCP or TLS, with the limits that keep slow or
//! many clients from taking the console down.
//!
//! - At most `max_connections` connections at once (a semaphore around `accept`: past it,
//!   new connections wait in the kernel's backlog), a number below the file limit.
//! - At most `max_per_address` of them from one address (an IPv6 /64 counts as one): more are
//!   closed as soon as they are accepted, so one source cannot take every slot.
//! - A client silent for `client_timeout` is cut: during the TLS handshake, before or while
//!   sending a request's headers (hyper's `header_read_timeout`, which also ends an idle
//!   kept-alive connection), and between two pieces of a request body (tower-http's
//!   `TimeoutBody`).
//!
//! Each request carries `ConnectInfo<SocketAddr>` (the peer) and its [`Transport`] (http or
//! https: the session cookie's name and flags depend on it) for handlers that want them.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower_http::timeout::TimeoutBody;

use crate::access::Transport;
use crate::ServeError;

/// File descriptors kept for the database, bundle files being served and the like.
const RESERVED_FILES: u64 = 64;
/// Most connections by default, whatever the file limit.
const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// How long a client may stay silent, by default.
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// The default cap of connections from one address (`--max-connections-per-address`).
pub const DEFAULT_MAX_PER_ADDRESS: usize = 32;

/// How many clients the console serves at once and how long it waits for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_per_address: usize,
    pub client_timeout: Duration,
}

impl Limits {
    /// The defaults for a process that may open `file_limit` files (`None`: unlimited): two
    /// per connection (its socket, a bundle file it downloads) after a reserve, at most 4,096;
    /// a quarter of them per address, at most 32.
    pub fn for_file_limit(file_limit: Option<u64>) -> Limits {
        let max_connections = match file_limit {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(n) => usize::try_from(n.saturating_sub(RESERVED_FILES) / 2)
                .unwrap_or(usize::MAX)
                .clamp(1, DEFAULT_MAX_CONNECTIONS),
        };
        Limits {
            max_connections,
            max_per_address: Limits::per_address_for(max_connections),
            client_timeout: DEFAULT_CLIENT_TIMEOUT,
        }
    }

    /// The default per-address limit for `max_connections`: a quarter, at most
    /// [`DEFAULT_MAX_PER_ADDRESS`], at least one. A few addresses must not be able to hold every
    /// connection; a site behind one address has a handful of devices, each with one request
    /// at a time.
    pub fn per_address_for(max_connections: usize) -> usize {
        (max_connections / 4).clamp(1, DEFAULT_MAX_PER_ADDRESS)
    }

    /// The defaults for this process's current (soft) file limit.
    pub fn for_this_process() -> Limits {
        Limits::for_file_limit(file_limit())
    }
}

/// The soft limit on open files (`None`: unlimited).
pub fn file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Raises the soft limit on open files to the hard limit (a stock system gives 1,024 soft
/// and far more hard); the soft limit afterwards. A refusal leaves the limit as it was.
pub fn raise_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "cannot raise the open files limit");
        }
    }
    file_limit()
}

/// The key connections are counted under: the address, or its /64 for IPv6 (one host
/// usually holds a whole /64).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Open connections per address.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One counted connection; uncounted on drop.
struct AddressSlot {
    table: Arc<PerAddress>,
    key: IpAddr,
}

impl PerAddress {
    /// A slot for a connection from `ip`, or `None` if it has `max` already.
    fn take(table: &Arc<PerAddress>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let key = address_key(ip);
        let mut counts = table.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(key).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: table.clone(),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Serves `app` on `listener` (https if `tls` is given) within `limits` until `shutdown`
/// completes; then accepts nothing more and lets the requests in flight finish.
pub async fn run(
    app: axum::Router,
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_address = Arc::new(PerAddress::default());
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let limits = Arc::new(limits);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.map_err(|_| ServeError::Io(
                std::io::Error::other("the connection semaphore closed"),
            ))?,
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = PerAddress::take(&per_address, peer.ip(), limits.max_per_address) else {
            tracing::debug!(%peer, "too many connections from this address: closed");
            continue;
        };
        let (app, acceptor, limits) = (app.clone(), acceptor.clone(), limits.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _held = (permit, slot);
            match acceptor {
                None => connection(app, tcp, peer, Transport::Http, &limits, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.client_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            connection(app, tls, peer, Transport::Https, &limits, watcher).await
                        }
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "tls handshake failed"),
                        Err(_) => tracing::info!(%peer, "tls handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Serves one connection's requests until it closes, times out or the console shuts down.
async fn connection<IO>(
    app: axum::Router,
    io: IO,
    peer: SocketAddr,
    transport: Transport,
    limits: &Limits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let body_timeout = limits.client_timeout;
    let service = hyper::service::service_fn(move |mut req: axum::http::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(transport);
        let req = req.map(|body| axum::body::Body::new(TimeoutBody::new(body_timeout, body)));
        let mut app = app.clone();
        tower_service::Service::call(&mut app, req)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.client_timeout);
    let conn = http.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_stay_below_the_file_limit() {
        let l = Limits::for_file_limit(Some(1024));
        assert_eq!(l.max_connections, 480);
        assert_eq!(l.max_per_address, DEFAULT_MAX_PER_ADDRESS);
        assert!(2 * l.max_connections as u64 + RESERVED_FILES <= 1024);
        assert_eq!(Limits::for_file_limit(None).max_connections, 4096);
        assert_eq!(Limits::for_file_limit(Some(1 << 20)).max_connections, 4096);
        let tiny = Limits::for_file_limit(Some(10));
        assert_eq!((tiny.max_connections, tiny.max_per_address), (1, 1));
    }

    #[test]
    fn connections_are_counted_per_address_and_per_ipv6_prefix() {
        let table = Arc::new(PerAddress::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let one = PerAddress::take(&table, a, 2).unwrap();
        let two = PerAddress::take(&table, a, 2).unwrap();
        assert!(PerAddress::take(&table, a, 2).is_none());
        assert!(PerAddress::take(&table, b, 2).is_some());
        drop(one);
        let _three = PerAddress::take(&table, a, 2).unwrap();
        drop(two);
        // Two hosts of one /64 share a count; another /64 does not.
        let x: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        let y: IpAddr = "2001:db8:0:1::2".parse().unwrap();
        let z: IpAddr = "2001:db8:0:2::1".parse().unwrap();
        let _x = PerAddress::take(&table, x, 1).unwrap();
        assert!(PerAddress::take(&table, y, 1).is_none());
        assert!(PerAddress::take(&table, z, 1).is_some());
        // A mapped IPv4 address counts as that IPv4 address.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert!(PerAddress::take(&table, mapped, 1).is_none());
    }
}
