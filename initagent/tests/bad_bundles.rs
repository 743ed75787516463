//! Bad bundles are refused with a clear error and a non-zero exit before a byte of the target
//! changes: `p6os-agent install-into` runs the same checks, first pass and install as
//! `p6os-agent upgrade`, into a file and a directory instead of a partition and the ESP.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use p6os_bundle::format::Manifest;
use p6os_bundle::keys::SecretKey;
use p6os_bundle::testing::{self, TestBundle};

const AGENT: &str = env!("CARGO_BIN_EXE_p6os-agent");
const SLOT_FILL: u8 = 0xa5;

struct Case {
    dir: tempfile::TempDir,
}

fn manifest(version: &str) -> Manifest {
    let mut m = testing::manifest("tiny", version);
    m.arch = std::env::consts::ARCH.into();
    m
}

/// The slot's bytes: 2 MB, so that a refusal after the first pass would show in the slot.
fn rootfs() -> Vec<u8> {
    testing::noise(2_000_000, 1)
}

fn bundle_bytes(m: Manifest, key: &SecretKey) -> Vec<u8> {
    TestBundle {
        manifest: m,
        kernel: vec![7u8; 10_000],
        initrd: vec![9u8; 5_000],
        rootfs: rootfs(),
        level: 3,
    }
    .sign(key)
}

fn key() -> SecretKey {
    SecretKey::from_seed([3; 32])
}

impl Case {
    fn new(slot_bytes: usize) -> Case {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("slot"), vec![SLOT_FILL; slot_bytes]).unwrap();
        fs::create_dir(dir.path().join("esp")).unwrap();
        fs::write(dir.path().join("trusted.pub"), key().public().to_file()).unwrap();
        Case { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn install(&self, bundle: &[u8], device_version: &str) -> Output {
        self.install_with(bundle, device_version, &[])
    }

    fn install_with(&self, bundle: &[u8], device_version: &str, extra: &[&str]) -> Output {
        fs::write(self.path("b.p6b"), bundle).unwrap();
        Command::new(AGENT)
            .arg("install-into")
            .arg(format!("--bundle={}", self.path("b.p6b").display()))
            .arg(format!("--slot-file={}", self.path("slot").display()))
            .arg(format!("--esp-dir={}", self.path("esp").display()))
            .arg(format!("--key={}", self.path("trusted.pub").display()))
            .arg("--device-name=tiny")
            .arg(format!("--device-version={device_version}"))
            .args(extra)
            .output()
            .unwrap()
    }

    /// Refused, with `message` on stderr, and the target untouched.
    fn assert_refused(&self, bundle: &[u8], device_version: &str, message: &str) {
        let out = self.install(bundle, device_version);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "accepted: {err}");
        assert!(err.contains(message), "expected `{message}` in: {err}");
        let slot = fs::read(self.path("slot")).unwrap();
        assert!(slot.iter().all(|&b| b == SLOT_FILL), "the slot was written");
        assert!(is_empty(&self.path("esp")), "the ESP was written");
    }
}

fn is_empty(dir: &Path) -> bool {
    fs::read_dir(dir).unwrap().next().is_none()
}

#[test]
fn a_good_bundle_installs() {
    let case = Case::new(4 << 20);
    // Leftovers of an earlier, cut upgrade of this slot: removed before anything is written,
    // so a small ESP never holds a third kernel.
    fs::create_dir_all(case.path("esp/p6os/b")).unwrap();
    fs::write(case.path("esp/p6os/b/vmlinuz.new"), vec![0; 1 << 20]).unwrap();
    fs::write(case.path("esp/p6os/b/initrd.img"), b"old").unwrap();
    let out = case.install(&bundle_bytes(manifest("2.0.0"), &key()), "1.0.0");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(case.path("slot")).unwrap(), rootfs());
    for f in ["vmlinuz", "initrd.img", "manifest.json"] {
        assert!(case.path("esp/p6os/b").join(f).is_file(), "{f}");
    }
    let mut names: Vec<String> = fs::read_dir(case.path("esp/p6os/b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["initrd.img", "manifest.json", "vmlinuz"]);
    assert_ne!(
        fs::read(case.path("esp/p6os/b/initrd.img")).unwrap(),
        b"old"
    );
}

#[test]
fn every_kind_of_bad_bundle_is_refused_before_anything_is_written() {
    let case = Case::new(4 << 20);
    let good = bundle_bytes(manifest("2.0.0"), &key());
    let header_len = {
        let mut r = std::io::Cursor::new(&good);
        p6os_bundle::format::read_header(&mut r).unwrap().len as usize
    };
    case.assert_refused(&good[..good.len() - 1000], "1.0.0", "ends early");
    case.assert_refused(&good[..header_len - 10], "1.0.0", "ends early");
    let mut payload_flip = good.clone();
    payload_flip[good.len() - 5000] ^= 0x01;
    case.assert_refused(&payload_flip, "1.0.0", "damaged");
    let mut manifest_flip = good.clone();
    let at = good.windows(9).position(|w| w == b"sha256:00").unwrap() + 1;
    manifest_flip[at] ^= 0x01;
    case.assert_refused(&manifest_flip, "1.0.0", "signature does not match");
    let other = SecretKey::from_seed([4; 32]);
    case.assert_refused(
        &bundle_bytes(manifest("2.0.0"), &other),
        "1.0.0",
        "which this device does not trust",
    );
    let mut unsigned = good.clone();
    let sig_at = header_len - 68;
    unsigned.splice(sig_at..header_len, 0u32.to_le_bytes());
    case.assert_refused(&unsigned, "1.0.0", "not signed");
    let mut arch = manifest("2.0.0");
    arch.arch = "riscv64".into();
    case.assert_refused(
        &bundle_bytes(arch, &key()),
        "1.0.0",
        "the bundle is for riscv64",
    );
    let mut name = manifest("2.0.0");
    name.compatible = vec!["other".into()];
    case.assert_refused(
        &bundle_bytes(name, &key()),
        "1.0.0",
        "this device runs `tiny`",
    );
    case.assert_refused(&good, "3.0.0", "--allow-downgrade");
    case.assert_refused(&good, "2.0.0", "not newer");
    let small = Case::new(1 << 20);
    small.assert_refused(&good, "1.0.0", "larger than the slot");
}

/// The device's security floor holds whatever the downgrade flag says; above it a downgrade
/// needs the flag.
#[test]
fn the_security_floor_and_the_downgrade_flag_are_enforced_at_install() {
    let case = Case::new(4 << 20);
    let old = bundle_bytes(manifest("1.5.0"), &key());
    let floor = ["--floor=2.0.0", "--allow-downgrade"];
    let out = case.install_with(&old, "3.0.0", &floor);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "accepted below the floor: {err}"
    );
    assert!(
        err.contains("below this device's security floor 2.0.0"),
        "{err}"
    );
    let untouched = fs::read(case.path("slot")).unwrap();
    assert!(
        untouched.iter().all(|&b| b == SLOT_FILL),
        "the slot was written"
    );

    let above = bundle_bytes(manifest("2.5.0"), &key());
    let out = case.install_with(&above, "3.0.0", &["--floor=2.0.0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a downgrade without the flag: {err}"
    );
    assert!(err.contains("--allow-downgrade"), "{err}");

    let out = case.install_with(&above, "3.0.0", &floor);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(case.path("slot")).unwrap(), rootfs());
}
