//! The note the initramfs leaves on the state partition when it cannot start a slot (its root
//! does not verify or mount, its init is missing), and its reading by the slot that runs next:
//! the fallback then records why ([`crate::slots::Record::with_boot_failure`]).
//!
//! The initramfs writes into the `/var` overlay's upper directory before any overlay is
//! mounted, so the note appears as [`PATH`] in the running system. The state partition is
//! writable by whoever holds the disk: no path component is followed through a symlink.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;

use rustix::fs::{Mode, OFlags};

use crate::slots::BootFailure;

/// Where the running system finds the note.
pub const PATH: &str = "/var/lib/p6os/boot-failure.json";
/// The same file below the state partition's mount point, seen from the initramfs.
const IN_STATE: [&str; 5] = ["overlay", "var", "upper", "lib", "p6os"];
const FILE: &str = "boot-failure.json";
/// Reasons are cut to this many bytes (a note is small and goes to the console).
const MAX_REASON: usize = 2000;

/// The note, if there is one that parses: a regular file (not a link, FIFO or device) of at
/// most 4 KiB, its reason cut to [`MAX_REASON`] bytes and stripped of control characters
/// (whoever holds the disk writes what it says).
pub fn read() -> Option<BootFailure> {
    use std::io::Read;
    let fd = rustix::fs::open(
        PATH,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    if !rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(&fd).ok()?.st_mode).is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    File::from(fd).take(4096).read_to_end(&mut bytes).ok()?;
    let mut failure: BootFailure = serde_json::from_slice(&bytes).ok()?;
    failure.reason = clean(&failure.reason);
    Some(failure)
}

/// At most [`MAX_REASON`] bytes, no control characters.
fn clean(reason: &str) -> String {
    let mut out = String::new();
    for c in reason.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_REASON {
            break;
        }
        out.push(c);
    }
    out
}

/// Removes the note (a new trial starts).
pub fn clear() -> std::io::Result<()> {
    match std::fs::remove_file(PATH) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes the note below `state` (the state partition's mount point): each directory made
/// or opened without following symlinks, the file under a temporary name, synced, renamed.
pub fn write_below(state: &str, failure: &BootFailure) -> io::Result<()> {
    let mut failure = failure.clone();
    failure.reason = clean(&failure.reason);
    let nofollow_dir = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir: OwnedFd = rustix::fs::open(state, nofollow_dir, Mode::empty())?;
    for name in IN_STATE {
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        dir = rustix::fs::openat(&dir, name, nofollow_dir, Mode::empty())?;
    }
    let temp = format!("{FILE}.new");
    let _ = rustix::fs::unlinkat(&dir, temp.as_str(), rustix::fs::AtFlags::empty());
    let fd = rustix::fs::openat(
        &dir,
        temp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )?;
    let mut file = File::from(fd);
    file.write_all(&serde_json::to_vec(&failure).expect("serializable"))?;
    file.sync_all()?;
    rustix::fs::renameat(&dir, temp.as_str(), &dir, FILE)?;
    rustix::fs::fsync(&dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use p6os_layout::Slot;

    fn failure(reason: &str) -> BootFailure {
        BootFailure {
            slot: Slot::B,
            version: "2.0.0".into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn the_note_lands_in_the_var_overlay_and_is_replaced() {
        let state = tempfile::tempdir().unwrap();
        let root = state.path().to_str().unwrap();
        write_below(root, &failure("first")).unwrap();
        write_below(root, &failure(&"é".repeat(1500))).unwrap();
        let path = state
            .path()
            .join("overlay/var/upper/lib/p6os/boot-failure.json");
        let read: BootFailure = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(read.slot, Slot::B);
        assert_eq!(read.reason.len(), MAX_REASON);
        assert!(read.reason.chars().all(|c| c == 'é'));
    }

    #[test]
    fn reasons_are_cut_and_lose_control_characters() {
        assert_eq!(clean("a\u{1b}[31mb\nc"), "a [31mb c");
        assert_eq!(clean(&"x".repeat(5000)).len(), MAX_REASON);
    }

    #[test]
    fn a_symlink_on_the_way_is_not_followed() {
        let state = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(state.path().join("overlay/var/upper")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), state.path().join("overlay/var/upper/lib"))
            .unwrap();
        assert!(write_below(state.path().to_str().unwrap(), &failure("x")).is_err());
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
        // The file itself as a symlink: replaced by the rename, its target untouched.
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join("overlay/var/upper/lib/p6os");
        std::fs::create_dir_all(&dir).unwrap();
        let target = elsewhere.path().join("target");
        std::fs::write(&target, "kept").unwrap();
        std::os::unix::fs::symlink(&target, dir.join("boot-failure.json.new")).unwrap();
        write_below(state.path().to_str().unwrap(), &failure("y")).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept");
    }
}
