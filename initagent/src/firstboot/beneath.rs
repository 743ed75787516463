//! Directories opened one component at a time, never through a symbolic link: the transaction
//! writes as root into the overlays' upper directories, where users own their homes and can put
//! links. Every operation is relative to an opened directory (`openat`, `mkdirat`, `renameat`,
//! `unlinkat`, `fchown`, `fchmod` on the directory's own descriptor), so a link swapped in
//! anywhere along the way is refused, never followed.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

/// How many `.<name>.p6os-displaced-<n>` names [`Dir::displace`] tries.
const DISPLACED_TRIES: u32 = 1000;

/// An opened directory.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

/// What a name in a directory is (the name itself, a link not followed).
#[derive(Debug)]
pub enum Entry {
    Missing,
    Dir(Dir),
    Symlink,
    /// A file, a socket, anything else that is not a directory.
    Other,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Dir {
    /// Opens `path` as given (links in it followed: the caller's own, trusted starting point).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir { fd })
    }

    /// What `name` is in this directory; a directory comes opened.
    pub fn entry(&self, name: &str) -> io::Result<Entry> {
        check_name(name)?;
        let stat = match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            Err(Errno::NOENT) => return Ok(Entry::Missing),
            Err(e) => return Err(e.into()),
        };
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {}
            FileType::Symlink => return Ok(Entry::Symlink),
            _ => return Ok(Entry::Other),
        }
        match rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Entry::Dir(Dir { fd })),
            // Replaced by a link (or something else) since the stat.
            Err(Errno::LOOP) => Ok(Entry::Symlink),
            Err(Errno::NOTDIR) => Ok(Entry::Other),
            Err(Errno::NOENT) => Ok(Entry::Missing),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the directory `name` with `mode` (umask applies; see [`Dir::set_owner_mode`]).
    pub fn mkdir(&self, name: &str, mode: u32) -> io::Result<()> {
        check_name(name)?;
        rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode))?;
        Ok(())
    }

    /// Owner and mode of this directory itself, through its descriptor.
    pub fn set_owner_mode(&self, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
        let (uid, gid) = ids(uid, gid)?;
        rustix::fs::fchown(&self.fd, Some(uid), Some(gid))?;
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode))?;
        Ok(())
    }

    /// Renames `from` in `dir` to `to` in this directory (a link at `to` is replaced, not
    /// followed).
    pub fn rename_into(&self, dir: &Dir, from: &str, to: &str) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        rustix::fs::renameat(&dir.fd, from, &self.fd, to)?;
        Ok(())
    }

    /// Renames `name` to `.<name>.p6os-displaced-<n>` in this directory, the first `n` free
    /// (never replacing anything, a link moved as the link); returns the new name.
    pub fn displace(&self, name: &str) -> io::Result<String> {
        check_name(name)?;
        for n in 0..DISPLACED_TRIES {
            let aside = format!(".{name}.p6os-displaced-{n}");
            match rustix::fs::renameat_with(
                &self.fd,
                name,
                &self.fd,
                aside.as_str(),
                RenameFlags::NOREPLACE,
            ) {
                Ok(()) => return Ok(aside),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                ".{name}.p6os-displaced-0 to -{} all exist",
                DISPLACED_TRIES - 1
            ),
        ))
    }

    /// Removes the file (or link) `name`.
    pub fn unlink(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?;
        Ok(())
    }

    /// Creates the new file `name` (0600, never through a link) for writing.
    pub fn create_file(&self, name: &str) -> io::Result<File> {
        check_name(name)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o600))?;
        Ok(File::from(fd))
    }

    /// Creates the link `name` -> `to` owned by `uid:gid`.
    pub fn symlink(&self, to: &str, name: &str, uid: u32, gid: u32) -> io::Result<()> {
        check_name(name)?;
        rustix::fs::symlinkat(to, &self.fd, name)?;
        let (uid, gid) = ids(uid, gid)?;
        rustix::fs::chownat(
            &self.fd,
            name,
            Some(uid),
            Some(gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    /// Opens the regular file `name` for reading; a link (not followed), a FIFO, a device or a
    /// directory is refused (diagnostics read as root where users may have put things).
    pub fn open_read(&self, name: &str) -> io::Result<File> {
        check_name(name)?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{name} is a symbolic link: not followed"),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        let stat = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name} is not a regular file"),
            ));
        }
        Ok(File::from(fd))
    }

    /// The names in this directory (not `.` and `..`), sorted.
    pub fn names(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd)?;
        Ok(())
    }
}

/// Owner ids for the kernel; -1 ("leave as it is") is not an id.
fn ids(uid: u32, gid: u32) -> io::Result<(rustix::fs::Uid, rustix::fs::Gid)> {
    if uid == u32::MAX || gid == u32::MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{uid}:{gid} is not an owner"),
        ));
    }
    Ok((
        rustix::fs::Uid::from_raw(uid),
        rustix::fs::Gid::from_raw(gid),
    ))
}

/// One plain name: not empty, no `/`, not `.` or `..`.
fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(())
}
