//! Images and update bundles made by a test with the `p6os` command: the tiny recipe with a
//! version, trusted keys and health checks of the test's choosing.
//!
//! Under `cargo xtask test` (`$P6OS_FIXTURES` set) every scenario signs with one key made once
//! per run, and images and bundles are cached in that directory by the text of their recipe
//! (and lock): the same recipe is built once per run however many scenarios boot it, even when
//! scenarios run in parallel (a file lock per entry). Without it, each fixture has its own key
//! and builds everything in its own temporary directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::p6os_cli;

pub struct Fixture {
    /// The scenario's own scratch directory (always private).
    pub dir: tempfile::TempDir,
    pub public_key: PathBuf,
    pub secret_key: PathBuf,
    /// Secure Boot keys (`p6os keygen --secure-boot`) that sign this fixture's images.
    pub secure_boot_keys: PathBuf,
    /// Other Secure Boot keys, never enrolled: what an attacker's signature looks like.
    pub other_secure_boot_keys: PathBuf,
    /// Where images and bundles are built: `$P6OS_FIXTURES` (shared by the run) or `dir`.
    cache: PathBuf,
}

/// Runs `make` into `dir` once: the first caller builds (holding `<dir>.lock`), the others wait
/// and reuse. A directory is complete when it exists (built under a temporary name, renamed).
fn once(dir: &Path, make: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = dir.parent().context("cache entry has a parent")?;
    fs::create_dir_all(parent)?;
    let lock = fs::File::create(dir.with_extension("lock"))?;
    lock.lock()?;
    if !dir.exists() {
        let tmp = dir.with_extension("tmp");
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        make(&tmp)?;
        fs::rename(&tmp, dir)?;
    }
    Ok(())
}

/// A cache key for a recipe: its text and its lock's, and the programs that turn it into an
/// image (the `p6os` command and the agent it puts in): a rebuilt agent is never served an
/// image of the old one from a reused `$P6OS_FIXTURES`.
fn recipe_key(recipe: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(fs::read(recipe)?);
    if let Ok(lock) = fs::read(recipe.with_extension("lock")) {
        h.update(lock);
    }
    h.update(tools_digest());
    Ok(hex::encode(&h.finalize()[..12]))
}

/// The sha256 of the `p6os` command and of the agent (`$P6OS_AGENT`, else where `cargo xtask
/// agent` puts it), read once per process.
fn tools_digest() -> &'static [u8] {
    use sha2::{Digest, Sha256};
    static DIGEST: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DIGEST.get_or_init(|| {
        let agent = std::env::var_os("P6OS_AGENT").map_or_else(
            || {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../target/x86_64-unknown-linux-gnu/release-agent/p6os-agent")
            },
            PathBuf::from,
        );
        let mut h = Sha256::new();
        for tool in [p6os_cli(), agent] {
            // A missing file hashes as empty: the build itself then says what is missing.
            h.update(fs::read(&tool).unwrap_or_default());
        }
        h.finalize().to_vec()
    })
}

/// The one file in `dir` with extension `ext`.
fn only_file(dir: &Path, ext: &str) -> Result<PathBuf> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == ext) {
            return Ok(p);
        }
    }
    bail!("no .{ext} in {}", dir.display())
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
    /// A scratch directory, and the run's signing key (`$P6OS_FIXTURES`) or a fresh one.
    pub fn new() -> Result<Fixture> {
        let dir = tempfile::Builder::new().prefix("p6os-upgrade-").tempdir()?;
        let cache = match std::env::var_os("P6OS_FIXTURES") {
            Some(shared) => PathBuf::from(shared),
            None => dir.path().to_path_buf(),
        };
        let keys = cache.join("keys");
        once(&keys, |tmp| {
            run(Command::new(p6os_cli()).arg("keygen").arg("--out").arg(tmp))?;
            Ok(())
        })?;
        let secure_boot_keys = cache.join("secure-boot-keys");
        let other_secure_boot_keys = cache.join("other-secure-boot-keys");
        for dir in [&secure_boot_keys, &other_secure_boot_keys] {
            once(dir, |tmp| {
                run(Command::new(p6os_cli())
                    .args(["keygen", "--secure-boot", "--out"])
                    .arg(tmp))?;
                Ok(())
            })?;
        }
        Ok(Fixture {
            public_key: keys.join("p6os.pub"),
            secret_key: keys.join("p6os.key"),
            secure_boot_keys,
            other_secure_boot_keys,
            dir,
            cache,
        })
    }

    /// The kernel arguments of [`Fixture::recipe`] when a scenario gives none.
    const NO_SETUP_PAUSE: &'static str = "[panic=10, quiet, p6os.setup=off]";

    /// The tiny recipe's own kernel arguments (the site setup pause on), for [`Fixture::recipe`].
    pub const TINY_ARGS: &'static str = "[panic=10, quiet]";

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
        // Without arguments of its own a scenario gets the recipe's with the site setup pause
        // off (`p6os.setup=off`): it boots devices that are never configured, many times, and
        // is not about the pause (`site_setup` and `unattended` ask for the recipe's own).
        let args = boot_args.unwrap_or(Self::NO_SETUP_PAUSE);
        text = text.replace(
            "kernel_args: [panic=10, quiet]",
            &format!("kernel_args: {args}"),
        );
        text = text.replace(
            "boot:\n",
            &format!(
                "boot:\n  secure_boot: {{keys: {}}}\n",
                self.secure_boot_keys.display()
            ),
        );
        text.push_str(&format!(
            "upgrades:\n  trusted_keys: [{}]\n{upgrades_extra}",
            self.public_key.display()
        ));
        let path = self.dir.path().join(format!("tiny-{version}.yaml"));
        fs::write(&path, text)?;
        Ok(path)
    }

    /// The tiny recipe at `version` as [`Fixture::recipe`] makes it, but signed with the other
    /// Secure Boot keys (never enrolled).
    pub fn recipe_signed_by_others(&self, version: &str) -> Result<PathBuf> {
        let path = self.recipe(version, "", None)?;
        let text = fs::read_to_string(&path)?.replace(
            &self.secure_boot_keys.display().to_string(),
            &self.other_secure_boot_keys.display().to_string(),
        );
        let other = self.dir.path().join(format!("tiny-{version}-others.yaml"));
        fs::write(&other, text)?;
        Ok(other)
    }

    /// An OVMF variable store with this fixture's Secure Boot keys enrolled, made once per run.
    pub fn secure_boot_vars(&self) -> Result<PathBuf> {
        let dir = self.cache.join("secure-boot-vars");
        once(&dir, |tmp| {
            crate::secure_boot::enrolled_vars(&self.secure_boot_keys, &tmp.join("OVMF_VARS.fd"))?;
            Ok(())
        })?;
        Ok(dir.join("OVMF_VARS.fd"))
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

    /// The image of `recipe` (raw), built once per run; the scenario gets its own sparse copy
    /// (scenarios inject configurations into their images, and run in parallel).
    pub fn image(&self, recipe: &Path) -> Result<PathBuf> {
        let shared = self.shared_image(recipe)?;
        // Named after the recipe file: two recipes of one image name get two copies.
        let stem = recipe.file_stem().context("recipe has a name")?;
        let own = self
            .dir
            .path()
            .join(format!("{}.img", stem.to_string_lossy()));
        crate::vm::copy_image(&shared, &own)?;
        Ok(own)
    }

    /// The run's one build of `recipe`: never to be changed.
    fn shared_image(&self, recipe: &Path) -> Result<PathBuf> {
        let out = self.cache.join("images").join(recipe_key(recipe)?);
        once(&out, |tmp| {
            run(Command::new(p6os_cli())
                .arg("build")
                .arg(recipe)
                .arg("--out")
                .arg(tmp)
                .args(["--format", "raw", "-q"]))?;
            Ok(())
        })?;
        only_file(&out, "img")
    }

    /// Writes `config` (unattended.yaml text) into `image`'s ESP with `p6os config inject`.
    pub fn inject(&self, image: &Path, config: &str) -> Result<()> {
        inject(image, config, &self.dir.path().join("unattended.yaml"))
    }

    /// A signed bundle of the recipe (`.p6b`), built once per run.
    pub fn bundle(&self, recipe: &Path) -> Result<PathBuf> {
        let out = self.cache.join("bundles").join(recipe_key(recipe)?);
        once(&out, |tmp| {
            run(Command::new(p6os_cli())
                .arg("bundle")
                .arg(recipe)
                .arg("--key")
                .arg(&self.secret_key)
                .arg("--out")
                .arg(tmp)
                .arg("-q"))?;
            Ok(())
        })?;
        only_file(&out, "p6b")
    }

    /// A bundle, padded to whole 512-byte sectors so that it can be attached as a raw disk: a
    /// copy of the scenario's own (QEMU locks the files of writable drives).
    pub fn bundle_disk(&self, recipe: &Path) -> Result<PathBuf> {
        let path = self.bundle(recipe)?;
        let name = path.file_name().context("bundle has a name")?;
        let disk = self.dir.path().join(name).with_extension("disk");
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

/// An 8 MiB FAT drive labelled `CIDATA` in `dir` (`NAME.img`) holding `user_data` as
/// `/user-data`, and `signature` as `/user-data.sig` when given: a site configuration drive.
pub fn cidata_drive(
    dir: &Path,
    name: &str,
    user_data: &Path,
    signature: Option<&Path>,
) -> Result<PathBuf> {
    let drive = dir.join(format!("{name}.img"));
    fs::File::create(&drive)?.set_len(8 << 20)?;
    run(Command::new("mkfs.vfat").args(["-n", "CIDATA"]).arg(&drive))
        .context("mkfs.vfat (package dosfstools)")?;
    let mut files = vec![(user_data, "::/user-data")];
    files.extend(signature.map(|s| (s, "::/user-data.sig")));
    for (from, to) in files {
        run(Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&drive)
            .arg(from)
            .arg(to))
        .context("mcopy (package mtools)")?;
    }
    Ok(drive)
}
