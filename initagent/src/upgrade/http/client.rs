//! One HTTP exchange over ureq: an agent configured from the [`RetryPolicy`] (timeouts, trust
//! anchors, the proxy the environment names for the URL), redirects followed here rather than
//! by ureq so that the downgrade rule and the bearer token's origin are checked at every hop, and
//! ureq's errors turned into [`HttpError`]s that say what failed.

use std::cell::{OnceCell, RefCell};
use std::io;
use std::sync::{Arc, Once};

use ureq::http::{HeaderMap, Request};
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
use ureq::{Agent, Body};

use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{ConnectProxyConnector, Connector, TcpConnector};

use super::clock_probe::{ProbeTls, ProbeVerifier};
use super::proxy::{proxy_for, Proxy, ProxyScheme};
use super::url::{parse_url, resolve, Url};
use super::{HttpError, Orderer, RetryPolicy, MAX_REDIRECTS};
use crate::upgrade::tls;

/// What to ask: a method, a range of the body (with an `If-Range` validator), a request body
/// with its content type.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ask<'a> {
    pub method: &'a str,
    pub range: Option<(u64, Option<&'a str>)>,
    pub body: Option<(&'a str, &'a [u8])>,
}

impl Ask<'_> {
    pub const GET: Ask<'static> = Ask {
        method: "GET",
        range: None,
        body: None,
    };
}

/// A response whose header has been read.
pub(super) struct Exchange {
    /// The URL that answered.
    pub url: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Body,
}

impl Exchange {
    /// A header's value (the first), when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Content-Length` (ureq has checked it: it delimits the body).
    pub fn content_length(&self) -> Option<u64> {
        self.body.content_length()
    }

    /// Whether the body is chunked: its end is marked, so a broken connection is seen.
    pub fn is_chunked(&self) -> bool {
        self.headers
            .get_all("transfer-encoding")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
    }

    pub fn status_error(self) -> HttpError {
        let reason = ureq::http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or_default();
        HttpError::Status {
            url: self.url,
            status: self.status,
            reason: reason.to_string(),
        }
    }
}

/// How one request goes out: straight or through a proxy, and whether it needs TLS (for the
/// server or for an https proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    proxy: Option<Proxy>,
    tls: bool,
}

/// The policy, a bearer token, and what several requests of one download share.
#[derive(Debug)]
pub(super) struct Client {
    pub policy: RetryPolicy,
    /// A bearer token and the origin it belongs to: sent only to that origin (a redirect to
    /// another server, or a resumption there, does not carry it).
    bearer: Option<(String, String)>,
    /// The trust anchors, loaded when a request first needs TLS (plain http never reads them).
    tls: OnceCell<TlsConfig>,
    /// An agent per route, so that reconnections reuse its TLS configuration.
    agents: RefCell<Vec<(Route, Agent)>>,
    /// For the clock probe only: certificates checked at their start, not now.
    probe: Option<Arc<ProbeVerifier>>,
}

impl Client {
    pub fn new(policy: RetryPolicy) -> Client {
        Client {
            policy,
            bearer: None,
            tls: OnceCell::new(),
            agents: RefCell::new(Vec::new()),
            probe: None,
        }
    }

    /// A client for [`super::server_time`]: https servers are verified by a [`ProbeVerifier`].
    pub fn for_clock_probe(
        policy: RetryPolicy,
        url: &str,
    ) -> Result<(Client, Arc<ProbeVerifier>), HttpError> {
        // The console's own CA when the site names one: a certificate some public CA once
        // issued for the console's name must not be able to move this machine's clock.
        let anchors = match policy.ca_files.is_empty() {
            true => tls::trust_anchors(&policy.ca_files),
            false => tls::file_anchors(&policy.ca_files),
        }
        .map_err(|source| HttpError::Ca {
            url: url.to_string(),
            source,
        })?;
        let verifier = ProbeVerifier::new(&anchors).map_err(|e| HttpError::Request {
            url: url.to_string(),
            why: format!("cannot set up TLS: {e}"),
        })?;
        let mut client = Client::new(policy);
        client.probe = Some(verifier.clone());
        Ok((client, verifier))
    }

    /// `Authorization: Bearer <token>` for requests to `url`'s origin.
    pub fn with_bearer(mut self, url: &str, token: &str) -> Result<Client, HttpError> {
        self.bearer = Some((parse_url(url)?.origin(), token.to_string()));
        Ok(self)
    }

    fn bearer_for(&self, url: &Url) -> Option<&str> {
        let (origin, token) = self.bearer.as_ref()?;
        (*origin == url.origin()).then_some(token.as_str())
    }

    /// One request, no redirect followed.
    pub fn send(&self, url: &str, ask: Ask) -> Result<Exchange, HttpError> {
        let parsed = parse_url(url)?;
        let proxy =
            proxy_for(&parsed, &self.policy.proxies).map_err(|source| HttpError::Proxy {
                url: url.to_string(),
                source,
            })?;
        let route = Route {
            tls: parsed.https
                || proxy
                    .as_ref()
                    .is_some_and(|p| p.scheme == ProxyScheme::Https),
            proxy,
        };
        let agent = self.agent(url, &route)?;
        let mut request = Request::builder()
            .method(ask.method)
            .uri(parsed.to_request_url())
            // One request per connection, as a download's reconnections need no pool.
            .header("connection", "close");
        if let Some(token) = self.bearer_for(&parsed) {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some((offset, validator)) = ask.range {
            request = request.header("range", format!("bytes={offset}-"));
            if let Some(v) = validator {
                request = request.header("if-range", v);
            }
        }
        let unsendable = |e: ureq::http::Error| HttpError::Request {
            url: url.to_string(),
            why: e.to_string(),
        };
        let result = match ask.body {
            Some((content_type, body)) => {
                let request = request.header("content-type", content_type);
                agent.run(request.body(body).map_err(unsendable)?)
            }
            None => agent.run(request.body(()).map_err(unsendable)?),
        };
        let response = result.map_err(|e| classify(url, &parsed, &route, &self.policy, e))?;
        let (parts, body) = response.into_parts();
        Ok(Exchange {
            url: url.to_string(),
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// [`Client::send`] of a `GET`, following up to [`MAX_REDIRECTS`] redirects (never from
    /// https to http); the answer carries the URL that gave it.
    pub fn get(
        &self,
        url: &str,
        range: Option<(u64, Option<&str>)>,
    ) -> Result<Exchange, HttpError> {
        let mut url = url.to_string();
        let origin = parse_url(&url)?.origin();
        let ask = Ask { range, ..Ask::GET };
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send(&url, ask)?;
            if !matches!(response.status, 301 | 302 | 303 | 307 | 308) {
                return Ok(response);
            }
            let location = response
                .header("location")
                .ok_or_else(|| HttpError::Malformed {
                    url: url.clone(),
                    why: format!("a {} without location", response.status),
                })?;
            let next = match resolve(&url, location) {
                Ok(next) => next,
                Err(_) if self.policy.orderer == Orderer::Console => {
                    warn!("the console redirected to {}", super::for_log(location));
                    return Err(HttpError::OffOrigin { url });
                }
                Err(e) => return Err(e),
            };
            if self.policy.orderer == Orderer::Console && parse_url(&next)?.origin() != origin {
                warn!("the console redirected to {}", super::for_log(location));
                return Err(HttpError::OffOrigin { url });
            }
            url = next;
        }
        Err(HttpError::TooManyRedirects { url })
    }

    /// The agent for `route` (made on first use).
    fn agent(&self, url: &str, route: &Route) -> Result<Agent, HttpError> {
        if let Some((_, agent)) = self.agents.borrow().iter().find(|(r, _)| r == route) {
            return Ok(agent.clone());
        }
        let tls = match route.tls {
            true => self.tls_config(url)?,
            false => TlsConfig::default(),
        };
        let proxy = route
            .proxy
            .as_ref()
            .map(ureq_proxy)
            .transpose()
            .map_err(|e| HttpError::Request {
                url: url.to_string(),
                why: format!("ureq refuses the proxy: {e}"),
            })?;
        let policy = &self.policy;
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            // Set even when `None`: ureq would otherwise read the environment itself, with
            // rules of its own.
            .proxy(proxy)
            .timeout_connect(Some(policy.connect_timeout))
            // Silence, not a total: a long download stays alive while bytes keep coming.
            .timeout_per_read(Some(policy.read_timeout))
            .timeout_per_write(Some(policy.read_timeout))
            .user_agent(format!("p6os-agent/{}", crate::cli::VERSION))
            // Ranges are asked of the file itself, never of a compressed form of it.
            .accept_encoding("identity")
            .max_idle_connections(0)
            .tls_config(tls)
            .build();
        let agent = match (&self.probe, route.tls) {
            (Some(verifier), true) => {
                let tls = ProbeTls::new(verifier.clone()).map_err(|e| HttpError::Request {
                    url: url.to_string(),
                    why: format!("cannot set up TLS: {e}"),
                })?;
                let connector =
                    ().chain(ConnectProxyConnector::default())
                        .chain(TcpConnector::default())
                        .chain(tls);
                Agent::with_parts(config, connector, DefaultResolver::default())
            }
            _ => Agent::new_with_config(config),
        };
        self.agents
            .borrow_mut()
            .push((route.clone(), agent.clone()));
        Ok(agent)
    }

    fn tls_config(&self, url: &str) -> Result<TlsConfig, HttpError> {
        if let Some(config) = self.tls.get() {
            return Ok(config.clone());
        }
        let anchors =
            tls::trust_anchors(&self.policy.ca_files).map_err(|source| HttpError::Ca {
                url: url.to_string(),
                source,
            })?;
        let anchors: Vec<Certificate<'static>> = anchors
            .iter()
            .map(|der| Certificate::from_der(der).to_owned())
            .collect();
        ring_as_default_provider();
        let config = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::Specific(Arc::new(anchors)))
            .build();
        Ok(self.tls.get_or_init(|| config).clone())
    }
}

/// ureq is built without a crypto provider of its own (its "rustls" feature would also compile
/// in webpki-roots' anchors, unused here): ring becomes the process's default, once.
fn ring_as_default_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err: a provider is already the default (the agent installs no other one).
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn ureq_proxy(proxy: &Proxy) -> Result<ureq::Proxy, ureq::Error> {
    let protocol = match proxy.scheme {
        ProxyScheme::Http => ureq::ProxyProtocol::Http,
        ProxyScheme::Https => ureq::ProxyProtocol::Https,
    };
    let host = match proxy.host.contains(':') {
        true => format!("[{}]", proxy.host),
        false => proxy.host.clone(),
    };
    let mut builder = ureq::Proxy::builder(protocol).host(&host).port(proxy.port);
    if let Some((user, password)) = &proxy.credentials {
        builder = builder.username(user).password(password);
    }
    builder.build()
}

/// ureq's "proxy server responded 403/403" as "it answered 403 Forbidden"; other texts as
/// they are.
fn proxy_answer(why: &str) -> String {
    let status = why
        .strip_prefix("proxy server responded ")
        .and_then(|rest| rest.split('/').next())
        .and_then(|code| ureq::http::StatusCode::from_bytes(code.as_bytes()).ok());
    match status {
        Some(status) => format!(
            "it answered {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default()
        )
        .trim_end()
        .to_string(),
        None => why.to_string(),
    }
}

/// What ureq's error before a response means, said in the agent's words.
fn classify(
    url: &str,
    parsed: &Url,
    route: &Route,
    policy: &RetryPolicy,
    error: ureq::Error,
) -> HttpError {
    let url = url.to_string();
    // The TCP connection goes to the proxy when there is one: name what could not be reached.
    let reached = match &route.proxy {
        Some(proxy) => proxy.to_string(),
        None => parsed.address(),
    };
    let io_error = |kind, text: String| io::Error::new(kind, text);
    match error {
        ureq::Error::Io(e) => {
            let rustls_error = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
            match rustls_error {
                Some(rustls::Error::InvalidCertificate(why)) => HttpError::Certificate {
                    url,
                    why: tls::certificate_problem(why),
                    dates: tls::certificate_dates(why),
                },
                Some(_) => HttpError::Tls {
                    url,
                    addr: parsed.address(),
                    source: tls::HandshakeFailed(e),
                },
                None => match e.kind() {
                    io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::AddrNotAvailable => HttpError::Connect {
                        url,
                        addr: reached,
                        source: e,
                    },
                    io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted => HttpError::Io {
                        url,
                        source: io_error(
                            e.kind(),
                            "the connection closed before the end of the response header".into(),
                        ),
                    },
                    _ => HttpError::Io { url, source: e },
                },
            }
        }
        ureq::Error::Timeout(ureq::Timeout::Connect) => HttpError::Connect {
            url,
            addr: reached,
            source: io_error(
                io::ErrorKind::TimedOut,
                format!(
                    "no connection within {} s",
                    policy.connect_timeout.as_secs_f64()
                ),
            ),
        },
        ureq::Error::Timeout(_) => HttpError::Io {
            url,
            source: io_error(
                io::ErrorKind::TimedOut,
                format!("no answer within {} s", policy.read_timeout.as_secs_f64()),
            ),
        },
        ureq::Error::HostNotFound => HttpError::Connect {
            url,
            addr: reached,
            source: io_error(io::ErrorKind::NotFound, "the name does not resolve".into()),
        },
        ureq::Error::ConnectProxyFailed(why) => HttpError::ProxyRefused {
            url,
            proxy: route
                .proxy
                .as_ref()
                .map(Proxy::to_string)
                .unwrap_or_default(),
            why: proxy_answer(&why),
        },
        ureq::Error::Rustls(e) => HttpError::Tls {
            url,
            addr: parsed.address(),
            source: tls::HandshakeFailed(io::Error::other(e)),
        },
        ureq::Error::Tls(why) => HttpError::Tls {
            url,
            addr: parsed.address(),
            source: tls::HandshakeFailed(io::Error::other(why)),
        },
        ureq::Error::LargeResponseHeader(_, limit) => HttpError::Malformed {
            url,
            why: format!("the response header is larger than {} KiB", limit / 1024),
        },
        ureq::Error::Protocol(e) => HttpError::Malformed {
            url,
            why: e.to_string(),
        },
        other => HttpError::Io {
            url,
            source: io::Error::other(other.to_string()),
        },
    }
}
