//! GUID partition tables from arbitrary bytes, as the agent reads a disk at boot to find its
//! boot partition (and the builder reads images): errors, never a panic; what parses is sane.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p6os_layout::gpt;

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = gpt::parse(data, data.len() as u64) {
        for p in &table.partitions {
            assert!(p.first_lba <= p.last_lba);
            assert!(p.number >= 1);
        }
    }
    if let Ok(header) = gpt::parse_header(data) {
        assert!(header.entries_len() <= gpt::MAX_ENTRIES_LEN);
        let start = (header.entries_offset as usize).min(data.len());
        let _ = gpt::parse_entries(&data[start..], &header);
    }
});
