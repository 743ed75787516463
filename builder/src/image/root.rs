//! The slot's root filesystem as a value: the merged layers, preloaded container images, the
//! agent's units, the agent, the slot's identity, the baked site configuration, health checks
//! and trusted keys. Pure but for [`read_images`], which reads and checks the OCI archives the
//! recipe names.

use std::fs;
use std::path::Path;

use p6os_config::health::{HEALTH_PATH, TRUSTED_KEYS_DIR};

use super::layers::LoadedLayer;
use super::{
    io_at, BuildError, AGENT_PATH, BAKED_UNATTENDED_PATH, CLOCK_EPOCH_PATH, CONTAINERD_BINARY,
    IMAGES_DIR, IMAGES_LIST, K3S_BINARY, K3S_IMAGES_DIR, SLOT_MANIFEST_PATH,
};
use crate::fetch::sha256_bytes;
use crate::manifest::{LayerRecord, PackageRecord, SlotIdentity};
use crate::recipe::{KernelModulesIn, Recipe};
use crate::tree::{Entry, Tree};
use crate::units;

/// One OCI archive the recipe preloads, read and checked against its pinned sha256.
pub(super) struct OciArchive {
    /// The file as the recipe names it.
    pub source: String,
    pub data: Vec<u8>,
}

/// Reads the recipe's `images:`, each checked against its sha256.
pub(super) fn read_images(recipe: &Recipe) -> Result<Vec<OciArchive>, BuildError> {
    let recipe_dir = recipe.file.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for image in &recipe.def.images {
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
        out.push(OciArchive {
            source: image.file.clone(),
            data,
        });
    }
    Ok(out)
}

/// The root filesystem of slot A and its SBOM.
pub(super) fn assemble(
    recipe: &Recipe,
    loaded: &[LoadedLayer],
    agent: &[u8],
    identity: &SlotIdentity,
    records: &[LayerRecord],
    images: Vec<OciArchive>,
) -> Result<(Tree, Vec<PackageRecord>), BuildError> {
    // Root filesystem: merged layers plus the agent and the slot's identity.
    let mut root = Tree::new();
    for l in loaded {
        root.merge(&l.tree);
    }
    if recipe.def.kernel_modules == KernelModulesIn::Initramfs {
        remove_kernel_modules(&mut root);
    }
    // Air-gapped content: OCI archives by digest, and the list the import unit reads.
    let mut listed = Vec::new();
    for OciArchive { source, data } in images {
        let sha256 = sha256_bytes(&data);
        let name = format!("{sha256}.tar");
        listed.push(serde_json::json!({ "file": name, "sha256": sha256, "source": source }));
        root.insert(&format!("{IMAGES_DIR}/{name}"), Entry::file(data, 0o644));
        if root.get(K3S_BINARY).is_some() {
            // k3s imports what lies in its images directory at every start.
            root.insert(
                &format!("{K3S_IMAGES_DIR}/{name}"),
                Entry::symlink(&format!("/{IMAGES_DIR}/{name}")),
            );
        }
    }
    let images = listed;
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
    let packages = crate::manifest::sbom(&root, records);
    root.insert(AGENT_PATH, Entry::file(agent.to_vec(), 0o755));
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
    for key in &recipe.upgrades.config_keys {
        root.insert(
            &format!(
                "{}/{}.pub",
                &p6os_layout::slot::CONFIG_KEYS_DIR[1..],
                key.id()
            ),
            Entry::file(key.to_file().into_bytes(), 0o644),
        );
    }
    // The clock's floor on a machine whose RTC lost its time: the newest file of the image
    // (reproducible, and no earlier than any package in it). The agent reads the text; systemd
    // reads the mtime of its own file.
    let epoch = root.iter().map(|(_, e)| e.mtime).max().unwrap_or(0);
    root.insert(
        CLOCK_EPOCH_PATH,
        Entry::file(format!("{epoch}\n").into_bytes(), 0o644),
    );
    if units::is_systemd(&root) {
        let mut systemd_epoch = Entry::file(Vec::new(), 0o644);
        systemd_epoch.mtime = epoch;
        root.insert("usr/lib/clock-epoch", systemd_epoch);
    }

    Ok((root, packages))
}

/// Removes `lib/modules/*` and `usr/lib/modules/*` (the directories stay, empty).
fn remove_kernel_modules(root: &mut Tree) {
    let doomed: Vec<String> = ["lib/modules/", "usr/lib/modules/"]
        .iter()
        .flat_map(|dir| {
            root.iter()
                .filter(move |(p, _)| p.starts_with(dir))
                .map(|(p, _)| p.clone())
        })
        .collect();
    for path in doomed {
        root.remove(&path);
    }
}
