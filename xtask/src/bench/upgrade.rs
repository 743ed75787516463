//! `cargo xtask bench upgrade`: applying the tiny image's bundle to a slot, next to the
//! standard tools doing the core of the same job on the same payload and target.
//!
//! * p6os: `p6os-agent install-into` (what `p6os-agent upgrade` runs, into a file and a
//!   directory instead of a partition and the ESP): read the header, verify the ed25519
//!   signature, the first pass over every payload's bytes against the manifest, then decompress
//!   the kernel and initramfs (to the ESP directory, fsync'd) and the root filesystem into the
//!   target while hashing it, `fsync`.
//! * pipeline: for each payload (extracted from the bundle beforehand, untimed):
//!   `zstd -dc payload.zst | dd of=target bs=4M conv=notrunc,fsync`, then
//!   `head -c SIZE target | sha256sum` — the root filesystem into the slot file, the kernel and
//!   initramfs into files in the ESP directory; no signature, no first pass.
//!
//! Both write the same 96 MiB target file (the tiny recipe's slot size) on the same file
//! system, interleaved after one warm-up each. The target's bytes are checked after p6os's runs.

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use p6os_builder::{bundle, fetch::Cache, image, recipe};
use p6os_bundle::format::{self, PayloadKind};

use super::image::{measured, median, timed, Sample};

const SLOT_BYTES: u64 = 96 << 20;

pub fn run() -> Result<()> {
    crate::deps::ensure()?;
    let agent = crate::agent::build()?;
    let runs = super::runs()?;
    let work = tempfile::Builder::new()
        .prefix("p6os-bench-upgrade-")
        .tempdir_in("target")
        .context("making a work directory under target/")?;
    let w = work.path();
    let keys = w.join("keys");
    bundle::keygen(&keys)?;
    let key = bundle::read_secret_key(&keys.join(bundle::SECRET_FILE))?;
    let recipe = recipe::load(Path::new(crate::TINY_RECIPE)).map_err(|d| anyhow::anyhow!("{d}"))?;
    eprintln!("bench: building the bundle of {}", crate::TINY_RECIPE);
    let opts =
        image::BuildOptions::new(w.join("bundles"), agent.clone(), Cache::default_location());
    let (bundle_path, manifest) = bundle::build(&recipe, &opts, &key)?;
    let rootfs = manifest
        .payload(PayloadKind::Rootfs)
        .context("no rootfs payload")?
        .clone();

    // Each payload's bytes, as in the bundle, for the pipeline.
    let mut r = File::open(&bundle_path)?;
    let header = format::read_header(&mut r)?;
    let mut zst_paths = Vec::new();
    for p in &manifest.payloads {
        let mut zst = Vec::new();
        (&mut r).take(p.compressed_size).read_to_end(&mut zst)?;
        let path = w.join(format!("{}.zst", p.kind.as_str()));
        fs::write(&path, &zst)?;
        zst_paths.push((p.clone(), path));
    }
    let _ = header;
    let target = w.join("slot.img");
    let esp = w.join("esp");
    fs::create_dir_all(&esp)?;
    File::create(&target)?.set_len(SLOT_BYTES)?;
    let public = keys.join(bundle::PUBLIC_FILE);
    let ours = |w: &Path| -> Result<Sample> {
        let mut c = measured(agent.as_os_str(), w);
        c.arg("install-into")
            .arg(format!("--bundle={}", bundle_path.display()))
            .arg(format!("--slot-file={}", target.display()))
            .arg(format!("--esp-dir={}", esp.display()))
            .arg(format!("--key={}", public.display()))
            .arg("--device-name=tiny")
            .arg("--device-version=0");
        timed(c, w)
    };
    let pipeline_esp = w.join("pipeline-esp");
    fs::create_dir_all(&pipeline_esp)?;
    let mut script = String::from("set -eo pipefail\n");
    for (p, zst) in &zst_paths {
        let out = match p.kind {
            PayloadKind::Rootfs => target.clone(),
            PayloadKind::Kernel => pipeline_esp.join("vmlinuz"),
            PayloadKind::Initrd => pipeline_esp.join("initrd.img"),
            PayloadKind::Uki => pipeline_esp.join("p6os.efi"),
        };
        script.push_str(&format!(
            "zstd -q -dc '{}' | dd of='{}' bs=4M conv=notrunc,fsync status=none\n\
             head -c {} '{}' | sha256sum >/dev/null\n",
            zst.display(),
            out.display(),
            p.size,
            out.display()
        ));
    }
    let theirs = |w: &Path| -> Result<Sample> {
        let mut c = measured("bash".as_ref(), w);
        c.args(["-c", &script]);
        timed(c, w)
    };
    eprintln!(
        "bench: {runs} runs each after a warm-up; payloads {} MiB ({} MiB in the bundle)",
        manifest.payloads.iter().map(|p| p.size).sum::<u64>() >> 20,
        manifest.compressed_total() >> 20
    );
    ours(w)?;
    check_target(&target, &rootfs)?;
    theirs(w)?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        a.push(ours(w)?);
        b.push(theirs(w)?);
    }
    check_target(&target, &rootfs)?;
    report(&a, &b, runs);
    Ok(())
}

/// The target holds the payload (the pipeline writes the same bytes).
fn check_target(target: &Path, p: &format::Payload) -> Result<()> {
    use sha2::{Digest, Sha256};
    let mut data = Vec::new();
    File::open(target)?.take(p.size).read_to_end(&mut data)?;
    let digest = format::sha256_hex(&Sha256::digest(&data));
    ensure!(
        digest == p.sha256,
        "the target does not hold the root filesystem"
    );
    Ok(())
}

fn report(ours: &[Sample], theirs: &[Sample], runs: usize) {
    println!("\napplying the tiny bundle to a 96 MiB slot file: {runs} runs each, interleaved\n");
    println!("{:<8} {:>12} {:>14}", "run", "p6os (s)", "pipeline (s)");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        println!("{:<8} {:>12.3} {:>14.3}", i + 1, a.0, b.0);
    }
    let m = |s: &[Sample], f: fn(&Sample) -> Option<f64>| median(s.iter().filter_map(f).collect());
    let (a, b) = (m(ours, |s| Some(s.0)), m(theirs, |s| Some(s.0)));
    println!("{:<8} {a:>12.3} {b:>14.3}", "median");
    if ours[0].1.is_some() {
        let (ca, cb) = (m(ours, |s| Some(s.1?.0)), m(theirs, |s| Some(s.1?.0)));
        let (ra, rb) = (m(ours, |s| Some(s.1?.1)), m(theirs, |s| Some(s.1?.1)));
        println!("{:<8} {ca:>12.3} {cb:>14.3}", "CPU s");
        println!("{:<8} {ra:>12.1} {rb:>14.1}", "RSS MiB");
    }
    println!(
        "\nratio (pipeline/p6os): {:.2}  (>=1: p6os is no slower)",
        b / a
    );
    println!(
        "note: p6os also verifies the signature and reads every payload once more before writing\n\
         (the first pass)."
    );
}
