//! `p6os build`: recipe -> layers -> slot filesystem, initramfs, ESP -> GPT disk image.
//!
//! Everything is computed first (trees, payloads, the partition layout and the ESP file list);
//! the image is then written to a temporary file in the output directory and renamed into place
//! only when complete, so a failed build leaves no image behind.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use uuid::Uuid;

use crate::fat;
use crate::fetch::{self, sha256_bytes, Cache};
use crate::kmod;
pub use crate::lock::LockPolicy;
use crate::lock::{self, LockFile};
use crate::manifest::{BuildManifest, LayerRecord, PackageRecord, Payload, SlotIdentity};
use crate::outputs::{self, OutputFormat};
use crate::progress::Progress;
use crate::recipe::Recipe;
use crate::rootfs;
use crate::statefs;
use crate::tree::{Kind, Tree};
use p6os_layout::esp;

mod boot;
mod layers;
mod layout;
mod root;
mod slot;
pub mod uki;
mod write;

use slot::{copy_sparse, remove_stale_work_dirs};
pub use slot::{make_slot, SlotFiles};

/// Where the agent lives in every slot (tree paths are relative to the slot's root).
pub const AGENT_PATH: &str = in_tree(p6os_layout::slot::AGENT_PATH);
pub const SLOT_MANIFEST_PATH: &str = in_tree(p6os_layout::slot::MANIFEST_PATH);
pub const CLOCK_EPOCH_PATH: &str = in_tree(p6os_layout::slot::CLOCK_EPOCH_PATH);
/// The recipe's default unattended.yaml (the agent's last resort; 0600: it may hold tokens).
pub const BAKED_UNATTENDED_PATH: &str = in_tree(p6os_layout::slot::BAKED_UNATTENDED_PATH);
/// A contract path inside a slot (`/usr/lib/p6os/...`) as a tree path (`usr/lib/p6os/...`).
const fn in_tree(path: &'static str) -> &'static str {
    match path.as_bytes() {
        [b'/', rest @ ..] => match std::str::from_utf8(rest) {
            Ok(p) => p,
            Err(_) => panic!("contract paths are ASCII"),
        },
        _ => panic!("contract paths are absolute"),
    }
}

/// Namespace for the UUID v5 GUIDs derived from the recipe digest.
const GUID_NAMESPACE: Uuid = uuid::uuid!("6b3f2d4e-0b9a-5c1e-9f7d-2a6e8c4b1d30");
/// Preloaded OCI archives (`<sha256>.tar`) and their list, read by `p6os-agent import-images`.
pub const IMAGES_DIR: &str = in_tree(p6os_layout::slot::IMAGES_DIR);
pub const IMAGES_LIST: &str = in_tree(p6os_layout::slot::IMAGES_LIST);
const K3S_BINARY: &str = "usr/local/bin/k3s";
const CONTAINERD_BINARY: &str = "usr/bin/containerd";
const K3S_IMAGES_DIR: &str = "var/lib/rancher/k3s/agent/images";
const BOOTLOADER_EFI: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("layer `{layer}` ({file}): {source}")]
    Fetch {
        layer: String,
        file: String,
        source: Box<fetch::FetchError>,
    },
    #[error("kernel layer: {0}")]
    Kernel(#[from] kmod::KmodError),
    #[error(
        "boot loader layer has no {0}\n  hint: the layer should install Debian's systemd-boot-efi"
    )]
    NoBootloader(&'static str),
    #[error("{what}: {source}")]
    Efi {
        what: String,
        #[source]
        source: p6os_efi::EfiError,
    },
    #[error("secure boot keys: {0}")]
    Keys(#[from] crate::secureboot::KeyError),
    #[error("root filesystem: {0}")]
    RootFs(#[from] rootfs::RootFsError),
    #[error(
        "slot too small: the root filesystem is {need} MiB but partitions.slot is {have} MiB\n  hint: raise partitions.slot in the recipe to at least {suggest}MiB"
    )]
    SlotTooSmall { need: u64, have: u64, suggest: u64 },
    #[error("ESP: {0}\n  hint: raise partitions.esp in the recipe")]
    Esp(#[from] fat::FatError),
    #[error("state partition: {0}")]
    State(#[from] statefs::StateFsError),
    #[error("agent binary {path}: {source}\n  hint: build it with `cargo xtask agent`, or pass --agent PATH")]
    Agent { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("the recipe lists `images:` but its layers have no container runtime\n  hint: add a Kubernetes layer (../images/kubernetes/containerd.yaml or k3s.yaml)")]
    NoRuntime,
    #[error("output formats: {0}")]
    Outputs(#[from] outputs::OutputError),
    #[error("{file}: sha256 mismatch: the recipe pins {expected}, the file has {actual}\n  hint: update images[].sha256 in the recipe (sha256sum FILE) if the new archive is intended")]
    OciArchive {
        file: PathBuf,
        expected: String,
        actual: String,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct BuildOptions {
    pub out_dir: PathBuf,
    pub agent: PathBuf,
    pub cache: Cache,
    /// Receives one line per step and the progress of long tasks (silent in tests).
    pub progress: Progress,
    /// Local copies of `file` sources by name (`--layer-source NAME=PATH`).
    pub local_sources: BTreeMap<String, PathBuf>,
    /// What to do with the recipe's lock file.
    pub lock: LockPolicy,
    /// The output formats written (all by default).
    pub formats: Vec<OutputFormat>,
}

impl BuildOptions {
    pub fn new(out_dir: PathBuf, agent: PathBuf, cache: Cache) -> BuildOptions {
        BuildOptions {
            out_dir,
            agent,
            cache,
            progress: Progress::silent(),
            local_sources: BTreeMap::new(),
            lock: LockPolicy::Respect,
            formats: OutputFormat::ALL.to_vec(),
        }
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    pub image: PathBuf,
    pub manifest_file: PathBuf,
    pub manifest: BuildManifest,
}

/// Digest of every input: the recipe as parsed, each layer's definition and resolved sources, the agent.
fn recipe_digest(
    recipe: &Recipe,
    layers: &[LayerRecord],
    bootloader: &LayerRecord,
    agent_sha256: &str,
    signing_certificate: Option<String>,
) -> String {
    #[derive(Serialize)]
    struct Inputs<'a> {
        recipe: &'a crate::recipe::RecipeFile,
        layers: &'a [LayerRecord],
        bootloader: &'a LayerRecord,
        agent_sha256: &'a str,
        unattended_sha256: Option<String>,
        trusted_keys: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        config_keys: Vec<String>,
        /// sha256 of the Secure Boot db certificate whose key signs the EFI binaries.
        #[serde(skip_serializing_if = "Option::is_none")]
        signing_certificate: Option<String>,
    }
    let json = serde_json::to_vec(&Inputs {
        recipe: &recipe.def,
        layers,
        bootloader,
        agent_sha256,
        unattended_sha256: recipe.unattended.as_deref().map(sha256_bytes),
        trusted_keys: recipe
            .upgrades
            .trusted_keys
            .iter()
            .map(|k| k.to_file())
            .collect(),
        config_keys: recipe
            .upgrades
            .config_keys
            .iter()
            .map(|k| k.to_file())
            .collect(),
        signing_certificate,
    })
    .expect("serializable");
    sha256_bytes(&json)
}

/// A GUID derived from the recipe digest (UUID v5): same inputs, same GUIDs.
pub fn derived_guid(digest: &str, what: &str) -> Uuid {
    Uuid::new_v5(&GUID_NAMESPACE, format!("{what}:{digest}").as_bytes())
}

fn file_data(tree: &Tree, path: &str) -> Option<Vec<u8>> {
    match &tree.get(path)?.kind {
        Kind::File(d) => Some(d.to_vec()),
        _ => None,
    }
}

fn payload(format: &str, data: &[u8]) -> Payload {
    Payload {
        format: format.into(),
        size: data.len() as u64,
        sha256: sha256_bytes(data),
        verity: None,
    }
}

/// The image's contents before anything is written to disk.
pub struct Prepared {
    /// The lock to write beside the recipe when the build succeeds (none was there, or
    /// `--update`).
    pub new_lock: Option<LockFile>,
    pub digest: String,
    pub identity: SlotIdentity,
    pub records: Vec<LayerRecord>,
    pub boot_record: LayerRecord,
    /// The merged root filesystem of slot A.
    pub root: Tree,
    /// systemd-boot, signed when the image is.
    pub efi: Vec<u8>,
    /// systemd-stub, for the slot's unified kernel image.
    pub stub: Vec<u8>,
    /// What signs the unified kernel images (none: `secure_boot: unsigned`).
    pub signer: Option<p6os_efi::authenticode::Signer>,
    pub vmlinuz: Vec<u8>,
    pub initrd: Vec<u8>,
    pub release: String,
    pub agent_sha256: String,
    /// Every package in the slot: the SBOM of the manifest.
    pub packages: Vec<PackageRecord>,
}

/// Fetches and merges the layers and makes the kernel payloads: everything but the disk writes.
pub fn prepare(recipe: &Recipe, opts: &BuildOptions) -> Result<Prepared, BuildError> {
    let say = |s: &str| opts.progress.say(s);
    let def = &recipe.def;
    let agent = fs::read(&opts.agent).map_err(|source| BuildError::Agent {
        path: opts.agent.clone(),
        source,
    })?;
    let agent_sha256 = sha256_bytes(&agent);

    let layers::Layers {
        loaded,
        boot,
        new_lock,
    } = layers::resolve(recipe, opts)?;
    let efi =
        file_data(&boot.tree, BOOTLOADER_EFI).ok_or(BuildError::NoBootloader(BOOTLOADER_EFI))?;
    let stub =
        file_data(&boot.tree, uki::STUB_EFI).ok_or(BuildError::NoBootloader(uki::STUB_EFI))?;
    let signer = uki::signer(&recipe.signing, &say)?;
    let efi = uki::sign(signer.as_ref(), esp::BOOTLOADER, efi)?;

    let records: Vec<LayerRecord> = loaded.iter().map(layers::record).collect();
    let boot_record = layers::record(&boot);
    let digest = recipe_digest(
        recipe,
        &records,
        &boot_record,
        &agent_sha256,
        signer.as_ref().map(|s| sha256_bytes(s.certificate())),
    );
    let identity = SlotIdentity {
        name: def.name.clone(),
        version: def.version.clone(),
        arch: def.arch.as_str().into(),
        recipe_digest: digest.clone(),
        security_floor: recipe.upgrades.security_floor.clone(),
    };

    let images = root::read_images(recipe)?;
    let (root, packages) = root::assemble(recipe, &loaded, &agent, &identity, &records, images)?;
    let boot::Payloads {
        vmlinuz,
        initrd,
        release,
    } = boot::payloads(recipe, &loaded, &root, &agent, &say)?;
    Ok(Prepared {
        new_lock,
        digest,
        identity,
        records,
        boot_record,
        root,
        efi,
        stub,
        signer,
        vmlinuz,
        initrd,
        release,
        agent_sha256,
        packages,
    })
}

/// What `p6os lock` needs: the layers resolved (fetched into the cache) and the lock that
/// results, without the agent, the kernel payloads or the image.
pub fn resolve_lock(recipe: &Recipe, opts: &BuildOptions) -> Result<Option<LockFile>, BuildError> {
    Ok(layers::resolve(recipe, opts)?.new_lock)
}

/// Fetches, assembles and writes the image; on error nothing is left in the output directory.
pub fn build(recipe: &Recipe, opts: &BuildOptions) -> Result<Built, BuildError> {
    let started = Instant::now();
    let prepared = prepare(recipe, opts)?;
    write::write(recipe, prepared, opts, started)
}

/// Writes the lock a successful build resolved (a warning, not a failure, when the recipe's
/// directory is read-only).
pub fn save_lock(recipe: &Recipe, lock: Option<&LockFile>, say: &dyn Fn(&str)) {
    let Some(lock) = lock else { return };
    let path = lock::path_for(&recipe.file);
    match lock::write(&path, lock) {
        Ok(()) => say(&format!("wrote {}", path.display())),
        Err(e) => say(&format!("warning: {e}")),
    }
}
