//! Shared by the integration tests: an in-process console on 127.0.0.1:0 with its database in
//! a temporary directory, a small HTTP helper, protocol bodies and signed test bundles.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use p6os_bundle::keys::SecretKey;
use p6os_bundle::testing::TestBundle;
use p6os_console::testing::{Listen, TestConsole};
use p6os_console::Config;
use p6os_protocol::identity::DeviceSecret;
use p6os_protocol::{Disk, Facts, Health, Heartbeat, KeyProof, Nic, PairRequest, PairResponse};
use tempfile::TempDir;

pub const API: &str = p6os_protocol::API;

#[allow(unused_imports)] // each test file uses what it needs
pub use p6os_bundle::testing::{other_key, trusted_key};

/// The shared in-process console ([`TestConsole`]) with its tokens and database directory.
pub struct Server {
    pub url: String,
    pub dir: TempDir,
    /// The database (SQLite in `dir`, or PostgreSQL with `P6OS_TEST_DB=postgres`).
    pub db: p6os_console::db::DbLocation,
    pub admin: String,
    pub pairing: String,
    pub console: TestConsole,
}

impl Server {
    /// With the production log level (`info`).
    pub fn start() -> Server {
        Server::start_logging("info")
    }

    /// With the log filtered by `filter` (`EnvFilter` syntax, e.g. `trace`).
    pub fn start_logging(filter: &str) -> Server {
        Server::start_with(filter, |_| {})
    }

    /// With a clock the test drives.
    pub fn start_clocked(clock: std::sync::Arc<p6os_console::clock::ManualClock>) -> Server {
        Server::start_full("info", |_| {}, Some(clock))
    }

    /// With the log filtered by `filter`, and `adjust` applied to the configuration.
    pub fn start_with(filter: &str, adjust: impl FnOnce(&mut Config)) -> Server {
        Server::start_full(filter, adjust, None)
    }

    fn start_full(
        filter: &str,
        adjust: impl FnOnce(&mut Config),
        clock: Option<std::sync::Arc<p6os_console::clock::ManualClock>>,
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let admin = p6os_console::auth::new_token().unwrap();
        let pairing = p6os_console::auth::new_token().unwrap();
        let db = p6os_console::testing::pg::test_db(dir.path());
        let mut config = Config {
            db: db.clone(),
            bundles: dir.path().join("bundles"),
            admin_token: admin.clone(),
            pairing_token: pairing.clone(),
            trusted_keys: vec![trusted_key().public()],
            heartbeat_secs: 60,
            pending_retry_secs: 30,
            max_pending: 1000,
            pairing_rate: p6os_console::limit::DEFAULT_PAIRING_RATE,
        };
        adjust(&mut config);
        let db = config.db.clone();
        let console = TestConsole::start(
            config,
            Listen {
                log_filter: filter.into(),
                clock: clock.map(|c| c as std::sync::Arc<dyn p6os_console::clock::Clock>),
                ..Listen::default()
            },
        );
        Server {
            url: console.url(),
            dir,
            db,
            admin,
            pairing,
            console,
        }
    }

    pub fn log_text(&self) -> String {
        self.console.log_text()
    }

    /// The request log's line for `method path` answered with `status`, if there is one.
    pub fn logged(&self, method: &str, path: &str, status: u16) -> Option<String> {
        let span = format!("request{{method={method} path={path}}}:");
        let status = format!(" status={status} ");
        self.log_text()
            .lines()
            .find(|l| l.contains(&span) && l.contains(&status))
            .map(str::to_string)
    }

    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Body) -> Reply {
        call(&self.url, method, path, token, body, &[])
    }

    pub fn admin(&self, method: &str, path: &str, body: Body) -> Reply {
        self.call(method, path, Some(&self.admin), body)
    }

    /// Registers `id` with the `first-key` pairing policy (the first device key that asks is
    /// bound), as labs do; the tests of keys and approval register by hand.
    pub fn register(&self, id: &str, labels: &[(&str, &str)]) -> Reply {
        let labels: BTreeMap<_, _> = labels.iter().map(|(k, v)| (*k, *v)).collect();
        self.admin(
            "POST",
            &format!("{API}/appliances"),
            Body::json(&serde_json::json!({ "id": id, "labels": labels, "pairing": "first-key" })),
        )
    }

    /// Pairs as `id` with the device key [`device_key`]`(id)` (both rounds).
    pub fn pair(&self, id: &str, facts: Facts) -> Reply {
        self.pair_with(id, facts, &device_key(id))
    }

    /// Pairs as `id` with `key`: asks for a challenge, signs it, asks again.
    pub fn pair_with(&self, id: &str, facts: Facts, key: &DeviceSecret) -> Reply {
        pair_at(&self.url, &self.pairing, id, facts, key)
            .unwrap_or_else(|e| panic!("pair {id}: {e}"))
    }

    /// Registers and pairs `id`; its device token.
    pub fn paired(&self, id: &str, labels: &[(&str, &str)]) -> String {
        assert_eq!(self.register(id, labels).status, 201);
        let r = self.pair(id, facts(id));
        assert_eq!(r.status, 200, "{}", r.text());
        match r.json::<PairResponse>() {
            PairResponse::Ready { device_token, .. } => device_token,
            other => panic!("{other:?}"),
        }
    }

    pub fn heartbeat(&self, id: &str, token: &str, beat: &Heartbeat) -> Reply {
        self.call(
            "POST",
            &format!("{API}/appliances/{id}/heartbeat"),
            Some(token),
            Body::json(beat),
        )
    }
}

pub enum Body {
    None,
    Bytes(&'static str, Vec<u8>),
}

impl Body {
    pub fn json<T: serde::Serialize>(v: &T) -> Body {
        Body::Bytes("application/json", serde_json::to_vec(v).unwrap())
    }

    pub fn raw_json(text: &str) -> Body {
        Body::Bytes("application/json", text.as_bytes().to_vec())
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error body's field.
    pub fn field(&self) -> Option<String> {
        self.json::<p6os_protocol::ErrorBody>().field
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        // A page's redirect (to the login) is the answer a test looks at.
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Pairs as `id` with `key` at the console `base`: asks for a challenge, signs it, asks again.
/// The last answer; an error when the console cannot be reached.
pub fn pair_at(
    base: &str,
    pairing: &str,
    id: &str,
    facts: Facts,
    key: &DeviceSecret,
) -> Result<Reply, ureq::Error> {
    let mut req = PairRequest {
        pairing_token: pairing.to_string(),
        facts,
        device_key: Some(key.public().encode()),
        proof: None,
    };
    let path = format!("{API}/appliances/{id}/pair");
    let r = try_call(base, "POST", &path, None, Body::json(&req), &[])?;
    if r.status != 200 {
        return Ok(r);
    }
    let PairResponse::Challenge { challenge } = r.json() else {
        panic!("no challenge: {}", r.text())
    };
    req.proof = Some(KeyProof {
        signature: key.sign_pair(id, &challenge),
        challenge,
    });
    try_call(base, "POST", &path, None, Body::json(&req), &[])
}

/// One request to `base` (always a loopback address in these tests).
pub fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Body,
    headers: &[(&str, &str)],
) -> Reply {
    try_call(base, method, path, token, body, headers)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// [`call`], with the transport error.
pub fn try_call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Body,
    headers: &[(&str, &str)],
) -> Result<Reply, ureq::Error> {
    let mut b = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"));
    if let Some(t) = token {
        b = b.header("Authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let agent = agent();
    let result = match body {
        Body::None => agent.run(b.body(()).unwrap()),
        Body::Bytes(ct, bytes) => agent.run(b.header("Content-Type", ct).body(bytes).unwrap()),
    };
    let mut r = result?;
    let body = r.body_mut().with_config().limit(1 << 30).read_to_vec()?;
    Ok(Reply {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body,
    })
}

/// A device key made from `name` (the same name, the same key).
pub fn device_key(name: &str) -> DeviceSecret {
    use sha2::Digest as _;
    DeviceSecret::from_seed(sha2::Sha256::digest(name.as_bytes()).into())
}

pub fn facts(host: &str) -> Facts {
    Facts {
        hostname: host.into(),
        name: None,
        labels: BTreeMap::new(),
        cpu_model: "QEMU Virtual CPU version 2.5+".into(),
        cpu_count: 2,
        memory_bytes: 2 << 30,
        disks: vec![Disk {
            name: "vda".into(),
            size_bytes: 8 << 30,
            model: Some("QEMU HARDDISK".into()),
            removable: false,
        }],
        nics: vec![Nic {
            name: "eth0".into(),
            mac: Some("52:54:00:12:34:56".into()),
            addresses: vec!["10.0.2.15/24".into(), "fe80::5054:ff:fe12:3456/64".into()],
        }],
        arch: "x86_64".into(),
        base_os: "P6OS minimal".into(),
        kernel: "6.1.0-18-amd64".into(),
        image_name: "tiny".into(),
        image_version: "1.0.0".into(),
        agent_version: "0.1.0".into(),
        slot: "a".into(),
    }
}

pub fn beat(version: &str) -> Heartbeat {
    Heartbeat {
        slot: "a".into(),
        version: version.into(),
        health: Health::Good,
        last_upgrade: None,
        progress: None,
        facts: None,
    }
}

/// A small signed bundle; `seed` varies the payload bytes.
pub fn bundle(key: &SecretKey, name: &str, version: &str, seed: u8) -> Vec<u8> {
    TestBundle::new(name, version).seed(seed).sign(key)
}

/// Runs the operator CLI (the real binary) against `s` with its admin token and no proxy
/// from the environment: (exit code, stdout, stderr).
pub fn cli(s: &Server, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_p6os-console"))
        .args(["--url", &s.url])
        .args(args)
        .env("P6OS_CONSOLE_ADMIN_TOKEN", &s.admin)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
