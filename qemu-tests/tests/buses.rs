//! The tiny image boots from the disk controllers of real machines, not only virtio: an NVMe
//! disk (an Intel NUC's M.2 slot). The agent finds its root and state partitions on
//! `/dev/nvme0n1p*` through the boot loader's `LoaderDevicePartUUID`.
//!
//! Not yet: SATA (AHCI) and USB sticks (xHCI) — Debian's cloud kernel, which the tiny recipe
//! uses, has no driver for either (issue 14 adds the generic kernel and its module classes).

use std::time::Duration;

use p6os_qemu_tests::test_image;
use p6os_qemu_tests::vm::{Bus, VmConfig};

const BOOT: Duration = Duration::from_secs(180);

#[test]
fn tiny_image_boots_from_nvme() {
    let mut config = VmConfig::new(test_image()).unwrap();
    config.boot_bus = Bus::Nvme;
    let mut vm = config.start("nvme").unwrap();
    let found = vm
        .wait_for_line("p6os-agent: found p6os-root-a at", BOOT)
        .unwrap();
    assert!(found.contains("/dev/nvme0n1p2"), "{found}");
    assert!(found.contains("p6os-state at /dev/nvme0n1p4"), "{found}");
    let disk = vm.wait_for_line("p6os-agent: ready", BOOT).unwrap();
    assert!(disk.contains("ready slot=a version=1.0.0"), "{disk}");
    vm.wait_for_line("slot a is blessed", BOOT).unwrap();
}
