//! `cargo xtask bench build`: the default recipe's build times and sizes, and the two slot
//! filesystem choices side by side.
//!
//! * cold: `p6os build` with an empty cache (mmdebstrap, package downloads, everything);
//! * warm: the same recipe plus a one-file layer, cache warm; then again after changing that
//!   one file (the base layer is reused, only the slot and the image are made again);
//! * sizes: the raw image (apparent and allocated), `.img.zst`, `.qcow2`, the signed bundle;
//! * slot filesystem: the slot's tree (unpacked from the built squashfs, as root, owners kept)
//!   packed by `mksquashfs -comp zstd` (what the builder uses) and by `mkfs.erofs -zlz4`
//!   (bookworm's erofs-utils 1.5, which the builder cannot use without root: no `--tar`).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};

use super::image::median;

const RECIPE: &str = crate::DEFAULT_RECIPE;

fn p6os(cli: &Path, args: &[&str], agent: &Path, cache: &Path) -> Result<f64> {
    let start = Instant::now();
    let status = Command::new(cli)
        .args(args)
        .arg("--agent")
        .arg(agent)
        .arg("--cache")
        .arg(cache)
        .arg("-q")
        .status()
        .context("running p6os")?;
    ensure!(status.success(), "p6os {args:?} failed");
    Ok(start.elapsed().as_secs_f64())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

pub fn run() -> Result<()> {
    crate::deps::ensure()?;
    let agent = crate::agent::build()?;
    let cli = super::release_cli()?;
    let work = tempfile::Builder::new()
        .prefix("p6os-bench-build-")
        .tempdir_in("target")?;
    let w = work.path();
    let cache = w.join("cache");
    let root = crate::root();
    let images = root.join("images");
    // A copy of the default recipe (and its lock) with one extra file layer.
    let layer = w.join("motd.yaml");
    let write_layer = |text: &str| {
        fs::write(
            &layer,
            format!("name: motd\nsources:\n  - type: inline\n    entries:\n      - {{ path: /etc/motd, kind: file, content: \"{text}\" }}\n"),
        )
    };
    write_layer("one")?;
    let recipe_text = fs::read_to_string(root.join(RECIPE))?
        .replace("../images", &images.display().to_string())
        + &format!("layers: [{}]\n", layer.display());
    let recipe = w.join("default.yaml");
    fs::write(&recipe, recipe_text)?;
    let lock = fs::read_to_string(root.join("recipes/default.lock"))?
        .replace("\"../images", &format!("\"{}", images.display()));
    fs::write(w.join("default.lock"), lock)?;
    let out = w.join("out");
    let (r, o) = (
        recipe.to_str().context("utf-8")?,
        out.to_str().context("utf-8")?,
    );

    eprintln!("bench: cold build (empty cache: mmdebstrap, downloads, everything)");
    let cold = p6os(&cli, &["build", r, "--out", o], &agent, &cache)?;
    eprintln!("bench: warm rebuilds after a one-file change");
    let mut warm = Vec::new();
    for i in 0..super::runs()?.min(3) {
        write_layer(&format!("change {i}"))?;
        warm.push(p6os(
            &cli,
            &["build", r, "--out", o, "--format", "raw"],
            &agent,
            &cache,
        )?);
    }
    // Sizes, from the last full build's manifest and the files.
    let img = out.join("default-1.0.0.img");
    let apparent = fs::metadata(&img)?.len();
    let allocated = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&img)?.blocks() * 512
    };
    let zst = fs::metadata(out.join("default-1.0.0.img.zst"))?.len();
    let qcow2 = fs::metadata(out.join("default-1.0.0.qcow2"))?.len();
    let keys = w.join("keys");
    p6os_builder::bundle::keygen(&keys)?;
    let key = keys.join("p6os.key");
    let bundles = w.join("bundles");
    let bundle_secs = p6os(
        &cli,
        &[
            "bundle",
            r,
            "--key",
            key.to_str().context("utf-8")?,
            "--out",
            bundles.to_str().context("utf-8")?,
        ],
        &agent,
        &cache,
    )?;
    let bundle = fs::read_dir(&bundles)?
        .filter_map(Result::ok)
        .find(|e| e.path().extension().is_some_and(|x| x == "p6b"))
        .context("no bundle written")?;
    let bundle_size = bundle.metadata()?.len();

    // Slot filesystems on the same tree: unpack the built squashfs (as root: owners kept).
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("default-1.0.0.manifest.json"))?)?;
    let slot_a = manifest["partitions"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["label"] == "p6os-root-a"))
        .context("no slot a in the manifest")?;
    let rootfs_size = manifest["slot_a"]["rootfs"]["size"]
        .as_u64()
        .context("rootfs size")?;
    let first = slot_a["first_lba"].as_u64().context("first_lba")?;
    let sqfs = w.join("slot.squashfs");
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = fs::File::open(&img)?;
        f.seek(SeekFrom::Start(first * 512))?;
        let mut data = vec![0; rootfs_size as usize];
        f.read_exact(&mut data)?;
        fs::File::create(&sqfs)?.write_all(&data)?;
    }
    let tree = w.join("tree");
    super::wall_seconds(
        Command::new("unsquashfs")
            .arg("-q")
            .arg("-d")
            .arg(&tree)
            .arg(&sqfs),
    )?;
    let mut squash_t = Vec::new();
    let mut erofs_t = Vec::new();
    let (sq_out, er_out) = (w.join("again.squashfs"), w.join("again.erofs"));
    for _ in 0..3 {
        squash_t.push(super::wall_seconds(
            Command::new("mksquashfs").arg(&tree).arg(&sq_out).args([
                "-noappend",
                "-quiet",
                "-no-progress",
                "-comp",
                "zstd",
                "-Xcompression-level",
                "3",
            ]),
        )?);
        let _ = fs::remove_file(&er_out);
        erofs_t.push(super::wall_seconds(
            Command::new("mkfs.erofs")
                .args(["-zlz4", "-T0", "--quiet"])
                .arg(&er_out)
                .arg(&tree),
        )?);
    }
    let sq_size = fs::metadata(&sq_out)?.len();
    let er_size = fs::metadata(&er_out)?.len();
    let _ = Command::new("rm").arg("-rf").arg(&tree).status();

    println!(
        "bench build ({RECIPE}, this machine, {} warm runs)",
        warm.len()
    );
    println!("  cold build, empty cache         {cold:7.1} s");
    let warm_median = median(warm.clone());
    println!(
        "  warm rebuild, one file changed  {warm_median:7.1} s (median; {:.1}x faster than cold)",
        cold / warm_median
    );
    println!("  bundle build (warm)             {bundle_secs:7.1} s");
    println!(
        "  image {} apparent, {} allocated; .img.zst {}; .qcow2 {}; bundle {}",
        mib(apparent),
        mib(allocated),
        mib(zst),
        mib(qcow2),
        mib(bundle_size)
    );
    let (sq, er) = (median(squash_t), median(erofs_t));
    println!(
        "  slot filesystem: squashfs zstd {} in {sq:.1} s; erofs lz4 {} in {er:.1} s (erofs/squashfs: size {:.2}x, time {:.2}x)",
        mib(sq_size),
        mib(er_size),
        er_size as f64 / sq_size as f64,
        er / sq
    );
    Ok(())
}
