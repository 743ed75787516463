use super::*;
use crate::partition::{TYPE_ESP, TYPE_ROOT_X86_64};

fn sample() -> Gpt {
    let g = |n: u128| Uuid::from_u128(n);
    Gpt::layout(
        g(1),
        &[
            ("p6os-esp", TYPE_ESP, g(2), 34 << 20),
            ("p6os-root-a", TYPE_ROOT_X86_64, g(3), 8 << 20),
        ],
    )
}

fn disk(gpt: &Gpt) -> Vec<u8> {
    let mut bytes = vec![0u8; gpt.size_bytes() as usize];
    for (at, piece) in gpt.encode() {
        bytes[at as usize..][..piece.len()].copy_from_slice(&piece);
    }
    bytes
}

#[test]
fn encode_then_parse_round_trips() {
    let gpt = sample();
    let bytes = disk(&gpt);
    assert_eq!(
        parse(&bytes[..TABLE_HEAD_LEN], bytes.len() as u64),
        Ok(gpt.clone())
    );
    // The backup header at the last LBA describes the backup array.
    let last = bytes.len() - 512;
    assert_eq!(&bytes[last..last + 8], SIGNATURE);
}

#[test]
fn corruption_is_detected() {
    let gpt = sample();
    let mut bytes = disk(&gpt);
    bytes[2 * 512 + 60] ^= 1;
    assert_eq!(parse(&bytes, bytes.len() as u64), Err(GptError::ArrayCrc));
    let mut bytes = disk(&gpt);
    bytes[512 + 40] ^= 1;
    assert_eq!(parse(&bytes, bytes.len() as u64), Err(GptError::HeaderCrc));
    let bytes = disk(&gpt);
    assert!(matches!(
        parse(&bytes[..TABLE_HEAD_LEN - 1], bytes.len() as u64),
        Err(GptError::ShortArray { .. })
    ));
    // A disk too small for its own array.
    assert!(matches!(
        parse(&bytes, 2048),
        Err(GptError::EntryArray { .. })
    ));
}

/// 5e7a3b4c-1d2e-4f60-8a9b-0c1d2e3f4a5b as stored on disk.
const UNIQUE: [u8; 16] = [
    0x4c, 0x3b, 0x7a, 0x5e, 0x2e, 0x1d, 0x60, 0x4f, 0x8a, 0x9b, 0x0c, 0x1d, 0x2e, 0x3f, 0x4a, 0x5b,
];

/// A primary header by hand (any block size, entry size, count), with a valid CRC.
fn head(block_size: usize, entries_lba: u64, count: u32, entry_size: u32, crc: u32) -> Vec<u8> {
    let mut head = vec![0u8; HEAD_LEN];
    let h = &mut head[block_size..];
    h[..8].copy_from_slice(SIGNATURE);
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&count.to_le_bytes());
    h[84..88].copy_from_slice(&entry_size.to_le_bytes());
    h[88..92].copy_from_slice(&crc.to_le_bytes());
    let sum = crc32fast::hash(&h[..92]);
    h[16..20].copy_from_slice(&sum.to_le_bytes());
    head
}

fn entries(used: &[usize], count: usize, size: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; count * size];
    for &i in used {
        let e = &mut bytes[i * size..(i + 1) * size];
        e[..16].copy_from_slice(&TYPE_ESP.to_bytes_le());
        e[16..32].copy_from_slice(&UNIQUE);
        e[31] = i as u8; // distinct last byte
        e[40] = 1; // last LBA >= first
    }
    bytes
}

#[test]
fn reads_512_and_4096_byte_blocks() {
    let array = entries(&[0, 3], 128, 128);
    let header = parse_header(&head(512, 2, 128, 128, crc32fast::hash(&array))).unwrap();
    assert_eq!(header.block_size, 512);
    assert_eq!(header.entries_offset, 1024);
    assert_eq!(header.entries_len(), 16384);
    let parts = parse_entries(&array, &header).unwrap();
    assert_eq!(
        parts
            .iter()
            .map(|p| (p.number, p.guid.to_string()))
            .collect::<Vec<_>>(),
        vec![
            (1, "5e7a3b4c-1d2e-4f60-8a9b-0c1d2e3f4a00".to_string()),
            (4, "5e7a3b4c-1d2e-4f60-8a9b-0c1d2e3f4a03".to_string()),
        ]
    );
    let header = parse_header(&head(4096, 2, 128, 128, 0)).unwrap();
    assert_eq!(header.block_size, 4096);
    assert_eq!(header.entries_offset, 8192);
}

#[test]
fn larger_entries_and_short_arrays() {
    let array = entries(&[1], 4, 256);
    let header = parse_header(&head(512, 2, 4, 256, crc32fast::hash(&array))).unwrap();
    let parts = parse_entries(&array, &header).unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].number, 2);
    assert_eq!(
        parts[0].guid.to_string(),
        "5e7a3b4c-1d2e-4f60-8a9b-0c1d2e3f4a01"
    );
    assert!(matches!(
        parse_entries(&array[..300], &header),
        Err(GptError::ShortArray { .. })
    ));
}

#[test]
fn rejects_implausible_headers() {
    assert_eq!(parse_header(&[]), Err(GptError::NoSignature));
    assert_eq!(
        parse_header(&vec![0u8; HEAD_LEN]),
        Err(GptError::NoSignature)
    );
    for bad in [
        head(512, 2, 128, 100, 0),
        head(512, 2, 128, 192, 0),
        head(512, 1, 128, 128, 0),
        head(512, 2, 1 << 20, 128, 0),
        head(512, u64::MAX, 128, 128, 0),
    ] {
        assert!(matches!(
            parse_header(&bad),
            Err(GptError::EntryArray { .. })
        ));
    }
    let mut small = head(512, 2, 128, 128, 0);
    small[512 + 12] = 60;
    assert_eq!(parse_header(&small), Err(GptError::HeaderSize(60)));
    let mut big = head(512, 2, 128, 128, 0);
    big[512 + 12..512 + 16].copy_from_slice(&513u32.to_le_bytes());
    assert_eq!(parse_header(&big), Err(GptError::HeaderSize(513)));
    assert!(parse_header(&head(512, 2, 128, 128, 0)[..600]).is_err());
    let mut crc = head(512, 2, 128, 128, 0);
    crc[512 + 100] = 0; // outside the header: ignored
    crc[512 + 80] ^= 1;
    assert_eq!(parse_header(&crc), Err(GptError::HeaderCrc));
}

#[test]
fn backwards_partitions_are_skipped_as_the_kernel_does() {
    let mut array = entries(&[0, 1], 128, 128);
    array[40] = 0;
    array[32] = 5;
    let header = parse_header(&head(512, 2, 128, 128, crc32fast::hash(&array))).unwrap();
    let parts = parse_entries(&array, &header).unwrap();
    assert_eq!(parts.iter().map(|p| p.number).collect::<Vec<_>>(), [2]);
}

#[test]
fn never_panics_on_junk() {
    for fill in [0u8, 0x45, 0xff] {
        let mut junk = vec![fill; HEAD_LEN + 20000];
        junk[512..520].copy_from_slice(SIGNATURE);
        let _ = parse(&junk, junk.len() as u64);
        if let Ok(h) = parse_header(&junk) {
            let _ = parse_entries(&junk, &h);
        }
    }
}
