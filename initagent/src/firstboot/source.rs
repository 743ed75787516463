//! Where `unattended.yaml` comes from, in the order of the contract (first found wins):
//!
//! 1. the kernel argument `p6os.config=[LABEL=x:|PARTLABEL=x:|PARTUUID=x:]/path` (without a
//!    prefix, the path is on the ESP);
//! 2. a drive (whole disk or partition) whose filesystem is labelled `P6OS-CONFIG` or `CIDATA`
//!    (any case), holding `unattended.yaml` or NoCloud's `user-data`;
//! 3. `/p6os/unattended.yaml` on the ESP;
//! 4. the default baked into the slot by the recipe, `/usr/lib/p6os/unattended.yaml`.
//!
//! Once the device is provisioned, 1 to 3 count only when signed (`super::trust`); an
//! ignored document is as if absent, and the search goes on.
//!
//! Pure: parses the argument and filesystem labels from bytes; `firstboot` does the reading.

use std::fmt;

pub const ESP_CONFIG_PATH: &str = p6os_layout::esp::UNATTENDED;
/// Where the builder puts a recipe's default, inside the slot.
pub const BAKED_CONFIG_PATH: &str = p6os_layout::slot::BAKED_UNATTENDED_PATH;
/// Filesystem labels of configuration drives (compared without case).
pub const DRIVE_LABELS: [&str; 2] = ["P6OS-CONFIG", "CIDATA"];
/// File names looked up on a configuration drive, in order.
pub const DRIVE_FILES: [&str; 2] = ["/unattended.yaml", "/user-data"];
/// A document's detached signature lies beside it under its name plus this
/// (`unattended.yaml.sig`, `user-data.sig`; `p6os_bundle::configsig`).
pub const SIGNATURE_SUFFIX: &str = ".sig";
/// Bytes to read from a device to find its filesystem label (ISO 9660's descriptor ends here).
pub const LABEL_PROBE_BYTES: usize = 32768 + 2048;

/// The partition a `p6os.config=` path lives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partition {
    Esp,
    /// Filesystem label.
    Label(String),
    /// GPT partition name.
    PartLabel(String),
    /// GPT partition GUID, lowercase.
    PartUuid(String),
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partition::Esp => f.write_str("the ESP"),
            Partition::Label(l) => write!(f, "the filesystem labelled {l}"),
            Partition::PartLabel(l) => write!(f, "the partition named {l}"),
            Partition::PartUuid(u) => write!(f, "partition {u}"),
        }
    }
}

/// A checked `p6os.config=` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigArg {
    pub partition: Partition,
    pub path: String,
}

impl fmt::Display for ConfigArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.path, self.partition)
    }
}

/// Parses `p6os.config=`'s value.
pub fn parse_config_arg(value: &str) -> Result<ConfigArg, String> {
    let (partition, path) = match value.split_once(':') {
        Some((spec, path)) if spec.contains('=') => {
            let (tag, id) = spec.split_once('=').unwrap_or((spec, ""));
            if id.is_empty() {
                return Err(format!("`{spec}` names no partition"));
            }
            let partition = match tag {
                "LABEL" => Partition::Label(id.to_string()),
                "PARTLABEL" => Partition::PartLabel(id.to_string()),
                "PARTUUID" => Partition::PartUuid(id.to_ascii_lowercase()),
                other => {
                    return Err(format!(
                        "unknown partition tag `{other}`: use LABEL=, PARTLABEL= or PARTUUID="
                    ))
                }
            };
            (partition, path)
        }
        _ => (Partition::Esp, value),
    };
    let clean = path.starts_with('/')
        && path.len() > 1
        && !path.ends_with('/')
        && path
            .split('/')
            .skip(1)
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !clean {
        return Err(format!(
            "`{path}` is not an absolute file path (no `.`, `..` or empty components)"
        ));
    }
    Ok(ConfigArg {
        partition,
        path: path.to_string(),
    })
}

/// Filesystems the agent mounts to read a configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Vfat,
    Ext4,
    Iso9660,
}

impl FsType {
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Vfat => "vfat",
            FsType::Ext4 => "ext4",
            FsType::Iso9660 => "iso9660",
        }
    }
}

/// A filesystem recognised from a device's first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    pub fstype: FsType,
    /// Trimmed label; None when unset.
    pub label: Option<String>,
}

/// Recognises FAT, ext2/3/4 and ISO 9660 and reads their label. `head` is the start of the
/// device (up to [`LABEL_PROBE_BYTES`]); a short read simply recognises less.
pub fn probe(head: &[u8]) -> Option<Probed> {
    if let Some(pvd) = head.get(32768..32768 + 72) {
        if pvd[0] == 1 && &pvd[1..6] == b"CD001" {
            return Some(Probed {
                fstype: FsType::Iso9660,
                label: label_from(&pvd[40..72]),
            });
        }
    }
    if let Some(sb) = head.get(1024..1024 + 136) {
        if sb[56..58] == [0x53, 0xef] {
            return Some(Probed {
                fstype: FsType::Ext4,
                label: label_from(&sb[120..136]),
            });
        }
    }
    let boot = head.get(..512)?;
    let bytes_per_sector = u16::from_le_bytes([boot[11], boot[12]]);
    let fat_boot = boot[510..512] == [0x55, 0xaa]
        && matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        && boot[13].is_power_of_two();
    if !fat_boot {
        return None;
    }
    let label = if &boot[82..87] == b"FAT32" && boot[66] == 0x29 {
        &boot[71..82]
    } else if &boot[54..57] == b"FAT" && boot[38] == 0x29 {
        &boot[43..54]
    } else {
        return None;
    };
    Some(Probed {
        fstype: FsType::Vfat,
        label: label_from(label).filter(|l| l != "NO NAME"),
    })
}

fn label_from(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = String::from_utf8_lossy(&bytes[..end]);
    let trimmed = text.trim_end_matches(' ');
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

/// Whether a filesystem label marks a configuration drive.
pub fn is_config_drive_label(label: &str) -> bool {
    DRIVE_LABELS.iter().any(|l| l.eq_ignore_ascii_case(label))
}

/// Which source a document came from, for the log and `applied.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    KernelArg(ConfigArg),
    Drive {
        device: String,
        path: String,
    },
    Esp,
    Baked,
    /// Set on the console, staged by the agent (`super::console`).
    Console {
        config: u64,
    },
    /// Typed on the setup screens at the device's own console (`super::setup`).
    Typed,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::KernelArg(arg) => write!(f, "p6os.config={}", arg),
            Origin::Drive { device, path } => write!(f, "configuration drive {device} ({path})"),
            Origin::Esp => write!(f, "the ESP ({ESP_CONFIG_PATH})"),
            Origin::Baked => write!(f, "the image's default ({BAKED_CONFIG_PATH})"),
            Origin::Console { config } => write!(f, "the console (site configuration {config})"),
            Origin::Typed => write!(f, "the setup screens at the device's console"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_arg_forms() {
        assert_eq!(
            parse_config_arg("/site/a.yaml").unwrap(),
            ConfigArg {
                partition: Partition::Esp,
                path: "/site/a.yaml".into()
            }
        );
        assert_eq!(
            parse_config_arg("LABEL=SITE:/u.yaml").unwrap().partition,
            Partition::Label("SITE".into())
        );
        assert_eq!(
            parse_config_arg("PARTLABEL=p6os-state:/x")
                .unwrap()
                .partition,
            Partition::PartLabel("p6os-state".into())
        );
        assert_eq!(
            parse_config_arg("PARTUUID=ABC-1:/x").unwrap().partition,
            Partition::PartUuid("abc-1".into())
        );
        for bad in [
            "",
            "relative.yaml",
            "/",
            "/a/../b",
            "/a//b",
            "/dir/",
            "UUID=1:/x",
            "LABEL=:/x",
            "LABEL=X:rel",
        ] {
            assert!(parse_config_arg(bad).is_err(), "{bad:?} accepted");
        }
        let text = parse_config_arg("UUID=1:/x").unwrap_err();
        assert!(text.contains("LABEL="), "{text}");
    }

    fn fat32(label: &[u8; 11]) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 1;
        b[66] = 0x29;
        b[71..82].copy_from_slice(label);
        b[82..90].copy_from_slice(b"FAT32   ");
        b[510] = 0x55;
        b[511] = 0xaa;
        b
    }

    #[test]
    fn probes_fat32_fat16_ext4_iso() {
        assert_eq!(
            probe(&fat32(b"CIDATA     ")),
            Some(Probed {
                fstype: FsType::Vfat,
                label: Some("CIDATA".into())
            })
        );
        assert_eq!(probe(&fat32(b"NO NAME    ")).unwrap().label, None);

        let mut fat16 = vec![0u8; 512];
        fat16[11..13].copy_from_slice(&512u16.to_le_bytes());
        fat16[13] = 4;
        fat16[38] = 0x29;
        fat16[43..54].copy_from_slice(b"P6OS-CONFIG");
        fat16[54..62].copy_from_slice(b"FAT16   ");
        fat16[510..512].copy_from_slice(&[0x55, 0xaa]);
        assert_eq!(probe(&fat16).unwrap().label.as_deref(), Some("P6OS-CONFIG"));

        let mut ext = vec![0u8; 4096];
        ext[1024 + 56..1024 + 58].copy_from_slice(&[0x53, 0xef]);
        ext[1024 + 120..1024 + 126].copy_from_slice(b"cidata");
        assert_eq!(
            probe(&ext),
            Some(Probed {
                fstype: FsType::Ext4,
                label: Some("cidata".into())
            })
        );

        let mut iso = vec![0u8; LABEL_PROBE_BYTES];
        iso[32768] = 1;
        iso[32769..32774].copy_from_slice(b"CD001");
        iso[32768 + 40..32768 + 46].copy_from_slice(b"cidata");
        for b in &mut iso[32768 + 46..32768 + 72] {
            *b = b' ';
        }
        assert_eq!(
            probe(&iso),
            Some(Probed {
                fstype: FsType::Iso9660,
                label: Some("cidata".into())
            })
        );
    }

    #[test]
    fn probe_rejects_noise_and_short_reads() {
        assert_eq!(probe(&[]), None);
        assert_eq!(probe(&[0u8; 100]), None);
        assert_eq!(probe(&vec![0u8; LABEL_PROBE_BYTES]), None);
        // A boot signature without a FAT BPB (an MBR) is not FAT.
        let mut mbr = vec![0u8; 512];
        mbr[510..512].copy_from_slice(&[0x55, 0xaa]);
        assert_eq!(probe(&mbr), None);
        let all_ones = vec![0xffu8; LABEL_PROBE_BYTES];
        assert_eq!(probe(&all_ones), None);
    }

    #[test]
    fn drive_labels_ignore_case() {
        assert!(is_config_drive_label("cidata"));
        assert!(is_config_drive_label("P6OS-CONFIG"));
        assert!(is_config_drive_label("p6os-config"));
        assert!(!is_config_drive_label("P6OS-STATE"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn probe_never_panics(head in proptest::collection::vec(any::<u8>(), 0..LABEL_PROBE_BYTES + 64)) {
            let _ = probe(&head);
        }

        #[test]
        fn probe_never_panics_near_signatures(mut head in proptest::collection::vec(any::<u8>(), 512..4096), fat32 in any::<bool>()) {
            head[510] = 0x55;
            head[511] = 0xaa;
            head[11] = 0;
            head[12] = 2;
            head[13] = 8;
            if head.len() > 1082 {
                head[1080] = 0; // not an ext4 magic by chance
            }
            if fat32 {
                head[66] = 0x29;
                head[82..87].copy_from_slice(b"FAT32");
            } else {
                head[38] = 0x29;
                head[54..57].copy_from_slice(b"FAT");
            }
            prop_assert_eq!(probe(&head).map(|p| p.fstype), Some(FsType::Vfat));
        }

        #[test]
        fn config_arg_parse_never_panics(value in "\\PC{0,64}") {
            if let Ok(arg) = parse_config_arg(&value) {
                prop_assert!(arg.path.starts_with('/'));
                prop_assert!(!arg.path.split('/').any(|c| c == ".."));
            }
        }
    }
}
