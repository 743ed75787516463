//! `p6os-agent upgrade http(s)://host[:port]/path/bundle.p6b`: the bundle straight from a web
//! server, as a [`Read`] that hides broken connections.
//!
//! [`HttpSource::open`] sends one HTTP/1.1 `GET` over a std `TcpStream`, through TLS for
//! `https://` ([`super::tls`]: rustls, Mozilla's roots, the system bundle and the CA files of
//! [`RetryPolicy::ca_files`]), and hands out the body. When the connection breaks, stays silent
//! past the read timeout, or ends before `Content-Length` bytes, the next `read` reconnects (a new
//! handshake for https) with `Range: bytes=<offset>-` and carries on where it stopped, so a
//! consumer in the middle of a zstd frame never notices. A server without range support answers
//! 200 and the first `offset` bytes of that body are skipped.
//!
//! A bundle replaced on the server mid-download is not spliced onto the old one's beginning: the
//! resumed request carries `If-Range` with the first response's strong `ETag` (or else its
//! `Last-Modified`), and a different validator or size in the answer is an error, "the file
//! changed on the server while downloading".
//!
//! Redirects may go from http to https and between https URLs; from https to plain http they are
//! refused (a downgrade). TLS protects the transfer; the bundle's signature and hashes, not the
//! transport, protect its content.
//!
//! Limitations: the response must carry a `Content-Length` (chunked transfer encoding is
//! refused); no proxies, no credentials in the URL, no client certificates. A server that sends
//! neither `ETag` nor `Last-Modified` is only checked for the same size on resumption.

use std::cell::OnceCell;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use super::tls::{self, HandshakeError, TlsStream};
use crate::log::error_chain;

/// Redirects followed per request (the sixth is an error).
const MAX_REDIRECTS: usize = 5;
/// Largest response header accepted.
const MAX_HEAD: u64 = 64 << 10;

/// How hard [`HttpSource`] tries to finish a download, and whom it trusts over https.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Reconnections allowed over the whole download; every attempt counts, failed ones too.
    pub max_resumes: u32,
    /// Wait before the first reconnection; doubles after each attempt that brought no byte.
    pub backoff_first: Duration,
    /// Longest wait between reconnections.
    pub backoff_max: Duration,
    /// Limit for establishing each TCP connection (must not be zero).
    pub connect_timeout: Duration,
    /// Longest silence on an open connection before it counts as broken (must not be zero).
    pub read_timeout: Duration,
    /// PEM files of certificate authorities trusted for https besides Mozilla's roots and
    /// `/etc/ssl/certs/ca-certificates.crt`; each must hold at least one valid certificate.
    pub ca_files: Vec<PathBuf>,
}

impl Default for RetryPolicy {
    /// 8 reconnections, waiting 0.5 s doubling to 8 s; 10 s to connect, 30 s of silence; no
    /// extra CA file.
    fn default() -> Self {
        RetryPolicy {
            max_resumes: 8,
            backoff_first: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            ca_files: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// The wait before a reconnection that follows `failures` fruitless attempts.
    fn backoff(&self, failures: u32) -> Duration {
        self.backoff_first
            .saturating_mul(1 << failures.min(20))
            .min(self.backoff_max)
    }
}

/// Why a download could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid url {url:?}: {why}")]
    BadUrl { url: String, why: &'static str },
    #[error("{url}: cannot connect to {addr}")]
    Connect {
        url: String,
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("{url}: cannot load the trusted certificates")]
    Ca {
        url: String,
        #[source]
        source: tls::CaError,
    },
    #[error("{url}: the server's certificate is refused: {why}")]
    Certificate { url: String, why: String },
    #[error("{url}: no TLS session with {addr}")]
    Tls {
        url: String,
        addr: String,
        #[source]
        source: HandshakeError,
    },
    #[error("{url}: the connection failed")]
    Io {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("{url}: invalid http response: {why}")]
    Malformed { url: String, why: String },
    #[error("{url}: the server answered {status} {reason}")]
    Status {
        url: String,
        status: u16,
        reason: String,
    },
    #[error("{url}: the response has no content-length (the server must send the file's size)")]
    NoLength { url: String },
    #[error("{url}: transfer-encoding {encoding:?} is not supported: the server must send a content-length")]
    Chunked { url: String, encoding: String },
    #[error("{url}: more than 5 redirects")]
    TooManyRedirects { url: String },
    #[error("{url}: redirected to {location}: a redirect from https to plain http is refused")]
    Downgrade { url: String, location: String },
    #[error("{url}: the file changed on the server while downloading ({why})")]
    Changed { url: String, why: String },
    #[error("{url}: download abandoned after {resumes} reconnections: received {received} of {total} bytes; last error: {last}")]
    GaveUp {
        url: String,
        received: u64,
        total: u64,
        resumes: u32,
        last: String,
    },
}

/// An `http(s)://host[:port][/path][?query]` URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    /// A name or an address (IPv6 without its brackets).
    pub host: String,
    /// 80, or 443 for https, when the URL names none.
    pub port: u16,
    /// The request target: `/` when empty, query kept, fragment dropped.
    pub target: String,
}

impl Url {
    /// `http(s)://host[:port]`, the port only when it is not the scheme's.
    fn origin(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!(
            "{scheme}://{}",
            authority(&self.host, self.port, self.https)
        )
    }
}

/// Splits an `http://` or `https://` URL (see [`Url`]).
pub fn parse_url(url: &str) -> Result<Url, HttpError> {
    let bad = |why| HttpError::BadUrl {
        url: url.to_string(),
        why,
    };
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let (https, rest) = if lower.starts_with("https://") {
        (true, &url[8..])
    } else if lower.starts_with("http://") {
        (false, &url[7..])
    } else {
        return Err(bad("expected http(s)://host[:port]/path"));
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let (authority, target) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let target = match target.chars().next() {
        None => "/".to_string(),
        Some('?') => format!("/{target}"),
        Some(_) => target.to_string(),
    };
    if rest.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err(bad("spaces and control characters must be percent-encoded"));
    }
    if authority.contains('@') {
        return Err(bad("credentials in the url are not supported"));
    }
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| bad("unclosed [ in the host"))?;
        if !after.is_empty() && !after.starts_with(':') {
            return Err(bad("unexpected text after the ipv6 address"));
        }
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("invalid ipv6 address"));
        }
        (host, after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        None | Some("") if https => 443,
        None | Some("") => 80,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(bad("the port must be 1 to 65535")),
        },
        Some(_) => return Err(bad("the port must be a number")),
    };
    Ok(Url {
        https,
        host: host.to_string(),
        port,
        target,
    })
}

/// `host:port` as written in a URL and a `Host` header (`[..]` around IPv6, the scheme's port
/// implied).
fn authority(host: &str, port: u16, https: bool) -> String {
    match (port, https) {
        (80, false) | (443, true) => bracketed(host),
        _ => address(host, port),
    }
}

/// `host:port`, with `[..]` around an IPv6 address.
fn address(host: &str, port: u16) -> String {
    format!("{}:{port}", bracketed(host))
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// A connection to a server, plain or through TLS.
#[derive(Debug)]
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// The policy, and the TLS configuration once an https URL has needed it (loaded once per
/// download: reconnections reuse it, and its session cache).
#[derive(Debug)]
struct Connector {
    policy: RetryPolicy,
    tls: OnceCell<Arc<ClientConfig>>,
    /// A bearer token and the origin it belongs to: sent only to that origin (a redirect to
    /// another server does not carry it).
    bearer: Option<(String, String)>,
}

impl Connector {
    fn new(policy: RetryPolicy) -> Connector {
        Connector {
            policy,
            tls: OnceCell::new(),
            bearer: None,
        }
    }

    /// `Authorization: Bearer <token>` for requests to `url`'s origin.
    fn with_bearer(mut self, url: &str, token: &str) -> Result<Connector, HttpError> {
        self.bearer = Some((parse_url(url)?.origin(), token.to_string()));
        Ok(self)
    }

    fn bearer_for(&self, url: &Url) -> Option<&str> {
        let (origin, token) = self.bearer.as_ref()?;
        (*origin == url.origin()).then_some(token.as_str())
    }

    fn tls_config(&self) -> Result<Arc<ClientConfig>, tls::CaError> {
        if let Some(config) = self.tls.get() {
            return Ok(config.clone());
        }
        let config = tls::client_config(&self.policy.ca_files)?;
        Ok(self.tls.get_or_init(|| config).clone())
    }
}

/// An HTTP response whose header has been read; `body` is positioned at the body.
struct Response {
    url: String,
    status: u16,
    reason: String,
    /// Names in lower case.
    headers: Vec<(String, String)>,
    body: BufReader<Conn>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        let mut all = self.headers.iter().filter(|(n, _)| n == name);
        all.next().map(|(_, v)| v.as_str())
    }

    /// The `Content-Length`, refusing chunked (or any other) transfer encoding.
    fn content_length(&self) -> Result<Option<u64>, HttpError> {
        if let Some(te) = self.header("transfer-encoding") {
            if !te.eq_ignore_ascii_case("identity") {
                return Err(HttpError::Chunked {
                    url: self.url.clone(),
                    encoding: te.to_string(),
                });
            }
        }
        let mut length = None;
        let values = self.headers.iter().filter(|(n, _)| n == "content-length");
        for value in values.flat_map(|(_, v)| v.split(',')).map(str::trim) {
            let n = Some(value)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (n, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(l)) if n == l => {}
                _ => return Err(malformed(&self.url, format!("content-length {value:?}"))),
            }
        }
        Ok(length)
    }

    fn status_error(self) -> HttpError {
        HttpError::Status {
            url: self.url,
            status: self.status,
            reason: self.reason,
        }
    }
}

fn malformed(url: &str, why: impl Into<String>) -> HttpError {
    HttpError::Malformed {
        url: url.to_string(),
        why: why.into(),
    }
}

/// What to ask: a method, a range of the body (with an `If-Range` validator), a request body
/// with its content type.
#[derive(Debug, Clone, Copy)]
struct Ask<'a> {
    method: &'a str,
    range: Option<(u64, Option<&'a str>)>,
    body: Option<(&'a str, &'a [u8])>,
}

impl Ask<'_> {
    const GET: Ask<'static> = Ask {
        method: "GET",
        range: None,
        body: None,
    };
}

/// One request on a fresh connection.
fn request(url: &str, ask: Ask, connector: &Connector) -> Result<Response, HttpError> {
    let policy = &connector.policy;
    let parsed = parse_url(url)?;
    let bearer = connector.bearer_for(&parsed);
    let Url {
        https,
        host,
        port,
        target,
    } = parsed;
    let host_header = authority(&host, port, https);
    let addr = address(&host, port);
    let io_err = |source| HttpError::Io {
        url: url.to_string(),
        source,
    };
    let connect_err = |source| HttpError::Connect {
        url: url.to_string(),
        addr: addr.clone(),
        source,
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for addr in (host.as_str(), port)
        .to_socket_addrs()
        .map_err(connect_err)?
    {
        match TcpStream::connect_timeout(&addr, policy.connect_timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let stream = stream.ok_or_else(|| connect_err(last))?;
    stream
        .set_read_timeout(Some(policy.read_timeout))
        .map_err(io_err)?;
    stream
        .set_write_timeout(Some(policy.read_timeout))
        .map_err(io_err)?;
    let mut stream = if https {
        let config = connector.tls_config().map_err(|source| HttpError::Ca {
            url: url.to_string(),
            source,
        })?;
        let tls = tls::connect(config, &host, stream).map_err(|e| match e {
            HandshakeError::Certificate(why) => HttpError::Certificate {
                url: url.to_string(),
                why,
            },
            source => HttpError::Tls {
                url: url.to_string(),
                addr: addr.clone(),
                source,
            },
        })?;
        Conn::Tls(Box::new(tls))
    } else {
        Conn::Plain(stream)
    };
    let mut head = format!(
        "{} {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: p6os-agent/{}\r\n\
         Accept-Encoding: identity\r\nConnection: close\r\n",
        ask.method,
        crate::cli::VERSION
    );
    if let Some(token) = bearer {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some((content_type, body)) = ask.body {
        head.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    if let Some((offset, validator)) = ask.range {
        head.push_str(&format!("Range: bytes={offset}-\r\n"));
        if let Some(v) = validator {
            head.push_str(&format!("If-Range: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(io_err)?;
    if let Some((_, body)) = ask.body {
        stream.write_all(body).map_err(io_err)?;
    }
    stream.flush().map_err(io_err)?;

    let mut body = BufReader::new(stream);
    let mut lines = Vec::new();
    let mut budget = MAX_HEAD;
    loop {
        let mut line = Vec::new();
        let n = (&mut body)
            .take(budget)
            .read_until(b'\n', &mut line)
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io_err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {} s", policy.read_timeout.as_secs_f64()),
                )),
                _ => io_err(e),
            })?;
        budget -= n as u64;
        if !line.ends_with(b"\n") {
            return Err(match budget {
                0 => malformed(url, "the header is larger than 64 KiB"),
                _ => io_err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed before the end of the response header",
                )),
            });
        }
        let line = String::from_utf8_lossy(&line).trim_end().to_string();
        match (line.is_empty(), lines.is_empty()) {
            (true, true) => continue,
            (true, false) => break,
            _ => lines.push(line),
        }
    }
    let mut status_line = lines[0].splitn(3, ' ');
    let version = status_line.next().unwrap_or_default();
    let code = status_line.next().unwrap_or_default();
    let status = Some(code)
        .filter(|c| version.starts_with("HTTP/1.") && c.len() == 3)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| malformed(url, format!("status line {:?}", lines[0])))?;
    let mut headers = Vec::new();
    for line in &lines[1..] {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| malformed(url, format!("header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(Response {
        url: url.to_string(),
        status,
        reason: status_line.next().unwrap_or_default().to_string(),
        headers,
        body,
    })
}

/// Where a `Location` header sends a request for `base`; https to http is refused.
fn resolve(base: &str, location: &str) -> Result<String, HttpError> {
    let base_url = parse_url(base)?;
    let origin = base_url.origin();
    // An absolute URL starts with a scheme (RFC 3986: a letter, then letters, digits, `+-.`).
    let scheme = location.split_once(':').map(|(scheme, _)| scheme);
    let absolute = scheme.is_some_and(|s| {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    let url = if absolute {
        location.to_string()
    } else if location.starts_with("//") {
        let scheme = if base_url.https { "https" } else { "http" };
        format!("{scheme}:{location}")
    } else if location.starts_with('/') {
        format!("{origin}{location}")
    } else {
        let dir = base_url.target.split('?').next().unwrap_or_default();
        let dir = &dir[..dir.rfind('/').map_or(0, |i| i + 1)];
        format!("{origin}{dir}{location}")
    };
    let to = parse_url(&url)?;
    if base_url.https && !to.https {
        return Err(HttpError::Downgrade {
            url: base.to_string(),
            location: url,
        });
    }
    Ok(url)
}

/// [`request`], following redirects; the response carries the URL that answered.
fn get(
    url: &str,
    range: Option<(u64, Option<&str>)>,
    connector: &Connector,
) -> Result<Response, HttpError> {
    let mut url = url.to_string();
    let ask = Ask { range, ..Ask::GET };
    for _ in 0..=MAX_REDIRECTS {
        let response = request(&url, ask, connector)?;
        if !matches!(response.status, 301 | 302 | 303 | 307 | 308) {
            return Ok(response);
        }
        let location = response
            .header("location")
            .ok_or_else(|| malformed(&url, format!("a {} without location", response.status)))?;
        url = resolve(&url, location)?;
    }
    Err(HttpError::TooManyRedirects { url })
}

/// `bytes <start>-<end>/<total>`.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (range, total) = value.strip_prefix("bytes ")?.trim().split_once('/')?;
    let (start, end) = range.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?, total.parse().ok()?))
}

/// Largest API response body read by [`call`].
const MAX_API_BODY: u64 = 1 << 20;

/// One API request: `method url` with an optional JSON body and bearer token, no redirects,
/// no retries (the caller's loop decides). Returns the status and the body (at most 1 MiB).
pub fn call(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    json: Option<&[u8]>,
    policy: RetryPolicy,
) -> Result<(u16, Vec<u8>), HttpError> {
    let mut connector = Connector::new(policy);
    if let Some(token) = bearer {
        connector = connector.with_bearer(url, token)?;
    }
    let ask = Ask {
        method,
        range: None,
        body: json.map(|b| ("application/json", b)),
    };
    let response = request(url, ask, &connector)?;
    let length = response.content_length()?;
    let status = response.status;
    let url = response.url;
    let mut body = Vec::new();
    let limit = length.unwrap_or(MAX_API_BODY + 1).min(MAX_API_BODY + 1);
    response
        .body
        .take(limit)
        .read_to_end(&mut body)
        .map_err(|source| HttpError::Io {
            url: url.clone(),
            source,
        })?;
    if body.len() as u64 > MAX_API_BODY {
        return Err(malformed(&url, "the response body is larger than 1 MiB"));
    }
    if length.is_some_and(|l| l != body.len() as u64) {
        return Err(HttpError::Io {
            url,
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed before the end of the response body",
            ),
        });
    }
    Ok((status, body))
}

/// A bundle being downloaded over HTTP or HTTPS, resumed transparently (see the module's doc).
#[derive(Debug)]
pub struct HttpSource {
    /// After redirects: resumptions start there.
    url: String,
    connector: Connector,
    body: Option<BufReader<Conn>>,
    len: u64,
    pos: u64,
    etag: Option<String>,
    last_modified: Option<String>,
    resumes: u32,
    /// Reconnections since the last byte received (for the backoff).
    failures: u32,
    /// A final error, repeated by every later `read`.
    failed: Option<(io::ErrorKind, String)>,
}

impl HttpSource {
    /// Connects (with a TLS handshake for https, the server's certificate checked against the
    /// trust anchors and its name), sends `GET`, follows up to 5 redirects (never from https to
    /// http) and checks for a 200 with a `Content-Length` (chunked encoding is refused). Fails at
    /// once on any error: retries only happen once the download has started.
    pub fn open(url: &str, policy: RetryPolicy) -> Result<HttpSource, HttpError> {
        HttpSource::open_with(url, Connector::new(policy))
    }

    /// [`HttpSource::open`] sending `Authorization: Bearer <token>` to `url`'s origin (and to
    /// no other server a redirect may lead to).
    pub fn open_with_bearer(
        url: &str,
        policy: RetryPolicy,
        token: &str,
    ) -> Result<HttpSource, HttpError> {
        HttpSource::open_with(url, Connector::new(policy).with_bearer(url, token)?)
    }

    fn open_with(url: &str, connector: Connector) -> Result<HttpSource, HttpError> {
        let response = get(url, None, &connector)?;
        if response.status != 200 {
            return Err(response.status_error());
        }
        let len = response
            .content_length()?
            .ok_or_else(|| HttpError::NoLength {
                url: response.url.clone(),
            })?;
        Ok(HttpSource {
            etag: response.header("etag").map(str::to_string),
            last_modified: response.header("last-modified").map(str::to_string),
            url: response.url,
            connector,
            body: Some(response.body),
            len,
            pos: 0,
            resumes: 0,
            failures: 0,
            failed: None,
        })
    }

    /// The size of the file, in bytes.
    #[allow(clippy::len_without_is_empty)] // a download, never empty when open
    pub fn len(&self) -> u64 {
        self.len
    }

    /// How many times the download reconnected (attempts that failed included).
    pub fn resumes(&self) -> u32 {
        self.resumes
    }

    /// A connection whose body starts at `self.pos` of the same file.
    fn reconnect(&self) -> Result<BufReader<Conn>, HttpError> {
        let strong_etag = self.etag.as_deref().filter(|e| !e.starts_with("W/"));
        let validator = strong_etag.or(self.last_modified.as_deref());
        let mut response = get(&self.url, Some((self.pos, validator)), &self.connector)?;
        let changed = |why: String| HttpError::Changed {
            url: response.url.clone(),
            why,
        };
        let (name, ours) = match &self.etag {
            Some(etag) => ("etag", Some(etag)),
            None => ("last-modified", self.last_modified.as_ref()),
        };
        match (ours, response.header(name)) {
            (Some(ours), Some(theirs)) if ours != theirs => {
                return Err(changed(format!("its {name} went from {ours} to {theirs}")));
            }
            (Some(_), None) if response.status == 200 => {
                return Err(changed(format!("it has no {name} any more")));
            }
            _ => {}
        }
        let length = response.content_length()?;
        match response.status {
            206 => {
                let range = response.header("content-range").unwrap_or_default();
                let (start, end, total) = parse_content_range(range).ok_or_else(|| {
                    malformed(&response.url, format!("206 with content-range {range:?}"))
                })?;
                if total != self.len {
                    return Err(changed(format!(
                        "its size went from {} to {total} bytes",
                        self.len
                    )));
                }
                if start != self.pos
                    || end.checked_add(1) != Some(self.len)
                    || length.is_some_and(|l| l != self.len - self.pos)
                {
                    let why = format!("asked for bytes {}- and got {range:?}", self.pos);
                    return Err(malformed(&response.url, why));
                }
                Ok(response.body)
            }
            200 => {
                let length = length.ok_or_else(|| HttpError::NoLength {
                    url: response.url.clone(),
                })?;
                if length != self.len {
                    return Err(changed(format!(
                        "its size went from {} to {length} bytes",
                        self.len
                    )));
                }
                let skip = &mut (&mut response.body).take(self.pos);
                let skipped = io::copy(skip, &mut io::sink()).map_err(|source| HttpError::Io {
                    url: response.url.clone(),
                    source,
                })?;
                if skipped != self.pos {
                    return Err(HttpError::Io {
                        url: response.url.clone(),
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "the connection closed at byte {skipped}, skipping to byte {}",
                                self.pos
                            ),
                        ),
                    });
                }
                Ok(response.body)
            }
            _ => Err(response.status_error()),
        }
    }

    /// Remembers a final error and returns it.
    fn fail(&mut self, kind: io::ErrorKind, error: HttpError) -> io::Error {
        self.body = None;
        self.failed = Some((kind, error_chain(&error)));
        io::Error::new(kind, error)
    }
}

impl Read for HttpSource {
    /// Reads the next bytes, reconnecting (with `Range` from the current offset) as often as the
    /// policy allows when the connection breaks or ends early.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((kind, message)) = &self.failed {
            return Err(io::Error::new(*kind, message.clone()));
        }
        if buf.is_empty() || self.pos == self.len {
            return Ok(0);
        }
        let mut last = String::new();
        loop {
            if let Some(body) = &mut self.body {
                let want = (self.len - self.pos).min(buf.len() as u64) as usize;
                match body.read(&mut buf[..want]) {
                    Ok(0) => {
                        last = format!("the connection closed at byte {} of {}", self.pos, self.len)
                    }
                    Ok(n) => {
                        self.pos += n as u64;
                        self.failures = 0;
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        let silence = self.connector.policy.read_timeout;
                        last = format!(
                            "no data for {silence:?} at byte {} of {}",
                            self.pos, self.len
                        )
                    }
                    Err(e) => last = format!("at byte {} of {}: {e}", self.pos, self.len),
                }
                self.body = None;
            }
            if self.resumes >= self.connector.policy.max_resumes {
                let error = HttpError::GaveUp {
                    url: self.url.clone(),
                    received: self.pos,
                    total: self.len,
                    resumes: self.resumes,
                    last,
                };
                return Err(self.fail(io::ErrorKind::Other, error));
            }
            std::thread::sleep(self.connector.policy.backoff(self.failures));
            self.resumes += 1;
            self.failures += 1;
            match self.reconnect() {
                Ok(body) => self.body = Some(body),
                Err(e @ HttpError::Changed { .. }) => {
                    return Err(self.fail(io::ErrorKind::InvalidData, e))
                }
                Err(e) => last = error_chain(&e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::tls::testpki::{self, Pki};
    use rustls::{ServerConnection, StreamOwned};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::thread;

    const LEN: usize = 3 << 20;
    const KIB: usize = 1024;

    fn body() -> &'static [u8] {
        static BODY: OnceLock<Vec<u8>> = OnceLock::new();
        BODY.get_or_init(|| {
            (0..LEN as u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 ^ (i >> 12) as u8)
                .collect()
        })
    }

    /// How the test server misbehaves.
    #[derive(Clone, Default)]
    struct Behaviour {
        /// The i-th body response ends at this absolute offset (then the connection closes).
        drop_at: Vec<usize>,
        /// Stay silent (connection open) after a drop point instead of closing.
        stall: bool,
        /// Always 200 from the start, no `Accept-Ranges`.
        no_ranges: bool,
        /// Body responses after the first carry another ETag.
        etag_changes: bool,
        /// Serve the range even when `If-Range` does not match.
        ignore_if_range: bool,
        /// Close the listener after this many connections.
        connections: Option<usize>,
        /// Serve https with this CA's server certificate (else plain http).
        tls: Option<&'static Pki>,
        /// Where `/moved` redirects to.
        moved_to: Option<String>,
    }

    /// The schemes every behaviour is tested with: plain http, and https with the shared CA.
    fn schemes() -> [Option<&'static Pki>; 2] {
        [None, Some(testpki::shared())]
    }

    struct Server {
        base: String,
        bodies: Arc<AtomicUsize>,
        heads: Arc<Mutex<Vec<String>>>,
        /// The CA of an https server, as a PEM file.
        ca: Option<tempfile::NamedTempFile>,
    }

    impl Server {
        /// [`quick`], trusting the server's CA.
        fn quick(&self, max_resumes: u32) -> RetryPolicy {
            RetryPolicy {
                ca_files: self.ca.iter().map(|f| f.path().to_path_buf()).collect(),
                ..quick(max_resumes)
            }
        }
    }

    /// Serves `/bundle.p6b` (the 3 MiB body), `/missing` (404), `/redirect/<n>` (n hops, then
    /// the bundle), `/moved` (to `moved_to`) and `/downgrade` (to this server's bundle over
    /// plain http) on 127.0.0.1, through TLS when `behaviour.tls` says so.
    fn serve(behaviour: Behaviour) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (b, h) = (bodies.clone(), heads.clone());
        let scheme = if behaviour.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let base = format!("{scheme}://127.0.0.1:{port}");
        let ca = behaviour.tls.map(|pki| {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            file.write_all(pki.ca_pem.as_bytes()).unwrap();
            file
        });
        let server_base = base.clone();
        thread::spawn(move || {
            for (i, stream) in listener.incoming().enumerate() {
                if let Ok(stream) = stream {
                    let (behaviour, b, h) = (behaviour.clone(), b.clone(), h.clone());
                    let base = server_base.clone();
                    thread::spawn(move || match behaviour.tls {
                        None => handle(stream, &base, &behaviour, &b, &h),
                        Some(pki) => {
                            let conn = ServerConnection::new(pki.server.clone()).unwrap();
                            let stream = StreamOwned::new(conn, stream);
                            handle(stream, &base, &behaviour, &b, &h)
                        }
                    });
                }
                if behaviour.connections == Some(i + 1) {
                    break;
                }
            }
        });
        Server {
            base,
            bodies,
            heads,
            ca,
        }
    }

    /// Answers one request on `s`, plain or TLS (the handshake happens on the first read).
    fn handle(
        mut s: impl Read + Write,
        base: &str,
        b: &Behaviour,
        bodies: &AtomicUsize,
        heads: &Mutex<Vec<String>>,
    ) {
        let mut head = String::new();
        {
            // The client sends nothing after the header: nothing is left in this buffer.
            let mut reader = BufReader::new(&mut s);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
        }
        heads.lock().unwrap().push(head.clone());
        let path = head.split(' ').nth(1).unwrap_or_default().to_string();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix(name)
                        .map(str::to_string)
                })
                .map(|v| v.trim().to_string())
        };
        if let Some(n) = path.strip_prefix("/redirect/") {
            let n: usize = n.parse().unwrap();
            let status = [301, 302, 303, 307, 308][n % 5];
            let location = match n {
                1 => format!("{base}/bundle.p6b"),
                _ => format!("{}", n - 1),
            };
            redirect(&mut s, status, &location);
            return;
        }
        if path == "/moved" {
            redirect(&mut s, 302, b.moved_to.as_deref().unwrap());
            return;
        }
        if path == "/downgrade" {
            let location = base.replace("https://", "http://") + "/bundle.p6b";
            redirect(&mut s, 301, &location);
            return;
        }
        if path != "/bundle.p6b" {
            let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            return;
        }
        let k = bodies.fetch_add(1, Ordering::SeqCst);
        let etag = if b.etag_changes && k > 0 {
            "\"v2\""
        } else {
            "\"v1\""
        };
        let range = header("range: bytes=").and_then(|v| v.trim_end_matches('-').parse().ok());
        let if_range_ok = b.ignore_if_range || header("if-range:").is_none_or(|v| v == etag);
        let start = match range {
            Some(start) if !b.no_ranges && if_range_ok => start,
            _ => 0,
        };
        let mut response = match start {
            0 => "HTTP/1.1 200 OK\r\n".to_string(),
            _ => format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{LEN}\r\n",
                LEN - 1
            ),
        };
        response += &format!("Content-Length: {}\r\nETag: {etag}\r\n", LEN - start);
        if !b.no_ranges {
            response += "Accept-Ranges: bytes\r\n";
        }
        response += "Connection: close\r\n\r\n";
        let end = b.drop_at.get(k).copied().unwrap_or(LEN).max(start);
        if s.write_all(response.as_bytes()).is_err() {
            return;
        }
        for chunk in body()[start..end].chunks(64 * KIB) {
            if s.write_all(chunk).is_err() {
                return;
            }
        }
        let _ = s.flush();
        if b.stall && end < LEN {
            thread::sleep(Duration::from_secs(3));
        }
    }

    fn redirect(s: &mut impl Write, status: u16, location: &str) {
        let _ = write!(
            s,
            "HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
        );
        let _ = s.flush();
    }

    /// Answers one connection with a fixed response.
    fn serve_once(response: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                let _ = s.write_all(response.as_bytes());
            }
        });
        format!("http://127.0.0.1:{port}/bundle.p6b")
    }

    fn quick(max_resumes: u32) -> RetryPolicy {
        RetryPolicy {
            max_resumes,
            backoff_first: Duration::ZERO,
            backoff_max: Duration::ZERO,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            ca_files: Vec::new(),
        }
    }

    fn download(url: &str, policy: RetryPolicy) -> (io::Result<Vec<u8>>, HttpSource) {
        let mut source = HttpSource::open(url, policy).unwrap();
        assert_eq!(source.len(), LEN as u64);
        let mut data = Vec::new();
        let result = source.read_to_end(&mut data).map(|_| data);
        (result, source)
    }

    fn drops() -> Vec<usize> {
        vec![100 * KIB, 1024 * KIB, 2560 * KIB]
    }

    #[test]
    fn a_full_read_is_the_body() {
        for tls in schemes() {
            let server = serve(Behaviour {
                tls,
                ..Behaviour::default()
            });
            let url = format!("{}/bundle.p6b", server.base);
            let (data, source) = download(&url, server.quick(0));
            assert!(data.unwrap() == body(), "{url}");
            assert_eq!(source.resumes(), 0);
            let heads = server.heads.lock().unwrap();
            assert!(
                heads[0].starts_with("GET /bundle.p6b HTTP/1.1\r\n"),
                "{heads:?}"
            );
            let port = server.base.rsplit(':').next().unwrap();
            assert!(
                heads[0].contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
                "{heads:?}"
            );
            assert!(!heads[0].contains("Range"), "{heads:?}");
        }
    }

    #[test]
    fn drops_are_resumed_with_range_and_if_range() {
        for tls in schemes() {
            let server = serve(Behaviour {
                drop_at: drops(),
                tls,
                ..Behaviour::default()
            });
            let url = format!("{}/bundle.p6b", server.base);
            let (data, source) = download(&url, server.quick(3));
            assert!(data.unwrap() == body(), "{url}");
            assert_eq!(source.resumes(), 3);
            assert_eq!(server.bodies.load(Ordering::SeqCst), 4);
            let heads = server.heads.lock().unwrap();
            for (head, offset) in heads[1..].iter().zip(drops()) {
                assert!(
                    head.contains(&format!("Range: bytes={offset}-\r\n")),
                    "{head}"
                );
                assert!(head.contains("If-Range: \"v1\"\r\n"), "{head}");
            }
        }
    }

    #[test]
    fn a_stalled_connection_is_resumed_after_the_read_timeout() {
        for tls in schemes() {
            let server = serve(Behaviour {
                drop_at: vec![500 * KIB],
                stall: true,
                tls,
                ..Behaviour::default()
            });
            let policy = RetryPolicy {
                read_timeout: Duration::from_millis(300),
                ..server.quick(1)
            };
            let (data, source) = download(&format!("{}/bundle.p6b", server.base), policy);
            assert!(data.unwrap() == body());
            assert_eq!(source.resumes(), 1);
        }
    }

    #[test]
    fn without_range_support_the_start_is_skipped() {
        for tls in schemes() {
            let server = serve(Behaviour {
                drop_at: drops(),
                no_ranges: true,
                tls,
                ..Behaviour::default()
            });
            let url = format!("{}/bundle.p6b", server.base);
            let (data, source) = download(&url, server.quick(3));
            assert!(data.unwrap() == body());
            assert_eq!(source.resumes(), 3);
        }
    }

    #[test]
    fn a_file_replaced_on_the_server_is_not_spliced() {
        for tls in schemes() {
            for ignore_if_range in [false, true] {
                let server = serve(Behaviour {
                    drop_at: vec![1024 * KIB],
                    etag_changes: true,
                    ignore_if_range,
                    tls,
                    ..Behaviour::default()
                });
                let url = format!("{}/bundle.p6b", server.base);
                let (data, mut source) = download(&url, server.quick(5));
                let error = data.unwrap_err();
                assert_eq!(error.kind(), io::ErrorKind::InvalidData);
                let message = error.to_string();
                assert!(
                    message.contains("the file changed on the server while downloading")
                        && message.contains("etag went from \"v1\" to \"v2\""),
                    "{message}"
                );
                let inner = error.get_ref().and_then(|e| e.downcast_ref::<HttpError>());
                assert!(
                    matches!(inner, Some(HttpError::Changed { .. })),
                    "{inner:?}"
                );
                assert_eq!(source.resumes(), 1);
                let again = source.read(&mut [0; 16]).unwrap_err().to_string();
                assert!(again.contains("the file changed"), "{again}");
            }
        }
    }

    #[test]
    fn too_many_drops_give_up_saying_how_far_it_got() {
        for tls in schemes() {
            let server = serve(Behaviour {
                drop_at: vec![100 * KIB, 200 * KIB, 300 * KIB, 400 * KIB],
                tls,
                ..Behaviour::default()
            });
            let url = format!("{}/bundle.p6b", server.base);
            let (data, source) = download(&url, server.quick(2));
            let message = data.unwrap_err().to_string();
            assert_eq!(
                message,
                format!(
                    "{url}: download abandoned after 2 reconnections: received 307200 of \
                     3145728 bytes; last error: the connection closed at byte 307200 of 3145728"
                )
            );
            assert_eq!(source.resumes(), 2);
        }
    }

    #[test]
    fn a_server_gone_for_good_gives_up_with_the_connect_error() {
        let server = serve(Behaviour {
            drop_at: vec![100 * KIB],
            connections: Some(1),
            ..Behaviour::default()
        });
        let (data, source) = download(&format!("{}/bundle.p6b", server.base), quick(3));
        let message = data.unwrap_err().to_string();
        assert!(
            message
                .contains("after 3 reconnections: received 102400 of 3145728 bytes; last error: "),
            "{message}"
        );
        assert_eq!(source.resumes(), 3);
    }

    #[test]
    fn redirects_are_followed_up_to_five() {
        for tls in schemes() {
            let server = serve(Behaviour {
                tls,
                ..Behaviour::default()
            });
            let (data, _) = download(&format!("{}/redirect/5", server.base), server.quick(0));
            assert!(data.unwrap() == body());
            let url = format!("{}/redirect/6", server.base);
            let error = HttpSource::open(&url, server.quick(0)).unwrap_err();
            assert!(
                matches!(error, HttpError::TooManyRedirects { .. }),
                "{error}"
            );
            assert!(
                error
                    .to_string()
                    .ends_with("/bundle.p6b: more than 5 redirects"),
                "{error}"
            );
        }
    }

    #[test]
    fn resumption_starts_from_the_redirected_url() {
        for tls in schemes() {
            let server = serve(Behaviour {
                drop_at: vec![100 * KIB],
                tls,
                ..Behaviour::default()
            });
            let url = format!("{}/redirect/2", server.base);
            let (data, source) = download(&url, server.quick(1));
            assert!(data.unwrap() == body());
            assert_eq!(source.resumes(), 1);
            let heads = server.heads.lock().unwrap();
            assert_eq!(heads.len(), 4, "{heads:?}");
            assert!(heads[3].starts_with("GET /bundle.p6b "), "{heads:?}");
        }
    }

    #[test]
    fn a_redirect_from_http_to_https_is_followed_and_resumed_over_tls() {
        let secure = serve(Behaviour {
            drop_at: vec![700 * KIB],
            tls: Some(testpki::shared()),
            ..Behaviour::default()
        });
        let plain = serve(Behaviour {
            moved_to: Some(format!("{}/bundle.p6b", secure.base)),
            ..Behaviour::default()
        });
        let (data, source) = download(&format!("{}/moved", plain.base), secure.quick(1));
        assert!(data.unwrap() == body());
        assert_eq!(source.resumes(), 1);
        assert_eq!(plain.heads.lock().unwrap().len(), 1);
        let heads = secure.heads.lock().unwrap();
        assert_eq!(heads.len(), 2, "{heads:?}");
        assert!(heads[1].contains("Range: bytes=716800-\r\n"), "{heads:?}");
    }

    #[test]
    fn a_redirect_from_https_to_http_is_refused() {
        let server = serve(Behaviour {
            tls: Some(testpki::shared()),
            ..Behaviour::default()
        });
        let url = format!("{}/downgrade", server.base);
        let error = HttpSource::open(&url, server.quick(0)).unwrap_err();
        assert!(matches!(error, HttpError::Downgrade { .. }), "{error:?}");
        let plain = server.base.replace("https://", "http://");
        assert_eq!(
            error.to_string(),
            format!(
                "{url}: redirected to {plain}/bundle.p6b: a redirect from https to plain http \
                 is refused"
            )
        );
        // Only the https request was made.
        assert_eq!(server.heads.lock().unwrap().len(), 1);
        assert_eq!(server.bodies.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_certificate_from_an_untrusted_ca_is_refused_at_open() {
        let server = serve(Behaviour {
            tls: Some(testpki::shared()),
            ..Behaviour::default()
        });
        let url = format!("{}/bundle.p6b", server.base);
        // Without the CA file: Mozilla's roots and the system's bundle do not know this CA.
        let error = HttpSource::open(&url, quick(0)).unwrap_err();
        assert!(matches!(error, HttpError::Certificate { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!(
                "{url}: the server's certificate is refused: it is not issued by a trusted \
                 certificate authority (trusted: Mozilla's roots, \
                 /etc/ssl/certs/ca-certificates.crt and the CA files given)"
            )
        );
        // Another CA's file does not help either.
        let other = Box::leak(Box::new(testpki::make("another CA", &["127.0.0.1"])));
        let elsewhere = serve(Behaviour {
            tls: Some(other),
            ..Behaviour::default()
        });
        let policy = RetryPolicy {
            ca_files: elsewhere.quick(0).ca_files,
            ..quick(0)
        };
        let error = HttpSource::open(&url, policy).unwrap_err();
        assert!(error.to_string().contains("certificate"), "{error}");
        // No request went through.
        assert!(server.heads.lock().unwrap().is_empty());
        // With it, the same server is fine.
        let (data, _) = download(&url, server.quick(0));
        assert!(data.unwrap() == body());
    }

    #[test]
    fn a_certificate_for_another_name_is_refused() {
        let pki = Box::leak(Box::new(testpki::make("names CA", &["localhost"])));
        let server = serve(Behaviour {
            tls: Some(pki),
            ..Behaviour::default()
        });
        let url = format!("{}/bundle.p6b", server.base);
        let error = HttpSource::open(&url, server.quick(0)).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{url}: the server's certificate is refused: certificate not valid for name \
                 \"127.0.0.1\"; certificate is only valid for DnsName(\"localhost\")"
            )
        );
    }

    #[test]
    fn a_plain_http_server_on_an_https_url_is_a_tls_error() {
        let server = serve(Behaviour::default());
        let url = format!("{}/bundle.p6b", server.base.replace("http://", "https://"));
        let error = HttpSource::open(&url, quick(0)).unwrap_err();
        assert!(matches!(error, HttpError::Tls { .. }), "{error:?}");
        let message = error_chain(&error);
        let addr = url.split('/').nth(2).unwrap();
        assert!(
            message.starts_with(&format!(
                "{url}: no TLS session with {addr}: the TLS handshake failed: "
            )),
            "{message}"
        );
    }

    #[test]
    fn a_bad_ca_file_is_an_error_at_open() {
        let server = serve(Behaviour {
            tls: Some(testpki::shared()),
            ..Behaviour::default()
        });
        let url = format!("{}/bundle.p6b", server.base);
        let policy = RetryPolicy {
            ca_files: vec!["/nonexistent/ca.pem".into()],
            ..quick(0)
        };
        let error = HttpSource::open(&url, policy.clone()).unwrap_err();
        assert!(
            error_chain(&error).starts_with(&format!(
                "{url}: cannot load the trusted certificates: cannot read the CA file \
                 /nonexistent/ca.pem: "
            )),
            "{}",
            error_chain(&error)
        );
        // Plain http does not need them.
        let plain = serve(Behaviour::default());
        let (data, _) = download(&format!("{}/bundle.p6b", plain.base), policy);
        assert!(data.unwrap() == body());
    }

    #[test]
    fn bad_responses_are_clear_errors_at_open() {
        let server = serve(Behaviour::default());
        let error = HttpSource::open(&format!("{}/missing", server.base), quick(0)).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{}/missing: the server answered 404 Not Found", server.base)
        );

        let url = serve_once("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc");
        let error = HttpSource::open(&url, quick(0)).unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "{url}: the response has no content-length (the server must send the file's size)"
            )
        );

        let url = serve_once(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        let error = HttpSource::open(&url, quick(0)).unwrap_err().to_string();
        assert!(
            error.ends_with("transfer-encoding \"chunked\" is not supported: the server must send a content-length"),
            "{error}"
        );

        let url = serve_once("SSH-2.0-OpenSSH_9.6\r\n\r\n");
        let error = HttpSource::open(&url, quick(0)).unwrap_err().to_string();
        assert!(
            error.contains("invalid http response: status line"),
            "{error}"
        );

        let url = serve_once("HTTP/1.1 302 Found\r\nLocation: ftp://127.0.0.1/x\r\n\r\n");
        let error = HttpSource::open(&url, quick(0)).unwrap_err().to_string();
        assert_eq!(
            error,
            "invalid url \"ftp://127.0.0.1/x\": expected http(s)://host[:port]/path"
        );
    }

    #[test]
    fn urls() {
        let ok = |url: &str| {
            let u = parse_url(url).unwrap();
            (u.https, u.host, u.port, u.target)
        };
        let t = |s, h: &str, p, t: &str| (s, h.to_string(), p, t.to_string());
        assert_eq!(
            ok("http://[::1]:8080/b/x.p6b"),
            t(false, "::1", 8080, "/b/x.p6b")
        );
        assert_eq!(ok("http://[fe80::1]/x"), t(false, "fe80::1", 80, "/x"));
        assert_eq!(
            ok("http://example.org/a/b.p6b?sig=1#frag"),
            t(false, "example.org", 80, "/a/b.p6b?sig=1")
        );
        assert_eq!(ok("HTTP://10.0.0.1:81"), t(false, "10.0.0.1", 81, "/"));
        assert_eq!(ok("http://host?x=1"), t(false, "host", 80, "/?x=1"));
        assert_eq!(ok("http://host:/p"), t(false, "host", 80, "/p"));
        assert_eq!(ok("https://host/p"), t(true, "host", 443, "/p"));
        assert_eq!(ok("HTTPS://[::1]:8443"), t(true, "::1", 8443, "/"));
        assert_eq!(ok("https://h:80/x?y"), t(true, "h", 80, "/x?y"));
        for bad in [
            "http://host:0/x",
            "http://host:65536/x",
            "http://host:8o/x",
            "http://[::1/x",
            "http://[::1]x/y",
            "http://[zz]/y",
            "http:///x",
            "https:///x",
            "http://user:pw@host/x",
            "https://user@host/x",
            "http://host/a b",
            "ftp://host/x",
            "https:/host/x",
            "host/x",
        ] {
            assert!(
                matches!(parse_url(bad), Err(HttpError::BadUrl { .. })),
                "{bad}: {:?}",
                parse_url(bad)
            );
        }
        assert_eq!(authority("::1", 8080, false), "[::1]:8080");
        assert_eq!(authority("h", 80, false), "h");
        assert_eq!(authority("h", 443, false), "h:443");
        assert_eq!(authority("h", 443, true), "h");
        assert_eq!(authority("::1", 80, true), "[::1]:80");
        assert_eq!(address("::1", 443), "[::1]:443");
    }

    #[test]
    fn locations_resolve_against_the_request() {
        let base = "http://h:81/a/b.p6b?x";
        assert_eq!(resolve(base, "c.p6b").unwrap(), "http://h:81/a/c.p6b");
        assert_eq!(resolve(base, "/c.p6b").unwrap(), "http://h:81/c.p6b");
        assert_eq!(resolve(base, "//m/c.p6b").unwrap(), "http://m/c.p6b");
        assert_eq!(resolve(base, "http://m:82/c").unwrap(), "http://m:82/c");
        assert_eq!(resolve(base, "https://m/c").unwrap(), "https://m/c");
        assert_eq!(
            resolve(base, "c:d").unwrap_err().to_string(),
            "invalid url \"c:d\": expected http(s)://host[:port]/path"
        );
        assert_eq!(resolve(base, "./c:d").unwrap(), "http://h:81/a/./c:d");

        let base = "https://h/a/b.p6b";
        assert_eq!(resolve(base, "c.p6b").unwrap(), "https://h/a/c.p6b");
        assert_eq!(resolve(base, "/c.p6b").unwrap(), "https://h/c.p6b");
        assert_eq!(resolve(base, "//m:8443/c").unwrap(), "https://m:8443/c");
        assert_eq!(resolve(base, "HTTPS://m/c").unwrap(), "HTTPS://m/c");
        assert_eq!(
            resolve("https://h:8443/a", "b").unwrap(),
            "https://h:8443/b"
        );
        for downgrade in ["http://h/a/b.p6b", "HTTP://m/c"] {
            let error = resolve(base, downgrade).unwrap_err();
            assert!(
                matches!(&error, HttpError::Downgrade { url, location }
                    if url == base && location == downgrade),
                "{error:?}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let policy = RetryPolicy::default();
        let waits: Vec<u128> = (0..7).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(8));
        assert!(policy.ca_files.is_empty());
        assert_eq!(parse_content_range("bytes 5-9/10"), Some((5, 9, 10)));
        assert_eq!(parse_content_range("bytes */10"), None);
    }
}
