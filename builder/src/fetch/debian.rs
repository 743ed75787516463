//! Debian packages through the host's apt: resolving specs (`apt-cache show`, one call for a
//! whole recipe, answers cached while apt's state is unchanged), downloading (`apt-get
//! download`, checked against the archive's sha256) and unpacking `.deb`s in Rust.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::{io_err, Cache, FetchError, ResolvedPackage};
use crate::tree::Tree;

/// The value of field `name` in one paragraph of a Debian control file (`Packages`, the dpkg
/// status, `apt-cache show`); single-line fields only.
pub fn control_field(para: &str, name: &str) -> Option<String> {
    para.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
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
    let field = |f: &str| control_field(&text, f);
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
            let field = |f: &str| control_field(para, f);
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
pub(super) fn apt_state_key(specs: &[&str]) -> Option<String> {
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
        let dir = cached.parent().expect("has a parent");
        fs::create_dir_all(dir)?;
        let tmp = tempfile::NamedTempFile::with_suffix_in(".tmp", dir)?;
        let mut enc = zstd::stream::write::Encoder::new(tmp.as_file(), 3)?;
        tree.write_tar(&mut enc)?;
        enc.finish()?.sync_all()?;
        tmp.persist(&cached).map(|_| ()).map_err(|e| e.error)
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
