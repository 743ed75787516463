//! systemd-boot configuration for a fresh image: `loader.conf` and slot A's Boot Loader
//! Specification entry. The names, paths and text are the on-disk contract's
//! ([`p6os_layout::esp`], [`p6os_layout::entry`]); the agent writes upgraded slots' entries
//! with the same functions.

pub use p6os_layout::entry::{Counter, EntryName};
pub use p6os_layout::esp::loader_conf;
pub use p6os_layout::Slot;

/// A Boot Loader Specification entry for one slot: it starts the slot's unified kernel image,
/// whose own command line says the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    pub title: String,
    pub version: String,
    pub slot: Slot,
}

impl BootEntry {
    pub fn new(name: &str, version: &str, slot: Slot) -> BootEntry {
        BootEntry {
            title: p6os_layout::esp::title(name, version, slot),
            version: version.into(),
            slot,
        }
    }

    pub fn render(&self) -> String {
        p6os_layout::esp::entry_text(
            &self.title,
            &self.version,
            self.slot,
            &p6os_layout::esp::EntryBoot::Uki,
        )
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
        assert_eq!(
            BootEntry::new("tiny", "1.0.0", Slot::A).render(),
            "title P6OS tiny 1.0.0 (slot a)\nsort-key p6os\nversion 1.0.0\nefi /p6os/a/p6os.efi\n"
        );
    }
}
