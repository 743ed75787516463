//! GUID partition tables from arbitrary bytes, as the agent reads a disk at boot to find its
//! boot partition (and the builder reads images): errors, never a panic; what parses is sane.
//! And the disk growth plan from the same bytes as both ends of a disk: every write it plans
//! lies inside the disk.

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
        grow(data, header.backup_lba);
    }
});

fn grow(data: &[u8], backup_lba: u64) {
    use gpt::grow::{plan, Disk, HEAD_BYTES, TAIL_BYTES};
    let mut head = data.to_vec();
    head.resize(HEAD_BYTES.max(head.len()), 0);
    let mut tail = data[data.len().saturating_sub(TAIL_BYTES)..].to_vec();
    tail.resize(TAIL_BYTES, 0);
    // The disk the header speaks of, and larger ones.
    let sectors = backup_lba.saturating_add(1);
    for extra in [0u64, 1, 2048, 1 << 21] {
        let bytes = sectors.saturating_add(extra).saturating_mul(512);
        let disk = Disk {
            head: &head[..HEAD_BYTES],
            tail: &tail,
            bytes,
            logical_block_size: 512,
        };
        if let Ok(growth) = plan(&disk, "p6os-state") {
            for w in &growth.writes {
                assert!(w.offset.saturating_add(w.bytes.len() as u64) <= bytes);
            }
            assert!(growth.after.last_lba >= growth.before.last_lba);
        }
    }
}
