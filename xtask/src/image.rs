//! `cargo xtask image [RECIPE]`: the agent, then the image.

use std::path::PathBuf;

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

pub const OUT: &str = "target/images";

pub fn run(recipe: &str) -> Result<PathBuf> {
    crate::deps::ensure()?;
    let agent = crate::agent::build()?;
    let sh = Shell::new()?;
    let out = cmd!(sh, "cargo run --quiet --release -p p6os-builder --bin p6os -- build {recipe} --out {OUT} --agent {agent}")
        .read()
        .with_context(|| format!("building {recipe}"))?;
    // Absolute: tests run with their own crate as the working directory.
    Ok(crate::root().join(out.trim()))
}
