//! `p6os flash` onto a real block device (a loop device over a sparse file, larger than the
//! image) with a site unattended.yaml, then that device attached to QEMU as a USB stick on
//! xHCI and booted through OVMF: the image's mapped ranges, the moved backup GPT and the
//! configuration on the ESP all work, for the tiny and the default image (what a technician
//! does with a stick and a store's PC), and the tiny image's first boot grows its state
//! partition to the device's end. Needs root (losetup); skipped with a reason otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use p6os_qemu_tests::fixture::Fixture;
use p6os_qemu_tests::ssh::{free_port, keygen, ops_config, Ssh};
use p6os_qemu_tests::vm::{Bus, Network, Nic, VmConfig};
use p6os_qemu_tests::{p6os_cli, test_image};

/// A loop device, detached on drop (also when the test fails).
struct Loop(PathBuf);

impl Loop {
    fn attach(file: &Path) -> Option<Loop> {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| Loop(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn flashed_loop_device_boots_with_its_site_config() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("disk");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let Some(dev) = Loop::attach(&backing) else {
        eprintln!("skipping: cannot attach a loop device (needs root and losetup)");
        return;
    };
    let config = dir.path().join("site.yaml");
    std::fs::write(&config, "hostname: flashed-nuc\n").unwrap();
    let out = Command::new(p6os_cli())
        .arg("flash")
        .arg(test_image())
        .arg(&dev.0)
        .arg("--config")
        .arg(&config)
        // A loop device is not removable: --force; no terminal: --yes.
        .args(["--yes", "--force", "--json-progress"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("moved the backup GPT"), "{said}");
    assert!(said.contains("\"task\":\"verifying\""), "{said}");
    let verify = Command::new("sgdisk")
        .arg("-v")
        .arg(&dev.0)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(text.contains("No problems found"), "{text}");

    let mut config = VmConfig::new(&dev.0).unwrap();
    config.boot_bus = Bus::Usb;
    let mut vm = config.start_in_place("flashed").unwrap();
    vm.wait_for_line("p6os-agent: ready slot=a", Duration::from_secs(240))
        .unwrap();
    let name = vm.run("H", "hostname", Duration::from_secs(60)).unwrap();
    assert!(name.contains("flashed-nuc"), "{name}");
    // The state partition grew into the rest of the device on this first boot (the backup
    // GPT was already at the end: `p6os flash` moved it).
    let log = vm.console_log();
    let grew = log
        .lines()
        .find(|l| l.contains("p6os-agent: grew p6os-state"))
        .unwrap_or_else(|| panic!("no growth in:\n{log}"));
    eprintln!("{}", grew.trim());
    vm.send_line("poweroff").unwrap();
    vm.wait_exit(Duration::from_secs(60)).unwrap();
    let verify = Command::new("sgdisk")
        .arg("-v")
        .arg(&dev.0)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(text.contains("No problems found"), "{text}");
    let info = Command::new("sgdisk")
        .arg("-i4")
        .arg(&dev.0)
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    let last = format!("Last sector: {} ", (1u64 << 30) / 512 - 34);
    assert!(info.contains(&last), "{info}");
}

/// Writes `image` onto `dev` with `p6os flash` and the site configuration `config`; returns
/// what the command said.
fn flash(image: &Path, dev: &Path, config: &Path) -> String {
    let out = Command::new(p6os_cli())
        .arg("flash")
        .arg(image)
        .arg(dev)
        .arg("--config")
        .arg(config)
        .args(["--yes", "--force"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    said
}

#[test]
fn default_image_flashed_to_a_stick_boots_from_usb() {
    let f = Fixture::new().unwrap();
    let image = f
        .image(&f.recipe_of("default", "1.0.0", "").unwrap())
        .unwrap();
    let backing = f.dir.path().join("stick");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    let Some(dev) = Loop::attach(&backing) else {
        eprintln!("skipping: cannot attach a loop device (needs root and losetup)");
        return;
    };
    let (key, public) = keygen(f.dir.path());
    let config = f.dir.path().join("site.yaml");
    std::fs::write(&config, ops_config("flashed-store", &public)).unwrap();
    flash(&image, &dev.0, &config);

    let port = free_port();
    let mut vm_config = VmConfig::new(&dev.0).unwrap();
    vm_config.memory_mib = 1024;
    vm_config.boot_bus = Bus::Usb;
    vm_config.nic = Nic::E1000e;
    vm_config.network = Network::UserRestrictedSsh { port };
    let mut vm = vm_config.start_in_place("flashed-default").unwrap();
    let found = vm
        .wait_for_line("p6os-agent: found p6os-root-a at", Duration::from_secs(420))
        .unwrap();
    assert!(found.contains("at /dev/sda2"), "{found}");
    vm.wait_for_line("slot a is blessed", Duration::from_secs(420))
        .unwrap();
    let ssh = Ssh { key: &key, port };
    ssh.wait(&vm, Duration::from_secs(120));
    assert_eq!(ssh.run(&vm, "hostname").trim(), "flashed-store");
}
