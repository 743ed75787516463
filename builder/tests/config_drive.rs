//! `p6os config drive` with the real binary, on image files in a temp dir (never a device): the
//! drive the standard tools see (`fsck.vfat`, `fatlabel`, mtools, `blkid`) and the agent's probe
//! reads; documents and targets that are refused leave the target as it was.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const P6OS: &str = env!("CARGO_BIN_EXE_p6os");
const MIB: u64 = 1 << 20;

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("running a command");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Finds a tool in PATH or the sbin directories; panics naming the package to install.
fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: install the `{package}` package"))
}

/// The text a tool prints on success.
fn tool_says(name: &str, package: &str, args: &[&str], file: &Path) -> String {
    let out = run(Command::new(tool(name, package))
        .args(args)
        .arg(file)
        .env("MTOOLS_SKIP_CHECK", "1"));
    assert!(out.status.success(), "{name} {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `mtype -i FILE ::PATH`: the bytes of a file on the drive, as mtools reads them.
fn mtype(drive: &Path, path: &str) -> Vec<u8> {
    let out = run(Command::new(tool("mtype", "mtools"))
        .arg("-i")
        .arg(drive)
        .arg(format!("::{path}"))
        .env("MTOOLS_SKIP_CHECK", "1"));
    assert!(out.status.success(), "mtype {path} failed");
    out.stdout
}

/// `fsck.vfat -n`: no complaint besides its version and summary lines.
fn assert_fsck_clean(drive: &Path) {
    let out = run(Command::new(tool("fsck.vfat", "dosfstools"))
        .arg("-n")
        .arg(drive));
    let text = String::from_utf8_lossy(&out.stdout);
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("fsck.fat ") && !l.contains(" files, "))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "fsck.vfat -n: {}\n{text}",
        out.status
    );
}

/// The agent's probe (`initagent/src/firstboot/source.rs`, `probe`, on the first
/// `LABEL_PROBE_BYTES` of every disk and partition), restated: the builder cannot depend on
/// the agent. ISO 9660 and ext4 are tried first; then a FAT32 boot sector and its label.
fn agent_finds_label(drive: &Path) -> Option<String> {
    let head = &fs::read(drive).unwrap()[..32768 + 2048];
    if head[32768] == 1 && &head[32769..32774] == b"CD001" {
        return None;
    }
    if head[1024 + 56..1024 + 58] == [0x53, 0xef] {
        return None;
    }
    let bytes_per_sector = u16::from_le_bytes([head[11], head[12]]);
    let fat_boot = head[510..512] == [0x55, 0xaa]
        && matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        && head[13].is_power_of_two();
    if !fat_boot || &head[82..87] != b"FAT32" || head[66] != 0x29 {
        return None;
    }
    Some(
        String::from_utf8_lossy(&head[71..82])
            .trim_end()
            .to_string(),
    )
}

/// A signed document onto an empty file: a 64 MiB superfloppy that every reader agrees on,
/// holding the document and its signature byte for byte.
#[test]
fn a_signed_document_makes_a_drive_every_reader_agrees_on() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    assert!(
        run(Command::new(P6OS).arg("keygen").arg("--out").arg(&keys))
            .status
            .success()
    );
    let doc = dir.path().join("site.yaml");
    let text = "#cloud-config\nhostname: store-0421\ntimezone: Europe/Paris\n";
    fs::write(&doc, text).unwrap();
    let o = run(Command::new(P6OS)
        .args(["config", "sign"])
        .arg(&doc)
        .arg("--key")
        .arg(keys.join("p6os.key"))
        .args(["--serial", "5"]));
    assert!(o.status.success());

    let drive = dir.path().join("drive.img");
    fs::write(&drive, b"").unwrap();
    let o = run(Command::new(P6OS)
        .args(["config", "drive"])
        .arg(&drive)
        .arg(&doc));
    assert!(o.status.success());
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("labelled P6OS-CONFIG (64 MiB): /unattended.yaml and /unattended.yaml.sig written and read back"),
        "{said}"
    );
    assert_eq!(fs::metadata(&drive).unwrap().len(), 64 * MIB);

    assert_fsck_clean(&drive);
    let label = tool_says("fatlabel", "dosfstools", &[], &drive);
    assert_eq!(label.trim(), "P6OS-CONFIG");
    let blkid = tool_says("blkid", "util-linux", &["-p"], &drive);
    assert!(
        blkid.contains(r#"LABEL="P6OS-CONFIG""#) && blkid.contains(r#"TYPE="vfat""#),
        "{blkid}"
    );
    assert!(!blkid.contains("PTTYPE"), "a partition table: {blkid}");
    assert_eq!(agent_finds_label(&drive).as_deref(), Some("P6OS-CONFIG"));

    assert_eq!(mtype(&drive, "unattended.yaml"), text.as_bytes());
    let sig = mtype(&drive, "unattended.yaml.sig");
    assert_eq!(sig, fs::read(dir.path().join("site.yaml.sig")).unwrap());
    let public = p6os_bundle::keys::PublicKey::from_file(
        &fs::read_to_string(keys.join("p6os.pub")).unwrap(),
    )
    .unwrap();
    let signed = p6os_bundle::configsig::verify(text.as_bytes(), &sig, &[public]).unwrap();
    assert_eq!(signed.serial, 5);
}

/// A stick with a past (`mkfs.vfat` with a label and files, 96 MiB): it keeps its size, and
/// only the new document and label are left.
#[test]
fn a_used_stick_becomes_a_drive_with_only_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let drive = dir.path().join("stick.img");
    let size = 96 * MIB;
    fs::File::create(&drive).unwrap().set_len(size).unwrap();
    let mkfs = run(Command::new(tool("mkfs.vfat", "dosfstools"))
        .args(["-F", "32", "-n", "HOLIDAYS"])
        .arg(&drive));
    assert!(mkfs.status.success());
    let photo = dir.path().join("photo.jpg");
    fs::write(&photo, vec![0xd8; 3 << 20]).unwrap();
    let copy = run(Command::new(tool("mcopy", "mtools"))
        .arg("-i")
        .arg(&drive)
        .arg(&photo)
        .arg("::photo.jpg")
        .env("MTOOLS_SKIP_CHECK", "1"));
    assert!(copy.status.success());

    let doc = dir.path().join("site.yaml");
    fs::write(&doc, "hostname: store-0421\n").unwrap();
    let o = run(Command::new(P6OS)
        .args(["config", "drive", "--yes"])
        .arg(&drive)
        .arg(&doc));
    assert!(o.status.success());
    assert_eq!(fs::metadata(&drive).unwrap().len(), size);
    assert_fsck_clean(&drive);
    assert_eq!(
        tool_says("fatlabel", "dosfstools", &[], &drive).trim(),
        "P6OS-CONFIG"
    );
    let listing = tool_says("mdir", "mtools", &["-b", "-i"], &drive);
    assert_eq!(listing.trim(), "::/unattended.yaml");
    assert_eq!(mtype(&drive, "unattended.yaml"), b"hostname: store-0421\n");
}

/// An invalid document, a signature that is not one, a missing target, a directory: each is
/// refused with why, and nothing is written (or created).
#[test]
fn refused_documents_and_targets_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let drive = dir.path().join("drive.img");
    let before: Vec<u8> = (0..2 * MIB).map(|i| (i % 251) as u8).collect();
    fs::write(&drive, &before).unwrap();

    let bad = dir.path().join("bad.yaml");
    fs::write(&bad, "hostname: store-0421\nnetwork:\n  interfaces:\n    - name: eth0\n      adresses: [10.0.0.5/24]\n").unwrap();
    let o = run(Command::new(P6OS)
        .args(["config", "drive"])
        .arg(&drive)
        .arg(&bad));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.yaml:5:7: network.interfaces[0].adresses: unknown field `adresses`"),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    assert!(
        fs::read(&drive).unwrap() == before,
        "an invalid document changed the target"
    );

    let good = dir.path().join("good.yaml");
    fs::write(&good, "hostname: store-0421\n").unwrap();
    fs::write(dir.path().join("good.yaml.sig"), "not a signature\n").unwrap();
    let o = run(Command::new(P6OS)
        .args(["config", "drive"])
        .arg(&drive)
        .arg(&good));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("good.yaml.sig is not a configuration signature"),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    assert!(
        fs::read(&drive).unwrap() == before,
        "a bad signature changed the target"
    );
    fs::remove_file(dir.path().join("good.yaml.sig")).unwrap();

    let missing = dir.path().join("sdx");
    let o = run(Command::new(P6OS)
        .args(["config", "drive", "--yes"])
        .arg(&missing)
        .arg(&good));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("sdx does not exist"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert!(!missing.exists(), "a missing target was created");

    let o = run(Command::new(P6OS)
        .args(["config", "drive", "--yes"])
        .arg(dir.path())
        .arg(&good));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is neither a block device nor a regular file"),
        "{err}"
    );
    assert!(
        fs::read(&drive).unwrap() == before,
        "a refused target changed"
    );
}
