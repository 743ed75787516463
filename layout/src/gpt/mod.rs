//! GUID partition tables: a layout value, its encoding (protective MBR, primary and backup
//! headers and entry arrays) and a strict parser of the bytes read from a disk.
//!
//! The parser takes bytes, never a device: the builder reads images, the agent reads block
//! devices, both hand the bytes here. Malformed input is an error, never a panic.

use uuid::Uuid;

/// GUIDs as the GPT stores them (first three fields little-endian on disk).
pub type Guid = Uuid;

/// Logical block size the builder writes with.
pub const SECTOR: u64 = 512;
/// Bytes per entry the builder writes (the specification allows 128 * 2^n).
pub const ENTRY_SIZE: usize = 128;
/// Entries in the array the builder writes.
pub const ENTRIES: usize = 128;
/// Sectors taken by the builder's entry array (128 entries of 128 bytes).
pub const ARRAY_SECTORS: u64 = (ENTRIES * ENTRY_SIZE) as u64 / SECTOR;
/// First usable LBA when partitions start on 1 MiB boundaries.
pub const ALIGN_SECTORS: u64 = 2048;
/// Bytes to read from the start of a disk to find the primary header with 512- or 4096-byte
/// logical blocks (it is at LBA 1).
pub const HEAD_LEN: usize = 4096 + 512;
/// An entry array is never read beyond this (128 entries of 128 bytes is 16 KiB).
pub const MAX_ENTRIES_LEN: u64 = 1024 * 1024;

const SIGNATURE: &[u8; 8] = b"EFI PART";
const MIN_HEADER_SIZE: usize = 92;
const MIN_ENTRY_SIZE: u32 = 128;

/// One used entry of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// From 1, as the kernel's `PARTN`.
    pub number: u32,
    pub label: String,
    pub type_guid: Guid,
    /// The unique partition GUID (`PARTUUID`).
    pub guid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
}

impl Partition {
    /// Byte offset on a disk with [`SECTOR`]-byte blocks (saturating: LBAs come from disks).
    pub fn offset(&self) -> u64 {
        self.first_lba.saturating_mul(SECTOR)
    }
    /// Size in bytes on a disk with [`SECTOR`]-byte blocks (saturating).
    pub fn size(&self) -> u64 {
        (self.last_lba.saturating_sub(self.first_lba))
            .saturating_add(1)
            .saturating_mul(SECTOR)
    }
}

/// A whole table: what the builder lays out and what [`parse`] reads back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt {
    pub disk_guid: Guid,
    /// Total disk size in sectors.
    pub sectors: u64,
    pub partitions: Vec<Partition>,
}

/// Why bytes are not a valid GPT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GptError {
    #[error("no `EFI PART` signature at LBA 1")]
    NoSignature,
    #[error("header size {0} is not between 92 and the block size")]
    HeaderSize(usize),
    #[error("header CRC mismatch")]
    HeaderCrc,
    #[error("unsupported entry array ({count} entries of {size} bytes at LBA {lba})")]
    EntryArray { count: u32, size: u32, lba: u64 },
    #[error("entry array CRC mismatch")]
    ArrayCrc,
    #[error("the entry array is cut short ({have} of {need} bytes)")]
    ShortArray { have: usize, need: u64 },
}

/// Where the entry array is, from a checked header (primary or backup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub block_size: u64,
    pub disk_guid: Guid,
    /// The LBA this header says it is at (1 for a primary, the last LBA for a backup).
    pub current_lba: u64,
    /// The LBA of its twin (the backup's, for a primary).
    pub backup_lba: u64,
    /// LBA of the entry array.
    pub entries_lba: u64,
    /// Byte offset of the entry array on the disk.
    pub entries_offset: u64,
    pub entry_count: u32,
    pub entry_size: u32,
    /// CRC32 of the entry array, as the header records it.
    pub entries_crc: u32,
}

impl Header {
    /// Length in bytes of the entry array.
    pub fn entries_len(&self) -> u64 {
        u64::from(self.entry_count) * u64::from(self.entry_size)
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn guid_at(bytes: &[u8], at: usize) -> Option<Guid> {
    Some(Uuid::from_bytes_le(
        bytes.get(at..at + 16)?.try_into().ok()?,
    ))
}

/// Finds and checks the primary header in the first [`HEAD_LEN`] bytes of a disk (LBA 1 with
/// 512- or 4096-byte blocks): signature, size, CRC, a plausible entry array.
pub fn parse_header(head: &[u8]) -> Result<Header, GptError> {
    let mut first_error = GptError::NoSignature;
    for block_size in [512u64, 4096] {
        match header_at(head, block_size) {
            Ok(h) => return Ok(h),
            Err(GptError::NoSignature) => {}
            Err(e) => first_error = e,
        }
    }
    Err(first_error)
}

fn header_at(head: &[u8], block_size: u64) -> Result<Header, GptError> {
    let at = block_size as usize;
    let header = head.get(at..).ok_or(GptError::NoSignature)?;
    parse_header_block(header, block_size)
}

/// Checks the header at the start of `block` (a primary's LBA 1 or a backup's last LBA) read
/// from a disk with `block_size`-byte blocks: signature, size, CRC, a plausible entry array.
pub fn parse_header_block(header: &[u8], block_size: u64) -> Result<Header, GptError> {
    let at = usize::try_from(block_size).unwrap_or(usize::MAX);
    if header.get(..8) != Some(SIGNATURE.as_slice()) {
        return Err(GptError::NoSignature);
    }
    let size = u32_at(header, 12).ok_or(GptError::NoSignature)? as usize;
    // The whole header must be there, within its block.
    if size < MIN_HEADER_SIZE || size > at || header.len() < size {
        return Err(GptError::HeaderSize(size));
    }
    let mut check = header[..size].to_vec();
    check[16..20].fill(0);
    if Some(crc32fast::hash(&check)) != u32_at(header, 16) {
        return Err(GptError::HeaderCrc);
    }
    let field = |v: Option<u64>| v.ok_or(GptError::HeaderSize(size));
    let lba = field(u64_at(header, 72))?;
    let count = field(u32_at(header, 80).map(u64::from))? as u32;
    let entry_size = field(u32_at(header, 84).map(u64::from))? as u32;
    let bad_array = GptError::EntryArray {
        count,
        size: entry_size,
        lba,
    };
    // The specification: 128 * 2^n bytes per entry; the array comes after the header.
    if entry_size < MIN_ENTRY_SIZE || !entry_size.is_power_of_two() || lba < 2 {
        return Err(bad_array);
    }
    let parsed = Header {
        block_size,
        disk_guid: guid_at(header, 56).ok_or(GptError::HeaderSize(size))?,
        current_lba: field(u64_at(header, 24))?,
        backup_lba: field(u64_at(header, 32))?,
        entries_lba: lba,
        entries_offset: lba.checked_mul(block_size).ok_or(bad_array.clone())?,
        entry_count: count,
        entry_size,
        entries_crc: field(u32_at(header, 88).map(u64::from))? as u32,
    };
    if parsed.entries_len() > MAX_ENTRIES_LEN {
        return Err(bad_array);
    }
    Ok(parsed)
}

/// The used entries of an entry array read at `header.entries_offset` (at least
/// `header.entries_len()` bytes), after checking its CRC. An entry that ends before it starts
/// is skipped, as the kernel skips it.
pub fn parse_entries(array: &[u8], header: &Header) -> Result<Vec<Partition>, GptError> {
    let need = header.entries_len();
    let array = array.get(..need as usize).ok_or(GptError::ShortArray {
        have: array.len(),
        need,
    })?;
    if crc32fast::hash(array) != header.entries_crc {
        return Err(GptError::ArrayCrc);
    }
    let mut partitions = Vec::new();
    for (entry, number) in array.chunks_exact(header.entry_size as usize).zip(1u32..) {
        let type_guid = guid_at(entry, 0).unwrap_or_default();
        if type_guid.is_nil() {
            continue;
        }
        let first_lba = u64_at(entry, 32).unwrap_or_default();
        let last_lba = u64_at(entry, 40).unwrap_or_default();
        if last_lba < first_lba {
            // As the kernel does: a broken entry is skipped, the others still count.
            continue;
        }
        let units: Vec<u16> = entry[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        partitions.push(Partition {
            number,
            label: String::from_utf16_lossy(&units),
            type_guid,
            guid: guid_at(entry, 16).unwrap_or_default(),
            first_lba,
            last_lba,
        });
    }
    Ok(partitions)
}

/// A whole table from the first bytes of a disk of `disk_bytes` bytes, when those bytes also
/// hold the entry array (true for every table this crate writes: the array is at LBA 2).
pub fn parse(head: &[u8], disk_bytes: u64) -> Result<Gpt, GptError> {
    let header = parse_header(head)?;
    let start = header.entries_offset as usize;
    let array = head.get(start..).unwrap_or_default();
    if header.entries_offset.saturating_add(header.entries_len()) > disk_bytes {
        return Err(GptError::EntryArray {
            count: header.entry_count,
            size: header.entry_size,
            lba: header.entries_offset / header.block_size,
        });
    }
    Ok(Gpt {
        disk_guid: header.disk_guid,
        sectors: disk_bytes / header.block_size,
        partitions: parse_entries(array, &header)?,
    })
}

/// Bytes [`parse`] needs from the start of the disk for a table with the array at LBA 2.
pub const TABLE_HEAD_LEN: usize = (2 + ARRAY_SECTORS as usize) * SECTOR as usize;

impl Gpt {
    /// Lays partitions out back to back from 1 MiB, each `size` bytes (multiples of 1 MiB),
    /// with the backup table in the last 33 sectors after 1 MiB of slack.
    pub fn layout(disk_guid: Guid, parts: &[(&str, Guid, Guid, u64)]) -> Gpt {
        let mut lba = ALIGN_SECTORS;
        let mut partitions = Vec::new();
        for (i, (label, type_guid, guid, size)) in parts.iter().enumerate() {
            let sectors = size / SECTOR;
            partitions.push(Partition {
                number: i as u32 + 1,
                label: label.to_string(),
                type_guid: *type_guid,
                guid: *guid,
                first_lba: lba,
                last_lba: lba + sectors - 1,
            });
            lba += sectors;
        }
        Gpt {
            disk_guid,
            sectors: lba + ALIGN_SECTORS,
            partitions,
        }
    }

    pub fn size_bytes(&self) -> u64 {
        self.sectors * SECTOR
    }

    pub fn by_label(&self, label: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.label == label)
    }

    /// The entry array (128 entries of 128 bytes).
    pub fn entry_array(&self) -> Vec<u8> {
        let mut a = vec![0u8; ENTRIES * ENTRY_SIZE];
        for p in &self.partitions {
            let e = &mut a[(p.number as usize - 1) * ENTRY_SIZE..][..ENTRY_SIZE];
            e[0..16].copy_from_slice(&p.type_guid.to_bytes_le());
            e[16..32].copy_from_slice(&p.guid.to_bytes_le());
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            for (i, u) in p.label.encode_utf16().take(36).enumerate() {
                e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
            }
        }
        a
    }

    /// A header at LBA `current` whose twin is at `backup`, for an array at `array_lba`.
    pub fn header(
        &self,
        current: u64,
        backup: u64,
        array_lba: u64,
        array_crc: u32,
    ) -> [u8; SECTOR as usize] {
        let mut h = [0u8; SECTOR as usize];
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + ARRAY_SECTORS).to_le_bytes());
        h[48..56].copy_from_slice(&(self.sectors - 2 - ARRAY_SECTORS).to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_bytes_le());
        h[72..80].copy_from_slice(&array_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    pub fn protective_mbr(&self) -> [u8; SECTOR as usize] {
        let mut m = [0u8; SECTOR as usize];
        let e = &mut m[446..462];
        e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        e[4] = 0xEE;
        e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        let n = (self.sectors - 1).min(u32::MAX as u64) as u32;
        e[12..16].copy_from_slice(&n.to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xAA;
        m
    }

    /// The bytes of the table: `(offset, bytes)` pieces for a disk of exactly `self.sectors`
    /// sectors: MBR, primary header and array at the start; backup array and header at the end.
    pub fn encode(&self) -> [(u64, Vec<u8>); 2] {
        let array = self.entry_array();
        let crc = crc32fast::hash(&array);
        let last = self.sectors - 1;
        let mut head = Vec::with_capacity(TABLE_HEAD_LEN);
        head.extend_from_slice(&self.protective_mbr());
        head.extend_from_slice(&self.header(1, last, 2, crc));
        head.extend_from_slice(&array);
        let mut tail = array;
        tail.extend_from_slice(&self.header(last, 1, last - ARRAY_SECTORS, crc));
        [(0, head), ((last - ARRAY_SECTORS) * SECTOR, tail)]
    }

    /// A stable text dump (for golden files).
    pub fn dump(&self) -> String {
        let mut s = format!("disk {} sectors={}\n", self.disk_guid, self.sectors);
        for p in &self.partitions {
            s += &format!(
                "{} {:<12} type={} guid={} lba={}..{} ({} MiB)\n",
                p.number,
                p.label,
                p.type_guid.to_string().to_uppercase(),
                p.guid,
                p.first_lba,
                p.last_lba,
                p.size() >> 20
            );
        }
        s
    }
}

pub mod grow;

#[cfg(test)]
mod tests;
