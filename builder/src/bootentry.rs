//! systemd-boot configuration for a fresh image: `loader.conf` and slot A's Boot Loader
//! Specification entry. The names, paths and text are the on-disk contract's
//! ([`p6os_layout::esp`], [`p6os_layout::entry`]); the agent writes upgraded slots' entries
//! with the same functions.

pub use p6os_layout::entry::{Counter, EntryName};
pub use p6os_layout::esp::loader_conf;
pub use p6os_layout::Slot;

use crate::recipe::RootFsFormat;

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
        verity: Option<&p6os_layout::verity::Params>,
        extra: &[String],
    ) -> BootEntry {
        BootEntry {
            title: p6os_layout::esp::title(name, version, slot),
            version: version.into(),
            slot,
            options: p6os_layout::esp::options(slot, rootfs.layout(), verity, extra),
        }
    }

    pub fn render(&self) -> String {
        p6os_layout::esp::entry_text(&self.title, &self.version, self.slot, &self.options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The builder reads entry names with the contract's parser: the shared table holds.
    #[test]
    fn entry_names_follow_the_shared_table() {
        for line in include_str!("../../layout/tests/entry-names.txt").lines() {
            let Some((file, expect)) = line.split_once('|').filter(|_| !line.starts_with('#'))
            else {
                continue;
            };
            let parsed = EntryName::parse(file.trim());
            assert_eq!(parsed.is_some(), expect.trim() != "-", "{file}");
            if let Some(n) = parsed {
                assert!(expect
                    .trim()
                    .starts_with(&format!("{} {}", n.version, n.slot)));
            }
        }
    }

    #[test]
    fn entry_text_is_stable() {
        let e = BootEntry::new(
            "tiny",
            "1.0.0",
            Slot::A,
            RootFsFormat::Squashfs,
            None,
            &["quiet".into()],
        );
        assert_eq!(
            e.render(),
            "title P6OS tiny 1.0.0 (slot a)\nsort-key p6os\nversion 1.0.0\nlinux /p6os/a/vmlinuz\n\
             initrd /p6os/a/initrd.img\noptions p6os.slot=a root=PARTLABEL=p6os-root-a rootfstype=squashfs ro console=ttyS0 quiet\n"
        );
        let verity = p6os_layout::verity::Params {
            data_blocks: 7,
            salt: [1; 32],
            root_hash: [2; 32],
        };
        let e = BootEntry::new(
            "tiny",
            "1.0.0",
            Slot::B,
            RootFsFormat::Squashfs,
            Some(&verity),
            &[],
        );
        assert!(e.render().contains(&format!(
            "console=ttyS0 p6os.verity=7:{}:{}\n",
            "01".repeat(32),
            "02".repeat(32)
        )));
    }
}
