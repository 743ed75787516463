//! The tiny image boots through OVMF and systemd-boot to the agent, keeps /var across a reboot
//! and keeps /usr read-only.

use std::time::Duration;

use p6os_qemu_tests::{test_image, vm::VmConfig};

const BOOT: Duration = Duration::from_secs(180);
const CMD: Duration = Duration::from_secs(30);

#[test]
fn tiny_image_boots_to_the_ready_line() {
    let mut vm = VmConfig::new(test_image()).unwrap().start("boot").unwrap();
    // The slot is protected: its root is the dm-verity device, never the partition itself.
    let verity = vm.wait_for_line("p6os-agent: dm-verity", BOOT).unwrap();
    assert!(verity.contains("p6os-root-a-verity (/dev/dm-"), "{verity}");
    let root = vm.wait_for_line("p6os-agent: mounted root", BOOT).unwrap();
    assert!(root.contains("mounted root /dev/dm-"), "{root}");
    let ready = vm.wait_for_line("p6os-agent: ready", BOOT).unwrap();
    assert!(
        ready
            .trim_start()
            .starts_with("p6os-agent: ready slot=a version=1.0.0"),
        "{ready}"
    );
    eprintln!("ready after {:.1?}", vm.elapsed());
}

#[test]
fn var_survives_reboot_and_usr_is_read_only() {
    let mut vm = VmConfig::new(test_image())
        .unwrap()
        .start("persist")
        .unwrap();
    vm.wait_for_line("p6os-agent: ready slot=a", BOOT).unwrap();
    // Markers are computed by the shell so the echoed command line never matches them.
    vm.send_line("echo kept-across-reboot > /var/p6os-test && sync && echo WROTE-$((40+2))")
        .unwrap();
    vm.wait_for_line("WROTE-42", CMD).unwrap();
    vm.send_line("touch /usr/p6os-test 2>&1; echo USR\"\"-RC=$?")
        .unwrap();
    let rc = vm.wait_for_line("USR-RC=", CMD).unwrap();
    assert!(
        rc.contains("USR-RC=1"),
        "writing under /usr must fail: {rc}"
    );
    assert!(
        vm.console_log().contains("Read-only file system"),
        "expected EROFS from touch"
    );
    vm.send_line("reboot").unwrap();
    vm.wait_for_line("p6os-agent: rebooting", CMD).unwrap();
    vm.wait_for_line("p6os-agent: ready slot=a", BOOT).unwrap();
    vm.send_line("cat /var/p6os-test; echo CAT-$((1+1))")
        .unwrap();
    vm.wait_for_line("CAT-2", CMD).unwrap();
    let log = vm.console_log();
    let after_reboot = &log[log.rfind("p6os-agent: ready").unwrap()..];
    assert!(
        after_reboot.contains("kept-across-reboot"),
        "file under /var lost across reboot"
    );
}
