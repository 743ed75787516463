//! `p6os keygen` and `p6os bundle`: a signed update bundle from a recipe, and its inspection.
//! The format itself is `p6os_bundle::format`, shared with the agent that installs it.

use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use p6os_bundle::format::{self, BundleError, Header, Manifest, PayloadInput, PayloadKind};
use p6os_bundle::keys::{PublicKey, SecretKey};
use serde::Serialize;

use crate::image::{self, BuildError, BuildOptions};
use crate::recipe::Recipe;

/// zstd level of bundle payloads (the root filesystem is compressed already; kernels too).
const LEVEL: i32 = 6;
pub const SECRET_FILE: &str = "p6os.key";
pub const PUBLIC_FILE: &str = "p6os.pub";

#[derive(Debug, thiserror::Error)]
pub enum BundleBuildError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {problem}")]
    Key { path: PathBuf, problem: String },
    #[error("{0} exists already; keys are never overwritten")]
    Exists(PathBuf),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BundleBuildError + '_ {
    move |source| BundleBuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes `DIR/p6os.key` (0600) and `DIR/p6os.pub` from the operating system's randomness.
pub fn keygen(dir: &Path) -> Result<PublicKey, BundleBuildError> {
    fs::create_dir_all(dir).map_err(io_at(dir))?;
    let (secret_path, public_path) = (dir.join(SECRET_FILE), dir.join(PUBLIC_FILE));
    for p in [&secret_path, &public_path] {
        if p.exists() {
            return Err(BundleBuildError::Exists(p.clone()));
        }
    }
    let mut seed = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(io_at(Path::new("/dev/urandom")))?;
    let key = SecretKey::from_seed(seed);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret_path)
        .map_err(io_at(&secret_path))?;
    f.write_all(key.to_file().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_at(&secret_path))?;
    fs::write(&public_path, key.public().to_file()).map_err(io_at(&public_path))?;
    Ok(key.public())
}

pub fn read_secret_key(path: &Path) -> Result<SecretKey, BundleBuildError> {
    let text = fs::read_to_string(path).map_err(io_at(path))?;
    SecretKey::from_file(&text).map_err(|e| BundleBuildError::Key {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })
}

pub fn read_public_key(path: &Path) -> Result<PublicKey, BundleBuildError> {
    let text = fs::read_to_string(path).map_err(io_at(path))?;
    PublicKey::from_file(&text).map_err(|e| BundleBuildError::Key {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })
}

/// Builds `<out>/<name>-<version>.p6b` (written beside, then renamed).
pub fn build(
    recipe: &Recipe,
    opts: &BuildOptions,
    key: &SecretKey,
) -> Result<(PathBuf, Manifest), BundleBuildError> {
    let say = |s: &str| opts.progress.say(s);
    let def = &recipe.def;
    let prepared = image::prepare(recipe, opts)?;
    fs::create_dir_all(&opts.out_dir).map_err(io_at(&opts.out_dir))?;
    let base = format!("{}-{}", def.name, def.version);
    let work = tempfile::Builder::new()
        .prefix(&format!(".{base}.bundle."))
        .tempdir_in(&opts.out_dir)
        .map_err(io_at(&opts.out_dir))?;
    let slot = image::make_slot(
        def,
        &prepared.root,
        prepared.identity.clone(),
        &image::uki::BootParts {
            stub: &prepared.stub,
            vmlinuz: &prepared.vmlinuz,
            initrd: &prepared.initrd,
            signer: prepared.signer.as_ref(),
        },
        prepared.release.clone(),
        &prepared.agent_sha256,
        work.path(),
        &say,
    )?;
    let rootfs = fs::read(&slot.rootfs_path).map_err(io_at(&slot.rootfs_path))?;
    let manifest = Manifest {
        format: format::FORMAT,
        name: def.name.clone(),
        version: def.version.clone(),
        arch: def.arch.as_str().into(),
        compatible: vec![def.name.clone()],
        min_agent_version: env!("CARGO_PKG_VERSION").into(),
        recipe_digest: prepared.digest.clone(),
        rootfs_type: def.rootfs.layout(),
        kernel_args: def.boot.kernel_args.clone(),
        tries: u32::from(def.boot.tries),
        slot_manifest: serde_json::to_value(&slot.manifest).expect("serializable"),
        security_floor: recipe.upgrades.security_floor.clone(),
        key_id: String::new(),
        payloads: Vec::new(),
    };
    let path = opts.out_dir.join(format!("{base}.p6b"));
    let tmp = work.path().join("bundle.p6b");
    say(&format!(
        "bundle: unified kernel image {} KiB (kernel {} KiB, initramfs {} KiB), root filesystem {} MiB, signing with key {}",
        slot.uki.len() / 1024,
        prepared.vmlinuz.len() / 1024,
        prepared.initrd.len() / 1024,
        rootfs.len() >> 20,
        key.id()
    ));
    let file = fs::File::create(&tmp).map_err(io_at(&tmp))?;
    let mut out = BufWriter::new(file);
    let manifest = format::write_bundle(
        &mut out,
        manifest,
        &[
            PayloadInput {
                kind: PayloadKind::Uki,
                data: &slot.uki,
            },
            PayloadInput {
                kind: PayloadKind::Rootfs,
                data: &rootfs,
            },
        ],
        key,
        LEVEL,
    )
    .map_err(io_at(&tmp))?;
    let file = out.into_inner().map_err(|e| io_at(&tmp)(e.into_error()))?;
    file.sync_all().map_err(io_at(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_at(&path))?;
    image::save_lock(recipe, prepared.new_lock.as_ref(), &say);
    Ok((path, manifest))
}

/// What `p6os bundle inspect` shows.
#[derive(Debug, Serialize)]
pub struct Inspection {
    pub file: PathBuf,
    pub bytes: u64,
    pub manifest: Manifest,
    pub signed: bool,
    /// `verified with <id>`, or why not; None when no key was given.
    pub signature: Option<String>,
    /// Whether every payload was read and matched its size and sha256 (only with a key).
    pub payloads_verified: Option<bool>,
}

/// Reads the header; with `key`, verifies the signature and then every payload.
pub fn inspect(path: &Path, key: Option<&PublicKey>) -> Result<Inspection, BundleError> {
    let file = fs::File::open(path).map_err(BundleError::Read)?;
    let bytes = file.metadata().map_err(BundleError::Read)?.len();
    let mut r = BufReader::with_capacity(format::CHUNK, file);
    let header: Header = format::read_header(&mut r)?;
    let mut inspection = Inspection {
        file: path.to_path_buf(),
        bytes,
        manifest: header.manifest.clone(),
        signed: header.signature.is_some(),
        signature: None,
        payloads_verified: None,
    };
    if let Some(key) = key {
        let keys = [*key];
        header.verify(&keys)?;
        inspection.signature = Some(format!("verified with key {}", key.id()));
        for p in &header.manifest.payloads {
            format::copy_payload(&mut r, p, &mut io::sink(), |_| {})?;
        }
        inspection.payloads_verified = Some(true);
    }
    Ok(inspection)
}

impl Inspection {
    pub fn render(&self) -> String {
        let m = &self.manifest;
        let mut out = format!(
            "{}: {} {} ({}), {} bytes\n  compatible with: {}\n  minimum agent: {}\n  tries: {}\n  kernel args: {}\n  key: {}{}\n",
            self.file.display(),
            m.name,
            m.version,
            m.arch,
            self.bytes,
            m.compatible.join(", "),
            m.min_agent_version,
            m.tries,
            m.kernel_args.join(" "),
            m.key_id,
            match (&self.signature, self.signed) {
                (Some(s), _) => format!(" ({s})"),
                (None, true) => " (signed; pass --key to verify)".into(),
                (None, false) => " (NOT SIGNED)".into(),
            }
        );
        for p in &m.payloads {
            out.push_str(&format!(
                "  {:<7} {:>10} bytes ({:>10} compressed) {}\n",
                p.kind.as_str(),
                p.size,
                p.compressed_size,
                p.sha256
            ));
        }
        if self.payloads_verified == Some(true) {
            out.push_str("  every payload matches its size and sha256\n");
        }
        out
    }
}
