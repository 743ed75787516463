//! The bytes the agent reads at boot: the first sectors of any block device (filesystem type
//! and label of configuration drives) and EFI variables (systemd-boot's strings and the boot
//! partition's UUID). `None`, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p6os_agent::{efivar, firstboot::source};

fuzz_target!(|data: &[u8]| {
    if let Some(p) = source::probe(data) {
        if let Some(label) = p.label {
            assert!(!label.is_empty());
            let _ = source::is_config_drive_label(&label);
        }
    }
    let _ = efivar::decode_string(data);
    if let Some(uuid) = efivar::decode_part_uuid(data) {
        assert_eq!(
            efivar::normalize_guid(&uuid).as_deref(),
            Some(uuid.as_str())
        );
    }
});
