//! `p6os cache ls|gc`: what the download and layer cache holds, and removing what was not
//! used for a while. Entries are content-addressed (by sha256 of their bytes or of their
//! inputs), so removing any of them only means fetching or building it again.
//!
//! Layout under the cache root: `blobs/<sha256>` (downloads: .debs, tarballs, files),
//! `trees/<sha256>.tar.zst` (unpacked .debs), `layers/<key>.tar.zst` and
//! `layers/<key>.packages.json` (bootstrapped bases), `apt/<key>.json` (apt's answers).
//! A hit refreshes an entry's modification time, which is its "last used" time.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::fetch::Cache;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheEntry {
    /// `blob`, `deb-tree`, `layer` or `apt`.
    pub kind: &'static str,
    /// Path relative to the cache root.
    pub path: String,
    pub size: u64,
    /// Seconds since the entry was last used.
    pub unused_secs: u64,
}

const KINDS: [(&str, &str); 4] = [
    ("blobs", "blob"),
    ("trees", "deb-tree"),
    ("layers", "layer"),
    ("apt", "apt"),
];

/// Every entry, sorted by kind then path.
pub fn list(cache: &Cache) -> std::io::Result<Vec<CacheEntry>> {
    let now = SystemTime::now();
    let mut out = Vec::new();
    for (dir, kind) in KINDS {
        let d = cache.root.join(dir);
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut paths: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let Ok(m) = fs::metadata(&p) else { continue };
            if !m.is_file() {
                continue;
            }
            let unused = m
                .modified()
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default();
            out.push(CacheEntry {
                kind,
                path: rel(&cache.root, &p),
                size: m.len(),
                unused_secs: unused.as_secs(),
            });
        }
    }
    Ok(out)
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// A table of the entries and a total line.
pub fn render(cache: &Cache, entries: &[CacheEntry]) -> String {
    let mut out = format!("{:<9} {:>10} {:>9}  PATH\n", "KIND", "SIZE", "UNUSED");
    for e in entries {
        out.push_str(&format!(
            "{:<9} {:>10} {:>9}  {}\n",
            e.kind,
            human(e.size),
            age(e.unused_secs),
            e.path
        ));
    }
    let total: u64 = entries.iter().map(|e| e.size).sum();
    out.push_str(&format!(
        "{} entries, {} in {}\n",
        entries.len(),
        human(total),
        cache.root.display()
    ));
    out
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn age(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Removes entries unused for at least `older_than` (zero: everything); returns how many and
/// their bytes. Temporary files of interrupted writes go too.
pub fn gc(cache: &Cache, older_than: Duration) -> std::io::Result<(usize, u64)> {
    let mut removed = (0, 0);
    for e in list(cache)? {
        // Temporary files of writes that died; a day old, so a build running now keeps its own.
        let abandoned = e.path.ends_with(".tmp") && e.unused_secs >= 86_400;
        let stale = e.unused_secs >= older_than.as_secs() || abandoned;
        if stale {
            fs::remove_file(cache.root.join(&e.path))?;
            removed.0 += 1;
            removed.1 += e.size;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_and_gc_by_last_use() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache {
            root: d.path().to_path_buf(),
        };
        for (dir, name) in [("blobs", "aa"), ("layers", "k.tar.zst"), ("apt", "q.json")] {
            fs::create_dir_all(d.path().join(dir)).unwrap();
            fs::write(d.path().join(dir).join(name), b"12345").unwrap();
        }
        // The blob was last used 40 days ago.
        let old = SystemTime::now() - Duration::from_secs(40 * 86_400);
        fs::File::options()
            .append(true)
            .open(d.path().join("blobs/aa"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let entries = list(&cache).unwrap();
        let kinds: Vec<&str> = entries.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["blob", "layer", "apt"]);
        assert!(render(&cache, &entries).contains("3 entries, 15 B"));
        // A hit makes it recent again.
        cache.touch(&d.path().join("layers/k.tar.zst"));
        assert_eq!(
            gc(&cache, Duration::from_secs(30 * 86_400)).unwrap(),
            (1, 5)
        );
        assert_eq!(list(&cache).unwrap().len(), 2);
        assert_eq!(gc(&cache, Duration::ZERO).unwrap(), (2, 10));
        assert!(list(&cache).unwrap().is_empty());
    }
}
