//! `cargo xtask bench flash`: a 2 GiB GPT image with about 300 MB of data written to a file
//! target and (as root) to a loop device, by `p6os flash` (mapped ranges, then every range
//! read back and checked), `bmaptool copy` (mapped ranges, checksums of what it reads) and
//! `dd bs=4M conv=fsync` (everything, no check). Interleaved, one warm-up each, medians of
//! `P6OS_BENCH_RUNS` (default 5) runs, ratios printed.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use p6os_builder::gpt::{Gpt, TYPE_ESP, TYPE_ROOT_X86_64, TYPE_VAR};
use p6os_builder::outputs::{write_outputs, OutputFormat};

use super::image::median;

const MIB: u64 = 1 << 20;

/// The benchmark image: ESP 128 MiB, two 768 MiB slots, state to 2 GiB; 300 MiB of
/// pseudo-random data in slot A in 4 MiB pieces with gaps (a filesystem-like layout).
fn make_image(path: &Path) -> Result<()> {
    let id = |n: u8| uuid::Uuid::from_bytes([n; 16]);
    let gpt = Gpt::layout(
        id(1),
        &[
            ("p6os-esp", TYPE_ESP, id(2), 128 * MIB),
            ("p6os-root-a", TYPE_ROOT_X86_64, id(3), 768 * MIB),
            ("p6os-root-b", TYPE_ROOT_X86_64, id(4), 768 * MIB),
            ("p6os-state", TYPE_VAR, id(5), 380 * MIB),
        ],
    );
    let mut f = fs::File::create(path)?;
    f.set_len(gpt.size_bytes())?;
    p6os_builder::gpt::write(&gpt, &mut f)?;
    let slot = gpt.by_label("p6os-root-a").context("slot a")?.offset();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut piece = vec![0u8; (4 * MIB) as usize];
    for i in 0..75u64 {
        for chunk in piece.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        // 4 MiB of data every 10 MiB (the gaps stay holes).
        f.write_all_at(&piece, slot + i * 10 * MIB % (760 * MIB))?;
    }
    f.sync_all()?;
    Ok(())
}

fn sides(p6os: &Path, image: &Path, bmap: &Path, target: &Path) -> Vec<(&'static str, Command)> {
    let mut flash = Command::new(p6os);
    flash
        .arg("flash")
        .arg(image)
        .arg(target)
        .args(["--yes", "--force", "-q"]);
    let mut bmaptool = Command::new("bmaptool");
    bmaptool
        .args(["-q", "copy", "--bmap"])
        .arg(bmap)
        .arg(image)
        .arg(target);
    let mut dd = Command::new("dd");
    dd.arg(format!("if={}", image.display()))
        .arg(format!("of={}", target.display()))
        .args(["bs=4M", "conv=fsync,notrunc", "status=none"]);
    vec![
        ("p6os flash", flash),
        ("bmaptool copy", bmaptool),
        ("dd bs=4M", dd),
    ]
}

fn bench_target(p6os: &Path, image: &Path, bmap: &Path, target: &Path, label: &str) -> Result<()> {
    let runs = super::runs()?;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for round in 0..=runs {
        for (i, (_, mut cmd)) in sides(p6os, image, bmap, target).into_iter().enumerate() {
            let t = super::wall_seconds(&mut cmd)?;
            if round > 0 {
                times[i].push(t);
            }
        }
    }
    let names = [
        "p6os flash (verified)",
        "bmaptool copy",
        "dd bs=4M conv=fsync",
    ];
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    println!("  {label}:");
    for (n, m) in names.iter().zip(&medians) {
        println!("    {n:<24} {m:6.2} s");
    }
    println!(
        "    p6os/bmaptool {:.2}x, p6os/dd {:.2}x (below 1 = p6os faster)",
        medians[0] / medians[1],
        medians[0] / medians[2]
    );
    Ok(())
}

pub fn run_bench() -> Result<()> {
    crate::deps::ensure()?;
    let p6os = super::release_cli()?;
    let work = tempfile::Builder::new()
        .prefix("p6os-bench-flash-")
        .tempdir_in("target")?;
    let w = work.path();
    let image = w.join("bench.img");
    make_image(&image)?;
    write_outputs(
        &image,
        "bench",
        &[OutputFormat::Raw, OutputFormat::Bmap],
        &|_| {},
    )?;
    let bmap = w.join("bench.bmap");
    let size = fs::metadata(&image)?.len();
    println!(
        "bench flash: {} MiB image, {} runs each, medians (this machine)",
        size >> 20,
        super::runs()?
    );
    let file = w.join("target.img");
    fs::File::create(&file)?.set_len(size)?;
    bench_target(&p6os, &image, &bmap, &file, "file target")?;
    let backing = w.join("loop.img");
    fs::File::create(&backing)?.set_len(size)?;
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&backing)
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let dev = String::from_utf8_lossy(&o.stdout).trim().to_string();
            let result = bench_target(
                &p6os,
                &image,
                &bmap,
                Path::new(&dev),
                &format!("loop device {dev}"),
            );
            let _ = Command::new("losetup").arg("-d").arg(&dev).status();
            result?;
        }
        _ => println!("  loop device: skipped (needs root and losetup)"),
    }
    Ok(())
}
