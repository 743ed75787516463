//! The image's layout as data: partitions with GUIDs derived from the recipe digest, and the
//! ESP's files for slot A. Pure; `write` puts them on disk.

use p6os_layout::{esp, partition};

use super::derived_guid;
use crate::bootentry::{loader_conf, BootEntry, Counter, EntryName, Slot};
use crate::fat::FatFile;
use crate::gpt::{Gpt, TYPE_ESP, TYPE_ROOT_X86_64, TYPE_VAR};
use crate::recipe::{Partitions, RecipeFile};

/// ESP, slot A, slot B and state, back to back from 1 MiB; every GUID derived from `digest`.
pub(super) fn disk(digest: &str, p: &Partitions) -> Gpt {
    let guid = |what: &str| derived_guid(digest, what);
    Gpt::layout(
        guid("disk"),
        &[
            (
                partition::ESP_LABEL,
                TYPE_ESP,
                guid(partition::ESP_LABEL),
                p.esp.bytes(),
            ),
            (
                partition::ROOT_A_LABEL,
                TYPE_ROOT_X86_64,
                guid(partition::ROOT_A_LABEL),
                p.slot.bytes(),
            ),
            (
                partition::ROOT_B_LABEL,
                TYPE_ROOT_X86_64,
                guid(partition::ROOT_B_LABEL),
                p.slot.bytes(),
            ),
            (
                partition::STATE_LABEL,
                TYPE_VAR,
                guid(partition::STATE_LABEL),
                p.state.bytes(),
            ),
        ],
    )
}

/// The ESP of a fresh image: systemd-boot, its configuration, slot A's entry, unified kernel
/// image and manifest.
pub(super) fn esp_files(
    def: &RecipeFile,
    efi: Vec<u8>,
    uki: Vec<u8>,
    slot_json: Vec<u8>,
) -> Vec<FatFile> {
    let entry = BootEntry::new(&def.name, &def.version, Slot::A);
    let entry_name = EntryName::new(&def.version, Slot::A, Counter::Blessed);
    vec![
        FatFile {
            path: esp::BOOTLOADER.into(),
            data: efi,
        },
        FatFile {
            path: esp::LOADER_CONF.into(),
            data: loader_conf().into_bytes(),
        },
        FatFile {
            path: esp::entry_path(&entry_name.file_name()),
            data: entry.render().into_bytes(),
        },
        FatFile {
            path: esp::slot_file(Slot::A, esp::UKI_FILE),
            data: uki,
        },
        FatFile {
            path: esp::slot_file(Slot::A, esp::MANIFEST_FILE),
            data: slot_json,
        },
    ]
}
