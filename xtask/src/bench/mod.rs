//! `cargo xtask bench image|upgrade|verity`: P6OS next to the standard tools doing the same job, in
//! the same run, interleaved, medians of `P6OS_BENCH_RUNS` (default 5) runs printed as a ratio.
//! `cargo xtask bench console`: the console under a simulated fleet (no standard tool does that
//! job; throughput, latency percentiles and peak memory are printed).

pub mod build;
pub mod console;
pub mod flash;
pub mod image;
pub mod upgrade;
pub mod verity;

/// Timed runs per side (after one untimed warm-up each): `P6OS_BENCH_RUNS`, default 5.
pub fn runs() -> anyhow::Result<usize> {
    use anyhow::Context;
    let runs = std::env::var("P6OS_BENCH_RUNS").map_or(Ok(5), |v| v.parse::<usize>());
    Ok(runs.context("P6OS_BENCH_RUNS")?.max(1))
}

/// Builds the `p6os` CLI (release, untimed) and returns its path: the runs call the binary
/// itself, never `cargo run`.
pub fn release_cli() -> anyhow::Result<std::path::PathBuf> {
    let built = std::process::Command::new("cargo")
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "p6os-builder",
            "--bin",
            "p6os",
        ])
        .status()?;
    anyhow::ensure!(built.success(), "building p6os failed");
    Ok(crate::root().join("target/release/p6os"))
}

/// Runs `cmd` to completion and returns its wall seconds; fails with its stderr.
pub fn wall_seconds(cmd: &mut std::process::Command) -> anyhow::Result<f64> {
    let start = std::time::Instant::now();
    let out = anyhow::Context::with_context(cmd.output(), || format!("running {cmd:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(start.elapsed().as_secs_f64())
}
