//! Pure-Rust FAT32: format a volume inside a region of an image file, read it back, and modify it
//! in place, without mounts, `mkfs` or root.
//!
//! Used for the EFI System Partition of P6OS disk images. [`format`] is byte-for-byte
//! deterministic (fixed timestamps, sorted directories, contiguous allocation in a fixed order) and
//! its output passes `fsck.vfat -n`; [`FatVolume`] reads volumes made by us or by other tools
//! (`mkfs.vfat` + `mcopy`) and can create, replace, remove and rename files;
//! [`FatVolume::plan_repair`] and [`FatVolume::repair`] undo what power cuts leave behind
//! (lost clusters, leftovers of interrupted writes, FAT copies apart, FSInfo, the dirty flag).
//!
//! One owner of the format: the builder (images) and the agent (the ESP's repair before an
//! upgrade writes to it) both use this crate. It does no I/O beyond the `Read + Seek (+ Write)`
//! it is given.
//!
//! Layout of a volume made by [`format`]: 512-byte sectors, 32 reserved sectors (boot sector at 0,
//! FSInfo at 1, backup boot sector at 6, backup FSInfo at 7), two FATs, root directory at
//! cluster 2, then every directory and file in pre-order, each in one contiguous cluster run.

use std::io::{self, Read, Seek, SeekFrom, Write};

mod format;
mod names;
mod reader;
mod repair;
mod writer;

#[cfg(test)]
mod repair_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tool_tests;

pub use format::format;
pub use names::VolumeLabel;
pub use reader::FatVolume;
pub use repair::{Removal, Repair, MAX_DEPTH, MAX_DIRS, MAX_ENTRIES};

/// Sector size used by [`format`].
pub const SECTOR_SIZE: u64 = 512;
/// Fewest clusters a FAT32 volume may have (fewer would make it FAT16 by definition).
pub const MIN_CLUSTERS: u32 = 65_525;
/// Most clusters a FAT32 volume may have.
pub const MAX_CLUSTERS: u32 = 0x0FFF_FFF5;

const RESERVED_SECTORS: u32 = 32;
const NUM_FATS: u32 = 2;
const FSINFO_SECTOR: u32 = 1;
const BACKUP_BOOT_SECTOR: u32 = 6;
const ROOT_CLUSTER: u32 = 2;
const MEDIA: u8 = 0xF8;

const FAT_MASK: u32 = 0x0FFF_FFFF;
const FAT_EOC: u32 = 0x0FFF_FFFF;
const FAT_BAD: u32 = 0x0FFF_FFF7;
/// FAT entry values at or above this end a chain.
const FAT_EOC_MIN: u32 = 0x0FFF_FFF8;

/// 1980-01-01 as a DOS date; the DOS time is 0 (00:00:00).
const DOS_DATE: u16 = 0x0021;

const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LFN: u8 = 0x0F;

const DIR_ENTRY_SIZE: usize = 32;
/// FAT limits a directory to 65536 32-byte entries (2 MiB).
const MAX_DIR_ENTRIES: usize = 65_536;

const FSINFO_LEAD_SIG: u32 = 0x4161_5252;
const FSINFO_STRUCT_SIG: u32 = 0x6141_7272;
const FSINFO_TRAIL_SIG: u32 = 0xAA55_0000;

/// Errors from formatting, reading or modifying a FAT32 volume.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FatError {
    #[error("i/o error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "volume of {size} bytes is too small for fat32: at least {min} bytes are needed for \
         {MIN_CLUSTERS} clusters of 512 bytes"
    )]
    VolumeTooSmall { size: u64, min: u64 },
    #[error(
        "volume of {size} bytes is too large for fat32 with 4 KiB clusters (at most {max} bytes)"
    )]
    VolumeTooLarge { size: u64, max: u64 },
    #[error("volume offset {offset} is not a multiple of {SECTOR_SIZE} bytes")]
    Misaligned { offset: u64 },
    #[error("no fat32 volume at byte offset {offset}: {reason}")]
    NotFat32 { offset: u64, reason: String },
    #[error("corrupt fat32 volume: {0}")]
    Corrupt(String),
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("invalid file name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid volume label {label:?}: {reason}")]
    InvalidLabel { label: String, reason: String },
    #[error("no such file or directory: {path}")]
    NotFound { path: String },
    #[error("not a directory: {path}")]
    NotADirectory { path: String },
    #[error("is a directory: {path}")]
    IsADirectory { path: String },
    #[error("already exists: {path}")]
    AlreadyExists { path: String },
    #[error("path {path:?} is given twice (fat names are case-insensitive)")]
    DuplicatePath { path: String },
    #[error("file {path} has {size} bytes, more than the fat32 limit of 4 GiB - 1")]
    FileTooLarge { path: String, size: u64 },
    #[error("no space left on volume: {needed} clusters needed, {free} free")]
    NoSpace { needed: u64, free: u64 },
    #[error("directory {path} is full (fat allows at most {MAX_DIR_ENTRIES} entries)")]
    DirectoryFull { path: String },
    #[error("cannot generate a unique short name for {name:?} in its directory")]
    ShortNamesExhausted { name: String },
    #[error("cannot rename {from} to {to}: {reason}")]
    InvalidRename {
        from: String,
        to: String,
        reason: String,
    },
}

/// One file to place on a new volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatFile {
    /// Absolute, '/'-separated path, e.g. `/EFI/BOOT/BOOTX64.EFI`.
    pub path: String,
    pub data: Vec<u8>,
}

/// Options for [`format`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatOptions {
    /// Volume serial number (derive it from a seed for reproducible images).
    pub volume_id: u32,
    /// Written to the boot sectors and as the root directory's first entry, as `mkfs.fat -n`
    /// does; `None`: `NO NAME` in the boot sectors and no entry.
    pub label: Option<VolumeLabel>,
}

/// An entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The long name, or the short name if the entry has none.
    pub name: String,
    /// The 8.3 alias, e.g. `LOADER~1.CON`.
    pub short_name: String,
    pub is_dir: bool,
    /// File size in bytes (0 for directories).
    pub size: u32,
}

/// Shape of a FAT32 volume, from a boot sector or computed for a new volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub bytes_per_sector: u32,
    pub sectors_per_cluster: u32,
    pub reserved_sectors: u32,
    pub num_fats: u32,
    pub fat_sectors: u32,
    pub total_sectors: u32,
    pub cluster_count: u32,
    pub root_cluster: u32,
    /// 0 if the volume has no FSInfo sector.
    pub fsinfo_sector: u32,
    /// 0 if the volume has no backup boot sector.
    pub backup_boot_sector: u32,
    /// FAT updates go to every copy (else only to `active_fat`).
    pub mirrored: bool,
    pub active_fat: u32,
}

impl Geometry {
    /// The layout [`format`] uses for `size` bytes.
    pub fn for_new_volume(size: u64) -> Result<Self, FatError> {
        let total = size / SECTOR_SIZE;
        let max = max_volume_size();
        if total > u64::from(u32::MAX) {
            return Err(FatError::VolumeTooLarge { size, max });
        }
        let total = total as u32;
        for spc in [8u32, 4, 2, 1] {
            let Some((fat_sectors, clusters)) = fat_size(total, spc) else {
                continue;
            };
            if clusters < MIN_CLUSTERS {
                continue;
            }
            if clusters > MAX_CLUSTERS {
                return Err(FatError::VolumeTooLarge { size, max });
            }
            return Ok(Geometry {
                bytes_per_sector: SECTOR_SIZE as u32,
                sectors_per_cluster: spc,
                reserved_sectors: RESERVED_SECTORS,
                num_fats: NUM_FATS,
                fat_sectors,
                total_sectors: total,
                cluster_count: clusters,
                root_cluster: ROOT_CLUSTER,
                fsinfo_sector: FSINFO_SECTOR,
                backup_boot_sector: BACKUP_BOOT_SECTOR,
                mirrored: true,
                active_fat: 0,
            });
        }
        Err(FatError::VolumeTooSmall {
            size,
            min: min_volume_size(),
        })
    }

    /// Parses and validates a FAT32 boot sector; `size` is the size of the region holding it.
    pub fn from_boot_sector(bs: &[u8], offset: u64, size: u64) -> Result<Self, FatError> {
        let bad = |reason: String| FatError::NotFat32 { offset, reason };
        if bs[510..512] != [0x55, 0xAA] {
            return Err(bad("missing 0x55aa boot sector signature".into()));
        }
        let bps = u32::from(le16(bs, 11));
        if !matches!(bps, 512 | 1024 | 2048 | 4096) {
            return Err(bad(format!("unsupported sector size {bps}")));
        }
        let spc = u32::from(bs[13]);
        if spc == 0 || !spc.is_power_of_two() {
            return Err(bad(format!("invalid sectors per cluster {spc}")));
        }
        let reserved = u32::from(le16(bs, 14));
        let num_fats = u32::from(bs[16]);
        if reserved == 0 || num_fats == 0 {
            return Err(bad(format!(
                "invalid reserved sector count {reserved} or fat count {num_fats}"
            )));
        }
        if le16(bs, 17) != 0 || le16(bs, 22) != 0 {
            return Err(bad(
                "fat12/fat16 volume (root entry count or 16-bit fat size is set)".into(),
            ));
        }
        let total = match le16(bs, 19) {
            0 => le32(bs, 32),
            n => u32::from(n),
        };
        if u64::from(total) * u64::from(bps) > size {
            return Err(bad(format!(
                "boot sector declares {} bytes but the region has only {size}",
                u64::from(total) * u64::from(bps)
            )));
        }
        let fat_sectors = le32(bs, 36);
        let data_start = u64::from(reserved) + u64::from(num_fats) * u64::from(fat_sectors);
        if fat_sectors == 0 || data_start >= u64::from(total) {
            return Err(bad(format!(
                "fat size {fat_sectors} sectors leaves no data area in {total} sectors"
            )));
        }
        if le16(bs, 42) != 0 {
            return Err(bad(format!(
                "unsupported fat32 version {:#x}",
                le16(bs, 42)
            )));
        }
        let clusters = (u64::from(total) - data_start) / u64::from(spc);
        if clusters == 0 || clusters > u64::from(MAX_CLUSTERS) {
            return Err(bad(format!("invalid cluster count {clusters}")));
        }
        let clusters = clusters as u32;
        if u64::from(fat_sectors) * u64::from(bps) / 4 < u64::from(clusters) + 2 {
            return Err(FatError::Corrupt(format!(
                "fat of {fat_sectors} sectors is too small for {clusters} clusters"
            )));
        }
        let ext_flags = le16(bs, 40);
        let mirrored = ext_flags & 0x80 == 0;
        let active_fat = if mirrored {
            0
        } else {
            u32::from(ext_flags & 0x0F)
        };
        if active_fat >= num_fats {
            return Err(FatError::Corrupt(format!(
                "active fat {active_fat} does not exist"
            )));
        }
        let root_cluster = le32(bs, 44);
        if root_cluster < 2 || root_cluster >= clusters + 2 {
            return Err(FatError::Corrupt(format!(
                "root directory cluster {root_cluster} is out of range"
            )));
        }
        let optional = |v: u16| match v {
            0 | 0xFFFF => 0,
            v if u32::from(v) < reserved => u32::from(v),
            _ => 0,
        };
        Ok(Geometry {
            bytes_per_sector: bps,
            sectors_per_cluster: spc,
            reserved_sectors: reserved,
            num_fats,
            fat_sectors,
            total_sectors: total,
            cluster_count: clusters,
            root_cluster,
            fsinfo_sector: optional(le16(bs, 48)),
            backup_boot_sector: optional(le16(bs, 50)),
            mirrored,
            active_fat,
        })
    }

    pub fn cluster_bytes(&self) -> u64 {
        u64::from(self.bytes_per_sector) * u64::from(self.sectors_per_cluster)
    }

    pub fn sector_pos(&self, sector: u32) -> u64 {
        u64::from(sector) * u64::from(self.bytes_per_sector)
    }

    /// Byte position of FAT number `n` within the volume.
    pub fn fat_pos(&self, n: u32) -> u64 {
        self.sector_pos(self.reserved_sectors) + u64::from(n) * self.fat_bytes()
    }

    pub fn fat_bytes(&self) -> u64 {
        self.sector_pos(self.fat_sectors)
    }

    /// Byte position of `cluster` (>= 2) within the volume.
    pub fn cluster_pos(&self, cluster: u32) -> u64 {
        self.sector_pos(self.reserved_sectors)
            + u64::from(self.num_fats) * self.fat_bytes()
            + u64::from(cluster - 2) * self.cluster_bytes()
    }

    pub fn is_data_cluster(&self, cluster: u32) -> bool {
        cluster >= 2 && cluster < self.cluster_count + 2
    }

    /// Clusters needed for `bytes` bytes.
    pub fn clusters_for(&self, bytes: u64) -> u64 {
        bytes.div_ceil(self.cluster_bytes())
    }
}

/// Smallest FAT (in sectors) for `total` sectors with `spc` sectors per cluster, and the
/// resulting cluster count.
fn fat_size(total: u32, spc: u32) -> Option<(u32, u32)> {
    let avail = u64::from(total.checked_sub(RESERVED_SECTORS)?);
    let spc = u64::from(spc);
    let per_sector = SECTOR_SIZE / 4;
    let fits = |fat: u64| -> Option<u64> {
        let data = avail.checked_sub(u64::from(NUM_FATS) * fat)?;
        let clusters = data / spc;
        (clusters + 2 <= fat * per_sector).then_some(clusters)
    };
    // F * (128 * spc + 2) >= avail + 2 * spc is sufficient; step down while a smaller FAT fits.
    let mut fat = (avail + 2 * spc)
        .div_ceil(per_sector * spc + u64::from(NUM_FATS))
        .max(1);
    fits(fat)?;
    while fat > 1 && fits(fat - 1).is_some() {
        fat -= 1;
    }
    let clusters = fits(fat)?;
    Some((u32::try_from(fat).ok()?, u32::try_from(clusters).ok()?))
}

/// Smallest region [`format`] accepts (one sector per cluster, [`MIN_CLUSTERS`] clusters).
pub fn min_volume_size() -> u64 {
    let fat = u64::from(MIN_CLUSTERS + 2).div_ceil(SECTOR_SIZE / 4);
    (u64::from(RESERVED_SECTORS) + u64::from(NUM_FATS) * fat + u64::from(MIN_CLUSTERS))
        * SECTOR_SIZE
}

/// Largest region [`format`] accepts (4 KiB clusters, [`MAX_CLUSTERS`] clusters).
pub fn max_volume_size() -> u64 {
    let fat = u64::from(MAX_CLUSTERS + 2).div_ceil(SECTOR_SIZE / 4);
    let sectors =
        u64::from(RESERVED_SECTORS) + u64::from(NUM_FATS) * fat + u64::from(MAX_CLUSTERS) * 8;
    sectors.min(u64::from(u32::MAX)) * SECTOR_SIZE
}

/// Boot sector of a new volume.
fn boot_sector(geo: &Geometry, hidden_sectors: u32, opts: &FormatOptions) -> [u8; 512] {
    let mut bs = [0u8; 512];
    bs[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
    bs[3..11].copy_from_slice(b"P6OS    ");
    put16(&mut bs, 11, geo.bytes_per_sector as u16);
    bs[13] = geo.sectors_per_cluster as u8;
    put16(&mut bs, 14, geo.reserved_sectors as u16);
    bs[16] = geo.num_fats as u8;
    // 17: root entries = 0, 19: 16-bit total = 0
    bs[21] = MEDIA;
    // 22: 16-bit fat size = 0
    put16(&mut bs, 24, 63); // sectors per track
    put16(&mut bs, 26, 255); // heads
    put32(&mut bs, 28, hidden_sectors);
    put32(&mut bs, 32, geo.total_sectors);
    put32(&mut bs, 36, geo.fat_sectors);
    // 40: ext flags = 0 (mirrored), 42: version 0.0
    put32(&mut bs, 44, geo.root_cluster);
    put16(&mut bs, 48, geo.fsinfo_sector as u16);
    put16(&mut bs, 50, geo.backup_boot_sector as u16);
    bs[64] = 0x80; // drive number
    bs[66] = 0x29; // extended boot signature
    put32(&mut bs, 67, opts.volume_id);
    let label = opts
        .label
        .as_ref()
        .map_or(b"NO NAME    ", VolumeLabel::as_bytes);
    bs[71..82].copy_from_slice(label);
    bs[82..90].copy_from_slice(b"FAT32   ");
    // Boot code at 0x5A (the jump target): cli; hlt; jmp back to hlt. An ESP is never booted
    // through this sector.
    bs[90..94].copy_from_slice(&[0xFA, 0xF4, 0xEB, 0xFD]);
    bs[510] = 0x55;
    bs[511] = 0xAA;
    bs
}

/// FSInfo sector with the given free cluster count and next-free hint.
fn fsinfo_sector(free: u32, next_free: u32) -> [u8; 512] {
    let mut s = [0u8; 512];
    put32(&mut s, 0, FSINFO_LEAD_SIG);
    put32(&mut s, 484, FSINFO_STRUCT_SIG);
    put32(&mut s, 488, free);
    put32(&mut s, 492, next_free);
    put32(&mut s, 508, FSINFO_TRAIL_SIG);
    s
}

/// FSInfo free count and next-free hint derived from the FAT: the hint is the cluster before the
/// first free one (drivers start searching after the hint), so it only depends on the FAT's state.
fn fsinfo_values(fat: &[u32], cluster_count: u32) -> (u32, u32) {
    let data = &fat[2..cluster_count as usize + 2];
    let free = data.iter().filter(|&&v| v & FAT_MASK == 0).count() as u32;
    let next = match data.iter().position(|&v| v & FAT_MASK == 0) {
        Some(i) => (i as u32 + 1).max(2),
        None => 0xFFFF_FFFF,
    };
    (free, next)
}

/// A 32-byte short directory entry with fixed timestamps.
fn short_entry(name: &[u8; 11], attr: u8, cluster: u32, size: u32) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[..11].copy_from_slice(name);
    e[11] = attr;
    put16(&mut e, 16, DOS_DATE); // creation date (creation time 0)
    put16(&mut e, 18, DOS_DATE); // last access date
    put16(&mut e, 20, (cluster >> 16) as u16);
    put16(&mut e, 24, DOS_DATE); // write date (write time 0)
    put16(&mut e, 26, cluster as u16);
    put32(&mut e, 28, size);
    e
}

fn entry_cluster(e: &[u8]) -> u32 {
    (u32::from(le16(e, 20)) << 16) | u32::from(le16(e, 26))
}

fn set_entry_cluster(e: &mut [u8], cluster: u32) {
    put16(e, 20, (cluster >> 16) as u16);
    put16(e, 26, cluster as u16);
}

/// The `.` and `..` entries of a new subdirectory (`parent` is 0 for the root).
fn dot_entries(cluster: u32, parent: u32) -> [[u8; 32]; 2] {
    [
        short_entry(b".          ", ATTR_DIRECTORY, cluster, 0),
        short_entry(b"..         ", ATTR_DIRECTORY, parent, 0),
    ]
}

/// Splits an absolute path into validated components (`/` gives none).
fn split_path(path: &str) -> Result<Vec<&str>, FatError> {
    let invalid = |reason: &str| FatError::InvalidPath {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| invalid("must be absolute (start with '/')"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    rest.split('/')
        .map(|c| {
            if c.is_empty() {
                return Err(invalid("empty path component"));
            }
            if c == "." || c == ".." {
                return Err(invalid("'.' and '..' components are not supported"));
            }
            names::validate_name(c)?;
            Ok(c)
        })
        .collect()
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> FatError {
    let context = context.into();
    move |source| FatError::Io { context, source }
}

fn read_at<D: Read + Seek>(
    dev: &mut D,
    pos: u64,
    buf: &mut [u8],
    what: &str,
) -> Result<(), FatError> {
    let len = buf.len();
    let ctx = || format!("reading {what} ({len} bytes at byte {pos})");
    dev.seek(SeekFrom::Start(pos)).map_err(io_err(ctx()))?;
    dev.read_exact(buf).map_err(io_err(ctx()))
}

fn write_at<D: Write + Seek>(
    dev: &mut D,
    pos: u64,
    buf: &[u8],
    what: &str,
) -> Result<(), FatError> {
    let len = buf.len();
    let ctx = || format!("writing {what} ({len} bytes at byte {pos})");
    dev.seek(SeekFrom::Start(pos)).map_err(io_err(ctx()))?;
    dev.write_all(buf).map_err(io_err(ctx()))
}
