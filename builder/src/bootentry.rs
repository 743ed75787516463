//! systemd-boot configuration as data: `loader.conf` and Boot Loader Specification (type #1)
//! entries named `p6os-<version>-<slot>[+LEFT[-DONE]].conf` (boot counting in the file name).

use std::fmt;

use crate::recipe::RootFsFormat;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Slot::A => "p6os-root-a",
            Slot::B => "p6os-root-b",
        }
    }
    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Boot counting state carried in an entry's file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Tries {
    pub left: u32,
    pub done: u32,
}

/// An entry's identity as encoded in its file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryName {
    pub version: String,
    pub slot: Slot,
    /// `None` for a blessed entry (no counter).
    pub tries: Option<Tries>,
}

impl EntryName {
    pub fn file_name(&self) -> String {
        match self.tries {
            None => format!("p6os-{}-{}.conf", self.version, self.slot),
            Some(Tries { left, done: 0 }) => {
                format!("p6os-{}-{}+{left}.conf", self.version, self.slot)
            }
            Some(Tries { left, done }) => {
                format!("p6os-{}-{}+{left}-{done}.conf", self.version, self.slot)
            }
        }
    }

    /// Parses `p6os-<version>-<slot>[+LEFT[-DONE]].conf`; `None` for other files.
    pub fn parse(file: &str) -> Option<EntryName> {
        let stem = file.strip_prefix("p6os-")?.strip_suffix(".conf")?;
        let (body, tries) = match stem.rsplit_once('+') {
            Some((body, counter)) => {
                let (left, done) = counter.split_once('-').unwrap_or((counter, "0"));
                (
                    body,
                    Some(Tries {
                        left: left.parse().ok()?,
                        done: done.parse().ok()?,
                    }),
                )
            }
            None => (stem, None),
        };
        let (version, slot) = body.rsplit_once('-')?;
        if version.is_empty() {
            return None;
        }
        Some(EntryName {
            version: version.into(),
            slot: Slot::parse(slot)?,
            tries,
        })
    }
}

/// The loader configuration: no menu, no editor, newest p6os entry first.
pub fn loader_conf() -> String {
    "timeout 0\neditor no\ndefault p6os-*\nauto-entries no\nauto-firmware no\n".to_string()
}

/// A Boot Loader Specification entry for one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    pub title: String,
    pub version: String,
    pub slot: Slot,
    pub options: Vec<String>,
}

impl BootEntry {
    /// The kernel command line for `slot`: the agent finds everything from it.
    pub fn new(
        name: &str,
        version: &str,
        slot: Slot,
        rootfs: RootFsFormat,
        extra: &[String],
    ) -> BootEntry {
        let options = p6os_bundle::entry::options(slot.as_str(), rootfs.as_str(), extra);
        BootEntry {
            title: p6os_bundle::entry::title(name, version, slot.as_str()),
            version: version.into(),
            slot,
            options,
        }
    }

    pub fn render(&self) -> String {
        p6os_bundle::entry::render(
            &self.title,
            &self.version,
            self.slot.as_str(),
            &self.options,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_round_trip() {
        for (file, tries) in [
            ("p6os-1.0.0-a.conf", None),
            ("p6os-1.0.0-b+3.conf", Some(Tries { left: 3, done: 0 })),
            ("p6os-2-rc1-a+0-3.conf", Some(Tries { left: 0, done: 3 })),
        ] {
            let n = EntryName::parse(file).unwrap();
            assert_eq!(n.tries, tries);
            assert_eq!(n.file_name(), file);
        }
        assert_eq!(
            EntryName::parse("p6os-2-rc1-a+0-3.conf").unwrap().version,
            "2-rc1"
        );
        for bad in [
            "p6os-1.0.0-c.conf",
            "other.conf",
            "p6os--a.conf",
            "p6os-1-a+x.conf",
        ] {
            assert_eq!(EntryName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn entry_text_is_stable() {
        let e = BootEntry::new(
            "tiny",
            "1.0.0",
            Slot::A,
            RootFsFormat::Squashfs,
            &["quiet".into()],
        );
        assert_eq!(
            e.render(),
            "title P6OS tiny 1.0.0 (slot a)\nsort-key p6os\nversion 1.0.0\nlinux /p6os/a/vmlinuz\n\
             initrd /p6os/a/initrd.img\noptions p6os.slot=a root=PARTLABEL=p6os-root-a rootfstype=squashfs ro console=ttyS0 quiet\n"
        );
    }
}
