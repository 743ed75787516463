//! Recipes (`recipes/*.yaml`) and the layers they compose (`images/**.yaml`).
//!
//! User-facing types deny unknown fields and are checked into [`Recipe`] before anything runs.
//! Layer references are paths relative to the file that names them.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod layer;
pub mod upgrades;

pub use layer::load_layer;

use crate::diag::Diagnostics;
use crate::size::ByteSize;
use crate::yamlcheck::{self, diagnostic_at, lenient, Loaded, Seg};

/// A recipe: what goes into one appliance image.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipeFile {
    /// Image name: lowercase letters, digits and dashes; used in file names.
    pub name: String,
    /// Image version, e.g. `1.0.0`; used in file names and as the boot entry version.
    pub version: String,
    /// CPU architecture; only `x86_64` for now.
    pub arch: Arch,
    /// Base OS layer file (path relative to this recipe).
    pub base: String,
    /// Kernel layer file: must contain `boot/vmlinuz-<kver>` and `lib/modules/<kver>/`.
    pub kernel: String,
    /// Where the kernel layer's modules go: `all` (the default) keeps its whole
    /// `lib/modules` in the slot, for a base that loads modules after boot (udev); `initramfs`
    /// leaves them out of the slot: only the initramfs classes, loaded at boot, exist (a base
    /// without a module loader, such as busybox; keeps the slot and bundles small).
    #[serde(default)]
    pub kernel_modules: KernelModulesIn,
    /// Boot loader layer file: must contain systemd-boot's `systemd-bootx64.efi`.
    pub bootloader: String,
    /// Kubernetes distro layer file, if any.
    #[serde(default)]
    pub kubernetes: Option<String>,
    /// Extra layer files, applied in order after base, kernel and kubernetes.
    #[serde(default)]
    pub layers: Vec<String>,
    pub partitions: Partitions,
    /// Root filesystem format of the read-only slots.
    pub rootfs: RootFsFormat,
    #[serde(default)]
    pub boot: BootOptions,
    /// A default unattended.yaml baked into the slot (path relative to this recipe), used
    /// when the device finds none of its own (kernel argument, configuration drive, ESP).
    /// Checked like `p6os validate unattended`.
    #[serde(default)]
    pub unattended: Option<String>,
    /// Update bundles: trusted keys and the health checks that gate a new slot.
    #[serde(default)]
    pub upgrades: upgrades::Upgrades,
    /// OCI image archives (`docker save` / `skopeo copy oci-archive:` tar files) placed in the
    /// image and imported into the container runtime on first boot, once: air-gapped sites.
    #[serde(default)]
    pub images: Vec<OciArchive>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OciArchive {
    /// Path relative to the recipe file.
    pub file: String,
    /// Hex sha256 of the archive; the build stops when the file does not match.
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    X86_64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KernelModulesIn {
    /// The slot and the initramfs.
    #[default]
    All,
    /// Only the initramfs (its module classes).
    Initramfs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RootFsFormat {
    Squashfs,
    Erofs,
}

impl RootFsFormat {
    pub fn as_str(self) -> &'static str {
        self.layout().as_str()
    }

    /// The on-disk contract's name for it.
    pub fn layout(self) -> p6os_layout::RootFs {
        match self {
            RootFsFormat::Squashfs => p6os_layout::RootFs::Squashfs,
            RootFsFormat::Erofs => p6os_layout::RootFs::Erofs,
        }
    }
}

/// Partition sizes, e.g. `64MiB`, `1GiB`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Partitions {
    /// EFI system partition (FAT32, at least 34MiB): boot loader and one kernel+initrd per slot.
    pub esp: ByteSize,
    /// Each of the two root slots.
    pub slot: ByteSize,
    /// Persistent state (ext4) in the image; grows to fill the disk on first boot.
    pub state: ByteSize,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BootOptions {
    /// Tries a new slot gets before the boot loader falls back (boot counting). Used by upgrades;
    /// the factory-installed slot A of a fresh image is blessed (no counter).
    #[serde(default = "default_tries")]
    pub tries: u8,
    /// Extra kernel command line arguments.
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// More initramfs module classes, added to the kernel layer's `initramfs` (same shape:
    /// class name -> module names; dependencies are added by the builder). A class name the
    /// kernel layer already uses is an error.
    #[serde(default)]
    pub initramfs: ModuleClasses,
    /// Protect the slots with dm-verity (a hash tree after each slot's filesystem, its root
    /// hash on the kernel command line): a changed byte is a read error, not a changed system.
    /// On by default.
    #[serde(default = "default_verity")]
    pub verity: bool,
    /// Who signs the boot loader and the unified kernel images for UEFI Secure Boot:
    /// `development` (the default: development keys made on first use, outside the
    /// repository, with a warning), `{keys: DIR}` (a directory from `p6os keygen
    /// --secure-boot`, relative to the recipe), or `unsigned`.
    #[serde(default)]
    pub secure_boot: SecureBoot,
}

/// The recipe's `boot.secure_boot`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum SecureBoot {
    Mode(SigningMode),
    Keys {
        /// A directory from `p6os keygen --secure-boot` (`db.key`, `db.crt`), relative to the
        /// recipe.
        keys: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SigningMode {
    /// Development keys made on first use (`$P6OS_DEV_KEYS`, else
    /// `~/.local/share/p6os/dev-keys/secure-boot`): for machines enrolled for development only.
    Development,
    /// No signatures: boots only with Secure Boot off.
    Unsigned,
}

impl Default for SecureBoot {
    fn default() -> Self {
        SecureBoot::Mode(SigningMode::Development)
    }
}

/// The checked `boot.secure_boot`: what signs this recipe's EFI binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signing {
    Development,
    Unsigned,
    /// A key directory (checked: `db.key` and `db.crt` load and belong together).
    Keys(PathBuf),
}

fn default_verity() -> bool {
    true
}

/// Initramfs module classes: a class name (`sata`, `intel-nic`) -> kernel module names
/// (`ahci`, `sd_mod`). The agent loads every listed module with its dependencies at boot.
pub type ModuleClasses = std::collections::BTreeMap<String, Vec<String>>;

fn default_tries() -> u8 {
    3
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            tries: default_tries(),
            kernel_args: Vec::new(),
            initramfs: ModuleClasses::new(),
            verity: default_verity(),
            secure_boot: SecureBoot::default(),
        }
    }
}

/// A layer file under `images/`: named sources merged in order into one tree.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LayerFile {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub sources: Vec<Source>,
    /// Kernel layers only: the module classes the initramfs loads at boot, for the hardware
    /// the boot disk and the network may be on (class name -> module names). The filesystems
    /// of the on-disk contract are always loaded; firmware the modules name is taken from
    /// the image's `lib/firmware` (packages a layer lists).
    #[serde(default)]
    pub initramfs: ModuleClasses,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    /// Debian packages fetched through the host's apt (`apt-get download`), unpacked in Rust.
    Debian {
        /// `name` or `name=version`.
        packages: Vec<String>,
    },
    /// A tar archive (plain, gzip, xz or zstd), from a local path or a URL.
    Tarball {
        #[serde(default)]
        path: Option<String>,
        #[serde(default)]
        url: Option<String>,
        /// Hex sha256 of the file; mandatory with `url`.
        #[serde(default)]
        sha256: Option<String>,
    },
    /// A directory on the build host; owners become root, world-readable modes are normalised
    /// (private ones kept), times fixed.
    Dir {
        path: String,
        /// Where the directory's contents go in the image (default `/`).
        #[serde(default)]
        target: Option<String>,
    },
    /// Entries written in the layer file itself: directories, symlinks, small files, device nodes.
    Inline { entries: Vec<InlineEntry> },
    /// A Debian system bootstrapped with `mmdebstrap` from the host's apt sources for `suite`
    /// (maintainer scripts run, so users, groups and units are set up as Debian does). Needs
    /// root (or unprivileged user namespaces). The result is cached, keyed by its inputs.
    Mmdebstrap {
        /// Debian suite, e.g. `bookworm`; the host's apt sources for it are used.
        suite: String,
        /// mmdebstrap variant (default `minbase`).
        #[serde(default)]
        variant: Variant,
        /// Packages installed on top of the variant (`name` or `name=version`).
        #[serde(default)]
        packages: Vec<String>,
    },
    /// One file fetched by URL (pinned by sha256) and placed at `dest`. `name` lets a build
    /// take a local copy instead: `p6os build --layer-source NAME=PATH`.
    File {
        name: String,
        url: String,
        /// Hex sha256 of the file (mandatory).
        sha256: String,
        /// Absolute path in the image.
        dest: String,
        /// Octal permission bits (default `"0644"`).
        #[serde(default)]
        mode: Option<String>,
    },
}

/// mmdebstrap's package selection before `packages` are added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Essential,
    Required,
    #[default]
    Minbase,
    Apt,
    Important,
    Standard,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Essential => "essential",
            Variant::Required => "required",
            Variant::Minbase => "minbase",
            Variant::Apt => "apt",
            Variant::Important => "important",
            Variant::Standard => "standard",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InlineEntry {
    /// Absolute path in the image.
    pub path: String,
    pub kind: InlineKind,
    /// Symlink target (kind `symlink`).
    #[serde(default)]
    pub target: Option<String>,
    /// File content (kind `file`).
    #[serde(default)]
    pub content: Option<String>,
    /// Octal permission bits, e.g. `"0755"`.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default, deserialize_with = "lenient::u32")]
    pub uid: u32,
    #[serde(default, deserialize_with = "lenient::u32")]
    pub gid: u32,
    /// Device numbers (kinds `char` and `block`).
    #[serde(default, deserialize_with = "lenient::opt_u32")]
    pub major: Option<u32>,
    #[serde(default, deserialize_with = "lenient::opt_u32")]
    pub minor: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InlineKind {
    Dir,
    File,
    Symlink,
    Char,
    Block,
}

/// Which part of the image a layer plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerRole {
    Base,
    Kernel,
    Bootloader,
    Kubernetes,
    Extra,
}

/// A layer file, loaded and checked.
#[derive(Debug, Clone)]
pub struct Layer {
    pub role: LayerRole,
    /// The file it came from.
    pub file: PathBuf,
    /// Its path as written in the recipe (stable across checkouts; used in digests and manifests).
    pub reference: String,
    pub def: LayerFile,
}

/// A checked recipe: every referenced layer exists and parsed, sizes are sane.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub file: PathBuf,
    pub def: RecipeFile,
    /// Base, kernel, kubernetes (if any), then extra layers: the order they are merged in.
    pub layers: Vec<Layer>,
    pub bootloader: Layer,
    /// The checked default unattended.yaml, if the recipe names one.
    pub unattended: Option<Vec<u8>>,
    pub upgrades: upgrades::CheckedUpgrades,
    pub signing: Signing,
}

impl Recipe {
    pub fn kernel(&self) -> &Layer {
        self.layers
            .iter()
            .find(|l| l.role == LayerRole::Kernel)
            .expect("checked recipes have a kernel")
    }

    /// The initramfs module classes: the kernel layer's, then the recipe's own.
    pub fn module_classes(&self) -> impl Iterator<Item = (&String, &Vec<String>)> {
        self.kernel()
            .def
            .initramfs
            .iter()
            .chain(self.def.boot.initramfs.iter())
    }
}

/// The largest default unattended.yaml a recipe may bake in (the agent reads at most 1 MiB).
const MAX_UNATTENDED: u64 = 1 << 20;

/// The smallest ESP that still holds FAT32's minimum cluster count with 512-byte clusters.
pub const MIN_ESP: u64 = 34 * 1024 * 1024;
pub const MIN_SLOT: u64 = 8 * 1024 * 1024;
pub const MIN_STATE: u64 = 16 * 1024 * 1024;

/// Loads and checks a recipe and all its layer files, reporting every problem at once.
pub fn load(path: &Path) -> Result<Recipe, Diagnostics> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diagnostics::file_error(path, format!("cannot read recipe: {e}")))?;
    let Loaded { value: def, tree } = match yamlcheck::load::<RecipeFile>(path, &text) {
        Ok(loaded) => loaded,
        Err(mut diags) => {
            // Report missing layer files together with the shape problems.
            if let Ok(tree) = yamlcheck::parse(path, &text) {
                diags.extend(missing_layer_files(path, &tree));
            }
            diags.sort();
            return Err(diags);
        }
    };
    let mut diags = Diagnostics::default();
    let at = |field: &[Seg], msg: String, hint: Option<String>| {
        diagnostic_at(path, &tree, field, msg, hint)
    };
    let key = |k: &str| Seg::Key(k.to_string());

    if !valid_name(&def.name) {
        diags.push(at(
            &[key("name")],
            format!("invalid name `{}`", def.name),
            Some("use lowercase letters, digits and dashes, starting with a letter".into()),
        ));
    }
    if let Err(e) = p6os_layout::version::check(&def.version) {
        diags.push(at(
            &[key("version")],
            format!("invalid version `{}`: {e}", def.version),
            Some(
                "use letters, digits and . _ + ~ -, starting with a letter or a digit, e.g. 1.0.0"
                    .into(),
            ),
        ));
    }
    let sizes = [
        ("esp", def.partitions.esp, MIN_ESP),
        ("slot", def.partitions.slot, MIN_SLOT),
        ("state", def.partitions.state, MIN_STATE),
    ];
    for (field, size, min) in sizes {
        if size.bytes() < min {
            diags.push(at(
                &[key("partitions"), key(field)],
                format!("{size} is too small"),
                Some(format!("at least {}", ByteSize(min))),
            ));
        } else if size.bytes() % (1024 * 1024) != 0 {
            diags.push(at(
                &[key("partitions"), key(field)],
                format!("{size} is not a whole number of MiB"),
                Some("partitions are aligned to 1MiB".into()),
            ));
        }
    }
    if def.boot.tries == 0 {
        diags.push(at(
            &[key("boot"), key("tries")],
            "must be at least 1".into(),
            None,
        ));
    }
    for (i, arg) in def.boot.kernel_args.iter().enumerate() {
        // The builder's own: the kernel takes the last of a repeated parameter, so one here
        // would override the slot's (its verity root hash, say).
        let reserved = ["p6os.slot", "p6os.verity", "rootfstype", "root"];
        if arg.is_empty() || arg.chars().any(char::is_whitespace) {
            diags.push(at(
                &[key("boot"), key("kernel_args"), Seg::Index(i)],
                format!("invalid argument `{arg}`"),
                Some("one argument per list item, without spaces".into()),
            ));
        } else if let Some(r) = reserved.iter().find(|r| arg.split('=').next() == Some(**r)) {
            diags.push(at(
                &[key("boot"), key("kernel_args"), Seg::Index(i)],
                format!("`{r}=` is set by the builder"),
                None,
            ));
        }
    }
    // A signed kernel image would vouch for a root that nothing checks.
    if !def.boot.verity && def.boot.secure_boot != SecureBoot::Mode(SigningMode::Unsigned) {
        diags.push(at(
            &[key("boot"), key("verity")],
            "a signed image needs verity: Secure Boot would check the kernel but not the slot"
                .into(),
            Some("keep `verity: true`, or also set `secure_boot: unsigned`".into()),
        ));
    }

    let dir = path.parent().unwrap_or(Path::new("."));
    let mut layers = Vec::new();
    let mut refs: Vec<(LayerRole, Vec<Seg>, &String)> = vec![
        (LayerRole::Base, vec![key("base")], &def.base),
        (LayerRole::Kernel, vec![key("kernel")], &def.kernel),
    ];
    if let Some(k) = &def.kubernetes {
        refs.push((LayerRole::Kubernetes, vec![key("kubernetes")], k));
    }
    for (i, l) in def.layers.iter().enumerate() {
        refs.push((LayerRole::Extra, vec![key("layers"), Seg::Index(i)], l));
    }
    refs.push((
        LayerRole::Bootloader,
        vec![key("bootloader")],
        &def.bootloader,
    ));
    let mut bootloader = None;
    for (role, field, reference) in refs {
        let file = dir.join(reference);
        if !file.is_file() {
            diags.push(missing_layer(path, &tree, &field, &file));
            continue;
        }
        match load_layer(&file) {
            Ok(def) => {
                let layer = Layer {
                    role,
                    file,
                    reference: reference.clone(),
                    def,
                };
                if role != LayerRole::Kernel && !layer.def.initramfs.is_empty() {
                    diags.push(at(
                        &field,
                        format!(
                            "layer `{reference}` names initramfs module classes, but only the \
                             kernel layer may"
                        ),
                        Some(
                            "move them to the kernel layer or to this recipe's `boot.initramfs`"
                                .into(),
                        ),
                    ));
                }
                if role == LayerRole::Bootloader {
                    bootloader = Some(layer);
                } else {
                    layers.push(layer);
                }
            }
            Err(e) => diags.extend(e),
        }
    }
    let mut unattended = None;
    if let Some(reference) = &def.unattended {
        let file = dir.join(reference);
        // A regular file of sane size only: not /dev/zero, a FIFO or a directory.
        let text = match std::fs::metadata(&file) {
            Ok(m) if !m.is_file() => Err("not a regular file".to_string()),
            Ok(m) if m.len() > MAX_UNATTENDED => {
                Err(format!("larger than {} KiB", MAX_UNATTENDED / 1024))
            }
            Ok(_) => std::fs::read_to_string(&file).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match text {
            Err(e) => diags.push(at(
                &[key("unattended")],
                format!("cannot read `{}`: {e}", file.display()),
                Some("a file, relative to the recipe file".into()),
            )),
            Ok(text) => match p6os_config::unattended::load(&file, &text) {
                Ok(_) => unattended = Some(text.into_bytes()),
                Err(e) => diags.extend(e),
            },
        }
    }
    for (field, msg, hint) in layer::module_class_problems(&def.boot.initramfs) {
        let mut f = vec![key("boot"), key("initramfs")];
        f.extend(field);
        diags.push(at(&f, msg, hint.map(str::to_string)));
    }
    if let Some(kernel) = layers.iter().find(|l| l.role == LayerRole::Kernel) {
        for class in def.boot.initramfs.keys() {
            if kernel.def.initramfs.contains_key(class) {
                diags.push(at(
                    &[key("boot"), key("initramfs"), key(class)],
                    format!(
                        "the kernel layer `{}` already has class `{class}`",
                        def.kernel
                    ),
                    Some("give the recipe's class another name".into()),
                ));
            }
        }
    }
    let upgrades = upgrades::check(path, &tree, dir, &def.upgrades, &def.version, &mut diags);
    let signing = match &def.boot.secure_boot {
        SecureBoot::Mode(SigningMode::Development) => Signing::Development,
        SecureBoot::Mode(SigningMode::Unsigned) => Signing::Unsigned,
        SecureBoot::Keys { keys } => {
            let keys = dir.join(keys);
            if let Err(e) = crate::secureboot::load_signer(&keys) {
                diags.push(at(
                    &[key("boot"), key("secure_boot"), key("keys")],
                    format!("cannot sign with `{}`: {e}", keys.display()),
                    Some("make keys with `p6os keygen --secure-boot --out DIR`; paths are relative to the recipe".into()),
                ));
            }
            Signing::Keys(keys)
        }
    };
    for (i, image) in def.images.iter().enumerate() {
        let field = |k: &str| [key("images"), Seg::Index(i), key(k)];
        if !dir.join(&image.file).is_file() {
            diags.push(at(
                &field("file"),
                format!("file `{}` not found", dir.join(&image.file).display()),
                Some("paths are relative to the recipe file".into()),
            ));
        }
        if !is_sha256(&image.sha256) {
            diags.push(at(
                &field("sha256"),
                format!("`{}` is not a sha256", image.sha256),
                Some("64 lowercase hex digits (sha256sum FILE)".into()),
            ));
        }
    }
    match bootloader {
        Some(bootloader) if diags.is_empty() => Ok(Recipe {
            file: path.to_path_buf(),
            def,
            layers,
            bootloader,
            unattended,
            upgrades,
            signing,
        }),
        _ => {
            diags.sort();
            Err(diags)
        }
    }
}

fn missing_layer(
    recipe: &Path,
    tree: &marked_yaml::Node,
    field: &[Seg],
    file: &Path,
) -> crate::diag::Diagnostic {
    diagnostic_at(
        recipe,
        tree,
        field,
        format!("layer file `{}` not found", file.display()),
        Some(
            "layer paths are relative to the recipe file, e.g. ../images/base/busybox.yaml".into(),
        ),
    )
}

/// Layer references that name no file, read straight from the YAML tree (for recipes whose
/// shape is wrong, so the typed recipe does not exist).
fn missing_layer_files(recipe: &Path, tree: &marked_yaml::Node) -> Diagnostics {
    let dir = recipe.parent().unwrap_or(Path::new("."));
    let mut diags = Diagnostics::default();
    let Some(map) = tree.as_mapping() else {
        return diags;
    };
    let mut check = |field: Vec<Seg>, node: &marked_yaml::Node| {
        if let Some(s) = node.as_scalar() {
            let file = dir.join(s.as_str());
            if !s.as_str().is_empty() && !file.is_file() {
                diags.push(missing_layer(recipe, tree, &field, &file));
            }
        }
    };
    for key in ["base", "kernel", "bootloader", "kubernetes"] {
        if let Some(node) = map.get_node(key) {
            check(vec![Seg::Key(key.into())], node);
        }
    }
    if let Some(layers) = map.get_sequence("layers") {
        for (i, node) in layers.iter().enumerate() {
            check(vec![Seg::Key("layers".into()), Seg::Index(i)], node);
        }
    }
    diags
}

pub(crate) fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

pub(crate) fn clean_absolute(p: &str) -> bool {
    p.starts_with('/') && p != "/" && !p.split('/').any(|c| c == ".." || c == ".")
}

pub(crate) fn valid_name(s: &str) -> bool {
    s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The JSON Schema users can point their editor at.
pub fn recipe_schema() -> serde_json::Value {
    schemars::schema_for!(RecipeFile).to_value()
}

pub fn layer_schema() -> serde_json::Value {
    schemars::schema_for!(LayerFile).to_value()
}
