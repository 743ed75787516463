//! The loop against consoles that are down, slow or failing (small loopback servers made
//! here); the real console is exercised in `tests/registration.rs`.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use super::*;

/// A host that records what the loop asks for and stops after `rounds` sleeps.
pub(super) struct FakeHost {
    rounds: usize,
    pub(super) waits: Vec<Duration>,
    pub(super) saved: Vec<Registration>,
    running: Running,
    installs: Vec<String>,
    downgrades: Vec<Downgrade>,
    install_result: Result<(), Failure>,
    reboots: usize,
    /// The tree a diagnostics bundle is collected from.
    pub(super) diagnostics: Option<crate::diagnostics::Sources>,
}

impl FakeHost {
    pub(super) fn new(rounds: usize) -> FakeHost {
        FakeHost {
            rounds,
            waits: Vec::new(),
            saved: Vec::new(),
            running: Running {
                slot: "a".into(),
                version: "1.0".into(),
                health: Health::Good,
                last_upgrade: None,
            },
            installs: Vec::new(),
            downgrades: Vec::new(),
            install_result: Ok(()),
            reboots: 0,
            diagnostics: None,
        }
    }
}

impl Host for FakeHost {
    fn facts(&mut self) -> Facts {
        Facts {
            hostname: "test".into(),
            cpu_count: 1,
            ..Facts::default()
        }
    }
    fn running(&mut self) -> Running {
        self.running.clone()
    }
    fn save(&mut self, reg: &Registration) {
        self.saved.push(reg.clone());
    }
    fn install(
        &mut self,
        url: &str,
        _token: &str,
        downgrade: Downgrade,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), Failure> {
        self.installs.push(url.to_string());
        self.downgrades.push(downgrade);
        progress(1, 2);
        self.install_result.clone()
    }
    fn reboot(&mut self) -> Result<(), String> {
        self.reboots += 1;
        Ok(())
    }
    fn sleep(&mut self, wait: Duration) -> bool {
        self.waits.push(wait);
        self.waits.len() < self.rounds
    }
    fn random(&mut self) -> u64 {
        0
    }
    fn diagnostics(&mut self) -> Option<crate::diagnostics::Origin> {
        self.diagnostics
            .clone()
            .map(crate::diagnostics::Origin::Tree)
    }
}

fn settings(endpoint: String) -> Settings {
    Settings {
        endpoint,
        pairing_token: "pairing-secret".into(),
        identity: p6os_protocol::identity::DeviceSecret::from_seed([1; 32]),
        ca_files: Vec::new(),
        connect_timeout: Duration::from_millis(500),
        read_timeout: Duration::from_millis(500),
        clock_file: None,
    }
}

fn fresh(endpoint: &str) -> Registration {
    Registration::resume(None, "nuc-1", endpoint)
}

/// Reads one request (head and content-length body); returns the request line.
fn read_request(stream: &TcpStream) -> Option<String> {
    let mut r = BufReader::new(stream);
    let mut first = String::new();
    r.read_line(&mut first).ok()?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    Some(first.trim().to_string())
}

/// A server on 127.0.0.1 that answers every request with `respond(n, request line)`
/// (None: accept, read, and never answer). Counts requests.
fn server(
    respond: impl Fn(usize, &str) -> Option<String> + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    thread::spawn(move || {
        let respond = Arc::new(respond);
        for stream in listener.incoming().flatten() {
            let Some(line) = read_request(&stream) else {
                continue;
            };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            match respond(n, &line) {
                Some(text) => {
                    let _ = (&stream).write_all(text.as_bytes());
                }
                // Hold the connection open past the client's read timeout.
                None => {
                    thread::spawn(move || {
                        thread::sleep(Duration::from_secs(2));
                        drop(stream);
                    });
                }
            }
        }
    });
    (endpoint, count)
}

fn json(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn a_console_that_is_down_is_retried_with_growing_waits() {
    // Bind, learn the port, close: connections are refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut host = FakeHost::new(6);
    let reg = run(&settings(endpoint.clone()), fresh(&endpoint), &mut host);
    assert_eq!(reg.phase, Phase::Unregistered);
    assert!(
        reg.last_error
            .as_deref()
            .unwrap()
            .contains("cannot connect"),
        "{reg:?}"
    );
    assert_eq!(host.waits.len(), 6);
    assert!(
        host.waits.windows(2).all(|w| w[0] < w[1]),
        "{:?}",
        host.waits
    );
    // The error was saved once, not at every attempt.
    assert_eq!(host.saved.len(), 1);
}

#[test]
fn a_silent_console_times_out_and_is_retried() {
    let (endpoint, count) = server(|_, _| None);
    let mut host = FakeHost::new(2);
    let reg = run(&settings(endpoint.clone()), fresh(&endpoint), &mut host);
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(reg.phase, Phase::Unregistered);
    let error = reg.last_error.unwrap();
    assert!(error.contains("no answer within 0.5 s"), "{error}");
}

#[test]
fn a_failing_console_is_retried_until_it_pairs_then_heartbeats() {
    let (endpoint, count) = server(|n, line| match n {
        0 => Some(json("503 Service Unavailable", r#"{"error":"overloaded"}"#)),
        1 => Some("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{oops".to_string()),
        2 => Some(json(
            "202 Accepted",
            r#"{"status":"pending","retry_secs":7,"message":"register nuc-1"}"#,
        )),
        3 => Some(json(
            "200 OK",
            r#"{"status":"ready","device_token":"dev-secret","heartbeat_secs":9}"#,
        )),
        _ => {
            assert!(
                line.starts_with("POST /api/v1/appliances/nuc-1/heartbeat "),
                "{line}"
            );
            Some(json("200 OK", r#"{"heartbeat_secs":9}"#))
        }
    });
    let mut host = FakeHost::new(6);
    let reg = run(&settings(endpoint.clone()), fresh(&endpoint), &mut host);
    assert_eq!(count.load(Ordering::SeqCst), 6);
    assert_eq!(reg.phase, Phase::Ready);
    assert_eq!(reg.device_token.as_deref(), Some("dev-secret"));
    let phases: Vec<Phase> = host.saved.iter().map(|r| r.phase).collect();
    assert_eq!(
        phases,
        [
            Phase::Unregistered, // 503 remembered as the last error
            Phase::Unregistered, // garbled answer
            Phase::Pending,
            Phase::Ready,
        ]
    );
    assert!(host.saved[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("503: overloaded"));
    // Backoff, backoff, the console's 7 s, at once, then the 9 s interval.
    assert_eq!(host.waits[3], Duration::ZERO);
    assert!(
        host.waits[2] >= Duration::from_millis(6300),
        "{:?}",
        host.waits
    );
    assert!(
        host.waits[4] >= Duration::from_millis(8100),
        "{:?}",
        host.waits
    );
}

#[test]
fn a_revoked_token_pairs_again() {
    let (endpoint, _) = server(|n, _| match n {
        0 => Some(json(
            "401 Unauthorized",
            r#"{"error":"unknown device token"}"#,
        )),
        _ => Some(json(
            "200 OK",
            r#"{"status":"ready","device_token":"new","heartbeat_secs":9}"#,
        )),
    });
    let reg = Registration {
        phase: Phase::Ready,
        device_token: Some("old".into()),
        heartbeat_secs: Some(9),
        ..fresh(&endpoint)
    };
    let mut host = FakeHost::new(2);
    let reg = run(&settings(endpoint), reg, &mut host);
    assert_eq!(reg.device_token.as_deref(), Some("new"));
    assert_eq!(host.saved[0].phase, Phase::Unregistered);
    assert_eq!(host.saved[0].device_token, None);
}

#[test]
fn a_desired_version_is_installed_then_the_device_reboots() {
    let (endpoint, count) = server(|_, _| {
        Some(json(
            "200 OK",
            r#"{"desired_version":"2.0","heartbeat_secs":9,
                "bundle":{"version":"2.0","path":"/api/v1/bundles/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/content","sha256":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","size":2}}"#,
        ))
    });
    let reg = Registration {
        phase: Phase::Ready,
        device_token: Some("tok".into()),
        ..fresh(&endpoint)
    };
    let mut host = FakeHost::new(5);
    run(&settings(endpoint.clone()), reg, &mut host);
    assert_eq!(
        host.installs,
        [format!(
            "{endpoint}/api/v1/bundles/{}/content",
            "a".repeat(64)
        )]
    );
    assert_eq!(host.reboots, 1);
    // The heartbeat that asked, one progress report, one "rebooting" report.
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[test]
fn a_refused_bundle_is_not_fetched_again() {
    let (endpoint, _) = server(|_, _| {
        Some(json(
            "200 OK",
            r#"{"desired_version":"2.0","heartbeat_secs":9,
                "bundle":{"version":"2.0","path":"/api/v1/bundles/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/content","sha256":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","size":2}}"#,
        ))
    });
    let reg = Registration {
        phase: Phase::Ready,
        device_token: Some("tok".into()),
        ..fresh(&endpoint)
    };
    let mut host = FakeHost::new(4);
    host.install_result = Err(Failure::Refused("version 2.0 rolled back here".into()));
    let reg = run(&settings(endpoint), reg, &mut host);
    assert_eq!(host.installs.len(), 1);
    assert_eq!(host.reboots, 0);
    assert_eq!(reg.refused_bundle, Some("a".repeat(64)));
}

#[test]
fn the_record_is_written_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p6os/registration.json");
    let reg = Registration {
        device_token: Some("secret".into()),
        ..fresh("http://127.0.0.1:1")
    };
    save_registration(&path, &reg).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(load_registration(&path), Some(reg));
}

#[test]
fn pairs_over_https_trusting_the_ca_from_unattended_yaml() {
    use crate::upgrade::tls::testpki;
    let pki = testpki::shared();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let server = pki.server.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let conn = rustls::ServerConnection::new(server.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let mut r = BufReader::new(&mut tls);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = r.read_exact(&mut body);
            let text = json(
                "200 OK",
                r#"{"status":"ready","device_token":"over-tls","heartbeat_secs":9}"#,
            );
            let _ = tls.write_all(text.as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("console-ca.pem");
    fs::write(&ca, &pki.ca_pem).unwrap();

    // Without the CA: the certificate is refused, and that is worth retrying (not a denial).
    let mut host = FakeHost::new(1);
    let reg = run(&settings(endpoint.clone()), fresh(&endpoint), &mut host);
    assert_eq!(reg.phase, Phase::Unregistered);
    assert!(
        reg.last_error.as_deref().unwrap().contains("certificate"),
        "{reg:?}"
    );

    let mut trusting = settings(endpoint.clone());
    trusting.ca_files = vec![ca];
    let mut host = FakeHost::new(1);
    let reg = run(&trusting, fresh(&endpoint), &mut host);
    assert_eq!(reg.phase, Phase::Ready);
    assert_eq!(reg.device_token.as_deref(), Some("over-tls"));
}

#[test]
fn a_failed_installation_is_retried_later_not_at_once() {
    let body = format!(
        r#"{{"desired_version":"2.0","heartbeat_secs":9,
            "bundle":{{"version":"2.0","path":"/api/v1/bundles/{0}/content","sha256":"{0}","size":2}}}}"#,
        "b".repeat(64)
    );
    let (endpoint, _) = server(move |_, _| Some(json("200 OK", &body)));
    let reg = Registration {
        phase: Phase::Ready,
        device_token: Some("tok".into()),
        ..fresh(&endpoint)
    };
    let mut host = FakeHost::new(2);
    host.install_result = Err(Failure::Failed("the connection dropped".into()));
    let reg = run(&settings(endpoint), reg, &mut host);
    assert_eq!(host.installs.len(), 2);
    assert_eq!(host.reboots, 0);
    assert_eq!(
        host.waits,
        [Duration::from_secs(15), Duration::from_secs(30)],
        "half of 30 s, then of 60 s (random 0)"
    );
    assert_eq!(reg.failed_bundle.unwrap().attempts, 2);
    assert_eq!(reg.refused_bundle, None);
}

/// The console's answer ordering version 0.9 (older than the running 1.0), with the
/// operator's flag or without.
fn downgrade_answer(allow: bool) -> String {
    let flag = if allow {
        r#","allow_downgrade":true"#
    } else {
        ""
    };
    json(
        "200 OK",
        &format!(
            r#"{{"desired_version":"0.9","heartbeat_secs":9{flag},
                "bundle":{{"version":"0.9","path":"/api/v1/bundles/{h}/content","sha256":"{h}","size":2}}}}"#,
            h = "b".repeat(64)
        ),
    )
}

#[test]
fn a_console_ordered_downgrade_is_refused_without_the_operators_flag() {
    let (endpoint, _) = server(|_, _| Some(downgrade_answer(false)));
    let reg = Registration {
        phase: Phase::Ready,
        device_token: Some("tok".into()),
        ..fresh(&endpoint)
    };
    let mut host = FakeHost::new(3);
    host.install_result = Err(Failure::Refused(
        "version 0.9 is not newer than the running 1.0".into(),
    ));
    let reg = run(&settings(endpoint), reg, &mut host);
    assert_eq!(host.downgrades, [Downgrade::Refuse]);
    assert_eq!(reg.refused_bundle, Some("b".repeat(64)));
}

#[test]
fn a_downgrade_refused_without_the_flag_is_tried_again_once_the_operator_allows_it() {
    let allowed = Arc::new(AtomicUsize::new(0));
    let flag = allowed.clone();
    let (endpoint, _) = server(move |_, _| Some(downgrade_answer(flag.load(Ordering::SeqCst) > 0)));
    let reg = Registration {
        phase: Phase::Ready,
        device_token: Some("tok".into()),
        refused_bundle: Some("b".repeat(64)),
        refused_downgrade: Some(Downgrade::Refuse),
        ..fresh(&endpoint)
    };
    // Refused before without the flag: not fetched again while the flag is absent...
    let mut host = FakeHost::new(2);
    let reg = run(&settings(endpoint.clone()), reg, &mut host);
    assert!(host.installs.is_empty(), "{:?}", host.installs);
    // ...and installed, allowing the downgrade, once the operator sets it.
    allowed.store(1, Ordering::SeqCst);
    let mut host = FakeHost::new(3);
    run(&settings(endpoint), reg, &mut host);
    assert_eq!(host.downgrades, [Downgrade::Allow]);
    assert_eq!(host.reboots, 1);
}
