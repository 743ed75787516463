//! Tests of the bmap format, against the real bmaptool where it is installed.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

use super::bmap::{human_size, BlockMap};
use super::tests::{dense_copy, noise, sample, sparse_image, BLOCK, MIB};
use sha2::{Digest, Sha256};

use super::*;

fn bmaptool_present() -> bool {
    Command::new("bmaptool").arg("--version").output().is_ok()
}

fn map_of(path: &Path) -> BlockMap {
    let file = File::open(path).unwrap();
    let size = file.metadata().unwrap().len();
    BlockMap::from_image(&file, size).unwrap()
}

fn ranges(map: &BlockMap) -> Vec<(u64, u64)> {
    map.ranges.iter().map(|r| (r.first, r.last)).collect()
}

/// `bmaptool copy --bmap BMAP IMAGE TARGET` into a new regular file.
fn bmaptool_copy(bmap: &Path, image: &Path, target: &Path) -> Output {
    Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(bmap)
        .arg(image)
        .arg(target)
        .output()
        .unwrap()
}

/// The tiny image of the golden test: 5 blocks and 100 bytes; data in block 0, blocks 2-3 and the
/// partial last block; block 1 written as zeros; block 4 a hole.
fn tiny(path: &Path) -> std::path::PathBuf {
    sparse_image(
        path,
        5 * BLOCK + 100,
        &[
            (0, b"P6OS".to_vec()),
            (2 * BLOCK + 10, vec![0xAB; BLOCK as usize]),
            (5 * BLOCK + 99, vec![1]),
        ],
        &[1],
    )
}

/// The bmap text of a tiny image, every byte of it.
#[test]
fn golden_bmap_of_a_tiny_image() {
    let dir = tempfile::tempdir().unwrap();
    let map = map_of(&tiny(&dir.path().join("tiny.img")));
    assert_eq!(ranges(&map), [(0, 0), (2, 3), (5, 5)]);
    insta::assert_snapshot!(map.to_xml());
}

/// What the writer writes, the flash's reader reads: the file checks itself, and the ranges
/// come back in bytes with their checksums. The golden text too (as saved, with its newline).
#[test]
fn the_flash_reads_what_the_builder_writes() {
    use crate::flash::plan::parse_bmap;
    let dir = tempfile::tempdir().unwrap();
    let map = map_of(&tiny(&dir.path().join("tiny.img")));
    let plan = parse_bmap(&map.to_xml()).unwrap();
    assert_eq!(plan.image_size, map.image_size);
    let got: Vec<(u64, u64, Option<String>)> = plan
        .ranges
        .iter()
        .map(|r| (r.offset, r.len, r.sha256.clone()))
        .collect();
    let want: Vec<(u64, u64, Option<String>)> = map
        .ranges
        .iter()
        .map(|r| {
            let end = ((r.last + 1) * BLOCK).min(map.image_size);
            (
                r.first * BLOCK,
                end - r.first * BLOCK,
                Some(hex::encode(r.sha256)),
            )
        })
        .collect();
    assert_eq!(got, want);

    let snap = include_str!(
        "snapshots/p6os_builder__outputs__bmap_tests__golden_bmap_of_a_tiny_image.snap"
    );
    let golden = format!("{}\n", snap.splitn(3, "---\n").nth(2).unwrap().trim_end());
    assert_eq!(golden, map.to_xml());
    assert_eq!(parse_bmap(&golden), Ok(plan));
    let edited = golden.replacen("20.1 KiB", "20.2 KiB", 1);
    assert_eq!(
        parse_bmap(&edited),
        Err(crate::flash::plan::BmapError::Checksum)
    );
}

/// Mapping is by content: written zero blocks are unmapped, adjacent data blocks written
/// separately form one range, and a fully written copy maps exactly like the sparse original.
/// Range checksums are the sha256 of the range's bytes.
#[test]
fn map_depends_on_content_only() {
    let dir = tempfile::tempdir().unwrap();
    let image = sparse_image(
        &dir.path().join("m.img"),
        2 * MIB,
        &[
            (10 * BLOCK, noise(BLOCK as usize, 1)),
            (11 * BLOCK, noise(BLOCK as usize, 2)),
            (20 * BLOCK + 4095, vec![9, 9]),
        ],
        &[12, 30, 31],
    );
    let map = map_of(&image);
    assert_eq!(ranges(&map), [(10, 11), (20, 21)]);
    assert_eq!(map.mapped_blocks(), 4);
    assert_eq!(map.blocks(), 2 * MIB / BLOCK);
    let bytes = fs::read(&image).unwrap();
    let r = &map.ranges[0];
    let want: [u8; 32] = Sha256::digest(&bytes[10 * BLOCK as usize..12 * BLOCK as usize]).into();
    assert_eq!(r.sha256, want);

    let dense = map_of(&dense_copy(&image, &dir.path().join("dense.img")));
    assert_eq!(dense, map);
    assert_eq!(dense.to_xml(), map.to_xml());

    let empty = map_of(&sparse_image(&dir.path().join("hole.img"), MIB, &[], &[3]));
    assert!(empty.ranges.is_empty());
}

/// `human_size` prints what bmaptool's does.
#[test]
fn human_sizes_like_bmaptool() {
    assert_eq!(human_size(1), "1 byte");
    assert_eq!(human_size(511), "511 bytes");
    assert_eq!(human_size(512), "0.5 KiB");
    assert_eq!(human_size(20580), "20.1 KiB");
    assert_eq!(human_size(6 * MIB), "6.0 MiB");
    assert_eq!(human_size(3 << 30), "3.0 GiB");
}

/// For an image whose allocated blocks are exactly its non-zero blocks (so bmaptool's extent
/// view and our content view agree), `bmaptool create` writes the very same bytes.
#[test]
fn same_bytes_as_bmaptool_create() {
    if !bmaptool_present() {
        eprintln!("skipping: bmaptool not installed (install bmap-tools)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = sparse_image(
        &dir.path().join("c.img"),
        3 * MIB + 3 * BLOCK + 100,
        &[
            (0, noise(2 * BLOCK as usize, 1)),
            (MIB, noise(BLOCK as usize, 2)),
            (3 * MIB + 3 * BLOCK, noise(100, 3)),
        ],
        &[],
    );
    let theirs = dir.path().join("theirs.bmap");
    let out = Command::new("bmaptool")
        .arg("create")
        .arg("-o")
        .arg(&theirs)
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = fs::read_to_string(&theirs).unwrap();
    let ours = map_of(&image).to_xml();
    assert_eq!(ours, theirs);
}

/// The end-to-end check: `bmaptool copy` accepts the .bmap (its own checksum and every range's)
/// and the target file it writes equals the image.
#[test]
fn bmaptool_copy_restores_the_image() {
    if !bmaptool_present() {
        eprintln!("skipping: bmaptool not installed (install bmap-tools)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = sample(&dir.path().join("s.img"));
    write_outputs(
        &image,
        "s",
        &[OutputFormat::Raw, OutputFormat::Bmap],
        &|_| {},
    )
    .unwrap();
    let bmap = dir.path().join("s.bmap");
    let target = dir.path().join("target");
    let out = bmaptool_copy(&bmap, &image, &target);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        fs::read(&target).unwrap() == fs::read(&image).unwrap(),
        "target differs from image"
    );
}

/// The checksums are real: a byte flipped in a mapped range of the image, or in the bmap text
/// itself, makes `bmaptool copy` fail with a checksum mismatch.
#[test]
fn bmaptool_copy_rejects_corruption() {
    if !bmaptool_present() {
        eprintln!("skipping: bmaptool not installed (install bmap-tools)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = sample(&dir.path().join("x.img"));
    write_outputs(
        &image,
        "x",
        &[OutputFormat::Raw, OutputFormat::Bmap],
        &|_| {},
    )
    .unwrap();
    let bmap = dir.path().join("x.bmap");

    let file = fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&image)
        .unwrap();
    let at = 2 * MIB + 3 * BLOCK + 17;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
    drop(file);
    let out = bmaptool_copy(&bmap, &image, &dir.path().join("t1"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "bmaptool copied a corrupted image");
    assert!(
        stderr.contains("checksum mismatch for blocks range"),
        "{stderr}"
    );

    let text = fs::read_to_string(&bmap).unwrap();
    let edited = dir.path().join("edited.bmap");
    fs::write(
        &edited,
        text.replacen("Image size in bytes", "Image size in Bytes", 1),
    )
    .unwrap();
    let out = bmaptool_copy(&edited, &image, &dir.path().join("t2"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "bmaptool accepted an edited bmap");
    assert!(
        stderr.contains("checksum mismatch for bmap file"),
        "{stderr}"
    );
}

/// A GPT disk image: its partition tables and ESP are mapped zeros and all, so that a copy
/// onto a reused disk leaves no old partition entries or FAT clusters behind; the zeros of the
/// other partitions stay unmapped.
#[test]
fn gpt_tables_and_the_esp_are_mapped_in_full() {
    use crate::gpt::{Gpt, TYPE_ESP, TYPE_ROOT_X86_64};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.img");
    let id = |n: u8| uuid::Uuid::from_bytes([n; 16]);
    let gpt = Gpt::layout(
        id(1),
        &[
            ("esp", TYPE_ESP, id(2), 2 * MIB),
            ("root", TYPE_ROOT_X86_64, id(3), 4 * MIB),
        ],
    );
    let mut f = fs::File::create(&path).unwrap();
    f.set_len(gpt.size_bytes()).unwrap();
    crate::gpt::write(&gpt, &mut f).unwrap();
    let root = gpt.by_label("root").unwrap().offset();
    f.write_all_at(b"data", root + MIB).unwrap();
    drop(f);
    let size = fs::metadata(&path).unwrap().len();
    let map = BlockMap::from_image(&fs::File::open(&path).unwrap(), size).unwrap();
    let esp = gpt.by_label("esp").unwrap();
    let blocks = |from: u64, to: u64| (from / BLOCK, to / BLOCK - 1);
    let expected = vec![
        // GPT, the gap before the ESP and the ESP itself: one run.
        blocks(0, esp.offset() + esp.size()),
        blocks(root + MIB, root + MIB + BLOCK),
        blocks(root + 4 * MIB, size),
    ];
    let got: Vec<(u64, u64)> = map.ranges.iter().map(|r| (r.first, r.last)).collect();
    assert_eq!(got, expected);

    if !bmaptool_present() {
        eprintln!("skipping the bmaptool part: bmaptool not installed");
        return;
    }
    // Onto a "used" disk full of 0xff: the tables and the ESP come out as in the image.
    let bmap = dir.path().join("d.bmap");
    fs::write(&bmap, map.to_xml()).unwrap();
    let target = dir.path().join("used.img");
    fs::write(&target, vec![0xffu8; size as usize]).unwrap();
    let out = Command::new("bmaptool")
        .arg("-q")
        .arg("copy")
        .arg("--bmap")
        .arg(&bmap)
        .arg(&path)
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (image, copied) = (fs::read(&path).unwrap(), fs::read(&target).unwrap());
    let end = (esp.offset() + esp.size()) as usize;
    assert!(
        image[..end] == copied[..end],
        "GPT and ESP differ after the copy"
    );
    let backup = (root + 4 * MIB) as usize;
    assert!(image[backup..] == copied[backup..], "backup GPT differs");
}
