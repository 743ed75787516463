//! unattended.yaml end to end on the tiny image: injected with `p6os config inject`, found and
//! applied by the agent at boot, visible from the guest's console; applied once; an invalid
//! document on a configuration drive is reported and changes nothing.
//!
//! Network rule: the guest's NIC is QEMU's user network with `restrict=on`; the only
//! addresses in the documents are QEMU's own (10.0.2.x) and `.invalid` names.

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
const REGISTRY_PASSWORD: &str = "s3cret-registry-password";
const TOKEN: &str = "s3cret-pairing-token";
const HASH: &str = "$6$saltsalt$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijkl";

fn site_config() -> String {
    format!(
        "#cloud-config
hostname: store-0421
users:
  - name: ops
    sudo: true
    passwd: \"{HASH}\"
    ssh_authorized_keys:
      - {KEY}
network:
  interfaces:
    - name: eth0
      addresses: [10.0.2.15/24]
      gateway: 10.0.2.2
  dns:
    servers: [10.0.2.3]
proxy:
  http_proxy: http://10.0.2.2:3128
  https_proxy: http://10.0.2.2:3128
  no_proxy: [localhost, 127.0.0.1, .svc]
registries:
  configs:
    registry.invalid:
      username: robot
      password: {REGISTRY_PASSWORD}
console:
  endpoint: https://console.invalid
  token: {TOKEN}
"
    )
}

/// An image of the tiny recipe that trusts the fixture's key as a configuration key
/// (`upgrades.config_keys`), with `config` injected by the `p6os` command. Once provisioned, a
/// device takes a changed document only when it is signed with that key (docs/security.md).
fn image_with_config(config: &str) -> (Fixture, PathBuf) {
    let f = Fixture::new().unwrap();
    let extra = format!("  config_keys: [{}]\n", f.public_key.display());
    // The recipe's own kernel arguments: the site setup pause on (nobody answers it here).
    let image = f
        .image(&f.recipe("1.0.0", &extra, Some(Fixture::TINY_ARGS)).unwrap())
        .unwrap();
    f.inject(&image, config).unwrap();
    (f, image)
}

/// Writes `text` to `dir/name` and signs it with the fixture's configuration key under
/// `serial` (`p6os config sign` writes `name.sig` beside it).
fn signed(f: &Fixture, name: &str, text: &str, serial: u64) -> PathBuf {
    let path = f.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let status = Command::new(p6os_cli())
        .args(["config", "sign"])
        .arg(&path)
        .arg("--key")
        .arg(&f.secret_key)
        .args(["--serial", &serial.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "p6os config sign failed");
    path
}

fn run(vm: &mut Vm, tag: &str, command: &str) -> String {
    vm.run(tag, command, CMD).unwrap()
}

fn config_vm(image: &Path) -> VmConfig {
    let mut config = VmConfig::new(image).unwrap();
    config.network = Network::UserRestricted;
    config
}

#[test]
fn injected_config_is_applied_at_first_boot_and_only_then() {
    let (f, image) = image_with_config(&site_config());
    let mut vm = config_vm(&image).start_in_place("unattended").unwrap();
    // A new device announces the site setup pause; nobody presses a key, the boot goes on
    // with the document found.
    vm.wait_for_line("press any key within", BOOT).unwrap();
    vm.wait_for_line("using unattended.yaml from the ESP", BOOT)
        .unwrap();
    let applied = vm
        .wait_for_line("p6os-agent: config applied", BOOT)
        .unwrap();
    assert!(applied.contains("sha256:"), "{applied}");
    vm.wait_for_line("p6os-agent: ready slot=a", BOOT).unwrap();

    // Secrets never reach the console or the kernel log.
    let boot_log = vm.console_log();
    for line in boot_log
        .lines()
        .filter(|l| l.contains("configuration step took"))
    {
        eprintln!("first boot: {line}");
    }
    for secret in [REGISTRY_PASSWORD, TOKEN, HASH] {
        assert!(!boot_log.contains(secret), "a secret was logged");
    }

    let out = run(&mut vm, "HOST", "hostname");
    assert!(out.contains("store-0421"), "hostname: {out}");
    let out = run(&mut vm, "USER", "grep ^ops: /etc/passwd");
    assert!(
        out.contains("ops:x:1000:1000::/var/home/ops:/bin/sh"),
        "passwd: {out}"
    );
    let out = run(
        &mut vm,
        "KEY",
        "stat -c 'mode=%a uid=%u' /var/home/ops/.ssh/authorized_keys /etc/shadow; cat /var/home/ops/.ssh/authorized_keys",
    );
    assert!(out.contains("mode=600 uid=1000"), "authorized_keys: {out}");
    assert!(out.contains("mode=600 uid=0"), "shadow: {out}");
    assert!(out.contains(KEY), "authorized_keys: {out}");
    let out = run(&mut vm, "ADDR", "ip -4 addr show dev eth0; ip route");
    assert!(out.contains("inet 10.0.2.15/24"), "address: {out}");
    assert!(
        out.contains("default via 10.0.2.2 dev eth0"),
        "route: {out}"
    );
    let out = run(&mut vm, "PROXY", "echo \"https=$https_proxy no=$no_proxy\"");
    assert!(
        out.contains("https=http://10.0.2.2:3128 no=localhost,127.0.0.1,.svc"),
        "proxy environment: {out}"
    );
    let out = run(
        &mut vm,
        "REG",
        "stat -c 'mode=%a uid=%u' /etc/p6os/registries.yaml; grep -c 'password:' /etc/p6os/registries.yaml; grep -c 'username: \"robot\"' /etc/p6os/registries.yaml",
    );
    assert!(out.contains("mode=600 uid=0"), "registries.yaml: {out}");
    assert_eq!(
        out.lines().filter(|l| l.trim() == "1").count(),
        2,
        "registry credentials: {out}"
    );
    let first = run(&mut vm, "JSON", "cat /var/lib/p6os/applied.json");
    assert!(first.contains("\"digest\": \"sha256:"), "{first}");
    assert!(first.contains("\"source\": \"the ESP"), "{first}");

    // (b) The same document at the next boot: nothing applied, nothing rewritten.
    vm.send_line("reboot").unwrap();
    vm.wait_for_line("p6os-agent: rebooting", CMD).unwrap();
    let unchanged = vm.wait_for_line("p6os-agent: config", BOOT).unwrap();
    assert!(
        unchanged.contains("config unchanged"),
        "second boot: {unchanged}"
    );
    vm.wait_for_line("p6os-agent: ready slot=a", BOOT).unwrap();
    // The boot assessment logs on this console too: let it finish before reading a file.
    vm.wait_for_line("slot a is blessed", BOOT).unwrap();
    let second = run(&mut vm, "JSON2", "cat /var/lib/p6os/applied.json");
    // The agent's own log lines (registration retries, the assessment) share this console and
    // may land inside a command's output: compare the JSON documents only.
    let json = |out: &str| -> String {
        out.lines()
            .filter(|l| !l.starts_with("p6os-agent: "))
            .collect::<Vec<_>>()
            .join("\n")
            .trim()
            .to_string()
    };
    assert_eq!(
        json(&first),
        json(&second),
        "applied.json changed on the second boot"
    );
    let out = run(&mut vm, "HOST2", "hostname; ip -4 addr show dev eth0");
    assert!(
        out.contains("store-0421") && out.contains("inet 10.0.2.15/24"),
        "{out}"
    );

    // A changed document, signed with the fleet's configuration key and injected the way an
    // operator does it, is applied again; what it no longer asks for goes away. (An unsigned
    // change is ignored on a provisioned device: the config_trust scenario.)
    vm.send_line("poweroff").unwrap();
    vm.wait_exit(CMD).unwrap();
    drop(vm);
    let changed = signed(&f, "changed.yaml", "hostname: store-0422\n", 1);
    let status = Command::new(p6os_cli())
        .args(["config", "inject"])
        .arg(&image)
        .arg(&changed)
        .status()
        .unwrap();
    assert!(status.success(), "p6os config inject failed");
    let mut vm = config_vm(&image).start_in_place("changed").unwrap();
    let applied = vm.wait_for_line("p6os-agent: config", BOOT).unwrap();
    assert!(applied.contains("config applied"), "third boot: {applied}");
    vm.wait_for_line("p6os-agent: ready slot=a", BOOT).unwrap();
    let out = run(
        &mut vm,
        "THIRD",
        "hostname; grep -c ^ops: /etc/passwd; ls /etc/environment /etc/p6os/registries.yaml; ls -d /var/home/ops",
    );
    assert!(out.contains("store-0422"), "hostname: {out}");
    assert!(
        out.lines().any(|l| l.trim() == "0"),
        "user ops still in /etc/passwd: {out}"
    );
    assert!(
        out.contains("/etc/environment: No such file")
            && out.contains("/etc/p6os/registries.yaml: No such file"),
        "files of the old document left: {out}"
    );
    assert!(
        out.contains("\n/var/home/ops"),
        "home directory removed: {out}"
    );
}

/// Every file and directory of the overlays' upper layers with size, mtime and mode.
/// What the configuration owns on the state partition: every file with size, time, mode and
/// owner, every directory with mode and owner. The registration record (written by the
/// registration process whenever it gets to it, which also touches its directory's time) is not
/// configuration and is left out.
const LIST_STATE: &str =
    "S='/run/p6os/state/overlay/etc/upper /run/p6os/state/overlay/var/upper'; \
     find $S -type f ! -name registration.json | sort | xargs stat -c '%n %s %Y %a %u'; \
     find $S -type d | sort | xargs stat -c '%n %a %u'";

/// A CIDATA drive with `user_data` and its signature beside it.
fn drive_with_user_data(dir: &Path, user_data: &Path) -> PathBuf {
    let signature = user_data.with_extension("yaml.sig");
    cidata_drive(dir, "cidata", user_data, Some(&signature)).unwrap()
}

#[test]
fn invalid_config_on_a_drive_is_reported_and_changes_nothing() {
    let (f, image) = image_with_config(&site_config());
    // First boot: the valid document from the ESP is applied.
    let mut vm = config_vm(&image).start_in_place("valid").unwrap();
    vm.wait_for_line("p6os-agent: config applied", BOOT)
        .unwrap();
    vm.wait_for_line("p6os-agent: ready slot=a", BOOT).unwrap();
    let before = run(&mut vm, "LIST", LIST_STATE);
    assert!(
        before.contains("etc/upper/p6os/registries.yaml"),
        "{before}"
    );
    vm.send_line("poweroff").unwrap();
    vm.wait_exit(CMD).unwrap();
    drop(vm);

    // Second boot with a configuration drive: it wins over the ESP, its signature holds (a
    // provisioned device ignores unsigned drives), and the document is invalid.
    let invalid = "#cloud-config\nhostname: store_9!\nnetwork:\n  interfaces:\n    - name: eth0\n      addresses: [10.0.2.300/24]\nusers:\n  - name: ops\n    passwd: hunter2\n";
    // `p6os config sign` refuses an invalid document, so it is signed here with the same key
    // and the library the command uses: what a newer signing tool, with rules this agent does
    // not know, could hand a device.
    let invalid = {
        let path = f.dir.path().join("invalid.yaml");
        std::fs::write(&path, invalid).unwrap();
        let key = std::fs::read_to_string(&f.secret_key).unwrap();
        let key = p6os_bundle::keys::SecretKey::from_file(&key).unwrap();
        let signature = p6os_bundle::configsig::ConfigSignature::sign(&key, invalid.as_bytes(), 1);
        std::fs::write(path.with_extension("yaml.sig"), signature.to_file()).unwrap();
        path
    };
    let drive = drive_with_user_data(f.dir.path(), &invalid);
    let mut config = config_vm(&image);
    config.extra_drives.push(drive);
    let mut vm = config.start_in_place("invalid").unwrap();
    let from = vm
        .wait_for_line("p6os-agent: using unattended.yaml from", BOOT)
        .unwrap();
    assert!(
        from.contains("configuration drive /dev/vdb (/user-data)"),
        "{from}"
    );
    let verdict = vm
        .wait_for_line("p6os-agent: warning: config invalid", BOOT)
        .unwrap();
    assert!(verdict.contains("3 problems; nothing applied"), "{verdict}");
    let l1 = vm.wait_for_line("/dev/vdb:/user-data:2:11", CMD).unwrap();
    assert!(l1.contains("hostname"), "{l1}");
    let l2 = vm.wait_for_line("/dev/vdb:/user-data:6:", CMD).unwrap();
    assert!(l2.contains("10.0.2.300/24"), "{l2}");
    let l3 = vm.wait_for_line("/dev/vdb:/user-data:9:", CMD).unwrap();
    assert!(l3.contains("not a password hash"), "{l3}");
    // The machine still boots to a shell.
    vm.wait_for_line("p6os-agent: ready slot=a", BOOT).unwrap();
    assert!(
        !vm.console_log().contains("hunter2"),
        "the plain password was echoed"
    );
    let after = run(&mut vm, "LIST2", LIST_STATE);
    // Only the listing: the agent's own log lines share the serial console and may land in it.
    let listing = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("/run/p6os/state/"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        listing(&before),
        listing(&after),
        "the state partition changed"
    );
    let out = run(&mut vm, "HOST", "hostname");
    assert!(out.contains("store-0421"), "{out}");
}
