//! Whether a verified bundle may be installed on this device: pure checks, every problem
//! reported, before a byte is written.

use std::cmp::Ordering;

use crate::floor::Floor;
use crate::format::{Manifest, PayloadKind};

/// What the device is.
#[derive(Debug, Clone)]
pub struct Device<'a> {
    /// Image name of the running slot.
    pub name: &'a str,
    pub arch: &'a str,
    /// Image version of the running slot.
    pub version: &'a str,
    pub agent_version: &'a str,
    /// Size of the slot partition the bundle would go to.
    pub slot_bytes: u64,
    /// The security floor in force ([`crate::floor::effective`]): nothing below it is
    /// installed, whatever [`Downgrade`] says.
    pub floor: Option<&'a Floor>,
}

/// Whether a version older than the running one may be installed (never one below the floor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Downgrade {
    Refuse,
    Allow,
}

/// Every reason not to install `m` (empty: go ahead).
pub fn problems(m: &Manifest, device: &Device, downgrade: Downgrade) -> Vec<String> {
    let mut out = Vec::new();
    if m.arch != device.arch {
        out.push(format!(
            "the bundle is for {}, this device is {}",
            m.arch, device.arch
        ));
    }
    if !m.compatible.iter().any(|c| c == device.name) {
        out.push(format!(
            "the bundle is for images {}, this device runs `{}`",
            m.compatible
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", "),
            device.name
        ));
    }
    if compare_versions(device.agent_version, &m.min_agent_version) == Ordering::Less {
        out.push(format!(
            "the bundle needs agent {} or newer, this one is {}",
            m.min_agent_version, device.agent_version
        ));
    }
    if let Some(root) = m.payload(PayloadKind::Rootfs) {
        if root.size > device.slot_bytes {
            out.push(format!(
                "the root filesystem ({} bytes) is larger than the slot ({} bytes)",
                root.size, device.slot_bytes
            ));
        }
    }
    if let Some(floor) = &m.security_floor {
        if compare_versions(&m.version, floor) == Ordering::Less {
            out.push(format!(
                "the bundle's version {} is below its own security floor {floor} (built wrongly)",
                m.version
            ));
        }
    }
    if let Some(floor) = device.floor {
        if floor.is_above(&m.version) {
            out.push(format!(
                "version {} is below this device's security floor {floor}: it is never installed, whoever asks",
                m.version
            ));
        }
    }
    if downgrade == Downgrade::Refuse
        && compare_versions(&m.version, device.version) != Ordering::Greater
    {
        out.push(format!(
            "version {} is not newer than the running {} (use --allow-downgrade to install it anyway)",
            m.version, device.version
        ));
    }
    out
}

/// The order of image versions: the on-disk contract's ([`p6os_layout::version::compare`]).
pub use p6os_layout::version::compare as compare_versions;

/// The floor to record when a slot whose floor is `slot` was blessed over the recorded
/// `current`: `Some` only when it rises (a floor is never lowered).
pub fn raise_floor(current: Option<&str>, slot: Option<&str>) -> Option<String> {
    let slot = slot?;
    match current {
        Some(c) if compare_versions(slot, c) != Ordering::Greater => None,
        _ => Some(slot.to_string()),
    }
}
