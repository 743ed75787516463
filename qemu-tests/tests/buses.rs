//! The tiny image on the disk controllers and the NIC of real machines, not virtio: an NVMe
//! disk (an Intel NUC's M.2 slot), a SATA disk on AHCI, and a USB stick on xHCI, each with an
//! Intel e1000e NIC. The agent loads the kernel layer's module classes, waits for the boot
//! disk (USB enumerates late), finds its partitions on it through the boot loader's
//! `LoaderDevicePartUUID`, and the site configuration's static address lands on the e1000e
//! interface, which then resolves the gateway (packets both ways through the driver).

use std::time::Duration;

use p6os_qemu_tests::fixture;
use p6os_qemu_tests::test_image;
use p6os_qemu_tests::vm::{copy_image, Bus, Network, Nic, VmConfig};

const BOOT: Duration = Duration::from_secs(180);
const CMD: Duration = Duration::from_secs(60);

const SITE: &str = "hostname: nuc-0042
network:
  interfaces:
    - name: eth0
      addresses: [10.0.2.15/24]
";

/// Boots a copy of the tiny image with its boot disk on `bus`, where the agent must find its
/// partitions on `disk` (`/dev/<disk><n>`).
fn boots_from(bus: Bus, disk: &str) {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    copy_image(&test_image(), &image).unwrap();
    fixture::inject(&image, SITE, &dir.path().join("unattended.yaml")).unwrap();
    let mut config = VmConfig::new(&image).unwrap();
    config.boot_bus = bus;
    config.network = Network::UserRestricted;
    config.nic = Nic::E1000e;
    let mut vm = config.start_in_place(&format!("{bus:?}")).unwrap();
    let found = vm
        .wait_for_line("p6os-agent: found p6os-root-a at", BOOT)
        .unwrap();
    assert!(found.contains(&format!("at /dev/{disk}2")), "{found}");
    assert!(
        found.contains(&format!("p6os-state at /dev/{disk}4")),
        "{found}"
    );
    let modules = vm.console_log();
    let loaded = modules
        .lines()
        .find(|l| l.contains("p6os-agent: loaded "))
        .unwrap_or_default();
    assert!(loaded.contains(" 0 failed"), "{loaded}");
    let ready = vm.wait_for_line("p6os-agent: ready", BOOT).unwrap();
    assert!(ready.contains("ready slot=a version=1.0.0"), "{ready}");
    vm.wait_for_line("slot a is blessed", BOOT).unwrap();

    // Short commands: the serial line editor wraps long ones.
    let mut run = |tag: &str, command: &str| vm.run(tag, command, CMD).unwrap();
    let driver = run("DRV", "readlink /sys/class/net/eth0/device/driver");
    assert!(driver.contains("/e1000e"), "driver: {driver}");
    let address = run("ADDR", "ip -4 addr show dev eth0");
    assert!(address.contains("inet 10.0.2.15/24"), "address: {address}");
    // e1000e reports its carrier about three seconds after the interface is brought up
    // (QEMU models the autonegotiation), and a packet sent before that is dropped: busybox's
    // `ping -c 1` sends one echo only. Wait for the carrier first (at most 20 s).
    let carrier = run(
        "LINK",
        "for i in $(seq 20); do grep -q 1 /sys/class/net/eth0/carrier && break; sleep 1; done; cat /sys/class/net/eth0/carrier",
    );
    assert!(
        carrier.lines().any(|l| l.trim() == "1"),
        "carrier: {carrier}"
    );
    run("PING", "ping -c 1 -W 5 10.0.2.2 >/dev/null 2>&1");
    let gateway = run("NEIGH", "ip neigh show 10.0.2.2");
    if !gateway.contains("lladdr 52:55:0a:00:02:02") {
        let driver = run("DMESG", "dmesg | grep -i -e e1000e -e eth0 | tail");
        panic!("gateway: {gateway}\nthe driver said: {driver}");
    }
    eprintln!("{bus:?}: booted from /dev/{disk} in {:?}", vm.elapsed());
}

#[test]
fn tiny_image_boots_from_nvme_with_an_intel_nic() {
    boots_from(Bus::Nvme, "nvme0n1p");
}

#[test]
fn tiny_image_boots_from_sata_with_an_intel_nic() {
    boots_from(Bus::Sata, "sda");
}

#[test]
fn tiny_image_boots_from_a_usb_stick_with_an_intel_nic() {
    boots_from(Bus::Usb, "sda");
}
