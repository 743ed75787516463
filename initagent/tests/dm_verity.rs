//! The agent's device-mapper code against the real kernel (root only; a test that cannot set up
//! its loop device or load dm_verity says why on stderr and passes): a slot image with the
//! builder's tree reads back through the verity device; a changed byte or a wrong root hash is
//! a read error. Every device is removed in `Drop`.

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;

use p6os_agent::dm;
use p6os_layout::verity::{salt_for, Params, TreeBuilder};

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        false => Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// A loop device over `data` followed by its tree; detached in `Drop`.
struct Slot {
    dev: String,
    file: PathBuf,
    params: Params,
    data: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Slot {
    fn new(test: &str) -> Option<Slot> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped {test}: needs root");
            return None;
        }
        if let Err(e) = run("modprobe", &["dm_verity"]) {
            eprintln!("skipped {test}: {e}");
            return None;
        }
        let data: Vec<u8> = (0..300 * 4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut tree = TreeBuilder::new(salt_for(test));
        tree.update(&data);
        let tree = tree.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("slot.img");
        let mut bytes = data.clone();
        bytes.extend_from_slice(&tree.bytes);
        std::fs::write(&file, bytes).unwrap();
        match run("losetup", &["--find", "--show", file.to_str().unwrap()]) {
            Ok(dev) => Some(Slot {
                dev,
                file,
                params: tree.params,
                data,
                _dir: dir,
            }),
            Err(e) => {
                eprintln!("skipped {test}: {e}");
                None
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = run("losetup", &["--detach", &self.dev]);
    }
}

/// A verity device, removed in `Drop`.
struct Verity(String);

impl Verity {
    fn open(name: &str, slot: &Slot, params: &Params) -> (Verity, String) {
        let number = dm::device_number(&slot.dev).unwrap();
        let (sectors, table) = params.table(&number);
        let node = dm::create_read_only(name, sectors, "verity", &table).unwrap();
        (Verity(name.to_string()), node)
    }
}

impl Drop for Verity {
    fn drop(&mut self) {
        if let Err(e) = dm::remove(&self.0) {
            eprintln!("cleanup: {e}");
        }
    }
}

fn read_all(node: &str) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    std::fs::File::open(node)?.read_to_end(&mut out)?;
    Ok(out)
}

fn name(test: &str) -> String {
    format!("p6os-test-{test}-{}", std::process::id())
}

#[test]
fn the_verity_device_reads_the_data_and_is_read_only() {
    let Some(slot) = Slot::new("reads") else {
        return;
    };
    let (_verity, node) = Verity::open(&name("reads"), &slot, &slot.params);
    assert!(read_all(&node).unwrap() == slot.data);
    let write = std::fs::OpenOptions::new().write(true).open(&node);
    assert!(write.is_err(), "the verity device opened for writing");
    // The table is the one the kernel reports back.
    let table = run("dmsetup", &["table", &name("reads")]);
    if let Ok(table) = table {
        assert!(table.contains(" verity 1 "), "{table}");
    }
}

#[test]
fn a_changed_byte_is_a_read_error() {
    let Some(slot) = Slot::new("changed") else {
        return;
    };
    let at = 4096 * 200 + 5;
    let mut bytes = std::fs::read(&slot.file).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(&slot.file, bytes).unwrap();
    let (_verity, node) = Verity::open(&name("changed"), &slot, &slot.params);
    let err = read_all(&node).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // Blocks before the changed one still read.
    let mut head = vec![0u8; 4096 * 100];
    std::fs::File::open(&node)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    assert!(head == slot.data[..head.len()]);
}

#[test]
fn a_wrong_root_hash_reads_nothing() {
    let Some(slot) = Slot::new("wrong-root") else {
        return;
    };
    let mut params = slot.params;
    params.root_hash[0] ^= 0x80;
    let (_verity, node) = Verity::open(&name("wrong-root"), &slot, &params);
    let mut block = vec![0u8; 4096];
    let err = std::fs::File::open(&node)
        .unwrap()
        .read_exact(&mut block)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
}

#[test]
fn a_bad_name_or_table_changes_nothing() {
    assert!(matches!(
        dm::create_read_only("a/b", 8, "verity", "1"),
        Err(dm::DmError::BadName(_))
    ));
    let Some(slot) = Slot::new("bad-table") else {
        return;
    };
    let n = name("bad-table");
    let err = dm::create_read_only(&n, 8, "verity", "1 nonsense").unwrap_err();
    assert!(
        matches!(
            err,
            dm::DmError::Ioctl {
                command: dm::Command::TableLoad,
                ..
            }
        ),
        "{err}"
    );
    // The half-made device was removed: removing it again finds nothing.
    assert!(dm::remove(&n).is_err());
    drop(slot);
}
