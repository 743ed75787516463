//! The A/B slot state machine: boot entries, boot counting, blessing, fallback detection and
//! "do not retry a version that rolled back", as values and pure functions.
//!
//! Pure: no file system, no clock, no environment. Callers read the ESP's
//! `/loader/entries/p6os-*.conf` and the agent's record on the state partition into a [`View`],
//! call a function here and carry out the [`Action`]s it returns, in order.
//!
//! Two sources of truth, trusted differently:
//! - The **boot entries** say what the loader will do. systemd-boot 252 renames an entry
//!   `+L-D` to `+(L-1)-(D+1)` before each boot of it; at `+0-D` the entry is bad and sorts last,
//!   so the other slot boots (automatic fallback). Otherwise the entry with the highest BLS
//!   `version` (every entry has `sort-key p6os`) boots. Blessing drops the counter.
//! - The agent's **record** ([`Record`]) says what the agent meant: the trial in progress, why
//!   it failed, which versions rolled back. It may be lost, or be one step behind the entries
//!   after a power cut. Every combination of the two has a defined answer in [`assess`].
//!
//! Invariant ([`invariant_holds`]): at least one blessed entry exists, so a slot that is known
//! to boot is always there to fall back to. Every action list here keeps it after each single
//! action (a power cut can stop the list anywhere), given that each action is atomic on disk
//! (entry files are written as a temporary file, synced and renamed).

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::cmdline::Slot;
use p6os_bundle::floor::Floor;

pub use p6os_layout::entry::{sort_version_of, Counter};
pub use p6os_layout::version::is_valid as is_valid_version;
/// Tries a new slot gets unless the request says otherwise.
pub const DEFAULT_TRIES: u32 = 3;
/// The fallback reason when the failed slot never reported one (it did not reach the agent,
/// or the record was lost).
pub const DEFAULT_FALLBACK_REASON: &str = "the new slot did not come up (boot tries exhausted)";
/// The reason recorded for a rollback the operator asked for.
pub const REQUESTED_ROLLBACK_REASON: &str = "rolled back on request";
/// The record keeps at most this many rolled-back versions (the oldest are dropped).
pub const MAX_ROLLED_BACK: usize = 32;

/// One p6os boot entry on the ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File name under `/loader/entries/`, counter included.
    pub file_name: String,
    /// The image version in the file name.
    pub image_version: String,
    pub slot: Slot,
    pub counter: Counter,
    /// The leading integer of the entry's BLS `version` field ([`sort_version_of`]): the loader
    /// boots the highest first.
    pub sort_version: u64,
}

impl Entry {
    /// An entry from its file name and the text of its BLS `version` field; `None` when the
    /// file name is not a p6os entry name.
    pub fn from_file(file_name: &str, bls_version: &str) -> Option<Entry> {
        let (image_version, slot, counter) = parse_entry_name(file_name)?;
        Some(Entry {
            file_name: file_name.to_string(),
            image_version,
            slot,
            counter,
            sort_version: sort_version_of(bls_version),
        })
    }
}

/// Parses `p6os-<version>-<a|b>[+LEFT[-DONE]].conf` with the on-disk contract's reader
/// ([`p6os_layout::EntryName::parse`]).
pub fn parse_entry_name(file: &str) -> Option<(String, Slot, Counter)> {
    let name = p6os_layout::EntryName::parse(file)?;
    Some((name.version, name.slot, name.counter))
}

/// The entry file name for `version` on `slot`: the inverse of [`parse_entry_name`].
pub fn entry_file_name(version: &str, slot: Slot, counter: Counter) -> String {
    p6os_layout::EntryName::new(version, slot, counter).file_name()
}

/// Compares image versions: the on-disk contract's order, the same as the bundle's
/// compatibility check (runs of digits as numbers, letters as text, a number above text;
/// further numbers make a version newer, further text older: `1.0.0-rc1 < 1.0.0 < 1.0.0-1`).
pub use p6os_layout::version::compare as compare_versions;

/// The agent's record on the state partition (JSON). Every field has a default and unknown
/// fields are ignored: after a rollback an older agent reads what a newer one wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    /// The slot on trial (written, not blessed yet), if any.
    pub trial: Option<Trial>,
    /// Versions that rolled back, oldest first, each once: not installed again unless the
    /// request says `allow_retry`.
    pub rolled_back: Vec<RolledBack>,
    /// What happened to the last upgrade (reported to the console).
    pub last_upgrade: Option<Outcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    pub slot: Slot,
    pub version: String,
    /// Why the last health check of this trial failed, if one did.
    #[serde(default)]
    pub last_failure: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledBack {
    pub version: String,
    pub reason: String,
}

/// The outcome of the last upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Written into `slot`, on trial.
    Installed { version: String, slot: Slot },
    /// Passed its health checks: blessed.
    Blessed { version: String, slot: Slot },
    /// Left: failed its trial, or rolled back on request.
    RolledBack {
        version: String,
        slot: Slot,
        reason: String,
    },
    /// Never got to run (interrupted before its boot entry was written).
    Failed { version: String, reason: String },
}

/// Why the initramfs could not start a slot (its root did not verify or mount, its init was
/// missing): written to the state partition before the reboot, read by the slot that runs
/// next, so a fallback says why instead of "did not come up".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootFailure {
    pub slot: Slot,
    pub version: String,
    pub reason: String,
}

impl Record {
    /// The record with `failure` as its trial's reason, when the failure is that trial's and
    /// the trial has no reason of its own yet (a failed health check says more).
    pub fn with_boot_failure(mut self, failure: &BootFailure) -> Record {
        // The loader reports entry names in lower case: versions compare without case.
        if let Some(t) = self.trial.as_mut().filter(|t| {
            t.slot == failure.slot
                && t.version.eq_ignore_ascii_case(&failure.version)
                && t.last_failure.is_none()
        }) {
            t.last_failure = Some(failure.reason.clone());
        }
        self
    }

    /// `version` has rolled back before: its reason.
    pub fn rolled_back_reason(&self, version: &str) -> Option<&str> {
        self.rolled_back
            .iter()
            .find(|r| r.version == version)
            .map(|r| r.reason.as_str())
    }

    /// Adds `version` to `rolled_back` unless it is there (the first reason stays), dropping
    /// the oldest beyond [`MAX_ROLLED_BACK`].
    fn push_rolled_back(&mut self, version: &str, reason: &str) {
        if self.rolled_back_reason(version).is_none() {
            self.rolled_back.push(RolledBack {
                version: version.to_string(),
                reason: reason.to_string(),
            });
        }
        let excess = self.rolled_back.len().saturating_sub(MAX_ROLLED_BACK);
        self.rolled_back.drain(..excess);
    }

    fn forget_rolled_back(&mut self, version: &str) {
        self.rolled_back.retain(|r| r.version != version);
    }
}

/// What the agent knows at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The slot running now (`p6os.slot=`).
    pub booted: Slot,
    /// The p6os entries on the ESP: normally at most one per slot. Extra entries of a slot
    /// are corrupt leftovers: [`View::entry`] uses the one with the highest `sort_version`.
    pub entries: Vec<Entry>,
    pub record: Record,
}

impl View {
    /// The entry of `slot`: the one with the highest `sort_version` (then file name).
    pub fn entry(&self, slot: Slot) -> Option<&Entry> {
        entry_of(&self.entries, slot)
    }
}

/// The entry of `slot` among `entries` (see [`View::entry`]).
pub fn entry_of(entries: &[Entry], slot: Slot) -> Option<&Entry> {
    entries.iter().filter(|e| e.slot == slot).max_by(|a, b| {
        a.sort_version
            .cmp(&b.sort_version)
            .then_with(|| a.file_name.cmp(&b.file_name))
    })
}

/// At least one blessed entry exists: a slot known to boot is there to fall back to.
pub fn invariant_holds(entries: &[Entry]) -> bool {
    entries.iter().any(|e| e.counter.is_blessed())
}

/// A change for the caller to carry out, in the order given. Each must be atomic on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Delete `/loader/entries/<file_name>`.
    RemoveEntry { file_name: String },
    /// Write a new entry (temporary file, sync, rename) with `version <sort_version>` and
    /// `sort-key p6os`, booting `/p6os/<slot>/`.
    WriteEntry(Entry),
    /// Rename an entry (blessing drops the counter).
    RenameEntry { from: String, to: String },
    /// Rewrite an entry with `version <sort_version>` (temporary file, sync, rename).
    SetSortVersion {
        file_name: String,
        sort_version: u64,
    },
    /// Write the record (temporary file, sync, rename).
    SaveRecord(Record),
    /// Reboot (after everything before it is on disk).
    Reboot,
}

/// What to do at boot, from [`assess`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    /// The booted slot has no p6os entry (a direct kernel boot, a hand-made entry, or the ESP
    /// was unreadable): the agent changes no entry and no record.
    Unmanaged { slot: Slot },
    /// The booted slot is on trial: run the health checks, then [`after_health`].
    /// `recorded` is false when the record does not know this trial (record lost, or a power
    /// cut between writing the entry and saving the record): health decides all the same.
    RunHealthChecks {
        slot: Slot,
        version: String,
        recorded: bool,
    },
    /// The booted slot is blessed and the other slot's trial failed (its entry is bad, or it
    /// was started and the record knows it): the loader fell back. [`settle`] records it and
    /// removes the failed entry.
    FellBack {
        bad_slot: Slot,
        version: String,
        reason: String,
    },
    /// The booted slot is blessed and the record still holds a trial that the entries say is
    /// over without a fallback: it was blessed (power cut between the rename and saving the
    /// record), or it never got its entry (interrupted upgrade). [`settle`] saves `outcome`.
    StaleTrial { outcome: Outcome },
    /// Blessed, nothing to do now (a trial entry not started yet is left to the loader).
    Good,
}

/// Decides what this boot means, at the start of a boot (not between an upgrade's actions and
/// its reboot), from the booted slot's entry, the other slot's entry and the record's trial,
/// in this order of precedence:
///
/// | booted entry | other entry and record                                   | answer |
/// |--------------|----------------------------------------------------------|--------|
/// | missing      | anything                                                 | `Unmanaged` |
/// | trial (`+0-D` included: the loader renamed it for this, its last, try) | anything | `RunHealthChecks` |
/// | blessed      | trial, bad (`+0-D`)                                      | `FellBack` |
/// | blessed      | trial, started (`done > 0`), the record's trial is on that slot | `FellBack` |
/// | blessed      | trial otherwise: not started yet, or unknown to the record | `Good` (pending, left to the loader) |
/// | blessed      | the record's trial matches a blessed entry (either slot) | `StaleTrial` (blessed) |
/// | blessed      | the record's trial matches no entry                      | `StaleTrial` (failed) |
/// | blessed      | no trial in the record                                   | `Good` |
///
/// The fallback reason is the record's `last_failure` for that version, else the reason it
/// was rolled back with before, else [`DEFAULT_FALLBACK_REASON`].
pub fn assess(view: &View) -> Assessment {
    let booted = view.booted;
    let Some(mine) = view.entry(booted) else {
        return Assessment::Unmanaged { slot: booted };
    };
    let trial = view.record.trial.as_ref();
    if !mine.counter.is_blessed() {
        return Assessment::RunHealthChecks {
            slot: booted,
            version: mine.image_version.clone(),
            recorded: trial.is_some_and(|t| t.slot == booted && t.version == mine.image_version),
        };
    }
    if let Some(theirs) = view
        .entry(booted.other())
        .filter(|e| !e.counter.is_blessed())
    {
        let recorded = trial.filter(|t| t.slot == theirs.slot);
        let started = matches!(theirs.counter, Counter::Trial { done, .. } if done > 0);
        if theirs.counter.is_bad() || (recorded.is_some() && started) {
            let version = &theirs.image_version;
            let reason = recorded
                .filter(|t| &t.version == version)
                .and_then(|t| t.last_failure.as_deref())
                .or_else(|| view.record.rolled_back_reason(version))
                .unwrap_or(DEFAULT_FALLBACK_REASON);
            return Assessment::FellBack {
                bad_slot: theirs.slot,
                version: version.clone(),
                reason: reason.to_string(),
            };
        }
    }
    let Some(trial) = trial else {
        return Assessment::Good;
    };
    let outcome = match view.entry(trial.slot) {
        // The other slot's trial, not started yet: pending (the booted slot's entry is blessed).
        Some(e) if !e.counter.is_blessed() => return Assessment::Good,
        Some(e) if e.image_version == trial.version => Outcome::Blessed {
            version: trial.version.clone(),
            slot: trial.slot,
        },
        _ => Outcome::Failed {
            version: trial.version.clone(),
            reason: format!(
                "interrupted: slot {} has no boot entry for version {}",
                trial.slot, trial.version
            ),
        },
    };
    Assessment::StaleTrial { outcome }
}

/// The actions that bring the ESP and the record in line with an [`assess`]ment: for
/// `FellBack`, save [`record_fallback`] then remove the failed slot's trial entries (record
/// first: a power cut in between gives the same `FellBack` again, now with the reason from
/// `rolled_back`); for `StaleTrial`, save the record with the trial cleared. Nothing for the
/// others.
pub fn settle(view: &View, assessment: &Assessment) -> Vec<Action> {
    match assessment {
        Assessment::FellBack {
            bad_slot,
            version,
            reason,
        } => {
            let record = record_fallback(&view.record, *bad_slot, version, reason);
            let mut actions = vec![Action::SaveRecord(record)];
            actions.extend(
                view.entries
                    .iter()
                    .filter(|e| e.slot == *bad_slot && !e.counter.is_blessed())
                    .map(|e| Action::RemoveEntry {
                        file_name: e.file_name.clone(),
                    }),
            );
            actions
        }
        Assessment::StaleTrial { outcome } => {
            let mut record = view.record.clone();
            record.trial = None;
            if let Outcome::Blessed { version, .. } = outcome {
                record.forget_rolled_back(version);
            }
            record.last_upgrade = Some(outcome.clone());
            vec![Action::SaveRecord(record)]
        }
        Assessment::Unmanaged { .. } | Assessment::RunHealthChecks { .. } | Assessment::Good => {
            Vec::new()
        }
    }
}

/// The record after a fallback from `bad_slot`: no trial, `version` in `rolled_back` (once;
/// an earlier reason stays), `last_upgrade` rolled back with `reason`.
pub fn record_fallback(record: &Record, bad_slot: Slot, version: &str, reason: &str) -> Record {
    let mut record = record.clone();
    record.trial = None;
    record.push_rolled_back(version, reason);
    record.last_upgrade = Some(Outcome::RolledBack {
        version: version.to_string(),
        slot: bad_slot,
        reason: reason.to_string(),
    });
    record
}

/// The result of the health checks of a trial boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthResult {
    Passed,
    Failed(String),
}

/// What to do once the health checks of the booted slot have a result.
///
/// - Passed: bless the entry (rename it without counter), then save the record: no trial,
///   `last_upgrade` blessed, the version no longer in `rolled_back` (a retry that passed).
/// - Failed: save the reason as the trial's `last_failure`, then reboot; the loader counts
///   down and, once no tries are left, boots the other slot. On the last try (`+0-D`) with no
///   blessed entry on the other slot, a reboot would only start this entry again (a boot
///   loop), so the agent stays up and just records the failure.
///
/// A trial the record does not know is recorded from its entry. When the booted slot's entry
/// is missing or blessed, health results change nothing (empty list): the agent never reboots
/// away from the only slot known to boot.
pub fn after_health(view: &View, result: &HealthResult) -> Vec<Action> {
    let booted = view.booted;
    let Some(mine) = view.entry(booted) else {
        return Vec::new();
    };
    let Counter::Trial { left, .. } = mine.counter else {
        return Vec::new();
    };
    let version = &mine.image_version;
    let mut record = view.record.clone();
    match result {
        HealthResult::Passed => {
            record.trial = None;
            record.forget_rolled_back(version);
            record.last_upgrade = Some(Outcome::Blessed {
                version: version.clone(),
                slot: booted,
            });
            vec![
                Action::RenameEntry {
                    from: mine.file_name.clone(),
                    to: entry_file_name(version, booted, Counter::Blessed),
                },
                Action::SaveRecord(record),
            ]
        }
        HealthResult::Failed(reason) => {
            record.trial = Some(Trial {
                slot: booted,
                version: version.clone(),
                last_failure: Some(reason.clone()),
            });
            let fallback = view
                .entry(booted.other())
                .is_some_and(|e| e.counter.is_blessed());
            let mut actions = vec![Action::SaveRecord(record)];
            if left > 0 || fallback {
                actions.push(Action::Reboot);
            }
            actions
        }
    }
}

/// A request to install `version` into the slot not booted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    pub version: String,
    /// Install even if `version` is not newer than the booted one.
    pub allow_downgrade: bool,
    /// Install even if `version` rolled back before.
    pub allow_retry: bool,
    /// Boot tries of the new slot (the `+N` of its entry).
    pub tries: u32,
}

/// How to carry out an upgrade: [`UpgradePlan::before_write`], then write the slot, its
/// kernel and initramfs, then [`UpgradePlan::after_write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradePlan {
    /// The slot to write: the one not booted.
    pub target: Slot,
    pub version: String,
    /// The target slot's entries, removed before a byte of the slot is written, so that no
    /// entry ever points at a half-written slot. Usually one (or none in a fresh image).
    pub remove_entries: Vec<String>,
    /// The entry to write once the slot is complete: `+tries`, and a `sort_version` above
    /// every existing entry's so that the loader boots it next.
    pub new_entry: Entry,
    /// The record to save after the entry: the trial, `last_upgrade` installed.
    pub record: Record,
}

impl UpgradePlan {
    /// Before the slot is written: remove the target slot's entries.
    pub fn before_write(&self) -> Vec<Action> {
        self.remove_entries
            .iter()
            .map(|f| Action::RemoveEntry {
                file_name: f.clone(),
            })
            .collect()
    }

    /// After the slot, kernel and initramfs are written and synced: write the entry, save the
    /// record, reboot. (A power cut before the record is saved boots the new slot all the
    /// same, as an unrecorded trial; one before the entry is written leaves a record whose
    /// trial has no entry: `StaleTrial`, failed, retried without `allow_retry`.)
    pub fn after_write(&self) -> Vec<Action> {
        vec![
            Action::WriteEntry(self.new_entry.clone()),
            Action::SaveRecord(self.record.clone()),
            Action::Reboot,
        ]
    }
}

/// Why a plan was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the booted slot {slot} has no p6os boot entry: not changing the boot entries")]
    NoBootedEntry { slot: Slot },
    #[error(
        "the booted slot {slot} (version {version}) is on trial and not blessed yet: the other \
         slot is the only fallback and must not be overwritten"
    )]
    BootedNotBlessed { slot: Slot, version: String },
    #[error(
        "invalid version {version:?}: expected 1 to 64 letters, digits, '.', '_', '+', '~' or '-'"
    )]
    InvalidVersion { version: String },
    #[error("at least one boot try is needed")]
    NoTries,
    #[error(
        "version {version} rolled back before ({reason}): not installing it again unless a retry \
         is allowed"
    )]
    RolledBackBefore { version: String, reason: String },
    #[error(
        "version {version} is not newer than the booted version {booted}: not installing it \
         unless a downgrade is allowed"
    )]
    NotNewer { version: String, booted: String },
    #[error("the boot entries' versions are exhausted (an entry has version {max})")]
    SortVersionExhausted { max: u64 },
    #[error("cannot roll back: slot {slot} has no boot entry")]
    NoRollbackTarget { slot: Slot },
    #[error("cannot roll back: slot {slot} (version {version}) was never blessed")]
    RollbackTargetNotBlessed { slot: Slot, version: String },
    #[error(
        "cannot roll back: slot {slot} holds version {version}, below this device's security \
         floor {floor}: it is never booted again by choice"
    )]
    RollbackBelowFloor {
        slot: Slot,
        version: String,
        floor: String,
    },
}

/// The `sort_version` above every entry's.
fn next_sort_version(entries: &[Entry]) -> Result<u64, Refusal> {
    let max = entries.iter().map(|e| e.sort_version).max().unwrap_or(0);
    max.checked_add(1)
        .ok_or(Refusal::SortVersionExhausted { max })
}

/// Plans writing `request.version` into the slot not booted. Refused (in this order) when
/// the booted slot has no entry or is not blessed (its fallback must stay), the version is not
/// a valid name, `tries` is 0, the version rolled back before (unless `allow_retry`), or it is
/// not newer than the booted slot's version by [`compare_versions`] (unless
/// `allow_downgrade`).
pub fn plan_upgrade(view: &View, request: &UpgradeRequest) -> Result<UpgradePlan, Refusal> {
    let booted = view.booted;
    let mine = view
        .entry(booted)
        .ok_or(Refusal::NoBootedEntry { slot: booted })?;
    if !mine.counter.is_blessed() {
        return Err(Refusal::BootedNotBlessed {
            slot: booted,
            version: mine.image_version.clone(),
        });
    }
    let version = &request.version;
    if !is_valid_version(version) {
        return Err(Refusal::InvalidVersion {
            version: version.clone(),
        });
    }
    if request.tries == 0 {
        return Err(Refusal::NoTries);
    }
    if let Some(reason) = view.record.rolled_back_reason(version) {
        if !request.allow_retry {
            return Err(Refusal::RolledBackBefore {
                version: version.clone(),
                reason: reason.to_string(),
            });
        }
    }
    if !request.allow_downgrade && compare_versions(version, &mine.image_version).is_le() {
        return Err(Refusal::NotNewer {
            version: version.clone(),
            booted: mine.image_version.clone(),
        });
    }
    let target = booted.other();
    let sort_version = next_sort_version(&view.entries)?;
    let counter = Counter::Trial {
        left: request.tries,
        done: 0,
    };
    let mut record = view.record.clone();
    record.trial = Some(Trial {
        slot: target,
        version: version.clone(),
        last_failure: None,
    });
    record.last_upgrade = Some(Outcome::Installed {
        version: version.clone(),
        slot: target,
    });
    Ok(UpgradePlan {
        target,
        version: version.clone(),
        remove_entries: view
            .entries
            .iter()
            .filter(|e| e.slot == target)
            .map(|e| e.file_name.clone())
            .collect(),
        new_entry: Entry {
            file_name: entry_file_name(version, target, counter),
            image_version: version.clone(),
            slot: target,
            counter,
            sort_version,
        },
        record,
    })
}

/// Plans going back to the other slot: give its entry the highest `sort_version`, save the
/// record, remove the booted slot's trial entries (if it is on trial), reboot. Only to a
/// blessed entry (a missing or trial one is refused), and never to one whose version is below
/// the security `floor` in force (`p6os_bundle::floor`).
///
/// The version left is recorded as rolled back ([`REQUESTED_ROLLBACK_REASON`]), so the agent
/// does not upgrade to it again by itself; the version gone back to leaves `rolled_back`.
/// A power cut after the first action already boots the other slot; one before the removal
/// leaves a trial entry that [`assess`] reports as `FellBack` once bad, or that sorts below
/// the blessed one until the next upgrade removes it.
pub fn plan_rollback(view: &View, floor: Option<&Floor>) -> Result<Vec<Action>, Refusal> {
    let booted = view.booted;
    let target = booted.other();
    let theirs = view
        .entry(target)
        .ok_or(Refusal::NoRollbackTarget { slot: target })?;
    if !theirs.counter.is_blessed() {
        return Err(Refusal::RollbackTargetNotBlessed {
            slot: target,
            version: theirs.image_version.clone(),
        });
    }
    if let Some(floor) = floor.filter(|f| f.is_above(&theirs.image_version)) {
        return Err(Refusal::RollbackBelowFloor {
            slot: target,
            version: theirs.image_version.clone(),
            floor: floor.to_string(),
        });
    }
    let mut actions = vec![Action::SetSortVersion {
        file_name: theirs.file_name.clone(),
        sort_version: next_sort_version(&view.entries)?,
    }];
    let mut record = view.record.clone();
    record.forget_rolled_back(&theirs.image_version);
    match view.entry(booted) {
        Some(mine) => {
            let version = &mine.image_version;
            let record = record_fallback(&record, booted, version, REQUESTED_ROLLBACK_REASON);
            actions.push(Action::SaveRecord(record));
            actions.extend(
                view.entries
                    .iter()
                    .filter(|e| e.slot == booted && !e.counter.is_blessed())
                    .map(|e| Action::RemoveEntry {
                        file_name: e.file_name.clone(),
                    }),
            );
        }
        None => {
            record.trial = None;
            actions.push(Action::SaveRecord(record));
        }
    }
    actions.push(Action::Reboot);
    Ok(actions)
}
