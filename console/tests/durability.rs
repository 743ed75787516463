//! Crash safety: the real binary is killed with SIGKILL while 8 clients register, pair and
//! heartbeat; after a restart on the same database every pairing that was acknowledged is
//! still `ready`, and SQLite's integrity check passes.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use p6os_protocol::{PairResponse, Status};

struct Console {
    child: Child,
    url: String,
}

fn start(dir: &Path, admin: &str, pairing: &str) -> Console {
    let mut child = Command::new(env!("CARGO_BIN_EXE_p6os-console"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--pairing-rate",
            "100000",
        ])
        .arg("--db")
        .arg(dir.join("console.db"))
        .arg("--bundles")
        .arg(dir.join("bundles"))
        .env("P6OS_CONSOLE_ADMIN_TOKEN", admin)
        .env("P6OS_CONSOLE_PAIRING_TOKEN", pairing)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    Console { child, url }
}

/// Registers, pairs and heartbeats distinct ids until the console goes away; the ids whose
/// pairing was acknowledged with 200.
fn client(url: String, admin: String, pairing: String, n: usize) -> Vec<String> {
    let agent = agent();
    let mut acked = Vec::new();
    let mut i = 0;
    // Bounded: the kill ends it long before.
    while i < 10_000 {
        let id = format!("dev-{n}-{i}");
        i += 1;
        let register = agent
            .post(format!("{url}{API}/appliances"))
            .header("Authorization", format!("Bearer {admin}"))
            .send_json(serde_json::json!({ "id": id, "pairing": "first-key" }));
        if register.is_err() {
            break;
        }
        let Ok(r) = pair_at(&url, &pairing, &id, facts(&id), &device_key(&id)) else {
            break;
        };
        if r.status != 200 {
            continue;
        }
        let Ok(PairResponse::Ready { device_token, .. }) = serde_json::from_slice(&r.body) else {
            break;
        };
        acked.push(id.clone());
        let beat = agent
            .post(format!("{url}{API}/appliances/{id}/heartbeat"))
            .header("Authorization", format!("Bearer {device_token}"))
            .send_json(beat("1.0.0"));
        if beat.is_err() {
            break;
        }
    }
    acked
}

#[test]
fn acknowledged_pairings_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let admin = p6os_console::auth::new_token().unwrap();
    let pairing = p6os_console::auth::new_token().unwrap();
    let mut console = start(dir.path(), &admin, &pairing);

    let acked = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..8)
        .map(|n| {
            let (url, admin, pairing, acked) = (
                console.url.clone(),
                admin.clone(),
                pairing.clone(),
                acked.clone(),
            );
            std::thread::spawn(move || {
                let ids = client(url, admin, pairing, n);
                acked.lock().unwrap().extend(ids);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    console.child.kill().unwrap(); // SIGKILL
    console.child.wait().unwrap();
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 8,
        "too few pairings before the kill: {}",
        acked.len()
    );

    // Restart on the same database: every acknowledged pairing is there.
    let mut console = start(dir.path(), &admin, &pairing);
    // Every page of the ready ones.
    let mut ready = std::collections::BTreeSet::new();
    let mut after = String::new();
    loop {
        let r = call(
            &console.url,
            "GET",
            &format!("{API}/appliances?status=ready&limit=500&after={after}"),
            Some(&admin),
            Body::None,
            &[],
        );
        assert_eq!(r.status, 200);
        let page = r.json::<p6os_protocol::AppliancePage>();
        for a in page.items {
            assert_eq!(a.status, Status::Ready);
            ready.insert(a.id);
        }
        match page.next {
            Some(next) => after = next,
            None => break,
        }
    }
    let lost: Vec<&String> = acked.iter().filter(|id| !ready.contains(*id)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    eprintln!(
        "{} pairings acknowledged before the kill, all kept",
        acked.len()
    );

    // SIGTERM: a clean exit.
    let status = Command::new("kill")
        .args(["-TERM", &console.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = console.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");

    let conn = rusqlite::Connection::open(dir.path().join("console.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM appliances WHERE status = 'ready'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(n as usize >= acked.len());
}
