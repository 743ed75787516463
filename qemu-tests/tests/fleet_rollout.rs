//! A staged rollout over three tiny VMs with a real `p6os-console` (issue 16): the canary
//! fails its health checks and falls back, the rollout pauses by itself and the two other
//! devices are never handed the version; a diagnostics bundle fetched from the canary holds its
//! boot-assessment history and none of its configuration's secrets; after a fixed bundle a new
//! rollout takes all three to it, wave after wave, and completes.
//!
//! Network rule: each VM is on its own QEMU user network where 10.0.2.2 is the host's loopback
//! and the guest has no default route (a static 10.0.2.15/24 only): the console on 127.0.0.1 is
//! all it reaches.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use serde_json::Value;

use p6os_qemu_tests::console::{Console, ADMIN_TOKEN, PAIRING_TOKEN};
use p6os_qemu_tests::fixture::Fixture;
use p6os_qemu_tests::vm::{Network, Vm, VmConfig};

const BOOT: Duration = Duration::from_secs(300);
/// Three tries of a slot whose health check fails, then the fall back.
const FALLBACK: Duration = Duration::from_secs(600);
const UPGRADE: Duration = Duration::from_secs(600);
const IDS: [&str; 3] = ["fleet-0", "fleet-1", "fleet-2"];
/// In the canary's configuration: must never leave it (a password hash and a file's content).
const PASSWD_HASH: &str =
    "$6$saltsalt$SECRETHASHabcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab";
const FILE_SECRET: &str = "SECRET-FILE-CONTENT-of-the-canary";

fn config(console: &Console, id: &str) -> String {
    format!(
        "appliance:\n  id: {id}\n\
         users:\n  - name: ops\n    passwd: \"{PASSWD_HASH}\"\n\
         write_files:\n  - path: /etc/app/credentials\n    content: {FILE_SECRET}\n    permissions: \"0600\"\n\
         network:\n  interfaces:\n    - name: eth0\n      addresses: [10.0.2.15/24]\n\
         {}",
        console.unattended_section("10.0.2.2")
    )
}

fn rollout(console: &Console, id: &str) -> Value {
    console.json(&["rollouts", "show", id])
}

fn members(v: &Value) -> BTreeMap<String, Value> {
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap().to_string(), m.clone()))
        .collect()
}

#[test]
fn a_failing_canary_pauses_the_rollout_and_a_fixed_bundle_completes_it() {
    let f = Fixture::new().unwrap();
    let image = f.image(&f.recipe("1.0.0", "", None).unwrap()).unwrap();
    let failing = "  health:\n    timeout_secs: 5\n    checks:\n      - {type: command, command: [/bin/false]}\n";
    let bad = f
        .bundle(&f.recipe("2.0.0", failing, None).unwrap())
        .unwrap();
    let fixed = f.bundle(&f.recipe("2.0.1", "", None).unwrap()).unwrap();
    let console_dir = f.dir.path().join("console");
    fs::create_dir_all(&console_dir).unwrap();
    let console = Console::start(&console_dir, &f.public_key);
    for id in IDS {
        console.register_first_key(id, &["fleet=qemu"]);
    }

    // Three devices: the canary first (ids in order: fleet-0 is the first wave), then the
    // others once it is up (three TCG boots at once are slow on two cores).
    let mut vms: Vec<Vm> = Vec::new();
    for id in IDS {
        let disk = f.dir.path().join(format!("{id}.img"));
        p6os_qemu_tests::vm::copy_image(&image, &disk).unwrap();
        f.inject(&disk, &config(&console, id)).unwrap();
        let mut vm_config = VmConfig::new(&disk).unwrap();
        vm_config.network = Network::UserHostLoopback;
        vm_config.hard_timeout = Duration::from_secs(2400);
        let mut vm = vm_config.start_in_place(id).unwrap();
        vm.wait_for_line("registration: unregistered -> ready", BOOT)
            .unwrap();
        vms.push(vm);
    }
    for id in IDS {
        console.wait_for(id, "the first heartbeat", BOOT, |v| {
            v["reported"]["version"] == "1.0.0"
        });
    }

    // 2.0.0 fails its health check. One canary, then the rest; one failure pauses.
    console.cli(&["bundles", "add", bad.to_str().unwrap()]);
    let created = console.json(&[
        "rollouts",
        "create",
        "--version",
        "2.0.0",
        "--selector",
        "fleet=qemu",
        "--wave",
        "1",
        "--wave",
        "100%",
        "--failure-threshold",
        "1",
    ]);
    let first = created["id"].to_string();
    assert_eq!(created["state"], "running", "{created:#}");
    assert_eq!(created["totals"]["devices"], 3, "{created:#}");
    let canary = &mut vms[0];
    canary
        .wait_for_line("registration: the console wants version 2.0.0", BOOT)
        .unwrap();
    canary
        .wait_for_line("health checks failed on slot b (version 2.0.0)", FALLBACK)
        .unwrap();
    canary
        .wait_for_line("fell back to slot a", FALLBACK)
        .unwrap();
    let paused = console.wait_json(
        &["rollouts", "show", &first],
        "the rollout to pause itself",
        BOOT,
        |v| v["rollout"]["state"] == "paused",
    );
    let reason = paused["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("threshold"), "{paused:#}");
    let m = members(&paused);
    assert_eq!(m["fleet-0"]["state"], "rolled_back", "{paused:#}");
    assert!(
        m["fleet-0"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("/bin/false"),
        "{paused:#}"
    );
    // The others are still on 1.0.0 several heartbeats later, never handed 2.0.0.
    std::thread::sleep(Duration::from_secs(12));
    let later = rollout(&console, &first);
    assert_eq!(later["rollout"]["state"], "paused", "{later:#}");
    for id in &IDS[1..] {
        let m = &members(&later)[*id];
        assert_eq!(m["state"], "waiting", "{later:#}");
        assert_eq!(m["started"], false, "{later:#}");
        let v = console.show(id);
        assert_eq!(v["reported"]["version"], "1.0.0", "{v:#}");
        assert!(v["desired_version"].is_null(), "{v:#}");
    }
    for vm in &vms[1..] {
        assert!(
            !vm.console_log().contains("the console wants version"),
            "a device outside the first wave was handed a version"
        );
    }

    // The operator looks at the canary: a diagnostics bundle, without opening a port on it.
    let (tar, files) = console.diagnostics("fleet-0", f.dir.path(), BOOT);
    // The boot-assessment history: the failed trial of 2.0.0 with its reason.
    let slots: Value = serde_json::from_str(&files["boot/slots.json"]).unwrap();
    let history = serde_json::to_string(&slots).unwrap();
    assert!(history.contains("2.0.0"), "{slots:#}");
    assert!(history.contains("/bin/false"), "{slots:#}");
    assert!(files["agent/status.json"].contains("rolled_back"));
    assert!(!files["kernel/kmsg.txt"].is_empty());
    assert!(files.keys().any(|k| k.starts_with("net/")), "{files:?}");
    let doc = &files["config/document.redacted.json"];
    assert!(
        doc.contains("fleet-0") && doc.contains("(redacted)"),
        "{doc}"
    );
    let text = String::from_utf8_lossy(&tar);
    for secret in [PASSWD_HASH, FILE_SECRET, PAIRING_TOKEN, ADMIN_TOKEN] {
        assert!(!text.contains(secret), "a secret in the diagnostics bundle");
    }

    // A fixed release: the paused rollout is aborted, a new one takes every device to 2.0.1.
    console.cli(&["bundles", "add", fixed.to_str().unwrap()]);
    let aborted = console.json(&["rollouts", "abort", &first]);
    assert_eq!(aborted["state"], "aborted", "{aborted:#}");
    let created = console.json(&[
        "rollouts",
        "create",
        "--version",
        "2.0.1",
        "--selector",
        "fleet=qemu",
        "--wave",
        "1",
        "--wave",
        "100%",
    ]);
    let second = created["id"].to_string();
    let done = console.wait_json(
        &["rollouts", "show", &second],
        "the fixed rollout to complete",
        UPGRADE * 2,
        |v| v["rollout"]["state"] == "completed",
    );
    assert_eq!(done["rollout"]["totals"]["blessed"], 3, "{done:#}");
    assert_eq!(done["rollout"]["waves"][0]["devices"], 1, "{done:#}");
    for (id, vm) in IDS.iter().zip(vms.iter_mut()) {
        let blessed = vm.wait_for_line("slot b is blessed", BOOT).unwrap();
        eprintln!("{id}: {blessed}");
        let v = console.wait_for(id, "the report of 2.0.1", BOOT, |v| {
            v["reported"]["version"] == "2.0.1"
        });
        assert_eq!(v["reported"]["slot"], "b", "{v:#}");
        assert_eq!(v["reported"]["last_upgrade"]["outcome"], "blessed", "{v:#}");
    }
    // Each device was handed the version by its wave, and fleet-1 and fleet-2 only by the
    // second rollout.
    let canary_events = console.cli(&["appliances", "events", "fleet-0"]);
    assert!(
        canary_events.contains(&format!(
            "rollout {second} (wave 1): desired version set to 2.0.1"
        )),
        "{canary_events}"
    );
    for id in &IDS[1..] {
        let events = console.cli(&["appliances", "events", id]);
        assert!(
            events.contains(&format!(
                "rollout {second} (wave 2): desired version set to 2.0.1"
            )),
            "{events}"
        );
        assert!(!events.contains("2.0.0"), "{events}");
    }
    for vm in &vms {
        let log = vm.console_log();
        assert!(!log.contains(PAIRING_TOKEN) && !log.contains(ADMIN_TOKEN));
    }
}
