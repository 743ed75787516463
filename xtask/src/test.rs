//! `cargo xtask test`: unit and golden tests, the fuzz targets for a bounded time, then QEMU boots
//! of the tiny image.

use anyhow::Result;
use xshell::{cmd, Shell};

pub fn run() -> Result<()> {
    crate::deps::ensure()?;
    let image = crate::image::run(crate::TINY_RECIPE)?;
    let agent = crate::agent::path();
    let sh = Shell::new()?;
    let _a = sh.push_env("P6OS_AGENT", &agent);
    let _i = sh.push_env("P6OS_TEST_IMAGE", &image);
    cmd!(sh, "cargo test --workspace --exclude qemu-tests").run()?;
    crate::fuzz::run(crate::fuzz::TEST_SECONDS, crate::fuzz::TARGETS)?;
    // One VM at a time: TCG on a 2-core machine.
    cmd!(sh, "cargo test -p qemu-tests -- --test-threads=1").run()?;
    Ok(())
}
