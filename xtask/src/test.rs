//! `cargo xtask test`: the default image and its output formats, the tiny image, unit, golden
//! and integration tests, the fuzz targets for a bounded time, then the QEMU scenarios two at a
//! time with every binary and image path given to them. Ends with a table of each tier's and
//! each scenario's time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use xshell::{cmd, Shell};

use crate::scenarios;

/// Where the QEMU scenarios share their key, images and bundles (fresh each run).
const FIXTURES: &str = "target/qemu-fixtures";

/// Below this much free disk under `target/` at the start, the run warns: a cold run writes
/// about this much (build artefacts, images, fixtures, fuzz corpora).
const DISK_NEEDED: u64 = 20 << 30;

/// Each tier's wall time and the disk left after it, printed as a table at the end (also after
/// a failure).
#[derive(Default)]
struct Times(Vec<(String, Duration, Option<u64>)>);

impl Times {
    fn tier<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let started = Instant::now();
        eprintln!("xtask: == {name}");
        let result = f();
        self.0
            .push((name.to_string(), started.elapsed(), free_disk()));
        result
    }

    fn print(&self, scenarios: &[scenarios::Outcome]) {
        let fmt = |d: Duration| format!("{:>3}:{:02}", d.as_secs() / 60, d.as_secs() % 60);
        eprintln!("\nxtask: test times (wall clock, m:ss; disk free after the tier)");
        for (name, took, free) in &self.0 {
            let free = free.map_or(String::new(), |b| format!("{:>6.1} GiB", gib(b)));
            eprintln!("  {name:<58} {} {free}", fmt(*took));
        }
        for o in scenarios {
            let name = format!("{}::{}", o.scenario.file, o.scenario.test);
            let name: String = name.chars().take(52).collect();
            eprintln!(
                "    {name:<52} {} {}",
                fmt(o.took),
                if o.passed { "" } else { "FAILED" }
            );
        }
        let total: Duration = self.0.iter().map(|(_, d, _)| *d).sum();
        eprintln!("  {:<58} {}", "total", fmt(total));
    }
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

/// Free bytes on the file system that holds `target/` (None where it cannot be read).
fn free_disk() -> Option<u64> {
    let dir = if std::path::Path::new("target").is_dir() {
        "target"
    } else {
        "."
    };
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Says up front when the disk is likely to run out (CI once did, mid-run, with a bare
/// "No space left on device" from the linker).
fn warn_if_disk_short() {
    if let Some(free) = free_disk().filter(|&free| free < DISK_NEEDED) {
        eprintln!(
            "xtask: warning: {:.1} GiB free under target/; a cold run writes about {:.0} GiB \
             (hint: `cargo clean` removes stale builds)",
            gib(free),
            gib(DISK_NEEDED)
        );
    }
}

pub fn run() -> Result<()> {
    warn_if_disk_short();
    let mut times = Times::default();
    let mut outcomes = Vec::new();
    let result = run_tiers(&mut times, &mut outcomes);
    times.print(&outcomes);
    result
}

fn run_tiers(times: &mut Times, outcomes: &mut Vec<scenarios::Outcome>) -> Result<()> {
    times.tier("set-up: Debian packages", crate::deps::ensure)?;
    // The README's main job: the default image and every output format, each checked.
    times.tier("default image, its output formats checked", || {
        let default = crate::image::run(crate::DEFAULT_RECIPE)?;
        check_outputs(&default)
    })?;
    let image = times.tier("tiny image", || crate::image::run(crate::TINY_RECIPE))?;
    let agent = crate::agent::path();
    let sh = Shell::new()?;
    times.tier("unit, golden and integration tests", || {
        let _a = sh.push_env("P6OS_AGENT", &agent);
        let _i = sh.push_env("P6OS_TEST_IMAGE", &image);
        // Tests that need a PostgreSQL server or Chromium fail here rather than skip (deps
        // installs them).
        let _p = sh.push_env("P6OS_TEST_DB_REQUIRED", "1");
        let _b = sh.push_env("P6OS_BROWSER_REQUIRED", "1");
        cmd!(sh, "cargo test --workspace --exclude p6os-qemu-tests").run()?;
        Ok(())
    })?;
    // The console's whole suite again, on a throwaway PostgreSQL server
    // (`p6os_console::testing::pg`): both storage backends pass the same tests.
    times.tier("console tests on PostgreSQL", || {
        let _r = sh.push_env("P6OS_TEST_DB_REQUIRED", "1");
        let _b = sh.push_env("P6OS_BROWSER_REQUIRED", "1");
        let _p = sh.push_env("P6OS_TEST_DB", "postgres");
        cmd!(sh, "cargo test -p p6os-console").run()?;
        Ok(())
    })?;
    times.tier(
        &format!(
            "fuzz: {} targets x {} s",
            crate::fuzz::TARGETS.len(),
            crate::fuzz::TEST_SECONDS
        ),
        || crate::fuzz::run(crate::fuzz::TEST_SECONDS, crate::fuzz::TARGETS),
    )?;
    let root = crate::root();
    let (cli, console) = (
        root.join("target/release/p6os"),
        root.join("target/debug/p6os-console"),
    );
    qemu_tier(times, image, agent, cli, console, outcomes)
}

/// `cargo xtask qemu`: the tiny image, then the QEMU scenarios only.
pub fn qemu_only() -> Result<()> {
    let mut times = Times::default();
    let mut outcomes = Vec::new();
    let result = (|| {
        times.tier("set-up: Debian packages", crate::deps::ensure)?;
        let image = times.tier("tiny image", || crate::image::run(crate::TINY_RECIPE))?;
        let root = crate::root();
        qemu_tier(
            &mut times,
            image,
            crate::agent::path(),
            root.join("target/release/p6os"),
            root.join("target/debug/p6os-console"),
            &mut outcomes,
        )
    })();
    times.print(&outcomes);
    result
}

/// Builds the scenarios and the console, then runs every scenario; an error names the failures.
fn qemu_tier(
    times: &mut Times,
    image: PathBuf,
    agent: PathBuf,
    cli: PathBuf,
    console: PathBuf,
    outcomes: &mut Vec<scenarios::Outcome>,
) -> Result<()> {
    let sh = Shell::new()?;
    let root = crate::root();
    let found = times.tier("QEMU scenarios: build the binaries", || {
        cmd!(sh, "cargo build --quiet -p p6os-console --bin p6os-console").run()?;
        scenarios::discover()
    })?;
    let virt_fw_vars = times.tier(
        "set-up: virt-firmware (PyPI)",
        crate::deps::ensure_virt_firmware,
    )?;
    let fixtures = root.join(FIXTURES);
    let _ = std::fs::remove_dir_all(&fixtures);
    std::fs::create_dir_all(&fixtures)?;
    // Every path the scenarios use, given explicitly.
    let env: Vec<(&str, PathBuf)> = vec![
        ("P6OS_AGENT", agent),
        ("P6OS_TEST_IMAGE", image),
        ("P6OS_CLI", cli),
        ("P6OS_CONSOLE", console),
        ("P6OS_FIXTURES", fixtures),
        ("P6OS_VIRT_FW_VARS", virt_fw_vars),
    ];
    for (name, path) in &env {
        ensure!(path.exists(), "{name}: {} is missing", path.display());
    }
    let count = found.len();
    *outcomes = times.tier(
        &format!("QEMU scenarios: {count}, {} at a time", scenarios::PARALLEL),
        || Ok(scenarios::run_all(found, env)),
    )?;
    if outcomes.len() != count {
        bail!(
            "only {} of {count} QEMU scenarios reported (a runner thread died)",
            outcomes.len()
        );
    }
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| {
            format!(
                "{}::{} ({})",
                o.scenario.file,
                o.scenario.test,
                o.log.display()
            )
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {count} QEMU scenarios failed:\n  {}",
            failed.len(),
            failed.join("\n  ")
        );
    }
    Ok(())
}

/// Every output of `cargo xtask image` is there, `SHA256SUMS` verifies, the `.bmap` restores
/// the raw image through `bmaptool copy`, and the `.img.zst` and `.qcow2` hold the same bytes.
fn check_outputs(image: &std::path::Path) -> Result<()> {
    let sh = Shell::new()?;
    let dir = image.parent().context("image has a directory")?;
    let stem = image
        .file_stem()
        .context("image has a name")?
        .to_string_lossy()
        .into_owned();
    sh.change_dir(dir);
    let sums = format!("{stem}.SHA256SUMS");
    cmd!(sh, "sha256sum --check --strict {sums}")
        .quiet()
        .run()?;
    let listed = sh.read_file(&sums)?;
    for ext in ["img", "img.zst", "qcow2", "bmap"] {
        let file = format!("{stem}.{ext}");
        ensure!(
            listed.contains(&format!("  {file}\n")),
            "{sums} does not list {file}"
        );
    }
    let copy = format!(".{stem}.bmap-check.img");
    let (bmap, img, zst, qcow2) = (
        format!("{stem}.bmap"),
        format!("{stem}.img"),
        format!("{stem}.img.zst"),
        format!("{stem}.qcow2"),
    );
    let result = (|| -> Result<()> {
        cmd!(sh, "bmaptool -q copy --bmap {bmap} {img} {copy}").run()?;
        cmd!(sh, "cmp {img} {copy}").run()?;
        cmd!(sh, "qemu-img compare -q -f raw -F qcow2 {img} {qcow2}").run()?;
        let pipe = format!("zstd -dcq '{zst}' | cmp - '{img}'");
        cmd!(sh, "bash -c {pipe}")
            .run()
            .with_context(|| format!("{zst} does not decompress to {img}"))?;
        Ok(())
    })();
    let _ = sh.remove_path(&copy);
    result?;
    eprintln!("xtask: {stem}: SHA256SUMS, bmap (bmaptool copy), qcow2 and zst checked");
    Ok(())
}
