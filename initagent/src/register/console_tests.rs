//! The registration loop against the real console (`p6os_console`, in-process on 127.0.0.1,
//! a real SQLite file): pending until the operator registers the id, ready, heartbeats; the
//! console stopped (backoff, the token kept) and started again on the same database (the same
//! token works); the appliance deleted by the operator (the device pairs again).

use std::path::Path;

use p6os_console::testing::{Listen, TestConsole};
use p6os_console::Config;

use super::tests::FakeHost;
use super::*;

const ADMIN: &str = "admin-token-for-the-agent-tests";
const PAIRING: &str = "pairing-token-for-the-agent-tests";

/// The shared in-process console on `port` (0: any) over the database in `dir`; stopped on
/// drop.
struct Console {
    console: TestConsole,
}

impl Console {
    fn start(dir: &Path, port: u16) -> Console {
        Console::start_with(dir, port, None)
    }

    /// With `tls`: https with that certificate and key.
    fn start_with(dir: &Path, port: u16, tls: Option<(PathBuf, PathBuf)>) -> Console {
        let config = Config {
            db: dir.join("console.db").into(),
            bundles: dir.join("bundles"),
            admin_token: ADMIN.into(),
            pairing_token: PAIRING.into(),
            trusted_keys: Vec::new(),
            heartbeat_secs: 7,
            pending_retry_secs: 3,
            max_pending: 1000,
            pairing_rate: p6os_console::limit::DEFAULT_PAIRING_RATE,
        };
        Console {
            console: TestConsole::start(
                config,
                Listen {
                    port,
                    tls,
                    ..Listen::default()
                },
            ),
        }
    }

    fn port(&self) -> u16 {
        self.console.addr.port()
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// An operator request with the admin token; returns the status.
    fn operator(&self, method: &str, path: &str, body: Option<&str>) -> u16 {
        let url = format!("{}{path}", self.endpoint());
        http::call(
            method,
            &url,
            Some(ADMIN),
            body.map(str::as_bytes),
            http::RetryPolicy::default(),
        )
        .unwrap()
        .0
    }

    fn stop(self) {
        self.console.stop();
    }
}

fn settings(endpoint: &str) -> Settings {
    Settings {
        endpoint: endpoint.to_string(),
        pairing_token: PAIRING.into(),
        identity: DeviceSecret::from_seed([9; 32]),
        ca_files: Vec::new(),
        connect_timeout: Duration::from_millis(500),
        read_timeout: Duration::from_secs(5),
        clock_file: None,
    }
}

#[test]
fn pending_ready_console_restarted_and_appliance_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let console = Console::start(dir.path(), 0);
    let port = console.port();
    let endpoint = console.endpoint();
    let s = settings(&endpoint);
    let reg = Registration::resume(None, "store-7", &endpoint);

    // Unknown to the console: pending, asked again after the console's 3 s.
    let mut host = FakeHost::new(1);
    let reg = run(&s, reg, &mut host);
    assert_eq!(reg.phase, Phase::Pending);
    assert!(
        host.waits[0] >= Duration::from_millis(2700),
        "{:?}",
        host.waits
    );

    // The operator registers it: paired, then a heartbeat at the console's 7 s interval.
    let body = r#"{"id": "store-7", "labels": {"site": "store-7"}, "pairing": "first-key"}"#;
    assert_eq!(
        console.operator("POST", "/api/v1/appliances", Some(body)),
        201
    );
    let mut host = FakeHost::new(2);
    let reg = run(&s, reg, &mut host);
    assert_eq!(reg.phase, Phase::Ready);
    assert_eq!(reg.heartbeat_secs, Some(7));
    assert_eq!(host.waits[0], Duration::ZERO);
    assert!(
        host.waits[1] >= Duration::from_millis(6300),
        "{:?}",
        host.waits
    );
    let token = reg.device_token.clone().unwrap();

    // The console goes away: heartbeats fail, the waits grow (capped by the interval), the
    // device stays paired with its token.
    console.stop();
    let mut host = FakeHost::new(4);
    let reg = run(&s, reg, &mut host);
    assert_eq!(reg.phase, Phase::Ready);
    assert_eq!(reg.device_token.as_deref(), Some(token.as_str()));
    assert!(
        reg.last_error
            .as_deref()
            .unwrap()
            .contains("cannot connect"),
        "{reg:?}"
    );
    assert!(
        host.waits.windows(2).all(|w| w[0] <= w[1]),
        "{:?}",
        host.waits
    );
    assert!(host.waits.iter().all(|w| *w <= Duration::from_secs(7)));

    // Back on the same database: the same token is accepted.
    let console = Console::start(dir.path(), port);
    let mut host = FakeHost::new(1);
    let reg = run(&s, reg, &mut host);
    assert_eq!(reg.phase, Phase::Ready);
    assert_eq!(reg.last_error, None);
    assert_eq!(reg.device_token.as_deref(), Some(token.as_str()));

    // The operator deletes it: the token stops working, the device pairs again and is
    // pending (its id is unknown again).
    assert_eq!(
        console.operator("DELETE", "/api/v1/appliances/store-7", None),
        204
    );
    let mut host = FakeHost::new(2);
    let reg = run(&s, reg, &mut host);
    assert_eq!(reg.phase, Phase::Pending);
    assert_eq!(reg.device_token, None);
}

#[test]
fn pairs_over_https_with_the_ca_made_by_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, chain, key) = p6os_console::tls::make_certificates(&["127.0.0.1".into()]).unwrap();
    let files = ["ca.pem", "tls.crt", "tls.key"].map(|n| dir.path().join(n));
    for (path, text) in files.iter().zip([&ca, &chain, &key]) {
        fs::write(path, text).unwrap();
    }
    let console = Console::start_with(dir.path(), 0, Some((files[1].clone(), files[2].clone())));
    let endpoint = format!("https://127.0.0.1:{}", console.port());
    let mut s = settings(&endpoint);
    let reg = Registration::resume(None, "store-8", &endpoint);
    // Without the CA: refused certificate, retried later.
    let mut host = FakeHost::new(1);
    let reg = run(&s, reg, &mut host);
    assert_eq!(reg.phase, Phase::Unregistered);
    assert!(
        reg.last_error.as_deref().unwrap().contains("certificate"),
        "{reg:?}"
    );
    // With the console's CA (what unattended.yaml `console.ca` gives): pending.
    s.ca_files = vec![files[0].clone()];
    let mut host = FakeHost::new(1);
    let reg = run(&s, reg, &mut host);
    assert_eq!(reg.phase, Phase::Pending, "{reg:?}");
}

/// Issue 15, finding 5: a proxy or WAF that answers one heartbeat with 403 used to orphan the
/// device for good (the token dropped, the id paired already: 409 for ever). Now the device
/// proves its key, gets a new token and goes on reporting, with no operator.
#[test]
fn one_refused_heartbeat_does_not_orphan_the_device() {
    use std::io::{Read as _, Write as _};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let console = Console::start(dir.path(), 0);
    let upstream = console.console.addr;
    // A proxy on loopback: forwards each request (one per connection), but answers the first
    // heartbeat it sees with 403 itself.
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", proxy.local_addr().unwrap());
    let refused = Arc::new(AtomicBool::new(false));
    let refused_in_proxy = refused.clone();
    std::thread::spawn(move || {
        for client in proxy.incoming().flatten() {
            let Some((head, body)) = read_whole_request(&client) else {
                continue;
            };
            let mut client = client;
            if head.contains("/heartbeat ") && !refused_in_proxy.swap(true, Ordering::SeqCst) {
                let body = r#"{"error":"blocked by policy"}"#;
                let _ = write!(
                    client,
                    "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                continue;
            }
            let (line, rest) = head.split_once("\r\n").unwrap_or((&head, ""));
            let Ok(mut up) = TcpStream::connect(upstream) else {
                continue;
            };
            let _ = write!(up, "{line}\r\nConnection: close\r\n{rest}");
            let _ = up.write_all(&body);
            let mut answer = Vec::new();
            let _ = up.read_to_end(&mut answer);
            let _ = client.write_all(&answer);
        }
    });
    let s = settings(&endpoint);
    let body = r#"{"id": "store-9", "pairing": "first-key"}"#;
    assert_eq!(
        console.operator("POST", "/api/v1/appliances", Some(body)),
        201
    );
    // Pairs, heartbeats (refused by the proxy), pairs again by its key, heartbeats.
    let mut host = FakeHost::new(4);
    let reg = run(
        &s,
        Registration::resume(None, "store-9", &endpoint),
        &mut host,
    );
    assert!(refused.load(Ordering::SeqCst), "the proxy refused nothing");
    assert_eq!(reg.phase, Phase::Ready, "{reg:?}");
    assert_eq!(reg.last_error, None, "{reg:?}");
    let phases: Vec<Phase> = host.saved.iter().map(|r| r.phase).collect();
    assert!(phases.contains(&Phase::Unregistered), "{phases:?}");
    assert_eq!(
        console.operator("GET", "/api/v1/appliances/store-9", None),
        200
    );
    // The console saw a heartbeat after the refusal, with the new token.
    let url = format!("{}/api/v1/appliances/store-9/events", console.endpoint());
    let (_, events) =
        http::call("GET", &url, Some(ADMIN), None, http::RetryPolicy::default()).unwrap();
    let events = String::from_utf8_lossy(&events);
    assert!(events.contains("got a new token"), "{events}");
    assert!(events.contains("first-heartbeat"), "{events}");
}

/// One request: its head (through the blank line) and its Content-Length body.
fn read_whole_request(stream: &std::net::TcpStream) -> Option<(String, Vec<u8>)> {
    use std::io::{BufRead as _, BufReader, Read as _};
    let mut r = BufReader::new(stream);
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// The console asks for diagnostics; the loop hands the request on at the next heartbeat, the
/// bundle is collected from a prepared tree and uploaded with the device token, and the
/// operator downloads it: the manifest first, the slot record in it, no secret.
#[test]
fn diagnostics_bundle_from_the_heartbeat_loop_to_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let console = Console::start(dir.path(), 0);
    let endpoint = console.endpoint();
    let s = settings(&endpoint);
    let body = r#"{"id": "store-9", "pairing": "first-key"}"#;
    assert_eq!(
        console.operator("POST", "/api/v1/appliances", Some(body)),
        201
    );
    let reg = run(
        &s,
        Registration::resume(None, "store-9", &endpoint),
        &mut FakeHost::new(1),
    );
    assert_eq!(reg.phase, Phase::Ready);

    let admin = |method: &str, path: &str, body: Option<&str>| {
        http::call(
            method,
            &format!("{endpoint}{path}"),
            Some(ADMIN),
            body.map(str::as_bytes),
            http::RetryPolicy::default(),
        )
        .unwrap()
    };
    let (status, created) = admin("POST", "/api/v1/appliances/store-9/diagnostics", Some("{}"));
    assert_eq!(status, 201);
    let asked: p6os_protocol::diagnostics::Diagnostics = serde_json::from_slice(&created).unwrap();

    let (_tree, sources) = crate::diagnostics::tests::tree();
    let mut host = FakeHost::new(1);
    host.diagnostics = Some(sources);
    let reg = run(&s, reg, &mut host);
    assert_eq!(reg.phase, Phase::Ready);
    // The job runs beside the loop: the console has the bundle within a few seconds.
    let path = format!("/api/v1/diagnostics/{}", asked.id);
    let deadline = Instant::now() + Duration::from_secs(30);
    let shown = loop {
        let (_, body) = admin("GET", &path, None);
        let d: p6os_protocol::diagnostics::Diagnostics = serde_json::from_slice(&body).unwrap();
        if d.sha256.is_some() || Instant::now() > deadline {
            break d;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        shown.status,
        p6os_protocol::diagnostics::DiagnosticsStatus::Uploaded,
        "{shown:?}"
    );
    let (status, bundle) = admin("GET", &format!("{path}/content"), None);
    assert_eq!(status, 200);
    assert_eq!(bundle.len() as u64, shown.size.unwrap());
    let tar = zstd::stream::decode_all(&bundle[..]).unwrap();
    let mut names = Vec::new();
    let mut all = Vec::new();
    for entry in ::tar::Archive::new(&tar[..]).entries().unwrap() {
        let mut e = entry.unwrap();
        names.push(e.path().unwrap().to_string_lossy().into_owned());
        std::io::Read::read_to_end(&mut e, &mut all).unwrap();
    }
    assert_eq!(names[0], "manifest.json");
    assert!(names.iter().any(|n| n == "boot/slots.json"), "{names:?}");
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("health check k3s failed"));
    assert!(!text.contains("SECRET"), "a secret reached the console");

    // Answered: the next heartbeats carry no request, and no second upload is made.
    let mut host = FakeHost::new(2);
    run(&s, reg, &mut host);
    let (_, listed) = admin("GET", "/api/v1/appliances/store-9/diagnostics", None);
    let page: p6os_protocol::diagnostics::DiagnosticsPage =
        serde_json::from_slice(&listed).unwrap();
    assert_eq!(page.items.len(), 1);
}
