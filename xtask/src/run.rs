//! `cargo xtask run [RECIPE|IMAGE]`: boot an image on this terminal (serial console). A recipe
//! is built first (`cargo xtask image RECIPE`); an image is booted itself, so what the machine
//! writes to its state partition stays, as on real hardware. Anything else is refused.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// What the argument of `cargo xtask run` is.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Recipe(PathBuf),
    Image(PathBuf),
}

/// A disk image has a GPT at LBA 1; a recipe is YAML that `p6os` accepts as a recipe.
fn classify(path: &Path) -> Result<Target> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let gpt = p6os_builder::gpt::read(&mut file);
    if gpt.is_ok() {
        return Ok(Target::Image(path.to_path_buf()));
    }
    let yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    if yaml {
        return match p6os_builder::recipe::load(path) {
            Ok(_) => Ok(Target::Recipe(path.to_path_buf())),
            Err(diags) => bail!("{} is not a valid recipe:\n{diags}", path.display()),
        };
    }
    bail!(
        "{} is neither a recipe (.yaml) nor a P6OS disk image ({})\n  \
         hint: cargo xtask run recipes/tiny.yaml, or an image from target/images/",
        path.display(),
        p6os_builder::diag::error_chain(&gpt.expect_err("not an image"))
    )
}

pub fn run(arg: Option<&str>) -> Result<()> {
    let image = match arg {
        None => crate::image::run(crate::DEFAULT_RECIPE)?,
        Some(arg) => match classify(Path::new(arg))? {
            Target::Image(image) => image,
            Target::Recipe(recipe) => crate::image::run(&recipe.to_string_lossy())?,
        },
    };
    let vm = p6os_qemu_tests::vm::VmConfig::new(&image)?;
    vm.run_interactive()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_images_and_other_files() {
        let root = crate::root();
        assert_eq!(
            classify(&root.join(crate::TINY_RECIPE)).unwrap(),
            Target::Recipe(root.join(crate::TINY_RECIPE))
        );
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        let table = p6os_layout::gpt::Gpt::layout(
            p6os_layout::gpt::Guid::from_u128(1),
            &[(
                "p6os-esp",
                p6os_layout::partition::TYPE_ESP,
                p6os_layout::gpt::Guid::from_u128(2),
                1 << 20,
            )],
        );
        let mut f = std::fs::File::create(&image).unwrap();
        f.set_len(table.size_bytes()).unwrap();
        p6os_builder::gpt::write(&table, &mut f).unwrap();
        assert_eq!(classify(&image).unwrap(), Target::Image(image.clone()));

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello").unwrap();
        let err = format!("{:#}", classify(&text).unwrap_err());
        assert!(
            err.contains("neither a recipe") && err.contains("EFI PART"),
            "{err}"
        );
        let layer = root.join("images/base/busybox.yaml");
        if layer.exists() {
            let err = format!("{:#}", classify(&layer).unwrap_err());
            assert!(err.contains("not a valid recipe"), "{err}");
        }
        assert!(classify(&dir.path().join("missing.yaml")).is_err());
    }
}
