//! `cargo xtask fuzz [--seconds N] [TARGET...]`: the parsers' fuzz targets (`fuzz/`), each for a
//! bounded time, with cargo-fuzz on stable Rust (`-s none`: coverage-guided, no sanitizer).
//!
//! Everything generated stays under `target/fuzz/`: the build (a target directory of its own, as
//! the flags differ), the seeds (copied from the repository's own YAML files on every run), the
//! corpus each run grows, scratch files. Crashing
//! inputs land where cargo fuzz puts them, `fuzz/artifacts/<target>/` (git-ignored).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// The fuzz targets, in the order they run.
pub const TARGETS: &[&str] = &["unattended", "recipe", "bundle", "bmap"];
/// Seconds per target for `cargo xtask fuzz`.
pub const DEFAULT_SECONDS: u64 = 20;
/// Seconds per target in `cargo xtask test`.
pub const TEST_SECONDS: u64 = 25;
/// Installed when `cargo fuzz` is missing; builds on stable Rust.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const FUZZ_DIR: &str = "fuzz";
const OUT: &str = "target/fuzz";

/// Parses `[--seconds N] [TARGET...]`.
pub fn cli(args: &[&str]) -> Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(&arg) = args.next() {
        match arg {
            "--seconds" => {
                let n = args.next().context("--seconds needs a number")?;
                seconds = n
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .with_context(|| format!("--seconds: `{n}` is not a positive number"))?;
            }
            t if TARGETS.contains(&t) => targets.push(t),
            other => bail!(
                "unknown fuzz target or option `{other}`; targets: {}",
                TARGETS.join(", ")
            ),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    run(seconds, &targets)
}

/// Builds the fuzz targets, then runs each for `seconds`. A crash is an error naming the input.
pub fn run(seconds: u64, targets: &[&str]) -> Result<()> {
    ensure_cargo_fuzz()?;
    if !has_cxx() {
        bail!(
            "libfuzzer-sys builds libFuzzer with a C++ compiler and `c++` is missing; \
             run as root: apt-get install -y --no-install-recommends g++ (or `cargo xtask deps`)"
        );
    }
    let sh = Shell::new()?;
    // The same options for build and run, else `cargo fuzz run` builds again.
    let opts = ["-s", "none", "--fuzz-dir", FUZZ_DIR, "--target-dir", OUT];

    let started = Instant::now();
    eprintln!("xtask: building fuzz targets (cargo fuzz build -s none, stable Rust)");
    for t in targets {
        cmd!(sh, "cargo fuzz build {opts...} {t}")
            .run()
            .with_context(|| format!("building fuzz target `{t}`"))?;
    }
    eprintln!(
        "xtask: fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    for &t in targets {
        let seeds = seeds(t)?;
        let corpus = PathBuf::from(OUT).join("corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        let scratch = crate::root().join(OUT).join("scratch").join(t);
        let mut corpora = vec![corpus.clone(), seeds];
        let committed = Path::new(FUZZ_DIR).join("seeds").join(t);
        if committed.is_dir() {
            corpora.push(committed);
        }
        let libfuzzer = [
            format!("-max_total_time={seconds}"),
            // An input that takes this long is a finding too, and the run stays bounded.
            "-timeout=30".to_string(),
            "-print_final_stats=1".to_string(),
        ];
        eprintln!(
            "xtask: fuzzing `{t}` for {seconds} s (new inputs go to {})",
            corpus.display()
        );
        let since = SystemTime::now();
        let started = Instant::now();
        let result = cmd!(
            sh,
            "cargo fuzz run {opts...} {t} {corpora...} -- {libfuzzer...}"
        )
        .env("P6OS_FUZZ_SCRATCH", &scratch)
        .run();
        let _ = std::fs::remove_dir_all(&scratch);
        if let Err(e) = result {
            report_artifacts(t, since);
            return Err(e).with_context(|| format!("fuzz target `{t}` failed"));
        }
        eprintln!(
            "xtask: fuzz target `{t}`: no crash in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `cargo fuzz`, installed with `cargo install` when missing.
fn ensure_cargo_fuzz() -> Result<()> {
    let works = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Ok(());
    }
    eprintln!("xtask: cargo fuzz is missing; cargo install cargo-fuzz --version {CARGO_FUZZ_VERSION} --locked");
    let started = Instant::now();
    let sh = Shell::new()?;
    cmd!(
        sh,
        "cargo install cargo-fuzz --version {CARGO_FUZZ_VERSION} --locked"
    )
    .run()
    .context("installing cargo-fuzz")?;
    eprintln!(
        "xtask: cargo-fuzz installed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn has_cxx() -> bool {
    Command::new("sh")
        .args(["-c", "command -v c++"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Seeds from the repository's own files, copied afresh into `target/fuzz/seeds/<target>`:
/// the YAML examples in `docs/unattended.md`; recipes and layer files; a small signed bundle;
/// the builder's golden bmap.
fn seeds(target: &str) -> Result<PathBuf> {
    let dir = PathBuf::from(OUT).join("seeds").join(target);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let mut n = 0;
    let mut put = |name: String, text: &str| -> Result<()> {
        n += 1;
        std::fs::write(dir.join(name), text)?;
        Ok(())
    };
    match target {
        "unattended" => {
            let doc = std::fs::read_to_string("docs/unattended.md")?;
            for (i, block) in yaml_blocks(&doc).into_iter().enumerate() {
                put(format!("docs-unattended-{i}.yaml"), block)?;
            }
        }
        "recipe" => {
            let mut files = Vec::new();
            yaml_files(Path::new("recipes"), &mut files)?;
            yaml_files(Path::new("images"), &mut files)?;
            for f in files {
                let name = f.to_string_lossy().replace('/', "-");
                put(name, &std::fs::read_to_string(&f)?)?;
            }
        }
        "bundle" => {
            // A small valid bundle signed with the key the target trusts.
            use p6os_bundle::format::{write_bundle, Manifest, PayloadInput, PayloadKind, FORMAT};
            let manifest = Manifest {
                format: FORMAT,
                name: "tiny".into(),
                version: "2.0.0".into(),
                arch: "x86_64".into(),
                compatible: vec!["tiny".into()],
                min_agent_version: "0.1.0".into(),
                recipe_digest: "sha256:00".into(),
                rootfs_type: "squashfs".into(),
                kernel_args: vec!["quiet".into()],
                tries: 3,
                slot_manifest: serde_json::json!({}),
                key_id: String::new(),
                payloads: Vec::new(),
            };
            let key = p6os_bundle::keys::SecretKey::from_seed([7; 32]);
            let data = b"p6os".repeat(64);
            let mut out = Vec::new();
            write_bundle(
                &mut out,
                manifest,
                &[
                    PayloadInput {
                        kind: PayloadKind::Kernel,
                        data: &data,
                    },
                    PayloadInput {
                        kind: PayloadKind::Initrd,
                        data: &data[..10],
                    },
                    PayloadInput {
                        kind: PayloadKind::Rootfs,
                        data: &data,
                    },
                ],
                &key,
                3,
            )?;
            n += 1;
            std::fs::write(dir.join("small.p6b"), out)?;
        }
        "bmap" => {
            let snap = std::fs::read_to_string(GOLDEN_BMAP)
                .with_context(|| format!("reading {GOLDEN_BMAP}"))?;
            put("golden.bmap".into(), &insta_body(&snap))?;
        }
        _ => bail!("no seeds for fuzz target `{target}`"),
    }
    if n == 0 {
        bail!("no seeds found for fuzz target `{target}`");
    }
    Ok(dir)
}

/// The builder's golden bmap (an insta snapshot): a bmap that `bmaptool copy` accepts.
const GOLDEN_BMAP: &str =
    "builder/src/outputs/snapshots/p6os_builder__outputs__bmap_tests__golden_bmap_of_a_tiny_image.snap";

/// The text an insta snapshot holds, as the code produced it: after the `---` header, with the
/// final newline insta trims (the bmap's own checksum covers it).
fn insta_body(snap: &str) -> String {
    let body = snap.splitn(3, "---\n").nth(2).unwrap_or(snap);
    format!("{}\n", body.trim_end())
}

/// The bodies of the ```yaml blocks of a Markdown document.
fn yaml_blocks(doc: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find("```yaml\n") {
        let body = &rest[start + "```yaml\n".len()..];
        let Some(end) = body.find("```") else { break };
        blocks.push(&body[..end]);
        rest = &body[end + 3..];
    }
    blocks
}

/// `*.yaml` under `dir`, recursively, sorted.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "yaml") {
            out.push(p);
        }
    }
    Ok(())
}

/// Prints the inputs cargo fuzz saved since `since`, in hex too, and how to replay them.
fn report_artifacts(target: &str, since: SystemTime) {
    let dir = Path::new(FUZZ_DIR).join("artifacts").join(target);
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    if found.is_empty() {
        eprintln!(
            "xtask: fuzz target `{target}` failed without saving an input (build or setup error?)"
        );
        return;
    }
    for f in found {
        let bytes = std::fs::read(&f).unwrap_or_default();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        eprintln!(
            "xtask: fuzz target `{target}` failed on input {}",
            f.display()
        );
        eprintln!("xtask:   {} bytes, hex: {hex}", bytes.len());
        eprintln!(
            "xtask:   replay: cargo fuzz run -s none --fuzz-dir {FUZZ_DIR} --target-dir {OUT} {target} {}",
            f.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed is a bmap the flash accepts, its own checksum included.
    #[test]
    fn the_golden_bmap_seed_is_a_valid_bmap() {
        let snap = std::fs::read_to_string(crate::root().join(GOLDEN_BMAP)).unwrap();
        let plan = p6os_builder::flash::plan::parse_bmap(&insta_body(&snap)).unwrap();
        assert_eq!(plan.ranges.len(), 3);
    }
}
