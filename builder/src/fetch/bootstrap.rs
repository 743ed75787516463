//! `type: mmdebstrap` sources: a Debian system bootstrapped from the host's apt sources, with
//! its maintainer scripts run (users, groups, units), read back as a tree and cached.
//!
//! The pure parts (which host sources serve a suite, the apt pins of a lock, what is removed
//! from the result, the dpkg status) are separate from the one function that runs mmdebstrap.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{io_err, AptIndex, Cache, FetchError, ResolvedPackage};
use crate::recipe::Variant;
use crate::tree::Tree;

/// Bumped whenever the cleanup or the mmdebstrap invocation changes: old cache entries are
/// then not reused.
const RECIPE_VERSION: u32 = 2;

/// What a bootstrap is asked for.
#[derive(Debug, Clone, Serialize)]
pub struct Request<'a> {
    pub suite: &'a str,
    pub variant: Variant,
    pub packages: &'a [String],
    /// The exact package set of a lock file: apt is pinned to it and the result must match.
    pub pins: Option<&'a [ResolvedPackage]>,
}

/// A package as dpkg records it in the bootstrapped system.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// Lines of the host's apt sources (one-line or deb822 files) that serve `suite` or one of
/// its companions (`bookworm-updates`, `bookworm-security`), as one deb822 or one-line text.
/// Other repositories on the host (third-party ones) are left out.
pub fn sources_for_suite(files: &[(PathBuf, String)], suite: &str) -> String {
    let serves = |s: &str| s == suite || s.starts_with(&format!("{suite}-"));
    let mut out = String::new();
    for (path, text) in files {
        let deb822 = path.extension().is_some_and(|e| e == "sources");
        if deb822 {
            for stanza in text.split("\n\n") {
                let enabled = !stanza
                    .lines()
                    .any(|l| l.trim().eq_ignore_ascii_case("enabled: no"));
                let suites = stanza.lines().find_map(|l| {
                    l.strip_prefix("Suites:")
                        .map(|v| v.split_whitespace().any(serves))
                });
                if enabled && suites == Some(true) {
                    let body: Vec<&str> = stanza
                        .lines()
                        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
                        .collect();
                    out.push_str(&body.join("\n"));
                    out.push_str("\n\n");
                }
            }
        } else {
            // One-line style: `deb [options] URI suite components...`.
            let mut lines = Vec::new();
            for line in text.lines() {
                let line = line.trim();
                if !line.starts_with("deb ") {
                    continue;
                }
                let words: Vec<&str> = line.split_whitespace().collect();
                let mut i = 1;
                if words.get(1).is_some_and(|w| w.starts_with('[')) {
                    while i < words.len() && !words[i].ends_with(']') {
                        i += 1;
                    }
                    i += 1;
                }
                if words.get(i + 1).is_some_and(|s| serves(s)) {
                    lines.push(line.to_string());
                }
            }
            if !lines.is_empty() {
                // One-line entries cannot share a file with deb822 stanzas: kept apart below.
                out.push_str(&format!("#one-line\n{}\n\n", lines.join("\n")));
            }
        }
    }
    out
}

/// The host's apt source files, sorted by path.
fn host_source_files() -> Vec<(PathBuf, String)> {
    let mut paths = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
            .collect();
        more.sort();
        paths.extend(more);
    }
    paths
        .into_iter()
        .filter_map(|p| fs::read_to_string(&p).ok().map(|t| (p, t)))
        .collect()
}

/// An apt preferences file that pins every package of a lock to its version.
pub fn pin_preferences(pins: &[ResolvedPackage]) -> String {
    let mut out = String::new();
    for p in pins {
        out.push_str(&format!(
            "Package: {}\nPin: version {}\nPin-Priority: 1001\n\n",
            p.name, p.version
        ));
    }
    out
}

/// Paths removed from a bootstrapped tree: what must be made per device (SSH host keys, the
/// machine id), what apt and dpkg keep for a mutable system (lists, caches, backups), and logs.
const REMOVED: &[&str] = &[
    "etc/machine-id",
    // Copied from the build host by mmdebstrap: its DNS servers and apt sources (which may
    // name internal mirrors or carry credentials) do not belong in an image.
    "etc/resolv.conf",
    "etc/hostname",
    "etc/apt/sources.list",
    "var/lib/dbus/machine-id",
    "etc/apt/preferences.d/p6os-lock.pref",
    "var/cache/ldconfig/aux-cache",
    "var/lib/systemd/random-seed",
    "var/lib/systemd/catalog/database",
    "var/cache/debconf/config.dat-old",
    "var/cache/debconf/templates.dat-old",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/diversions-old",
    "var/lib/dpkg/statoverride-old",
    "etc/passwd-",
    "etc/group-",
    "etc/shadow-",
    "etc/gshadow-",
    "etc/subuid-",
    "etc/subgid-",
];

/// Directories whose contents are removed (the directory itself stays).
const EMPTIED: &[&str] = &[
    "etc/apt/sources.list.d",
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/log/apt",
    "tmp",
    "var/tmp",
];

/// Removes per-device and run-time state from a bootstrapped tree (see [`REMOVED`]); returns
/// how many entries went.
pub fn clean(tree: &mut Tree) -> usize {
    let mut doomed: Vec<String> = Vec::new();
    for (path, _) in tree.iter() {
        let host_key = path
            .strip_prefix("etc/ssh/ssh_host_")
            .is_some_and(|rest| rest.contains("key"));
        let emptied = EMPTIED.iter().any(|d| {
            path.len() > d.len() + 1 && path.starts_with(d) && path.as_bytes()[d.len()] == b'/'
        });
        let log_file = path.starts_with("var/log/")
            && ["dpkg.log", "alternatives.log", "bootstrap.log"]
                .iter()
                .any(|f| path.ends_with(f));
        if host_key || emptied || log_file || REMOVED.contains(&path.as_str()) {
            doomed.push(path.clone());
        }
    }
    for p in &doomed {
        tree.remove(p);
    }
    doomed.len()
}

/// Installed packages from a tree's `var/lib/dpkg/status`, sorted by name.
pub fn dpkg_status(tree: &Tree) -> Vec<InstalledPackage> {
    let Some(text) = tree.file_text("var/lib/dpkg/status") else {
        return Vec::new();
    };
    parse_dpkg_status(&text)
}

pub fn parse_dpkg_status(text: &str) -> Vec<InstalledPackage> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let field = |f: &str| super::debian::control_field(para, f);
        let installed = field("Status").is_some_and(|s| s.ends_with(" installed"));
        if let (true, Some(name), Some(version)) = (installed, field("Package"), field("Version")) {
            out.push(InstalledPackage {
                name,
                version,
                arch: field("Architecture").unwrap_or_default(),
            });
        }
    }
    out.sort();
    out
}

/// What a bootstrap produced: the tree and the installed packages with their archive digests.
#[derive(Debug, Clone)]
pub struct Bootstrapped {
    pub tree: Tree,
    pub packages: Vec<ResolvedPackage>,
}

#[derive(Serialize, Deserialize)]
struct CachedPackages {
    packages: Vec<ResolvedPackage>,
}

/// The cache key of a request: its fields, the host sources used, mmdebstrap's version, and,
/// without pins, the state of apt's lists (an archive update is a new input).
fn cache_key(req: &Request, sources: &str, tool_version: &str) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(req).expect("serializable"));
    h.update(sources.as_bytes());
    h.update(tool_version.as_bytes());
    h.update(RECIPE_VERSION.to_le_bytes());
    if req.pins.is_none() {
        h.update(super::apt_state_key(&[]).unwrap_or_default().as_bytes());
    }
    hex::encode(h.finalize())
}

fn mmdebstrap_version() -> Result<String, FetchError> {
    let out = Command::new("mmdebstrap")
        .arg("--version")
        .output()
        .map_err(|e| FetchError::Bootstrap {
            detail: format!("cannot run mmdebstrap: {e}"),
            hint: "install it: apt-get install --no-install-recommends mmdebstrap".into(),
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn is_root() -> bool {
    rustix_free_euid() == 0
}

/// The effective user id, from /proc (no libc dependency in the builder).
fn rustix_free_euid() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(u32::MAX)
}

/// Bootstraps (or takes from the cache) the system a request describes.
pub fn bootstrap(
    cache: &Cache,
    req: &Request,
    say: &dyn Fn(&str),
) -> Result<Bootstrapped, FetchError> {
    let sources = sources_for_suite(&host_source_files(), req.suite);
    if sources.trim().is_empty() {
        return Err(FetchError::Bootstrap {
            detail: format!(
                "the host's apt sources have no entry for suite `{}`",
                req.suite
            ),
            hint: "build on a Debian host whose /etc/apt/sources.list(.d) serves that suite".into(),
        });
    }
    let version = mmdebstrap_version()?;
    let key = cache_key(req, &sources, &version);
    let dir = cache.root.join("layers");
    let tree_file = dir.join(format!("{key}.tar.zst"));
    let packages_file = dir.join(format!("{key}.packages.json"));
    if let (Ok(bytes), Ok(list)) = (fs::read(&tree_file), fs::read(&packages_file)) {
        if let (Ok(tree), Ok(list)) = (
            zstd::stream::read::Decoder::new(bytes.as_slice()).and_then(Tree::from_tar),
            serde_json::from_slice::<CachedPackages>(&list),
        ) {
            say(&format!(
                "mmdebstrap {}: cached ({} packages)",
                req.suite,
                list.packages.len()
            ));
            cache.touch(&tree_file);
            cache.touch(&packages_file);
            return Ok(Bootstrapped {
                tree,
                packages: list.packages,
            });
        }
    }
    if let Some(pins) = req.pins {
        // Not cached: every locked version must still be in the archive, or apt would
        // quietly take another one.
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
    let built = run_mmdebstrap(req, &sources, say)?;
    // Also under the key the lock written from this result will give: the next build, pinned
    // to exactly these packages, reuses it.
    let pinned_key = cache_key(
        &Request {
            pins: Some(&built.packages),
            ..req.clone()
        },
        &sources,
        &version,
    );
    let store = |key: &str| -> std::io::Result<()> {
        let tree_file = dir.join(format!("{key}.tar.zst"));
        let packages_file = dir.join(format!("{key}.packages.json"));
        fs::create_dir_all(&dir)?;
        let tmp = tempfile::NamedTempFile::with_suffix_in(".tmp", &dir)?;
        let mut enc = zstd::stream::write::Encoder::new(tmp.as_file(), 3)?;
        enc.multithread(crate::fetch::threads())?;
        built.tree.write_tar(&mut enc)?;
        enc.finish()?.sync_all()?;
        fs::write(
            &packages_file,
            serde_json::to_vec_pretty(&CachedPackages {
                packages: built.packages.clone(),
            })
            .expect("serializable"),
        )?;
        tmp.persist(&tree_file).map(|_| ()).map_err(|e| e.error)
    };
    let mut keys = vec![key.as_str()];
    if req.pins.is_none() {
        keys.push(&pinned_key);
    }
    for k in keys {
        if let Err(e) = store(k) {
            say(&format!("warning: cannot cache the bootstrapped tree: {e}"));
        }
    }
    Ok(built)
}

fn run_mmdebstrap(
    req: &Request,
    sources: &str,
    say: &dyn Fn(&str),
) -> Result<Bootstrapped, FetchError> {
    let work = tempfile::tempdir().map_err(io_err(Path::new("temporary directory")))?;
    // deb822 stanzas and one-line entries go to separate files (mmdebstrap pastes each).
    let mut mirror_files = Vec::new();
    for (i, chunk) in sources
        .split("\n\n")
        .filter(|c| !c.trim().is_empty())
        .enumerate()
    {
        let (name, body) = match chunk.strip_prefix("#one-line\n") {
            Some(lines) => (format!("{i}.list"), lines.to_string()),
            None => (format!("{i}.sources"), chunk.to_string()),
        };
        let path = work.path().join(name);
        fs::write(&path, body + "\n").map_err(io_err(&path))?;
        mirror_files.push(path);
    }
    let out = work.path().join("root.tar");
    let log = work.path().join("mmdebstrap.log");
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg(if is_root() {
        "--mode=root"
    } else {
        "--mode=unshare"
    })
    .arg(format!("--variant={}", req.variant.as_str()))
    .arg("--format=tar")
    .arg(format!("--logfile={}", log.display()));
    if !req.packages.is_empty() {
        cmd.arg(format!("--include={}", req.packages.join(",")));
    }
    if let Some(pins) = req.pins {
        let prefs = work.path().join("p6os-lock.pref");
        fs::write(&prefs, pin_preferences(pins)).map_err(io_err(&prefs))?;
        cmd.arg(format!(
            "--setup-hook=mkdir -p \"$1/etc/apt/preferences.d\" && cp '{}' \"$1/etc/apt/preferences.d/p6os-lock.pref\"",
            prefs.display()
        ));
    }
    cmd.arg(req.suite).arg(&out).args(&mirror_files);
    // Reproducible output: mmdebstrap clamps times to this and avoids other variation.
    cmd.env("SOURCE_DATE_EPOCH", "0").env("LC_ALL", "C.UTF-8");
    say(&format!(
        "mmdebstrap {} ({}, {} extra packages): this takes a minute or two",
        req.suite,
        req.variant.as_str(),
        req.packages.len()
    ));
    let status = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| FetchError::Bootstrap {
            detail: format!("cannot run mmdebstrap: {e}"),
            hint: "install it: apt-get install --no-install-recommends mmdebstrap".into(),
        })?;
    if !status.success() {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(FetchError::Bootstrap {
            detail: format!("mmdebstrap failed ({status}):\n    {}", tail.join("\n    ")),
            hint: if is_root() {
                "check the package names and the host's apt sources".into()
            } else {
                "mmdebstrap needs root (or unprivileged user namespaces for --mode=unshare): run the build as root".into()
            },
        });
    }
    let file = fs::File::open(&out).map_err(io_err(&out))?;
    let mut tree =
        Tree::from_tar(std::io::BufReader::new(file)).map_err(|e| FetchError::Format {
            what: out.display().to_string(),
            detail: e.to_string(),
        })?;
    clean(&mut tree);
    let installed = dpkg_status(&tree);
    let packages = with_digests(&installed)?;
    say(&format!(
        "mmdebstrap {}: {} packages, {} MiB",
        req.suite,
        packages.len(),
        tree.content_bytes() >> 20
    ));
    Ok(Bootstrapped { tree, packages })
}

/// The archive sha256 of every installed package, from the host's apt (the same sources).
fn with_digests(installed: &[InstalledPackage]) -> Result<Vec<ResolvedPackage>, FetchError> {
    let specs: Vec<String> = installed
        .iter()
        .map(|p| format!("{}={}", p.name, p.version))
        .collect();
    let refs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let index = AptIndex::resolve(&refs);
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for spec in &specs {
        match index.0.get(spec) {
            Some(p) => out.push(p.clone()),
            None => missing.push(spec.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(FetchError::Bootstrap {
            detail: format!(
                "the host's apt does not know these installed packages: {}",
                missing.join(", ")
            ),
            hint: "run `apt-get update` so the host's lists match the archive".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Entry;

    #[test]
    fn sources_keep_only_the_suite() {
        let files = vec![
            (
                PathBuf::from("/etc/apt/sources.list.d/debian.sources"),
                "Types: deb\n# a comment\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\nComponents: main\n\nTypes: deb\nURIs: http://mirror.invalid/debian\nSuites: trixie\nComponents: main\n".to_string(),
            ),
            (
                PathBuf::from("/etc/apt/sources.list.d/other.list"),
                "deb [signed-by=/k.gpg] https://vendor.invalid/apt nodistro main\ndeb http://mirror.invalid/debian bookworm-backports main\n# deb http://x bookworm main\n".to_string(),
            ),
        ];
        insta::assert_snapshot!(sources_for_suite(&files, "bookworm"), @r"
        Types: deb
        URIs: http://mirror.invalid/debian
        Suites: bookworm bookworm-updates
        Components: main

        Types: deb
        URIs: http://mirror.invalid/debian-security
        Suites: bookworm-security
        Components: main

        #one-line
        deb http://mirror.invalid/debian bookworm-backports main
        ");
        assert_eq!(sources_for_suite(&files, "bullseye"), "");
    }

    #[test]
    fn dpkg_status_lists_installed_packages_sorted() {
        let text = "Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:1.2.13.dfsg-1\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u5\nDescription: x\n y\n";
        let got = parse_dpkg_status(text);
        assert_eq!(
            got,
            vec![
                InstalledPackage {
                    name: "base-files".into(),
                    version: "12.4+deb12u5".into(),
                    arch: "amd64".into()
                },
                InstalledPackage {
                    name: "zlib1g".into(),
                    version: "1:1.2.13.dfsg-1".into(),
                    arch: "amd64".into()
                },
            ]
        );
    }

    #[test]
    fn clean_removes_per_device_state_only() {
        let mut t = Tree::new();
        for p in [
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_ed25519_key.pub",
            "etc/ssh/sshd_config",
            "etc/machine-id",
            "etc/passwd",
            "etc/passwd-",
            "var/lib/apt/lists/x_Packages",
            "var/cache/apt/pkgcache.bin",
            "var/log/dpkg.log",
            "var/log/lastlog",
        ] {
            t.insert(p, Entry::file(b"x".to_vec(), 0o644));
        }
        t.insert("var/lib/apt/lists", Entry::dir(0o755));
        assert_eq!(clean(&mut t), 7);
        let left: Vec<&String> = t.iter().map(|(p, _)| p).collect();
        assert!(left.iter().any(|p| *p == "etc/ssh/sshd_config"));
        assert!(left.iter().any(|p| *p == "var/lib/apt/lists"));
        assert!(left.iter().any(|p| *p == "var/log/lastlog"));
        assert!(!left.iter().any(|p| p.contains("ssh_host")));
    }

    #[test]
    fn pins_name_every_package() {
        let pins = [ResolvedPackage {
            name: "libc6".into(),
            version: "2.36-9+deb12u10".into(),
            sha256: "0".repeat(64),
        }];
        assert_eq!(
            pin_preferences(&pins),
            "Package: libc6\nPin: version 2.36-9+deb12u10\nPin-Priority: 1001\n\n"
        );
    }

    /// A lock whose versions the archive no longer has stops the build before mmdebstrap
    /// runs, naming them (on a Debian host with mmdebstrap; skipped elsewhere).
    #[test]
    fn locked_versions_gone_from_the_archive_are_named() {
        if mmdebstrap_version().is_err()
            || sources_for_suite(&host_source_files(), "bookworm").is_empty()
        {
            eprintln!("skipping: needs mmdebstrap and the host's apt sources for bookworm");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let cache = Cache {
            root: d.path().to_path_buf(),
        };
        let pins = [ResolvedPackage {
            name: "base-files".into(),
            version: "0.0-gone".into(),
            sha256: "0".repeat(64),
        }];
        let req = Request {
            suite: "bookworm",
            variant: Variant::Minbase,
            packages: &[],
            pins: Some(&pins),
        };
        let err = bootstrap(&cache, &req, &|_| {}).unwrap_err().to_string();
        assert!(
            err.contains(
                "1 locked package(s) no longer in the host's apt sources: base-files=0.0-gone"
            ),
            "{err}"
        );
        assert!(!d.path().join("layers").exists(), "nothing cached");
    }
}
