//! What growing the state partition means for the kernel and for the filesystem: the ext4
//! superblock fields that matter, how many blocks the filesystem should have, whether the
//! kernel must be told of a partition's new size, and the size texts of logs and `status`.
//! Pure: bytes and numbers in, decisions out. The table itself is `p6os_layout::gpt::grow`'s.

use p6os_layout::gpt::{Partition, SECTOR};

/// Byte offset of the ext4 superblock in its partition, and its length.
pub const SUPERBLOCK_AT: u64 = 1024;
pub const SUPERBLOCK_LEN: usize = 1024;

const EXT4_MAGIC: u16 = 0xEF53;
const INCOMPAT_64BIT: u32 = 0x80;
const RO_COMPAT_BIGALLOC: u32 = 0x200;

/// The fields of an ext4 superblock that a resize needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub block_size: u64,
    pub blocks: u64,
    pub first_data_block: u64,
    pub blocks_per_group: u64,
    pub inodes_per_group: u64,
    pub inode_size: u64,
    pub reserved_gdt_blocks: u64,
    pub desc_size: u64,
    /// Blocks per cluster (1 without bigalloc).
    pub cluster_ratio: u64,
}

impl Superblock {
    pub fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(self.block_size)
    }

    /// The superblock from its 1024 bytes (at byte 1024 of the partition).
    pub fn parse(sb: &[u8]) -> Result<Superblock, String> {
        let u16_at = |at: usize| {
            sb.get(at..at + 2)
                .map(|b| u64::from(u16::from_le_bytes([b[0], b[1]])))
                .unwrap_or(0)
        };
        let u32_at = |at: usize| {
            sb.get(at..at + 4)
                .map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .unwrap_or(0)
        };
        if sb.len() < SUPERBLOCK_LEN {
            return Err(format!("a superblock of {} bytes", sb.len()));
        }
        if u16_at(0x38) != u64::from(EXT4_MAGIC) {
            return Err("no ext4 superblock (magic)".into());
        }
        let log_block = u32_at(0x18);
        let log_cluster = u32_at(0x1C);
        if log_block > 6 || log_cluster > 30 {
            return Err(format!("implausible block size (log {log_block})"));
        }
        let incompat = u32_at(0x60) as u32;
        let ro_compat = u32_at(0x64) as u32;
        let is_64bit = incompat & INCOMPAT_64BIT != 0;
        let mut blocks = u32_at(0x04);
        if is_64bit {
            blocks |= u32_at(0x150) << 32;
        }
        let block_size = 1024u64 << log_block;
        let cluster_ratio = if ro_compat & RO_COMPAT_BIGALLOC != 0 {
            (1024u64 << log_cluster) / block_size
        } else {
            1
        };
        // Revision 0 has 128-byte inodes and no inode size field.
        let inode_size = if u32_at(0x4C) == 0 { 128 } else { u16_at(0x58) };
        let desc_size = if is_64bit { u16_at(0xFE).max(32) } else { 32 };
        let s = Superblock {
            block_size,
            blocks,
            first_data_block: u32_at(0x14),
            blocks_per_group: u32_at(0x20),
            inodes_per_group: u32_at(0x28),
            inode_size,
            reserved_gdt_blocks: u16_at(0xCE),
            desc_size,
            cluster_ratio: cluster_ratio.max(1),
        };
        if s.blocks_per_group == 0 || s.blocks == 0 {
            return Err("a superblock without blocks".into());
        }
        Ok(s)
    }

    /// The most blocks short of the partition's end that the kernel may leave when it grows
    /// this filesystem: it drops a last group too small for its own metadata
    /// (`ext4_resize_fs`: superblock backup, group descriptors, reserved GDT blocks, two
    /// bitmaps, the inode table, a cluster). A filesystem this close to its end is grown.
    pub fn slack_blocks(&self, partition_blocks: u64) -> u64 {
        let groups = partition_blocks
            .saturating_sub(self.first_data_block)
            .div_ceil(self.blocks_per_group);
        let descs_per_block = (self.block_size / self.desc_size).max(1);
        let desc_blocks = groups.div_ceil(descs_per_block);
        let inode_table = (self.inodes_per_group * self.inode_size).div_ceil(self.block_size);
        1 + desc_blocks + self.reserved_gdt_blocks + 2 + inode_table + self.cluster_ratio
    }
}

/// What to do with the filesystem of a partition of `partition_bytes` (the kernel's size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsPlan {
    /// It fills its partition (to within what the kernel would leave).
    Fits,
    /// `EXT4_IOC_RESIZE_FS` to `to_blocks` (the kernel may stop a little short).
    Grow { from_blocks: u64, to_blocks: u64 },
    /// Larger than its partition: never shrunk, and nothing to grow.
    Larger { fs_bytes: u64, partition_bytes: u64 },
}

pub fn plan_filesystem(sb: &Superblock, partition_bytes: u64) -> FsPlan {
    let target = partition_bytes / sb.block_size;
    if target < sb.blocks {
        FsPlan::Larger {
            fs_bytes: sb.bytes(),
            partition_bytes,
        }
    } else if target - sb.blocks <= sb.slack_blocks(target) {
        FsPlan::Fits
    } else {
        FsPlan::Grow {
            from_blocks: sb.blocks,
            to_blocks: target,
        }
    }
}

/// The kernel's idea of a partition (`/sys/class/block/<part>/{start,size}`, in 512-byte
/// units whatever the disk's block size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelPartition {
    pub number: u32,
    pub start: u64,
    pub size: u64,
}

/// Whether to tell the kernel (`BLKPG_RESIZE_PARTITION`) that a partition has grown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelPlan {
    Current,
    /// Resize partition `number` to `length` bytes from `start` bytes.
    Resize {
        number: u32,
        start: u64,
        length: u64,
    },
    /// The kernel sees another partition there, or a larger one: left alone.
    Mismatch(String),
}

pub fn plan_kernel(kernel: &KernelPartition, table: &Partition) -> KernelPlan {
    if kernel.number != table.number || kernel.start != table.first_lba {
        return KernelPlan::Mismatch(format!(
            "the kernel has partition {} at sector {}, the table partition {} at {}",
            kernel.number, kernel.start, table.number, table.first_lba
        ));
    }
    let sectors = table.size() / SECTOR;
    match kernel.size.cmp(&sectors) {
        std::cmp::Ordering::Equal => KernelPlan::Current,
        std::cmp::Ordering::Less => KernelPlan::Resize {
            number: table.number,
            start: table.offset(),
            length: table.size(),
        },
        std::cmp::Ordering::Greater => KernelPlan::Mismatch(format!(
            "the kernel's partition {} ({} sectors) is larger than the table's ({sectors})",
            kernel.number, kernel.size
        )),
    }
}

/// `512 KiB`, `64 MiB`, `1023 MiB`, `931.5 GiB`: MiB up to 10 GiB, GiB beyond.
pub fn size_text(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if bytes < MIB {
        format!("{} KiB", bytes / 1024)
    } else if bytes < 10 * GIB {
        format!("{} MiB", bytes / MIB)
    } else {
        // Tenths, rounded, in integers (no float formatting in the static agent).
        let tenths = (u128::from(bytes) * 10 + u128::from(GIB) / 2) / u128::from(GIB);
        format!("{}.{} GiB", tenths / 10, tenths % 10)
    }
}

/// What `status` shows about the state partition and its disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Sizes {
    pub disk: String,
    pub disk_bytes: u64,
    pub state_partition_bytes: u64,
    pub state_filesystem_bytes: u64,
}

impl Sizes {
    /// `state: partition 1023 MiB, filesystem 1023 MiB, disk vda 1024 MiB`.
    pub fn text(&self) -> String {
        format!(
            "state: partition {}, filesystem {}, disk {} {}",
            size_text(self.state_partition_bytes),
            size_text(self.state_filesystem_bytes),
            self.disk,
            size_text(self.disk_bytes)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p6os_layout::gpt::Guid as Uuid;

    /// The superblock `mkfs.ext4 -T default -I 256` (builtin defaults) writes for a 64 MiB
    /// state partition, as read by `dumpe2fs` on the tiny image: 4 KiB blocks, 16384 blocks,
    /// 32768 per group, 4096 inodes per group (the 16384 blocks are one group here),
    /// 7 reserved GDT blocks (enough to grow to 64 GiB), 64-bit descriptors.
    fn state_sb() -> Vec<u8> {
        let mut sb = vec![0u8; SUPERBLOCK_LEN];
        let put32 =
            |sb: &mut Vec<u8>, at: usize, v: u32| sb[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put32(&mut sb, 0x04, 16384);
        put32(&mut sb, 0x14, 0);
        put32(&mut sb, 0x18, 2);
        put32(&mut sb, 0x1C, 2);
        put32(&mut sb, 0x20, 32768);
        put32(&mut sb, 0x28, 4096);
        sb[0x38..0x3A].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        put32(&mut sb, 0x4C, 1);
        sb[0x58..0x5A].copy_from_slice(&256u16.to_le_bytes());
        put32(&mut sb, 0x60, 0x2C2);
        sb[0xCE..0xD0].copy_from_slice(&7u16.to_le_bytes());
        sb[0xFE..0x100].copy_from_slice(&64u16.to_le_bytes());
        sb
    }

    #[test]
    fn reads_the_fields_a_resize_needs() {
        let sb = Superblock::parse(&state_sb()).unwrap();
        assert_eq!(
            sb,
            Superblock {
                block_size: 4096,
                blocks: 16384,
                first_data_block: 0,
                blocks_per_group: 32768,
                inodes_per_group: 4096,
                inode_size: 256,
                reserved_gdt_blocks: 7,
                desc_size: 64,
                cluster_ratio: 1,
            }
        );
        assert_eq!(sb.bytes(), 64 << 20);
        // The high half of the block count counts only with the 64bit feature.
        let mut big = state_sb();
        big[0x150] = 1;
        assert_eq!(Superblock::parse(&big).unwrap().blocks, (1 << 32) + 16384);
        big[0x60] &= !(INCOMPAT_64BIT as u8);
        let narrow = Superblock::parse(&big).unwrap();
        assert_eq!((narrow.blocks, narrow.desc_size), (16384, 32));
    }

    #[test]
    fn refuses_what_is_not_ext4() {
        assert!(Superblock::parse(&[0u8; 1024])
            .unwrap_err()
            .contains("magic"));
        assert!(Superblock::parse(&state_sb()[..500]).is_err());
        let mut sb = state_sb();
        sb[0x18] = 9;
        assert!(Superblock::parse(&sb).unwrap_err().contains("block size"));
        let mut sb = state_sb();
        sb[0x20..0x24].fill(0);
        assert!(Superblock::parse(&sb).is_err());
        for fill in [0u8, 0x53, 0xff] {
            let mut junk = vec![fill; 1024];
            junk[0x38..0x3A].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
            if let Ok(sb) = Superblock::parse(&junk) {
                let _ = plan_filesystem(&sb, u64::MAX);
                let _ = sb.slack_blocks(u64::MAX);
            }
        }
    }

    #[test]
    fn filesystem_grows_to_its_partition_never_shrinks() {
        let sb = Superblock::parse(&state_sb()).unwrap();
        // The tiny image on a 1 GiB disk: the partition ends 17 KiB before the disk's end.
        let part = (1 << 30) - (64 << 20) - 34 * 512 - (1 << 20);
        assert_eq!(
            plan_filesystem(&sb, part + (64 << 20)),
            FsPlan::Grow {
                from_blocks: 16384,
                to_blocks: (part + (64 << 20)) / 4096
            }
        );
        assert_eq!(plan_filesystem(&sb, 64 << 20), FsPlan::Fits);
        // A partition a bit larger (the kernel would leave such a small last group out).
        let slack = sb.slack_blocks(16384 + 600);
        assert_eq!(slack, 1 + 1 + 7 + 2 + 256 + 1);
        assert_eq!(plan_filesystem(&sb, (16384 + slack) * 4096), FsPlan::Fits);
        assert_eq!(
            plan_filesystem(&sb, (16384 + slack + 1) * 4096 + 4095),
            FsPlan::Grow {
                from_blocks: 16384,
                to_blocks: 16384 + slack + 1
            }
        );
        assert_eq!(
            plan_filesystem(&sb, 32 << 20),
            FsPlan::Larger {
                fs_bytes: 64 << 20,
                partition_bytes: 32 << 20
            }
        );
    }

    fn partition(first: u64, last: u64) -> Partition {
        Partition {
            number: 4,
            label: "p6os-state".into(),
            type_guid: Uuid::nil(),
            guid: Uuid::nil(),
            first_lba: first,
            last_lba: last,
        }
    }

    #[test]
    fn the_kernel_is_told_only_of_growth_of_the_same_partition() {
        let table = partition(2048, 4095);
        let k = |number, start, size| KernelPartition {
            number,
            start,
            size,
        };
        assert_eq!(plan_kernel(&k(4, 2048, 2048), &table), KernelPlan::Current);
        assert_eq!(
            plan_kernel(&k(4, 2048, 1024), &table),
            KernelPlan::Resize {
                number: 4,
                start: 2048 * 512,
                length: 2048 * 512
            }
        );
        for other in [k(3, 2048, 1024), k(4, 2049, 1024), k(4, 2048, 4096)] {
            assert!(
                matches!(plan_kernel(&other, &table), KernelPlan::Mismatch(_)),
                "{other:?}"
            );
        }
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size_text(17 * 512), "8 KiB");
        assert_eq!(size_text(64 << 20), "64 MiB");
        assert_eq!(size_text((1 << 30) - 1), "1023 MiB");
        assert_eq!(size_text(10 << 30), "10.0 GiB");
        assert_eq!(size_text(1_000_204_886_016), "931.5 GiB");
        let s = Sizes {
            disk: "vda".into(),
            disk_bytes: 1 << 30,
            state_partition_bytes: 1023 << 20,
            state_filesystem_bytes: 1022 << 20,
        };
        assert_eq!(
            s.text(),
            "state: partition 1023 MiB, filesystem 1022 MiB, disk vda 1024 MiB"
        );
    }
}
