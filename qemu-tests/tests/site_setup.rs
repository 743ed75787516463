//! Site setup at the appliance's serial console: a new device with no configuration announces
//! the pause, a key opens the setup screens there, the operator types a host name and an
//! account with an SSH key, saves, and the device boots on with them (through the first-boot
//! transaction). At the next boot the device is provisioned and the screens are not offered
//! (the configuration-drive policy: only signed documents from then on).
//!
//! Network rule: QEMU's user network with `restrict=on`; the document names no address.

use std::time::Duration;

use p6os_qemu_tests::fixture::Fixture;
use p6os_qemu_tests::vm::{Network, Vm, VmConfig};

const BOOT: Duration = Duration::from_secs(180);
const SCREEN: Duration = Duration::from_secs(60);
const CMD: Duration = Duration::from_secs(30);

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHn6vQzj8cJ2a1bU3m8k0a9n3F0kJm2b0o6u5rT1xYzA ops@example";

const CTRL_A: &[u8] = b"\x01";
const CTRL_N: &[u8] = b"\x0e";
const CTRL_S: &[u8] = b"\x13";
const TAB: &[u8] = b"\t";

/// Types `bytes` and waits until the screen shows `then`.
fn key(vm: &mut Vm, bytes: &[u8], then: &str) {
    vm.send_bytes(bytes).unwrap();
    screen(vm, then);
}

/// Waits until the screen (as a terminal shows it) has `needle`.
fn screen(vm: &mut Vm, needle: &str) -> String {
    vm.wait_for_screen(needle, SCREEN)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Types `bytes`; the screen once it shows `then`.
fn screen_after(vm: &mut Vm, bytes: &[u8], then: &str) -> String {
    vm.send_bytes(bytes).unwrap();
    screen(vm, then)
}

/// Types text one key at a time, as a person does (a serial line has no paste buffer).
fn text(vm: &mut Vm, s: &str) {
    for chunk in s.as_bytes().chunks(8) {
        vm.send_bytes(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
}

#[test]
fn typed_at_the_serial_console_the_device_boots_with_the_host_name_and_account() {
    let f = Fixture::new().unwrap();
    let image = f
        .image(&f.recipe("1.0.0", "", Some(Fixture::TINY_ARGS)).unwrap())
        .unwrap();
    let mut config = VmConfig::new(&image).unwrap();
    config.network = Network::UserRestricted;
    let mut vm = config.start_in_place("site-setup").unwrap();
    vm.wait_for_line("press any key within", BOOT).unwrap();
    key(&mut vm, b" ", "P6OS site setup");
    // Start -> Appliance -> Name and time.
    key(&mut vm, CTRL_N, "Appliance id");
    key(&mut vm, CTRL_N, "Host name");
    text(&mut vm, "store_0777");
    screen(&mut vm, "is not a valid host name");
    // Fix it: five characters back, then the right ones.
    vm.send_bytes(b"\x7f\x7f\x7f\x7f\x7f").unwrap();
    text(&mut vm, "-0777");
    // On to the accounts page: network port, name servers, proxy, Kubernetes, registry, console.
    for _ in 0..7 {
        vm.send_bytes(CTRL_N).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    screen(&mut vm, "No account is set");
    key(&mut vm, CTRL_A, "Account name");
    text(&mut vm, "ops");
    vm.send_bytes(TAB).unwrap();
    vm.send_bytes(TAB).unwrap();
    text(&mut vm, KEY);
    key(&mut vm, TAB, "SSH key 1");
    // New SSH key -> password hash -> administrator: yes.
    vm.send_bytes(TAB).unwrap();
    vm.send_bytes(TAB).unwrap();
    vm.send_bytes(b" ").unwrap();
    let review = screen_after(&mut vm, CTRL_S, "No problems. Ctrl-S saves");
    assert!(review.contains("store-0777"), "{review}");
    vm.send_bytes(CTRL_S).unwrap();
    let applied = vm
        .wait_for_line("p6os-agent: config applied", BOOT)
        .unwrap();
    assert!(applied.contains("sha256:"), "{applied}");
    vm.wait_for_line("p6os-agent: ready slot=a", BOOT).unwrap();
    vm.wait_for_line("slot a is blessed", BOOT).unwrap();
    let log = vm.console_log();
    assert!(
        log.contains("site setup: a document was saved on ttyS0"),
        "the agent says where the document came from"
    );

    let out = vm.run("HOST", "hostname", CMD).unwrap();
    assert!(out.contains("store-0777"), "hostname: {out}");
    let out = vm
        .run(
            "USER",
            "grep ^ops: /etc/passwd; cat /var/home/ops/.ssh/authorized_keys",
            CMD,
        )
        .unwrap();
    assert!(out.contains("ops:x:"), "account: {out}");
    assert!(out.contains(KEY), "ssh key: {out}");
    let out = vm
        .run("SRC", "cat /var/lib/p6os/applied.json", CMD)
        .unwrap();
    assert!(
        out.contains("the setup screens at the device's console"),
        "{out}"
    );

    // Provisioned now: the next boot does not offer the screens, and keeps what was typed.
    vm.send_line("reboot").unwrap();
    vm.wait_for_line("p6os-agent: rebooting", CMD).unwrap();
    let line = vm
        .wait_for_line("site setup at the console not offered", BOOT)
        .unwrap();
    assert!(line.contains("provisioned"), "{line}");
    vm.wait_for_line("p6os-agent: ready slot=a", BOOT).unwrap();
    vm.wait_for_line("slot a is blessed", BOOT).unwrap();
    let out = vm.run("HOST2", "hostname", CMD).unwrap();
    assert!(out.contains("store-0777"), "hostname after reboot: {out}");
}
