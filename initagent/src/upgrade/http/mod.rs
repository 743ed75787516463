//! `p6os-agent upgrade http(s)://host[:port]/path/bundle.p6b` and the console's API: HTTP/1.1
//! through [ureq](https://docs.rs/ureq) (rustls with ring for https), with the agent's own rules
//! on top, and a bundle download as a [`Read`] that hides broken connections.
//!
//! [`HttpSource::open`] sends a `GET` and hands out the body, with a `Content-Length` or chunked
//! (a body whose end is only the connection's close is refused: a broken connection could not be
//! told from the end of the file). When the connection breaks, stays silent past the read
//! timeout, or ends early, the next `read` reconnects (a new handshake for https) with
//! `Range: bytes=<offset>-` and carries on where it stopped, so a consumer in the middle of a
//! zstd frame never notices. A server without range support answers 200 and the first `offset`
//! bytes of that body are skipped.
//!
//! A bundle replaced on the server mid-download is not spliced onto the old one's beginning
//! ([`resume`]): the resumed request carries `If-Range` with the first response's strong `ETag`
//! (or else its `Last-Modified`), and a different validator or size in the answer is an error,
//! "the file changed on the server while downloading". A server that sends neither `ETag` nor
//! `Last-Modified` is only checked for the same size; a chunked answer with no validator
//! either cannot be recognised, and its broken download is not resumed but fails saying so.
//!
//! Redirects (up to 5) are followed here, not by ureq: from http to https and between https
//! URLs; from https to plain http they are refused (a downgrade). A download the console orders
//! ([`Orderer::Console`]) follows redirects only within the console's origin, and its errors,
//! reported back to the console, are in the agent's words ([`HttpError::summary`]). A bearer token goes only to the
//! origin it was given for, whichever server a redirect leads to. TLS protects the transfer;
//! the bundle's signature and hashes, not the transport, protect its content. Trust anchors:
//! [`super::tls`].
//!
//! Proxies come from `http_proxy`, `https_proxy` and `no_proxy` ([`proxy`], curl's rules) in
//! [`RetryPolicy::proxies`]. ureq reaches every server through a proxy with a `CONNECT`
//! tunnel, plain http too: a proxy that allows `CONNECT` only to port 443 (Squid's default)
//! carries https URLs only.
//!
//! Limitations: no credentials in the URL, no client certificates, no SOCKS proxies,
//! `ALL_PROXY` is not read.

mod client;
pub mod clock_probe;
pub mod proxy;
pub mod resume;
mod url;
pub(crate) mod words;

#[cfg(test)]
mod tests;

use std::io::{self, Read};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::UnixTime;

use ureq::BodyReader;

use crate::log::error_chain;
use client::{Ask, Client};
pub use proxy::ProxyEnv;
use resume::{check_resumed, Continuation, FileIdentity, Mismatch, ResumedHead};
pub use words::for_log;

/// Redirects followed per request (the sixth is an error).
const MAX_REDIRECTS: usize = 5;

/// How hard [`HttpSource`] tries to finish a download, whom it trusts over https and which
/// proxies it goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Reconnections allowed over the whole download; every attempt counts, failed ones too.
    pub max_resumes: u32,
    /// Wait before the first reconnection; doubles after each attempt that brought no byte.
    pub backoff_first: Duration,
    /// Longest wait between reconnections.
    pub backoff_max: Duration,
    /// Limit for establishing each connection, TLS handshake included (must not be zero).
    pub connect_timeout: Duration,
    /// Longest silence on an open connection before it counts as broken (must not be zero).
    pub read_timeout: Duration,
    /// PEM files of certificate authorities trusted for https besides Mozilla's roots and
    /// `/etc/ssl/certs/ca-certificates.crt`; each must hold at least one valid certificate.
    pub ca_files: Vec<PathBuf>,
    /// The proxy variables (the process's environment by default).
    pub proxies: ProxyEnv,
    /// Who ordered the download: where its redirects may lead, what its errors say.
    pub orderer: Orderer,
}

/// Who ordered a download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Orderer {
    /// The operator on the machine (`p6os-agent upgrade URL`): redirects lead anywhere but from
    /// https to http; errors say everything, the server's words included.
    #[default]
    Operator,
    /// The management console: redirects stay on the console's origin (scheme, host and port),
    /// one elsewhere is refused; the errors, which are reported back to the console, are in the
    /// agent's own words ([`HttpError::summary`]), the server's details only in the local log.
    Console,
}

impl Default for RetryPolicy {
    /// 8 reconnections, waiting 0.5 s doubling to 8 s; 10 s to connect, 30 s of silence; no
    /// extra CA file; the proxies of the process's environment.
    fn default() -> Self {
        RetryPolicy {
            max_resumes: 8,
            backoff_first: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            ca_files: Vec::new(),
            proxies: ProxyEnv::from_process(),
            orderer: Orderer::Operator,
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

/// Why a request, or a download, could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid url {url:?}: {why}")]
    BadUrl { url: String, why: &'static str },
    #[error("{url}: cannot send the request: {why}")]
    Request { url: String, why: String },
    #[error("{url}: cannot use the proxy")]
    Proxy {
        url: String,
        #[source]
        source: proxy::ProxyError,
    },
    #[error("{url}: no tunnel through {proxy}: {why}")]
    ProxyRefused {
        url: String,
        proxy: String,
        why: String,
    },
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
        source: super::tls::CaError,
    },
    #[error("{url}: the server's certificate is refused: {why}")]
    Certificate {
        url: String,
        why: String,
        dates: CertificateDates,
    },
    #[error("{url}: no TLS session with {addr}")]
    Tls {
        url: String,
        addr: String,
        #[source]
        source: super::tls::HandshakeFailed,
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
    #[error(
        "{url}: the response has neither a content-length nor chunked encoding: the end of the \
         file could not be told from a broken connection"
    )]
    NoLength { url: String },
    #[error("{url}: more than 5 redirects")]
    TooManyRedirects { url: String },
    #[error("{url}: redirected to {location}: a redirect from https to plain http is refused")]
    Downgrade { url: String, location: String },
    /// The location is not shown: it is the server's text (it goes to the local log).
    #[error(
        "{url}: redirected to another server: refused, a download the console orders stays on \
         the console's origin (scheme, host and port)"
    )]
    OffOrigin { url: String },
    #[error("{url}: the file changed on the server while downloading ({why})")]
    Changed { url: String, why: String },
    #[error(
        "{url}: {why}, and the download cannot be resumed: the server sent neither the file's \
         size nor an etag or last-modified to recognise it by"
    )]
    Unrecognisable { url: String, why: String },
    #[error(
        "{url}: download abandoned after {resumes} reconnections: received {}; last error: {last}",
        progress(*received, *total)
    )]
    GaveUp {
        url: String,
        received: u64,
        total: Option<u64>,
        resumes: u32,
        last: String,
    },
}

/// `N of M bytes`, or `N bytes (size unknown)`.
fn progress(received: u64, total: Option<u64>) -> String {
    match total {
        Some(total) => format!("{received} of {total} bytes"),
        None => format!("{received} bytes (size unknown)"),
    }
}

/// What a refused certificate says about this machine's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateDates {
    /// Not valid yet: the clock may be behind ([`server_time`] can tell).
    NotValidYet,
    /// Expired: the certificate, or a clock far ahead.
    Expired,
    /// Refused for another reason than its dates.
    Fine,
}

/// The time the server of an `https://` `url` gives in its `Date` header, for a machine whose
/// clock is behind: the server is authenticated as for any request, but its certificate's
/// dates are checked at the certificate's start ([`clock_probe`]), and the date is returned
/// only if the certificate chain is valid at that date. One `GET`, no bearer token sent.
pub fn server_time(url: &str, policy: RetryPolicy) -> Result<SystemTime, HttpError> {
    let parsed = url::parse_url(url)?;
    if !parsed.https {
        return Err(HttpError::Request {
            url: url.to_string(),
            why: "the time is taken only from an https server".into(),
        });
    }
    let (client, verifier) = Client::for_clock_probe(policy, url)?;
    let response = client.send(url, Ask::GET)?;
    let malformed = |why: String| HttpError::Malformed {
        url: url.to_string(),
        why,
    };
    let header = response
        .header("date")
        .ok_or_else(|| malformed("the answer has no Date header".into()))?;
    let date = httpdate::parse_http_date(header)
        .map_err(|_| malformed(format!("the Date header {header:?} is not an HTTP date")))?;
    let since_epoch = date
        .duration_since(UNIX_EPOCH)
        .map_err(|_| malformed(format!("the Date header {header:?} is before 1970")))?;
    if !verifier.valid_at(UnixTime::since_unix_epoch(since_epoch)) {
        return Err(HttpError::Certificate {
            url: url.to_string(),
            why: format!("its certificate is not valid at the date it gives ({header})"),
            dates: CertificateDates::Fine,
        });
    }
    Ok(date)
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
    call_with(
        method,
        url,
        bearer,
        json.map(|b| ("application/json", b)),
        policy,
    )
}

/// [`call`] with a body of any content type: `(type, bytes)`.
pub fn call_with(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<(&str, &[u8])>,
    policy: RetryPolicy,
) -> Result<(u16, Vec<u8>), HttpError> {
    let mut client = Client::new(policy);
    if let Some(token) = bearer {
        client = client.with_bearer(url, token)?;
    }
    let ask = Ask {
        method,
        range: None,
        body,
    };
    let response = client.send(url, ask)?;
    let status = response.status;
    let url = response.url;
    let body = response
        .body
        .into_with_config()
        .limit(MAX_API_BODY)
        .read_to_vec();
    match body {
        Ok(body) => Ok((status, body)),
        Err(ureq::Error::BodyExceedsLimit(_)) => Err(HttpError::Malformed {
            url,
            why: "the response body is larger than 1 MiB".into(),
        }),
        Err(e) => Err(HttpError::Io {
            url,
            source: body_error(e.into_io()),
        }),
    }
}

/// A body's read error in words: a connection closed early says so.
fn body_error(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed before the end of the response body",
        ),
        _ => e,
    }
}

/// A bundle being downloaded over HTTP or HTTPS, resumed transparently (see the module's doc).
pub struct HttpSource {
    /// After redirects: resumptions start there.
    url: String,
    client: Client,
    body: Option<BodyReader<'static>>,
    /// The size (learnt at the end of a chunked body) and the validators.
    file: FileIdentity,
    pos: u64,
    resumes: u32,
    /// Reconnections since the last byte received (for the backoff).
    failures: u32,
    /// A final error, repeated by every later `read`.
    failed: Option<(io::ErrorKind, String)>,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource")
            .field("url", &self.url)
            .field("file", &self.file)
            .field("pos", &self.pos)
            .field("resumes", &self.resumes)
            .finish_non_exhaustive()
    }
}

impl HttpSource {
    /// Connects (with a TLS handshake for https, the server's certificate checked against the
    /// trust anchors and its name), sends `GET`, follows up to 5 redirects (never from https to
    /// http) and checks for a 200 with a `Content-Length` or a chunked body. Fails at once on any
    /// error: retries only happen once the download has started.
    pub fn open(url: &str, policy: RetryPolicy) -> Result<HttpSource, HttpError> {
        HttpSource::open_with(url, Client::new(policy))
    }

    /// [`HttpSource::open`] sending `Authorization: Bearer <token>` to `url`'s origin (and to
    /// no other server a redirect may lead to).
    pub fn open_with_bearer(
        url: &str,
        policy: RetryPolicy,
        token: &str,
    ) -> Result<HttpSource, HttpError> {
        HttpSource::open_with(url, Client::new(policy).with_bearer(url, token)?)
    }

    fn open_with(url: &str, client: Client) -> Result<HttpSource, HttpError> {
        let response = client.get(url, None)?;
        if response.status != 200 {
            return Err(response.status_error());
        }
        let len = response.content_length();
        if len.is_none() && !response.is_chunked() {
            return Err(HttpError::NoLength { url: response.url });
        }
        let file = FileIdentity {
            len,
            etag: response.header("etag").map(str::to_string),
            last_modified: response.header("last-modified").map(str::to_string),
        };
        Ok(HttpSource {
            file,
            url: response.url,
            client,
            body: Some(response.body.into_reader()),
            pos: 0,
            resumes: 0,
            failures: 0,
            failed: None,
        })
    }

    /// The bytes handed out so far.
    pub fn received(&self) -> u64 {
        self.pos
    }

    /// How many times the download reconnected (attempts that failed included).
    pub fn resumes(&self) -> u32 {
        self.resumes
    }

    /// `byte N of M`, or `byte N` when the size is unknown.
    fn at(&self) -> String {
        match self.file.len {
            Some(len) => format!("byte {} of {len}", self.pos),
            None => format!("byte {}", self.pos),
        }
    }

    /// A connection whose body starts at `self.pos` of the same file.
    fn reconnect(&mut self) -> Result<BodyReader<'static>, HttpError> {
        let validator = self.file.if_range();
        let response = self.client.get(&self.url, Some((self.pos, validator)))?;
        let head = ResumedHead {
            status: response.status,
            content_length: response.content_length(),
            content_range: response.header("content-range"),
            etag: response.header("etag"),
            last_modified: response.header("last-modified"),
        };
        let continuation = match check_resumed(&self.file, self.pos, &head) {
            Ok(continuation) => continuation,
            Err(Mismatch::Changed(why)) => {
                return Err(HttpError::Changed {
                    url: response.url,
                    why,
                })
            }
            Err(Mismatch::Malformed(why)) => {
                return Err(HttpError::Malformed {
                    url: response.url,
                    why,
                })
            }
            Err(Mismatch::Status(_)) => return Err(response.status_error()),
        };
        if head.content_length.is_none() && !response.is_chunked() {
            return Err(HttpError::NoLength { url: response.url });
        }
        self.file.len = self.file.len.or(continuation.total());
        let url = response.url;
        let mut body = response.body.into_reader();
        if let Continuation::FromStart { skip, .. } = continuation {
            let skipped = io::copy(&mut (&mut body).take(skip), &mut io::sink()).map_err(|e| {
                HttpError::Io {
                    url: url.clone(),
                    source: body_error(e),
                }
            })?;
            if skipped != skip {
                return Err(HttpError::Io {
                    url,
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the connection closed at byte {skipped}, skipping to byte {skip}"),
                    ),
                });
            }
        }
        Ok(body)
    }

    /// Remembers a final error and returns it (for the console: in the agent's words, the
    /// details logged here).
    fn fail(&mut self, kind: io::ErrorKind, error: HttpError) -> io::Error {
        self.body = None;
        if self.client.policy.orderer == Orderer::Console {
            warn!(
                "download from the console: {}",
                for_log(&error_chain(&error))
            );
            let summary = error.summary();
            self.failed = Some((kind, summary.clone()));
            return io::Error::new(kind, summary);
        }
        self.failed = Some((kind, error_chain(&error)));
        io::Error::new(kind, error)
    }

    /// Why the current connection stopped, from a read's error.
    fn broken(&self, e: &io::Error) -> String {
        let ureq_error = e.get_ref().and_then(|e| e.downcast_ref::<ureq::Error>());
        let timed_out = matches!(ureq_error, Some(ureq::Error::Timeout(_)))
            || matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            );
        if timed_out {
            let silence = self.client.policy.read_timeout;
            return format!("no data for {silence:?} at {}", self.at());
        }
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted => {
                format!("the connection closed at {}", self.at())
            }
            _ => format!("at {}: {}", self.at(), error_text(e)),
        }
    }
}

/// An I/O error's text, without ureq's `io: ` prefix for a wrapped ureq error.
fn error_text(e: &io::Error) -> String {
    match e.get_ref().and_then(|e| e.downcast_ref::<ureq::Error>()) {
        Some(ureq::Error::Io(inner)) => inner.to_string(),
        _ => e.to_string(),
    }
}

impl Read for HttpSource {
    /// Reads the next bytes, reconnecting (with `Range` from the current offset) as often as the
    /// policy allows when the connection breaks or ends early.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((kind, message)) = &self.failed {
            return Err(io::Error::new(*kind, message.clone()));
        }
        if buf.is_empty() || Some(self.pos) == self.file.len {
            return Ok(0);
        }
        let mut last = String::new();
        loop {
            if let Some(body) = &mut self.body {
                let room = buf.len() as u64;
                let want = self.file.len.map_or(room, |len| (len - self.pos).min(room)) as usize;
                match body.read(&mut buf[..want]) {
                    // ureq ends a body at its length or its last chunk, and reports a
                    // connection closed before either as an error: this is the file's end.
                    Ok(0) if self.file.len.is_none() => {
                        self.file.len = Some(self.pos);
                        self.body = None;
                        return Ok(0);
                    }
                    Ok(0) => last = format!("the connection closed at {}", self.at()),
                    Ok(n) => {
                        self.pos += n as u64;
                        self.failures = 0;
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => last = self.broken(&e),
                }
                self.body = None;
            }
            if !self.file.recognisable() {
                let error = HttpError::Unrecognisable {
                    url: self.url.clone(),
                    why: last,
                };
                return Err(self.fail(io::ErrorKind::Other, error));
            }
            if self.resumes >= self.client.policy.max_resumes {
                let error = HttpError::GaveUp {
                    url: self.url.clone(),
                    received: self.pos,
                    total: self.file.len,
                    resumes: self.resumes,
                    last,
                };
                return Err(self.fail(io::ErrorKind::Other, error));
            }
            std::thread::sleep(self.client.policy.backoff(self.failures));
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
