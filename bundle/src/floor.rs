//! The security floor a device enforces, and where it comes from. Pure.
//!
//! The effective floor is the highest of the floor the device recorded (the highest
//! `security_floor` of a slot it blessed) and the running slot's own `security_floor`. A
//! recorded floor that cannot be read fails closed: the running version stands for it, so
//! nothing older is installed or booted by choice until the file is fixed (upgrades go on).

use std::cmp::Ordering;
use std::fmt;

use crate::compat::compare_versions;

/// What the device's floor file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// No file: no floor recorded yet.
    Absent,
    At(String),
    /// The file exists but does not hold a version (or cannot be read).
    Damaged {
        file: String,
        problem: String,
    },
}

/// The floor in force: nothing below `version` is installed or switched to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floor {
    pub version: String,
    pub source: Source,
}

/// Where the effective floor comes from (for the messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The floor file (or a stand-in named `file`).
    Recorded { file: String },
    /// The running slot's own `security_floor` (signed with it).
    RunningSlot,
    /// The running version, standing in for a damaged floor file.
    Damaged { file: String, problem: String },
}

impl fmt::Display for Floor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.version;
        match &self.source {
            Source::Recorded { file } => {
                write!(f, "{v} (recorded in {file} from a signed release it ran)")
            }
            Source::RunningSlot => write!(f, "{v} (the running slot's own security floor)"),
            Source::Damaged { file, problem } => write!(
                f,
                "{v}, the running version: the floor file {file} is damaged ({problem}), so \
                 nothing older is allowed until it holds a version again (write the highest \
                 security floor this device ran, or remove it)"
            ),
        }
    }
}

impl Floor {
    /// Whether `version` is below this floor.
    pub fn is_above(&self, version: &str) -> bool {
        compare_versions(version, &self.version) == Ordering::Less
    }
}

/// The floor in force on a device running `running_version`, whose slot carries
/// `running_floor`, with `recorded` in its floor file `file`. `None`: no floor.
pub fn effective(
    recorded: &Recorded,
    file: &str,
    running_version: &str,
    running_floor: Option<&str>,
) -> Option<Floor> {
    let from_file = match recorded {
        Recorded::Absent => None,
        Recorded::At(v) => Some(Floor {
            version: v.clone(),
            source: Source::Recorded {
                file: file.to_string(),
            },
        }),
        Recorded::Damaged { file, problem } => Some(Floor {
            version: running_version.to_string(),
            source: Source::Damaged {
                file: file.clone(),
                problem: problem.clone(),
            },
        }),
    };
    let from_slot = running_floor.map(|v| Floor {
        version: v.to_string(),
        source: Source::RunningSlot,
    });
    // The highest; on a tie the file's (a damaged file is named).
    [from_file, from_slot].into_iter().flatten().reduce(|a, b| {
        if compare_versions(&b.version, &a.version) == Ordering::Greater {
            b
        } else {
            a
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/var/lib/p6os/security-floor";

    fn damaged() -> Recorded {
        Recorded::Damaged {
            file: FILE.into(),
            problem: "`garbage!` is not a version".into(),
        }
    }

    #[test]
    fn the_effective_floor_is_the_highest_of_the_file_and_the_running_slot() {
        let at = |v: &str| Recorded::At(v.into());
        let version =
            |r: &Recorded, slot: Option<&str>| effective(r, FILE, "3.0.0", slot).map(|f| f.version);
        assert_eq!(version(&Recorded::Absent, None), None);
        assert_eq!(version(&at("2.0.0"), None), Some("2.0.0".into()));
        assert_eq!(
            version(&Recorded::Absent, Some("2.5.0")),
            Some("2.5.0".into())
        );
        assert_eq!(version(&at("2.0.0"), Some("2.5.0")), Some("2.5.0".into()));
        assert_eq!(version(&at("2.9.0"), Some("2.5.0")), Some("2.9.0".into()));
        let slot = effective(&at("2.0.0"), FILE, "3.0.0", Some("2.5.0")).unwrap();
        assert_eq!(slot.source, Source::RunningSlot);
        assert!(slot.to_string().contains("running slot's own"), "{slot}");
    }

    #[test]
    fn a_damaged_floor_file_fails_closed_at_the_running_version_and_is_named() {
        let floor = effective(&damaged(), FILE, "3.0.0", None).expect("a floor, not none");
        assert_eq!(floor.version, "3.0.0");
        assert!(floor.is_above("2.9.9"));
        assert!(!floor.is_above("3.0.0") && !floor.is_above("3.1.0"));
        let text = floor.to_string();
        assert!(text.contains(FILE) && text.contains("garbage!"), "{text}");
        // A running slot's floor above the running version? Never below it: the higher wins.
        let higher = effective(&damaged(), FILE, "3.0.0", Some("3.0.1")).unwrap();
        assert_eq!(higher.version, "3.0.1");
        // On a tie, the damaged file is what the message names.
        let tie = effective(&damaged(), FILE, "3.0.0", Some("3.0.0")).unwrap();
        assert!(tie.to_string().contains(FILE), "{tie}");
    }
}
