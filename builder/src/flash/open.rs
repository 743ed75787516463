//! Opening the target once, for all of a flash: the descriptor is checked to be the confirmed
//! target before anything is written, and every later access goes through it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::identity::Identity;
use super::{io_at, FlashError};

/// Opens the target for writing: O_DIRECT (and O_EXCL, which a mounted block device refuses)
/// on block devices when the kernel allows it. The opened descriptor must be the `expected`
/// target (checked on the descriptor, before anything is written); a regular file is then made
/// the image's size.
pub(crate) fn open_target(
    target: &Path,
    image_size: u64,
    expected: &Identity,
) -> Result<(File, Direct), FlashError> {
    let (f, direct) = open_for_writing(target).map_err(io_at(target))?;
    let now = Identity::of_file(&f).map_err(io_at(target))?;
    if now != *expected {
        return Err(FlashError::TargetChanged {
            path: target.to_path_buf(),
            confirmed: Box::new(expected.clone()),
            now: Box::new(now),
        });
    }
    let meta = f.metadata().map_err(io_at(target))?;
    // A smaller file is made the image's size; a larger one (a disk image file) keeps its size.
    if meta.is_file() && meta.len() < image_size {
        f.set_len(image_size).map_err(io_at(target))?;
    }
    Ok((f, direct))
}

/// Whether the target's descriptor bypasses the page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direct {
    Yes,
    No,
}

fn open_for_writing(target: &Path) -> io::Result<(File, Direct)> {
    let block = fs::metadata(target).is_ok_and(|m| m.file_type().is_block_device());
    if block {
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_EXCL)
            .open(target);
        return match direct {
            Ok(f) => Ok((f, Direct::Yes)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok((
                OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_EXCL)
                    .open(target)?,
                Direct::No,
            )),
            Err(e) => Err(e),
        };
    }
    // Never created here: `refusals` stops a missing target, and the confirmed one must exist.
    let f = OpenOptions::new().write(true).open(target)?;
    Ok((f, Direct::No))
}

/// The path that opens the very file behind `f` again (`/proc/self/fd/N`: the same inode, not
/// whatever the target's path names by then), for the other ways of opening it.
pub(crate) fn same_file(f: &File) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()))
}
