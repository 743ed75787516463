//! Which disk the slot root and the state partition come from. Both always come from one
//! disk: the one the boot loader was loaded from if it is known (its ESP's PARTUUID is
//! `LoaderDevicePartUUID`), otherwise the only disk holding every wanted label. With
//! another P6OS disk attached (a USB stick in a NUC) and no way to tell, it is an error.
//!
//! Known the boot partition, the wait is for its disk (a slow USB stick must not lose to
//! the internal disk); only at the timeout does the only-disk rule apply, with a warning.
//! Without it, the first time exactly one disk holds every label decides: a disk that
//! shows up later is not seen. Copies of one image share their PARTUUIDs (images are
//! reproducible), so `LoaderDevicePartUUID` cannot tell them apart either.
//!
//! Pure: takes what was seen in /sys/class/block; `boot` polls and acts on the outcome.

use std::collections::BTreeMap;
use std::fmt;

use crate::uevent::{describe_labels, join_and, BlockDevice};

/// What to choose from.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Partition labels that must all be on the chosen disk.
    pub labels: &'a [String],
    /// The boot partition's PARTUUID (from `LoaderDevicePartUUID`), if known.
    pub boot_part_uuid: Option<&'a str>,
    /// The wait is over: decide with what is there instead of waiting for the boot disk.
    pub timed_out: bool,
}

/// Why a disk was chosen; shown in `boot disk vda (<reason>)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// It holds the partition the boot loader was loaded from.
    LoaderDevicePartUuid,
    /// No boot disk known (or it cannot be used), and it is the only disk with all labels.
    OnlyDisk { labels: Vec<String> },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::LoaderDevicePartUuid => f.write_str("LoaderDevicePartUUID"),
            Reason::OnlyDisk { labels } => write!(f, "only disk with {}", join_and(labels)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Kernel name of the disk (`vda`, `nvme0n1`).
    pub disk: String,
    pub reason: Reason,
    /// `(label, device name)` in the order of the request's labels.
    pub partitions: Vec<(String, String)>,
    /// To log as warnings before the choice (duplicate labels, an unusable boot disk).
    pub warnings: Vec<String>,
    /// Other disks holding every label, not used.
    pub ignored: Vec<String>,
}

impl Choice {
    /// `boot disk vda (LoaderDevicePartUUID)`.
    pub fn describe(&self) -> String {
        format!("boot disk {} ({})", self.disk, self.reason)
    }
}

/// What is still awaited; shown in `waiting up to 30 s for <this>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// `partition p6os-state`, `partitions p6os-root-a and p6os-state on one disk`.
    Partitions(String),
    /// The boot partition has not appeared (`disk` None), or its disk lacks `missing`.
    BootDisk {
        part_uuid: String,
        disk: Option<String>,
        missing: Vec<String>,
    },
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wait::Partitions(what) => f.write_str(what),
            Wait::BootDisk {
                part_uuid,
                disk: None,
                ..
            } => write!(
                f,
                "the boot disk (partition {part_uuid}, LoaderDevicePartUUID)"
            ),
            Wait::BootDisk {
                disk: Some(disk),
                missing,
                ..
            } => write!(f, "{} on boot disk {disk}", describe_labels(&strs(missing))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `partition p6os-state`, `partitions p6os-root-a and p6os-state on one disk`.
    NotFound(String),
    /// Several disks hold every label and none is known to be the boot disk.
    Ambiguous(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Chosen(Choice),
    Wait(Wait),
    Failed(Failure),
}

fn strs(items: &[String]) -> Vec<&str> {
    items.iter().map(String::as_str).collect()
}

/// disk -> label -> device names (sorted), for the wanted labels only.
type Holdings<'a> = BTreeMap<&'a str, BTreeMap<&'a str, Vec<&'a str>>>;

fn holdings<'a>(devices: &'a [BlockDevice], labels: &[String]) -> Holdings<'a> {
    let mut disks: Holdings = BTreeMap::new();
    for device in devices {
        let (Some(disk), Some(label), Some(name)) = (
            device.disk.as_deref(),
            device.uevent.partname(),
            device.uevent.devname(),
        ) else {
            continue;
        };
        if labels.iter().any(|l| l == label) {
            let names = disks.entry(disk).or_default().entry(label).or_default();
            names.push(name);
            names.sort_unstable();
            names.dedup();
        }
    }
    disks
}

fn missing_on<'a>(held: Option<&BTreeMap<&str, Vec<&str>>>, labels: &'a [String]) -> Vec<&'a str> {
    labels
        .iter()
        .filter(|l| !held.is_some_and(|h| h.contains_key(l.as_str())))
        .map(String::as_str)
        .collect()
}

/// Disks holding a wanted label whose partitions have no PARTUUID (kernels before 6.13):
/// the caller reads their GPT (`gpt`) and hands it to `apply_gpt`.
pub fn disks_without_part_uuids(devices: &[BlockDevice], labels: &[String]) -> Vec<String> {
    let disks = holdings(devices, labels);
    disks
        .keys()
        .filter(|disk| {
            devices
                .iter()
                .any(|d| d.disk.as_deref() == Some(**disk) && d.part_uuid.is_none())
        })
        .map(|disk| disk.to_string())
        .collect()
}

/// Fills in the PARTUUIDs of `disk`'s partitions from its GPT entries
/// `(partition number, uuid)`; partitions that have one keep it.
pub fn apply_gpt(devices: &mut [BlockDevice], disk: &str, entries: &[(u32, String)]) {
    for device in devices
        .iter_mut()
        .filter(|d| d.disk.as_deref() == Some(disk) && d.part_uuid.is_none())
    {
        let Some(number) = device.partn() else {
            continue;
        };
        if let Some((_, uuid)) = entries.iter().find(|(n, _)| *n == number) {
            device.part_uuid = Some(uuid.to_ascii_lowercase());
        }
    }
}

/// Decides from the devices seen so far.
pub fn choose(devices: &[BlockDevice], request: &Request) -> Outcome {
    let labels = request.labels;
    let disks = holdings(devices, labels);
    let complete: Vec<&str> = disks
        .iter()
        .filter(|(_, held)| missing_on(Some(held), labels).is_empty())
        .map(|(disk, _)| *disk)
        .collect();
    let mut warnings = Vec::new();
    if let Some(uuid) = request.boot_part_uuid {
        let uuid = uuid.trim();
        // Several disks may carry it: images are reproducible, so copies of one image
        // have the same PARTUUIDs.
        let mut with_uuid: Vec<&str> = devices
            .iter()
            .filter(|d| {
                d.part_uuid
                    .as_deref()
                    .is_some_and(|u| u.trim().eq_ignore_ascii_case(uuid))
            })
            .filter_map(|d| d.disk.as_deref())
            .collect();
        with_uuid.sort_unstable();
        with_uuid.dedup();
        let usable: Vec<&str> = with_uuid
            .iter()
            .copied()
            .filter(|disk| complete.contains(disk))
            .collect();
        if usable.len() > 1 {
            return Outcome::Failed(Failure::Ambiguous(format!(
                "ambiguous boot disk: {} {} hold the boot partition {uuid} \
                 (LoaderDevicePartUUID) and {}; copies of one image cannot be told apart, \
                 detach the disks not to boot from",
                join_and(&usable),
                if usable.len() == 2 { "both" } else { "all" },
                join_and(labels),
            )));
        }
        let boot_disk = usable.first().or(with_uuid.first()).copied();
        let missing = boot_disk.map(|disk| missing_on(disks.get(disk), labels));
        match (boot_disk, &missing) {
            (Some(disk), Some(missing)) if missing.is_empty() => {
                return Outcome::Chosen(choice(
                    disk,
                    Reason::LoaderDevicePartUuid,
                    &disks,
                    &complete,
                    labels,
                    warnings,
                ));
            }
            _ if !request.timed_out => {
                return Outcome::Wait(Wait::BootDisk {
                    part_uuid: uuid.to_string(),
                    disk: boot_disk.map(str::to_string),
                    missing: missing
                        .unwrap_or_default()
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                });
            }
            (Some(disk), Some(missing)) => warnings.push(format!(
                "boot disk {disk} (partition {uuid}, LoaderDevicePartUUID) has no {}",
                describe_labels(missing)
            )),
            _ => warnings.push(format!(
                "boot partition {uuid} (LoaderDevicePartUUID) not found"
            )),
        }
    }
    match complete.as_slice() {
        [disk] => Outcome::Chosen(choice(
            disk,
            Reason::OnlyDisk {
                labels: labels.to_vec(),
            },
            &disks,
            &complete,
            labels,
            warnings,
        )),
        [] => {
            let missing = missing_on(None, labels)
                .into_iter()
                .filter(|label| !disks.values().any(|held| held.contains_key(label)))
                .collect::<Vec<_>>();
            let what = if missing.is_empty() {
                format!("{} on one disk", describe_labels(&strs(labels)))
            } else {
                describe_labels(&missing)
            };
            if request.timed_out {
                Outcome::Failed(Failure::NotFound(what))
            } else {
                Outcome::Wait(Wait::Partitions(what))
            }
        }
        several => Outcome::Failed(Failure::Ambiguous(ambiguity(
            several,
            labels,
            request.boot_part_uuid,
        ))),
    }
}

fn choice(
    disk: &str,
    reason: Reason,
    disks: &Holdings,
    complete: &[&str],
    labels: &[String],
    mut warnings: Vec<String>,
) -> Choice {
    let held = disks.get(disk);
    let mut partitions = Vec::new();
    for label in labels {
        let names = held
            .and_then(|h| h.get(label.as_str()))
            .map_or(&[][..], Vec::as_slice);
        let Some(first) = names.first() else { continue };
        if names.len() > 1 {
            warnings.push(format!(
                "{} partitions on {disk} are labelled {label} ({}); using {first}",
                names.len(),
                names.join(", ")
            ));
        }
        partitions.push((label.clone(), first.to_string()));
    }
    Choice {
        disk: disk.to_string(),
        reason,
        partitions,
        warnings,
        ignored: complete
            .iter()
            .filter(|d| **d != disk)
            .map(|d| d.to_string())
            .collect(),
    }
}

fn ambiguity(disks: &[&str], labels: &[String], boot_part_uuid: Option<&str>) -> String {
    let (all, none) = if disks.len() == 2 {
        ("both", "neither")
    } else {
        ("all", "none of them")
    };
    let why = match boot_part_uuid {
        Some(uuid) => format!(
            "{none} holds the boot partition {} (LoaderDevicePartUUID)",
            uuid.trim()
        ),
        None => "the boot loader did not say which disk it was loaded from \
                 (no LoaderDevicePartUUID)"
            .to_string(),
    };
    format!(
        "ambiguous boot disk: {} {all} hold {}, and {why}; detach the disks not to boot from",
        join_and(disks),
        join_and(labels),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uevent::Uevent;

    const ESP_A: &str = "0e4b0f6c-1111-4a2b-8c3d-aaaaaaaaaaaa";
    const ESP_B: &str = "0e4b0f6c-2222-4a2b-8c3d-bbbbbbbbbbbb";

    fn part(disk: &str, n: u32, label: &str, uuid: &str) -> BlockDevice {
        let name = if disk.ends_with(|c: char| c.is_ascii_digit()) {
            format!("{disk}p{n}")
        } else {
            format!("{disk}{n}")
        };
        BlockDevice::new(
            Uevent::parse(&format!(
                "DEVNAME={name}\nDEVTYPE=partition\nPARTN={n}\nPARTNAME={label}\nPARTUUID={uuid}\n"
            )),
            Some(disk.to_string()),
        )
    }

    fn whole(disk: &str) -> BlockDevice {
        BlockDevice::new(
            Uevent::parse(&format!("DEVNAME={disk}\nDEVTYPE=disk\n")),
            None,
        )
    }

    /// A P6OS disk: ESP with PARTUUID `esp`, both slots, state.
    fn p6os_disk(disk: &str, esp: &str) -> Vec<BlockDevice> {
        vec![
            whole(disk),
            part(disk, 1, "p6os-esp", esp),
            part(disk, 2, "p6os-root-a", &format!("{disk}-2")),
            part(disk, 3, "p6os-root-b", &format!("{disk}-3")),
            part(disk, 4, "p6os-state", &format!("{disk}-4")),
        ]
    }

    fn labels() -> Vec<String> {
        vec!["p6os-root-a".into(), "p6os-state".into()]
    }

    fn decide(devices: &[BlockDevice], boot: Option<&str>, timed_out: bool) -> Outcome {
        choose(
            devices,
            &Request {
                labels: &labels(),
                boot_part_uuid: boot,
                timed_out,
            },
        )
    }

    fn chosen(outcome: Outcome) -> Choice {
        match outcome {
            Outcome::Chosen(choice) => choice,
            other => panic!("expected a choice, got {other:?}"),
        }
    }

    #[test]
    fn boot_disk_by_loader_device_part_uuid() {
        let mut devices = p6os_disk("nvme0n1", ESP_A);
        devices.extend(p6os_disk("sda", ESP_B));
        // Upper case from the EFI variable matches the kernel's lower case.
        let upper = ESP_B.to_uppercase();
        let choice = chosen(decide(&devices, Some(&upper), false));
        assert_eq!(choice.describe(), "boot disk sda (LoaderDevicePartUUID)");
        assert_eq!(
            choice.partitions,
            vec![
                ("p6os-root-a".to_string(), "sda2".to_string()),
                ("p6os-state".to_string(), "sda4".to_string()),
            ]
        );
        assert_eq!(choice.device("p6os-state"), Some("sda4"));
        assert_eq!(choice.device("p6os-esp"), None);
        assert_eq!(choice.ignored, vec!["nvme0n1"]);
        assert!(choice.warnings.is_empty());

        let choice = chosen(decide(&devices, Some(ESP_A), false));
        assert_eq!(choice.disk, "nvme0n1");
        assert_eq!(choice.device("p6os-root-a"), Some("nvme0n1p2"));
        assert_eq!(choice.device("p6os-state"), Some("nvme0n1p4"));
    }

    #[test]
    fn only_disk_without_efi_variables() {
        let mut devices = p6os_disk("vda", ESP_A);
        // Another disk with only some of the labels is no candidate.
        devices.push(part("vdb", 1, "p6os-state", "x"));
        devices.push(part("vdc", 1, "data", "y"));
        let choice = chosen(decide(&devices, None, false));
        assert_eq!(
            choice.describe(),
            "boot disk vda (only disk with p6os-root-a and p6os-state)"
        );
        assert_eq!(choice.device("p6os-root-a"), Some("vda2"));
        assert_eq!(choice.device("p6os-state"), Some("vda4"));
        assert!(choice.ignored.is_empty());
    }

    #[test]
    fn ambiguous_without_efi_variables_fails_at_once() {
        let mut devices = p6os_disk("sdb", ESP_B);
        devices.extend(p6os_disk("nvme0n1", ESP_A));
        assert_eq!(
            decide(&devices, None, false),
            Outcome::Failed(Failure::Ambiguous(
                "ambiguous boot disk: nvme0n1 and sdb both hold p6os-root-a and p6os-state, \
                 and the boot loader did not say which disk it was loaded from \
                 (no LoaderDevicePartUUID); detach the disks not to boot from"
                    .into()
            ))
        );
    }

    #[test]
    fn waits_for_the_boot_disk() {
        // The NVMe disk is up, the USB stick that was booted from is not yet.
        let devices = p6os_disk("nvme0n1", ESP_A);
        assert_eq!(
            decide(&devices, Some(ESP_B), false),
            Outcome::Wait(Wait::BootDisk {
                part_uuid: ESP_B.into(),
                disk: None,
                missing: vec![],
            })
        );
        assert_eq!(
            decide(&devices, Some(ESP_B), false).to_wait().to_string(),
            format!("the boot disk (partition {ESP_B}, LoaderDevicePartUUID)")
        );
    }

    #[test]
    fn boot_disk_without_the_partitions_is_awaited() {
        // ESP seen, state not yet (or never): wait, then fall back to the only candidate.
        let mut devices = vec![
            part("sda", 1, "p6os-esp", ESP_B),
            part("sda", 2, "p6os-root-a", "r"),
        ];
        devices.extend(p6os_disk("nvme0n1", ESP_A));
        let wait = decide(&devices, Some(ESP_B), false).to_wait();
        assert_eq!(wait.to_string(), "partition p6os-state on boot disk sda");
        let choice = chosen(decide(&devices, Some(ESP_B), true));
        assert_eq!(
            choice.describe(),
            "boot disk nvme0n1 (only disk with p6os-root-a and p6os-state)"
        );
        assert_eq!(
            choice.warnings,
            vec![format!(
                "boot disk sda (partition {ESP_B}, LoaderDevicePartUUID) has no partition p6os-state"
            )]
        );
    }

    #[test]
    fn boot_disk_never_seen_falls_back_after_the_wait() {
        let devices = p6os_disk("vda", ESP_A);
        let choice = chosen(decide(&devices, Some(ESP_B), true));
        assert_eq!(choice.disk, "vda");
        assert_eq!(
            choice.warnings,
            vec![format!(
                "boot partition {ESP_B} (LoaderDevicePartUUID) not found"
            )]
        );
    }

    #[test]
    fn ambiguous_when_the_boot_disk_is_elsewhere() {
        let mut devices = p6os_disk("sda", ESP_A);
        devices.extend(p6os_disk("sdb", ESP_A.replace('a', "c").as_str()));
        devices.extend(p6os_disk("sdc", ESP_A.replace('a', "d").as_str()));
        assert!(matches!(
            decide(&devices, Some(ESP_B), false),
            Outcome::Wait(_)
        ));
        assert_eq!(
            decide(&devices, Some(ESP_B), true),
            Outcome::Failed(Failure::Ambiguous(format!(
                "ambiguous boot disk: sda, sdb and sdc all hold p6os-root-a and p6os-state, \
                 and none of them holds the boot partition {ESP_B} (LoaderDevicePartUUID); \
                 detach the disks not to boot from"
            )))
        );
    }

    #[test]
    fn never_mixes_disks() {
        // Root only on one disk, state only on the other.
        let devices = vec![
            part("sda", 2, "p6os-root-a", "1"),
            part("sdb", 4, "p6os-state", "2"),
        ];
        assert_eq!(
            decide(&devices, None, false),
            Outcome::Wait(Wait::Partitions(
                "partitions p6os-root-a and p6os-state on one disk".into()
            ))
        );
        assert_eq!(
            decide(&devices, None, true),
            Outcome::Failed(Failure::NotFound(
                "partitions p6os-root-a and p6os-state on one disk".into()
            ))
        );
        // Even when one of them holds the boot partition.
        let mut devices = devices;
        devices.push(part("sda", 1, "p6os-esp", ESP_A));
        assert!(matches!(
            decide(&devices, Some(ESP_A), true),
            Outcome::Failed(Failure::NotFound(_))
        ));
    }

    #[test]
    fn missing_labels() {
        let devices = vec![whole("vda"), part("vda", 2, "p6os-root-a", "1")];
        assert_eq!(
            decide(&devices, None, false),
            Outcome::Wait(Wait::Partitions("partition p6os-state".into()))
        );
        assert_eq!(
            decide(&[], None, true),
            Outcome::Failed(Failure::NotFound(
                "partitions p6os-root-a and p6os-state".into()
            ))
        );
    }

    #[test]
    fn duplicate_label_on_one_disk_uses_the_first() {
        let mut devices = p6os_disk("vda", ESP_A);
        devices.push(part("vda", 5, "p6os-state", "dup"));
        let choice = chosen(decide(&devices, Some(ESP_A), false));
        assert_eq!(choice.device("p6os-state"), Some("vda4"));
        assert_eq!(
            choice.warnings,
            vec!["2 partitions on vda are labelled p6os-state (vda4, vda5); using vda4"]
        );
    }

    #[test]
    fn ignores_devices_without_disk_or_safe_name() {
        let mut devices = p6os_disk("vda", ESP_A);
        // Unknown parent disk, unsafe names, whole disks: no candidates.
        devices.push(BlockDevice::new(
            Uevent::parse("DEVNAME=vdz2\nPARTNAME=p6os-root-a\n"),
            None,
        ));
        devices.push(BlockDevice::new(
            Uevent::parse("DEVNAME=../x\nPARTNAME=p6os-root-a\n"),
            Some("x".into()),
        ));
        devices.push(BlockDevice::new(
            Uevent::parse("DEVNAME=../y\nPARTNAME=p6os-state\n"),
            Some("x".into()),
        ));
        let choice = chosen(decide(&devices, None, false));
        assert_eq!(choice.disk, "vda");
        assert!(choice.ignored.is_empty());
    }

    #[test]
    fn copies_of_one_image_are_ambiguous() {
        // Reproducible images: a copy on a USB stick has the same PARTUUIDs.
        let mut devices = p6os_disk("nvme0n1", ESP_A);
        devices.extend(p6os_disk("sda", ESP_A));
        assert_eq!(
            decide(&devices, Some(ESP_A), false),
            Outcome::Failed(Failure::Ambiguous(format!(
                "ambiguous boot disk: nvme0n1 and sda both hold the boot partition {ESP_A} \
                 (LoaderDevicePartUUID) and p6os-root-a and p6os-state; copies of one image \
                 cannot be told apart, detach the disks not to boot from"
            )))
        );
        // A copy without the labels does not make it ambiguous.
        let mut devices = p6os_disk("nvme0n1", ESP_A);
        devices.push(part("sda", 1, "p6os-esp", ESP_A));
        let choice = chosen(decide(&devices, Some(ESP_A), false));
        assert_eq!(
            choice.describe(),
            "boot disk nvme0n1 (LoaderDevicePartUUID)"
        );
    }

    #[test]
    fn part_uuids_from_the_gpt_on_older_kernels() {
        // Kernel 6.1: no PARTUUID in uevent files.
        let old_kernel = |disk: &str| -> Vec<BlockDevice> {
            p6os_disk(disk, "unused")
                .into_iter()
                .map(|mut d| {
                    d.part_uuid = None;
                    d
                })
                .collect()
        };
        let mut devices = old_kernel("nvme0n1");
        devices.extend(old_kernel("sda"));
        devices.push(part("sdc", 1, "data", "already-known"));
        devices.push(BlockDevice::new(
            Uevent::parse("DEVNAME=sdd1\nPARTN=1\n"),
            Some("sdd".into()),
        ));
        assert_eq!(
            disks_without_part_uuids(&devices, &labels()),
            vec!["nvme0n1", "sda"]
        );
        // Without PARTUUIDs the boot disk cannot be recognised yet.
        assert!(matches!(
            decide(&devices, Some(ESP_B), false),
            Outcome::Wait(Wait::BootDisk { disk: None, .. })
        ));
        let gpt: Vec<(u32, String)> = vec![
            (1, ESP_B.to_uppercase()),
            (2, "r".into()),
            (3, "b".into()),
            (9, "nine".into()),
        ];
        apply_gpt(&mut devices, "sda", &gpt);
        let uuids: Vec<Option<&str>> = devices
            .iter()
            .filter(|d| d.disk.as_deref() == Some("sda"))
            .map(|d| d.part_uuid.as_deref())
            .collect();
        assert_eq!(uuids, [Some(ESP_B), Some("r"), Some("b"), None]);
        assert_eq!(
            disks_without_part_uuids(&devices, &labels()),
            vec!["nvme0n1", "sda"],
            "sda4 is not in the table given"
        );
        let choice = chosen(decide(&devices, Some(ESP_B), false));
        assert_eq!(choice.describe(), "boot disk sda (LoaderDevicePartUUID)");
        // Known PARTUUIDs are kept.
        let mut known = vec![part("sdc", 1, "p6os-state", "keep")];
        apply_gpt(&mut known, "sdc", &[(1, "other".into())]);
        assert_eq!(known[0].part_uuid.as_deref(), Some("keep"));
    }

    impl Choice {
        fn device(&self, label: &str) -> Option<&str> {
            self.partitions
                .iter()
                .find(|(l, _)| l == label)
                .map(|(_, name)| name.as_str())
        }
    }

    impl Outcome {
        fn to_wait(&self) -> Wait {
            match self {
                Outcome::Wait(wait) => wait.clone(),
                other => panic!("expected a wait, got {other:?}"),
            }
        }
    }
}
