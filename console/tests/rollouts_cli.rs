//! `rollouts create|list|show|pause|resume|abort` (the real binary) against an in-process
//! console.

mod common;
mod rollout_fleet;

use common::*;
use p6os_protocol::rollout::Rollout;
use rollout_fleet::*;

fn cli(f: &Fleet, args: &[&str]) -> (i32, String, String) {
    common::cli(&f.s, args)
}

#[test]
fn rollouts_from_the_cli() {
    let (f, d) = Fleet::start(2);
    let (code, out, err) = cli(
        &f,
        &[
            "rollouts",
            "create",
            "--version",
            "2.0.0",
            "--selector",
            "site=s",
            "--wave",
            "1",
            "--wave",
            "100%",
            "--failure-threshold",
            "2",
            "--window",
            "site=s@sat,sun 02:00-05:00 Europe/Paris",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let r: Rollout = serde_json::from_str(&out).unwrap();
    assert_eq!(r.request.failure_threshold, 2);
    assert_eq!(r.request.windows[0].time_zone, "Europe/Paris");
    let (code, _, err) = cli(
        &f,
        &["rollouts", "create", "--version", "2.0.0", "--wave", "x"],
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = cli(&f, &["rollouts", "create", "--version", "2.0.0"]);
    assert_eq!(code, 1);
    assert!(err.contains("rollout 1"), "{err}");
    f.beat(&d[0], &beat("1.0.0"));
    let (code, out, _) = cli(&f, &["rollouts", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("running") && out.contains("2.0.0"), "{out}");
    let (code, out, _) = cli(&f, &["rollouts", "show", "1"]);
    assert_eq!(code, 0);
    assert!(out.contains("rollout 1: version 2.0.0 (running)"), "{out}");
    assert!(
        out.contains("window: site=s [sat, sun] 02:00-05:00 Europe/Paris"),
        "{out}"
    );
    assert!(out.contains("d-1"), "{out}");
    let (code, out, _) = cli(&f, &["rollouts", "show", "1", "--limit", "1", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["members"].as_array().unwrap().len(), 1);
    for (verb, state) in [
        ("pause", "paused"),
        ("resume", "running"),
        ("abort", "aborted"),
    ] {
        let (code, out, err) = cli(&f, &["rollouts", verb, "1"]);
        assert_eq!(code, 0, "{verb}: {err}");
        assert!(out.contains(state), "{verb}: {out}");
    }
    let (code, _, err) = cli(&f, &["rollouts", "pause", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("aborted"), "{err}");
}
