//! Applying rendered files as one transaction on the state partition, before the /etc and
//! /var overlays are mounted (so the targets are plain files in the overlays' upper
//! directories, on the same ext4 as the staging area and every rename is atomic).
//!
//! 1. stage every file (content, owner, mode, fsync) in `p6os/config-txn.new/`, with a
//!    journal listing what goes where and what goes away;
//! 2. commit: rename `config-txn.new` to `config-txn` (fsync'd): from here the change is
//!    decided;
//! 3. rename each staged file over its target, remove stale ones, fsync the directories;
//! 4. delete `config-txn`.
//!
//! A power cut before 2 leaves the old files (the half-staged directory is discarded at the
//! next boot); after 2, the next boot finishes the renames (`recover`). `applied.json` is the
//! journal's last entry, so it names exactly what is on disk.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::render::{Content, Target};

pub const TXN_NEW: &str = "p6os/config-txn.new";
pub const TXN: &str = "p6os/config-txn";
const JOURNAL: &str = "journal.json";

/// One step after the commit point; replaying a finished step is harmless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Rename `staged` (a name inside the transaction directory) over `target`.
    Place { staged: String, target: String },
    /// Remove `target` (a file this document no longer renders).
    Remove { target: String },
}

#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{0} is not under /etc or /var")]
    NotOverlaid(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TxnError + 'a {
    move |source| TxnError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// The layout the transaction works in: the state partition's mount point and the slot root
/// (for the modes of parent directories that the slot already has).
pub struct Layout<'a> {
    pub state: &'a Path,
    pub slot: &'a Path,
}

impl Layout<'_> {
    /// `/etc/x` -> `<state>/overlay/etc/upper/x`; likewise for /var.
    pub fn upper(&self, path: &str) -> Result<std::path::PathBuf, TxnError> {
        for top in ["/etc", "/var"] {
            if let Some(rest) = path.strip_prefix(top) {
                if rest.starts_with('/') && rest.len() > 1 {
                    return Ok(self
                        .state
                        .join(format!("overlay{top}/upper"))
                        .join(&rest[1..]));
                }
            }
        }
        Err(TxnError::NotOverlaid(path.to_string()))
    }
}

/// The steps of a change: `targets` placed, `stale` (managed before, not now) removed.
pub fn plan(targets: &[Target], stale: &[String]) -> Vec<Op> {
    let mut ops: Vec<Op> = targets
        .iter()
        .filter(|t| t.content != Content::Dir)
        .enumerate()
        .map(|(i, t)| Op::Place {
            staged: format!("f{i:05}"),
            target: t.path.clone(),
        })
        .collect();
    ops.extend(stale.iter().map(|p| Op::Remove { target: p.clone() }));
    ops
}

/// Runs a whole transaction: directories, staging, commit, renames.
pub fn apply(layout: &Layout, targets: &[Target], stale: &[String]) -> Result<(), TxnError> {
    let new_dir = layout.state.join(TXN_NEW);
    if new_dir.exists() {
        fs::remove_dir_all(&new_dir).map_err(io_err("remove", &new_dir))?;
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&new_dir)
        .map_err(io_err("create", &new_dir))?;
    // Directories first (homes, .ssh): creating an empty directory changes nothing visible.
    for t in targets {
        let upper = layout.upper(&t.path)?;
        make_parents(layout, &t.path)?;
        if t.content == Content::Dir {
            make_dir(&upper, t)?;
        }
    }
    let ops = plan(targets, stale);
    let files = targets.iter().filter(|t| t.content != Content::Dir);
    for (op, t) in ops.iter().zip(files) {
        if let Op::Place { staged, .. } = op {
            stage(&new_dir.join(staged), t)?;
        }
    }
    let journal = new_dir.join(JOURNAL);
    let text = serde_json::to_vec_pretty(&ops).unwrap_or_default();
    write_synced(&journal, &text, 0o600)?;
    sync_dir(&new_dir)?;
    let committed = layout.state.join(TXN);
    if committed.exists() {
        // Left by a replay that could not finish; ours supersedes it.
        fs::remove_dir_all(&committed).map_err(io_err("remove", &committed))?;
    }
    fs::rename(&new_dir, &committed).map_err(io_err("commit", &committed))?;
    sync_dir(committed.parent().unwrap_or(layout.state))?;
    finish(layout, &committed, &ops)
}

/// At boot, before anything else: finish a committed transaction, drop an uncommitted one.
/// Returns whether a committed one was finished.
pub fn recover(layout: &Layout) -> Result<bool, TxnError> {
    let new_dir = layout.state.join(TXN_NEW);
    if new_dir.exists() {
        fs::remove_dir_all(&new_dir).map_err(io_err("remove", &new_dir))?;
    }
    let committed = layout.state.join(TXN);
    if !committed.exists() {
        return Ok(false);
    }
    let journal = committed.join(JOURNAL);
    let text = fs::read(&journal).map_err(io_err("read", &journal))?;
    let ops: Vec<Op> = serde_json::from_slice(&text).map_err(|e| TxnError::Io {
        what: "parse",
        path: journal.display().to_string(),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    finish(layout, &committed, &ops)?;
    Ok(true)
}

fn finish(layout: &Layout, committed: &Path, ops: &[Op]) -> Result<(), TxnError> {
    let mut dirs = BTreeSet::new();
    for op in ops {
        match op {
            Op::Place { staged, target } => {
                let from = committed.join(staged);
                let to = layout.upper(target)?;
                match fs::symlink_metadata(&from) {
                    Ok(_) => {
                        if to.is_dir() && !to.is_symlink() {
                            // A directory where a file goes: only an empty one is replaced.
                            fs::remove_dir(&to).map_err(io_err("replace directory", &to))?;
                        }
                        fs::rename(&from, &to).map_err(io_err("rename into", &to))?;
                    }
                    // Placed before a power cut.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("stat", &from)(e)),
                }
                if let Some(parent) = to.parent() {
                    dirs.insert(parent.to_path_buf());
                }
            }
            Op::Remove { target } => {
                let path = layout.upper(target)?;
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("remove", &path)(e)),
                }
                if let Some(parent) = path.parent() {
                    dirs.insert(parent.to_path_buf());
                }
            }
        }
    }
    for dir in &dirs {
        if dir.exists() {
            sync_dir(dir)?;
        }
    }
    fs::remove_dir_all(committed).map_err(io_err("remove", committed))?;
    sync_dir(committed.parent().unwrap_or(layout.state))
}

/// Creates the upper directories leading to `path`, with the slot's mode and owner where the
/// slot has that directory, else 0755 root.
fn make_parents(layout: &Layout, path: &str) -> Result<(), TxnError> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for n in 2..comps.len() {
        let dir = format!("/{}", comps[..n].join("/"));
        let upper = layout.upper(&dir)?;
        if upper.is_dir() {
            continue;
        }
        let lower = layout.slot.join(&dir[1..]);
        let (mode, uid, gid) = match fs::metadata(&lower) {
            Ok(m) if m.is_dir() => {
                use std::os::unix::fs::MetadataExt;
                (m.mode() & 0o7777, m.uid(), m.gid())
            }
            _ => (0o755, 0, 0),
        };
        fs::DirBuilder::new()
            .mode(mode)
            .create(&upper)
            .map_err(io_err("create", &upper))?;
        set_owner_mode(&upper, uid, gid, mode)?;
    }
    Ok(())
}

fn make_dir(upper: &Path, t: &Target) -> Result<(), TxnError> {
    if !upper.is_dir() {
        fs::DirBuilder::new()
            .mode(t.mode)
            .create(upper)
            .map_err(io_err("create", upper))?;
    }
    set_owner_mode(upper, t.uid, t.gid, t.mode)
}

fn set_owner_mode(path: &Path, uid: u32, gid: u32, mode: u32) -> Result<(), TxnError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io_err("chown", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))
}

fn stage(path: &Path, t: &Target) -> Result<(), TxnError> {
    match &t.content {
        Content::File(bytes) => {
            write_synced(path, bytes, t.mode)?;
            set_owner_mode(path, t.uid, t.gid, t.mode)
        }
        Content::Symlink(to) => {
            symlink(to, path).map_err(io_err("create symlink", path))?;
            std::os::unix::fs::lchown(path, Some(t.uid), Some(t.gid)).map_err(io_err("chown", path))
        }
        Content::Dir => Ok(()),
    }
}

/// Creates `path` with `mode` (0600 first for secrets: never readable by others, even
/// briefly), writes and fsyncs it.
pub fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TxnError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("create", path))?;
    file.write_all(bytes).map_err(io_err("write", path))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod", path))?;
    file.sync_all().map_err(io_err("fsync", path))
}

fn sync_dir(dir: &Path) -> Result<(), TxnError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            for d in [
                "state/overlay/etc/upper",
                "state/overlay/var/upper",
                "slot/etc/ssh",
            ] {
                fs::create_dir_all(dir.path().join(d)).unwrap();
            }
            fs::set_permissions(
                dir.path().join("slot/etc/ssh"),
                fs::Permissions::from_mode(0o751),
            )
            .unwrap();
            Fixture { dir }
        }
        fn state(&self) -> std::path::PathBuf {
            self.dir.path().join("state")
        }
        fn slot(&self) -> std::path::PathBuf {
            self.dir.path().join("slot")
        }
        fn upper(&self, path: &str) -> std::path::PathBuf {
            let (state, slot) = (self.state(), self.slot());
            Layout {
                state: &state,
                slot: &slot,
            }
            .upper(path)
            .unwrap()
        }
        fn apply(&self, targets: &[Target], stale: &[String]) -> Result<(), TxnError> {
            let (state, slot) = (self.state(), self.slot());
            apply(
                &Layout {
                    state: &state,
                    slot: &slot,
                },
                targets,
                stale,
            )
        }
        fn recover(&self) -> bool {
            let (state, slot) = (self.state(), self.slot());
            recover(&Layout {
                state: &state,
                slot: &slot,
            })
            .unwrap()
        }
    }

    fn file(path: &str, content: &str, mode: u32) -> Target {
        Target {
            path: path.into(),
            content: Content::File(content.as_bytes().to_vec()),
            mode,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn upper_maps_only_etc_and_var() {
        let f = Fixture::new();
        assert!(f.upper("/etc/x").ends_with("state/overlay/etc/upper/x"));
        assert!(f
            .upper("/var/lib/p6os/a")
            .ends_with("state/overlay/var/upper/lib/p6os/a"));
        let (state, slot) = (f.state(), f.slot());
        let layout = Layout {
            state: &state,
            slot: &slot,
        };
        for bad in ["/usr/x", "/etc", "/etc/", "/etcx/y", "/varx"] {
            assert!(layout.upper(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn applies_files_symlinks_dirs_with_modes_and_slot_parent_modes() {
        let f = Fixture::new();
        let targets = vec![
            file("/etc/hostname", "h\n", 0o644),
            file("/etc/ssh/sshd_config.d/p6os.conf", "Port 22\n", 0o644),
            file("/etc/shadow", "root:*:::::::\n", 0o600),
            Target {
                path: "/etc/localtime".into(),
                content: Content::Symlink("/usr/share/zoneinfo/UTC".into()),
                mode: 0o777,
                uid: 0,
                gid: 0,
            },
            Target {
                path: "/var/home/ops".into(),
                content: Content::Dir,
                mode: 0o700,
                uid: 0,
                gid: 0,
            },
        ];
        f.apply(&targets, &[]).unwrap();
        assert_eq!(fs::read_to_string(f.upper("/etc/hostname")).unwrap(), "h\n");
        let mode = |p: &str| fs::symlink_metadata(f.upper(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("/etc/shadow"), 0o600);
        assert_eq!(
            mode("/etc/ssh"),
            0o751,
            "the slot's mode for a parent it has"
        );
        assert_eq!(mode("/etc/ssh/sshd_config.d"), 0o755);
        assert_eq!(mode("/var/home/ops"), 0o700);
        assert_eq!(
            fs::read_link(f.upper("/etc/localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/UTC")
        );
        assert!(!f.state().join(TXN).exists());
        assert!(!f.state().join(TXN_NEW).exists());
    }

    #[test]
    fn a_second_apply_replaces_and_removes_stale_files() {
        let f = Fixture::new();
        f.apply(
            &[
                file("/etc/hostname", "a\n", 0o644),
                file("/etc/environment", "x=1\n", 0o644),
            ],
            &[],
        )
        .unwrap();
        f.apply(
            &[file("/etc/hostname", "b\n", 0o644)],
            &["/etc/environment".into(), "/etc/never-existed".into()],
        )
        .unwrap();
        assert_eq!(fs::read_to_string(f.upper("/etc/hostname")).unwrap(), "b\n");
        assert!(!f.upper("/etc/environment").exists());
    }

    #[test]
    fn an_uncommitted_transaction_is_discarded() {
        let f = Fixture::new();
        f.apply(&[file("/etc/hostname", "old\n", 0o644)], &[])
            .unwrap();
        // A power cut while staging: config-txn.new with a staged file, no commit.
        let new_dir = f.state().join(TXN_NEW);
        fs::create_dir_all(&new_dir).unwrap();
        fs::write(new_dir.join("f00000"), "new\n").unwrap();
        assert!(!f.recover());
        assert!(!new_dir.exists());
        assert_eq!(
            fs::read_to_string(f.upper("/etc/hostname")).unwrap(),
            "old\n"
        );
    }

    #[test]
    fn a_committed_transaction_is_finished_at_the_next_boot() {
        let f = Fixture::new();
        f.apply(
            &[
                file("/etc/hostname", "old\n", 0o644),
                file("/etc/stale", "s\n", 0o644),
            ],
            &[],
        )
        .unwrap();
        // Committed, then cut after the first rename: f00000 placed, f00001 still staged.
        let dir = f.state().join(TXN);
        fs::create_dir_all(&dir).unwrap();
        let ops = vec![
            Op::Place {
                staged: "f00000".into(),
                target: "/etc/hostname".into(),
            },
            Op::Place {
                staged: "f00001".into(),
                target: "/var/lib/p6os/applied.json".into(),
            },
            Op::Remove {
                target: "/etc/stale".into(),
            },
        ];
        fs::write(dir.join(JOURNAL), serde_json::to_vec(&ops).unwrap()).unwrap();
        fs::write(f.upper("/etc/hostname"), "new\n").unwrap();
        fs::write(dir.join("f00001"), "{}\n").unwrap();
        fs::create_dir_all(f.upper("/var/lib/p6os")).unwrap();
        assert!(f.recover());
        assert_eq!(
            fs::read_to_string(f.upper("/etc/hostname")).unwrap(),
            "new\n"
        );
        assert_eq!(
            fs::read_to_string(f.upper("/var/lib/p6os/applied.json")).unwrap(),
            "{}\n"
        );
        assert!(!f.upper("/etc/stale").exists());
        assert!(!dir.exists());
        // And a second recovery has nothing to do.
        assert!(!f.recover());
    }

    #[test]
    fn targets_outside_the_overlays_are_refused_before_anything_is_written() {
        let f = Fixture::new();
        let err = f
            .apply(
                &[
                    file("/usr/bin/x", "x", 0o755),
                    file("/etc/hostname", "h\n", 0o644),
                ],
                &[],
            )
            .unwrap_err();
        assert!(matches!(err, TxnError::NotOverlaid(_)), "{err}");
        assert!(!f.upper("/etc/hostname").exists());
    }

    #[test]
    fn plan_lists_places_then_removes_and_skips_dirs() {
        let targets = vec![
            file("/etc/a", "", 0o644),
            Target {
                path: "/var/home/x".into(),
                content: Content::Dir,
                mode: 0o700,
                uid: 0,
                gid: 0,
            },
            file("/etc/b", "", 0o644),
        ];
        assert_eq!(
            plan(&targets, &["/etc/c".into()]),
            vec![
                Op::Place {
                    staged: "f00000".into(),
                    target: "/etc/a".into()
                },
                Op::Place {
                    staged: "f00001".into(),
                    target: "/etc/b".into()
                },
                Op::Remove {
                    target: "/etc/c".into()
                },
            ]
        );
    }
}
