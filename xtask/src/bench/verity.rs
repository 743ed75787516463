//! `cargo xtask bench verity`: what verified boot costs, each figure next to a baseline measured
//! in the same run, interleaved, medians of `P6OS_BENCH_RUNS` (default 5; boots: 3).
//!
//! * hash tree: `p6os_layout::verity` (the builder's `verity::append_tree`) against
//!   `veritysetup format --no-superblock` on copies of the same 512 MiB file (pseudo-random
//!   bytes), both checked to write the same tree;
//! * signing: `p6os_efi::authenticode` against `sbsign` on the tiny image's unsigned kernel
//!   image, both with the same key;
//! * build: `p6os build` of the tiny recipe as shipped (verity, signed with the development
//!   keys) against the same recipe with `verity: false` and `secure_boot: unsigned`;
//! * boot: the tiny image with and without verity under QEMU (TCG, OVMF), from QEMU's start
//!   (UEFI) to the agent's `ready` line.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};

use super::image::median;

const TREE_BYTES: usize = 512 << 20;

pub fn run() -> Result<()> {
    crate::deps::ensure()?;
    let agent = crate::agent::build()?;
    let p6os = super::release_cli()?;
    let runs = super::runs()?;
    let work = tempfile::Builder::new()
        .prefix("p6os-bench-verity.")
        .tempdir()?;
    let w = work.path();

    let tree = tree(w, runs)?;
    let recipes = Recipes::new(w)?;
    let build = build(w, &p6os, &agent, &recipes, runs)?;
    let sign = sign(w, &build.unsigned_uki, runs)?;
    let boot = boot(&build.verity_image, &build.plain_image)?;

    println!("\nverified boot: costs, each against its baseline in the same run (medians)\n");
    let row = |what: &str, ours: f64, theirs: f64, unit: &str, ratio: &str| {
        println!("{what:<44} {ours:>9.3} {theirs:>9.3} {unit:<3} {ratio}")
    };
    println!("{:<44} {:>9} {:>9}", "", "p6os", "baseline");
    row(
        "hash tree, 512 MiB (vs veritysetup format)",
        tree.0,
        tree.1,
        "s",
        &format!("ratio {:.2} (>1: p6os is faster)", tree.1 / tree.0),
    );
    row(
        &format!("signing a {} MiB kernel image (vs sbsign)", sign.2),
        sign.0,
        sign.1,
        "s",
        &format!("ratio {:.2} (>1: p6os is faster)", sign.1 / sign.0),
    );
    row(
        "tiny build: verity + signed (vs neither)",
        build.with,
        build.without,
        "s",
        &format!("cost {:+.1}%", (build.with / build.without - 1.0) * 100.0),
    );
    row(
        "boot to agent ready: verity (vs none)",
        boot.0,
        boot.1,
        "s",
        &format!("cost {:+.1}%", (boot.0 / boot.1 - 1.0) * 100.0),
    );
    println!(
        "\n(runs: {runs} each, boots: {BOOTS} each; QEMU TCG on {} cores, load {})",
        std::thread::available_parallelism()?,
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    Ok(())
}

/// Pseudo-random bytes (xorshift), so no block hashes like another.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// (ours, veritysetup) median seconds for the tree over `TREE_BYTES`.
fn tree(w: &Path, runs: usize) -> Result<(f64, f64)> {
    let data = w.join("data.img");
    fs::write(&data, noise(TREE_BYTES))?;
    let salt = p6os_layout::verity::salt_for("bench");
    let salt_hex: String = salt.iter().map(|b| format!("{b:02x}")).collect();
    let blocks = (TREE_BYTES / 4096).to_string();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut trees = (Vec::new(), Vec::new());
    for i in 0..=runs {
        let a = w.join("ours.img");
        fs::copy(&data, &a)?;
        let start = Instant::now();
        p6os_builder::verity::append_tree(&a, salt)?;
        let t = start.elapsed().as_secs_f64();
        let b = w.join("theirs.img");
        fs::copy(&data, &b)?;
        let start = Instant::now();
        let out = Command::new("veritysetup")
            .args(["format", "--no-superblock"])
            .arg(format!("--hash-offset={TREE_BYTES}"))
            .arg(format!("--salt={salt_hex}"))
            .arg(format!("--data-blocks={blocks}"))
            .arg(&b)
            .arg(&b)
            .output()
            .context("veritysetup (package cryptsetup-bin)")?;
        let u = start.elapsed().as_secs_f64();
        ensure!(
            out.status.success(),
            "veritysetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("bench: tree run {i}: p6os {t:.3} s, veritysetup {u:.3} s");
        if i == 0 {
            // The warm-up: both trees must be the same bytes.
            trees = (fs::read(&a)?, fs::read(&b)?);
            continue;
        }
        ours.push(t);
        theirs.push(u);
    }
    ensure!(
        trees.0 == trees.1,
        "p6os and veritysetup wrote different trees"
    );
    Ok((median(ours), median(theirs)))
}

/// Copies of the tiny recipe (and its lock) outside the repository: as shipped, and without
/// verity or signatures (a signed image must have verity).
struct Recipes {
    shipped: PathBuf,
    plain: PathBuf,
}

impl Recipes {
    fn new(w: &Path) -> Result<Recipes> {
        let root = crate::root();
        let images = root.join("images").display().to_string();
        let text = fs::read_to_string(root.join(crate::TINY_RECIPE))?.replace("../images", &images);
        let lock = fs::read_to_string(root.join("recipes/tiny.lock"))?
            .replace("\"../images", &format!("\"{images}"));
        let write = |name: &str, text: String| -> Result<PathBuf> {
            let dir = w.join(name);
            fs::create_dir_all(&dir)?;
            fs::write(dir.join("tiny.yaml"), text)?;
            fs::write(dir.join("tiny.lock"), &lock)?;
            Ok(dir.join("tiny.yaml"))
        };
        let with_boot = |extra: &str| text.replace("boot:\n", &format!("boot:\n{extra}"));
        Ok(Recipes {
            shipped: write("shipped", text.clone())?,
            plain: write(
                "plain",
                with_boot("  verity: false\n  secure_boot: unsigned\n"),
            )?,
        })
    }
}

struct Builds {
    with: f64,
    without: f64,
    /// The shipped recipe's image, and the same without verity and signatures: for the boots.
    verity_image: PathBuf,
    plain_image: PathBuf,
    /// The kernel image of the unsigned build: what the signing bench signs.
    unsigned_uki: Vec<u8>,
}

fn p6os_build(p6os: &Path, agent: &Path, recipe: &Path, out: &Path) -> Result<f64> {
    let start = Instant::now();
    let o = Command::new(p6os)
        .arg("build")
        .arg(recipe)
        .arg("--out")
        .arg(out)
        .arg("--agent")
        .arg(agent)
        .args(["--format", "raw", "-q"])
        .output()?;
    ensure!(
        o.status.success(),
        "p6os build {}: {}",
        recipe.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(start.elapsed().as_secs_f64())
}

fn build(w: &Path, p6os: &Path, agent: &Path, r: &Recipes, runs: usize) -> Result<Builds> {
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for i in 0..=runs {
        let a = p6os_build(p6os, agent, &r.shipped, &w.join("out-shipped"))?;
        let b = p6os_build(p6os, agent, &r.plain, &w.join("out-plain"))?;
        eprintln!("bench: build run {i}: verity + signed {a:.3} s, neither {b:.3} s");
        if i > 0 {
            with.push(a);
            without.push(b);
        }
    }
    let image = |dir: &str| w.join(dir).join("tiny-1.0.0.img");
    let unsigned_uki = p6os_qemu_tests::esp::read_file(&image("out-plain"), "/p6os/a/p6os.efi")
        .map_err(|e| anyhow!("reading the unsigned kernel image: {e:#}"))?;
    Ok(Builds {
        with: median(with),
        without: median(without),
        verity_image: image("out-shipped"),
        plain_image: image("out-plain"),
        unsigned_uki,
    })
}

/// (ours, sbsign) median seconds signing `uki`, and its size in MiB.
fn sign(w: &Path, uki: &[u8], runs: usize) -> Result<(f64, f64, usize)> {
    let keys = w.join("keys");
    p6os_builder::secureboot::generate(&keys, "bench")?;
    let signer = p6os_builder::secureboot::load_signer(&keys)?;
    let unsigned = w.join("unsigned.efi");
    let mut padded = uki.to_vec();
    padded.resize(padded.len().div_ceil(8) * 8, 0);
    fs::File::create(&unsigned)?.write_all(&padded)?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..=runs {
        let start = Instant::now();
        let data = fs::read(&unsigned)?;
        let signed = signer.sign(&data)?;
        fs::write(w.join("ours.efi"), &signed)?;
        let t = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let o = Command::new("sbsign")
            .arg("--key")
            .arg(keys.join("db.key"))
            .arg("--cert")
            .arg(keys.join("db.crt"))
            .arg("--output")
            .arg(w.join("theirs.efi"))
            .arg(&unsigned)
            .output()
            .context("sbsign (package sbsigntool)")?;
        let u = start.elapsed().as_secs_f64();
        ensure!(
            o.status.success(),
            "sbsign: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!("bench: signing run {i}: p6os {t:.3} s, sbsign {u:.3} s");
        if i > 0 {
            ours.push(t);
            theirs.push(u);
        }
    }
    Ok((median(ours), median(theirs), uki.len() >> 20))
}

const BOOTS: usize = 3;

/// (with verity, without) median seconds from QEMU's start to the agent's ready line.
fn boot(verity: &Path, plain: &Path) -> Result<(f64, f64)> {
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for i in 1..=BOOTS {
        for (image, samples, what) in [(verity, &mut with, "verity"), (plain, &mut without, "none")]
        {
            let mut vm = p6os_qemu_tests::vm::VmConfig::new(image)?.start("bench-verity")?;
            vm.wait_for_line("p6os-agent: ready slot=a", Duration::from_secs(240))?;
            let secs = vm.elapsed().as_secs_f64();
            let log = vm.console_log();
            ensure!(
                log.contains("p6os-agent: dm-verity") == (what == "verity"),
                "the {what} image did not boot as expected"
            );
            eprintln!("bench: boot {i} ({what}): {secs:.2} s to ready");
            samples.push(secs);
        }
    }
    Ok((median(with), median(without)))
}
