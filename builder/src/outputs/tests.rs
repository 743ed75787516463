//! Tests of [`write_outputs`] and the zst and qcow2 formats (bmap: `bmap_tests.rs`).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::make::{mib, zstd_encode};
use super::*;

pub(super) const MIB: u64 = 1 << 20;
pub(super) const BLOCK: u64 = super::sparse::BLOCK;

/// Bytes that are not zero anywhere and differ from offset to offset.
pub(super) fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as u8) | 1
        })
        .collect()
}

/// A sparse file of `size` bytes at `path` with `writes` written, and the blocks in `zero_blocks`
/// written as zeros (allocated on disk, but no data by content).
pub(super) fn sparse_image(
    path: &Path,
    size: u64,
    writes: &[(u64, Vec<u8>)],
    zero_blocks: &[u64],
) -> PathBuf {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    for &b in zero_blocks {
        f.write_all_at(&[0u8; BLOCK as usize], b * BLOCK).unwrap();
    }
    for (offset, bytes) in writes {
        f.write_all_at(bytes, *offset).unwrap();
    }
    f.sync_all().unwrap();
    path.to_path_buf()
}

/// The test image: a few MiB with data at the start, a write across a block boundary, a few
/// adjacent blocks, an all-zero written block, holes, and data in the last block.
pub(super) fn sample(path: &Path) -> PathBuf {
    let size = 6 * MIB;
    sparse_image(
        path,
        size,
        &[
            (0, noise(3 * BLOCK as usize + 100, 1)),
            (MIB + BLOCK - 6, noise(12, 2)),
            (2 * MIB, noise(5 * BLOCK as usize, 3)),
            (size - 512, noise(512, 4)),
        ],
        &[2 * MIB / BLOCK + 5, 4 * MIB / BLOCK],
    )
}

/// A copy of `src` at `dst` with every byte written: the same content, no holes.
pub(super) fn dense_copy(src: &Path, dst: &Path) -> PathBuf {
    let bytes = fs::read(src).unwrap();
    fs::write(dst, bytes).unwrap();
    dst.to_path_buf()
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

/// Runs [`write_outputs`], collecting the progress lines.
fn run(image: &Path, base: &str, formats: &[OutputFormat]) -> (Vec<OutputRecord>, Vec<String>) {
    let lines = Mutex::new(Vec::new());
    let records = write_outputs(image, base, formats, &|l: &str| {
        lines.lock().unwrap().push(l.to_string())
    })
    .unwrap();
    (records, lines.into_inner().unwrap())
}

fn qemu_img_present() -> bool {
    Command::new("qemu-img").arg("--version").output().is_ok()
}

/// The command-line, serde and file names of the formats are the documented ones.
#[test]
fn format_names_and_extensions() {
    use clap::ValueEnum;
    let cli: Vec<String> = OutputFormat::value_variants()
        .iter()
        .map(|f| f.to_possible_value().unwrap().get_name().to_string())
        .collect();
    assert_eq!(cli, ["raw", "zst", "qcow2", "bmap"]);
    assert_eq!(OutputFormat::value_variants(), OutputFormat::ALL);
    let json = serde_json::to_string(&OutputFormat::ALL).unwrap();
    assert_eq!(json, r#"["raw","zst","qcow2","bmap"]"#);
    let back: Vec<OutputFormat> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, OutputFormat::ALL);
    let ext: Vec<&str> = OutputFormat::ALL.iter().map(|f| f.extension()).collect();
    assert_eq!(ext, ["img", "img.zst", "qcow2", "bmap"]);
    for f in OutputFormat::ALL {
        assert_eq!(OutputFormat::from_str(f.name(), false), Ok(f));
    }
}

/// All formats: the files exist under their names and nothing else is left in the directory,
/// the records tell their true sizes and checksums, SHA256SUMS is `sha256sum` output sorted by
/// name (and `sha256sum -c` accepts it), and there is one progress line per format.
#[test]
fn all_formats_records_and_sums() {
    if !qemu_img_present() {
        eprintln!("skipping: qemu-img not installed (install qemu-utils)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = sample(&dir.path().join("edge-1.0.img"));
    let (records, lines) = run(&image, "edge-1.0", &OutputFormat::ALL);

    let files: Vec<&str> = records.iter().map(|r| r.file.as_str()).collect();
    assert_eq!(
        files,
        [
            "edge-1.0.img",
            "edge-1.0.img.zst",
            "edge-1.0.qcow2",
            "edge-1.0.bmap"
        ]
    );
    let mut expect: BTreeSet<String> = files.iter().map(|f| f.to_string()).collect();
    expect.insert(SHA256SUMS.to_string());
    assert_eq!(names(dir.path()), expect);
    for (r, f) in records.iter().zip(OutputFormat::ALL) {
        let path = dir.path().join(&r.file);
        assert_eq!(r.format, f);
        assert_eq!(r.size, fs::metadata(&path).unwrap().len(), "{}", r.file);
        assert_eq!(r.sha256, sha256_hex(&path), "{}", r.file);
    }

    let sums = fs::read_to_string(dir.path().join(SHA256SUMS)).unwrap();
    let mut sorted = records.clone();
    sorted.sort_by(|a, b| a.file.cmp(&b.file));
    let want: String = sorted
        .iter()
        .map(|r| format!("{}  {}\n", r.sha256, r.file))
        .collect();
    assert_eq!(sums, want);
    if let Ok(out) = Command::new("sha256sum")
        .args(["--check", "--strict", SHA256SUMS])
        .current_dir(dir.path())
        .output()
    {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    assert_eq!(lines.len(), 4, "{lines:?}");
    for (line, f) in lines.iter().zip(OutputFormat::ALL) {
        assert!(line.starts_with(&format!("{}: ", f.name())), "{line}");
        assert!(line.ends_with(" s"), "{line}");
    }
    assert!(lines[1].contains("6.0 MiB -> "), "{}", lines[1]);
}

/// The .img.zst decompresses to the image, and its frame header tells the image's size.
#[test]
fn zst_decompresses_to_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let image = sample(&dir.path().join("z.img"));
    let (records, _) = run(&image, "z", &[OutputFormat::Raw, OutputFormat::Zst]);
    let zst = fs::read(dir.path().join("z.img.zst")).unwrap();
    assert!(records[1].size < MIB, "zeros were not compressed");
    let content_size = zstd::zstd_safe::get_frame_content_size(&zst).ok().flatten();
    assert_eq!(content_size, Some(6 * MIB));
    let raw = zstd::decode_all(zst.as_slice()).unwrap();
    assert!(
        raw == fs::read(&image).unwrap(),
        "decompressed bytes differ"
    );
}

/// zstd's output is the same with 1, 2 or 3 workers, on input longer than one zstd job (so the
/// workers really split it).
#[test]
fn zst_does_not_depend_on_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let size = 40 * MIB;
    let writes: Vec<(u64, Vec<u8>)> = (0..20)
        .map(|i| (i * 2 * MIB + 777, noise(300_000, i as u32)))
        .collect();
    let image = sparse_image(&dir.path().join("w.img"), size, &writes, &[]);
    let file = File::open(&image).unwrap();
    let outs: Vec<Vec<u8>> = [1, 2, 3]
        .iter()
        .map(|&n| zstd_encode(&file, size, n, Vec::new()).unwrap())
        .collect();
    assert!(outs[0] == outs[1] && outs[1] == outs[2], "outputs differ");
    assert_eq!(
        zstd::decode_all(outs[0].as_slice()).unwrap(),
        fs::read(&image).unwrap()
    );
}

/// The .qcow2 holds the image (`qemu-img compare` finds them equal).
#[test]
fn qcow2_holds_the_image() {
    if !qemu_img_present() {
        eprintln!("skipping: qemu-img not installed (install qemu-utils)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = sample(&dir.path().join("q.img"));
    run(&image, "q", &[OutputFormat::Raw, OutputFormat::Qcow2]);
    let out = Command::new("qemu-img")
        .args(["compare", "-q", "-f", "raw", "-F", "qcow2"])
        .arg(&image)
        .arg(dir.path().join("q.qcow2"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The same content gives byte-identical .img.zst, .qcow2, .bmap and SHA256SUMS, whether the
/// image is sparse or fully written, and on a second run.
#[test]
fn outputs_depend_on_content_only() {
    if !qemu_img_present() {
        eprintln!("skipping: qemu-img not installed (install qemu-utils)");
        return;
    }
    let sparse_dir = tempfile::tempdir().unwrap();
    let dense_dir = tempfile::tempdir().unwrap();
    let again_dir = tempfile::tempdir().unwrap();
    let sparse = sample(&sparse_dir.path().join("d.img"));
    let dense = dense_copy(&sparse, &dense_dir.path().join("d.img"));
    let again = sample(&again_dir.path().join("d.img"));
    let sparse_blocks = fs::metadata(&sparse).map(|m| std::os::unix::fs::MetadataExt::blocks(&m));
    let dense_blocks = fs::metadata(&dense).map(|m| std::os::unix::fs::MetadataExt::blocks(&m));
    assert!(
        sparse_blocks.unwrap() < dense_blocks.unwrap(),
        "the test image is not sparse"
    );

    let all = [OutputFormat::Zst, OutputFormat::Qcow2, OutputFormat::Bmap];
    let a = run(&sparse, "d", &all).0;
    let b = run(&dense, "d", &all).0;
    let c = run(&again, "d", &all).0;
    assert_eq!(a, b);
    assert_eq!(a, c);
    for name in ["d.img.zst", "d.qcow2", "d.bmap", SHA256SUMS] {
        let x = fs::read(sparse_dir.path().join(name)).unwrap();
        assert!(
            x == fs::read(dense_dir.path().join(name)).unwrap(),
            "{name} differs"
        );
        assert!(
            x == fs::read(again_dir.path().join(name)).unwrap(),
            "{name} differs"
        );
    }
}

/// Without Raw the raw image is removed once the others are made, and SHA256SUMS lists only
/// what was written.
#[test]
fn raw_not_selected_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let image = sample(&dir.path().join("r.img"));
    let (records, lines) = run(&image, "r", &[OutputFormat::Bmap, OutputFormat::Bmap]);
    assert_eq!(records.len(), 1);
    assert_eq!(lines.len(), 1);
    assert!(!image.exists());
    assert_eq!(
        names(dir.path()),
        BTreeSet::from(["r.bmap".into(), SHA256SUMS.into()])
    );
    let sums = fs::read_to_string(dir.path().join(SHA256SUMS)).unwrap();
    assert_eq!(sums, format!("{}  r.bmap\n", records[0].sha256));
}

/// A failing qemu-img (after .img.zst was already made), a missing one, or a rename into place
/// that fails after .img.zst was renamed leave the directory as it was: no temporary files, no
/// outputs, no SHA256SUMS, the raw image kept. The messages name the file and, for a missing
/// qemu-img, the package.
#[test]
fn failure_leaves_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let image = sample(&dir.path().join("f.img"));
    let before = names(dir.path());
    let formats = [OutputFormat::Zst, OutputFormat::Qcow2, OutputFormat::Bmap];
    let qcow2 = dir.path().join("f.qcow2");

    let err = write_outputs_with(&image, "f", &formats, &|_| {}, OsStr::new("false")).unwrap_err();
    assert!(
        matches!(err, OutputError::QemuImgFailed { ref path, .. } if *path == qcow2),
        "{err}"
    );
    assert_eq!(names(dir.path()), before);

    let missing = OsStr::new("/nonexistent/qemu-img");
    let err = write_outputs_with(&image, "f", &formats, &|_| {}, missing).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("f.qcow2") && msg.contains("install qemu-utils"),
        "{msg}"
    );
    assert_eq!(names(dir.path()), before);

    if !qemu_img_present() {
        eprintln!("skipping the rename failure: qemu-img not installed (install qemu-utils)");
        return;
    }
    fs::create_dir(&qcow2).unwrap();
    let before = names(dir.path());
    let err = write_outputs(&image, "f", &formats, &|_| {}).unwrap_err();
    assert!(
        matches!(err, OutputError::Write { ref path, .. } if *path == qcow2),
        "{err}"
    );
    assert!(err.to_string().starts_with("cannot write "), "{err}");
    assert_eq!(names(dir.path()), before);
    assert!(image.exists());
}

/// Bad arguments are refused before anything is written.
#[test]
fn bad_arguments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = sample(&dir.path().join("a.img"));
    let none = write_outputs(&image, "a", &[], &|_| {}).unwrap_err();
    assert!(
        none.to_string().contains("choose at least one of raw, zst"),
        "{none}"
    );
    let name = write_outputs(&image, "b", &[OutputFormat::Bmap], &|_| {}).unwrap_err();
    assert!(name.to_string().contains("must be named b.img"), "{name}");
    let gone = dir.path().join("gone.img");
    let read = write_outputs(&gone, "gone", &[OutputFormat::Bmap], &|_| {}).unwrap_err();
    assert!(
        read.to_string().starts_with("cannot read raw image "),
        "{read}"
    );
    assert!(read.to_string().contains("gone.img"), "{read}");
    let empty = sparse_image(&dir.path().join("e.img"), 0, &[], &[]);
    let err = write_outputs(&empty, "e", &[OutputFormat::Bmap], &|_| {}).unwrap_err();
    assert!(matches!(err, OutputError::EmptyImage { .. }), "{err}");
    assert_eq!(
        names(dir.path()),
        BTreeSet::from(["a.img".into(), "e.img".into()])
    );
}

/// Progress sizes read well at every scale.
#[test]
fn progress_sizes() {
    assert_eq!(mib(0), "0 MiB");
    assert_eq!(mib(MIB / 10), "0.1 MiB");
    assert_eq!(mib(9 * MIB + MIB / 2), "9.5 MiB");
    assert_eq!(mib(312 * MIB + 1), "312 MiB");
}
