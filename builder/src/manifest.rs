//! What an image and a slot contain, as JSON: the build manifest beside the image and the slot
//! manifest in the slot (`/usr/lib/p6os/manifest.json`) and on the ESP (`/p6os/<slot>/manifest.json`).

use serde::Serialize;

use std::collections::BTreeMap;

use crate::fetch::Resolved;
use crate::tree::Tree;

/// The slot manifest is the on-disk contract's.
pub use p6os_layout::manifest::{Payload, SlotIdentity, SlotManifest};

#[derive(Debug, Clone, Serialize)]
pub struct LayerRecord {
    pub role: crate::recipe::LayerRole,
    pub name: String,
    /// The layer file as the recipe names it.
    pub file: String,
    pub sources: Vec<Resolved>,
    /// Digest of the layer's merged tree.
    pub sha256: String,
}

/// One package of the slot, for the SBOM in the build manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageRecord {
    pub name: String,
    pub version: String,
    /// From the dpkg status (packages dpkg installed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// The archive's sha256 of the .deb.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The layer that unpacked it (packages not installed by dpkg).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// `dpkg` (maintainer scripts ran) or `unpacked` (files only, by a `debian` source).
    pub installed_by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionRecord {
    pub number: u32,
    pub label: String,
    pub type_guid: String,
    pub guid: String,
    pub first_lba: u64,
    pub last_lba: u64,
}

impl From<&crate::gpt::Partition> for PartitionRecord {
    fn from(p: &crate::gpt::Partition) -> Self {
        PartitionRecord {
            number: p.number,
            label: p.label.clone(),
            type_guid: p.type_guid.to_string().to_uppercase(),
            guid: p.guid.to_string(),
            first_lba: p.first_lba,
            last_lba: p.last_lba,
        }
    }
}

/// `<name>-<version>.manifest.json`, beside the image.
#[derive(Debug, Clone, Serialize)]
pub struct BuildManifest {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub recipe_digest: String,
    pub layers: Vec<LayerRecord>,
    pub bootloader: LayerRecord,
    pub disk_guid: String,
    pub partitions: Vec<PartitionRecord>,
    pub slot_a: SlotManifest,
    pub image: ImageRecord,
    /// Every file written beside the manifest (raw, .img.zst, .qcow2, .bmap), as listed in
    /// `<name>-<version>.SHA256SUMS`.
    pub outputs: Vec<crate::outputs::OutputRecord>,
    /// The SBOM: every package in the slot (name, version, the archive's sha256).
    pub packages: Vec<PackageRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageRecord {
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

/// The packages of a root: what dpkg installed (mmdebstrap bases) and what `debian` sources
/// unpacked, sorted by name.
pub fn sbom(root: &Tree, records: &[LayerRecord]) -> Vec<PackageRecord> {
    let mut out: BTreeMap<String, PackageRecord> = BTreeMap::new();
    let status = crate::fetch::bootstrap::dpkg_status(root);
    let digests: BTreeMap<(&str, &str), &str> = records
        .iter()
        .flat_map(|r| &r.sources)
        .flat_map(|s| match s {
            Resolved::Mmdebstrap { packages, .. } | Resolved::Debian { packages } => {
                packages.as_slice()
            }
            _ => &[],
        })
        .map(|p| ((p.name.as_str(), p.version.as_str()), p.sha256.as_str()))
        .collect();
    for p in status {
        let sha256 = digests
            .get(&(p.name.as_str(), p.version.as_str()))
            .map(|s| s.to_string());
        out.insert(
            p.name.clone(),
            PackageRecord {
                name: p.name,
                version: p.version,
                arch: Some(p.arch),
                sha256,
                layer: None,
                installed_by: "dpkg".into(),
            },
        );
    }
    for r in records {
        for s in &r.sources {
            if let Resolved::Debian { packages } = s {
                for p in packages {
                    out.entry(p.name.clone()).or_insert_with(|| PackageRecord {
                        name: p.name.clone(),
                        version: p.version.clone(),
                        arch: None,
                        sha256: Some(p.sha256.clone()),
                        layer: Some(r.name.clone()),
                        installed_by: "unpacked".into(),
                    });
                }
            }
        }
    }
    out.into_values().collect()
}
