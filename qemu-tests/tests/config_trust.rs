//! Configuration drives on a provisioned device (issue 15): once a configuration was applied,
//! a CIDATA drive counts only when signed with a configuration key the image trusts
//! (`upgrades.config_keys`, `p6os config sign`). A USB stick and a power cycle no longer add
//! a user.
//!
//! Three boots of the tiny image: provisioned from the ESP; an unsigned drive that adds a sudo
//! user is ignored (one line on the console, nothing changes); the same kind of drive signed
//! with the fleet's configuration key (serial 1) is applied and its serial recorded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use p6os_qemu_tests::fixture::{cidata_drive, Fixture};
use p6os_qemu_tests::p6os_cli;
use p6os_qemu_tests::vm::{Network, Vm, VmConfig};

const BOOT: Duration = Duration::from_secs(180);
const CMD: Duration = Duration::from_secs(30);

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHn6vQzj8cJ2a1bU3m8k0a9n3F0kJm2b0o6u5rT1xYzA ops@example";

fn run(vm: &mut Vm, tag: &str, command: &str) -> String {
    vm.run(tag, command, CMD).unwrap()
}

fn vm_config(image: &Path, drive: Option<PathBuf>) -> VmConfig {
    let mut config = VmConfig::new(image).unwrap();
    config.network = Network::UserRestricted;
    config.extra_drives.extend(drive);
    config
}

/// A user with sudo and a key: what an attacker's stick would ask for.
fn adds_user(name: &str, hostname: &str) -> String {
    format!(
        "#cloud-config\nhostname: {hostname}\nusers:\n  - name: {name}\n    sudo: true\n    ssh_authorized_keys:\n      - {KEY}\n"
    )
}

fn boot(config: VmConfig, name: &str) -> Vm {
    config.start_in_place(name).unwrap()
}

fn power_off(mut vm: Vm) {
    vm.send_line("poweroff").unwrap();
    vm.wait_exit(CMD).unwrap();
}

#[test]
fn provisioned_device_ignores_an_unsigned_drive_and_applies_a_signed_one() {
    let f = Fixture::new().unwrap();
    let extra = format!("  config_keys: [{}]\n", f.public_key.display());
    let image = f.image(&f.recipe("1.0.0", &extra, None).unwrap()).unwrap();
    f.inject(&image, "hostname: store-0421\n").unwrap();
    let dir = f.dir.path();

    // 1. Provisioned from the ESP (unsigned: the device is new).
    let mut vm = boot(vm_config(&image, None), "provision");
    vm.wait_for_line("p6os-agent: config applied", BOOT)
        .unwrap();
    vm.wait_for_line("p6os-agent: ready slot=a", BOOT).unwrap();
    vm.wait_for_line("slot a is blessed", BOOT).unwrap();
    power_off(vm);

    // 2. An unsigned configuration drive that adds a sudo user: ignored, nothing changes.
    let unsigned = dir.join("unsigned-user-data");
    std::fs::write(&unsigned, adds_user("intruder", "owned")).unwrap();
    let drive = cidata_drive(dir, "unsigned", &unsigned, None).unwrap();
    let mut vm = boot(vm_config(&image, Some(drive)), "unsigned");
    let ignored = vm
        .wait_for_line("p6os-agent: warning: ignoring unattended.yaml from", BOOT)
        .unwrap();
    assert!(
        ignored.contains("configuration drive /dev/vdb (/user-data)")
            && ignored.contains("not signed"),
        "{ignored}"
    );
    // The ESP's document, the one applied, is still the configuration.
    let verdict = vm.wait_for_line("p6os-agent: config", BOOT).unwrap();
    assert!(verdict.contains("config unchanged"), "{verdict}");
    vm.wait_for_line("p6os-agent: ready slot=a", BOOT).unwrap();
    vm.wait_for_line("slot a is blessed", BOOT).unwrap();
    let out = run(
        &mut vm,
        "NOUSER",
        "hostname; grep -c ^intruder: /etc/passwd; grep -c serial /var/lib/p6os/applied.json",
    );
    assert!(out.contains("store-0421"), "hostname: {out}");
    assert_eq!(
        out.lines().filter(|l| l.trim() == "0").count(),
        2,
        "the unsigned drive changed something: {out}"
    );
    power_off(vm);

    // 3. The same kind of drive, signed with the fleet's configuration key: applied.
    let signed = dir.join("signed-user-data");
    std::fs::write(&signed, adds_user("ops", "store-0422")).unwrap();
    let status = Command::new(p6os_cli())
        .args(["config", "sign"])
        .arg(&signed)
        .arg("--key")
        .arg(&f.secret_key)
        .args(["--serial", "1"])
        .status()
        .unwrap();
    assert!(status.success(), "p6os config sign failed");
    let sig = dir.join("signed-user-data.sig");
    let drive = cidata_drive(dir, "signed", &signed, Some(&sig)).unwrap();
    let mut vm = boot(vm_config(&image, Some(drive)), "signed");
    let accepted = vm
        .wait_for_line("is signed by configuration key", BOOT)
        .unwrap();
    assert!(accepted.contains("serial 1"), "{accepted}");
    let verdict = vm.wait_for_line("p6os-agent: config", BOOT).unwrap();
    assert!(verdict.contains("config applied"), "{verdict}");
    vm.wait_for_line("p6os-agent: ready slot=a", BOOT).unwrap();
    vm.wait_for_line("slot a is blessed", BOOT).unwrap();
    let out = run(
        &mut vm,
        "USER",
        "hostname; grep -c ^ops: /etc/passwd; grep '\"serial\"' /var/lib/p6os/applied.json",
    );
    assert!(out.contains("store-0422"), "hostname: {out}");
    assert!(out.lines().any(|l| l.trim() == "1"), "user ops: {out}");
    assert!(out.contains("\"serial\": 1"), "applied.json: {out}");
    power_off(vm);
}
