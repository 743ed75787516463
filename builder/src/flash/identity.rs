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

/// The target changed between two looks at it.
#[derive(Debug, thiserror::Error)]
#[error("{path} changed while it was checked: it was {before}, it is now {now}; nothing was written\n  hint: a disk was swapped (or a loop device re-attached) during the checks; run `p6os flash` again")]
pub struct Changed {
    pub path: String,
    pub before: Box<Identity>,
    pub now: Box<Identity>,
}

/// Takes the identity of `path` again after the checks and compares it with the one taken
/// before them: what was inspected (and is then shown and recorded) is what was identified.
pub fn still_the_same(path: &Path, before: &Identity) -> Result<Identity, io::Error> {
    let now = Identity::of_path(path)?;
    if &now != before {
        return Err(io::Error::other(Changed {
            path: path.display().to_string(),
            before: Box::new(before.clone()),
            now: Box::new(now),
        }));
    }
    Ok(now)
}

/// The confirmation question: the target as described, then the identity that is recorded and
/// checked again before the first write (disk sequence number and serial: what the user
/// confirms is what is recorded). `writing` names what goes onto it (an image, a drive).
pub fn prompt(description: &str, identity: &Identity, writing: &str) -> String {
    let mut who = identity.to_string();
    if let Identity::Block {
        diskseq, serial, ..
    } = identity
    {
        if diskseq.is_none() {
            who.push_str(", no disk sequence number (kernel older than 5.15)");
        }
        if serial.is_none() {
            who.push_str(", no serial");
        }
    }
    format!(
        "{description}\nidentity: {who}\nwrite {writing} onto it? everything on it is lost. type yes: "
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_replaced_during_the_checks_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("disk.img");
        std::fs::write(&path, b"one").unwrap();
        let before = Identity::of_path(&path).unwrap();
        assert_eq!(still_the_same(&path, &before).unwrap(), before);
        // Swapped for another file with the same path during the checks.
        let other = d.path().join("other.img");
        std::fs::write(&other, b"two").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let err = still_the_same(&path, &before).unwrap_err();
        assert!(
            err.to_string().contains("changed while it was checked"),
            "{err}"
        );
    }

    #[test]
    fn the_prompt_shows_the_recorded_disk_sequence_and_serial() {
        let id = Identity::Block {
            rdev: libc::makedev(8, 16),
            diskseq: Some(42),
            size: 8 << 30,
            serial: Some("SN-1234".into()),
            model: Some("Stick".into()),
        };
        let text = prompt("/dev/sdb: USB stick, 8 GiB", &id, "tiny.img");
        assert!(text.contains("disk sequence 42"), "{text}");
        assert!(text.contains("serial SN-1234"), "{text}");
        assert!(text.ends_with("type yes: "), "{text}");
        let old = Identity::Block {
            rdev: libc::makedev(7, 0),
            diskseq: None,
            size: 1 << 20,
            serial: None,
            model: None,
        };
        let text = prompt("/dev/loop0", &old, "tiny.img");
        assert!(text.contains("no disk sequence number"), "{text}");
        assert!(text.contains("no serial"), "{text}");
    }
}
