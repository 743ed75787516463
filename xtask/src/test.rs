//! `cargo xtask test`: unit and golden tests, the fuzz targets for a bounded time, the default
//! image and its output formats, then QEMU boots of the tiny image and of the default image.

use anyhow::{ensure, Context, Result};
use xshell::{cmd, Shell};

pub fn run() -> Result<()> {
    crate::deps::ensure()?;
    // The README's main job: the default image and every output format, each checked.
    let default = crate::image::run(crate::DEFAULT_RECIPE)?;
    check_outputs(&default)?;
    let image = crate::image::run(crate::TINY_RECIPE)?;
    let agent = crate::agent::path();
    let sh = Shell::new()?;
    let _a = sh.push_env("P6OS_AGENT", &agent);
    let _i = sh.push_env("P6OS_TEST_IMAGE", &image);
    cmd!(sh, "cargo test --workspace --exclude p6os-qemu-tests").run()?;
    crate::fuzz::run(crate::fuzz::TEST_SECONDS, crate::fuzz::TARGETS)?;
    // One VM at a time: TCG on a 2-core machine.
    cmd!(sh, "cargo test -p p6os-qemu-tests -- --test-threads=1").run()?;
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
