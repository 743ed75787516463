//! The initramfs: an uncompressed cpio (newc) archive whose `/init` is the P6OS agent.
//! Reproducible: sorted entries, inode numbers by position, owners root, times zero.

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::tree::{Entry, Kind, Tree};

/// Where the agent reads its module list (one path per line, dependencies first).
pub const MODULES_LOAD: &str = "etc/p6os/modules.load";

/// Where the kernel looks for firmware, in the initramfs as in the slot.
const FIRMWARE_DIRS: [&str; 2] = ["lib/firmware", "usr/lib/firmware"];

/// Firmware files for the initramfs' modules: initramfs path (always under `lib/firmware`, the
/// only place the kernel's loader looks there) -> the regular file's path in `root`; and per
/// module the number of files it may request that no layer provides.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Firmware {
    pub found: BTreeMap<String, String>,
    pub missing: BTreeMap<String, usize>,
}

/// Looks up each module's firmware files in `root` as the kernel would (`lib/firmware`, also
/// compressed `.xz`/`.zst`; usr-merged trees under `usr/lib/firmware`); symlinks are followed
/// within the tree, and a link that leads nowhere counts as missing.
pub fn firmware(root: &Tree, wanted: &BTreeMap<String, Vec<String>>) -> Firmware {
    let mut found = BTreeMap::new();
    let mut missing = BTreeMap::new();
    for (module, files) in wanted {
        for file in files {
            let hit = ["", ".xz", ".zst"].iter().find_map(|ext| {
                FIRMWARE_DIRS.iter().find_map(|dir| {
                    let path = format!("{dir}/{file}{ext}");
                    resolve_file(root, &path)
                        .map(|_| (format!("{}/{file}{ext}", FIRMWARE_DIRS[0]), path))
                })
            });
            match hit {
                Some((dest, source)) => {
                    found.insert(dest, source);
                }
                None => *missing.entry(module.clone()).or_insert(0) += 1,
            }
        }
    }
    Firmware { found, missing }
}

/// Builds the initramfs tree: agent, modules (paths kept), the load list, firmware files (from
/// `root`, symlinks resolved to their file) and the mount points.
pub fn tree(
    agent: &[u8],
    kernel_tree: &Tree,
    modules: &[String],
    root: &Tree,
    firmware: &BTreeMap<String, String>,
) -> Tree {
    let mut t = Tree::new();
    for d in ["dev", "proc", "sys", "run", "sysroot", "etc/p6os"] {
        t.insert(d, Entry::dir(0o755));
    }
    let mut console = Entry::dir(0o600);
    console.kind = Kind::Char { major: 5, minor: 1 };
    t.insert("dev/console", console.clone());
    // So a fatal error before devtmpfs is mounted still reaches the kernel log.
    console.kind = Kind::Char {
        major: 1,
        minor: 11,
    };
    console.mode = 0o644;
    t.insert("dev/kmsg", console);
    t.insert("init", Entry::file(agent.to_vec(), 0o755));
    let plain = |e: &Entry| Entry {
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
        ..e.clone()
    };
    let mut list = String::from("# kernel modules loaded by p6os-agent, dependencies first\n");
    for m in modules {
        if let Some(e) = kernel_tree.get(m) {
            t.insert(m, plain(e));
            list.push_str(m);
            list.push('\n');
        }
    }
    t.insert(MODULES_LOAD, Entry::file(list.into_bytes(), 0o644));
    for (dest, source) in firmware {
        if let Some(e) = resolve_file(root, source) {
            t.insert(dest, plain(e));
        }
    }
    t
}

/// The regular file at `path`, following symlinks inside the tree (at most 8).
fn resolve_file<'a>(root: &'a Tree, path: &str) -> Option<&'a Entry> {
    let mut path = path.to_string();
    for _ in 0..8 {
        let e = root.get(&path)?;
        match &e.kind {
            Kind::File(_) => return Some(e),
            Kind::Symlink(target) => {
                path = if let Some(absolute) = target.strip_prefix('/') {
                    absolute.to_string()
                } else {
                    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                    normalize(&format!("{dir}/{target}"))?
                };
            }
            _ => return None,
        }
    }
    None
}

/// `a/b/../c` -> `a/c`; `None` when `..` climbs above the root.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// Writes `tree` as a cpio newc archive.
pub fn write_cpio(tree: &Tree, out: &mut impl Write) -> io::Result<()> {
    let mut ino = 1u32;
    for (path, e) in tree.iter() {
        let (ftype, data, rdev): (u32, Vec<u8>, (u32, u32)) = match &e.kind {
            Kind::File(d) => (0o100000, d.to_vec(), (0, 0)),
            Kind::Dir => (0o040000, Vec::new(), (0, 0)),
            Kind::Symlink(t) => (0o120000, t.as_bytes().to_vec(), (0, 0)),
            Kind::Char { major, minor } => (0o020000, Vec::new(), (*major, *minor)),
            Kind::Block { major, minor } => (0o060000, Vec::new(), (*major, *minor)),
            Kind::Fifo => (0o010000, Vec::new(), (0, 0)),
            Kind::Hardlink(_) => continue,
        };
        let nlink = if matches!(e.kind, Kind::Dir) { 2 } else { 1 };
        write_entry(out, path, ino, ftype | e.mode, nlink, &data, rdev)?;
        ino += 1;
    }
    write_entry(out, "TRAILER!!!", 0, 0, 1, &[], (0, 0))
}

fn write_entry(
    out: &mut impl Write,
    name: &str,
    ino: u32,
    mode: u32,
    nlink: u32,
    data: &[u8],
    rdev: (u32, u32),
) -> io::Result<()> {
    let namesize = name.len() + 1;
    let header = format!(
        "070701{ino:08X}{mode:08X}{:08X}{:08X}{nlink:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{namesize:08X}{:08X}",
        0, 0, 0, data.len(), 0, 0, rdev.0, rdev.1, 0
    );
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    pad(out, 110 + namesize)?;
    out.write_all(data)?;
    pad(out, data.len())
}

fn pad(out: &mut impl Write, len: usize) -> io::Result<()> {
    let n = (4 - len % 4) % 4;
    out.write_all(&[0u8; 3][..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_lists_with_gnu_cpio() {
        let mut k = Tree::new();
        k.insert(
            "lib/modules/6.1/kernel/virtio.ko",
            Entry::file(b"ko".to_vec(), 0o600),
        );
        let t = tree(
            b"\x7fELF agent",
            &k,
            &["lib/modules/6.1/kernel/virtio.ko".to_string()],
            &Tree::new(),
            &BTreeMap::new(),
        );
        let mut buf = Vec::new();
        write_cpio(&t, &mut buf).unwrap();
        let mut again = Vec::new();
        write_cpio(&t, &mut again).unwrap();
        assert_eq!(buf, again);
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("cpio (package cpio) is needed");
        child.stdin.take().unwrap().write_all(&buf).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("-rwxr-xr-x") && text.contains(" init"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("crw-------") && l.ends_with("dev/console")),
            "{text}"
        );
        assert!(text.contains("etc/p6os/modules.load"));
        let modules_load = String::from_utf8_lossy(match &t.get(MODULES_LOAD).unwrap().kind {
            Kind::File(d) => d,
            _ => unreachable!(),
        })
        .into_owned();
        assert!(modules_load.ends_with("lib/modules/6.1/kernel/virtio.ko\n"));
    }

    #[test]
    fn firmware_is_found_through_symlinks_and_missing_files_are_counted() {
        let mut root = Tree::new();
        root.insert(
            "usr/lib/firmware/rtl_nic/rtl8168h-2.fw",
            Entry::file(b"fw".to_vec(), 0o600),
        );
        root.insert(
            "lib/firmware/rtl_nic/rtl8168g-2.fw",
            Entry::symlink("../../../usr/lib/firmware/rtl_nic/rtl8168h-2.fw"),
        );
        root.insert("lib/firmware/loop", Entry::symlink("loop"));
        root.insert(
            "lib/firmware/escape",
            Entry::symlink("../../../../etc/shadow"),
        );
        let wanted = BTreeMap::from([(
            "r8169".to_string(),
            [
                "rtl_nic/rtl8168g-2.fw",
                "rtl_nic/rtl8168h-2.fw",
                "rtl_nic/none.fw",
                "loop",
                "escape",
            ]
            .map(str::to_string)
            .to_vec(),
        )]);
        let fw = firmware(&root, &wanted);
        // Everything lands under lib/firmware, where the kernel looks in the initramfs.
        assert_eq!(
            fw.found,
            BTreeMap::from([
                (
                    "lib/firmware/rtl_nic/rtl8168g-2.fw".to_string(),
                    "lib/firmware/rtl_nic/rtl8168g-2.fw".to_string()
                ),
                (
                    "lib/firmware/rtl_nic/rtl8168h-2.fw".to_string(),
                    "usr/lib/firmware/rtl_nic/rtl8168h-2.fw".to_string()
                ),
            ])
        );
        // none.fw, the loop and the link out of the tree.
        assert_eq!(fw.missing, BTreeMap::from([("r8169".to_string(), 3)]));
        let t = tree(b"agent", &Tree::new(), &[], &root, &fw.found);
        // The symlink became its file.
        assert!(
            matches!(&t.get("lib/firmware/rtl_nic/rtl8168g-2.fw").unwrap().kind, Kind::File(d) if d.as_slice() == b"fw")
        );
        assert!(t.get("lib/firmware/rtl_nic/rtl8168h-2.fw").is_some());
        assert!(t.get("usr/lib/firmware/rtl_nic/rtl8168h-2.fw").is_none());
        assert!(t.get("lib/firmware/loop").is_none());
        assert!(t.get("lib/firmware/escape").is_none());
    }
}
