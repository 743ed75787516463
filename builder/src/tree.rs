//! The merged root filesystem as a value: paths to entries with owners, modes, times and xattrs.
//!
//! Layers are read into trees and merged in order (later wins, a replaced directory loses its
//! subtree). The result is written as one sorted PAX tar stream, which the filesystem tools read
//! with owners, device nodes and xattrs intact: no staging directory, no root needed.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::Arc;

/// Regular file contents, shared between trees without copying.
pub type Blob = Arc<Vec<u8>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File(Blob),
    Dir,
    Symlink(String),
    /// Hard link to another path of the tree (relative, like all keys).
    Hardlink(String),
    Char {
        major: u32,
        minor: u32,
    },
    Block {
        major: u32,
        minor: u32,
    },
    Fifo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (no file type bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Entry {
    pub fn dir(mode: u32) -> Self {
        Entry {
            kind: Kind::Dir,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: BTreeMap::new(),
        }
    }
    pub fn file(data: Vec<u8>, mode: u32) -> Self {
        Entry {
            kind: Kind::File(Arc::new(data)),
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: BTreeMap::new(),
        }
    }
    pub fn symlink(target: &str) -> Self {
        Entry {
            kind: Kind::Symlink(target.into()),
            mode: 0o777,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: BTreeMap::new(),
        }
    }
}

/// A filesystem tree keyed by normalised relative path (`usr/bin/sh`; the root is implicit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

/// Normalises `./usr//bin/` or `/usr/bin` to `usr/bin`; `None` for the root or paths escaping it.
pub fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    }
}

impl Tree {
    pub fn new() -> Self {
        Tree::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(&normalize(path)?)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    /// Removes the entry at `path` (not what lies under a directory); returns it.
    pub fn remove(&mut self, path: &str) -> Option<Entry> {
        self.entries.remove(&normalize(path)?)
    }

    /// The contents of a regular file as text (lossy), following no links.
    pub fn file_text(&self, path: &str) -> Option<String> {
        match &self.get(path)?.kind {
            Kind::File(d) => Some(String::from_utf8_lossy(d).into_owned()),
            _ => None,
        }
    }

    /// Entries whose path starts with `prefix/`.
    pub fn under<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Entry)> + 'a {
        let p = format!("{prefix}/");
        self.entries
            .range(p.clone()..)
            .take_while(move |(k, _)| k.starts_with(&p))
    }

    /// Inserts `entry` at `path`, creating missing parent directories (0755 root) and following
    /// symlinked parents inside the tree (`lib -> usr/lib`), so usr-merged bases and packages
    /// that ship `/lib/...` agree. Replacing a directory by a non-directory drops its subtree;
    /// a directory over a directory keeps the children and takes the new metadata.
    pub fn insert(&mut self, path: &str, entry: Entry) {
        let Some(path) = normalize(path) else { return };
        let path = self.resolve_parents(&path);
        if matches!(entry.kind, Kind::Dir) && self.is_symlink_to_dir(&path) {
            // A package's `/lib` directory on a usr-merged base (`lib -> usr/lib`): the link
            // stays, what the package puts under it goes through it.
            return;
        }
        let mut parent = String::new();
        let comps: Vec<&str> = path.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(c);
            match self.entries.get(&parent) {
                Some(Entry {
                    kind: Kind::Dir, ..
                }) => {}
                _ => {
                    self.remove_subtree(&parent);
                    self.entries.insert(parent.clone(), Entry::dir(0o755));
                }
            }
        }
        if !matches!(entry.kind, Kind::Dir) {
            self.remove_subtree(&path);
        }
        self.entries.insert(path, entry);
    }

    /// Whether `path` is a symlink that resolves, inside the tree, to a directory.
    fn is_symlink_to_dir(&self, path: &str) -> bool {
        if !matches!(
            self.entries.get(path),
            Some(Entry {
                kind: Kind::Symlink(_),
                ..
            })
        ) {
            return false;
        }
        let through = self.resolve_parents(&format!("{path}/\0"));
        let target = through.strip_suffix("/\0").unwrap_or(&through);
        matches!(
            self.entries.get(target),
            Some(Entry {
                kind: Kind::Dir,
                ..
            })
        )
    }

    fn remove_subtree(&mut self, path: &str) {
        let children: Vec<String> = self.under(path).map(|(k, _)| k.clone()).collect();
        for c in children {
            self.entries.remove(&c);
        }
    }

    /// Rewrites a path whose parent components are symlinks inside the tree, resolving `..`
    /// lexically with chroot rules (never above the root) and following chains (at most 40 hops,
    /// like the kernel).
    fn resolve_parents(&self, path: &str) -> String {
        let mut comps: Vec<String> = path.split('/').map(String::from).collect();
        let mut hops = 0;
        let mut i = 0;
        while i + 1 < comps.len() {
            let prefix = comps[..=i].join("/");
            if let Some(Entry {
                kind: Kind::Symlink(target),
                ..
            }) = self.entries.get(&prefix)
            {
                hops += 1;
                if hops > 40 {
                    break;
                }
                let mut resolved: Vec<String> = if target.starts_with('/') {
                    Vec::new()
                } else {
                    comps[..i].to_vec()
                };
                for c in target.split('/') {
                    match c {
                        "" | "." => {}
                        ".." => {
                            resolved.pop();
                        }
                        c => resolved.push(c.to_string()),
                    }
                }
                resolved.extend(comps.drain(i + 1..));
                comps = resolved;
                i = 0;
                continue;
            }
            i += 1;
        }
        comps.join("/")
    }

    /// Applies `other` on top of `self`.
    pub fn merge(&mut self, other: &Tree) {
        for (path, entry) in &other.entries {
            self.insert(path, entry.clone());
        }
    }

    /// Reads a tar stream into a tree (owners, modes, times, xattrs and device nodes kept).
    pub fn from_tar(reader: impl Read) -> io::Result<Tree> {
        let mut tree = Tree::new();
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let header = entry.header().clone();
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            if path.split('/').any(|c| c == "..") {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("entry `{path}` escapes the root with `..`"),
                ));
            }
            let mut xattrs = BTreeMap::new();
            if let Some(exts) = entry.pax_extensions()? {
                for ext in exts {
                    let ext = ext?;
                    if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr."))
                    {
                        xattrs.insert(name.to_string(), ext.value_bytes().to_vec());
                    }
                }
            }
            let link = || -> io::Result<String> { Ok(entry_link(&header)?.unwrap_or_default()) };
            use tar::EntryType as T;
            let kind = match header.entry_type() {
                T::Regular | T::Continuous | T::GNUSparse => {
                    // The header's size is untrusted: never pre-allocate more than a little.
                    let mut data = Vec::with_capacity((header.size()? as usize).min(1 << 20));
                    entry.read_to_end(&mut data)?;
                    Kind::File(Arc::new(data))
                }
                T::Directory => Kind::Dir,
                T::Symlink => Kind::Symlink(link()?),
                T::Link => match normalize(&link()?) {
                    Some(target) => Kind::Hardlink(target),
                    None => continue,
                },
                T::Char => Kind::Char {
                    major: header.device_major()?.unwrap_or(0),
                    minor: header.device_minor()?.unwrap_or(0),
                },
                T::Block => Kind::Block {
                    major: header.device_major()?.unwrap_or(0),
                    minor: header.device_minor()?.unwrap_or(0),
                },
                T::Fifo => Kind::Fifo,
                _ => continue,
            };
            let e = Entry {
                kind,
                mode: header.mode()? & 0o7777,
                uid: header.uid()? as u32,
                gid: header.gid()? as u32,
                mtime: header.mtime()?,
                xattrs,
            };
            tree.insert(&path, e);
        }
        Ok(tree)
    }

    /// Writes the tree as a PAX tar stream in sorted order (hard links last, so their targets
    /// come first). Same tree, same bytes.
    pub fn write_tar(&self, out: impl Write) -> io::Result<()> {
        let mut builder = tar::Builder::new(out);
        let mut links = Vec::new();
        for (path, e) in &self.entries {
            if let Kind::Hardlink(target) = &e.kind {
                if self.entries.contains_key(target) {
                    links.push((path, e, target));
                }
                continue;
            }
            append(&mut builder, path, e)?;
        }
        for (path, e, target) in links {
            let mut h = header_for(e, tar::EntryType::Link, 0);
            if !e.xattrs.is_empty() {
                write_xattrs(&mut builder, e)?;
            }
            builder.append_link(&mut h, path, target)?;
        }
        builder.into_inner()?.flush()
    }

    /// Sum of file sizes, for estimates.
    pub fn content_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match &e.kind {
                Kind::File(b) => b.len() as u64,
                _ => 0,
            })
            .sum()
    }
}

fn entry_link(header: &tar::Header) -> io::Result<Option<String>> {
    Ok(header
        .link_name_bytes()
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}

fn header_for(e: &Entry, t: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(t);
    h.set_mode(e.mode);
    h.set_uid(e.uid as u64);
    h.set_gid(e.gid as u64);
    h.set_mtime(e.mtime);
    h.set_size(size);
    h
}

fn write_xattrs<W: Write>(builder: &mut tar::Builder<W>, e: &Entry) -> io::Result<()> {
    let exts: Vec<(String, &[u8])> = e
        .xattrs
        .iter()
        .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
        .collect();
    builder.append_pax_extensions(exts.iter().map(|(k, v)| (k.as_str(), *v)))
}

fn append<W: Write>(builder: &mut tar::Builder<W>, path: &str, e: &Entry) -> io::Result<()> {
    if !e.xattrs.is_empty() {
        write_xattrs(builder, e)?;
    }
    use tar::EntryType as T;
    match &e.kind {
        Kind::File(data) => {
            let mut h = header_for(e, T::Regular, data.len() as u64);
            builder.append_data(&mut h, path, data.as_slice())
        }
        Kind::Dir => {
            let mut h = header_for(e, T::Directory, 0);
            builder.append_data(&mut h, format!("{path}/"), io::empty())
        }
        Kind::Symlink(target) => {
            let mut h = header_for(e, T::Symlink, 0);
            builder.append_link(&mut h, path, target)
        }
        Kind::Char { major, minor } | Kind::Block { major, minor } => {
            let t = if matches!(e.kind, Kind::Char { .. }) {
                T::Char
            } else {
                T::Block
            };
            let mut h = header_for(e, t, 0);
            h.set_device_major(*major)?;
            h.set_device_minor(*minor)?;
            builder.append_data(&mut h, path, io::empty())
        }
        Kind::Fifo => {
            let mut h = header_for(e, T::Fifo, 0);
            builder.append_data(&mut h, path, io::empty())
        }
        Kind::Hardlink(_) => unreachable!("hard links are written after everything else"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tree {
        let mut t = Tree::new();
        t.insert("/usr/bin/busybox", Entry::file(b"bb".to_vec(), 0o755));
        t.insert("/bin/sh", Entry::symlink("/usr/bin/busybox"));
        let mut dev = Entry::file(Vec::new(), 0o600);
        dev.kind = Kind::Char { major: 5, minor: 1 };
        t.insert("dev/console", dev);
        let mut cap = Entry::file(b"ping".to_vec(), 0o4755);
        cap.uid = 0;
        cap.gid = 33;
        cap.mtime = 1_700_000_000;
        cap.xattrs
            .insert("security.capability".into(), vec![1, 0, 0, 2, 0, 32, 0, 0]);
        t.insert("usr/bin/ping", cap);
        let mut hl = Entry::file(Vec::new(), 0o755);
        hl.kind = Kind::Hardlink("usr/bin/busybox".into());
        t.insert("usr/bin/ash", hl);
        t
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize("./usr//bin/"), Some("usr/bin".into()));
        assert_eq!(normalize("/"), None);
        assert_eq!(normalize("a/../../etc"), None);
    }

    #[test]
    fn creates_parents_and_replaces_subtrees() {
        let mut t = Tree::new();
        t.insert("etc/ssh/sshd_config", Entry::file(b"x".to_vec(), 0o644));
        assert!(matches!(t.get("etc").unwrap().kind, Kind::Dir));
        assert!(matches!(t.get("etc/ssh").unwrap().kind, Kind::Dir));
        t.insert("etc/ssh", Entry::symlink("/run/ssh"));
        assert!(t.get("etc/ssh/sshd_config").is_none());
        t.insert("etc", Entry::dir(0o700));
        assert_eq!(t.get("etc").unwrap().mode, 0o700);
        assert!(
            t.get("etc/ssh").is_some(),
            "a directory over a directory keeps children"
        );
    }

    #[test]
    fn a_directory_entry_keeps_a_usr_merge_link() {
        let mut t = Tree::new();
        t.insert(
            "usr/lib/systemd/systemd",
            Entry::file(b"elf".to_vec(), 0o755),
        );
        t.insert("lib", Entry::symlink("usr/lib"));
        // A kernel package unpacked later ships `./lib/` and `./lib/modules/...`.
        t.insert("lib", Entry::dir(0o755));
        t.insert("lib/modules/6.1/x.ko", Entry::file(b"ko".to_vec(), 0o644));
        assert!(matches!(t.get("lib").unwrap().kind, Kind::Symlink(_)));
        assert!(t.get("usr/lib/systemd/systemd").is_some());
        assert!(t.get("usr/lib/modules/6.1/x.ko").is_some());
        // A dangling link is still replaced by the directory.
        t.insert("opt", Entry::symlink("nowhere"));
        t.insert("opt", Entry::dir(0o755));
        assert!(matches!(t.get("opt").unwrap().kind, Kind::Dir));
    }

    #[test]
    fn follows_symlinked_parents() {
        let mut t = Tree::new();
        t.insert("lib", Entry::symlink("usr/lib"));
        t.insert(
            "lib/modules/6.1/kernel/a.ko",
            Entry::file(b"ko".to_vec(), 0o644),
        );
        assert!(t.get("usr/lib/modules/6.1/kernel/a.ko").is_some());
        assert!(matches!(t.get("lib").unwrap().kind, Kind::Symlink(_)));
    }

    #[test]
    fn resolves_dotdot_chains_and_root_links() {
        let mut t = Tree::new();
        t.insert("usr/share/doc", Entry::dir(0o755));
        t.insert("doc", Entry::symlink("usr/share/../share/doc"));
        t.insert("a", Entry::symlink("b"));
        t.insert("b", Entry::symlink("/doc"));
        t.insert("a/readme", Entry::file(b"r".to_vec(), 0o644));
        assert!(t.get("usr/share/doc/readme").is_some());
        assert!(
            matches!(t.get("a").unwrap().kind, Kind::Symlink(_)),
            "the link itself stays"
        );
        t.insert("up", Entry::symlink("../../.."));
        t.insert("up/etc/x", Entry::file(b"x".to_vec(), 0o644));
        assert!(t.get("etc/x").is_some(), "`..` stops at the root");
        t.insert("loop1", Entry::symlink("loop2"));
        t.insert("loop2", Entry::symlink("loop1"));
        t.insert("loop1/f", Entry::file(Vec::new(), 0o644)); // terminates
    }

    #[test]
    fn tar_round_trip_keeps_everything() {
        let t = sample();
        let mut buf = Vec::new();
        t.write_tar(&mut buf).unwrap();
        let back = Tree::from_tar(buf.as_slice()).unwrap();
        assert_eq!(back, t);
        let mut again = Vec::new();
        back.write_tar(&mut again).unwrap();
        assert_eq!(buf, again, "writing is deterministic");
    }

    #[test]
    fn later_layers_win() {
        let mut base = sample();
        let mut top = Tree::new();
        top.insert("usr/bin/busybox", Entry::file(b"new".to_vec(), 0o755));
        base.merge(&top);
        assert_eq!(
            base.get("usr/bin/busybox").unwrap().kind,
            Kind::File(Arc::new(b"new".to_vec()))
        );
    }
}
