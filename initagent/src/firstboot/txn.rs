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
//!
//! Users own their homes in the /var upper directory and can put symbolic links there; the
//! transaction runs as root. So every path is walked one component at a time from the state
//! partition without following a link ([`super::beneath`]), every write is relative to an
//! opened directory, and a link (or a file) where a directory goes is refused before anything
//! is written (`check`), and again when it is reached.
//!
//! A user must not be able to stop a committed change halfway (say, between placing their own
//! keys and removing their sudo rights): a directory where a file goes is moved aside within
//! its opened parent (`.<name>.p6os-displaced-<n>`, logged) and the file placed; a directory
//! where a file is removed is left (it is not that file); and a step that still fails does not
//! stop the others: it is reported, the transaction stays committed and the next boot tries
//! it again (every step is a no-op once done).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::beneath::{Dir, Entry};
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
    #[error(
        "{path} ({upper}) is a symbolic link: refused, the configuration is written only \
         through real directories\n  hint: a user can replace a directory in their home with a \
         link; remove the link (or move it away) and reboot"
    )]
    Symlink { path: String, upper: String },
    #[error(
        "{path} ({upper}) is not a directory: refused\n  hint: remove it, or change the path \
         in unattended.yaml"
    )]
    NotADirectory { path: String, upper: String },
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

/// Whether [`Layout::parent`] creates the missing directories leading to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// Created with the slot's mode and owner where the slot has that directory, else 0755 root.
    Create,
    /// Stop: `None`.
    Stop,
}

impl Layout<'_> {
    /// The upper directory that holds `path` and the name in it, opened one component at a
    /// time from the state partition without following a link: a link (or a file) where a
    /// directory should be is refused, naming it. `None`: a directory on the way is missing
    /// (with [`Missing::Stop`]).
    fn parent(&self, path: &str, missing: Missing) -> Result<Option<(Dir, String)>, TxnError> {
        self.upper(path)?;
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let (top, rest) = comps
            .split_first()
            .ok_or(TxnError::NotOverlaid(path.into()))?;
        let (name, dirs) = rest
            .split_last()
            .ok_or(TxnError::NotOverlaid(path.into()))?;
        // The upper directory itself: made at boot, before this.
        let mut on_disk = self.state.to_path_buf();
        let mut dir = Dir::open(self.state).map_err(io_err("open", self.state))?;
        for comp in ["overlay", top, "upper"] {
            on_disk.push(comp);
            dir = match dir.entry(comp).map_err(io_err("open", &on_disk))? {
                Entry::Dir(d) => d,
                Entry::Missing => {
                    return Err(io_err("open", &on_disk)(io::ErrorKind::NotFound.into()))
                }
                Entry::Symlink => {
                    return Err(refused(Refusal::Symlink, &format!("/{top}"), &on_disk))
                }
                Entry::Other => {
                    return Err(refused(
                        Refusal::NotADirectory,
                        &format!("/{top}"),
                        &on_disk,
                    ))
                }
            };
        }
        let mut shown = format!("/{top}");
        for comp in dirs {
            on_disk.push(comp);
            shown = format!("{shown}/{comp}");
            dir = match dir.entry(comp).map_err(io_err("open", &on_disk))? {
                Entry::Dir(d) => d,
                Entry::Symlink => return Err(refused(Refusal::Symlink, &shown, &on_disk)),
                Entry::Other => return Err(refused(Refusal::NotADirectory, &shown, &on_disk)),
                Entry::Missing if missing == Missing::Stop => return Ok(None),
                Entry::Missing => self.make_parent(&dir, comp, &shown, &on_disk)?,
            };
        }
        Ok(Some((dir, name.to_string())))
    }

    /// Creates the upper directory `comp` in `dir` (`shown` in the config's terms) with the
    /// slot's mode and owner where the slot has that directory, else 0755 root.
    fn make_parent(
        &self,
        dir: &Dir,
        comp: &str,
        shown: &str,
        on_disk: &Path,
    ) -> Result<Dir, TxnError> {
        let lower = self.slot.join(&shown[1..]);
        let (mode, uid, gid) = match fs::metadata(&lower) {
            Ok(m) if m.is_dir() => {
                use std::os::unix::fs::MetadataExt;
                (m.mode() & 0o7777, m.uid(), m.gid())
            }
            _ => (0o755, 0, 0),
        };
        dir.mkdir(comp, mode).map_err(io_err("create", on_disk))?;
        let made = match dir.entry(comp).map_err(io_err("open", on_disk))? {
            Entry::Dir(d) => d,
            Entry::Symlink => return Err(refused(Refusal::Symlink, shown, on_disk)),
            _ => return Err(refused(Refusal::NotADirectory, shown, on_disk)),
        };
        made.set_owner_mode(uid, gid, mode)
            .map_err(io_err("set owner and mode of", on_disk))?;
        Ok(made)
    }
}

/// What stands where a directory should be.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Symlink,
    NotADirectory,
}

fn refused(what: Refusal, path: &str, upper: &Path) -> TxnError {
    let (path, upper) = (path.to_string(), upper.display().to_string());
    match what {
        Refusal::Symlink => TxnError::Symlink { path, upper },
        Refusal::NotADirectory => TxnError::NotADirectory { path, upper },
    }
}

/// Runs a whole transaction: a check of every path, directories, staging, commit, renames.
/// A link or a file where a directory should be (a user owns their home and can put one there)
/// is refused before anything is written.
pub fn apply(layout: &Layout, targets: &[Target], stale: &[String]) -> Result<Outcome, TxnError> {
    check(layout, targets, stale)?;
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
        let (parent, name) = layout
            .parent(&t.path, Missing::Create)?
            .ok_or_else(|| TxnError::NotOverlaid(t.path.clone()))?;
        if t.content == Content::Dir {
            make_dir(layout, &parent, &name, t)?;
        }
    }
    let ops = plan(targets, stale);
    let staging = Dir::open(&new_dir).map_err(io_err("open", &new_dir))?;
    let files = targets.iter().filter(|t| t.content != Content::Dir);
    for (op, t) in ops.iter().zip(files) {
        if let Op::Place { staged, .. } = op {
            stage(&staging, staged, &new_dir.join(staged), t)?;
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

/// Walks every path the change touches as far as it exists: a link or a file where a
/// directory goes is an error before anything is written.
fn check(layout: &Layout, targets: &[Target], stale: &[String]) -> Result<(), TxnError> {
    for t in targets {
        let Some((parent, name)) = layout.parent(&t.path, Missing::Stop)? else {
            continue;
        };
        if t.content == Content::Dir {
            dir_entry(layout, &parent, &name, &t.path)?;
        }
    }
    for path in stale {
        layout.parent(path, Missing::Stop)?;
    }
    Ok(())
}

/// The directory `name` in `parent` (`None` when missing); a link or a file is refused.
fn dir_entry(
    layout: &Layout,
    parent: &Dir,
    name: &str,
    path: &str,
) -> Result<Option<Dir>, TxnError> {
    let upper = layout.upper(path)?;
    match parent.entry(name).map_err(io_err("open", &upper))? {
        Entry::Dir(d) => Ok(Some(d)),
        Entry::Missing => Ok(None),
        Entry::Symlink => Err(refused(Refusal::Symlink, path, &upper)),
        Entry::Other => Err(refused(Refusal::NotADirectory, path, &upper)),
    }
}

/// At boot, before anything else: finish a committed transaction, drop an uncommitted one.
/// Returns what finishing a committed one did (`None`: there was none).
pub fn recover(layout: &Layout) -> Result<Option<Outcome>, TxnError> {
    let new_dir = layout.state.join(TXN_NEW);
    if new_dir.exists() {
        fs::remove_dir_all(&new_dir).map_err(io_err("remove", &new_dir))?;
    }
    let committed = layout.state.join(TXN);
    if !committed.exists() {
        return Ok(None);
    }
    let journal = committed.join(JOURNAL);
    let text = fs::read(&journal).map_err(io_err("read", &journal))?;
    let ops: Vec<Op> = serde_json::from_slice(&text).map_err(|e| TxnError::Io {
        what: "parse",
        path: journal.display().to_string(),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    finish(layout, &committed, &ops).map(Some)
}

/// What finishing a committed transaction did besides the plain steps.
#[derive(Debug, Default)]
pub struct Outcome {
    /// What stood in the way and was moved aside or left (for the log).
    pub notes: Vec<String>,
    /// Steps that failed; every other step was still done. The transaction stays committed,
    /// so the next boot tries these again (the done ones are no-ops then).
    pub unfinished: Vec<Unfinished>,
}

/// One step that could not be done.
#[derive(Debug)]
pub struct Unfinished {
    pub target: String,
    pub error: TxnError,
}

impl Outcome {
    /// Whether a step outside the users' homes failed: those are root's alone, so a failure
    /// there is the system's (a failure under `/var/home` is the user's own doing).
    pub fn failed_outside_homes(&self) -> bool {
        self.unfinished.iter().any(|u| !u.target.starts_with(HOMES))
    }
}

/// Where users own directories (and can put anything in them).
const HOMES: &str = "/var/home/";

/// Runs every step; a step that fails does not stop the ones after it (a user can make a step
/// in their home fail; the removal of their sudo rights and the record must still happen).
fn finish(layout: &Layout, committed: &Path, ops: &[Op]) -> Result<Outcome, TxnError> {
    let staging = Dir::open(committed).map_err(io_err("open", committed))?;
    // Parent directories to fsync, by their path.
    let mut dirs: BTreeMap<String, Dir> = BTreeMap::new();
    let mut outcome = Outcome::default();
    for op in ops {
        let (target, done) = match op {
            Op::Place { staged, target } => (
                target,
                place(
                    layout,
                    &staging,
                    committed,
                    staged,
                    target,
                    &mut outcome.notes,
                ),
            ),
            Op::Remove { target } => (target, remove(layout, target, &mut outcome.notes)),
        };
        match done {
            Ok(Some(parent)) => {
                let key = target.rsplit_once('/').map_or("", |(p, _)| p).to_string();
                dirs.insert(key, parent);
            }
            Ok(None) => {}
            Err(error) => outcome.unfinished.push(Unfinished {
                target: target.clone(),
                error,
            }),
        }
    }
    for (path, dir) in &dirs {
        if let Err(e) = dir.sync() {
            let shown = format!("{}{path}", layout.state.display());
            outcome.unfinished.push(Unfinished {
                target: path.clone(),
                error: io_err("fsync", Path::new(&shown))(e),
            });
        }
    }
    drop(staging);
    if outcome.unfinished.is_empty() {
        fs::remove_dir_all(committed).map_err(io_err("remove", committed))?;
        sync_dir(committed.parent().unwrap_or(layout.state))?;
    }
    Ok(outcome)
}

/// Renames the staged file over `target`; a directory standing there (a user's, in their home)
/// is moved aside first, within the opened parent. Returns the parent to fsync.
fn place(
    layout: &Layout,
    staging: &Dir,
    committed: &Path,
    staged: &str,
    target: &str,
    notes: &mut Vec<String>,
) -> Result<Option<Dir>, TxnError> {
    let to = layout.upper(target)?;
    let from = committed.join(staged);
    let Some((parent, name)) = layout.parent(target, Missing::Stop)? else {
        return Err(io_err("rename into", &to)(io::ErrorKind::NotFound.into()));
    };
    if let Entry::Missing = staging.entry(staged).map_err(io_err("stat", &from))? {
        // Placed before a power cut.
        return Ok(Some(parent));
    }
    // rename(2) replaces a file, a link, a socket...; only a directory is in the way.
    if let Entry::Dir(_) = parent.entry(&name).map_err(io_err("open", &to))? {
        let aside = parent
            .displace(&name)
            .map_err(io_err("move aside the directory", &to))?;
        notes.push(format!(
            "{target} was a directory where a file goes: moved aside to {aside} in the same \
             directory"
        ));
    }
    parent
        .rename_into(staging, staged, &name)
        .map_err(io_err("rename into", &to))?;
    Ok(Some(parent))
}

/// Removes `target`; a directory there is not the file this configuration wrote (a user made
/// it): left as it is. Returns the parent to fsync.
fn remove(layout: &Layout, target: &str, notes: &mut Vec<String>) -> Result<Option<Dir>, TxnError> {
    let path = layout.upper(target)?;
    let Some((parent, name)) = layout.parent(target, Missing::Stop)? else {
        return Ok(None);
    };
    match parent.entry(&name).map_err(io_err("open", &path))? {
        Entry::Missing => return Ok(None),
        Entry::Dir(_) => {
            notes.push(format!(
                "{target} is a directory, not the file this configuration wrote: left as it is"
            ));
            return Ok(None);
        }
        Entry::Symlink | Entry::Other => {}
    }
    match parent.unlink(&name) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", &path)(e)),
    }
    Ok(Some(parent))
}

fn make_dir(layout: &Layout, parent: &Dir, name: &str, t: &Target) -> Result<(), TxnError> {
    let upper = layout.upper(&t.path)?;
    let dir = match dir_entry(layout, parent, name, &t.path)? {
        Some(d) => d,
        None => {
            parent
                .mkdir(name, t.mode)
                .map_err(io_err("create", &upper))?;
            dir_entry(layout, parent, name, &t.path)?
                .ok_or_else(|| io_err("create", &upper)(io::ErrorKind::NotFound.into()))?
        }
    };
    dir.set_owner_mode(t.uid, t.gid, t.mode)
        .map_err(io_err("set owner and mode of", &upper))
}

/// Writes one staged file (or link) in the staging directory, with its owner and mode.
fn stage(staging: &Dir, name: &str, path: &Path, t: &Target) -> Result<(), TxnError> {
    match &t.content {
        Content::File(bytes) => {
            let mut file = staging.create_file(name).map_err(io_err("create", path))?;
            file.write_all(bytes).map_err(io_err("write", path))?;
            std::os::unix::fs::fchown(&file, Some(t.uid), Some(t.gid))
                .map_err(io_err("chown", path))?;
            file.set_permissions(fs::Permissions::from_mode(t.mode))
                .map_err(io_err("chmod", path))?;
            file.sync_all().map_err(io_err("fsync", path))
        }
        Content::Symlink(to) => staging
            .symlink(to, name, t.uid, t.gid)
            .map_err(io_err("create symlink", path)),
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
#[path = "txn_tests.rs"]
mod tests;
