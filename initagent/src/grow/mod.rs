//! Disk growth at boot: the state partition grows to the end of a larger disk (its GPT entry,
//! the backup table, the kernel's view) before it is mounted, and its ext4 filesystem grows
//! online once it is. Both run at every boot and do nothing when there is nothing to do; a
//! power cut at any instant leaves a bootable disk and the next boot finishes the job.
//!
//! The decisions are pure: the table's writes are `p6os_layout::gpt::grow::plan`'s, the
//! kernel's and the filesystem's are [`rules`]'. This module reads, writes, flushes and makes
//! the two ioctls (`BLKPG_RESIZE_PARTITION`, `EXT4_IOC_RESIZE_FS`, which is what `resize2fs`
//! does for an online grow: the kernel journals it).
//!
//! Device nodes are opened from devtmpfs by the kernel's names, never through a symlink, and
//! are checked against sysfs (a block device with the disk's own major:minor).

pub mod rules;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::time::Instant;

use p6os_layout::gpt::grow::{self as table, Disk, Refusal};
use p6os_layout::gpt::SECTOR;

use rules::{FsPlan, KernelPartition, KernelPlan, Sizes, Superblock};

#[derive(Debug, thiserror::Error)]
pub enum GrowError {
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Table(#[from] Refusal),
    #[error("{0}")]
    Invalid(String),
}

fn io_err<'a>(what: &'static str, path: &'a str) -> impl FnOnce(io::Error) -> GrowError + 'a {
    move |source| GrowError::Io {
        what,
        path: path.to_string(),
        source,
    }
}

/// `/sys/class/block/<name>` (a `/` in a kernel name is `!` in sysfs).
fn sysfs(name: &str, file: &str) -> String {
    format!("/sys/class/block/{}/{file}", name.replace('/', "!"))
}

fn read_number(path: &str) -> Result<u64, GrowError> {
    let text = fs::read_to_string(path).map_err(io_err("cannot read", path))?;
    text.trim()
        .parse()
        .map_err(|_| GrowError::Invalid(format!("{path}: not a number: {:?}", text.trim())))
}

/// Opens /dev/`name` (no symlink followed) and checks that it is the block device sysfs
/// knows by that name.
fn open_device(name: &str, access: Access) -> Result<File, GrowError> {
    let path = format!("/dev/{name}");
    let mut options = OpenOptions::new();
    options
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    if access == Access::ReadWrite {
        options.write(true);
    }
    let file = options.open(&path).map_err(io_err("cannot open", &path))?;
    let meta = file.metadata().map_err(io_err("cannot stat", &path))?;
    let dev_path = sysfs(name, "dev");
    let dev = fs::read_to_string(&dev_path).map_err(io_err("cannot read", &dev_path))?;
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    if !meta.file_type().is_block_device() || dev.trim() != format!("{major}:{minor}") {
        return Err(GrowError::Invalid(format!(
            "{path} is not the block device {} of sysfs",
            dev.trim()
        )));
    }
    Ok(file)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    ReadWrite,
}

fn read_at(file: &File, offset: u64, len: usize, path: &str) -> Result<Vec<u8>, GrowError> {
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, offset)
        .map_err(io_err("cannot read", path))?;
    Ok(bytes)
}

/// The table's part of a disk: what `p6os_layout::gpt::grow::plan` reads, and the writes.
/// Works on a block device or an image file.
pub struct TableDisk {
    file: File,
    path: String,
    pub bytes: u64,
    pub logical_block_size: u64,
}

impl TableDisk {
    pub fn plan(&self, label: &str) -> Result<table::Growth, GrowError> {
        if self.bytes < (table::HEAD_BYTES + table::TAIL_BYTES) as u64 {
            return Err(Refusal::TooSmall(self.bytes).into());
        }
        let head = read_at(&self.file, 0, table::HEAD_BYTES, &self.path)?;
        let tail_at = self.bytes / SECTOR * SECTOR - table::TAIL_BYTES as u64;
        let tail = read_at(&self.file, tail_at, table::TAIL_BYTES, &self.path)?;
        Ok(table::plan(
            &Disk {
                head: &head,
                tail: &tail,
                bytes: self.bytes,
                logical_block_size: self.logical_block_size,
            },
            label,
        )?)
    }

    /// Each write, then a flush (`fdatasync`: through the disk's write cache).
    pub fn write(&self, writes: &[table::Write]) -> Result<(), GrowError> {
        for w in writes {
            self.file
                .write_all_at(&w.bytes, w.offset)
                .map_err(io_err("cannot write", &self.path))?;
            self.file
                .sync_data()
                .map_err(io_err("cannot flush", &self.path))?;
        }
        Ok(())
    }

    /// An image file as a disk with 512-byte sectors (tests, tools).
    pub fn open_file(path: &str) -> Result<TableDisk, GrowError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(io_err("cannot open", path))?;
        let bytes = file.metadata().map_err(io_err("cannot stat", path))?.len();
        Ok(TableDisk {
            file,
            path: path.to_string(),
            bytes,
            logical_block_size: SECTOR,
        })
    }

    fn open_disk(disk: &str) -> Result<TableDisk, GrowError> {
        let file = open_device(disk, Access::ReadWrite)?;
        let path = format!("/dev/{disk}");
        // The kernel's size of the disk, in 512-byte units whatever its block size.
        let bytes = read_number(&sysfs(disk, "size"))?.saturating_mul(512);
        let logical_block_size = read_number(&sysfs(disk, "queue/logical_block_size"))?;
        Ok(TableDisk {
            file,
            path,
            bytes,
            logical_block_size,
        })
    }
}

fn kernel_partition(name: &str) -> Result<KernelPartition, GrowError> {
    let number = read_number(&sysfs(name, "partition"))?;
    Ok(KernelPartition {
        number: u32::try_from(number).unwrap_or(u32::MAX),
        start: read_number(&sysfs(name, "start"))?,
        size: read_number(&sysfs(name, "size"))?,
    })
}

/// Grows partition `label` (kernel name `part`, e.g. `vda4`) on `disk` (`vda`) to the end of
/// the disk: the table, then the kernel's view. Logs what it does.
pub fn grow_partition(disk: &str, part: &str, label: &str) -> Result<(), GrowError> {
    let started = Instant::now();
    let dev = TableDisk::open_disk(disk)?;
    let growth = dev.plan(label)?;
    let (from, to) = (growth.before.size(), growth.after.size());
    if !growth.writes.is_empty() {
        info!(
            "growing {label} /dev/{part} from {} to {} (disk {disk}: {}): {} table writes",
            rules::size_text(from),
            rules::size_text(to),
            rules::size_text(dev.bytes),
            growth.writes.len()
        );
        dev.write(&growth.writes)?;
    }
    let kernel = kernel_partition(part)?;
    match rules::plan_kernel(&kernel, &growth.after) {
        KernelPlan::Current => {}
        KernelPlan::Resize {
            number,
            start,
            length,
        } => {
            resize_partition(&dev.file, number, start, length)
                .map_err(io_err("BLKPG_RESIZE_PARTITION on", &dev.path))?;
            let now = read_number(&sysfs(part, "size"))?;
            info!(
                "grew {label} /dev/{part} from {} to {} in {} ms (GPT {}, kernel told)",
                rules::size_text(kernel.size * 512),
                rules::size_text(now * 512),
                started.elapsed().as_millis(),
                if growth.writes.is_empty() {
                    "already grown"
                } else {
                    "written"
                },
            );
        }
        KernelPlan::Mismatch(why) => {
            if !growth.writes.is_empty() {
                info!(
                    "grew {label} in the GPT of {disk} from {} to {}",
                    rules::size_text(from),
                    rules::size_text(to)
                );
            }
            return Err(GrowError::Invalid(format!(
                "the kernel was not told: {why}; the next boot uses the new size"
            )));
        }
    }
    Ok(())
}

/// Grows the ext4 filesystem on /dev/`part`, mounted at `mount_point`, to its partition.
pub fn grow_filesystem(part: &str, mount_point: &str) -> Result<(), GrowError> {
    let started = Instant::now();
    let before = read_superblock(part)?;
    let partition_bytes = read_number(&sysfs(part, "size"))?.saturating_mul(512);
    match rules::plan_filesystem(&before, partition_bytes) {
        FsPlan::Fits => Ok(()),
        FsPlan::Larger {
            fs_bytes,
            partition_bytes,
        } => Err(GrowError::Invalid(format!(
            "the filesystem on /dev/{part} ({fs_bytes} bytes) is larger than its partition \
             ({partition_bytes} bytes)"
        ))),
        FsPlan::Grow {
            from_blocks,
            to_blocks,
        } => {
            info!(
                "growing the filesystem on /dev/{part} from {} to {}",
                rules::size_text(from_blocks * before.block_size),
                rules::size_text(to_blocks * before.block_size)
            );
            let dir = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(mount_point)
                .map_err(io_err("cannot open", mount_point))?;
            resize_ext4(&dir, to_blocks).map_err(io_err("EXT4_IOC_RESIZE_FS on", mount_point))?;
            let after = read_superblock(part)?;
            info!(
                "grew the filesystem on /dev/{part} from {} to {} in {} ms",
                rules::size_text(before.bytes()),
                rules::size_text(after.bytes()),
                started.elapsed().as_millis()
            );
            Ok(())
        }
    }
}

fn read_superblock(part: &str) -> Result<Superblock, GrowError> {
    let file = open_device(part, Access::Read)?;
    let bytes = read_at(
        &file,
        rules::SUPERBLOCK_AT,
        rules::SUPERBLOCK_LEN,
        &format!("/dev/{part}"),
    )?;
    Superblock::parse(&bytes).map_err(|e| GrowError::Invalid(format!("/dev/{part}: {e}")))
}

/// The sizes `status` shows, for the state partition /dev/`part`.
pub fn sizes(part: &str) -> Result<Sizes, GrowError> {
    let disk = crate::sys::scan_block_devices()
        .into_iter()
        .find(|d| d.uevent.devname() == Some(part))
        .and_then(|d| d.disk)
        .ok_or_else(|| GrowError::Invalid(format!("cannot find the disk of {part}")))?;
    Ok(Sizes {
        disk_bytes: read_number(&sysfs(&disk, "size"))?.saturating_mul(512),
        disk,
        state_partition_bytes: read_number(&sysfs(part, "size"))?.saturating_mul(512),
        state_filesystem_bytes: read_superblock(part)?.bytes(),
    })
}

/// `struct blkpg_partition` (linux/blkpg.h).
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

/// `struct blkpg_ioctl_arg`.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// `BLKPG`, `_IO(0x12, 105)`.
const BLKPG: libc::c_ulong = 0x1269;
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;
/// `EXT4_IOC_RESIZE_FS`, `_IOW('f', 16, __u64)`.
const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;

/// Tells the kernel that partition `number` of the disk open as `disk` is now `length` bytes
/// from `start` (which must be where the kernel has it).
fn resize_partition(disk: &File, number: u32, start: u64, length: u64) -> io::Result<()> {
    let invalid = |_| io::Error::from(io::ErrorKind::InvalidInput);
    let mut part = BlkpgPartition {
        start: i64::try_from(start).map_err(invalid)?,
        length: i64::try_from(length).map_err(invalid)?,
        pno: i32::try_from(number).map_err(invalid)?,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: `arg` and the `part` it points to are valid, properly laid out (repr(C), as in
    // linux/blkpg.h) and live across the call; the kernel reads them only.
    let rc = unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG as _, &mut arg) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Grows the ext4 filesystem holding the open directory `dir` to `blocks` blocks.
fn resize_ext4(dir: &File, blocks: u64) -> io::Result<()> {
    let blocks: u64 = blocks;
    // SAFETY: the kernel reads one u64 through the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_RESIZE_FS as _, &blocks) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests;
