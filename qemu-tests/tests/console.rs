//! Registration and a remote upgrade, end to end: a real `p6os-console` serving https on the
//! host's loopback (reached from the guest as 10.0.2.2 through QEMU's user network; the guest
//! has no default route) with a certificate from `p6os-console init --tls-name 10.0.2.2`, the
//! tiny image configured by unattended.yaml to register with it and trust that CA.
//!
//! The device comes up before the operator registered its id: it is `pending`. The operator
//! registers it: the device pairs (`ready`) and its facts are visible. The operator uploads a
//! bundle and sets the desired version by label: the device downloads it from the console,
//! installs it, reboots into it, blesses it and reports the new version.

use std::fs;
use std::time::Duration;

use p6os_qemu_tests::console::{Console, ADMIN_TOKEN, PAIRING_TOKEN};
use p6os_qemu_tests::fixture::Fixture;
use p6os_qemu_tests::vm::{Network, VmConfig};

const BOOT: Duration = Duration::from_secs(240);
const UPGRADE: Duration = Duration::from_secs(400);
const ID: &str = "store-12-nuc";

#[test]
fn a_device_pairs_and_upgrades_when_the_operator_asks() {
    let f = Fixture::new().unwrap();
    let image = f.image(&f.recipe("1.0.0", "", None).unwrap()).unwrap();
    let bundle = f.bundle(&f.recipe("2.0.0", "", None).unwrap()).unwrap();
    let console_dir = f.dir.path().join("console");
    fs::create_dir_all(&console_dir).unwrap();
    let console = Console::start(&console_dir, &f.public_key);

    f.inject(
        &image,
        &format!(
            "appliance:\n  id: {ID}\n  labels: {{site: store-12}}\n\
             network:\n  interfaces:\n    - name: eth0\n      addresses: [10.0.2.15/24]\n\
             {}",
            console.unattended_section("10.0.2.2")
        ),
    )
    .unwrap();

    let mut config = VmConfig::new(&image).unwrap();
    config.network = Network::UserHostLoopback;
    let mut vm = config.start("console").unwrap();
    vm.wait_for_line("p6os-agent: ready slot=a version=1.0.0", BOOT)
        .unwrap();
    // The device's key, as the serial console shows it (what a site operator reads out).
    let line = vm
        .wait_for_line("registration: device key SHA256:", BOOT)
        .unwrap();
    let fingerprint = line
        .split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap()
        .to_string();
    // Not registered by the operator yet: the console keeps it as pending.
    vm.wait_for_line("registration: unregistered -> pending", BOOT)
        .unwrap();
    let listed = console.cli(&["appliances", "list", "--status", "pending", "--json"]);
    assert!(listed.contains(ID), "{listed}");

    // Registered: its key waits for approval; the operator approves the key read off the
    // device, and it pairs at its next try.
    console.cli(&["appliances", "register", ID, "--label", "site=store-12"]);
    let shown = console.cli(&["appliances", "show", ID]);
    assert!(shown.contains(&fingerprint), "{shown}");
    console.cli(&["appliances", "approve", ID, "--fingerprint", &fingerprint]);
    vm.wait_for_line("registration: pending -> ready", BOOT)
        .unwrap();
    let v = console.wait_for(ID, "the first heartbeat", BOOT, |v| {
        v["reported"]["version"] == "1.0.0"
    });
    assert_eq!(v["status"], "ready");
    let facts = &v["facts"];
    assert_eq!(facts["image_name"], "tiny");
    assert_eq!(facts["image_version"], "1.0.0");
    assert_eq!(facts["slot"], "a");
    assert!(facts["cpu_count"].as_u64().unwrap() >= 1, "{facts:#}");
    assert!(
        facts["memory_bytes"].as_u64().unwrap() > 100 << 20,
        "{facts:#}"
    );
    let disks = facts["disks"].as_array().unwrap();
    assert!(
        disks
            .iter()
            .any(|d| d["name"] == "vda" && d["size_bytes"].as_u64().unwrap() > 0),
        "{facts:#}"
    );
    let nic = facts["nics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "eth0")
        .unwrap_or_else(|| panic!("no eth0 in {facts:#}"));
    assert_eq!(nic["mac"], "52:54:00:12:34:56");
    assert!(
        nic["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "10.0.2.15/24"),
        "{nic:#}"
    );
    assert_eq!(v["reported"]["health"], "good");
    // The readable view shows the facts too.
    let text = console.cli(&["appliances", "show", ID]);
    assert!(text.contains("52:54:00:12:34:56"), "{text}");
    // The device knows it is registered (the status shows no token).
    let status = vm
        .run("status", "/usr/lib/p6os/p6os-agent status", BOOT)
        .unwrap();
    assert!(
        status.contains("console: ready (id store-12-nuc"),
        "{status}"
    );
    assert!(
        status.contains(&format!("device key: {fingerprint}")),
        "{status}"
    );

    // The operator uploads 2.0.0 and wants it on the site's devices.
    console.cli(&["bundles", "add", bundle.to_str().unwrap()]);
    console.cli(&[
        "desire",
        "--version",
        "2.0.0",
        "--selector",
        "site=store-12",
    ]);
    vm.wait_for_line("registration: the console wants version 2.0.0", BOOT)
        .unwrap();
    vm.wait_for_line("upgrade: installed 2.0.0 into slot b", UPGRADE)
        .unwrap();
    vm.wait_for_line("p6os-agent: ready slot=b version=2.0.0", BOOT)
        .unwrap();
    vm.wait_for_line("slot b is blessed", BOOT).unwrap();
    let v = console.wait_for(ID, "the report of 2.0.0, blessed", BOOT, |v| {
        v["reported"]["version"] == "2.0.0"
            && v["reported"]["health"] == "good"
            && v["reported"]["last_upgrade"]["outcome"] == "blessed"
    });
    assert_eq!(v["reported"]["slot"], "b");
    assert_eq!(v["reported"]["last_upgrade"]["version"], "2.0.0");
    // The first heartbeat after the reboot brought fresh facts.
    assert_eq!(v["facts"]["image_version"], "2.0.0", "{v:#}");
    assert_eq!(v["facts"]["slot"], "b");
    let events = console.cli(&["appliances", "events", ID]);
    for needle in ["pending", "paired", "2.0.0"] {
        assert!(events.contains(needle), "{needle} not in {events}");
    }
    let log = vm.console_log();
    for secret in [PAIRING_TOKEN, ADMIN_TOKEN] {
        assert!(!log.contains(secret), "a secret on the serial console");
    }
}
