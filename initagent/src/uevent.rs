//! `/sys/class/block/*/uevent` parsing and lookup of partitions by GPT label.
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
}

fn is_safe_devname(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\0')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The device names carrying partition label `label`, sorted (the first is the one to use;
/// more than one means the label is ambiguous, e.g. two P6OS disks attached).
pub fn devnames_with_partname<'a>(devices: &'a [Uevent], label: &str) -> Vec<&'a str> {
    let mut names: Vec<&str> = devices
        .iter()
        .filter(|d| d.partname() == Some(label))
        .filter_map(Uevent::devname)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// A one-line summary of what was seen, for the "not found" error:
/// `vda, vda1 [p6os-esp], vda2 [p6os-root-a]`.
pub fn describe(devices: &[Uevent]) -> String {
    let mut items: Vec<String> = devices
        .iter()
        .filter_map(|d| {
            let name = d.devname()?;
            Some(match d.partname() {
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
        [init @ .., last] => format!("partitions {} and {last}", init.join(", ")),
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
    fn empty_partname_is_kept_but_matches_nothing_useful() {
        let u = Uevent::parse("DEVNAME=sda1\nPARTNAME=\n");
        assert_eq!(u.partname(), Some(""));
        assert!(devnames_with_partname(&[u], "p6os-state").is_empty());
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
    fn finds_by_label() {
        let devices: Vec<Uevent> = [
            DISK,
            "DEVNAME=vda1\nPARTNAME=p6os-esp\n",
            PART,
            "DEVNAME=vda3\nPARTNAME=p6os-root-b\n",
            "DEVNAME=vda4\nPARTNAME=p6os-state\n",
        ]
        .iter()
        .map(|t| Uevent::parse(t))
        .collect();
        assert_eq!(devnames_with_partname(&devices, "p6os-root-a"), ["vda2"]);
        assert_eq!(devnames_with_partname(&devices, "p6os-root-b"), ["vda3"]);
        assert_eq!(devnames_with_partname(&devices, "p6os-state"), ["vda4"]);
        assert!(devnames_with_partname(&devices, "p6os-root-c").is_empty());
        assert_eq!(
            describe(&devices),
            "vda, vda1 [p6os-esp], vda2 [p6os-root-a], vda3 [p6os-root-b], vda4 [p6os-state]"
        );
    }

    #[test]
    fn ambiguous_label_is_sorted() {
        let devices: Vec<Uevent> = [
            "DEVNAME=sdb4\nPARTNAME=p6os-state\n",
            "DEVNAME=sda4\nPARTNAME=p6os-state\n",
        ]
        .iter()
        .map(|t| Uevent::parse(t))
        .collect();
        assert_eq!(
            devnames_with_partname(&devices, "p6os-state"),
            ["sda4", "sdb4"]
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
    }

    #[test]
    fn describe_nothing() {
        assert_eq!(describe(&[]), "none");
    }
}
