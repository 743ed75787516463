//! The ESP: systemd-boot, its configuration, one kernel, initramfs and manifest per slot, and
//! the site configuration; plus the boot entry text and the kernel command line of a slot.
//!
//! ```text
//! /EFI/BOOT/BOOTX64.EFI                              systemd-boot
//! /loader/loader.conf                                timeout 0, editor no, default p6os-*
//! /loader/entries/p6os-<ver>-<slot>[+L[-D]].conf     Boot Loader Specification type #1
//! /p6os/<slot>/p6os.efi, manifest.json               per slot: a unified kernel image
//! /p6os/<slot>/vmlinuz, initrd.img, manifest.json    per slot, from bundles of older builders
//! /p6os/unattended.yaml                              optional site configuration
//! ```
//! Paths are absolute and `/`-separated; callers join them to a mount point or hand them to the
//! FAT writer.

use crate::slot::{RootFs, Slot};

/// The removable-media boot path that firmware tries without a boot variable.
pub const BOOTLOADER: &str = "/EFI/BOOT/BOOTX64.EFI";
pub const LOADER_CONF: &str = "/loader/loader.conf";
/// The directory of boot entries.
pub const ENTRIES_DIR: &str = "/loader/entries";
/// The site configuration `p6os config inject` and `p6os flash --config` write.
pub const UNATTENDED: &str = "/p6os/unattended.yaml";
/// File names of a slot's directory, in the order upgrades write them (the manifest last).
pub const KERNEL_FILE: &str = "vmlinuz";
/// The unified kernel image (kernel, initramfs, command line, os-release; signed for Secure
/// Boot), started by the entry's `efi` line.
pub const UKI_FILE: &str = "p6os.efi";
pub const INITRD_FILE: &str = "initrd.img";
pub const MANIFEST_FILE: &str = "manifest.json";
/// Suffix of the temporary names ESP files are written under (then fsync, rename).
pub const TEMP_SUFFIX: &str = ".new";
/// Directories the agent writes files in on upgrades (entries, and each slot's files).
const WRITTEN_DIRS: [&str; 3] = [ENTRIES_DIR, "/p6os/a", "/p6os/b"];

/// The kernel command line's console (the serial port QEMU and most appliances expose).
const CONSOLE: &str = "console=ttyS0";

/// `/p6os/<slot>`: the slot's kernel, initramfs and manifest.
pub fn slot_dir(slot: Slot) -> String {
    format!("/p6os/{slot}")
}

/// `/p6os/<slot>/<file>`.
pub fn slot_file(slot: Slot, file: &str) -> String {
    format!("/p6os/{slot}/{file}")
}

/// `/loader/entries/<file name>`.
pub fn entry_path(file_name: &str) -> String {
    format!("{ENTRIES_DIR}/{file_name}")
}

/// The temporary name of `name` while it is written: `name.new`.
pub fn temp_name(name: &str) -> String {
    format!("{name}{TEMP_SUFFIX}")
}

/// Whether the file `name` in the ESP directory `dir` is the leftover of a write the power cut
/// short: a temporary name in a directory the agent writes. FAT names are case-insensitive,
/// and a leftover may have lost its long name (`VMLINU~1.NEW`).
pub fn is_leftover(dir: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.len() > TEMP_SUFFIX.len()
        && name.ends_with(TEMP_SUFFIX)
        && WRITTEN_DIRS.iter().any(|d| d.eq_ignore_ascii_case(dir))
}

/// The loader configuration: no menu, no editor, newest p6os entry first.
pub fn loader_conf() -> String {
    "timeout 0\neditor no\ndefault p6os-*\nauto-entries no\nauto-firmware no\n".to_string()
}

/// The command line inside a slot's unified kernel image. It names no slot (the same signed
/// image goes into either): the agent takes the slot from the entry the loader started
/// (`LoaderEntrySelected`) and finds the rest here, the verity parameters of a protected
/// slot included. Under Secure Boot the stub ignores every other command line.
pub fn uki_cmdline(
    rootfs: RootFs,
    verity: Option<&crate::verity::Params>,
    extra: &[String],
) -> String {
    let mut options = vec![
        format!("rootfstype={rootfs}"),
        "ro".to_string(),
        CONSOLE.to_string(),
    ];
    options.extend(verity.map(|v| v.cmdline()));
    options.extend(extra.iter().cloned());
    options.join(" ")
}

/// How an entry starts its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryBoot {
    /// `efi /p6os/<slot>/p6os.efi`: the unified kernel image, its own command line.
    Uki,
    /// `linux`, `initrd` and `options` (bundles of builders before unified kernel images).
    Split { options: Vec<String> },
}

/// The kernel command line of a slot started as [`EntryBoot::Split`]: the agent finds
/// everything from it (a protected slot's verity parameters too).
pub fn options(
    slot: Slot,
    rootfs: RootFs,
    verity: Option<&crate::verity::Params>,
    extra: &[String],
) -> Vec<String> {
    let mut options = vec![
        format!("p6os.slot={slot}"),
        format!("root=PARTLABEL={}", slot.partlabel()),
        format!("rootfstype={rootfs}"),
        "ro".to_string(),
        CONSOLE.to_string(),
    ];
    options.extend(verity.map(|v| v.cmdline()));
    options.extend(extra.iter().cloned());
    options
}

/// `P6OS tiny 1.0.0 (slot a)`.
pub fn title(name: &str, version: &str, slot: Slot) -> String {
    format!("P6OS {name} {version} (slot {slot})")
}

/// A Boot Loader Specification entry: the text the builder writes for a fresh image and the
/// agent writes for an upgraded slot. `sort_version` orders entries (highest boots first;
/// `sort-key p6os` on all).
pub fn entry_text(title: &str, sort_version: &str, slot: Slot, boot: &EntryBoot) -> String {
    let head = format!("title {title}\nsort-key p6os\nversion {sort_version}\n");
    match boot {
        EntryBoot::Uki => format!("{head}efi {}\n", slot_file(slot, UKI_FILE)),
        EntryBoot::Split { options } => format!(
            "{head}linux {}\ninitrd {}\noptions {}\n",
            slot_file(slot, KERNEL_FILE),
            slot_file(slot, INITRD_FILE),
            options.join(" "),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_text_is_stable() {
        let text = entry_text(
            &title("tiny", "1.0.0", Slot::A),
            "1.0.0",
            Slot::A,
            &EntryBoot::Split {
                options: options(Slot::A, RootFs::Squashfs, None, &["quiet".into()]),
            },
        );
        assert_eq!(
            text,
            "title P6OS tiny 1.0.0 (slot a)\nsort-key p6os\nversion 1.0.0\nlinux /p6os/a/vmlinuz\n\
             initrd /p6os/a/initrd.img\noptions p6os.slot=a root=PARTLABEL=p6os-root-a \
             rootfstype=squashfs ro console=ttyS0 quiet\n"
        );
        assert_eq!(slot_dir(Slot::B), "/p6os/b");
        assert_eq!(
            entry_text(
                &title("tiny", "2.0.0", Slot::B),
                "7",
                Slot::B,
                &EntryBoot::Uki
            ),
            "title P6OS tiny 2.0.0 (slot b)\nsort-key p6os\nversion 7\nefi /p6os/b/p6os.efi\n"
        );
        assert_eq!(
            uki_cmdline(RootFs::Erofs, None, &["quiet".into()]),
            "rootfstype=erofs ro console=ttyS0 quiet"
        );
        assert_eq!(entry_path("p6os-1-a.conf"), "/loader/entries/p6os-1-a.conf");
    }

    #[test]
    fn leftovers_are_temporary_names_in_the_directories_upgrades_write() {
        for (dir, name) in [
            ("/p6os/a", "vmlinuz.new"),
            ("/p6os/b", "initrd.img.new"),
            ("/P6OS/B", "VMLINU~1.NEW"),
            ("/loader/entries", "p6os-3-b+3.conf.new"),
        ] {
            assert!(is_leftover(dir, name), "{dir} {name}");
        }
        for (dir, name) in [
            ("/p6os/a", "vmlinuz"),
            ("/p6os/a", ".new"),
            ("/p6os", "unattended.yaml.new"),
            ("/", "x.new"),
            ("/EFI/BOOT", "BOOTX64.EFI.new"),
            ("/loader/entries", "p6os-3-b+3.conf"),
        ] {
            assert!(!is_leftover(dir, name), "{dir} {name}");
        }
        assert_eq!(temp_name("initrd.img"), "initrd.img.new");
        assert!(is_leftover(&slot_dir(Slot::A), &temp_name(KERNEL_FILE)));
    }
}
