//! Bounded reads for the diagnostics bundle: files under a root without following links
//! (where users could have put them), kernel files (`/proc`, `/sys`: no user makes links
//! there), the kernel log (non-blocking, the newest kept) and a command's output (a timeout).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::path::{Component, Path};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::firstboot::beneath::{Dir, Entry};

/// What was read, and whether it was cut at the bound.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Piece {
    pub bytes: Vec<u8>,
    pub truncated: bool,
}

/// Reads at most `cap` bytes of `r` (and one more, to tell whether there was more).
fn read_capped(r: impl Read, cap: usize) -> io::Result<Piece> {
    let mut bytes = Vec::new();
    r.take(cap as u64 + 1).read_to_end(&mut bytes)?;
    let truncated = bytes.len() > cap;
    bytes.truncate(cap);
    Ok(Piece { bytes, truncated })
}

/// The directory `rel` under `root` (`root` itself trusted; below it no component may be a
/// link).
pub fn dir_beneath(root: &Path, rel: &str) -> io::Result<Dir> {
    let mut dir = Dir::open(root)?;
    for part in Path::new(rel).components() {
        let Component::Normal(name) = part else {
            continue;
        };
        let name = name.to_string_lossy();
        dir = match dir.entry(&name)? {
            Entry::Dir(d) => d,
            Entry::Missing => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{name} does not exist"),
                ))
            }
            Entry::Symlink => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{name} is a symbolic link: not followed"),
                ))
            }
            Entry::Other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{name} is not a directory"),
                ))
            }
        };
    }
    Ok(dir)
}

/// The regular file `rel` under `root`, at most `cap` bytes, never through a link.
pub fn file_beneath(root: &Path, rel: &str, cap: usize) -> io::Result<Piece> {
    let rel = Path::new(rel.trim_start_matches('/'));
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let parent = rel
        .parent()
        .map_or(String::new(), |p| p.to_string_lossy().into_owned());
    let dir = dir_beneath(root, &parent)?;
    read_capped(dir.open_read(&name)?, cap)
}

/// A kernel file (`/proc`, `/sys`), at most `cap` bytes; opened non-blocking.
pub fn kernel_file(path: &Path, cap: usize) -> io::Result<Piece> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    read_capped(f, cap)
}

/// The kernel log from `/dev/kmsg` (records until there are no more: non-blocking), the
/// newest `cap` bytes of it; a record overwritten while reading is skipped.
pub fn kmsg(path: &Path, cap: usize, deadline: Instant) -> io::Result<Piece> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let mut lines: VecDeque<Vec<u8>> = VecDeque::new();
    let mut held = 0usize;
    let mut truncated = false;
    let mut buf = vec![0u8; 16 << 10];
    while Instant::now() < deadline {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // EPIPE: records were overwritten since the last read; the next read goes on.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // A read is one record from /dev/kmsg, any number of lines from a file.
        for line in buf[..n].split_inclusive(|b| *b == b'\n') {
            let mut record = line.to_vec();
            if record.last() != Some(&b'\n') {
                record.push(b'\n');
            }
            held += record.len();
            lines.push_back(record);
        }
        while held > cap {
            match lines.pop_front() {
                Some(old) => held -= old.len(),
                None => break,
            }
            truncated = true;
        }
    }
    // One record larger than the bound was dropped whole above: nothing of it is kept.
    let mut bytes = Vec::with_capacity(held);
    for l in lines {
        bytes.extend_from_slice(&l);
    }
    Ok(Piece { bytes, truncated })
}

/// How a command ended.
#[derive(Debug)]
pub enum Ran {
    Done(Piece),
    /// Killed at the timeout: what it printed until then.
    TimedOut(Piece),
}

/// Runs `program args` (no standard input, standard error dropped), its output bounded to
/// `cap` bytes, killed after `timeout`.
pub fn command(program: &Path, args: &[&str], cap: usize, timeout: Duration) -> io::Result<Ran> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env("SYSTEMD_PAGER", "")
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no standard output"))?;
    // The reader stops at the bound (and drops the pipe: a chatty command then gets SIGPIPE).
    // Its answer is awaited for a bounded time only: a grandchild holding the pipe open must
    // not hold the collection.
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(read_capped(stdout, cap));
    });
    let started = Instant::now();
    let timed_out = loop {
        if child.try_wait()?.is_some() {
            break false;
        }
        if started.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let piece = match receive.recv_timeout(Duration::from_secs(2)) {
        Ok(read) => read?,
        Err(_) => Piece {
            bytes: Vec::new(),
            truncated: true,
        },
    };
    Ok(if timed_out {
        Ran::TimedOut(piece)
    } else {
        Ran::Done(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_beneath_are_bounded_and_links_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("var/lib")).unwrap();
        std::fs::write(root.path().join("var/lib/a"), b"0123456789").unwrap();
        let p = file_beneath(root.path(), "/var/lib/a", 4).unwrap();
        assert_eq!(
            p,
            Piece {
                bytes: b"0123".to_vec(),
                truncated: true
            }
        );
        let p = file_beneath(root.path(), "var/lib/a", 10).unwrap();
        assert!(!p.truncated);
        std::os::unix::fs::symlink("a", root.path().join("var/lib/link")).unwrap();
        let e = file_beneath(root.path(), "var/lib/link", 10).unwrap_err();
        assert!(e.to_string().contains("not followed"), "{e}");
        std::os::unix::fs::symlink("lib", root.path().join("var/dirlink")).unwrap();
        let e = file_beneath(root.path(), "var/dirlink/a", 10).unwrap_err();
        assert!(e.to_string().contains("not followed"), "{e}");
        let e = file_beneath(root.path(), "var/lib", 10).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn kmsg_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsg");
        std::fs::write(&path, b"first line\nsecond line\n").unwrap();
        let far = Instant::now() + Duration::from_secs(10);
        let p = kmsg(&path, 1000, far).unwrap();
        assert_eq!(p.bytes, b"first line\nsecond line\n");
        assert!(!p.truncated);
        let p = kmsg(&path, 12, far).unwrap();
        assert_eq!(p.bytes, b"second line\n");
        assert!(p.truncated);
    }

    #[test]
    fn commands_are_bounded_in_output_and_time() {
        let sh = Path::new("/bin/sh");
        let Ran::Done(p) =
            command(sh, &["-c", "echo hello"], 100, Duration::from_secs(10)).unwrap()
        else {
            panic!("timed out")
        };
        assert_eq!(p.bytes, b"hello\n");
        let Ran::Done(p) = command(
            sh,
            &["-c", "yes | head -c 100000"],
            10,
            Duration::from_secs(10),
        )
        .unwrap() else {
            panic!("timed out")
        };
        assert_eq!((p.bytes.len(), p.truncated), (10, true));
        let started = Instant::now();
        let ran = command(
            sh,
            &["-c", "echo early; exec sleep 30"],
            100,
            Duration::from_millis(300),
        )
        .unwrap();
        assert!(
            matches!(ran, Ran::TimedOut(ref p) if p.bytes == b"early\n"),
            "{ran:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
