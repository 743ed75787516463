//! Several consoles, one PostgreSQL database: two real `p6os-console serve` processes on a
//! throwaway PostgreSQL server (`p6os_console::testing::pg`), with one bundles directory.
//!
//! - A device asks one console for its pairing challenge and proves its key to the other (the
//!   challenge secret is in the database); it reports through either; what an operator does
//!   on one console is in the next answer of the other; a bundle uploaded to one is served by
//!   the other.
//! - A staged rollout over 12 devices whose heartbeats alternate between the consoles: one
//!   console is killed with SIGKILL in the middle of a wave and the devices go on through the
//!   other. Every member is handed the version exactly once, in its wave's order, and the
//!   rollout completes.
//!
//! Skipped (saying so) without Debian's postgresql-15, except where `P6OS_TEST_DB_REQUIRED`
//! is set (`cargo xtask test`).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use p6os_console::testing::pg::{or_skip, Cluster};
use p6os_protocol::rollout::{Rollout, RolloutDevicePage, RolloutState};
use p6os_protocol::{EventPage, HeartbeatResponse, PairResponse};

struct Console {
    child: Child,
    url: String,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Shared {
    db: String,
    dir: tempfile::TempDir,
    admin: String,
    pairing: String,
}

fn setup() -> Option<(Cluster, Shared)> {
    let cluster = or_skip(Cluster::start())?;
    let db = cluster.create_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("trusted.pub"),
        p6os_bundle::testing::trusted_key().public().to_file(),
    )
    .unwrap();
    let shared = Shared {
        db,
        dir,
        admin: p6os_console::auth::new_token().unwrap(),
        pairing: p6os_console::auth::new_token().unwrap(),
    };
    Some((cluster, shared))
}

/// A console on the shared database and bundles directory; its log in `dir/<name>.log`.
fn start(s: &Shared, name: &str) -> Console {
    let log = std::fs::File::create(s.dir.path().join(format!("{name}.log"))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_p6os-console"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--pairing-rate",
            "100000",
        ])
        .arg("--db")
        .arg(&s.db)
        .arg("--bundles")
        .arg(s.dir.path().join("bundles"))
        .arg("--trusted-key")
        .arg(s.dir.path().join("trusted.pub"))
        .env("P6OS_CONSOLE_ADMIN_TOKEN", &s.admin)
        .env("P6OS_CONSOLE_PAIRING_TOKEN", &s.pairing)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("p6os-console: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Console { child, url }
}

fn admin(s: &Shared, c: &Console, method: &str, path: &str, body: Body) -> Reply {
    call(&c.url, method, path, Some(&s.admin), body, &[])
}

fn register(s: &Shared, c: &Console, id: &str) {
    let r = admin(
        s,
        c,
        "POST",
        &format!("{API}/appliances"),
        Body::json(
            &serde_json::json!({ "id": id, "labels": {"site": "s"}, "pairing": "first-key" }),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text());
}

fn token(r: &Reply) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    match r.json::<PairResponse>() {
        PairResponse::Ready { device_token, .. } => device_token,
        other => panic!("{other:?}"),
    }
}

fn heartbeat(c: &Console, id: &str, token: &str, beat: &p6os_protocol::Heartbeat) -> Option<Reply> {
    try_call(
        &c.url,
        "POST",
        &format!("{API}/appliances/{id}/heartbeat"),
        Some(token),
        Body::json(beat),
        &[],
    )
    .ok()
}

#[test]
fn a_device_pairs_through_one_console_and_reports_through_the_other() {
    let Some((_cluster, s)) = setup() else {
        return;
    };
    let a = start(&s, "a");
    let b = start(&s, "b");
    register(&s, &a, "d-1");
    // The challenge from A, the proof to B.
    let key = device_key("d-1");
    let mut req = p6os_protocol::PairRequest {
        pairing_token: s.pairing.clone(),
        facts: facts("d-1"),
        device_key: Some(key.public().encode()),
        proof: None,
    };
    let path = format!("{API}/appliances/d-1/pair");
    let r = call(&a.url, "POST", &path, None, Body::json(&req), &[]);
    let PairResponse::Challenge { challenge } = r.json() else {
        panic!("no challenge: {}", r.text())
    };
    req.proof = Some(p6os_protocol::KeyProof {
        signature: key.sign_pair("d-1", &challenge),
        challenge,
    });
    let device = token(&call(&b.url, "POST", &path, None, Body::json(&req), &[]));
    // It reports through A; B shows it.
    let r = heartbeat(&a, "d-1", &device, &beat("1.0.0")).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let shown = admin(&s, &b, "GET", &format!("{API}/appliances/d-1"), Body::None);
    assert_eq!(
        shown.json::<serde_json::Value>()["reported"]["version"],
        "1.0.0"
    );
    // A bundle uploaded to A is served by B (one bundles directory).
    let bytes = bundle(&p6os_bundle::testing::trusted_key(), "tiny", "2.0.0", 1);
    let up = call(
        &a.url,
        "POST",
        &format!("{API}/bundles"),
        Some(&s.admin),
        Body::Bytes("application/octet-stream", bytes.clone()),
        &[],
    );
    assert_eq!(up.status, 201, "{}", up.text());
    // An operator's order on B is in A's next answer.
    let r = admin(
        &s,
        &b,
        "PUT",
        &format!("{API}/appliances/d-1/desired"),
        Body::json(&serde_json::json!({ "version": "2.0.0" })),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let answer: HeartbeatResponse = heartbeat(&a, "d-1", &device, &beat("1.0.0"))
        .unwrap()
        .json();
    assert_eq!(answer.desired_version.as_deref(), Some("2.0.0"));
    let bundle_path = answer.bundle.unwrap().path;
    let got = call(&b.url, "GET", &bundle_path, Some(&device), Body::None, &[]);
    assert_eq!(got.status, 200);
    assert_eq!(got.body, bytes);
}

#[test]
fn a_wave_advances_once_with_two_consoles_and_one_killed_mid_wave() {
    let Some((_cluster, s)) = setup() else {
        return;
    };
    let a = start(&s, "a");
    let mut b = Some(start(&s, "b"));
    let ids: Vec<String> = (0..12).map(|i| format!("d-{i:02}")).collect();
    let mut devices = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        register(&s, &a, id);
        let via = if i % 2 == 0 {
            &a.url
        } else {
            &b.as_ref().unwrap().url
        };
        let r = pair_at(via, &s.pairing, id, facts(id), &device_key(id)).unwrap();
        devices.push((id.clone(), token(&r)));
    }
    let up = call(
        &a.url,
        "POST",
        &format!("{API}/bundles"),
        Some(&s.admin),
        Body::Bytes(
            "application/octet-stream",
            bundle(&p6os_bundle::testing::trusted_key(), "tiny", "2.0.0", 1),
        ),
        &[],
    );
    assert_eq!(up.status, 201, "{}", up.text());
    // Waves 1, 10% (2 in all), 100%.
    let r = admin(
        &s,
        b.as_ref().unwrap(),
        "POST",
        &format!("{API}/rollouts"),
        Body::json(&serde_json::json!({ "version": "2.0.0", "selector": {"site": "s"} })),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let rollout: Rollout = r.json();

    // Devices report through both consoles, alternating; a device handed 2.0.0 runs it
    // (blessed) from its next report on. Four threads, three devices each.
    let urls = Arc::new(std::sync::Mutex::new(vec![
        a.url.clone(),
        b.as_ref().unwrap().url.clone(),
    ]));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for chunk in devices.chunks(3) {
        let chunk = chunk.to_vec();
        let urls = Arc::clone(&urls);
        let stop = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            let mut running: Vec<bool> = vec![false; chunk.len()];
            let mut round = 0usize;
            while !stop.load(Ordering::Relaxed) {
                for (k, (id, token)) in chunk.iter().enumerate() {
                    let version = if running[k] { "2.0.0" } else { "1.0.0" };
                    let list = urls.lock().unwrap().clone();
                    let url = &list[(round + k) % list.len()];
                    let Ok(r) = try_call(
                        url,
                        "POST",
                        &format!("{API}/appliances/{id}/heartbeat"),
                        Some(token),
                        Body::json(&beat(version)),
                        &[],
                    ) else {
                        continue; // the killed console: the next round goes elsewhere
                    };
                    if r.status == 200 {
                        let answer: HeartbeatResponse = r.json();
                        if answer.desired_version.as_deref() == Some("2.0.0") {
                            running[k] = true;
                        }
                    }
                }
                round += 1;
                std::thread::sleep(Duration::from_millis(250));
            }
        }));
    }
    let show = |c: &Console| -> Rollout {
        admin(
            &s,
            c,
            "GET",
            &format!("{API}/rollouts/{}", rollout.id),
            Body::None,
        )
        .json()
    };
    let start_time = Instant::now();
    loop {
        let r = show(&a);
        // In the middle of the last wave: B goes, without a word.
        if r.wave == 2 && r.totals.blessed < 12 {
            if let Some(mut killed) = b.take() {
                urls.lock().unwrap().retain(|u| *u != killed.url);
                killed.child.kill().unwrap(); // SIGKILL
                killed.child.wait().unwrap();
                eprintln!("killed console b at {} blessed", r.totals.blessed);
            }
        }
        if r.state == RolloutState::Completed {
            break;
        }
        assert!(
            start_time.elapsed() < Duration::from_secs(120),
            "the rollout did not complete: {r:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(b.is_none(), "console b was never killed mid-wave");
    let r = show(&a);
    assert_eq!(r.totals.blessed, 12, "{r:#?}");
    // Every member was handed 2.0.0 exactly once, by its wave.
    let members: RolloutDevicePage = admin(
        &s,
        &a,
        "GET",
        &format!("{API}/rollouts/{}/devices?limit=100", rollout.id),
        Body::None,
    )
    .json();
    assert_eq!(members.items.len(), 12);
    for m in &members.items {
        let events: EventPage = admin(
            &s,
            &a,
            "GET",
            &format!("{API}/appliances/{}/events?limit=500", m.id),
            Body::None,
        )
        .json();
        let handed: Vec<&str> = events
            .items
            .iter()
            .filter(|e| e.message.contains("desired version set to 2.0.0"))
            .map(|e| e.message.as_str())
            .collect();
        assert_eq!(handed.len(), 1, "{}: {handed:?}", m.id);
        assert!(
            handed[0].contains(&format!("(wave {})", m.wave + 1)),
            "{}: {handed:?}",
            m.id
        );
    }
    assert_eq!(members.items[0].wave, 0, "the canary is the first id");
    // Each step of the rollout was taken once, by one console or the other.
    let logs = ["a", "b"]
        .map(|n| std::fs::read_to_string(s.dir.path().join(format!("{n}.log"))).unwrap())
        .join("\n");
    let steps = |needle: &str| {
        logs.lines()
            .filter(|l| l.contains(" rollout ") || l.ends_with(" rollout"))
            .filter(|l| l.contains(needle))
            .count()
    };
    assert_eq!(steps("wave=1"), 1, "{logs}");
    assert_eq!(steps("wave=2 reason=\"\""), 1, "{logs}");
    assert_eq!(steps("state=\"completed\""), 1, "{logs}");
}
