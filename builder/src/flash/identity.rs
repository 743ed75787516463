//! What the confirmed target was, so that the opened one can be checked to be the same: a disk
//! swapped in (or a loop device attached to another file) between the confirmation and the
//! first write has the same path, often the same device number, but not the same identity.
//!
//! Recorded from the path when the target is shown for confirmation ([`Identity::of_path`]),
//! read again from the descriptor that is then written ([`Identity::of_file`]: `fstat` and
//! ioctls on the descriptor, not the path); `write_image` compares the two before any write.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::target::{read_disk, DevNum};

/// Who a target is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A regular file: its inode.
    File { dev: u64, ino: u64 },
    /// A block device: its number and what is in it.
    Block {
        rdev: u64,
        /// The kernel's disk sequence number (Linux 5.15+): new for every medium inserted and
        /// every loop device attachment; `None` on older kernels.
        diskseq: Option<u64>,
        /// Bytes.
        size: u64,
        serial: Option<String>,
        model: Option<String>,
    },
    /// Neither (`refusals` stops those before a write).
    Other { rdev: u64 },
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::File { dev, ino } => write!(f, "file inode {ino} on device {dev:#x}"),
            Identity::Block {
                rdev,
                diskseq,
                size,
                serial,
                model,
            } => {
                let DevNum(major, minor) = DevNum::from_rdev(*rdev);
                write!(f, "block device {major}:{minor}, {size} bytes")?;
                if let Some(m) = model {
                    write!(f, ", model {m}")?;
                }
                if let Some(s) = serial {
                    write!(f, ", serial {s}")?;
                }
                if let Some(q) = diskseq {
                    write!(f, ", disk sequence {q}")?;
                }
                Ok(())
            }
            Identity::Other { rdev } => write!(f, "device {rdev:#x}"),
        }
    }
}

impl Identity {
    /// The identity of what `path` names now (symlinks followed, as `inspect` does).
    pub fn of_path(path: &Path) -> io::Result<Identity> {
        Identity::of_file(&File::open(path)?)
    }

    /// The identity of an opened target, from its descriptor.
    pub fn of_file(file: &File) -> io::Result<Identity> {
        let meta = file.metadata()?;
        if meta.is_file() {
            return Ok(Identity::File {
                dev: meta.dev(),
                ino: meta.ino(),
            });
        }
        if !meta.file_type().is_block_device() {
            return Ok(Identity::Other { rdev: meta.rdev() });
        }
        let rdev = meta.rdev();
        let DevNum(major, minor) = DevNum::from_rdev(rdev);
        let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}"));
        let disk = sys.map(|dir| read_disk(&dir)).unwrap_or_default();
        Ok(Identity::Block {
            rdev,
            diskseq: ioctl_u64(file, BLKGETDISKSEQ),
            size: ioctl_u64(file, BLKGETSIZE64).unwrap_or(0),
            serial: disk.serials.into_iter().next(),
            model: disk.model,
        })
    }
}

/// `_IOR(0x12, 128, __u64)`.
const BLKGETDISKSEQ: libc::c_ulong = 0x8008_1280;
/// `_IOR(0x12, 114, size_t)`.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

fn ioctl_u64(file: &File, request: libc::c_ulong) -> Option<u64> {
    let mut value: u64 = 0;
    // SAFETY: both requests write one u64 through the pointer, which points at `value`.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request, &mut value as *mut u64) };
    (rc == 0).then_some(value)
}
