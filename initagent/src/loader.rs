//! The boot loader's EFI variables, for both stages: mounts efivarfs where `plan` says so
//! (tolerating failure) and reads the variables (`efivar` decodes them). Their absence
//! (direct kernel boot, no UEFI, efivarfs not mountable) is never an error.

use std::fs;
use std::path::Path;

use crate::efivar::{self, Lookup, EFIVARS_DIR};
use crate::mountinfo;
use crate::plan::{self, Efivarfs};
use crate::sys;

/// What the boot loader left for the initramfs stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderVariables {
    /// `LoaderEntrySelected`: the boot entry started.
    pub entry: Lookup,
    /// `LoaderDevicePartUUID`: PARTUUID of the boot partition (the ESP), lowercase.
    pub device_part_uuid: Lookup,
}

/// Mounts efivarfs at /sys/firmware/efi/efivars unless it is mounted or this is not a
/// UEFI boot. A failure is a warning: the variables are then just absent.
pub fn ensure_efivarfs() {
    let points = fs::read_to_string("/proc/self/mountinfo")
        .map(|text| mountinfo::mount_points(&text))
        .unwrap_or_default();
    match plan::plan_efivarfs(&points, Path::new(EFIVARS_DIR).is_dir()) {
        Efivarfs::AlreadyMounted => {}
        Efivarfs::NotUefi => info!("no {EFIVARS_DIR}: not booted through UEFI"),
        Efivarfs::Mount(m) => match sys::mount(&m, "efivarfs") {
            Ok(()) => info!("{}", plan::describe_mount(&m, "efivarfs")),
            // Mounted after all (mountinfo unreadable): the same filesystem, fine.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => {
                warn!("cannot mount efivarfs on {EFIVARS_DIR}: {e}; no boot loader variables")
            }
        },
    }
}

/// Reads one Boot Loader Interface variable with `decode`.
pub fn read(name: &str, decode: fn(&[u8]) -> Option<String>) -> Lookup {
    let path = efivar::loader_variable_path(name);
    Lookup::from_read(sys::read_capped(&path, efivar::MAX_VARIABLE_SIZE), decode)
}

/// `LoaderEntrySelected`.
pub fn read_entry() -> Lookup {
    read(efivar::LOADER_ENTRY_SELECTED, efivar::decode_string)
}

/// `LoaderEntrySelected`, when it is set and readable (efivarfs mounted: by the initramfs, or
/// by systemd).
pub fn selected_entry() -> Option<String> {
    match read_entry() {
        Lookup::Found(entry) => Some(entry),
        _ => None,
    }
}

/// The firmware's `SecureBoot` variable: whether it checks what it starts. `None` when it
/// cannot be read (not UEFI, no efivarfs).
pub fn secure_boot() -> Option<bool> {
    let bytes = sys::read_capped(&efivar::secure_boot_path(), efivar::MAX_VARIABLE_SIZE).ok()?;
    efivar::decode_flag(&bytes)
}

/// Both variables the initramfs stage uses.
pub fn read_all() -> LoaderVariables {
    LoaderVariables {
        entry: read_entry(),
        device_part_uuid: read(efivar::LOADER_DEVICE_PART_UUID, efivar::decode_part_uuid),
    }
}
