//! Block maps in bmaptool's XML format 2.0 (`bmaptool copy --bmap`).
//!
//! A block is mapped when it holds a non-zero byte: the map is a function of the image's content,
//! not of how the filesystem happened to allocate it (bmaptool itself uses the extent layout, so
//! written zeros would count as data there). The text is what bmap-tools 3.6's `BmapCreate`
//! writes, byte for byte, including its comments, the in-place patched "mapped blocks" line and
//! the `BmapFileChecksum` (sha256 of the file with that field set to 64 ASCII zeros, which is how
//! `BmapCopy` verifies it). For an image whose allocated blocks are exactly its non-zero blocks,
//! `bmaptool create` writes the same bytes.

use std::fs::File;

use sha2::{Digest, Sha256};

use super::sparse::{scan, ScanError, Segment, BLOCK, ZEROS};

/// The format version written; bmaptool 3.x reads 2.x.
const BMAP_VERSION: &str = "2.0";

/// Length of a hex sha256.
const CHECKSUM_LEN: usize = 64;

/// A run of mapped blocks, `first..=last`, and the sha256 of its bytes (the last block of the
/// image only up to the image's end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MappedRange {
    pub first: u64,
    pub last: u64,
    pub sha256: [u8; 32],
}

/// Which [`BLOCK`]-sized blocks of an image hold data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BlockMap {
    /// Image size in bytes.
    pub image_size: u64,
    /// Mapped ranges in order, adjacent ranges merged.
    pub ranges: Vec<MappedRange>,
}

/// The range being collected while scanning.
struct Open {
    first: u64,
    last: u64,
    hasher: Sha256,
}

impl BlockMap {
    /// Maps the first `size` bytes of `file`: holes are skipped without reading, and within data
    /// an all-zero block is unmapped, except in the regions a disk image needs in full
    /// ([`structural_regions`]): there zeros mean something (an unused GPT entry, a free FAT
    /// cluster) and must overwrite whatever a reused disk held.
    pub fn from_image(file: &File, size: u64) -> Result<BlockMap, ScanError> {
        let forced = structural_regions(file, size);
        let is_forced = |index: u64| {
            let (start, end) = (index * BLOCK, (index + 1) * BLOCK);
            forced.iter().any(|(s, e)| start < *e && end > *s)
        };
        let mut ranges = Vec::new();
        let mut open: Option<Open> = None;
        let close = |open: &mut Option<Open>, ranges: &mut Vec<MappedRange>| {
            if let Some(o) = open.take() {
                ranges.push(MappedRange {
                    first: o.first,
                    last: o.last,
                    sha256: o.hasher.finalize().into(),
                });
            }
        };
        let push = |open: &mut Option<Open>, ranges: &mut Vec<MappedRange>, index, block: &[u8]| {
            match open {
                Some(o) if o.last + 1 == index => {
                    o.last = index;
                    o.hasher.update(block);
                }
                _ => {
                    close(open, ranges);
                    let mut hasher = Sha256::new();
                    hasher.update(block);
                    *open = Some(Open {
                        first: index,
                        last: index,
                        hasher,
                    });
                }
            }
        };
        let mut next = 0u64;
        scan(file, size, |segment| {
            match segment {
                Segment::Hole { len } => {
                    let (start, end) = (next, (next + len).min(size));
                    next += len;
                    let mut pos = start;
                    while pos < end {
                        let index = pos / BLOCK;
                        let block_len = (end - pos).min(BLOCK) as usize;
                        if is_forced(index) {
                            push(&mut open, &mut ranges, index, &ZEROS[..block_len]);
                        } else {
                            close(&mut open, &mut ranges);
                        }
                        pos += block_len as u64;
                    }
                }
                Segment::Data { offset, bytes } => {
                    next = offset + bytes.len() as u64;
                    let base = offset / BLOCK;
                    for (i, block) in bytes.chunks(BLOCK as usize).enumerate() {
                        let index = base + i as u64;
                        if block == &ZEROS[..block.len()] && !is_forced(index) {
                            close(&mut open, &mut ranges);
                            continue;
                        }
                        push(&mut open, &mut ranges, index, block);
                    }
                }
            }
            Ok(())
        })?;
        close(&mut open, &mut ranges);
        Ok(BlockMap {
            image_size: size,
            ranges,
        })
    }

    /// Count of blocks in the image (the last one may be partial).
    pub fn blocks(&self) -> u64 {
        self.image_size.div_ceil(BLOCK)
    }

    /// Count of mapped blocks.
    pub fn mapped_blocks(&self) -> u64 {
        self.ranges.iter().map(|r| r.last - r.first + 1).sum()
    }

    /// The bmap file's text. The image must not be empty (bmaptool cannot describe one).
    pub fn to_xml(&self) -> String {
        let blocks = self.blocks();
        let mapped = self.mapped_blocks();
        let image_human = human_size(self.image_size);

        let mut xml = format!(
            r#"<?xml version="1.0" ?>
<!-- This file contains the block map for an image file, which is basically
     a list of useful (mapped) block numbers in the image file. In other words,
     it lists only those blocks which contain data (boot sector, partition
     table, file-system metadata, files, directories, extents, etc). These
     blocks have to be copied to the target device. The other blocks do not
     contain any useful data and do not have to be copied to the target
     device.

     The block map an optimization which allows to copy or flash the image to
     the image quicker than copying of flashing the entire image. This is
     because with bmap less data is copied: <MappedBlocksCount> blocks instead
     of <BlocksCount> blocks.

     Besides the machine-readable data, this file contains useful commentaries
     which contain human-readable information like image size, percentage of
     mapped data, etc.

     The 'version' attribute is the block map file format version in the
     'major.minor' format. The version major number is increased whenever an
     incompatible block map format change is made. The minor number changes
     in case of minor backward-compatible changes. -->

<bmap version="{BMAP_VERSION}">
    <!-- Image size in bytes: {image_human} -->
    <ImageSize> {size} </ImageSize>

    <!-- Size of a block in bytes -->
    <BlockSize> {BLOCK} </BlockSize>

    <!-- Count of blocks in the image file -->
    <BlocksCount> {blocks} </BlocksCount>

    <!-- Count of mapped blocks: "#,
            size = self.image_size,
        );
        // BmapCreate writes blanks first and patches the numbers in afterwards, in place.
        let count_comment_at = xml.len();
        xml.push_str(&format!(
            "{} or {}   -->\n    <MappedBlocksCount> ",
            " ".repeat(image_human.len()),
            " ".repeat("100.0%".len())
        ));
        let count_at = xml.len();
        xml.push_str(&" ".repeat(blocks.to_string().len()));
        xml.push_str(
            " </MappedBlocksCount>\n\n    <!-- Type of checksum used in this file -->\n    \
             <ChecksumType> sha256 </ChecksumType>\n\n    <!-- The checksum of this bmap file. \
             When it is calculated, the value of\n         the checksum has be zero (all ASCII \
             \"0\" symbols).  -->\n    <BmapFileChecksum> ",
        );
        let checksum_at = xml.len();
        xml.push_str(&"0".repeat(CHECKSUM_LEN));
        xml.push_str(
            " </BmapFileChecksum>\n\n    <!-- The block map which consists of elements which may \
             either be a\n         range of blocks or a single block. The 'chksum' attribute\n  \
             \x20      (if present) is the checksum of this blocks range. -->\n    <BlockMap>\n",
        );
        for r in &self.ranges {
            let sum = hex::encode(r.sha256);
            if r.first == r.last {
                xml.push_str(&format!(
                    "        <Range chksum=\"{sum}\"> {} </Range>\n",
                    r.first
                ));
            } else {
                xml.push_str(&format!(
                    "        <Range chksum=\"{sum}\"> {}-{} </Range>\n",
                    r.first, r.last
                ));
            }
        }
        xml.push_str("    </BlockMap>\n</bmap>\n");

        let percent = (mapped as f64 * 100.0) / blocks as f64;
        let count_comment = format!("{} or {percent:.1}%", human_size(mapped * BLOCK));
        overwrite(&mut xml, count_comment_at, &count_comment);
        overwrite(&mut xml, count_at, &mapped.to_string());
        let checksum = hex::encode(Sha256::digest(xml.as_bytes()));
        overwrite(&mut xml, checksum_at, &checksum);
        xml
    }
}

/// Replaces `text.len()` bytes at `at` with `text`, as writing over a file's bytes does.
fn overwrite(xml: &mut String, at: usize, text: &str) {
    xml.replace_range(at..at + text.len(), text);
}

/// bmaptool's `human_size`: "1 byte", "N bytes" below 512, else one decimal and a binary unit.
pub(super) fn human_size(size: u64) -> String {
    if size == 1 {
        return "1 byte".to_string();
    }
    if size < 512 {
        return format!("{size} bytes");
    }
    let mut value = size as f64;
    for unit in ["KiB", "MiB", "GiB", "TiB"] {
        value /= 1024.0;
        if value < 1024.0 {
            return format!("{value:.1} {unit}");
        }
    }
    format!("{value:.1} EiB")
}

/// Byte ranges of a GPT disk image that a copy must write in full, zeros included: both
/// partition tables (everything before the first partition and after the last) and the EFI
/// system partition (its FAT and directories). Elsewhere unmapped blocks may keep what the
/// target held: free space of the slot and state filesystems, the empty second slot. An image
/// without a readable GPT has none.
pub(super) fn structural_regions(file: &File, size: u64) -> Vec<(u64, u64)> {
    let mut f = file;
    let Ok(gpt) = crate::gpt::read(&mut f) else {
        return Vec::new();
    };
    let sector = 512;
    let first = gpt
        .partitions
        .iter()
        .map(|p| p.first_lba)
        .min()
        .unwrap_or(0)
        * sector;
    let last_end = gpt
        .partitions
        .iter()
        .map(|p| (p.last_lba + 1) * sector)
        .max()
        .unwrap_or(size);
    let mut out = vec![(0, first.min(size)), (last_end.min(size), size)];
    for p in &gpt.partitions {
        if p.type_guid == crate::gpt::TYPE_ESP {
            out.push((p.first_lba * sector, (p.last_lba + 1) * sector));
        }
    }
    out
}
