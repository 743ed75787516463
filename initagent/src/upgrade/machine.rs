//! The running machine as the upgrade commands see it: the booted slot, the boot disk's
//! partitions, the ESP (mounted while the `Machine` lives, repaired first when it is opened for
//! writing: `esp`), the boot entries, the record, the trusted keys.
//! And the executor of `slots::Action`s: the only code that changes boot entries.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use p6os_bundle::floor::{self, Floor};
use p6os_bundle::keys::PublicKey;
use p6os_config::health::TRUSTED_KEYS_DIR;
use p6os_layout::esp;

pub use super::esp::ESP_MOUNT;
use super::esp::{Access, EspUse};
use super::install::{replace_file, sync_dir};
use crate::cmdline::{self, Slot};
use crate::mountinfo;
use crate::plan::{ESP_PARTLABEL, STATE_DIR};
use crate::slots::{self, Action, Entry, Record, View};
use crate::sys;
use p6os_layout::manifest::SlotIdentity as Manifest;
use p6os_layout::slot::MANIFEST_PATH;

pub const RECORD_PATH: &str = "/var/lib/p6os/slots.json";
/// The security floor (one version and a newline): the highest `security_floor` of a slot
/// this device blessed. Never lowered by the agent; every install below it is refused.
pub const FLOOR_PATH: &str = "/var/lib/p6os/security-floor";

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("{0}")]
    Context(String),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> MachineError + 'a {
    move |source| MachineError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

pub struct Machine {
    pub booted: Slot,
    /// `/dev/...` of a partition by GPT name, on the boot disk.
    pub partitions: Vec<(String, String)>,
    pub esp: PathBuf,
    pub identity: Manifest,
    pub arch: String,
    /// The ESP stays mounted at `esp` while this lives.
    _esp: EspUse,
}

impl Machine {
    /// Reads what is running; repairs the ESP and mounts it read-write at [`ESP_MOUNT`] (for
    /// commands that change it: upgrade, rollback, the boot assessment).
    pub fn open() -> Result<Machine, MachineError> {
        Machine::open_with(Access::Write)
    }

    /// Reads what is running; mounts the ESP read-only at [`ESP_MOUNT`] (status, heartbeats).
    pub fn open_read_only() -> Result<Machine, MachineError> {
        Machine::open_with(Access::Read)
    }

    fn open_with(access: Access) -> Result<Machine, MachineError> {
        let text = fs::read_to_string("/proc/cmdline")
            .map_err(io_err("cannot read", Path::new("/proc/cmdline")))?;
        let booted = cmdline::slot_from_cmdline(&text, crate::loader::selected_entry().as_deref())
            .map_err(|e| MachineError::Context(e.to_string()))?;
        let identity = fs::read_to_string(MANIFEST_PATH)
            .map_err(|e| e.to_string())
            .and_then(|t| Manifest::parse(&t).map_err(|e| e.to_string()))
            .map_err(|e| MachineError::Context(format!("{MANIFEST_PATH}: {e}")))?;
        let partitions = boot_disk_partitions()?;
        let device = partitions
            .iter()
            .find(|(l, _)| l == ESP_PARTLABEL)
            .map(|(_, d)| d.clone())
            .ok_or_else(|| {
                MachineError::Context(format!("no partition {ESP_PARTLABEL} on the boot disk"))
            })?;
        let esp_use = EspUse::open(&device, access).map_err(MachineError::Context)?;
        Ok(Machine {
            booted,
            partitions,
            esp: PathBuf::from(ESP_MOUNT),
            identity,
            arch: std::env::consts::ARCH.to_string(),
            _esp: esp_use,
        })
    }

    pub fn device(&self, label: &str) -> Result<&str, MachineError> {
        self.partitions
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, d)| d.as_str())
            .ok_or_else(|| MachineError::Context(format!("no partition {label} on the boot disk")))
    }

    /// The p6os entries on the ESP with their BLS `version`.
    pub fn entries(&self) -> Result<Vec<Entry>, MachineError> {
        read_entries(&self.esp)
    }

    /// The security floor in force: the highest of [`FLOOR_PATH`] and the running slot's own
    /// `security_floor`; a damaged floor file stands at the running version (fails closed).
    pub fn floor(&self) -> Option<Floor> {
        floor::effective(
            &read_floor_at(Path::new(FLOOR_PATH)),
            FLOOR_PATH,
            &self.identity.version,
            self.identity.security_floor.as_deref(),
        )
    }

    pub fn view(&self) -> Result<View, MachineError> {
        Ok(View {
            booted: self.booted,
            entries: self.entries()?,
            record: read_record(),
        })
    }

    /// Size in bytes of the partition `label`.
    pub fn partition_bytes(&self, label: &str) -> Result<u64, MachineError> {
        let dev = self.device(label)?;
        let name = dev.trim_start_matches("/dev/");
        let path = PathBuf::from(format!("/sys/class/block/{name}/size"));
        let sectors: u64 = fs::read_to_string(&path)
            .map_err(io_err("cannot read", &path))?
            .trim()
            .parse()
            .map_err(|_| MachineError::Context(format!("{} is not a number", path.display())))?;
        Ok(sectors * 512)
    }
}

/// The partitions of the disk holding the mounted state partition (the boot disk).
fn boot_disk_partitions() -> Result<Vec<(String, String)>, MachineError> {
    let devices = sys::scan_block_devices();
    let state = fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|t| mountinfo::source_of(&t, STATE_DIR))
        .ok_or_else(|| MachineError::Context(format!("{STATE_DIR} is not mounted")))?;
    let state_name = state.trim_start_matches("/dev/");
    let disk = devices
        .iter()
        .find(|d| d.uevent.devname() == Some(state_name))
        .and_then(|d| d.disk.clone())
        .ok_or_else(|| MachineError::Context(format!("cannot find the disk of {state}")))?;
    Ok(devices
        .iter()
        .filter(|d| d.disk.as_deref() == Some(disk.as_str()))
        .filter_map(|d| {
            Some((
                d.uevent.partname()?.to_string(),
                format!("/dev/{}", d.uevent.devname()?),
            ))
        })
        .collect())
}

/// `/loader/entries` under the ESP's mount point.
fn entries_dir(esp: &Path) -> PathBuf {
    esp.join(esp::ENTRIES_DIR.trim_start_matches('/'))
}

pub fn read_entries(esp: &Path) -> Result<Vec<Entry>, MachineError> {
    let dir = entries_dir(esp);
    let mut entries = Vec::new();
    let list = match fs::read_dir(&dir) {
        Ok(list) => list,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(entries),
        Err(e) => return Err(io_err("cannot list", &dir)(e)),
    };
    for item in list.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        let text = fs::read_to_string(item.path()).unwrap_or_default();
        let bls_version = text
            .lines()
            .find_map(|l| l.strip_prefix("version "))
            .unwrap_or("0")
            .trim()
            .to_string();
        if let Some(e) = Entry::from_file(&name, &bls_version) {
            entries.push(e);
        }
    }
    entries.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    Ok(entries)
}

/// The record; a missing or unreadable one is empty (the entries still tell the truth).
/// The initramfs's note on why the trial did not start (`bootfail`) fills in its reason.
pub fn read_record() -> Record {
    let record: Record = fs::read(RECORD_PATH)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    match crate::bootfail::read() {
        Some(failure) => record.with_boot_failure(&failure),
        None => record,
    }
}

/// The recorded security floor at `path`: absent only when there is no file; a file that
/// cannot be read or does not hold a version is `Damaged` (fails closed: [`floor::effective`]).
pub fn read_floor_at(path: &Path) -> floor::Recorded {
    let damaged = |problem: String| floor::Recorded::Damaged {
        file: path.display().to_string(),
        problem,
    };
    match fs::read_to_string(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => floor::Recorded::Absent,
        Err(e) => damaged(format!("cannot read it: {e}")),
        Ok(text) => {
            let v = text.trim();
            if p6os_layout::version::is_valid(v) {
                floor::Recorded::At(v.to_string())
            } else {
                damaged(format!("`{}` is not a version", v.escape_debug()))
            }
        }
    }
}

/// Records the running slot's floor when it is above the recorded one. A damaged floor file
/// is left as it is (it may have held a higher floor): it keeps failing closed until fixed.
pub fn raise_floor(slot_floor: Option<&str>) {
    let current = match read_floor_at(Path::new(FLOOR_PATH)) {
        floor::Recorded::Absent => None,
        floor::Recorded::At(v) => Some(v),
        floor::Recorded::Damaged { file, problem } => {
            warn!(
                "not recording the security floor: {file} is damaged ({problem}); downgrades and \
                 rollbacks stay refused until it holds a version again"
            );
            return;
        }
    };
    let Some(floor) = p6os_bundle::compat::raise_floor(current.as_deref(), slot_floor) else {
        return;
    };
    match replace_file(Path::new(FLOOR_PATH), format!("{floor}\n").as_bytes()) {
        Ok(()) => info!(
            "security floor raised to {floor} (was {}): older versions are never installed again",
            current.as_deref().unwrap_or("none")
        ),
        Err(e) => warn!(
            "cannot record the security floor {floor}: {}",
            crate::log::error_chain(&e)
        ),
    }
}

pub fn trusted_keys() -> Vec<PublicKey> {
    let mut keys = Vec::new();
    if let Ok(list) = fs::read_dir(TRUSTED_KEYS_DIR) {
        let mut paths: Vec<PathBuf> = list.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            match fs::read_to_string(&p).map(|t| PublicKey::from_file(&t)) {
                Ok(Ok(k)) => keys.push(k),
                Ok(Err(e)) => warn!("ignoring {}: {e}", p.display()),
                Err(e) => warn!("cannot read {}: {e}", p.display()),
            }
        }
    }
    keys
}

/// Entry text needs what the bundle knows; other actions do not.
pub struct EntryText<'a> {
    pub name: &'a str,
    /// A unified kernel image (its own command line), or a kernel and initramfs with these.
    pub boot: EntryFiles<'a>,
}

/// What the new slot's entry starts.
pub enum EntryFiles<'a> {
    Uki,
    Split {
        rootfs_type: p6os_layout::RootFs,
        verity: Option<p6os_layout::verity::Params>,
        kernel_args: &'a [String],
    },
}

pub enum AfterActions {
    Done,
    RebootRequested,
}

/// Carries out `actions` in order, each atomic on disk.
pub fn execute(
    esp: &Path,
    actions: &[Action],
    text: Option<&EntryText>,
) -> Result<AfterActions, MachineError> {
    let dir = entries_dir(esp);
    let mut after = AfterActions::Done;
    for action in actions {
        match action {
            Action::RemoveEntry { file_name } => {
                let path = dir.join(file_name);
                match fs::remove_file(&path) {
                    Ok(()) => info!("removed boot entry {file_name}"),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("cannot remove", &path)(e)),
                }
                sync(&dir)?;
            }
            Action::WriteEntry(e) => {
                let t = text.ok_or_else(|| {
                    MachineError::Context("an entry can only be written during an upgrade".into())
                })?;
                let body = esp::entry_text(
                    &esp::title(t.name, &e.image_version, e.slot),
                    &e.sort_version.to_string(),
                    e.slot,
                    &match &t.boot {
                        EntryFiles::Uki => esp::EntryBoot::Uki,
                        EntryFiles::Split {
                            rootfs_type,
                            verity,
                            kernel_args,
                        } => esp::EntryBoot::Split {
                            options: esp::options(
                                e.slot,
                                *rootfs_type,
                                verity.as_ref(),
                                kernel_args,
                            ),
                        },
                    },
                );
                replace(&dir.join(&e.file_name), body.as_bytes())?;
                sync(&dir)?;
                info!("wrote boot entry {}", e.file_name);
            }
            Action::RenameEntry { from, to } => {
                fs::rename(dir.join(from), dir.join(to))
                    .map_err(io_err("cannot rename", &dir.join(from)))?;
                sync(&dir)?;
                info!("renamed boot entry {from} to {to}");
            }
            Action::SetSortVersion {
                file_name,
                sort_version,
            } => {
                let path = dir.join(file_name);
                let old = fs::read_to_string(&path).map_err(io_err("cannot read", &path))?;
                let new: String = old
                    .lines()
                    .map(|l| {
                        if l.starts_with("version ") {
                            format!("version {sort_version}\n")
                        } else {
                            format!("{l}\n")
                        }
                    })
                    .collect();
                replace(&path, new.as_bytes())?;
                sync(&dir)?;
                info!("boot entry {file_name} now sorts first (version {sort_version})");
            }
            Action::SaveRecord(record) => save_record(record)?,
            Action::Reboot => after = AfterActions::RebootRequested,
        }
    }
    Ok(after)
}

fn replace(path: &Path, data: &[u8]) -> Result<(), MachineError> {
    replace_file(path, data).map_err(|e| MachineError::Context(crate::log::error_chain(&e)))
}

fn sync(dir: &Path) -> Result<(), MachineError> {
    sync_dir(dir).map_err(|e| MachineError::Context(crate::log::error_chain(&e)))
}

pub fn save_record(record: &Record) -> Result<(), MachineError> {
    let path = Path::new(RECORD_PATH);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
    }
    let text = serde_json::to_vec_pretty(record).unwrap_or_default();
    replace(path, &text)?;
    sync(path.parent().unwrap_or(Path::new("/")))
}

/// Whether every slot transition so far kept a blessed entry (logged, never fatal).
pub fn check_invariant(esp: &Path) {
    if let Ok(entries) = read_entries(esp) {
        if !slots::invariant_holds(&entries) {
            warn!("no blessed boot entry on the ESP: the loader has no known-good fallback");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_file_that_does_not_hold_a_version_is_damaged_not_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("security-floor");
        assert_eq!(read_floor_at(&path), floor::Recorded::Absent);
        fs::write(&path, "2.1.0\n").unwrap();
        assert_eq!(read_floor_at(&path), floor::Recorded::At("2.1.0".into()));
        for junk in ["", "\n", "2.1.0 garbage\n", "\u{0}\u{0}\u{0}"] {
            fs::write(&path, junk).unwrap();
            match read_floor_at(&path) {
                floor::Recorded::Damaged { file, problem } => {
                    assert_eq!(file, path.display().to_string());
                    assert!(problem.contains("not a version"), "{problem}");
                }
                other => panic!("{junk:?}: {other:?}"),
            }
        }
        // Not UTF-8, or not a file at all: damaged too.
        fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            read_floor_at(&path),
            floor::Recorded::Damaged { .. }
        ));
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        assert!(matches!(
            read_floor_at(&path),
            floor::Recorded::Damaged { .. }
        ));
    }
}
