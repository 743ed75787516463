//! Turns layer sources into trees: Debian packages through the host's apt, tarballs, directories
//! and inline entries. Downloads land in a content-addressed cache (`<cache>/blobs/<sha256>`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub mod bootstrap;
mod debian;

use debian::apt_state_key;
pub use debian::{cached_deb_tree, deb_tree, decompressor, fetch_deb, resolve_debian, AptIndex};

use crate::lock::{self, LockedSource};
use crate::recipe::{InlineEntry, InlineKind, Source};
use crate::tree::{normalize, Entry, Kind, Tree};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("debian package `{package}`: {detail}")]
    Apt { package: String, detail: String },
    #[error("download of {url} failed: {detail}")]
    Download { url: String, detail: String },
    #[error("{what}: sha256 mismatch: expected {expected}, got {actual}")]
    Sha256Mismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{what}: {detail}")]
    Format { what: String, detail: String },
    #[error("the locked set moved: {what}\n  hint: run `p6os lock RECIPE --update` to take the new set (and review the diff)")]
    Moved { what: String },
    #[error("mmdebstrap: {detail}\n  hint: {hint}")]
    Bootstrap { detail: String, hint: String },
    #[error("download of {url} failed: {detail}\n  hint: supply a local copy with `--layer-source {name}=PATH` (checked against the pinned sha256)")]
    Unreachable {
        name: String,
        url: String,
        detail: String,
    },
}

/// Threads for multithreaded compression: the machine's cores.
pub fn threads() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where downloads are kept. Never required: an empty cache only means downloading again.
#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

impl Cache {
    /// `$P6OS_CACHE`, else `$XDG_CACHE_HOME/p6os`, else `~/.cache/p6os`.
    pub fn default_location() -> Cache {
        let root = std::env::var_os("P6OS_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("p6os")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/p6os")))
            .unwrap_or_else(|| std::env::temp_dir().join("p6os-cache"));
        Cache { root }
    }

    /// Marks a cache entry as used now (`p6os cache gc` removes entries unused for long).
    pub fn touch(&self, path: &Path) {
        let _ = fs::File::options()
            .append(true)
            .open(path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join(sha256)
    }

    /// The cached blob with this digest, if present and intact.
    pub fn get(&self, sha256: &str) -> Option<PathBuf> {
        let p = self.blob_path(sha256);
        match sha256_file(&p) {
            Ok(actual) if actual == sha256 => {
                self.touch(&p);
                Some(p)
            }
            _ => None,
        }
    }

    /// Moves `file` into the cache after checking its digest; returns the cached path.
    pub fn put(&self, file: &Path, expected: &str, what: &str) -> Result<PathBuf, FetchError> {
        let actual = sha256_file(file).map_err(io_err(file))?;
        if actual != expected {
            return Err(FetchError::Sha256Mismatch {
                what: what.into(),
                expected: expected.into(),
                actual,
            });
        }
        let dest = self.blob_path(expected);
        let dir = dest.parent().expect("blob paths have a parent");
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        if fs::rename(file, &dest).is_err() {
            // A name of its own: two builds may fill the cache at once.
            let tmp = tempfile::NamedTempFile::with_suffix_in(".tmp", dir).map_err(io_err(dir))?;
            fs::copy(file, tmp.path()).map_err(io_err(tmp.path()))?;
            tmp.persist(&dest).map_err(|e| io_err(&dest)(e.error))?;
        }
        Ok(dest)
    }
}

pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

pub fn sha256_bytes(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A Debian package resolved by apt: exact version and the archive's sha256.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResolvedPackage {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// What a source resolved to: the identity that goes into digests and manifests.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Resolved {
    Debian {
        packages: Vec<ResolvedPackage>,
    },
    Tarball {
        sha256: String,
    },
    Dir {
        sha256: String,
    },
    Inline {
        sha256: String,
    },
    Mmdebstrap {
        suite: String,
        packages: Vec<ResolvedPackage>,
    },
    File {
        name: String,
        sha256: String,
    },
}

/// What fetching a source needs besides the source: the cache, apt's answers, local copies
/// given with `--layer-source NAME=PATH`, and a progress sink.
pub struct SourceContext<'a> {
    pub cache: &'a Cache,
    pub apt: &'a AptIndex,
    pub local: &'a BTreeMap<String, PathBuf>,
    pub say: &'a dyn Fn(&str),
    /// `(task, done, total)` for work of known size: packages fetched, bytes downloaded.
    pub meter: &'a dyn Fn(&str, u64, u64),
}

/// Fetches and reads one source; `dir` is the layer file's directory. With `locked`, the
/// lock's exact packages are fetched, or the error names what moved.
pub fn load_source(
    ctx: &SourceContext,
    dir: &Path,
    source: &Source,
    locked: Option<&LockedSource>,
) -> Result<(Tree, Resolved), FetchError> {
    let cache = ctx.cache;
    match source {
        Source::Debian { packages } => {
            let pins = match locked {
                None => None,
                Some(LockedSource::Debian { packages: p })
                    if p.len() == packages.len()
                        && p.iter().zip(packages).all(|(l, spec)| {
                            spec.split_once('=').map_or(spec.as_str(), |(n, _)| n) == l.name
                        }) =>
                {
                    Some(p)
                }
                Some(_) => return Err(lock_mismatch()),
            };
            let mut tree = Tree::new();
            let mut resolved = Vec::new();
            for (i, spec) in packages.iter().enumerate() {
                (ctx.meter)("debian packages", i as u64, packages.len() as u64);
                let pkg = match pins.map(|p| &p[i]) {
                    Some(want) => {
                        let exact = format!("{}={}", want.name, want.version);
                        let got = match ctx.apt.0.get(&exact) {
                            Some(p) => p.clone(),
                            None => resolve_debian(&exact).map_err(|_| FetchError::Moved {
                                what: format!(
                                    "{} {} (locked) is no longer in the host's apt sources",
                                    want.name, want.version
                                ),
                            })?,
                        };
                        if got.sha256 != want.sha256 {
                            return Err(FetchError::Moved {
                                what: lock::package_changes(
                                    std::slice::from_ref(want),
                                    std::slice::from_ref(&got),
                                )
                                .join("; "),
                            });
                        }
                        got
                    }
                    None => match ctx.apt.0.get(spec) {
                        Some(p) => p.clone(),
                        None => resolve_debian(spec)?,
                    },
                };
                let deb = fetch_deb(cache, &pkg)?;
                tree.merge(&cached_deb_tree(cache, &deb, &pkg.sha256)?);
                resolved.push(pkg);
            }
            (ctx.meter)(
                "debian packages",
                packages.len() as u64,
                packages.len() as u64,
            );
            Ok((tree, Resolved::Debian { packages: resolved }))
        }
        Source::Mmdebstrap {
            suite,
            variant,
            packages,
        } => {
            let pins = match locked {
                None => None,
                Some(LockedSource::Mmdebstrap { packages }) => Some(packages.as_slice()),
                Some(_) => return Err(lock_mismatch()),
            };
            let req = bootstrap::Request {
                suite,
                variant: *variant,
                packages,
                pins,
            };
            let built = bootstrap::bootstrap(cache, &req, ctx.say)?;
            if let Some(pins) = pins {
                let changes = lock::package_changes(pins, &built.packages);
                if !changes.is_empty() {
                    return Err(FetchError::Moved {
                        what: changes.join("; "),
                    });
                }
            }
            Ok((
                built.tree,
                Resolved::Mmdebstrap {
                    suite: suite.clone(),
                    packages: built.packages,
                },
            ))
        }
        Source::File {
            name,
            url,
            sha256,
            dest,
            mode,
        } => {
            let file = match ctx.local.get(name) {
                Some(p) => p.clone(),
                None => download(cache, url, sha256, ctx.meter).map_err(|e| match e {
                    FetchError::Download { url, detail } => FetchError::Unreachable {
                        name: name.clone(),
                        url,
                        detail,
                    },
                    other => other,
                })?,
            };
            let actual = sha256_file(&file).map_err(io_err(&file))?;
            if actual != *sha256 {
                return Err(FetchError::Sha256Mismatch {
                    what: file.display().to_string(),
                    expected: sha256.clone(),
                    actual,
                });
            }
            let data = fs::read(&file).map_err(io_err(&file))?;
            let mode = mode
                .as_deref()
                .and_then(|m| u32::from_str_radix(m, 8).ok())
                .unwrap_or(0o644);
            let mut tree = Tree::new();
            tree.insert(dest, Entry::file(data, mode));
            Ok((
                tree,
                Resolved::File {
                    name: name.clone(),
                    sha256: actual,
                },
            ))
        }
        Source::Tarball { path, url, sha256 } => {
            let file = match (path, url) {
                (Some(p), _) => dir.join(p),
                (None, Some(u)) => {
                    download(cache, u, sha256.as_deref().unwrap_or_default(), ctx.meter)?
                }
                (None, None) => unreachable!("checked recipes give a path or a url"),
            };
            let actual = sha256_file(&file).map_err(io_err(&file))?;
            if let Some(expected) = sha256 {
                if *expected != actual {
                    return Err(FetchError::Sha256Mismatch {
                        what: file.display().to_string(),
                        expected: expected.clone(),
                        actual,
                    });
                }
            }
            let bytes = fs::read(&file).map_err(io_err(&file))?;
            let reader = decompressor(&bytes).map_err(io_err(&file))?;
            let tree = Tree::from_tar(reader).map_err(|e| FetchError::Format {
                what: file.display().to_string(),
                detail: e.to_string(),
            })?;
            Ok((tree, Resolved::Tarball { sha256: actual }))
        }
        Source::Dir { path, target } => {
            let root = dir.join(path);
            let mut tree = Tree::new();
            let prefix = target.as_deref().and_then(normalize);
            read_dir_into(&root, &root, prefix.as_deref(), &mut tree)?;
            let sha256 = tree_digest(&tree);
            Ok((tree, Resolved::Dir { sha256 }))
        }
        Source::Inline { entries } => {
            let mut tree = Tree::new();
            for e in entries {
                tree.insert(&e.path, inline_entry(e));
            }
            let sha256 = tree_digest(&tree);
            Ok((tree, Resolved::Inline { sha256 }))
        }
    }
}

fn lock_mismatch() -> FetchError {
    FetchError::Moved {
        what: "the lock's entry for this source does not match the layer (another kind of \
               source, or other packages): the lock was edited or merged by hand"
            .into(),
    }
}

/// What the lock records for a source and how it resolved.
pub fn locked_form(source: &Source, resolved: &Resolved) -> LockedSource {
    match (source, resolved) {
        (_, Resolved::Debian { packages }) => LockedSource::Debian {
            packages: packages.clone(),
        },
        (_, Resolved::Mmdebstrap { packages, .. }) => LockedSource::Mmdebstrap {
            packages: packages.clone(),
        },
        (Source::File { url, .. }, Resolved::File { sha256, .. })
        | (Source::Tarball { url: Some(url), .. }, Resolved::Tarball { sha256 }) => {
            LockedSource::Download {
                url: url.clone(),
                sha256: sha256.clone(),
            }
        }
        _ => LockedSource::Local,
    }
}

/// Digest of a tree's canonical tar form.
pub fn tree_digest(tree: &Tree) -> String {
    let mut h = HashWriter(Sha256::new());
    tree.write_tar(&mut h).expect("hashing cannot fail");
    hex::encode(h.0.finalize())
}

struct HashWriter(Sha256);
impl io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn inline_entry(e: &InlineEntry) -> Entry {
    let mode = e
        .mode
        .as_deref()
        .and_then(|m| u32::from_str_radix(m, 8).ok());
    let (kind, default_mode) = match e.kind {
        InlineKind::Dir => (Kind::Dir, 0o755),
        InlineKind::File => (
            Kind::File(Arc::new(e.content.clone().unwrap_or_default().into_bytes())),
            0o644,
        ),
        InlineKind::Symlink => (Kind::Symlink(e.target.clone().unwrap_or_default()), 0o777),
        InlineKind::Char => (
            Kind::Char {
                major: e.major.unwrap_or(0),
                minor: e.minor.unwrap_or(0),
            },
            0o600,
        ),
        InlineKind::Block => (
            Kind::Block {
                major: e.major.unwrap_or(0),
                minor: e.minor.unwrap_or(0),
            },
            0o600,
        ),
    };
    Entry {
        kind,
        mode: mode.unwrap_or(default_mode),
        uid: e.uid,
        gid: e.gid,
        mtime: 0,
        xattrs: Default::default(),
    }
}

/// Reads a host directory: owners become root, times fixed at 0, entries in sorted order.
/// Modes: a world-readable file or directory becomes 0755/0644 by the owner's exec bit (so the
/// builder's umask does not matter); one that is not world-readable (a key, `ssl/private`)
/// keeps its read and execute bits and the owner's write (setuid, setgid, sticky and every
/// group/world write dropped: 0602 becomes 0600, a 1733 spool directory 0711): a secret stays
/// a secret, and nothing in the image is writable by others because the host tree was.
fn read_dir_into(
    root: &Path,
    dir: &Path,
    prefix: Option<&str>,
    tree: &mut Tree,
) -> Result<(), FetchError> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        names.push(e.map_err(io_err(dir))?.path());
    }
    names.sort();
    for path in names {
        let rel = path
            .strip_prefix(root)
            .expect("walk stays under root")
            .to_string_lossy()
            .into_owned();
        let dest = match prefix {
            Some(p) => format!("{p}/{rel}"),
            None => rel,
        };
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        use std::os::unix::fs::PermissionsExt;
        let host = meta.permissions().mode();
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(io_err(&path))?;
            tree.insert(&dest, Entry::symlink(&target.to_string_lossy()));
        } else if meta.is_dir() {
            tree.insert(&dest, Entry::dir(dir_layer_mode(host, Node::Dir)));
            read_dir_into(root, &path, prefix, tree)?;
        } else if meta.is_file() {
            let data = fs::read(&path).map_err(io_err(&path))?;
            tree.insert(&dest, Entry::file(data, dir_layer_mode(host, Node::File)));
        } else {
            return Err(FetchError::Format {
                what: path.display().to_string(),
                detail: "special files are not taken from directories; use an inline entry".into(),
            });
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File,
    Dir,
}

/// The image's mode for a host file or directory of mode `host` (see [`read_dir_into`]).
fn dir_layer_mode(host: u32, node: Node) -> u32 {
    if host & 0o004 == 0 {
        return host & 0o777 & !0o022;
    }
    match node == Node::Dir || host & 0o100 != 0 {
        true => 0o755,
        false => 0o644,
    }
}

/// Downloads `url` into the cache, checking its sha256 (mandatory for URLs).
fn download(
    cache: &Cache,
    url: &str,
    sha256: &str,
    meter: &dyn Fn(&str, u64, u64),
) -> Result<PathBuf, FetchError> {
    if let Some(p) = cache.get(sha256) {
        return Ok(p);
    }
    let fail = |detail: String| FetchError::Download {
        url: url.into(),
        detail,
    };
    let tmp = tempfile::NamedTempFile::new().map_err(io_err(Path::new("temporary file")))?;
    if let Some(local) = url.strip_prefix("file://") {
        fs::copy(local, tmp.path()).map_err(|e| fail(e.to_string()))?;
    } else {
        let mut response = ureq::get(url).call().map_err(|e| fail(e.to_string()))?;
        let total = response.body().content_length().unwrap_or(0);
        let mut reader = response.body_mut().as_reader();
        let mut out = fs::File::create(tmp.path()).map_err(io_err(tmp.path()))?;
        let name = url.rsplit('/').next().unwrap_or(url);
        let task = format!("downloading {name}");
        let mut buf = vec![0u8; 1 << 16];
        let mut done = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(|e| fail(e.to_string()))?;
            if n == 0 {
                break;
            }
            io::Write::write_all(&mut out, &buf[..n]).map_err(io_err(tmp.path()))?;
            done += n as u64;
            // Without a Content-Length the total is unknown (0).
            meter(&task, done, total);
        }
    }
    cache.put(tmp.path(), sha256, url)
}

#[cfg(test)]
mod tests;
