//! `cargo xtask agent`: the static p6os-agent.

use std::path::PathBuf;

use anyhow::Result;
use xshell::{cmd, Shell};

pub const TARGET: &str = "x86_64-unknown-linux-gnu";

pub fn path() -> PathBuf {
    crate::root()
        .join("target")
        .join(TARGET)
        .join("release-agent/p6os-agent")
}

pub fn build() -> Result<PathBuf> {
    let sh = Shell::new()?;
    let _flags = sh.push_env("RUSTFLAGS", "-C target-feature=+crt-static");
    cmd!(
        sh,
        "cargo build --quiet -p p6os-agent --profile release-agent --target {TARGET}"
    )
    .run()?;
    let p = path();
    eprintln!(
        "xtask: agent {} ({} KiB)",
        p.display(),
        std::fs::metadata(&p)?.len() / 1024
    );
    Ok(p)
}
