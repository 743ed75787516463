//! The read-only slot filesystem, made from a tree by the standard tools reading one tar stream
//! on stdin: owners, modes, device nodes and xattrs come from the tree, not from a staging
//! directory, so no root is needed and the output is byte-reproducible.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::recipe::RootFsFormat;
use crate::tree::Tree;

#[derive(Debug, thiserror::Error)]
pub enum RootFsError {
    #[error("cannot run {tool}: {source} (install package {package})")]
    Spawn {
        tool: &'static str,
        package: &'static str,
        source: std::io::Error,
    },
    #[error("{tool} failed: {detail}")]
    Failed { tool: &'static str, detail: String },
    #[error(
        "erofs root filesystems need mkfs.erofs with --tar (erofs-utils >= 1.7); this host's mkfs.erofs has none\n  hint: use `rootfs: squashfs`, or install a newer erofs-utils"
    )]
    ErofsTooOld,
}

/// Writes the filesystem image for `tree` to `out`.
pub fn build(tree: &Tree, format: RootFsFormat, out: &Path) -> Result<(), RootFsError> {
    let (tool, package, mut cmd) = match format {
        RootFsFormat::Squashfs => {
            // bookworm's `mksquashfs -tar` ignores -root-uid/-root-gid: the root directory gets
            // the caller's ids. An ordinary user runs it as root of a user namespace instead.
            let mut c = if running_as_root() {
                Command::new("mksquashfs")
            } else {
                let mut u = Command::new("unshare");
                u.args(["--user", "--map-root-user", "mksquashfs"]);
                u
            };
            c.arg("-")
                .arg(out)
                .args(["-tar", "-noappend", "-quiet", "-no-progress"]);
            c.args(["-comp", "zstd", "-Xcompression-level", "6", "-b", "256K"]);
            c.args(["-root-mode", "0755", "-root-uid", "0", "-root-gid", "0"]);
            // bookworm's mksquashfs ignores -root-time in -tar mode (the root got the wall clock);
            // SOURCE_DATE_EPOCH is honoured but sets every timestamp: use the newest input's.
            c.env("SOURCE_DATE_EPOCH", newest_mtime(tree).to_string());
            ("mksquashfs", "squashfs-tools", c)
        }
        RootFsFormat::Erofs => {
            if !erofs_has_tar() {
                return Err(RootFsError::ErofsTooOld);
            }
            let mut c = Command::new("mkfs.erofs");
            c.env_remove("SOURCE_DATE_EPOCH");
            c.args(["--tar=f", "-zlz4hc", "-T0", "--quiet"]).arg(out);
            ("mkfs.erofs", "erofs-utils", c)
        }
    };
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| RootFsError::Spawn {
        tool,
        package,
        source,
    })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // Feed the tar stream from a thread while this one drains stdout/stderr: a tool that writes
    // a lot of warnings must not block on a full pipe while we block on its stdin.
    let (written, output) = std::thread::scope(|s| {
        let writer = s.spawn(move || {
            let r = tree.write_tar(&mut stdin);
            drop(stdin);
            r
        });
        let output = child.wait_with_output();
        (writer.join().expect("tar writer thread"), output)
    });
    let output = output.map_err(|source| RootFsError::Spawn {
        tool,
        package,
        source,
    })?;
    if !output.status.success() || written.is_err() {
        let mut detail = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if let Err(e) = written {
            detail.push_str(&format!(" (writing the tar stream: {e})"));
        }
        if !running_as_root() && detail.contains("unshare") {
            detail.push_str(
                "\n  hint: as an ordinary user, mksquashfs runs in a user namespace; enable unprivileged user namespaces or build as root",
            );
        }
        return Err(RootFsError::Failed { tool, detail });
    }
    Ok(())
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The newest modification time in the tree: the image's timestamps (reproducible, and more
/// telling than 1970).
fn newest_mtime(tree: &Tree) -> u64 {
    tree.iter().map(|(_, e)| e.mtime).max().unwrap_or(0)
}

fn erofs_has_tar() -> bool {
    Command::new("mkfs.erofs")
        .arg("--help")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).contains("--tar")
                || String::from_utf8_lossy(&o.stderr).contains("--tar")
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Entry, Kind};

    #[test]
    fn squashfs_keeps_owners_devices_and_xattrs_and_is_reproducible() {
        let mut t = Tree::new();
        let mut f = Entry::file(b"ping".to_vec(), 0o4755);
        f.gid = 33;
        f.xattrs.insert("user.p6os".into(), b"yes".to_vec());
        t.insert("usr/bin/ping", f);
        let mut dev = Entry::dir(0o600);
        dev.kind = Kind::Char { major: 5, minor: 1 };
        t.insert("dev/console", dev);
        t.insert("bin/sh", Entry::symlink("busybox"));
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a.sqfs"), d.path().join("b.sqfs"));
        build(&t, RootFsFormat::Squashfs, &a).unwrap();
        build(&t, RootFsFormat::Squashfs, &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let list = Command::new("unsquashfs")
            .arg("-lln")
            .arg(&a)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&list.stdout);
        assert!(text.contains("-rwsr-xr-x 0/33"), "{text}");
        assert!(
            text.contains("crw------- 0/0") && text.contains("dev/console"),
            "{text}"
        );
        assert!(text.contains("bin/sh -> busybox"), "{text}");
        // bookworm's unsquashfs cannot list xattrs: look for the stored name in the image.
        let raw = std::fs::read(&a).unwrap();
        assert!(raw.windows(4).any(|w| w == b"p6os"), "xattr name stored");
    }
}
