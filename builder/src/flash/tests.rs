//! Flashing into files: what is written, verified and fixed up, and what is refused before a
//! byte is written. Block devices are covered by `tests/flash_safety.rs` and the QEMU test.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::gpt::{Gpt, TYPE_ESP, TYPE_ROOT_X86_64};

const MIB: u64 = 1 << 20;

/// A small GPT disk image (ESP 2 MiB, root 4 MiB) with data in the root partition.
fn gpt_image(dir: &Path) -> (PathBuf, Gpt) {
    let path = dir.join("d.img");
    let id = |n: u8| uuid::Uuid::from_bytes([n; 16]);
    let gpt = Gpt::layout(
        id(1),
        &[
            ("p6os-esp", TYPE_ESP, id(2), 2 * MIB),
            ("p6os-root-a", TYPE_ROOT_X86_64, id(3), 4 * MIB),
        ],
    );
    let mut f = fs::File::create(&path).unwrap();
    f.set_len(gpt.size_bytes()).unwrap();
    crate::gpt::write(&gpt, &mut f).unwrap();
    let root = gpt.by_label("p6os-root-a").unwrap().offset();
    f.write_all_at(&vec![0xa5; 3 * 4096 + 100], root + MIB)
        .unwrap();
    (path, gpt)
}

/// The identity of a target as confirmed now.
fn id(target: &Path) -> identity::Identity {
    identity::Identity::of_path(target).unwrap()
}

fn used_disk(path: &Path, size: u64) {
    fs::write(path, vec![0xffu8; size as usize]).unwrap();
}

#[test]
fn a_raw_image_lands_on_a_larger_used_disk_with_its_backup_gpt_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let (image, gpt) = gpt_image(dir.path());
    let target = dir.path().join("disk");
    let size = gpt.size_bytes() + 8 * MIB;
    used_disk(&target, size);
    let report = write_image(
        &image,
        &target,
        &id(&target),
        None,
        None,
        &Progress::silent(),
    )
    .unwrap();
    assert!(report.gpt_moved);
    assert!(report.written < gpt.size_bytes(), "only mapped ranges");
    let (img, out) = (fs::read(&image).unwrap(), fs::read(&target).unwrap());
    assert_eq!(out.len() as u64, size);
    // Tables, ESP and data as in the image; the partitions' unmapped zeros are not written.
    let esp = gpt.by_label("p6os-esp").unwrap();
    let end = (esp.offset() + esp.size()) as usize;
    assert!(img[1024..end] == out[1024..end]);
    let root = gpt.by_label("p6os-root-a").unwrap().offset() as usize;
    assert!(
        img[root + MIB as usize..root + MIB as usize + 4096 * 4]
            == out[root + MIB as usize..root + MIB as usize + 4096 * 4]
    );
    assert_eq!(
        out[root], 0xff,
        "free space of a partition is left as it was"
    );
    // The target's table is valid for its own size, backup at its last sector.
    let mut f = fs::File::open(&target).unwrap();
    let read = crate::gpt::read(&mut f).unwrap();
    assert_eq!(read.sectors, size / 512);
    assert_eq!(read.partitions, gpt.partitions);
    let header = &out[512..1024];
    let backup_lba = u64::from_le_bytes(header[32..40].try_into().unwrap());
    assert_eq!(backup_lba, size / 512 - 1);
    assert_eq!(
        &out[(size - 512) as usize..(size - 504) as usize],
        b"EFI PART"
    );
    if Command::new("sgdisk").arg("--version").output().is_ok() {
        let v = Command::new("sgdisk")
            .arg("-v")
            .arg(&target)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&v.stdout);
        assert!(text.contains("No problems found"), "{text}");
    }
}

#[test]
fn a_zst_image_with_its_bmap_flashes_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (image, gpt) = gpt_image(dir.path());
    crate::outputs::write_outputs(
        &image,
        "d",
        &[
            crate::outputs::OutputFormat::Raw,
            crate::outputs::OutputFormat::Zst,
            crate::outputs::OutputFormat::Bmap,
        ],
        &|_| {},
    )
    .unwrap();
    let zst = dir.path().join("d.img.zst");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    used_disk(&a, gpt.size_bytes());
    used_disk(&b, gpt.size_bytes());
    let from_raw = write_image(&image, &a, &id(&a), None, None, &Progress::silent()).unwrap();
    let from_zst = write_image(&zst, &b, &id(&b), None, None, &Progress::silent()).unwrap();
    assert_eq!(from_zst.bmap, Some(dir.path().join("d.bmap")));
    assert_eq!(from_raw.written, from_zst.written);
    assert!(fs::read(&a).unwrap() == fs::read(&b).unwrap());
    assert!(!from_raw.gpt_moved, "same size: nothing to move");
}

#[test]
fn an_image_that_does_not_match_its_bmap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (image, gpt) = gpt_image(dir.path());
    crate::outputs::write_outputs(
        &image,
        "d",
        &[
            crate::outputs::OutputFormat::Raw,
            crate::outputs::OutputFormat::Bmap,
        ],
        &|_| {},
    )
    .unwrap();
    let root = gpt.by_label("p6os-root-a").unwrap().offset();
    fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap()
        .write_all_at(b"\x00", root + MIB + 7)
        .unwrap();
    let target = dir.path().join("t");
    used_disk(&target, gpt.size_bytes());
    let err = write_image(
        &image,
        &target,
        &id(&target),
        None,
        None,
        &Progress::silent(),
    )
    .unwrap_err();
    assert!(matches!(err, FlashError::ImageDamaged { .. }), "{err}");
}

#[test]
fn a_bad_config_or_bmap_stops_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (image, gpt) = gpt_image(dir.path());
    let target = dir.path().join("t");
    used_disk(&target, gpt.size_bytes());
    let config = dir.path().join("u.yaml");
    fs::write(&config, "hostname: -bad-\nusres: []\n").unwrap();
    let err = write_image(
        &image,
        &target,
        &id(&target),
        None,
        Some(&config),
        &Progress::silent(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("hostname") && text.contains("usres"),
        "{text}"
    );
    fs::write(dir.path().join("d.bmap"), "<bmap version=\"2.0\"> junk").unwrap();
    let err = write_image(
        &image,
        &target,
        &id(&target),
        None,
        None,
        &Progress::silent(),
    )
    .unwrap_err();
    assert!(matches!(err, FlashError::Bmap { .. }), "{err}");
    assert!(
        fs::read(&target).unwrap().iter().all(|b| *b == 0xff),
        "target untouched"
    );
}

#[test]
fn a_target_file_replaced_after_the_confirmation_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let (image, gpt) = gpt_image(dir.path());
    let target = dir.path().join("t");
    used_disk(&target, gpt.size_bytes());
    let confirmed = id(&target);
    // Another file put at the target's path after the confirmation.
    let other = dir.path().join("other");
    used_disk(&other, gpt.size_bytes());
    fs::rename(&other, &target).unwrap();
    let err =
        write_image(&image, &target, &confirmed, None, None, &Progress::silent()).unwrap_err();
    assert!(matches!(err, FlashError::TargetChanged { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&target.display().to_string()) && text.contains("nothing was written"),
        "{text}"
    );
    assert!(
        fs::read(&target).unwrap().iter().all(|&b| b == 0xff),
        "untouched"
    );
}
