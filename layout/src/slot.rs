//! The two root slots and the filesystems a slot may hold.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Inside a slot: the agent (also `/init` of the initramfs) and what the builder bakes in.
pub const LIB_DIR: &str = "/usr/lib/p6os";
/// The slot's identity ([`crate::manifest::SlotIdentity`]).
pub const MANIFEST_PATH: &str = "/usr/lib/p6os/manifest.json";
/// An image's default site configuration (used when no other is found).
pub const BAKED_UNATTENDED_PATH: &str = "/usr/lib/p6os/unattended.yaml";
/// Public keys (`<key id>.pub`, `p6os keygen` format) whose signed site configuration a
/// provisioned device accepts (the recipe's `upgrades.config_keys`).
pub const CONFIG_KEYS_DIR: &str = "/usr/lib/p6os/config-keys";
/// The agent binary in the slot.
pub const AGENT_PATH: &str = "/usr/lib/p6os/p6os-agent";
/// The recipe's health checks.
pub const HEALTH_PATH: &str = "/usr/lib/p6os/health.json";
/// Preloaded container images: the list and the archives.
pub const IMAGES_LIST: &str = "/usr/lib/p6os/images.json";
pub const IMAGES_DIR: &str = "/usr/lib/p6os/images";
/// The image's build epoch: decimal Unix seconds of its newest file. The agent never lets the
/// clock run earlier.
pub const CLOCK_EPOCH_PATH: &str = "/usr/lib/p6os/clock-epoch";

/// One of the two root slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// `a` or `b`: in entry names, ESP directories and `p6os.slot=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// `a` or `b`; nothing else (no case folding, no whitespace).
    pub fn parse(text: &str) -> Option<Slot> {
        match text {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }

    /// The other slot of the pair.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The slot's partition label: `p6os-root-a`.
    pub fn partlabel(self) -> &'static str {
        match self {
            Slot::A => crate::partition::ROOT_A_LABEL,
            Slot::B => crate::partition::ROOT_B_LABEL,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The read-only filesystem of a slot, as named by `rootfstype=` and the slot manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootFs {
    Squashfs,
    Erofs,
}

impl RootFs {
    pub fn as_str(self) -> &'static str {
        match self {
            RootFs::Squashfs => "squashfs",
            RootFs::Erofs => "erofs",
        }
    }

    pub fn parse(text: &str) -> Option<RootFs> {
        match text {
            "squashfs" => Some(RootFs::Squashfs),
            "erofs" => Some(RootFs::Erofs),
            _ => None,
        }
    }
}

impl fmt::Display for RootFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_filesystems_round_trip() {
        for slot in Slot::ALL {
            assert_eq!(Slot::parse(slot.as_str()), Some(slot));
            assert_eq!(slot.other().other(), slot);
            assert_ne!(slot.other(), slot);
            assert_eq!(serde_json::to_string(&slot).unwrap(), format!("\"{slot}\""));
        }
        assert_eq!(Slot::A.partlabel(), "p6os-root-a");
        for bad in ["", "A", "c", " a", "ab"] {
            assert_eq!(Slot::parse(bad), None, "{bad:?}");
        }
        for fs in [RootFs::Squashfs, RootFs::Erofs] {
            assert_eq!(RootFs::parse(fs.as_str()), Some(fs));
        }
        assert_eq!(RootFs::parse("ext4"), None);
    }
}
