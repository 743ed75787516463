//! The default image (Debian's generic kernel, systemd, udev, networkd) on the hardware of a
//! store's PC: its boot disk on NVMe, on SATA (AHCI) or a USB stick (xHCI), with an Intel
//! e1000e NIC. Each boot must reach a blessed slot A with the root on that disk, and the NIC
//! must get its address by DHCP from QEMU's user network: the test logs in over SSH through
//! it (the forward reaches the guest only at the address DHCP gave it).

use std::time::Duration;

use p6os_qemu_tests::fixture::Fixture;
use p6os_qemu_tests::slot;
use p6os_qemu_tests::ssh::{free_port, keygen, ops_config, Ssh};
use p6os_qemu_tests::vm::{Bus, Network, Nic, VmConfig};

const BOOT: Duration = Duration::from_secs(420);

fn boots_from(bus: Bus, disk: &str) {
    let f = Fixture::new().unwrap();
    let image = f
        .image(&f.recipe_of("default", "1.0.0", "").unwrap())
        .unwrap();
    let (key, public) = keygen(f.dir.path());
    f.inject(&image, &ops_config("store-0042", &public))
        .unwrap();

    let port = free_port();
    let mut config = VmConfig::new(&image).unwrap();
    config.memory_mib = 1024;
    config.boot_bus = bus;
    config.nic = Nic::E1000e;
    config.network = Network::UserRestrictedSsh { port };
    let mut vm = config.start_in_place(&format!("default-{bus:?}")).unwrap();
    let found = vm
        .wait_for_line("p6os-agent: found p6os-root-a at", BOOT)
        .unwrap();
    assert!(found.contains(&format!("at /dev/{disk}2")), "{found}");
    vm.wait_for_line("slot a is blessed", BOOT).unwrap();
    let ssh = Ssh { key: &key, port };
    ssh.wait(&vm, Duration::from_secs(120));

    // The interface udev named, its driver, and the address networkd got by DHCP.
    let links = ssh.run(
        &vm,
        "for n in /sys/class/net/*/device/driver; do echo \"$n $(readlink $n)\"; done",
    );
    let line = links
        .lines()
        .find(|l| l.ends_with("/e1000e"))
        .unwrap_or_else(|| panic!("no e1000e interface: {links}"));
    let name = line.split('/').nth(4).unwrap();
    let address = ssh.run(&vm, &format!("ip -4 -o addr show dev {name}"));
    assert!(
        address.contains("inet 10.0.2.15/24") && address.contains("dynamic"),
        "{address}"
    );
    let status = ssh.status(&vm);
    assert_eq!(status["booted"], "a", "{status:#}");
    assert_eq!(slot(&status, "a")["state"], "blessed", "{status:#}");
    eprintln!(
        "default image on {bus:?}: blessed and reachable in {:?}",
        vm.elapsed()
    );
}

#[test]
fn default_image_boots_from_nvme_with_an_intel_nic() {
    boots_from(Bus::Nvme, "nvme0n1p");
}

#[test]
fn default_image_boots_from_sata_with_an_intel_nic() {
    boots_from(Bus::Sata, "sda");
}

#[test]
fn default_image_boots_from_a_usb_stick_with_an_intel_nic() {
    boots_from(Bus::Usb, "sda");
}
