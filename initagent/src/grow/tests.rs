//! The table's growth on image files (no loop device, no root), checked by `sgdisk -v`.

use std::process::Command;

use p6os_layout::gpt::{Gpt, Guid, ARRAY_SECTORS};
use p6os_layout::partition::{STATE_LABEL, TYPE_ESP, TYPE_ROOT_X86_64, TYPE_VAR};

use super::*;

const MIB: u64 = 1 << 20;

/// The tiny image's layout, with a small ESP (sizes do not matter to the table).
fn image(path: &std::path::Path) -> Gpt {
    let g = |n: u128| Guid::from_u128(n);
    let gpt = Gpt::layout(
        g(1),
        &[
            ("p6os-esp", TYPE_ESP, g(2), 8 * MIB),
            ("p6os-root-a", TYPE_ROOT_X86_64, g(3), 4 * MIB),
            ("p6os-root-b", TYPE_ROOT_X86_64, g(4), 4 * MIB),
            (STATE_LABEL, TYPE_VAR, g(5), 16 * MIB),
        ],
    );
    let file = File::create(path).unwrap();
    file.set_len(gpt.size_bytes()).unwrap();
    for (at, bytes) in gpt.encode() {
        file.write_all_at(&bytes, at).unwrap();
    }
    gpt
}

/// `sgdisk -v` output, and whether it found no problems.
fn sgdisk_verify(path: &std::path::Path) -> (bool, String) {
    let out = Command::new("sgdisk")
        .arg("-v")
        .arg(path)
        .output()
        .expect("sgdisk (package gdisk) is needed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    (
        out.status.success() && text.contains("No problems found"),
        text,
    )
}

fn sgdisk_end(path: &std::path::Path, number: u32) -> u64 {
    let out = Command::new("sgdisk")
        .arg(format!("-i{number}"))
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Last sector: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("sgdisk -i{number}: {text}"))
}

#[test]
fn an_enlarged_image_file_grows_and_passes_sgdisk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let old = image(&path);
    assert!(sgdisk_verify(&path).0);
    // `truncate -s 1G`: the backup table is left in the middle.
    let size = 1 << 30;
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(size)
        .unwrap();
    let (clean, text) = sgdisk_verify(&path);
    assert!(!clean, "sgdisk -v should see the misplaced backup: {text}");

    let p = path.to_str().unwrap();
    let disk = TableDisk::open_file(p).unwrap();
    let growth = disk.plan(STATE_LABEL).unwrap();
    assert_eq!(growth.before.last_lba, old.partitions[3].last_lba);
    assert_eq!(growth.after.last_lba, size / 512 - 2 - ARRAY_SECTORS);
    disk.write(&growth.writes).unwrap();
    drop(disk);

    let (clean, text) = sgdisk_verify(&path);
    assert!(clean, "sgdisk -v: {text}");
    // The partition ends at the last usable LBA.
    assert_eq!(sgdisk_end(&path, 4), size / 512 - 34);
    assert_eq!(sgdisk_end(&path, 3), old.partitions[2].last_lba);
    // And it is done.
    let disk = TableDisk::open_file(p).unwrap();
    assert_eq!(disk.plan(STATE_LABEL).unwrap().writes, []);
    // The file was never written beyond its size.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
}

#[test]
fn a_table_other_tools_changed_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    image(&path);
    let file = File::options().write(true).open(&path).unwrap();
    file.set_len(256 * MIB).unwrap();
    drop(file);
    // sgdisk sets an attribute bit (2: legacy BIOS bootable) on the state partition.
    let out = Command::new("sgdisk")
        .args(["-A", "4:set:2"])
        .arg(&path)
        .output()
        .expect("sgdisk");
    assert!(out.status.success(), "{out:?}");
    let before = std::fs::read(&path).unwrap();
    let p = path.to_str().unwrap();
    let err = TableDisk::open_file(p)
        .unwrap()
        .plan(STATE_LABEL)
        .unwrap_err();
    assert!(err.to_string().contains("not one P6OS writes"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}
