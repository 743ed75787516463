//! `/sys/class/block/*/uevent` parsing; what was seen of the block devices.
//!
//! Pure: the caller reads the files; this module only looks at their text.

/// The variables of one block device's uevent file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uevent {
    vars: Vec<(String, String)>,
}

impl Uevent {
    /// Parses `KEY=VALUE` lines; lines without `=` are ignored, the last duplicate wins.
    pub fn parse(text: &str) -> Uevent {
        let vars = text
            .lines()
            .filter_map(|line| {
                let (k, v) = line.trim_end_matches('\r').split_once('=')?;
                let k = k.trim();
                (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
            })
            .collect();
        Uevent { vars }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `DEVNAME`, if it is a plain name below /dev (no `..`, not absolute, not empty).
    pub fn devname(&self) -> Option<&str> {
        self.get("DEVNAME").filter(|n| is_safe_devname(n))
    }

    /// GPT partition name (PARTLABEL), if the device is a labelled partition.
    pub fn partname(&self) -> Option<&str> {
        self.get("PARTNAME")
    }

    /// GPT partition UUID (PARTUUID), lowercase as the kernel writes it.
    pub fn partuuid(&self) -> Option<&str> {
        self.get("PARTUUID")
    }
}

/// One entry of /sys/class/block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockDevice {
    pub uevent: Uevent,
    /// For a partition, the kernel name of the disk holding it (its sysfs parent
    /// directory, `!` turned back into `/`); None for whole disks.
    pub disk: Option<String>,
    /// For a partition, its PARTUUID in lowercase: from the uevent file (kernels from
    /// 6.13 have it there) or, filled in later, from the disk's GPT.
    pub part_uuid: Option<String>,
}

impl BlockDevice {
    pub fn new(uevent: Uevent, disk: Option<String>) -> BlockDevice {
        let part_uuid = uevent.partuuid().map(str::to_ascii_lowercase);
        BlockDevice {
            uevent,
            disk,
            part_uuid,
        }
    }

    /// Partition number (`PARTN`, from 1).
    pub fn partn(&self) -> Option<u32> {
        self.uevent.get("PARTN")?.trim().parse().ok()
    }
}

fn is_safe_devname(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\0')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// A one-line summary of what was seen, for the "not found" error:
/// `vda, vda1 [p6os-esp], vda2 [p6os-root-a]`.
pub fn describe(devices: &[BlockDevice]) -> String {
    let mut items: Vec<String> = devices
        .iter()
        .filter_map(|d| {
            let name = d.uevent.devname()?;
            Some(match d.uevent.partname() {
                Some(label) => format!("{name} [{label}]"),
                None => name.to_string(),
            })
        })
        .collect();
    items.sort();
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// `partition p6os-state` or `partitions p6os-root-a and p6os-state`, for messages.
pub fn describe_labels(labels: &[&str]) -> String {
    match labels {
        [] => "no partition".to_string(),
        [one] => format!("partition {one}"),
        _ => format!("partitions {}", join_and(labels)),
    }
}

/// `a`, `a and b`, `a, b and c`.
pub fn join_and<S: AsRef<str>>(items: &[S]) -> String {
    match items {
        [] => String::new(),
        [one] => one.as_ref().to_string(),
        [init @ .., last] => {
            let init: Vec<&str> = init.iter().map(AsRef::as_ref).collect();
            format!("{} and {}", init.join(", "), last.as_ref())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PART: &str = "MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nDISKSEQ=1\n\
                        PARTN=2\nPARTNAME=p6os-root-a\n";
    const DISK: &str = "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\nDISKSEQ=1\n";

    #[test]
    fn parses_partition() {
        let u = Uevent::parse(PART);
        assert_eq!(u.devname(), Some("vda2"));
        assert_eq!(u.partname(), Some("p6os-root-a"));
        assert_eq!(u.get("DEVTYPE"), Some("partition"));
        assert_eq!(u.get("MISSING"), None);
    }

    #[test]
    fn disk_has_no_partname() {
        let u = Uevent::parse(DISK);
        assert_eq!(u.devname(), Some("vda"));
        assert_eq!(u.partname(), None);
    }

    #[test]
    fn tolerates_junk() {
        let u = Uevent::parse("garbage\n=x\nDEVNAME=sda1\r\nPARTNAME=a=b\n\n");
        assert_eq!(u.devname(), Some("sda1"));
        assert_eq!(u.partname(), Some("a=b"));
        assert_eq!(Uevent::parse(""), Uevent::default());
    }

    #[test]
    fn empty_partname_is_kept() {
        let u = Uevent::parse("DEVNAME=sda1\nPARTNAME=\n");
        assert_eq!(u.partname(), Some(""));
    }

    #[test]
    fn partuuid() {
        let u = Uevent::parse(&format!(
            "{PART}PARTUUID=5e7a3b4c-1d2e-4f60-8a9b-0c1d2e3f4a5b\n"
        ));
        assert_eq!(u.partuuid(), Some("5e7a3b4c-1d2e-4f60-8a9b-0c1d2e3f4a5b"));
        assert_eq!(Uevent::parse(DISK).partuuid(), None);
        let upper =
            Uevent::parse("DEVNAME=sda1\nPARTN=1\nPARTUUID=5E7A3B4C-1D2E-4F60-8A9B-0C1D2E3F4A5B\n");
        let device = BlockDevice::new(upper, Some("sda".into()));
        assert_eq!(
            device.part_uuid.as_deref(),
            Some("5e7a3b4c-1d2e-4f60-8a9b-0c1d2e3f4a5b")
        );
        assert_eq!(device.partn(), Some(1));
        assert_eq!(BlockDevice::new(Uevent::parse(DISK), None).partn(), None);
        assert_eq!(
            BlockDevice::new(Uevent::parse("PARTN=x\n"), None).partn(),
            None
        );
    }

    #[test]
    fn rejects_unsafe_devnames() {
        for bad in ["", "/vda", "../sda", "a/../b", "a//b", "."] {
            let u = Uevent::parse(&format!("DEVNAME={bad}\nPARTNAME=p6os-state\n"));
            assert_eq!(u.devname(), None, "{bad:?}");
        }
        let u = Uevent::parse("DEVNAME=mapper/root\n");
        assert_eq!(u.devname(), Some("mapper/root"));
    }

    #[test]
    fn describes_what_was_seen() {
        let devices: Vec<BlockDevice> = [
            "DEVNAME=vda4\nPARTNAME=p6os-state\n",
            DISK,
            "DEVNAME=vda1\nPARTNAME=p6os-esp\n",
            PART,
            "DEVNAME=vda3\nPARTNAME=p6os-root-b\n",
            "MAJOR=1\n",
        ]
        .iter()
        .map(|t| BlockDevice::new(Uevent::parse(t), None))
        .collect();
        assert_eq!(
            describe(&devices),
            "vda, vda1 [p6os-esp], vda2 [p6os-root-a], vda3 [p6os-root-b], vda4 [p6os-state]"
        );
    }

    #[test]
    fn label_lists() {
        assert_eq!(describe_labels(&[]), "no partition");
        assert_eq!(describe_labels(&["p6os-state"]), "partition p6os-state");
        assert_eq!(
            describe_labels(&["p6os-root-a", "p6os-state"]),
            "partitions p6os-root-a and p6os-state"
        );
        assert_eq!(describe_labels(&["a", "b", "c"]), "partitions a, b and c");
        assert_eq!(join_and::<&str>(&[]), "");
        assert_eq!(join_and(&["sda"]), "sda");
        assert_eq!(
            join_and(&["sda".to_string(), "sdb".to_string()]),
            "sda and sdb"
        );
    }

    #[test]
    fn describe_nothing() {
        assert_eq!(describe(&[]), "none");
    }
}
