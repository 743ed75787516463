//! `cargo xtask <command>`: the repository's workflows.

mod agent;
mod bench;
mod deps;
mod fuzz;
mod image;
mod run;
mod scenarios;
mod test;

use std::path::PathBuf;

use anyhow::{bail, Result};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  agent              build the static p6os-agent
  image [RECIPE]     build the agent, then the image and its outputs (default recipes/default.yaml)
  test               unit, golden, fuzz (bounded) and QEMU tests (installs Debian packages when root)
  qemu               the tiny image, then the QEMU scenarios only (two at a time)
  fuzz [--seconds N] [TARGET...]
                     run the parsers' fuzz targets (unattended, recipe), N seconds each (default 20)
  run [IMAGE]        boot an image in QEMU on this terminal (Ctrl-A X quits)
  bench image        time assembling the tiny image: p6os vs a pipeline of standard tools
  bench build        the default recipe: cold build, warm rebuild after a one-file change,
                     image and bundle sizes, squashfs zstd vs erofs lz4 on the slot's tree
  bench flash        a 2 GiB image (~300 MB data) to a file and a loop device: p6os flash vs
                     bmaptool copy vs dd bs=4M conv=fsync, medians and ratios
  bench upgrade      time applying a bundle to a slot: p6os-agent vs zstd -dc | dd, then sha256sum
  bench verity       verified boot's costs: hash tree vs veritysetup, signing vs sbsign, the tiny
                     build with vs without verity and signing, boot time with vs without verity
  bench console [--backend sqlite|postgres]... [--appliances N] [--clients C] [--no-rollout]
                     N simulated appliances (default 10000) pair and heartbeat over loopback:
                     throughput, p50/p99 latency, the console's peak memory
  deps               install (as root) or list the Debian packages the workflows need";

/// The recipe built when none is named: Debian with systemd and containerd.
pub const DEFAULT_RECIPE: &str = "recipes/default.yaml";
/// The busybox recipe most QEMU scenarios boot (seconds per boot under TCG).
pub const TINY_RECIPE: &str = "recipes/tiny.yaml";

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", p6os_builder::diag::error_chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::env::set_current_dir(root())?;
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["agent"] => agent::build().map(|_| ()),
        ["image"] => image::run(DEFAULT_RECIPE).map(|_| ()),
        ["image", recipe] => image::run(recipe).map(|_| ()),
        ["test"] => test::run(),
        ["qemu"] => test::qemu_only(),
        ["fuzz", rest @ ..] => fuzz::cli(rest),
        ["run"] => run::run(None),
        ["run", img] => run::run(Some(img)),
        ["deps"] => deps::ensure(),
        ["bench", "image"] => bench::image::run(),
        ["bench", "build"] => bench::build::run(),
        ["bench", "flash"] => bench::flash::run_bench(),
        ["bench", "upgrade"] => bench::upgrade::run(),
        ["bench", "verity"] => bench::verity::run(),
        ["bench", "console", rest @ ..] => bench::console::run(rest),
        ["help" | "--help" | "-h"] | [] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("unknown command {args:?}\n\n{USAGE}"),
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}
