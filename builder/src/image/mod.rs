//! `p6os build`: recipe -> layers -> slot filesystem, initramfs, ESP -> GPT disk image.
//!
//! Everything is computed first (trees, payloads, the partition layout and the ESP file list);
//! the image is then written to a temporary file in the output directory and renamed into place
//! only when complete, so a failed build leaves no image behind.

use p6os_config::health::{HEALTH_PATH, TRUSTED_KEYS_DIR};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use uuid::Uuid;

use p6os_layout::{esp, partition};

use crate::bootentry::{loader_conf, BootEntry, Counter, EntryName, Slot};
use crate::fat::{self, FatFile, FormatOptions};
use crate::fetch::{self, sha256_bytes, Cache, Resolved};
use crate::gpt::{Gpt, TYPE_ESP, TYPE_ROOT_X86_64, TYPE_VAR};
use crate::initramfs;
use crate::kmod::{self, KernelModules};
pub use crate::lock::LockPolicy;
use crate::lock::{self, LayerLock, LockFile, LockedSource};
use crate::manifest::{
    BuildManifest, ImageRecord, LayerRecord, PackageRecord, PartitionRecord, Payload, SlotIdentity,
};
use crate::outputs::{self, OutputFormat};
use crate::progress::Progress;
use crate::recipe::{Layer, Recipe};
use crate::rootfs;
use crate::statefs;
use crate::tree::{Entry, Kind, Tree};
use crate::units;

mod slot;

use slot::{copy_sparse, remove_stale_work_dirs};
pub use slot::{make_slot, SlotFiles};

/// Where the agent lives in every slot (tree paths are relative to the slot's root).
pub const AGENT_PATH: &str = in_tree(p6os_layout::slot::AGENT_PATH);
pub const SLOT_MANIFEST_PATH: &str = in_tree(p6os_layout::slot::MANIFEST_PATH);
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
    #[error("boot loader layer has no {BOOTLOADER_EFI}\n  hint: the layer should install Debian's systemd-boot-efi")]
    NoBootloader,
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

/// A layer read and merged from its sources.
struct LoadedLayer<'a> {
    layer: &'a Layer,
    tree: Tree,
    sources: Vec<Resolved>,
}

fn load_layer<'a>(
    layer: &'a Layer,
    ctx: &fetch::SourceContext,
    locked: Option<&LayerLock>,
) -> Result<LoadedLayer<'a>, BuildError> {
    let dir = layer.file.parent().unwrap_or(Path::new("."));
    let mut tree = Tree::new();
    let mut sources = Vec::new();
    for (i, s) in layer.def.sources.iter().enumerate() {
        let lock = locked.and_then(|l| l.sources.get(i));
        let (t, r) = fetch::load_source(ctx, dir, s, lock).map_err(|source| BuildError::Fetch {
            layer: layer.def.name.clone(),
            file: layer.file.display().to_string(),
            source: Box::new(source),
        })?;
        tree.merge(&t);
        sources.push(r);
    }
    Ok(LoadedLayer {
        layer,
        tree,
        sources,
    })
}

fn layer_lock(l: &LoadedLayer) -> LayerLock {
    LayerLock {
        definition: lock::definition_digest(l.layer),
        sources: l
            .layer
            .def
            .sources
            .iter()
            .zip(&l.sources)
            .map(|(s, r)| fetch::locked_form(s, r))
            .collect(),
    }
}

fn record(l: &LoadedLayer) -> LayerRecord {
    LayerRecord {
        role: l.layer.role,
        name: l.layer.def.name.clone(),
        file: l.layer.reference.clone(),
        sources: l.sources.clone(),
        sha256: fetch::tree_digest(&l.tree),
    }
}

/// Digest of every input: the recipe as parsed, each layer's definition and resolved sources, the agent.
fn recipe_digest(
    recipe: &Recipe,
    layers: &[LayerRecord],
    bootloader: &LayerRecord,
    agent_sha256: &str,
) -> String {
    #[derive(Serialize)]
    struct Inputs<'a> {
        recipe: &'a crate::recipe::RecipeFile,
        layers: &'a [LayerRecord],
        bootloader: &'a LayerRecord,
        agent_sha256: &'a str,
        unattended_sha256: Option<String>,
        trusted_keys: Vec<String>,
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
    pub efi: Vec<u8>,
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

    let specs: Vec<&str> = recipe
        .layers
        .iter()
        .chain(std::iter::once(&recipe.bootloader))
        .flat_map(|l| &l.def.sources)
        .flat_map(|s| match s {
            crate::recipe::Source::Debian { packages } => {
                packages.iter().map(String::as_str).collect()
            }
            _ => Vec::new(),
        })
        .collect();
    let lockfile = lock::to_use(recipe, opts.lock)?;
    // With a lock, the exact versions are what apt is asked for.
    let locked_specs: Vec<String> = lockfile
        .iter()
        .flat_map(|l| l.layers.values())
        .flat_map(|l| &l.sources)
        .flat_map(|s| match s {
            LockedSource::Debian { packages } => packages
                .iter()
                .map(|p| format!("{}={}", p.name, p.version))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    let specs: Vec<&str> = specs
        .into_iter()
        .chain(locked_specs.iter().map(String::as_str))
        .collect();
    let apt = fetch::AptIndex::resolve_cached(&opts.cache, &specs);
    let ctx = fetch::SourceContext {
        cache: &opts.cache,
        apt: &apt,
        local: &opts.local_sources,
        say: &say,
        meter: &|task, done, total| opts.progress.meter(task, done, total),
    };
    let locked = |l: &Layer| lockfile.as_ref().and_then(|f| f.layers.get(&l.reference));
    let mut loaded = Vec::new();
    for layer in &recipe.layers {
        say(&format!("layer {} ({})", layer.def.name, layer.reference));
        loaded.push(load_layer(layer, &ctx, locked(layer))?);
    }
    say(&format!(
        "layer {} ({})",
        recipe.bootloader.def.name, recipe.bootloader.reference
    ));
    let boot = load_layer(&recipe.bootloader, &ctx, locked(&recipe.bootloader))?;
    // Written by the caller once the build succeeded: a failed build leaves no lock behind.
    let new_lock = (lockfile.is_none() && opts.lock != LockPolicy::Ignore).then(|| LockFile {
        version: lock::LOCK_VERSION,
        layers: loaded
            .iter()
            .chain(std::iter::once(&boot))
            .map(|l| (l.layer.reference.clone(), layer_lock(l)))
            .collect(),
    });
    let efi = file_data(&boot.tree, BOOTLOADER_EFI).ok_or(BuildError::NoBootloader)?;

    let records: Vec<LayerRecord> = loaded.iter().map(record).collect();
    let boot_record = record(&boot);
    let digest = recipe_digest(recipe, &records, &boot_record, &agent_sha256);
    let identity = SlotIdentity {
        name: def.name.clone(),
        version: def.version.clone(),
        arch: def.arch.as_str().into(),
        recipe_digest: digest.clone(),
    };

    // Root filesystem: merged layers plus the agent and the slot's identity.
    let mut root = Tree::new();
    for l in &loaded {
        root.merge(&l.tree);
    }
    // Air-gapped content: OCI archives by digest, and the list the import unit reads.
    let mut images = Vec::new();
    let recipe_dir = recipe.file.parent().unwrap_or(Path::new("."));
    for image in &def.images {
        let file = recipe_dir.join(&image.file);
        let data = fs::read(&file).map_err(io_at(&file))?;
        let actual = sha256_bytes(&data);
        if actual != image.sha256 {
            return Err(BuildError::OciArchive {
                file,
                expected: image.sha256.clone(),
                actual,
            });
        }
        let name = format!("{actual}.tar");
        images.push(serde_json::json!({ "file": name, "sha256": actual, "source": image.file }));
        root.insert(&format!("{IMAGES_DIR}/{name}"), Entry::file(data, 0o644));
        if root.get(K3S_BINARY).is_some() {
            // k3s imports what lies in its images directory at every start.
            root.insert(
                &format!("{K3S_IMAGES_DIR}/{name}"),
                Entry::symlink(&format!("/{IMAGES_DIR}/{name}")),
            );
        }
    }
    let containerd = root.get(CONTAINERD_BINARY).is_some();
    if !images.is_empty() {
        if !containerd && root.get(K3S_BINARY).is_none() {
            return Err(BuildError::NoRuntime);
        }
        let list = serde_json::to_vec_pretty(&images).expect("serializable");
        root.insert(IMAGES_LIST, Entry::file(list, 0o644));
    }
    if units::is_systemd(&root) {
        // k3s imports its images directory itself; the unit is for a plain containerd.
        units::install(&mut root, !images.is_empty() && containerd);
    }
    let packages = crate::manifest::sbom(&root, &records);
    root.insert(AGENT_PATH, Entry::file(agent.clone(), 0o755));
    let identity_json = serde_json::to_vec_pretty(&identity).expect("serializable");
    root.insert(SLOT_MANIFEST_PATH, Entry::file(identity_json, 0o644));
    if let Some(text) = &recipe.unattended {
        root.insert(BAKED_UNATTENDED_PATH, Entry::file(text.clone(), 0o600));
    }
    let health = serde_json::to_vec_pretty(&recipe.upgrades.health).expect("serializable");
    root.insert(&HEALTH_PATH[1..], Entry::file(health, 0o644));
    for key in &recipe.upgrades.trusted_keys {
        root.insert(
            &format!("{}/{}.pub", &TRUSTED_KEYS_DIR[1..], key.id()),
            Entry::file(key.to_file().into_bytes(), 0o644),
        );
    }

    // Kernel and initramfs.
    let kernel_layer = loaded
        .iter()
        .find(|l| std::ptr::eq(l.layer, recipe.kernel()))
        .expect("checked recipes have a kernel");
    let release = kmod::kernel_release(&kernel_layer.tree)?;
    let vmlinuz = file_data(&kernel_layer.tree, &format!("boot/vmlinuz-{release}"))
        .ok_or(kmod::KmodError::NoKernel)?;
    let modules = KernelModules::index(&kernel_layer.tree)?;
    let wanted = kmod::initramfs_modules(def.rootfs);
    let module_paths = modules.resolve(&wanted)?;
    let mut initrd = Vec::new();
    initramfs::write_cpio(
        &initramfs::tree(&agent, &kernel_layer.tree, &module_paths),
        &mut initrd,
    )
    .expect("writing to memory");
    say(&format!(
        "kernel {release}: {} initramfs modules, initramfs {} KiB",
        module_paths.len(),
        initrd.len() / 1024
    ));
    Ok(Prepared {
        new_lock,
        digest,
        identity,
        records,
        boot_record,
        root,
        efi,
        vmlinuz,
        initrd,
        release,
        agent_sha256,
        packages,
    })
}

/// Fetches, assembles and writes the image; on error nothing is left in the output directory.
pub fn build(recipe: &Recipe, opts: &BuildOptions) -> Result<Built, BuildError> {
    let started = Instant::now();
    let prepared = prepare(recipe, opts)?;
    write(recipe, prepared, opts, started)
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

fn write(
    recipe: &Recipe,
    prepared: Prepared,
    opts: &BuildOptions,
    started: Instant,
) -> Result<Built, BuildError> {
    let say = |s: &str| opts.progress.say(s);
    let def = &recipe.def;
    let Prepared {
        new_lock,
        digest,
        identity,
        records,
        boot_record,
        root,
        efi,
        vmlinuz,
        initrd,
        release,
        agent_sha256,
        packages,
    } = prepared;

    // Partition layout.
    let p = &def.partitions;
    let guid = |what: &str| derived_guid(&digest, what);
    let gpt = Gpt::layout(
        guid("disk"),
        &[
            (
                partition::ESP_LABEL,
                TYPE_ESP,
                guid(partition::ESP_LABEL),
                p.esp.bytes(),
            ),
            (
                partition::ROOT_A_LABEL,
                TYPE_ROOT_X86_64,
                guid(partition::ROOT_A_LABEL),
                p.slot.bytes(),
            ),
            (
                partition::ROOT_B_LABEL,
                TYPE_ROOT_X86_64,
                guid(partition::ROOT_B_LABEL),
                p.slot.bytes(),
            ),
            (
                partition::STATE_LABEL,
                TYPE_VAR,
                guid(partition::STATE_LABEL),
                p.state.bytes(),
            ),
        ],
    );

    fs::create_dir_all(&opts.out_dir).map_err(io_at(&opts.out_dir))?;
    let base = format!("{}-{}", def.name, def.version);
    let image_path = opts.out_dir.join(format!("{base}.img"));
    let manifest_path = opts.out_dir.join(format!("{base}.manifest.json"));
    remove_stale_work_dirs(&opts.out_dir, &base);
    let work = tempfile::Builder::new()
        .prefix(&format!(".{base}."))
        .tempdir_in(&opts.out_dir)
        .map_err(io_at(&opts.out_dir))?;

    let SlotFiles {
        rootfs_path,
        manifest: slot_manifest,
    } = make_slot(
        def,
        &root,
        identity,
        (&vmlinuz, &initrd),
        release,
        &agent_sha256,
        work.path(),
        &say,
    )?;
    let slot_json = serde_json::to_vec_pretty(&slot_manifest).expect("serializable");
    let entry = BootEntry::new(
        &def.name,
        &def.version,
        Slot::A,
        def.rootfs,
        &def.boot.kernel_args,
    );
    let entry_name = EntryName::new(&def.version, Slot::A, Counter::Blessed);
    let esp_files = vec![
        FatFile {
            path: esp::BOOTLOADER.into(),
            data: efi,
        },
        FatFile {
            path: esp::LOADER_CONF.into(),
            data: loader_conf().into_bytes(),
        },
        FatFile {
            path: esp::entry_path(&entry_name.file_name()),
            data: entry.render().into_bytes(),
        },
        FatFile {
            path: esp::slot_file(Slot::A, esp::KERNEL_FILE),
            data: vmlinuz,
        },
        FatFile {
            path: esp::slot_file(Slot::A, esp::INITRD_FILE),
            data: initrd,
        },
        FatFile {
            path: esp::slot_file(Slot::A, esp::MANIFEST_FILE),
            data: slot_json,
        },
    ];

    // Write the image: sparse file, GPT, ESP, slot A, state.
    say(&format!(
        "writing {} ({} MiB)",
        image_path.display(),
        gpt.size_bytes() >> 20
    ));
    let tmp_image = work.path().join("image.img");
    let mut f = fs::File::create(&tmp_image).map_err(io_at(&tmp_image))?;
    f.set_len(gpt.size_bytes()).map_err(io_at(&tmp_image))?;
    crate::gpt::write(&gpt, &mut f).map_err(io_at(&tmp_image))?;
    let esp = gpt
        .by_label(partition::ESP_LABEL)
        .expect("layout has an ESP");
    let volume_id = u32::from_le_bytes(
        derived_guid(&digest, "esp-volume-id").as_bytes()[..4]
            .try_into()
            .expect("4 bytes"),
    );
    fat::format(
        &mut f,
        esp.offset(),
        esp.size(),
        &FormatOptions { volume_id },
        &esp_files,
    )?;
    let slot_a = gpt
        .by_label(Slot::A.partlabel())
        .expect("layout has slot a");
    copy_sparse(&rootfs_path, &mut f, slot_a.offset(), &|done, total| {
        opts.progress.meter("writing slot a", done, total)
    })
    .map_err(io_at(&tmp_image))?;
    f.sync_all().map_err(io_at(&tmp_image))?;
    drop(f);
    let state = gpt
        .by_label(partition::STATE_LABEL)
        .expect("layout has state");
    statefs::format(
        &tmp_image,
        state.offset(),
        state.size(),
        derived_guid(&digest, "state-fs"),
    )?;

    // The other formats are made from the finished raw image, in the work directory. The raw
    // output's record carries its sha256; only when it is not kept is the image hashed here.
    let kept_raw = opts.formats.contains(&OutputFormat::Raw);
    let unkept_sha256 = match kept_raw {
        true => None,
        false => Some(fetch::sha256_file(&tmp_image).map_err(io_at(&tmp_image))?),
    };
    let work_image = work.path().join(format!("{base}.img"));
    fs::rename(&tmp_image, &work_image).map_err(io_at(&work_image))?;
    let outputs = outputs::write_outputs(&work_image, &base, &opts.formats, &say)?;
    let image_sha256 = unkept_sha256
        .or_else(|| {
            outputs
                .iter()
                .find(|o| o.format == OutputFormat::Raw)
                .map(|o| o.sha256.clone())
        })
        .expect("the raw output is listed when kept");
    let manifest = BuildManifest {
        name: def.name.clone(),
        version: def.version.clone(),
        arch: def.arch.as_str().into(),
        recipe_digest: digest.clone(),
        layers: records,
        bootloader: boot_record,
        disk_guid: gpt.disk_guid.to_string(),
        partitions: gpt.partitions.iter().map(PartitionRecord::from).collect(),
        slot_a: slot_manifest,
        image: ImageRecord {
            file: image_path
                .file_name()
                .expect("has a name")
                .to_string_lossy()
                .into_owned(),
            size: gpt.size_bytes(),
            sha256: image_sha256,
        },
        outputs: outputs.clone(),
        packages,
    };
    let mut json = serde_json::to_vec_pretty(&manifest).expect("serializable");
    json.push(b'\n');
    let tmp_manifest = work.path().join("manifest.json");
    fs::write(&tmp_manifest, json).map_err(io_at(&tmp_manifest))?;
    // Manifest first: an image never stands without the manifest that describes it; the
    // checksum list last, once everything it lists is in place.
    fs::rename(&tmp_manifest, &manifest_path).map_err(io_at(&manifest_path))?;
    for o in &outputs {
        let to = opts.out_dir.join(&o.file);
        fs::rename(work.path().join(&o.file), &to).map_err(io_at(&to))?;
    }
    let sums = opts.out_dir.join(format!("{base}.{}", outputs::SHA256SUMS));
    fs::rename(work.path().join(outputs::SHA256SUMS), &sums).map_err(io_at(&sums))?;
    // Outputs of formats not chosen this time would be older than the manifest: removed.
    for format in OutputFormat::ALL {
        if !opts.formats.contains(&format) {
            let stale = opts.out_dir.join(format!("{base}.{}", format.extension()));
            let _ = fs::remove_file(stale);
        }
    }
    save_lock(recipe, new_lock.as_ref(), &say);
    say(&format!(
        "done in {:.1} s: {} (sha256 {})",
        started.elapsed().as_secs_f64(),
        image_path.display(),
        manifest.image.sha256
    ));
    Ok(Built {
        image: image_path,
        manifest_file: manifest_path,
        manifest,
    })
}
