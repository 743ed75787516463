//! `p6os inspect`: what is on an image, read without mounting: partitions, boot entries, slots.

use std::fs::File;
use std::path::Path;

use serde::Serialize;

use p6os_layout::esp as contract;

use crate::bootentry::{Counter, EntryName, Slot};
use crate::esp::{self, EspError};
use crate::manifest::{PartitionRecord, SlotManifest};

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub disk_guid: String,
    pub size: u64,
    pub partitions: Vec<PartitionRecord>,
    pub entries: Vec<EntryInfo>,
    pub slots: Slots,
}

#[derive(Debug, Serialize)]
pub struct EntryInfo {
    pub file: String,
    pub slot: Slot,
    pub version: String,
    /// `null` for a blessed entry (no boot counter).
    pub tries_left: Option<u32>,
    pub tries_done: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct Slots {
    pub a: SlotInfo,
    pub b: SlotInfo,
}

#[derive(Debug, Serialize)]
pub struct SlotInfo {
    /// From `/p6os/<slot>/manifest.json` on the ESP; `null` when the slot is empty.
    pub version: Option<String>,
    pub name: Option<String>,
    pub rootfs_sha256: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Esp(#[from] EspError),
    #[error("{path}: ESP file {file}: {source}")]
    Manifest {
        path: String,
        file: String,
        source: serde_json::Error,
    },
}

pub fn inspect(image: &Path) -> Result<Inspection, InspectError> {
    let path = image.display().to_string();
    let f = File::open(image).map_err(|source| EspError::Io {
        path: image.into(),
        source,
    })?;
    let (gpt, mut vol) = esp::open(f, image)?;
    let fat_err = EspError::fat(image);
    let mut entries = Vec::new();
    if vol.exists(contract::ENTRIES_DIR).map_err(&fat_err)? {
        for e in vol.read_dir(contract::ENTRIES_DIR).map_err(&fat_err)? {
            if let Some(n) = EntryName::parse(&e.name).filter(|_| !e.is_dir) {
                entries.push(EntryInfo {
                    file: e.name.clone(),
                    slot: n.slot,
                    version: n.version,
                    tries_left: match n.counter {
                        Counter::Trial { left, .. } => Some(left),
                        Counter::Blessed => None,
                    },
                    tries_done: match n.counter {
                        Counter::Trial { done, .. } => Some(done),
                        Counter::Blessed => None,
                    },
                });
            }
        }
    }
    entries.sort_by(|a, b| a.file.cmp(&b.file));
    let mut slot = |s: Slot| -> Result<SlotInfo, InspectError> {
        let file = contract::slot_file(s, contract::MANIFEST_FILE);
        if !vol.exists(&file).map_err(&fat_err)? {
            return Ok(SlotInfo {
                version: None,
                name: None,
                rootfs_sha256: None,
            });
        }
        let data = vol.read_file(&file).map_err(&fat_err)?;
        let m: SlotManifest =
            serde_json::from_slice(&data).map_err(|source| InspectError::Manifest {
                path: path.clone(),
                file: file.clone(),
                source,
            })?;
        Ok(SlotInfo {
            version: Some(m.identity.version),
            name: Some(m.identity.name),
            rootfs_sha256: Some(m.rootfs.sha256),
        })
    };
    let slots = Slots {
        a: slot(Slot::A)?,
        b: slot(Slot::B)?,
    };
    Ok(Inspection {
        disk_guid: gpt.disk_guid.to_string(),
        size: gpt.size_bytes(),
        partitions: gpt.partitions.iter().map(PartitionRecord::from).collect(),
        entries,
        slots,
    })
}

impl Inspection {
    /// Human-readable report.
    pub fn render(&self) -> String {
        let mut s = format!(
            "disk {}  {} MiB\n\npartitions:\n",
            self.disk_guid,
            self.size >> 20
        );
        for p in &self.partitions {
            s += &format!(
                "  {} {:<12} {:>6} MiB  lba {}..{}  type {}  guid {}\n",
                p.number,
                p.label,
                ((p.last_lba - p.first_lba + 1) * 512) >> 20,
                p.first_lba,
                p.last_lba,
                p.type_guid,
                p.guid
            );
        }
        s += "\nboot entries:\n";
        if self.entries.is_empty() {
            s += "  (none)\n";
        }
        for e in &self.entries {
            let tries = match (e.tries_left, e.tries_done) {
                (Some(l), Some(d)) => format!("tries left {l}, done {d}"),
                _ => "blessed".into(),
            };
            s += &format!(
                "  {:<32} slot {}  version {}  {tries}\n",
                e.file, e.slot, e.version
            );
        }
        s += "\nslots:\n";
        for (name, slot) in [("a", &self.slots.a), ("b", &self.slots.b)] {
            match &slot.version {
                Some(v) => s += &format!("  {name}: {} {v}\n", slot.name.as_deref().unwrap_or("?")),
                None => s += &format!("  {name}: empty\n"),
            }
        }
        s
    }
}
