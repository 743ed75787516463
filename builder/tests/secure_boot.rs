//! Secure Boot signing against the reference tools: keys from `p6os keygen --secure-boot`, a
//! unified kernel image on Debian's systemd-stub and systemd-boot itself signed by us, and
//! checked by `sbverify` (sbsigntool); our image digest equals the one `sbsign` signs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use p6os_builder::secureboot;
use p6os_efi::authenticode::image_digest;
use p6os_efi::uki::{assemble, os_release, Parts};

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// Two key directories made once per test binary (RSA key generation takes a moment).
fn keys() -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static K: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    K.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours");
        let other = dir.path().join("other");
        let p6os = env!("CARGO_BIN_EXE_p6os");
        for d in [&ours, &other] {
            let out = Command::new(p6os)
                .args(["keygen", "--secure-boot", "--out"])
                .arg(d)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        (dir, ours, other)
    })
}

fn sbverify(cert: &Path, file: &Path) -> (bool, String) {
    let out = Command::new("sbverify")
        .arg("--cert")
        .arg(cert)
        .arg(file)
        .output()
        .expect("sbverify (package sbsigntool)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn uki() -> Vec<u8> {
    let stub = std::fs::read(STUB).expect("systemd-stub (package systemd-boot-efi)");
    assemble(
        &stub,
        &Parts {
            os_release: &os_release("tiny", "1.0.0"),
            cmdline: "rootfstype=squashfs ro console=ttyS0",
            kernel: &vec![0x4d; 300_001],
            initrd: &vec![0x07; 70_000],
        },
    )
    .unwrap()
}

#[test]
fn keygen_writes_private_keys_0600_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let (_, ours, _) = keys();
    for k in secureboot::KEYS {
        let mode = std::fs::metadata(ours.join(format!("{k}.key")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{k}.key");
        let cert = std::fs::read_to_string(ours.join(format!("{k}.crt"))).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{k}.crt");
    }
    assert!(matches!(
        secureboot::generate(ours, "again"),
        Err(secureboot::KeyError::Exists(_))
    ));
    // The certificate is a function of the key.
    let pem = std::fs::read_to_string(ours.join("db.key")).unwrap();
    let a = secureboot::certificate(&pem, "x").unwrap();
    assert_eq!(a, secureboot::certificate(&pem, "x").unwrap());
}

#[test]
fn our_signatures_pass_sbverify_with_our_certificate_only() {
    let (dir, ours, other) = keys();
    let signer = secureboot::load_signer(ours).unwrap();
    let cases = [
        ("uki.efi", uki()),
        ("systemd-boot.efi", std::fs::read(BOOT).unwrap()),
    ];
    for (name, unsigned) in cases {
        let signed = signer.sign(&unsigned).unwrap();
        assert_eq!(
            signer.sign(&unsigned).unwrap(),
            signed,
            "{name}: not reproducible"
        );
        let file = dir.path().join(name);
        std::fs::write(&file, &signed).unwrap();
        let (ok, text) = sbverify(&ours.join("db.crt"), &file);
        assert!(ok, "{name}: {text}");
        let (ok, text) = sbverify(&other.join("db.crt"), &file);
        assert!(!ok, "{name} verified with another certificate: {text}");
        // A byte changed after signing: refused.
        let mut changed = signed.clone();
        changed[0x500] ^= 1;
        std::fs::write(&file, &changed).unwrap();
        assert!(!sbverify(&ours.join("db.crt"), &file).0, "{name}: changed");
        // Signing twice is refused.
        assert!(signer.sign(&signed).is_err());
    }
}

#[test]
fn our_digest_is_the_one_sbsign_signs() {
    let (dir, ours, _) = keys();
    let unsigned = dir.path().join("digest-unsigned.efi");
    let mut bytes = uki();
    bytes.resize(bytes.len().div_ceil(8) * 8, 0);
    std::fs::write(&unsigned, &bytes).unwrap();
    let signed = dir.path().join("digest-sbsign.efi");
    let out = Command::new("sbsign")
        .arg("--key")
        .arg(ours.join("db.key"))
        .arg("--cert")
        .arg(ours.join("db.crt"))
        .arg("--output")
        .arg(&signed)
        .arg(&unsigned)
        .output()
        .expect("sbsign (package sbsigntool)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = std::fs::read(&signed).unwrap();
    assert_eq!(
        image_digest(&theirs).unwrap(),
        image_digest(&bytes).unwrap()
    );
    let ours_signed = secureboot::load_signer(ours).unwrap().sign(&bytes).unwrap();
    assert_eq!(
        image_digest(&ours_signed).unwrap(),
        image_digest(&bytes).unwrap()
    );
}
