//! Turns layer sources into trees: Debian packages through the host's apt, tarballs, directories
//! and inline entries. Downloads land in a content-addressed cache (`<cache>/blobs/<sha256>`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub mod bootstrap;

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
            let tmp = dest.with_extension("tmp");
            fs::copy(file, &tmp).map_err(io_err(&tmp))?;
            fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
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

/// Resolves a Debian package spec (`name` or `name=version`) with `apt-cache show`.
pub fn resolve_debian(spec: &str) -> Result<ResolvedPackage, FetchError> {
    let (name, _) = spec.split_once('=').unwrap_or((spec, ""));
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions", "--", spec])
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| FetchError::Apt {
            package: spec.into(),
            detail: format!("cannot run apt-cache: {e} (is this a Debian/Ubuntu host?)"),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.trim().is_empty() {
        return Err(FetchError::Apt {
            package: spec.into(),
            detail: format!(
                "not found by apt-cache ({}); run `apt-get update`, or check the name and version",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let field = |f: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(f)
                .and_then(|r| r.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        })
    };
    match (field("Package"), field("Version"), field("SHA256")) {
        (Some(p), Some(version), Some(sha256)) if p == name => Ok(ResolvedPackage {
            name: p,
            version,
            sha256,
        }),
        _ => Err(FetchError::Apt {
            package: spec.into(),
            detail: "apt-cache gave no Package/Version/SHA256".into(),
        }),
    }
}

/// Debian package specs resolved up front, with one `apt-cache` run for all of them.
#[derive(Debug, Clone, Default)]
pub struct AptIndex(pub std::collections::BTreeMap<String, ResolvedPackage>);

impl AptIndex {
    /// Resolves every spec with a single `apt-cache show`; a spec it cannot match is left out
    /// (resolving it alone later gives the precise error).
    pub fn resolve(specs: &[&str]) -> AptIndex {
        let mut index = AptIndex::default();
        if specs.is_empty() {
            return index;
        }
        index.query(specs);
        index
    }

    /// Like [`AptIndex::resolve`], remembering the answer in the cache under a key made of the
    /// specs and the state of apt's configuration and package lists (paths, sizes, mtimes): while
    /// apt would answer the same, it is not asked again.
    pub fn resolve_cached(cache: &Cache, specs: &[&str]) -> AptIndex {
        let Some(key) = apt_state_key(specs) else {
            return AptIndex::resolve(specs);
        };
        let file = cache.root.join("apt").join(format!("{key}.json"));
        if let Ok(map) = fs::read(&file)
            .map_err(|_| ())
            .and_then(|b| serde_json::from_slice(&b).map_err(|_| ()))
        {
            return AptIndex(map);
        }
        let index = AptIndex::resolve(specs);
        if index.0.len() == specs.len() {
            let _ = fs::create_dir_all(file.parent().expect("has a parent")).and_then(|_| {
                fs::write(&file, serde_json::to_vec(&index.0).expect("serializable"))
            });
        }
        index
    }

    fn query(&mut self, specs: &[&str]) {
        let index = self;
        let Ok(out) = Command::new("apt-cache")
            .args(["show", "--no-all-versions", "--"])
            .args(specs)
            .env("LC_ALL", "C")
            .output()
        else {
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        for para in text.split("\n\n") {
            let field = |f: &str| {
                para.lines().find_map(|l| {
                    l.strip_prefix(f)
                        .and_then(|r| r.strip_prefix(':'))
                        .map(|v| v.trim().to_string())
                })
            };
            let (Some(name), Some(version), Some(sha256)) =
                (field("Package"), field("Version"), field("SHA256"))
            else {
                continue;
            };
            for spec in specs {
                let matches = match spec.split_once('=') {
                    Some((n, v)) => n == name && v == version,
                    None => *spec == name,
                };
                if matches {
                    let pkg = ResolvedPackage {
                        name: name.clone(),
                        version: version.clone(),
                        sha256: sha256.clone(),
                    };
                    index.0.insert(spec.to_string(), pkg);
                }
            }
        }
    }
}

/// A digest of what apt's answers depend on, or `None` when it cannot be read.
fn apt_state_key(specs: &[&str]) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    for spec in specs {
        h.update(spec.as_bytes());
        h.update(b"\0");
    }
    let dirs = [
        "/var/lib/apt/lists",
        "/etc/apt/sources.list.d",
        "/etc/apt/preferences.d",
        "/etc/apt/apt.conf.d",
    ];
    let files = [
        "/etc/apt/sources.list",
        "/etc/apt/preferences",
        "/var/lib/dpkg/arch",
    ];
    let mut paths: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
    for d in dirs {
        if let Ok(rd) = fs::read_dir(d) {
            paths.extend(rd.filter_map(Result::ok).map(|e| e.path()));
        }
    }
    paths.sort();
    let mut lists = 0;
    for p in paths {
        if let Ok(m) = fs::metadata(&p) {
            lists += usize::from(p.starts_with("/var/lib/apt/lists"));
            h.update(
                format!(
                    "{}\0{}\0{}\0{}\n",
                    p.display(),
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec()
                )
                .as_bytes(),
            );
        }
    }
    (lists > 0).then(|| hex::encode(h.finalize()))
}

/// The tree of a .deb, from the cache of unpacked trees (zstd, fast) or unpacked and cached.
/// Keyed by the .deb's sha256; the cache is an accelerator, never required.
pub fn cached_deb_tree(cache: &Cache, deb: &Path, sha256: &str) -> Result<Tree, FetchError> {
    let cached = cache.root.join("trees").join(format!("{sha256}.tar.zst"));
    if let Ok(bytes) = fs::read(&cached) {
        if let Ok(tree) =
            zstd::stream::read::Decoder::new(bytes.as_slice()).and_then(Tree::from_tar)
        {
            cache.touch(&cached);
            return Ok(tree);
        }
    }
    let tree = deb_tree(deb)?;
    let store = || -> io::Result<()> {
        fs::create_dir_all(cached.parent().expect("has a parent"))?;
        let tmp = cached.with_extension("tmp");
        let mut enc = zstd::stream::write::Encoder::new(fs::File::create(&tmp)?, 3)?;
        tree.write_tar(&mut enc)?;
        enc.finish()?.sync_all()?;
        fs::rename(&tmp, &cached)
    };
    let _ = store();
    Ok(tree)
}

/// The .deb for `pkg`, from the cache or downloaded with `apt-get download` and checked.
pub fn fetch_deb(cache: &Cache, pkg: &ResolvedPackage) -> Result<PathBuf, FetchError> {
    if let Some(p) = cache.get(&pkg.sha256) {
        return Ok(p);
    }
    let tmp = tempfile::tempdir().map_err(io_err(Path::new("temporary directory")))?;
    let spec = format!("{}={}", pkg.name, pkg.version);
    let out = Command::new("apt-get")
        .args(["download", "-q", "--", &spec])
        .current_dir(tmp.path())
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| FetchError::Apt {
            package: spec.clone(),
            detail: format!("cannot run apt-get: {e}"),
        })?;
    if !out.status.success() {
        return Err(FetchError::Apt {
            package: spec,
            detail: format!(
                "apt-get download failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let deb = fs::read_dir(tmp.path())
        .map_err(io_err(tmp.path()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| FetchError::Apt {
            package: spec.clone(),
            detail: "apt-get download wrote no .deb".into(),
        })?;
    cache.put(&deb, &pkg.sha256, &spec)
}

/// Reads the `data.tar.*` member of a .deb into a tree.
pub fn deb_tree(deb: &Path) -> Result<Tree, FetchError> {
    let bytes = fs::read(deb).map_err(io_err(deb))?;
    let what = deb.display().to_string();
    let bad = |detail: &str| FetchError::Format {
        what: what.clone(),
        detail: detail.into(),
    };
    if !bytes.starts_with(b"!<arch>\n") {
        return Err(bad("not a Debian package (ar archive)"));
    }
    let mut pos = 8;
    while pos + 60 <= bytes.len() {
        let header = &bytes[pos..pos + 60];
        let name = String::from_utf8_lossy(&header[0..16])
            .trim()
            .trim_end_matches('/')
            .to_string();
        let size: usize = String::from_utf8_lossy(&header[48..58])
            .trim()
            .parse()
            .map_err(|_| bad("bad ar member size"))?;
        let start = pos + 60;
        let end = start
            .checked_add(size)
            .filter(|e| *e <= bytes.len())
            .ok_or_else(|| bad("truncated ar member"))?;
        if name.starts_with("data.tar") {
            let reader = decompressor(&bytes[start..end]).map_err(|e| bad(&e.to_string()))?;
            return Tree::from_tar(reader).map_err(|e| bad(&format!("data archive: {e}")));
        }
        pos = end + (size % 2);
    }
    Err(bad("no data.tar member"))
}

/// A reader that undoes gzip, xz or zstd compression, detected by magic number.
pub fn decompressor<'a>(data: &'a [u8]) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match data {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(data)),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Box::new(xz2::read::XzDecoder::new(data)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Box::new(zstd::stream::read::Decoder::new(data)?),
        _ => Box::new(data),
    })
}

/// What fetching a source needs besides the source: the cache, apt's answers, local copies
/// given with `--layer-source NAME=PATH`, and a progress sink.
pub struct SourceContext<'a> {
    pub cache: &'a Cache,
    pub apt: &'a AptIndex,
    pub local: &'a BTreeMap<String, PathBuf>,
    pub say: &'a dyn Fn(&str),
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
                Some(LockedSource::Debian { packages: p }) if p.len() == packages.len() => Some(p),
                _ => None,
            };
            let mut tree = Tree::new();
            let mut resolved = Vec::new();
            for (i, spec) in packages.iter().enumerate() {
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
            Ok((tree, Resolved::Debian { packages: resolved }))
        }
        Source::Mmdebstrap {
            suite,
            variant,
            packages,
        } => {
            let pins = match locked {
                Some(LockedSource::Mmdebstrap { packages }) => Some(packages.as_slice()),
                _ => None,
            };
            if let Some(pins) = pins {
                // Every locked version must still be in the archive, or apt would quietly
                // take another one.
                let specs: Vec<String> = pins
                    .iter()
                    .map(|p| format!("{}={}", p.name, p.version))
                    .collect();
                let refs: Vec<&str> = specs.iter().map(String::as_str).collect();
                let index = AptIndex::resolve_cached(cache, &refs);
                let gone: Vec<&str> = refs
                    .iter()
                    .copied()
                    .filter(|s| !index.0.contains_key(*s))
                    .collect();
                if !gone.is_empty() {
                    return Err(FetchError::Moved {
                        what: format!(
                            "{} locked package(s) no longer in the host's apt sources: {}",
                            gone.len(),
                            gone.join(", ")
                        ),
                    });
                }
            }
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
                None => download(cache, url, sha256).map_err(|e| match e {
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
                (None, Some(u)) => download(cache, u, sha256.as_deref().unwrap_or_default())?,
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

/// Reads a host directory: owners become root, modes 0755/0644 by the owner's exec bit (so the
/// builder's umask does not matter), times fixed at 0, entries in sorted order.
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
        let exec = meta.permissions().mode() & 0o100 != 0;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(io_err(&path))?;
            tree.insert(&dest, Entry::symlink(&target.to_string_lossy()));
        } else if meta.is_dir() {
            tree.insert(&dest, Entry::dir(0o755));
            read_dir_into(root, &path, prefix, tree)?;
        } else if meta.is_file() {
            let data = fs::read(&path).map_err(io_err(&path))?;
            tree.insert(&dest, Entry::file(data, if exec { 0o755 } else { 0o644 }));
        } else {
            return Err(FetchError::Format {
                what: path.display().to_string(),
                detail: "special files are not taken from directories; use an inline entry".into(),
            });
        }
    }
    Ok(())
}

/// Downloads `url` into the cache, checking its sha256 (mandatory for URLs).
fn download(cache: &Cache, url: &str, sha256: &str) -> Result<PathBuf, FetchError> {
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
        let mut reader = response.body_mut().as_reader();
        let mut out = fs::File::create(tmp.path()).map_err(io_err(tmp.path()))?;
        io::copy(&mut reader, &mut out).map_err(|e| fail(e.to_string()))?;
    }
    cache.put(tmp.path(), sha256, url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(
        cache: &'a Cache,
        apt: &'a AptIndex,
        local: &'a BTreeMap<String, PathBuf>,
    ) -> SourceContext<'a> {
        SourceContext {
            cache,
            apt,
            local,
            say: &|_| {},
        }
    }

    #[test]
    fn file_sources_take_local_copies_and_name_the_flag_when_unreachable() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache {
            root: d.path().join("cache"),
        };
        fs::write(d.path().join("k3s"), b"#!/bin/sh\n").unwrap();
        let sha = sha256_bytes(b"#!/bin/sh\n");
        let source = Source::File {
            name: "k3s".into(),
            // Nothing listens on port 9 of loopback: the download fails at once.
            url: "http://127.0.0.1:9/k3s".into(),
            sha256: sha.clone(),
            dest: "/usr/local/bin/k3s".into(),
            mode: Some("0755".into()),
        };
        let apt = AptIndex::default();
        let none = BTreeMap::new();
        let err = load_source(&ctx(&cache, &apt, &none), d.path(), &source, None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("http://127.0.0.1:9/k3s"), "{text}");
        assert!(text.contains("--layer-source k3s=PATH"), "{text}");
        let local = BTreeMap::from([("k3s".to_string(), d.path().join("k3s"))]);
        let (tree, resolved) =
            load_source(&ctx(&cache, &apt, &local), d.path(), &source, None).unwrap();
        assert_eq!(tree.get("usr/local/bin/k3s").unwrap().mode, 0o755);
        assert_eq!(
            resolved,
            Resolved::File {
                name: "k3s".into(),
                sha256: sha
            }
        );
        // A local copy with other bytes is refused.
        fs::write(d.path().join("k3s"), b"other").unwrap();
        let err = load_source(&ctx(&cache, &apt, &local), d.path(), &source, None).unwrap_err();
        assert!(matches!(err, FetchError::Sha256Mismatch { .. }), "{err}");
    }

    #[test]
    fn dir_sources_ignore_umask_and_mtimes() {
        use std::os::unix::fs::PermissionsExt;
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for (d, mode) in [(&a, 0o600), (&b, 0o664)] {
            fs::create_dir(d.path().join("etc")).unwrap();
            fs::write(d.path().join("etc/motd"), "hi\n").unwrap();
            fs::set_permissions(d.path().join("etc/motd"), fs::Permissions::from_mode(mode))
                .unwrap();
            std::os::unix::fs::symlink("motd", d.path().join("etc/issue")).unwrap();
        }
        let src = |p: &Path| Source::Dir {
            path: p.display().to_string(),
            target: Some("/opt".into()),
        };
        let cache = Cache {
            root: a.path().join("cache-unused"),
        };
        let (apt, local) = (AptIndex::default(), BTreeMap::new());
        let ctx = ctx(&cache, &apt, &local);
        let (ta, ra) = load_source(&ctx, Path::new("/"), &src(a.path()), None).unwrap();
        let (tb, rb) = load_source(&ctx, Path::new("/"), &src(b.path()), None).unwrap();
        assert_eq!(ta, tb);
        assert_eq!(ra, rb);
        assert_eq!(ta.get("opt/etc/motd").unwrap().mode, 0o644);
        assert!(matches!(
            ta.get("opt/etc/issue").unwrap().kind,
            Kind::Symlink(_)
        ));
    }

    #[test]
    fn tarball_sha256_is_checked() {
        let d = tempfile::tempdir().unwrap();
        let mut t = Tree::new();
        t.insert("etc/x", Entry::file(b"x".to_vec(), 0o644));
        let mut tar = Vec::new();
        t.write_tar(&mut tar).unwrap();
        fs::write(d.path().join("l.tar"), &tar).unwrap();
        let cache = Cache {
            root: d.path().join("cache"),
        };
        let (apt, local) = (AptIndex::default(), BTreeMap::new());
        let ctx = ctx(&cache, &apt, &local);
        let good = Source::Tarball {
            path: Some("l.tar".into()),
            url: None,
            sha256: Some(sha256_bytes(&tar)),
        };
        assert_eq!(load_source(&ctx, d.path(), &good, None).unwrap().0, t);
        let bad = Source::Tarball {
            path: Some("l.tar".into()),
            url: None,
            sha256: Some("0".repeat(64)),
        };
        let err = load_source(&ctx, d.path(), &bad, None).unwrap_err();
        assert!(matches!(err, FetchError::Sha256Mismatch { .. }), "{err}");
        // By URL (file://), the download lands in the cache under its digest.
        let url = Source::Tarball {
            path: None,
            url: Some(format!("file://{}", d.path().join("l.tar").display())),
            sha256: Some(sha256_bytes(&tar)),
        };
        assert_eq!(load_source(&ctx, d.path(), &url, None).unwrap().0, t);
        assert!(cache.get(&sha256_bytes(&tar)).is_some());
    }

    #[test]
    fn compressed_tarballs_are_detected() {
        let mut t = Tree::new();
        t.insert("a", Entry::file(b"abc".to_vec(), 0o644));
        let mut tar = Vec::new();
        t.write_tar(&mut tar).unwrap();
        let zst = zstd::encode_all(tar.as_slice(), 3).unwrap();
        assert_eq!(Tree::from_tar(decompressor(&zst).unwrap()).unwrap(), t);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar).unwrap();
        assert_eq!(
            Tree::from_tar(decompressor(&gz.finish().unwrap()).unwrap()).unwrap(),
            t
        );
    }
}
