//! `recipes/<name>.lock`: the resolved package set and every downloaded artifact's digest, per
//! layer, like Cargo.lock. A build with the lock present fetches exactly that set or fails
//! naming what moved; `p6os lock RECIPE [--update]` writes it.
//!
//! Only what comes from outside is locked: Debian packages (`debian` and `mmdebstrap`
//! sources) and downloads by URL. Directories, inline entries and local tarballs are the
//! recipe's own files.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fetch::{sha256_bytes, ResolvedPackage};
use crate::recipe::{Layer, Recipe, Source};

pub const LOCK_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// Format version of this file.
    pub version: u32,
    /// By layer reference as written in the recipe (`../images/base/debian-bookworm.yaml`).
    pub layers: BTreeMap<String, LayerLock>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerLock {
    /// sha256 of the layer's lockable source definitions: when it changes, the lock is stale.
    pub definition: String,
    /// One per source of the layer, in order.
    pub sources: Vec<LockedSource>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum LockedSource {
    Debian {
        packages: Vec<ResolvedPackage>,
    },
    Mmdebstrap {
        packages: Vec<ResolvedPackage>,
    },
    Download {
        url: String,
        sha256: String,
    },
    /// A source made of the recipe's own files: nothing to lock.
    Local,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {detail}\n  hint: delete it, or run `p6os lock RECIPE --update`")]
    Read { path: PathBuf, detail: String },
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{lock}: {what}\n  hint: run `p6os lock {recipe} --update` to take the new set (and review the diff)")]
    Moved {
        lock: PathBuf,
        recipe: String,
        what: String,
    },
}

/// The lock file beside a recipe: `recipes/default.yaml` -> `recipes/default.lock`.
pub fn path_for(recipe: &Path) -> PathBuf {
    recipe.with_extension("lock")
}

pub fn read(path: &Path) -> Result<Option<LockFile>, LockError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(LockError::Read {
                path: path.into(),
                detail: e.to_string(),
            })
        }
    };
    let lock: LockFile = serde_json::from_str(&text).map_err(|e| LockError::Read {
        path: path.into(),
        detail: format!("not a lock file: {e}"),
    })?;
    if lock.version != LOCK_VERSION {
        return Err(LockError::Read {
            path: path.into(),
            detail: format!(
                "lock format {} (this p6os reads {LOCK_VERSION})",
                lock.version
            ),
        });
    }
    Ok(Some(lock))
}

/// Writes the lock (temporary file, rename): one package per line, so diffs read well.
pub fn write(path: &Path, lock: &LockFile) -> Result<(), LockError> {
    let text = render(lock);
    let tmp = path.with_extension("lock.tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|source| LockError::Write {
            path: path.into(),
            source,
        })
}

/// The lock's text: JSON, one package or artifact per line.
pub fn render(lock: &LockFile) -> String {
    let j = |v: &str| serde_json::to_string(v).expect("strings serialize");
    let mut out = format!("{{\n  \"version\": {},\n  \"layers\": {{", lock.version);
    for (i, (name, layer)) in lock.layers.iter().enumerate() {
        out.push_str(if i == 0 { "\n" } else { ",\n" });
        let _ = write!(
            out,
            "    {}: {{\n      \"definition\": {},\n      \"sources\": [",
            j(name),
            j(&layer.definition)
        );
        for (k, s) in layer.sources.iter().enumerate() {
            out.push_str(if k == 0 { "\n" } else { ",\n" });
            match s {
                LockedSource::Debian { packages } | LockedSource::Mmdebstrap { packages } => {
                    let kind = if matches!(s, LockedSource::Debian { .. }) {
                        "debian"
                    } else {
                        "mmdebstrap"
                    };
                    let _ = write!(out, "        {{\"type\": \"{kind}\", \"packages\": [");
                    for (n, p) in packages.iter().enumerate() {
                        out.push_str(if n == 0 { "\n" } else { ",\n" });
                        let _ = write!(
                            out,
                            "          {{\"name\": {}, \"version\": {}, \"sha256\": {}}}",
                            j(&p.name),
                            j(&p.version),
                            j(&p.sha256)
                        );
                    }
                    out.push_str("\n        ]}");
                }
                LockedSource::Download { url, sha256 } => {
                    let _ = write!(
                        out,
                        "        {{\"type\": \"download\", \"url\": {}, \"sha256\": {}}}",
                        j(url),
                        j(sha256)
                    );
                }
                LockedSource::Local => out.push_str("        {\"type\": \"local\"}"),
            }
        }
        out.push_str(if layer.sources.is_empty() {
            "]\n    }"
        } else {
            "\n      ]\n    }"
        });
    }
    out.push_str(if lock.layers.is_empty() {
        "}\n}\n"
    } else {
        "\n  }\n}\n"
    });
    out
}

/// Whether a layer takes anything from outside (packages, downloads): only those are locked.
pub fn has_lockable_sources(layer: &Layer) -> bool {
    layer.def.sources.iter().any(|s| {
        matches!(
            s,
            Source::Debian { .. }
                | Source::Mmdebstrap { .. }
                | Source::File { .. }
                | Source::Tarball { url: Some(_), .. }
        )
    })
}

/// The digest of what a layer asks for from outside (package specs, suites, URLs).
pub fn definition_digest(layer: &Layer) -> String {
    let parts: Vec<serde_json::Value> = layer
        .def
        .sources
        .iter()
        .map(|s| match s {
            Source::Debian { packages } => serde_json::json!({"debian": packages}),
            Source::Mmdebstrap {
                suite,
                variant,
                packages,
            } => serde_json::json!({"mmdebstrap": [suite, variant, packages]}),
            Source::Tarball {
                url: Some(u),
                sha256,
                ..
            } => serde_json::json!({"download": [u, sha256]}),
            Source::File { url, sha256, .. } => serde_json::json!({"download": [url, sha256]}),
            Source::Tarball { .. } | Source::Dir { .. } | Source::Inline { .. } => {
                serde_json::json!("local")
            }
        })
        .collect();
    sha256_bytes(&serde_json::to_vec(&parts).expect("serializable"))
}

/// What differs between two package sets, as `name: old -> new` lines (`(none)` when absent).
pub fn package_changes(locked: &[ResolvedPackage], now: &[ResolvedPackage]) -> Vec<String> {
    let map = |ps: &[ResolvedPackage]| -> BTreeMap<String, (String, String)> {
        ps.iter()
            .map(|p| (p.name.clone(), (p.version.clone(), p.sha256.clone())))
            .collect()
    };
    let (a, b) = (map(locked), map(now));
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for n in names {
        match (a.get(n), b.get(n)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) if x.0 == y.0 => out.push(format!(
                "{n} {}: sha256 {} -> {} (same version, other bytes)",
                x.0,
                &x.1[..12.min(x.1.len())],
                &y.1[..12.min(y.1.len())]
            )),
            (Some(x), Some(y)) => out.push(format!("{n}: {} -> {}", x.0, y.0)),
            (Some(x), None) => out.push(format!("{n}: {} -> (none)", x.0)),
            (None, Some(y)) => out.push(format!("{n}: (none) -> {}", y.0)),
            (None, None) => {}
        }
    }
    out
}

/// How a build treats `recipes/<name>.lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockPolicy {
    /// Fetch exactly the locked set when the lock exists (fail naming what moved); write the
    /// lock when it does not.
    Respect,
    /// Resolve afresh from the archive and rewrite the lock (`p6os lock --update`).
    Update,
    /// Neither read nor write a lock (tests on copies of recipes).
    Ignore,
}

/// The lock to build against: `None` when there is none (or it is ignored); an error when a
/// layer changed since it was written.
pub fn to_use(recipe: &Recipe, policy: LockPolicy) -> Result<Option<LockFile>, LockError> {
    if policy != LockPolicy::Respect {
        return Ok(None);
    }
    let path = path_for(&recipe.file);
    let Some(file) = read(&path)? else {
        return Ok(None);
    };
    let mut stale = Vec::new();
    for layer in recipe
        .layers
        .iter()
        .chain(std::iter::once(&recipe.bootloader))
    {
        if !has_lockable_sources(layer) {
            // The recipe's own files only: nothing from outside to pin.
            continue;
        }
        match file.layers.get(&layer.reference) {
            Some(l) if l.definition == definition_digest(layer) => {}
            Some(_) => stale.push(format!("layer {} changed", layer.reference)),
            None => stale.push(format!("layer {} is not in it", layer.reference)),
        }
    }
    if !stale.is_empty() {
        return Err(LockError::Moved {
            lock: path,
            recipe: recipe.file.display().to_string(),
            what: format!("the lock is out of date: {}", stale.join(", ")),
        });
    }
    Ok(Some(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str, sha: char) -> ResolvedPackage {
        ResolvedPackage {
            name: name.into(),
            version: version.into(),
            sha256: sha.to_string().repeat(64),
        }
    }

    #[test]
    fn render_round_trips_and_reads_well() {
        let mut layers = BTreeMap::new();
        layers.insert(
            "../images/base/debian-bookworm.yaml".to_string(),
            LayerLock {
                definition: "d".repeat(64),
                sources: vec![
                    LockedSource::Mmdebstrap {
                        packages: vec![pkg("base-files", "12.4", 'a'), pkg("libc6", "2.36", 'b')],
                    },
                    LockedSource::Local,
                ],
            },
        );
        layers.insert(
            "../images/kubernetes/k3s.yaml".to_string(),
            LayerLock {
                definition: "e".repeat(64),
                sources: vec![LockedSource::Download {
                    url: "https://example.invalid/k3s".into(),
                    sha256: "f".repeat(64),
                }],
            },
        );
        let lock = LockFile {
            version: LOCK_VERSION,
            layers,
        };
        let text = render(&lock);
        let back: LockFile = serde_json::from_str(&text).unwrap();
        assert_eq!(back, lock);
        insta::assert_snapshot!(text);
        let empty = LockFile {
            version: LOCK_VERSION,
            layers: BTreeMap::new(),
        };
        assert_eq!(
            serde_json::from_str::<LockFile>(&render(&empty)).unwrap(),
            empty
        );
    }

    #[test]
    fn changes_name_what_moved() {
        let locked = [pkg("a", "1", 'a'), pkg("b", "1", 'b'), pkg("c", "1", 'c')];
        let now = [
            pkg("a", "1", 'a'),
            pkg("b", "2", 'b'),
            pkg("c", "1", 'd'),
            pkg("e", "1", 'e'),
        ];
        assert_eq!(
            package_changes(&locked, &now),
            vec![
                "b: 1 -> 2".to_string(),
                "c 1: sha256 cccccccccccc -> dddddddddddd (same version, other bytes)".into(),
                "e: (none) -> 1".into(),
            ]
        );
        assert!(package_changes(&locked, &locked).is_empty());
    }
}
