//! The console's connection limits against slow clients, on a real `p6os-console serve`
//! process whose file limit is 1,024 (as on a stock system): its own process, so its file
//! descriptors are its own and the numbers are deterministic.
//!
//! The attack: 1,100 connections from one address (127.0.0.2), each sending a POST head and one
//! byte of its body, then nothing. While they hang, a paired device's heartbeat and
//! `GET /openapi.json` from another address (127.0.0.1) must still be answered within a few
//! seconds, and every slow connection must be closed by the console after its client timeout.

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{beat, call, device_key, facts, pair_at, Body, API};
use p6os_protocol::PairResponse;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The console's file limit, soft and hard (so raising soft to hard changes nothing).
const CONSOLE_NOFILE: u64 = 1024;
const SLOW_SOCKETS: usize = 1100;
/// The client timeout the console is started with.
const CLIENT_TIMEOUT_SECS: u64 = 3;

/// A `p6os-console serve` child process on 127.0.0.1:0; killed on drop.
struct ConsoleProcess {
    child: Child,
    addr: SocketAddr,
    admin: String,
    pairing: String,
    _dir: tempfile::TempDir,
}

impl ConsoleProcess {
    fn start(extra: &[&str]) -> ConsoleProcess {
        let dir = tempfile::tempdir().unwrap();
        let admin = p6os_console::auth::new_token().unwrap();
        let pairing = p6os_console::auth::new_token().unwrap();
        std::fs::write(dir.path().join("admin.token"), &admin).unwrap();
        std::fs::write(dir.path().join("pairing.token"), &pairing).unwrap();
        let stderr = std::fs::File::create(dir.path().join("console.log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_p6os-console"));
        command
            .arg("--admin-token-file")
            .arg(dir.path().join("admin.token"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--db")
            .arg(dir.path().join("console.db"))
            .arg("--bundles")
            .arg(dir.path().join("bundles"))
            .arg("--pairing-token-file")
            .arg(dir.path().join("pairing.token"))
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                let limit = rustix::process::Rlimit {
                    current: Some(CONSOLE_NOFILE),
                    maximum: Some(CONSOLE_NOFILE),
                };
                rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = command.spawn().expect("start p6os-console");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit("://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no listening line: {line:?}"));
        ConsoleProcess {
            child,
            addr,
            admin,
            pairing,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers and pairs `id`; its device token.
    fn paired(&self, id: &str) -> String {
        let r = call(
            &self.url(),
            "POST",
            &format!("{API}/appliances"),
            Some(&self.admin),
            Body::json(&serde_json::json!({ "id": id, "pairing": "first-key" })),
            &[],
        );
        assert_eq!(r.status, 201, "{}", r.text());
        let r = pair_at(&self.url(), &self.pairing, id, facts(id), &device_key(id)).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        match r.json::<PairResponse>() {
            PairResponse::Ready { device_token, .. } => device_token,
            other => panic!("{other:?}"),
        }
    }
}

impl Drop for ConsoleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This test process holds 1,100 sockets: its soft file limit up to the hard one.
fn raise_own_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).unwrap();
    let now = getrlimit(Resource::Nofile).current;
    assert!(
        now.is_none_or(|n| n > SLOW_SOCKETS as u64 + 64),
        "the test needs a file limit above {SLOW_SOCKETS}: {now:?}"
    );
}

/// A request with a short overall timeout, from 127.0.0.1: its status, or why it failed.
fn quick(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> Result<u16, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut b = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{url}{path}"));
    if let Some(t) = token {
        b = b.header("Authorization", format!("Bearer {t}"));
    }
    let r = match body {
        None => agent.run(b.body(()).unwrap()),
        Some(bytes) => agent.run(
            b.header("Content-Type", "application/json")
                .body(bytes)
                .unwrap(),
        ),
    };
    r.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
}

/// Opens a connection from 127.0.0.2 and sends a heartbeat's head (a made-up token, 1,000
/// bytes announced) and one byte of its body; `None` if the connection was not made in time.
async fn slow_post(addr: SocketAddr) -> Option<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind("127.0.0.2:0".parse().unwrap()).ok()?;
    let mut stream = tokio::time::timeout(Duration::from_secs(3), socket.connect(addr))
        .await
        .ok()?
        .ok()?;
    let head = format!(
        "POST {API}/appliances/slow/heartbeat HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer not-a-token\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    Some(stream)
}

/// Whether the console closes `stream` before `deadline` (end of file or a reset, after
/// whatever answer it sent).
async fn closed_by(mut stream: tokio::net::TcpStream, deadline: tokio::time::Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[test]
fn slow_posts_do_not_starve_devices_and_are_closed_after_the_client_timeout() {
    raise_own_file_limit();
    let timeout = CLIENT_TIMEOUT_SECS.to_string();
    let console = ConsoleProcess::start(&["--client-timeout-secs", &timeout]);
    let url = console.url();
    let token = console.paired("nuc-1");
    let heartbeat = serde_json::to_vec(&beat("1.0.0")).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = console.addr;
    let started = Instant::now();
    let slow: Vec<tokio::net::TcpStream> = rt.block_on(async {
        let tasks: Vec<_> = (0..SLOW_SOCKETS)
            .map(|_| tokio::spawn(slow_post(addr)))
            .collect();
        let mut open = Vec::new();
        for t in tasks {
            if let Some(s) = t.await.unwrap() {
                open.push(s);
            }
        }
        open
    });
    eprintln!(
        "{} of {SLOW_SOCKETS} slow connections made in {:?}",
        slow.len(),
        started.elapsed()
    );
    let made = slow.len();
    assert!(made > 1024, "only {made} slow connections were made");
    // Let the console accept (and run out of what it has) before the device calls.
    std::thread::sleep(Duration::from_millis(500));

    let t = Instant::now();
    let openapi = quick(&url, "GET", "/openapi.json", None, None);
    assert_eq!(
        openapi,
        Ok(200),
        "GET /openapi.json after {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let beat = quick(
        &url,
        "POST",
        &format!("{API}/appliances/nuc-1/heartbeat"),
        Some(&token),
        Some(heartbeat),
    );
    assert_eq!(beat, Ok(200), "heartbeat after {:?}", t.elapsed());

    // Every slow connection is closed by the console: at once if it is over the limits, else
    // after the client timeout (with room for a loaded machine).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(CLIENT_TIMEOUT_SECS * 2 + 10);
    let closed = rt.block_on(async {
        let tasks: Vec<_> = slow
            .into_iter()
            .map(|s| tokio::spawn(closed_by(s, deadline)))
            .collect();
        let mut closed = 0;
        for t in tasks {
            closed += usize::from(t.await.unwrap());
        }
        closed
    });
    assert_eq!(closed, made, "slow connections left open by the console");
    // And the console still answers.
    assert_eq!(quick(&url, "GET", "/openapi.json", None, None), Ok(200));
}

/// Opens a connection from `from` that sends `bytes` (maybe none).
async fn open_from(from: &str, addr: SocketAddr, bytes: &[u8]) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

#[test]
fn silent_and_idle_connections_are_closed_and_the_connection_limit_holds() {
    let timeout = Duration::from_secs(2);
    let console = ConsoleProcess::start(&[
        "--client-timeout-secs",
        "2",
        "--max-connections",
        "4",
        "--max-connections-per-address",
        "4",
    ]);
    let addr = console.addr;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let margin = Duration::from_secs(5);
        // Silent from the start: closed after the client timeout.
        let silent = open_from("127.0.0.3", addr, b"").await;
        // Half a request head, then nothing.
        let partial = open_from("127.0.0.3", addr, b"GET /openapi.json HTTP/1.1\r\nHo").await;
        // A whole request answered, then idle on a kept-alive connection.
        let mut idle = open_from(
            "127.0.0.3",
            addr,
            b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
        let mut first = [0u8; 12];
        idle.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        let fourth = open_from("127.0.0.3", addr, b"").await;
        // Four connections held: a fifth waits for a slot, which opens when the client
        // timeout closes the others.
        let started = tokio::time::Instant::now();
        let mut fifth = open_from(
            "127.0.0.1",
            addr,
            b"GET /openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        let mut answer = Vec::new();
        tokio::time::timeout(timeout + margin, fifth.read_to_end(&mut answer))
            .await
            .expect("the fifth connection is served once a slot is free")
            .unwrap();
        let waited = started.elapsed();
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
        assert!(
            waited >= timeout - Duration::from_millis(600),
            "the fifth connection was served after {waited:?}, beyond the limit of four"
        );
        let deadline = started + timeout + margin;
        for (name, stream) in [
            ("silent", silent),
            ("partial head", partial),
            ("idle", idle),
            ("fourth", fourth),
        ] {
            assert!(
                closed_by(stream, deadline).await,
                "{name} connection left open"
            );
        }
    });
}

#[test]
fn a_tls_client_that_never_finishes_its_handshake_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let init = Command::new(env!("CARGO_BIN_EXE_p6os-console"))
        .args(["init", "--tls-name", "127.0.0.1", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    let console = ConsoleProcess::start(&[
        "--client-timeout-secs",
        "2",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let addr = console.addr;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let started = tokio::time::Instant::now();
        // No ClientHello at all, and the first bytes of one.
        let silent = open_from("127.0.0.1", addr, b"").await;
        let partial = open_from("127.0.0.1", addr, &[0x16, 0x03, 0x01, 0x01, 0x00]).await;
        let deadline = started + Duration::from_secs(2 + 5);
        assert!(
            closed_by(silent, deadline).await,
            "silent handshake left open"
        );
        assert!(
            closed_by(partial, deadline).await,
            "partial handshake left open"
        );
        assert!(started.elapsed() >= Duration::from_millis(1500));
    });
}
