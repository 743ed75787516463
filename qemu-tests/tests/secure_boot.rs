//! UEFI Secure Boot with the fixture's own keys enrolled (OVMF's Secure Boot build, SMM on,
//! PK/KEK/db written by `virt-fw-vars`): the signed image starts and its kernel runs with
//! Secure Boot on; a command line added to the boot entry is ignored (the stub keeps the
//! signed one); a kernel image whose command line was edited, one signed by other keys, and a
//! boot loader signed by other keys do not start at all.

use std::path::Path;
use std::time::Duration;

use p6os_qemu_tests::esp;
use p6os_qemu_tests::fixture::Fixture;
use p6os_qemu_tests::vm::{copy_image, Firmware, VmConfig};

const BOOT: Duration = Duration::from_secs(240);
const CMD: Duration = Duration::from_secs(60);
const UKI: &str = "/p6os/a/p6os.efi";
const ENTRY: &str = "/loader/entries/p6os-1.0.0-a.conf";
/// What systemd-boot prints when the firmware refuses to load an image, or OVMF when it
/// refuses the boot loader itself.
const REFUSED: [&str; 3] = ["Error loading", "Access Denied", "Security Violation"];

fn boot_config(disk: &Path, vars: &Path) -> VmConfig {
    let mut config = VmConfig::new(disk).unwrap();
    config.firmware = Firmware::SecureBoot {
        vars: vars.to_path_buf(),
    };
    config
}

/// Boots `disk` under Secure Boot and expects the firmware or the loader to refuse it: no line
/// of the agent, ever.
fn refused(name: &str, disk: &Path, vars: &Path) {
    let mut vm = boot_config(disk, vars).start_in_place(name).unwrap();
    let mut wanted: Vec<&str> = REFUSED.to_vec();
    wanted.push("p6os-agent:");
    let (which, line) = vm.wait_for_any(&wanted, BOOT).unwrap();
    assert!(which < REFUSED.len(), "{name}: it started: {line}");
    // Nothing else starts after the refusal.
    std::thread::sleep(Duration::from_secs(10));
    assert!(
        !vm.console_log().contains("p6os-agent:"),
        "{name}: the agent ran after the refusal"
    );
    eprintln!("{name}: refused: {}", line.trim());
}

#[test]
fn secure_boot_starts_our_signed_image_with_its_own_command_line_only() {
    let f = Fixture::new().unwrap();
    let vars = f.secure_boot_vars().unwrap();
    let ours = f.image(&f.recipe("1.0.0", "", None).unwrap()).unwrap();
    let theirs = f
        .image(&f.recipe_signed_by_others("1.0.0").unwrap())
        .unwrap();

    // Ours, with a command line added to its boot entry: it starts, and ignores that line.
    let disk = f.dir.path().join("ours.img");
    copy_image(&ours, &disk).unwrap();
    let entry = String::from_utf8(esp::read_file(&disk, ENTRY).unwrap()).unwrap();
    assert!(entry.contains("efi /p6os/a/p6os.efi"), "{entry}");
    esp::write_file(
        &disk,
        ENTRY,
        format!("{entry}options p6os.injected=yes rdinit=/bin/sh\n").as_bytes(),
    )
    .unwrap();
    let mut vm = boot_config(&disk, &vars).start_in_place("ours").unwrap();
    vm.wait_for_line("p6os-agent: ready slot=a version=1.0.0", BOOT)
        .unwrap();
    assert!(
        vm.console_log().contains("p6os-agent: secure boot: on"),
        "the kernel did not see Secure Boot on"
    );
    let cmdline = vm.run("CMD", "cat /proc/cmdline", CMD).unwrap();
    assert!(
        cmdline.contains("p6os.verity=") && !cmdline.contains("p6os.injected"),
        "{cmdline}"
    );
    drop(vm);

    // The signed kernel image with one byte of its command line changed: not started.
    let disk = f.dir.path().join("edited.img");
    copy_image(&ours, &disk).unwrap();
    let mut uki = esp::read_file(&disk, UKI).unwrap();
    // (Were it started, the agent would say so: it refuses that filesystem type.)
    let at = uki
        .windows(b"rootfstype=squashfs".len())
        .position(|w| w == b"rootfstype=squashfs")
        .expect("the command line in the image");
    uki[at + "rootfstype=squashf".len()] = b'z';
    esp::write_file(&disk, UKI, &uki).unwrap();
    refused("edited-cmdline", &disk, &vars);

    // Our boot loader starting a kernel image signed by other keys: not started.
    let disk = f.dir.path().join("their-uki.img");
    copy_image(&ours, &disk).unwrap();
    let their_uki = esp::read_file(&theirs, UKI).unwrap();
    esp::write_file(&disk, UKI, &their_uki).unwrap();
    refused("their-kernel-image", &disk, &vars);

    // An image signed by other keys throughout: the firmware refuses its boot loader.
    let disk = f.dir.path().join("theirs.img");
    copy_image(&theirs, &disk).unwrap();
    refused("their-boot-loader", &disk, &vars);
}
