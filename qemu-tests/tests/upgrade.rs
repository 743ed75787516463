//! A/B upgrades end to end on the tiny image: bundles built by the test with its own key,
//! attached as raw disks, installed by `p6os-agent upgrade`, then boot counting, health
//! checks, blessing and fallback by the real systemd-boot under OVMF (A -> B -> A and a slot
//! that does not verify under Secure Boot, with the fixture's keys enrolled).

use std::time::Duration;

use p6os_qemu_tests::fixture::Fixture;
use p6os_qemu_tests::slot;
use p6os_qemu_tests::vm::{Firmware, Vm, VmConfig};

const BOOT: Duration = Duration::from_secs(240);
const CMD: Duration = Duration::from_secs(60);
const AGENT: &str = "/usr/lib/p6os/p6os-agent";

fn run(vm: &mut Vm, tag: &str, command: &str) -> String {
    vm.run(tag, command, CMD).unwrap()
}

fn status(vm: &mut Vm, tag: &str) -> serde_json::Value {
    p6os_qemu_tests::parse_status(&run(vm, tag, &format!("{AGENT} status --json")))
}

#[test]
fn upgrade_to_b_then_back_to_a_each_blessed_after_health_checks() {
    let f = Fixture::new().unwrap();
    let image = f.image(&f.recipe("1.0.0", "", None).unwrap()).unwrap();
    let v2 = f
        .bundle_disk(&f.recipe("2.0.0", "", None).unwrap())
        .unwrap();
    let v3 = f
        .bundle_disk(&f.recipe("3.0.0", "", None).unwrap())
        .unwrap();
    let mut config = VmConfig::new(&image).unwrap();
    config.extra_drives = vec![v2, v3];
    config.firmware = Firmware::SecureBoot {
        vars: f.secure_boot_vars().unwrap(),
    };
    let mut vm = config.start("upgrade").unwrap();
    vm.wait_for_line("p6os-agent: ready slot=a version=1.0.0", BOOT)
        .unwrap();
    vm.wait_for_line("slot a is blessed", CMD).unwrap();

    vm.send_line(&format!("{AGENT} upgrade /dev/vdb")).unwrap();
    vm.wait_for_line("upgrade: installed 2.0.0 into slot b", CMD)
        .unwrap();
    vm.wait_for_line("p6os-agent: ready slot=b version=2.0.0", BOOT)
        .unwrap();
    vm.wait_for_line("health checks passed: blessing slot b", CMD)
        .unwrap();
    let s = status(&mut vm, "S1");
    assert_eq!(s["booted"], "b", "{s:#}");
    assert_eq!(slot(&s, "b")["state"], "blessed", "{s:#}");
    assert_eq!(slot(&s, "b")["version"], "2.0.0", "{s:#}");
    assert_eq!(
        slot(&s, "a")["state"],
        "blessed",
        "A stays the fallback: {s:#}"
    );
    assert_eq!(slot(&s, "a")["version"], "1.0.0", "{s:#}");
    assert_eq!(s["last_upgrade"]["outcome"], "blessed", "{s:#}");

    vm.send_line(&format!("{AGENT} upgrade /dev/vdc")).unwrap();
    vm.wait_for_line("upgrade: installed 3.0.0 into slot a", CMD)
        .unwrap();
    vm.wait_for_line("p6os-agent: ready slot=a version=3.0.0", BOOT)
        .unwrap();
    vm.wait_for_line("health checks passed: blessing slot a", CMD)
        .unwrap();
    let s = status(&mut vm, "S2");
    assert_eq!(s["booted"], "a", "{s:#}");
    assert_eq!(slot(&s, "a")["version"], "3.0.0", "{s:#}");
    assert_eq!(slot(&s, "a")["state"], "blessed", "{s:#}");
    assert_eq!(slot(&s, "b")["version"], "2.0.0", "{s:#}");
    assert_eq!(slot(&s, "b")["state"], "blessed", "{s:#}");

    // Back to 2.0.0 on request: the other blessed slot becomes the default.
    vm.send_line(&format!("{AGENT} rollback")).unwrap();
    vm.wait_for_line("slot b is the default now", CMD).unwrap();
    vm.wait_for_line("p6os-agent: ready slot=b version=2.0.0", BOOT)
        .unwrap();
    vm.wait_for_line("slot b is blessed", CMD).unwrap();
    let s = status(&mut vm, "S3");
    assert_eq!(s["booted"], "b", "{s:#}");
    assert_eq!(s["last_upgrade"]["outcome"], "rolled_back", "{s:#}");
    // Every one of these boots ran under Secure Boot.
    let log = vm.console_log();
    assert!(
        log.matches("p6os-agent: secure boot: on").count() >= 4,
        "not every boot ran under Secure Boot"
    );
    assert!(
        s["rolled_back"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["version"] == "3.0.0"),
        "{s:#}"
    );
}

/// Boots v1 with a v2 bundle attached, installs it, and waits until the machine is back on
/// slot A by itself.
fn upgrade_and_wait_for_fallback(name: &str, v2_upgrades: &str, v2_args: Option<&str>) -> Vm {
    let f = Fixture::new().unwrap();
    let image = f.image(&f.recipe("1.0.0", "", None).unwrap()).unwrap();
    let v2 = f
        .bundle_disk(&f.recipe("2.0.0", v2_upgrades, v2_args).unwrap())
        .unwrap();
    let mut config = VmConfig::new(&image).unwrap();
    config.extra_drives = vec![v2];
    let mut vm = config.start(name).unwrap();
    vm.wait_for_line("p6os-agent: ready slot=a version=1.0.0", BOOT)
        .unwrap();
    vm.send_line(&format!("{AGENT} upgrade /dev/vdb")).unwrap();
    vm.wait_for_line("upgrade: installed 2.0.0 into slot b", CMD)
        .unwrap();
    vm.wait_for_line("p6os-agent: ready slot=a version=1.0.0", BOOT * 3)
        .unwrap();
    vm
}

#[test]
fn failing_health_checks_fall_back_by_themselves_and_are_not_retried() {
    let health = "  health:\n    timeout_secs: 5\n    checks:\n      - {type: command, command: [/bin/false]}\n";
    let mut vm = upgrade_and_wait_for_fallback("health", health, None);
    let log = vm.console_log();
    let trials = log
        .matches("p6os-agent: ready slot=b version=2.0.0")
        .count();
    assert_eq!(trials, 3, "slot b should get exactly its 3 tries");
    assert_eq!(
        log.matches("health checks failed on slot b (version 2.0.0)")
            .count(),
        3
    );
    let fell = vm.wait_for_line("fell back to slot a", CMD).unwrap();
    assert!(fell.contains("command /bin/false"), "{fell}");
    let s = status(&mut vm, "S1");
    assert_eq!(s["booted"], "a", "{s:#}");
    assert_eq!(s["last_upgrade"]["outcome"], "rolled_back", "{s:#}");
    assert!(
        s["last_upgrade"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("/bin/false"),
        "{s:#}"
    );
    assert_eq!(s["rolled_back"][0]["version"], "2.0.0", "{s:#}");
    assert_eq!(slot(&s, "a")["state"], "blessed", "{s:#}");
    // No retry loop: the same bundle is refused now, and nothing changes.
    let out = run(
        &mut vm,
        "AGAIN",
        &format!("{AGENT} upgrade /dev/vdb; echo rc=$?"),
    );
    assert!(out.contains("rolled back before"), "{out}");
    assert!(out.contains("rc=1"), "{out}");
    let after = status(&mut vm, "S2");
    assert_eq!(
        after["slots"], s["slots"],
        "a refused upgrade changed the slots"
    );
}

#[test]
fn a_kernel_that_cannot_boot_falls_back_as_well() {
    // No initramfs init and no root the kernel can mount by itself: it panics, panic=5 reboots.
    let mut vm =
        upgrade_and_wait_for_fallback("panic", "", Some("[panic=5, quiet, rdinit=/nonexistent]"));
    let log = vm.console_log();
    assert!(
        log.matches("Kernel panic").count() >= 3,
        "expected three panicking tries of slot b"
    );
    let fell = vm.wait_for_line("fell back to slot a", CMD).unwrap();
    assert!(
        fell.contains("did not come up") || fell.contains("tries"),
        "{fell}"
    );
    let s = status(&mut vm, "S1");
    assert_eq!(s["last_upgrade"]["outcome"], "rolled_back", "{s:#}");
    assert_eq!(s["booted"], "a", "{s:#}");
}

#[test]
fn a_changed_byte_in_the_new_slot_fails_its_boots_and_falls_back_with_the_reason() {
    let f = Fixture::new().unwrap();
    let image = f.image(&f.recipe("1.0.0", "", None).unwrap()).unwrap();
    let v2 = f
        .bundle_disk(&f.recipe("2.0.0", "", None).unwrap())
        .unwrap();
    let mut config = VmConfig::new(&image).unwrap();
    config.extra_drives = vec![v2];
    config.firmware = Firmware::SecureBoot {
        vars: f.secure_boot_vars().unwrap(),
    };
    let mut vm = config.start("verity").unwrap();
    vm.wait_for_line("p6os-agent: ready slot=a version=1.0.0", BOOT)
        .unwrap();
    let out = run(
        &mut vm,
        "UP",
        &format!("{AGENT} upgrade --no-reboot /dev/vdb; echo rc=$?"),
    );
    assert!(
        out.contains("installed 2.0.0 into slot b") && out.contains("rc=0"),
        "{out}"
    );
    // Byte 1000 of slot b (inside its squashfs, in the first block that mount reads) changes
    // after the agent wrote and verified it: what a bad sector or someone with the disk does.
    let flip = "p=/dev/vda3; v=$(dd if=$p bs=1 skip=1000 count=1 2>/dev/null | od -An -tu1 | tr -d ' '); \
                n=$(( (v + 1) % 256 )); printf \"\\\\$(printf %o $n)\" | dd of=$p bs=1 seek=1000 conv=notrunc 2>/dev/null; \
                sync; echo flipped=$v-$n";
    let out = run(&mut vm, "FLIP", flip);
    assert!(out.contains("flipped="), "{out}");
    vm.send_line("reboot").unwrap();
    let fell = vm.wait_for_line("fell back to slot a", BOOT * 3).unwrap();
    let log = vm.console_log();
    let failed_tries = log
        .lines()
        .filter(|l| l.contains("fatal:") && l.contains("does not match its dm-verity root hash"))
        .count();
    // Each fatal line reaches the serial console twice (stderr and the kernel log).
    assert!(
        failed_tries >= 3,
        "slot b should fail each of its 3 tries on the changed block"
    );
    assert!(!log.contains("ready slot=b"), "slot b came up");
    assert!(log.contains("dm-verity p6os-root-b-verity"));
    assert!(fell.contains("dm-verity root hash"), "{fell}");
    let s = status(&mut vm, "S1");
    assert_eq!(s["booted"], "a", "{s:#}");
    assert_eq!(s["last_upgrade"]["outcome"], "rolled_back", "{s:#}");
    assert!(
        s["last_upgrade"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("slot b did not start"),
        "{s:#}"
    );
    assert_eq!(slot(&s, "a")["state"], "blessed", "{s:#}");
}
