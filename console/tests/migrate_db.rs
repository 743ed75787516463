//! `p6os-console migrate-db`: a fleet built through the API on SQLite (paired devices, events,
//! a bundle, a rollout, a site configuration, a diagnostics request) is copied into an empty
//! PostgreSQL database with the real binary; a console on PostgreSQL then answers every list
//! and view exactly as the SQLite one did, and the devices' tokens still work. A second copy
//! into the now non-empty database is refused and changes nothing.
//!
//! Skipped (saying so) without Debian's postgresql-15, except where `P6OS_TEST_DB_REQUIRED`
//! is set (`cargo xtask test`).

mod common;

use common::*;
use p6os_console::db::DbLocation;
use p6os_console::testing::pg::{or_skip, Cluster};

const VIEWS: &[&str] = &[
    "/api/v1/appliances?limit=500",
    "/api/v1/appliances/d-1",
    "/api/v1/appliances/d-1/events?limit=500",
    "/api/v1/appliances/d-2/events?limit=500",
    "/api/v1/bundles",
    "/api/v1/rollouts",
    "/api/v1/rollouts/1/devices?limit=500",
    "/api/v1/appliances/d-2/config",
    "/api/v1/appliances/d-2/config/history",
    "/api/v1/appliances/d-1/diagnostics",
];

fn migrate(from: &str, to: &str) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_p6os-console"))
        .args(["migrate-db", "--from", from, "--to", to])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_fleet_moves_from_sqlite_to_postgresql_and_nothing_changes() {
    let Some(cluster) = or_skip(Cluster::start()) else {
        return;
    };
    let keep = tempfile::tempdir().unwrap();
    let file = keep.path().join("console.db");
    let bundles = keep.path().join("bundles");
    let (f, b) = (file.clone(), bundles.clone());
    let old = Server::start_with("info", move |c| {
        c.db = DbLocation::Sqlite(f);
        c.bundles = b;
    });
    let t1 = old.paired("d-1", &[("site", "s")]);
    let t2 = old.paired("d-2", &[("site", "s")]);
    assert_eq!(old.heartbeat("d-1", &t1, &beat("1.0.0")).status, 200);
    assert_eq!(old.heartbeat("d-2", &t2, &beat("1.0.0")).status, 200);
    let up = old.call(
        "POST",
        &format!("{API}/bundles"),
        Some(&old.admin),
        Body::Bytes(
            "application/octet-stream",
            bundle(&trusted_key(), "tiny", "2.0.0", 1),
        ),
    );
    assert_eq!(up.status, 201, "{}", up.text());
    let r = old.admin(
        "POST",
        &format!("{API}/rollouts"),
        Body::json(&serde_json::json!({"version": "2.0.0", "selector": {"site": "s"}})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(old.heartbeat("d-1", &t1, &beat("1.0.0")).status, 200);
    let doc = "appliance:\n  id: d-2\nhostname: store-2\nconsole:\n  endpoint: https://c.example\n  token: secret-pairing\n";
    let r = old.admin(
        "PUT",
        &format!("{API}/config"),
        Body::json(&serde_json::json!({"id": "d-2", "document": doc})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = old.admin(
        "POST",
        &format!("{API}/appliances/d-1/diagnostics"),
        Body::json(&serde_json::json!({})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let before: Vec<(u16, String)> = VIEWS
        .iter()
        .map(|v| {
            let r = old.admin("GET", v, Body::None);
            (r.status, r.text())
        })
        .collect();
    for (v, (status, text)) in VIEWS.iter().zip(&before) {
        assert_eq!(*status, 200, "{v}: {text}");
    }
    let (admin, pairing) = (old.admin.clone(), old.pairing.clone());
    old.console.stop();

    let url = cluster.create_database().unwrap();
    let (code, out, err) = migrate(file.to_str().unwrap(), &url);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("appliances: 2 rows"), "{out}");
    assert!(out.contains("rollout_devices: 2 rows"), "{out}");
    assert!(!out.contains("secret-pairing") && !err.contains("secret-pairing"));

    let (u, b) = (url.clone(), bundles.clone());
    let (a, p) = (admin.clone(), pairing.clone());
    let mut new = Server::start_with("info", move |c| {
        c.db = DbLocation::Postgres(u);
        c.bundles = b;
        c.admin_token = a;
        c.pairing_token = p;
    });
    new.admin = admin;
    new.pairing = pairing;
    for (v, (status, text)) in VIEWS.iter().zip(&before) {
        let r = new.admin("GET", v, Body::None);
        assert_eq!((r.status, r.text()), (*status, text.clone()), "{v}");
    }
    // The devices' tokens work; new rows follow the copied ones.
    let r = new.heartbeat("d-2", &t2, &beat("1.0.0"));
    assert_eq!(r.status, 200, "{}", r.text());
    let answer: p6os_protocol::HeartbeatResponse = r.json();
    assert_eq!(answer.config.map(|c| c.config), Some(1));
    let r = new.admin(
        "POST",
        &format!("{API}/appliances/d-2/diagnostics"),
        Body::json(&serde_json::json!({})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json::<serde_json::Value>()["id"], 2);
    let p3 = new.paired("d-3", &[]);
    assert_eq!(new.heartbeat("d-3", &p3, &beat("1.0.0")).status, 200);

    // A second copy into the same database: refused, nothing written.
    let (code, _, err) = migrate(file.to_str().unwrap(), &url);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not empty"), "{err}");
    let listed = new.admin("GET", VIEWS[0], Body::None).text();
    assert!(listed.contains("d-3"));
    let (code, _, err) = migrate(file.to_str().unwrap(), file.to_str().unwrap());
    assert_eq!(code, 2, "{err}");
}
