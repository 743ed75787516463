//! The loopback servers of the tests: a bundle server that misbehaves on demand (drops,
//! stalls, no ranges, a file replaced, chunked bodies, redirects), over plain http or TLS, and
//! a server of one fixed answer.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use rustls::{ServerConnection, StreamOwned};

use super::super::{HttpSource, ProxyEnv, RetryPolicy};
use crate::upgrade::tls::testpki::{self, Pki};

pub const LEN: usize = 3 << 20;
pub const KIB: usize = 1024;

pub fn body() -> &'static [u8] {
    static BODY: OnceLock<Vec<u8>> = OnceLock::new();
    BODY.get_or_init(|| {
        (0..LEN as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 ^ (i >> 12) as u8)
            .collect()
    })
}

/// How the test server misbehaves.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// The i-th body response ends at this absolute offset (then the connection closes).
    pub drop_at: Vec<usize>,
    /// Stay silent (connection open) after a drop point instead of closing.
    pub stall: bool,
    /// Always 200 from the start, no `Accept-Ranges`.
    pub no_ranges: bool,
    /// Body responses after the first carry another ETag.
    pub etag_changes: bool,
    /// Serve the range even when `If-Range` does not match.
    pub ignore_if_range: bool,
    /// Answers from the start (200) are chunked, without a `Content-Length`; ranges (206) are
    /// not.
    pub chunked: bool,
    /// No `ETag` (nor `Last-Modified`).
    pub no_validators: bool,
    /// Close the listener after this many connections.
    pub connections: Option<usize>,
    /// Serve https with this CA's server certificate (else plain http).
    pub tls: Option<&'static Pki>,
    /// Where `/moved` redirects to.
    pub moved_to: Option<String>,
}

/// The schemes every behaviour is tested with: plain http, and https with the shared CA.
pub fn schemes() -> [Option<&'static Pki>; 2] {
    [None, Some(testpki::shared())]
}

pub struct Server {
    pub base: String,
    pub port: u16,
    pub bodies: Arc<AtomicUsize>,
    /// The request heads received, header names in lower case.
    pub heads: Arc<Mutex<Vec<String>>>,
    /// The CA of an https server, as a PEM file.
    pub ca: Option<tempfile::NamedTempFile>,
}

impl Server {
    /// [`quick`], trusting the server's CA.
    pub fn quick(&self, max_resumes: u32) -> RetryPolicy {
        RetryPolicy {
            ca_files: self.ca.iter().map(|f| f.path().to_path_buf()).collect(),
            ..quick(max_resumes)
        }
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// Serves `/bundle.p6b` (the 3 MiB body), `/missing` (404), `/redirect/<n>` (n hops, then
/// the bundle), `/moved` (to `moved_to`) and `/downgrade` (to this server's bundle over
/// plain http) on 127.0.0.1, through TLS when `behaviour.tls` says so.
pub fn serve(behaviour: Behaviour) -> Server {
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
        port,
        bodies,
        heads,
        ca,
    }
}

/// Reads a request head (header names in lower case); `None` when the client sent something
/// else than HTTP, after answering 400 as web servers do (a TLS client on a plain port).
fn read_head(s: &mut (impl Read + Write)) -> Option<String> {
    let mut head = String::new();
    {
        // The client sends nothing after the header: nothing is left in this buffer.
        let mut reader = BufReader::new(&mut *s);
        let first = reader.fill_buf().ok()?.first().copied()?;
        if !first.is_ascii_uppercase() {
            drop(reader);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            return None;
        }
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return None;
            }
            if line == "\r\n" {
                break;
            }
            match line.split_once(':') {
                Some((name, value)) if !head.is_empty() => {
                    head.push_str(&format!("{}:{value}", name.to_ascii_lowercase()))
                }
                _ => head.push_str(&line),
            }
        }
    }
    Some(head)
}

/// Answers one request on `s`, plain or TLS (the handshake happens on the first read).
fn handle(
    mut s: impl Read + Write,
    base: &str,
    b: &Behaviour,
    bodies: &AtomicUsize,
    heads: &Mutex<Vec<String>>,
) {
    let Some(head) = read_head(&mut s) else {
        return;
    };
    heads.lock().unwrap().push(head.clone());
    let path = head.split(' ').nth(1).unwrap_or_default().to_string();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(str::to_string))
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
    let chunked = b.chunked && start == 0;
    let mut response = match start {
        0 => "HTTP/1.1 200 OK\r\n".to_string(),
        _ => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{LEN}\r\n",
            LEN - 1
        ),
    };
    match chunked {
        true => response += "Transfer-Encoding: chunked\r\n",
        false => response += &format!("Content-Length: {}\r\n", LEN - start),
    }
    if !b.no_validators {
        response += &format!("ETag: {etag}\r\n");
    }
    if !b.no_ranges {
        response += "Accept-Ranges: bytes\r\n";
    }
    response += "Connection: close\r\n\r\n";
    let end = b.drop_at.get(k).copied().unwrap_or(LEN).max(start);
    if s.write_all(response.as_bytes()).is_err() {
        return;
    }
    for chunk in body()[start..end].chunks(64 * KIB) {
        let sent = match chunked {
            true => write!(s, "{:x}\r\n", chunk.len())
                .and_then(|()| s.write_all(chunk))
                .and_then(|()| s.write_all(b"\r\n")),
            false => s.write_all(chunk),
        };
        if sent.is_err() {
            return;
        }
    }
    if chunked && end == LEN {
        let _ = s.write_all(b"0\r\n\r\n");
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
pub fn serve_once(response: &'static str) -> String {
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

/// No waiting between reconnections, 5 s limits, no CA file, no proxy.
pub fn quick(max_resumes: u32) -> RetryPolicy {
    RetryPolicy {
        max_resumes,
        backoff_first: Duration::ZERO,
        backoff_max: Duration::ZERO,
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        ca_files: Vec::new(),
        proxies: ProxyEnv::default(),
        orderer: super::super::Orderer::Operator,
    }
}

/// Opens `url` (the body's size known or not) and reads it to its end.
pub fn download(url: &str, policy: RetryPolicy) -> (io::Result<Vec<u8>>, HttpSource) {
    let mut source = HttpSource::open(url, policy).unwrap();
    let mut data = Vec::new();
    let result = source.read_to_end(&mut data).map(|_| data);
    (result, source)
}

/// A free port on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
