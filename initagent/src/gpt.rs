//! Unique partition GUIDs (PARTUUIDs) from a disk's primary GPT. Needed because kernels
//! before 6.13 (Debian bookworm has 6.1) do not put `PARTUUID=` in uevent files, and the
//! boot partition is known only by its PARTUUID (`LoaderDevicePartUUID`).
//!
//! Pure: takes bytes read from the start of the disk and from the entry array; `sys`
//! reads them. Anything malformed gives None or no entries, never a panic.

/// Bytes to read from the start of the disk to find the header with 512- or 4096-byte
/// logical blocks (it is at LBA 1).
pub const HEAD_LEN: usize = 4096 + 512;
/// The entry array is never read beyond this (128 entries of 128 bytes is 16 KiB).
pub const MAX_ENTRIES_LEN: u64 = 1024 * 1024;

const SIGNATURE: &[u8; 8] = b"EFI PART";
const MIN_HEADER_SIZE: usize = 92;
const MIN_ENTRY_SIZE: u32 = 128;

/// Where the entry array is, from the primary header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub block_size: u64,
    /// Byte offset of the entry array on the disk.
    pub entries_offset: u64,
    pub entry_count: u32,
    pub entry_size: u32,
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

/// Finds the primary header in the first `HEAD_LEN` bytes of a disk (LBA 1 with 512- or
/// 4096-byte blocks) and checks that its entry array is plausible.
pub fn parse_header(head: &[u8]) -> Option<Header> {
    [512u64, 4096].into_iter().find_map(|block_size| {
        let at = usize::try_from(block_size).ok()?;
        let header = head.get(at..)?;
        if header.get(..8)? != SIGNATURE {
            return None;
        }
        let header_size = usize::try_from(u32_at(header, 12)?).ok()?;
        // The whole header must be there, within its block.
        if header_size < MIN_HEADER_SIZE || header_size > at || header.len() < header_size {
            return None;
        }
        let entries_lba = u64_at(header, 72)?;
        let entry_count = u32_at(header, 80)?;
        let entry_size = u32_at(header, 84)?;
        // The spec: 128 * 2^n bytes per entry; the array comes after the header.
        if entry_size < MIN_ENTRY_SIZE || !entry_size.is_power_of_two() || entries_lba < 2 {
            return None;
        }
        let parsed = Header {
            block_size,
            entries_offset: entries_lba.checked_mul(block_size)?,
            entry_count,
            entry_size,
        };
        (parsed.entries_len() <= MAX_ENTRIES_LEN).then_some(parsed)
    })
}

/// `(partition number, unique partition GUID in lowercase)` of every used entry.
/// Partition numbers count from 1 as the kernel's `PARTN` does.
pub fn partition_uuids(entries: &[u8], header: &Header) -> Vec<(u32, String)> {
    let Ok(size) = usize::try_from(header.entry_size) else {
        return Vec::new();
    };
    entries
        .chunks_exact(size)
        .take(usize::try_from(header.entry_count).unwrap_or(usize::MAX))
        .zip(1u32..)
        .filter(|(entry, _)| entry[..16].iter().any(|b| *b != 0))
        .map(|(entry, number)| (number, format_guid(&entry[16..32])))
        .collect()
}

/// GUID bytes as stored on disk (first three fields little-endian) in canonical text.
fn format_guid(b: &[u8]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-\
         {:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESP_TYPE: [u8; 16] = [
        0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9,
        0x3b,
    ];
    /// 5e7a3b4c-1d2e-4f60-8a9b-0c1d2e3f4a5b as stored on disk.
    const UNIQUE: [u8; 16] = [
        0x4c, 0x3b, 0x7a, 0x5e, 0x2e, 0x1d, 0x60, 0x4f, 0x8a, 0x9b, 0x0c, 0x1d, 0x2e, 0x3f, 0x4a,
        0x5b,
    ];

    fn head(block_size: usize, entries_lba: u64, count: u32, entry_size: u32) -> Vec<u8> {
        let mut head = vec![0u8; HEAD_LEN];
        let h = &mut head[block_size..];
        h[..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&count.to_le_bytes());
        h[84..88].copy_from_slice(&entry_size.to_le_bytes());
        head
    }

    fn entries(used: &[usize], count: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; count * 128];
        for &i in used {
            let e = &mut bytes[i * 128..(i + 1) * 128];
            e[..16].copy_from_slice(&ESP_TYPE);
            e[16..32].copy_from_slice(&UNIQUE);
            e[31] = i as u8; // distinct last byte
        }
        bytes
    }

    #[test]
    fn reads_512_byte_block_gpt() {
        let header = parse_header(&head(512, 2, 128, 128)).unwrap();
        assert_eq!(
            header,
            Header {
                block_size: 512,
                entries_offset: 1024,
                entry_count: 128,
                entry_size: 128
            }
        );
        assert_eq!(header.entries_len(), 16384);
        let uuids = partition_uuids(&entries(&[0, 3], 128), &header);
        assert_eq!(
            uuids,
            vec![
                (1, "5e7a3b4c-1d2e-4f60-8a9b-0c1d2e3f4a00".to_string()),
                (4, "5e7a3b4c-1d2e-4f60-8a9b-0c1d2e3f4a03".to_string()),
            ]
        );
    }

    #[test]
    fn reads_4k_block_gpt() {
        let header = parse_header(&head(4096, 2, 128, 128)).unwrap();
        assert_eq!(header.block_size, 4096);
        assert_eq!(header.entries_offset, 8192);
    }

    #[test]
    fn larger_entries_and_short_arrays() {
        let header = parse_header(&head(512, 2, 4, 256)).unwrap();
        let mut bytes = vec![0u8; 4 * 256];
        bytes[256..256 + 16].copy_from_slice(&ESP_TYPE);
        bytes[256 + 16..256 + 32].copy_from_slice(&UNIQUE);
        assert_eq!(
            partition_uuids(&bytes, &header),
            vec![(2, "5e7a3b4c-1d2e-4f60-8a9b-0c1d2e3f4a5b".to_string())]
        );
        // Truncated array: only whole entries count.
        assert!(partition_uuids(&bytes[..300], &header).is_empty());
        // More bytes than entries: the count rules.
        let header = parse_header(&head(512, 2, 1, 256)).unwrap();
        assert!(partition_uuids(&bytes, &header).is_empty());
    }

    #[test]
    fn rejects_implausible_headers() {
        assert_eq!(parse_header(&[]), None);
        assert_eq!(parse_header(&vec![0u8; HEAD_LEN]), None);
        assert_eq!(parse_header(&head(512, 2, 128, 100)), None);
        assert_eq!(parse_header(&head(512, 2, 128, 192)), None);
        assert_eq!(parse_header(&head(512, 1, 128, 128)), None);
        assert_eq!(parse_header(&head(512, 2, 1 << 20, 128)), None);
        assert_eq!(parse_header(&head(512, u64::MAX, 128, 128)), None);
        let mut small_header = head(512, 2, 128, 128);
        small_header[512 + 12] = 60;
        assert_eq!(parse_header(&small_header), None);
        let mut big_header = head(512, 2, 128, 128);
        big_header[512 + 12..512 + 16].copy_from_slice(&513u32.to_le_bytes());
        assert_eq!(parse_header(&big_header), None);
        // Cut inside the header.
        assert_eq!(parse_header(&head(512, 2, 128, 128)[..600]), None);
    }

    #[test]
    fn never_panics_on_junk() {
        for fill in [0u8, 0x45, 0xff] {
            let mut junk = vec![fill; HEAD_LEN];
            junk[512..520].copy_from_slice(SIGNATURE);
            if let Some(h) = parse_header(&junk) {
                let _ = partition_uuids(&junk, &h);
            }
        }
    }
}
