//! The operator CLI (the real binary) against an in-process console.

mod common;

use common::*;
use p6os_protocol::{Appliance, HeartbeatResponse, PairResponse};

#[test]
fn operator_cli_end_to_end() {
    let s = Server::start();
    let (code, out, err) = cli(
        &s,
        &[
            "appliances",
            "register",
            "store-1",
            "--name",
            "Store 1",
            "--label",
            "site=north",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("registered store-1"), "{out}");
    let (code, _, err) = cli(&s, &["appliances", "register", "store-1"]);
    assert_eq!(code, 1);
    assert!(err.contains("already registered"), "{err}");
    let (code, _, _) = cli(&s, &["appliances", "register", "x", "--label", "nokv"]);
    assert_eq!(code, 2);
    let (code, _, _) = cli(&s, &["appliances", "frobnicate"]);
    assert_eq!(code, 2);

    // The device asks; its key waits for approval, which the operator gives by fingerprint.
    assert_eq!(s.pair("store-1", facts("store-1")).status, 202);
    let fingerprint = device_key("store-1").public().fingerprint();
    let (code, out, _) = cli(&s, &["appliances", "show", "store-1"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!(
            "appliances approve store-1 --fingerprint {fingerprint}"
        )),
        "{out}"
    );
    let (code, _, err) = cli(
        &s,
        &[
            "appliances",
            "approve",
            "store-1",
            "--fingerprint",
            "SHA256:x",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("fingerprint"), "{err}");
    let (code, out, err) = cli(
        &s,
        &[
            "appliances",
            "approve",
            "store-1",
            "--fingerprint",
            &fingerprint,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&fingerprint), "{out}");
    let token = match s.pair("store-1", facts("store-1")).json() {
        PairResponse::Ready { device_token, .. } => device_token,
        other => panic!("{other:?}"),
    };
    s.heartbeat("store-1", &token, &beat("1.0.0"));

    let (code, out, _) = cli(&s, &["appliances", "list", "--label", "site=north"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ID"), "{out}");
    assert!(
        out.contains("store-1") && out.contains("ready") && out.contains("1.0.0"),
        "{out}"
    );
    let (code, out, _) = cli(&s, &["appliances", "list", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Vec<Appliance>>(&out).unwrap().len(),
        1
    );
    let (code, out, _) = cli(&s, &["appliances", "show", "store-1"]);
    assert_eq!(code, 0);
    for want in [
        "52:54:00:12:34:56",
        "10.0.2.15/24",
        "QEMU HARDDISK",
        "2.0 GiB",
        "6.1.0-18-amd64",
        "health good",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny-2.0.0.p6b");
    std::fs::write(&path, bundle(&trusted_key(), "tiny", "2.0.0", 1)).unwrap();
    let (code, out, err) = cli(&s, &["bundles", "add", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("tiny 2.0.0 x86_64"), "{out}");
    let bad = dir.path().join("bad.p6b");
    std::fs::write(&bad, bundle(&other_key(), "tiny", "3.0.0", 1)).unwrap();
    let (code, _, err) = cli(&s, &["bundles", "add", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("422"), "{err}");
    let (code, out, _) = cli(&s, &["bundles", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("tiny") && out.contains("2.0.0"), "{out}");

    let (code, out, err) = cli(
        &s,
        &["desire", "--version", "2.0.0", "--selector", "site=north"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("store-1"), "{out}");
    let r: HeartbeatResponse = s.heartbeat("store-1", &token, &beat("1.0.0")).json();
    assert!(r.bundle.is_some());
    let (code, _, _) = cli(&s, &["desire", "--clear", "--id", "store-1"]);
    assert_eq!(code, 0);
    let (code, out, _) = cli(&s, &["appliances", "events", "store-1"]);
    assert_eq!(code, 0);
    assert!(out.contains("desired version cleared"), "{out}");
    let (code, _, _) = cli(&s, &["appliances", "delete", "store-1"]);
    assert_eq!(code, 0);
    let (code, _, err) = cli(&s, &["appliances", "show", "store-1"]);
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
}
