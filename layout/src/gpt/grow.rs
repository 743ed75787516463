//! Growing the last partition of a table to the end of a larger disk, as a list of writes.
//!
//! [`plan`] takes the bytes at both ends of a disk and returns the writes that turn them
//! into the grown table, in an order that is safe against a power cut at any instant, given
//! that a single 512-byte sector is written whole or not at all (what disks promise):
//!
//! 1. the backup array and header at the disk's new end (nothing refers to them yet);
//! 2. if the primary header refers to the array at LBA 2, the new array goes to LBA 34..65
//!    (the gap before the first partition, unused) and one sector, the primary header, is
//!    switched to it: the old table or the new one is valid at every instant;
//! 3. the new array at LBA 2 (no longer referred to), then the final primary header;
//! 4. cleaning up: the temporary array, the old backup header (inside the grown partition,
//!    before its filesystem grows over it), the protective MBR's size.
//!
//! Every write is followed by a flush (the caller's `fsync`). The plan is a function of the
//! bytes only: after a cut, planning again from what is on the disk finishes the job, and a
//! grown disk plans no writes. The table must be one this crate writes, byte for byte
//! (512-byte sectors, 128 entries of 128 bytes at LBA 2, no attribute bits): anything else is
//! refused rather than rewritten with something lost.

use std::fmt;

use super::{
    parse_entries, parse_header_block, Gpt, GptError, Header, Partition, ALIGN_SECTORS,
    ARRAY_SECTORS, ENTRIES, ENTRY_SIZE, SECTOR,
};

/// LBA of the temporary entry array: right after the primary array, in the gap before the
/// first partition.
pub const SWITCH_ARRAY_LBA: u64 = 2 + ARRAY_SECTORS;
/// Partitions must start at or after this LBA (the temporary array's end).
pub const FIRST_FREE_LBA: u64 = SWITCH_ARRAY_LBA + ARRAY_SECTORS;
/// Bytes [`plan`] needs from the disk's start: MBR, primary header, array, temporary array.
pub const HEAD_BYTES: usize = (FIRST_FREE_LBA * SECTOR) as usize;
/// Bytes [`plan`] needs from the disk's end: the backup array and header.
pub const TAIL_BYTES: usize = ((ARRAY_SECTORS + 1) * SECTOR) as usize;
/// A partition grows only when it gains at least this much (1 MiB): a fresh image on a disk
/// of its own size (1 MiB of slack at its end) is left as it is.
pub const MIN_GROWTH_SECTORS: u64 = ALIGN_SECTORS;

/// What was read from the disk.
#[derive(Debug, Clone, Copy)]
pub struct Disk<'a> {
    /// The first [`HEAD_BYTES`] bytes.
    pub head: &'a [u8],
    /// The last [`TAIL_BYTES`] bytes.
    pub tail: &'a [u8],
    /// The disk's size in bytes.
    pub bytes: u64,
    /// Its logical block size (the kernel's `queue/logical_block_size`).
    pub logical_block_size: u64,
}

/// One write of the plan; the caller flushes after each.
#[derive(Clone, PartialEq, Eq)]
pub struct Write {
    pub what: Piece,
    /// Byte offset on the disk.
    pub offset: u64,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} at LBA {} ({} bytes)",
            self.what,
            self.offset / SECTOR,
            self.bytes.len()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// The backup array and header, at the disk's end.
    BackupTable,
    /// The new array at [`SWITCH_ARRAY_LBA`], referred to by nothing yet.
    SwitchArray,
    /// The primary header, referring to the array at [`SWITCH_ARRAY_LBA`].
    SwitchHeader,
    /// The new array at LBA 2.
    PrimaryArray,
    /// The final primary header.
    PrimaryHeader,
    /// Zeros over the temporary array.
    ClearSwitchArray,
    /// Zeros over the backup header at the old end of the disk.
    ClearOldBackupHeader,
    /// The protective MBR with the disk's new size.
    ProtectiveMbr,
}

/// What the plan found and what it will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Growth {
    /// The partition as the table on the disk describes it now.
    pub before: Partition,
    /// The partition once the writes are done (equal to `before` when it does not grow).
    pub after: Partition,
    /// Empty when the table is already what it should be.
    pub writes: Vec<Write>,
}

/// Why a table is not grown. Nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}-byte logical blocks: only tables of 512-byte sectors are grown (what the builder writes)")]
    BlockSize(u64),
    #[error("no valid GPT (primary: {primary}; backup at the last LBA: {backup})")]
    NoTable { primary: GptError, backup: GptError },
    #[error("the partition table is not one P6OS writes ({0}); left as it is")]
    Foreign(String),
    #[error("no partition {0}")]
    NoPartition(String),
    #[error("{label} is not the last partition ({after} lies after it)")]
    NotLast { label: String, after: String },
    #[error("the disk ({disk} sectors) is smaller than its partition table ({table} sectors)")]
    DiskSmaller { disk: u64, table: u64 },
    #[error("the disk ({0} bytes) is too small for a GPT")]
    TooSmall(u64),
}

/// A checked table: its header, its partitions, and the table size it was written for.
struct Table {
    header: Header,
    gpt: Gpt,
}

fn foreign(what: impl Into<String>) -> Refusal {
    Refusal::Foreign(what.into())
}

/// The header in `block`, which is at LBA `at_lba`, and its array, taken from `bytes` (which
/// start at disk byte `bytes_at`): checked as the kernel checks them (the outer error: not a
/// valid table), then checked to be exactly what [`Gpt::encode`] writes (the inner one).
fn read_table(
    block: &[u8],
    at_lba: u64,
    bytes: &[u8],
    bytes_at: u64,
) -> Result<Result<Table, Refusal>, GptError> {
    let header = parse_header_block(block, SECTOR)?;
    let start = header
        .entries_offset
        .checked_sub(bytes_at)
        .ok_or(GptError::EntryArray {
            count: header.entry_count,
            size: header.entry_size,
            lba: header.entries_lba,
        })?;
    let start = usize::try_from(start).unwrap_or(usize::MAX);
    if start.saturating_add(ENTRIES * ENTRY_SIZE) > bytes.len() {
        // Valid perhaps, but not where this crate puts arrays (LBA 2, 34, or before the
        // backup header): not read, not rewritten.
        return Ok(Err(foreign(format!(
            "an entry array at LBA {}",
            header.entries_lba
        ))));
    }
    let partitions = parse_entries(&bytes[start..], &header)?;
    let array = &bytes[start..];
    // Valid: now is it ours?
    let (current, twin) = (header.current_lba, header.backup_lba);
    let sectors = current.max(twin).saturating_add(1);
    if current != at_lba || current.min(twin) != 1 || sectors <= 2 * FIRST_FREE_LBA {
        return Ok(Err(foreign(format!("headers at LBA {current} and {twin}"))));
    }
    if header.entry_count as usize != ENTRIES || header.entry_size as usize != ENTRY_SIZE {
        return Ok(Err(foreign(format!(
            "{} entries of {} bytes",
            header.entry_count, header.entry_size
        ))));
    }
    let gpt = Gpt {
        disk_guid: header.disk_guid,
        sectors,
        partitions,
    };
    let encoded = gpt.entry_array();
    let crc = crc32fast::hash(&encoded);
    let same_header = block.get(..SECTOR as usize)
        == Some(&gpt.header(current, twin, header.entries_lba, crc)[..]);
    if !same_header || array.get(..encoded.len()) != Some(&encoded[..]) {
        return Ok(Err(foreign(
            "fields this crate does not write: attribute bits, header or label details",
        )));
    }
    Ok(Ok(Table { header, gpt }))
}

/// The writes that grow partition `label` to the end of the disk, or why not.
pub fn plan(disk: &Disk, label: &str) -> Result<Growth, Refusal> {
    if disk.logical_block_size != SECTOR {
        return Err(Refusal::BlockSize(disk.logical_block_size));
    }
    let sectors = disk.bytes / SECTOR;
    if disk.head.len() < HEAD_BYTES || disk.tail.len() < TAIL_BYTES || sectors <= 2 * FIRST_FREE_LBA
    {
        return Err(Refusal::TooSmall(disk.bytes));
    }
    let last = sectors - 1;
    let tail_at = (last - ARRAY_SECTORS) * SECTOR;
    let primary = read_table(&disk.head[SECTOR as usize..], 1, disk.head, 0);
    let backup = read_table(
        &disk.tail[TAIL_BYTES - SECTOR as usize..],
        last,
        disk.tail,
        tail_at,
    );
    let (table, primary_valid) = match (primary, backup) {
        (Ok(table), _) => (table?, true),
        (Err(_), Ok(table)) => (table?, false),
        (Err(primary), Err(backup)) => {
            // A 4Kn table is refused for its block size, not as missing.
            if let Ok(h) = super::parse_header(disk.head) {
                if h.block_size != SECTOR {
                    return Err(Refusal::BlockSize(h.block_size));
                }
            }
            return Err(Refusal::NoTable { primary, backup });
        }
    };
    let old = table.gpt;
    if old.sectors > sectors {
        return Err(Refusal::DiskSmaller {
            disk: sectors,
            table: old.sectors,
        });
    }
    let before = old
        .by_label(label)
        .cloned()
        .ok_or_else(|| Refusal::NoPartition(label.to_string()))?;
    let old_last_usable = old.sectors - 2 - ARRAY_SECTORS;
    for p in &old.partitions {
        if p.first_lba < FIRST_FREE_LBA || p.last_lba > old_last_usable {
            return Err(foreign(format!(
                "partition {} ({}) at LBA {}..{} is outside {FIRST_FREE_LBA}..{old_last_usable}",
                p.number, p.label, p.first_lba, p.last_lba
            )));
        }
        if p.number != before.number && p.last_lba >= before.first_lba {
            return Err(Refusal::NotLast {
                label: label.to_string(),
                after: format!("{} {}", p.number, p.label),
            });
        }
    }
    let last_usable = last - 1 - ARRAY_SECTORS;
    let mut target = old.clone();
    if last_usable >= before.last_lba.saturating_add(MIN_GROWTH_SECTORS) {
        target.sectors = sectors;
        for p in &mut target.partitions {
            if p.number == before.number {
                p.last_lba = last_usable;
            }
        }
    } else if old.sectors != sectors {
        // Less than 1 MiB to gain and the backup elsewhere: not worth a write.
        return Ok(Growth {
            after: before.clone(),
            before,
            writes: Vec::new(),
        });
    }
    let after = target.by_label(label).cloned().unwrap_or(before.clone());
    let primary = primary_valid.then_some(&table.header);
    Ok(Growth {
        before,
        after,
        writes: writes(disk, &target, primary),
    })
}

/// The writes that make the disk hold `target` (sized to the disk), in a safe order:
/// a valid copy of the table is never overwritten while it is the only one.
/// `primary` is the primary header when it is valid.
fn writes(disk: &Disk, target: &Gpt, primary: Option<&Header>) -> Vec<Write> {
    let sector = SECTOR as usize;
    let array = target.entry_array();
    let crc = crc32fast::hash(&array);
    let last = target.sectors - 1;
    let write = |what, lba: u64, bytes: Vec<u8>| Write {
        what,
        offset: lba * SECTOR,
        bytes,
    };

    let mut backup = array.clone();
    backup.extend_from_slice(&target.header(last, 1, last - ARRAY_SECTORS, crc));
    let backup = (disk.tail != backup.as_slice())
        .then(|| write(Piece::BackupTable, last - ARRAY_SECTORS, backup));

    let mut primary_writes = Vec::new();
    let array_at = |lba: u64| &disk.head[lba as usize * sector..][..array.len()];
    let mut switched = false;
    if array_at(2) != array.as_slice() {
        if primary.is_some_and(|h| h.entries_lba == 2) {
            // The primary refers to LBA 2: point it at a copy first.
            primary_writes.push(write(Piece::SwitchArray, SWITCH_ARRAY_LBA, array.clone()));
            let header = target.header(1, last, SWITCH_ARRAY_LBA, crc);
            primary_writes.push(write(Piece::SwitchHeader, 1, header.to_vec()));
            switched = true;
        }
        primary_writes.push(write(Piece::PrimaryArray, 2, array.clone()));
    }
    let final_header = target.header(1, last, 2, crc);
    if disk.head[sector..2 * sector] != final_header[..] {
        primary_writes.push(write(Piece::PrimaryHeader, 1, final_header.to_vec()));
    }

    // With a valid primary, the backup goes first (the primary then refers to it); without
    // one, the backup is the only valid copy: the primary is made whole first.
    let mut writes = Vec::new();
    if primary.is_some() {
        writes.extend(backup);
        writes.extend(primary_writes);
    } else {
        writes.extend(primary_writes);
        writes.extend(backup);
    }
    if switched || array_at(SWITCH_ARRAY_LBA) == array.as_slice() {
        writes.push(write(
            Piece::ClearSwitchArray,
            SWITCH_ARRAY_LBA,
            vec![0; array.len()],
        ));
    }
    if let Some(old_backup) = primary.map(|h| h.backup_lba).filter(|lba| *lba != last) {
        // `read_table` checked it is the old table's last LBA, beyond all its partitions.
        writes.push(write(
            Piece::ClearOldBackupHeader,
            old_backup,
            vec![0; sector],
        ));
    }
    // The size field only (bytes 458..462), and only in an MBR this crate wrote.
    let mbr = target.protective_mbr();
    let now = &disk.head[..sector];
    if now != mbr && now[..458] == mbr[..458] && now[462..] == mbr[462..] {
        writes.push(write(Piece::ProtectiveMbr, 0, mbr.to_vec()));
    }
    writes
}

#[cfg(test)]
mod tests;
