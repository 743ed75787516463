//! Through a real proxy: Debian's tinyproxy, started by the test on a port of 127.0.0.1 with a
//! configuration of its own (in the foreground, killed at the end), in front of the loopback
//! test servers. Without the `tinyproxy` binary these tests say so and pass (CI installs it);
//! the ones that need no proxy program always run.

use std::fs;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A tinyproxy process, killed on drop.
struct Tinyproxy {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Tinyproxy {
    /// Starts tinyproxy with `extra` configuration lines; `None` (with a message) when the
    /// program is not installed.
    fn start(test: &str, extra: &str) -> Option<Tinyproxy> {
        let dir = tempfile::tempdir().unwrap();
        let port = closed_port();
        let config = dir.path().join("tinyproxy.conf");
        let log = dir.path().join("tinyproxy.log");
        fs::write(
            &config,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Info\n\
                 Allow 127.0.0.1\n{extra}",
                log.display()
            ),
        )
        .unwrap();
        let spawned = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                eprintln!(
                    "{test}: SKIPPED: no tinyproxy program (apt-get install tinyproxy; CI has it)"
                );
                return None;
            }
            Err(e) => panic!("cannot start tinyproxy: {e}"),
        };
        let mut proxy = Tinyproxy { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("tinyproxy stopped ({status}): {}", proxy.log());
            }
            assert!(
                Instant::now() < deadline,
                "tinyproxy does not listen: {}",
                proxy.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(proxy)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("tinyproxy.log")).unwrap_or_default()
    }

    /// How many tunnels the proxy was asked for to 127.0.0.1:`port`.
    fn tunnels_to(&self, port: u16) -> usize {
        self.log()
            .matches(&format!("CONNECT 127.0.0.1:{port} HTTP/1.1"))
            .count()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Proxy variables as given.
fn env(vars: &[(&str, &str)]) -> ProxyEnv {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    ProxyEnv::from_lookup(move |name| vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()))
}

#[test]
fn plain_http_goes_through_the_proxy_and_resumes_there() {
    let Some(proxy) = Tinyproxy::start("plain_http_goes_through_the_proxy_and_resumes_there", "")
    else {
        return;
    };
    let server = serve(Behaviour {
        drop_at: vec![500 * KIB],
        ..Behaviour::default()
    });
    let policy = RetryPolicy {
        proxies: env(&[("http_proxy", &proxy.url()), ("no_proxy", "example.org")]),
        ..quick(1)
    };
    let (data, source) = download(&format!("{}/bundle.p6b", server.base), policy);
    assert!(data.unwrap() == body());
    assert_eq!(source.resumes(), 1);
    assert_eq!(proxy.tunnels_to(server.port), 2, "{}", proxy.log());
    let heads = server.heads();
    assert!(heads[1].contains("range: bytes=512000-\r\n"), "{heads:?}");
}

#[test]
fn https_goes_through_a_connect_tunnel() {
    let Some(proxy) = Tinyproxy::start("https_goes_through_a_connect_tunnel", "") else {
        return;
    };
    let server = serve(Behaviour {
        drop_at: vec![1024 * KIB],
        tls: Some(testpki::shared()),
        ..Behaviour::default()
    });
    let policy = RetryPolicy {
        // Upper case works too; the http_proxy variable is not the one for https.
        proxies: env(&[
            ("HTTPS_PROXY", &proxy.url()),
            ("http_proxy", "http://127.0.0.1:1"),
        ]),
        ..server.quick(1)
    };
    let url = format!("{}/bundle.p6b", server.base);
    let mut source = HttpSource::open_with_bearer(&url, policy, "device-token").unwrap();
    let mut data = Vec::new();
    source.read_to_end(&mut data).unwrap();
    assert!(data == body());
    assert_eq!(source.resumes(), 1);
    assert_eq!(proxy.tunnels_to(server.port), 2, "{}", proxy.log());
    // Inside the tunnel, the server gets the request as without a proxy, token included.
    for head in server.heads() {
        assert!(head.starts_with("GET /bundle.p6b HTTP/1.1\r\n"), "{head}");
        assert!(
            head.contains("authorization: Bearer device-token"),
            "{head}"
        );
    }
    // The proxy saw no request of its own but the tunnels, so never the token.
    assert!(!proxy.log().contains("device-token"), "{}", proxy.log());
}

#[test]
fn no_proxy_bypasses_a_running_proxy() {
    let Some(proxy) = Tinyproxy::start("no_proxy_bypasses_a_running_proxy", "") else {
        return;
    };
    for tls in schemes() {
        let server = serve(Behaviour {
            tls,
            ..Behaviour::default()
        });
        let policy = RetryPolicy {
            proxies: env(&[
                ("http_proxy", &proxy.url()),
                ("https_proxy", &proxy.url()),
                ("no_proxy", "localhost, 127.0.0.0/8"),
            ]),
            ..server.quick(0)
        };
        let (data, _) = download(&format!("{}/bundle.p6b", server.base), policy);
        assert!(data.unwrap() == body());
        assert_eq!(proxy.tunnels_to(server.port), 0, "{}", proxy.log());
    }
}

#[test]
fn a_proxy_that_refuses_the_tunnel_is_a_clear_error() {
    // Squid's default: tunnels to port 443 only.
    let Some(proxy) = Tinyproxy::start(
        "a_proxy_that_refuses_the_tunnel_is_a_clear_error",
        "ConnectPort 443\n",
    ) else {
        return;
    };
    let server = serve(Behaviour::default());
    let policy = RetryPolicy {
        proxies: env(&[("http_proxy", &proxy.url())]),
        ..quick(0)
    };
    let url = format!("{}/bundle.p6b", server.base);
    let error = HttpSource::open(&url, policy).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{url}: no tunnel through the proxy {} (http_proxy): it answered 403 Forbidden",
            proxy.url()
        )
    );
    assert!(server.heads().is_empty());
}

#[test]
fn no_proxy_bypasses_an_unreachable_proxy_that_is_otherwise_an_error() {
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let server = serve(Behaviour::default());
    let url = format!("{}/bundle.p6b", server.base);
    let through = |no_proxy: &str| RetryPolicy {
        proxies: env(&[("http_proxy", &dead), ("no_proxy", no_proxy)]),
        ..quick(0)
    };
    let (data, _) = download(&url, through("127.0.0.1"));
    assert!(data.unwrap() == body());

    // Loopback is not bypassed by itself (curl's rule).
    let error = HttpSource::open(&url, through("localhost")).unwrap_err();
    let message = error_chain(&error);
    assert!(
        message.starts_with(&format!(
            "{url}: cannot connect to the proxy {dead} (http_proxy): "
        )),
        "{message}"
    );
    assert_eq!(server.heads().len(), 1);

    // A proxy value that cannot be used is an error for the URLs that would use it.
    let policy = RetryPolicy {
        proxies: env(&[("http_proxy", "socks5://127.0.0.1:1080")]),
        ..quick(0)
    };
    let error = HttpSource::open(&url, policy).unwrap_err();
    assert_eq!(
        error_chain(&error),
        format!(
            "{url}: cannot use the proxy: http_proxy=\"socks5://127.0.0.1:1080\" is not a usable \
             proxy: SOCKS proxies are not supported"
        )
    );
}
