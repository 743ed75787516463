//! The ESP while the agent uses it. FAT has no journal, so the ESP is mounted only for as long
//! as a command needs it (an upgrade, a rollback, the boot assessment; status reads mount it
//! read-only) and unmounted at the end, which clears the dirty flag Linux sets on a read-write
//! mount. Before every read-write use, with the ESP not mounted, `p6os_fat` plans and carries
//! out a repair: it frees the clusters no directory entry reaches, removes the leftovers of
//! interrupted writes (`p6os_layout::esp::is_leftover`), brings the FAT copies and FSInfo in
//! line and clears the dirty flag of a volume the power went off under. What it does not
//! understand it leaves alone and logs; the command goes on.
//!
//! One use at a time, across processes: `/run/p6os/esp.lock` (flock) is held while the ESP is
//! mounted; uses nested in one process share the mount.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::sync::Mutex;

use p6os_fat::FatVolume;
use p6os_layout::esp;

use crate::mountinfo;
use crate::sys;

pub const ESP_MOUNT: &str = "/run/p6os/esp";
const LOCK: &str = "/run/p6os/esp.lock";

/// How a command uses the ESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

struct Held {
    users: usize,
    lock: Option<File>,
    /// How we mounted it (`None`: someone else had, and it stays).
    mounted: Option<Access>,
}

static HELD: Mutex<Held> = Mutex::new(Held {
    users: 0,
    lock: None,
    mounted: None,
});

/// A use of the ESP, mounted at [`ESP_MOUNT`]; the last one of the process unmounts it.
pub struct EspUse(());

impl EspUse {
    pub fn open(device: &str, access: Access) -> Result<EspUse, String> {
        let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
        if held.users > 0 {
            if access == Access::Write && held.mounted == Some(Access::Read) {
                sys::remount_read_write_esp(ESP_MOUNT)
                    .map_err(|e| format!("cannot remount the ESP read-write: {e}"))?;
                held.mounted = Some(Access::Write);
            }
            held.users += 1;
            return Ok(EspUse(()));
        }
        sys::mkdir_p(ESP_MOUNT, 0o700).map_err(|e| format!("cannot create {ESP_MOUNT}: {e}"))?;
        let lock = lock()?;
        let mut mounted = Some(access);
        if is_mount_point(ESP_MOUNT) {
            // Left by one of ours that was killed (we hold the lock now): unmount, repair.
            if let Err(e) = sys::unmount(ESP_MOUNT) {
                warn!("the ESP stays mounted at {ESP_MOUNT} ({e}): not repaired");
                mounted = None;
            }
        }
        if mounted.is_some() {
            if access == Access::Write {
                match mounted_elsewhere(device) {
                    Some(at) => warn!("the ESP is mounted at {at}: not repaired"),
                    None => repair(device),
                }
            }
            let result = match access {
                Access::Read => sys::mount_read_only(device, ESP_MOUNT, "vfat"),
                Access::Write => sys::mount_read_write_esp(device, ESP_MOUNT),
            };
            result.map_err(|e| format!("cannot mount the ESP ({device}) on {ESP_MOUNT}: {e}"))?;
        }
        *held = Held {
            users: 1,
            lock: Some(lock),
            mounted,
        };
        Ok(EspUse(()))
    }
}

impl Drop for EspUse {
    fn drop(&mut self) {
        let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
        held.users = held.users.saturating_sub(1);
        if held.users > 0 {
            return;
        }
        if held.mounted.take().is_some() {
            // umount writes what is cached and, after a read-write use, clears the dirty flag.
            if let Err(e) = sys::unmount(ESP_MOUNT) {
                warn!("cannot unmount the ESP from {ESP_MOUNT}: {e}");
            }
        }
        held.lock = None;
    }
}

fn lock() -> Result<File, String> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .map_err(|e| format!("cannot open {LOCK}: {e}"))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| format!("cannot lock {LOCK}: {e}"))?;
    Ok(file)
}

fn mountinfo_text() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
}

fn is_mount_point(path: &str) -> bool {
    mountinfo::mount_points(&mountinfo_text())
        .iter()
        .any(|m| m == path)
}

/// Where `device` is mounted, if anywhere (by someone else: an administrator, systemd).
fn mounted_elsewhere(device: &str) -> Option<String> {
    mountinfo::mounts_of(&mountinfo_text(), device)
        .into_iter()
        .next()
}

/// Repairs the unmounted ESP on `device`; logs what it did, never fails the command.
fn repair(device: &str) {
    match try_repair(device) {
        Ok(false) => {}
        Ok(true) => info!("ESP repaired"),
        Err(e) => warn!("ESP not repaired: {e}"),
    }
}

/// Whether anything was written.
fn try_repair(device: &str) -> Result<bool, String> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|e| format!("cannot open {device}: {e}"))?;
    let size = file
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("cannot size {device}: {e}"))?;
    let mut vol = FatVolume::open(&file, 0, size).map_err(|e| e.to_string())?;
    let plan = vol
        .plan_repair(&esp::is_leftover)
        .map_err(|e| e.to_string())?;
    if plan.is_clean() {
        return Ok(false);
    }
    if !plan.problems.is_empty() {
        return Err(plan.summary());
    }
    info!("ESP: repairing ({device}): {}", plan.summary());
    vol.repair(&plan).map_err(|e| e.to_string())?;
    drop(vol);
    file.sync_all()
        .map_err(|e| format!("cannot fsync {device}: {e}"))?;
    Ok(true)
}
