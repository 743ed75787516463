//! Images and update bundles made by a test with the `p6os` command: the tiny recipe with a
//! version, trusted keys and health checks of the test's choosing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::p6os_cli;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub public_key: PathBuf,
    pub secret_key: PathBuf,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Fixture {
    /// A temporary directory with a fresh signing key.
    pub fn new() -> Result<Fixture> {
        let dir = tempfile::Builder::new().prefix("p6os-upgrade-").tempdir()?;
        let keys = dir.path().join("keys");
        run(Command::new(p6os_cli())
            .arg("keygen")
            .arg("--out")
            .arg(&keys))?;
        Ok(Fixture {
            public_key: keys.join("p6os.pub"),
            secret_key: keys.join("p6os.key"),
            dir,
        })
    }

    /// The tiny recipe at `version`, trusting this fixture's key, with `extra` YAML appended
    /// under `upgrades:` (e.g. health checks) and `boot_args` replacing the kernel arguments.
    pub fn recipe(
        &self,
        version: &str,
        upgrades_extra: &str,
        boot_args: Option<&str>,
    ) -> Result<PathBuf> {
        let images = repo().join("images");
        let mut text = fs::read_to_string(repo().join("recipes/tiny.yaml"))?
            .replace("../images", images.to_str().unwrap_or_default())
            .replace("version: 1.0.0", &format!("version: {version}"));
        if let Some(args) = boot_args {
            text = text.replace(
                "kernel_args: [panic=10, quiet]",
                &format!("kernel_args: {args}"),
            );
        }
        text.push_str(&format!(
            "upgrades:\n  trusted_keys: [{}]\n{upgrades_extra}",
            self.public_key.display()
        ));
        let path = self.dir.path().join(format!("tiny-{version}.yaml"));
        fs::write(&path, text)?;
        Ok(path)
    }

    /// `recipes/<name>.yaml` at `version`, trusting this fixture's key, with `extra` YAML
    /// appended at the top level (e.g. `images:`). The copy keeps the recipe's lock: the
    /// test builds exactly the locked package set.
    pub fn recipe_of(&self, name: &str, version: &str, extra: &str) -> Result<PathBuf> {
        let images = repo().join("images");
        let mut text = fs::read_to_string(repo().join(format!("recipes/{name}.yaml")))?
            .replace("../images", images.to_str().unwrap_or_default())
            .replace("version: 1.0.0", &format!("version: {version}"));
        text.push_str(&format!(
            "upgrades:\n  trusted_keys: [{}]\n{extra}",
            self.public_key.display()
        ));
        let path = self.dir.path().join(format!("{name}-{version}.yaml"));
        fs::write(&path, text)?;
        let lock = repo().join(format!("recipes/{name}.lock"));
        if lock.exists() {
            // Layer references are the recipe's own text: absolute paths in the copy.
            let locked = fs::read_to_string(&lock)?
                .replace("\"../images", &format!("\"{}", images.display()));
            fs::write(path.with_extension("lock"), locked)?;
        }
        Ok(path)
    }

    pub fn image(&self, recipe: &Path) -> Result<PathBuf> {
        let out = self.dir.path().join("images");
        let path = run(Command::new(p6os_cli())
            .arg("build")
            .arg(recipe)
            .arg("--out")
            .arg(&out)
            .args(["--format", "raw", "-q"]))?;
        Ok(PathBuf::from(path))
    }

    /// Writes `config` (unattended.yaml text) into `image`'s ESP with `p6os config inject`.
    pub fn inject(&self, image: &Path, config: &str) -> Result<()> {
        inject(image, config, &self.dir.path().join("unattended.yaml"))
    }

    /// A signed bundle of the recipe (`.p6b`).
    pub fn bundle(&self, recipe: &Path) -> Result<PathBuf> {
        let out = self.dir.path().join("bundles");
        Ok(PathBuf::from(run(Command::new(p6os_cli())
            .arg("bundle")
            .arg(recipe)
            .arg("--key")
            .arg(&self.secret_key)
            .arg("--out")
            .arg(&out)
            .arg("-q"))?))
    }

    /// A bundle, padded to whole 512-byte sectors so that it can be attached as a raw disk.
    pub fn bundle_disk(&self, recipe: &Path) -> Result<PathBuf> {
        let path = self.bundle(recipe)?;
        let disk = path.with_extension("disk");
        fs::copy(&path, &disk)?;
        let len = fs::metadata(&disk)?.len();
        fs::OpenOptions::new()
            .write(true)
            .open(&disk)?
            .set_len(len.div_ceil(512) * 512)?;
        Ok(disk)
    }
}

/// Writes `config` to `file`, then into `image`'s ESP with `p6os config inject`.
pub fn inject(image: &Path, config: &str, file: &Path) -> Result<()> {
    fs::write(file, config)?;
    run(Command::new(p6os_cli())
        .args(["config", "inject"])
        .arg(image)
        .arg(file))?;
    Ok(())
}
