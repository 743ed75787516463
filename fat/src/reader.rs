//! An existing volume: [`FatVolume`] opens it and reads directories and files.

use std::collections::BTreeSet;
use std::io::{Read, Seek};

use super::names::{fold, lfn_checksum, lfn_units, short_display};
use super::{
    entry_cluster, le32, read_at, split_path, DirEntry, FatError, Geometry, ATTR_DIRECTORY,
    ATTR_LFN, ATTR_VOLUME_ID, DIR_ENTRY_SIZE, FAT_BAD, FAT_EOC_MIN, FAT_MASK, MAX_DIR_ENTRIES,
};

/// A FAT32 volume inside a region of `D`, opened without mounting.
///
/// The active FAT is kept in memory; every modifying call writes the changed FAT sectors to all
/// FAT copies and updates the FSInfo free count and next-free hint before it returns. New
/// directory entries get the same fixed timestamps as [`format`](super::format) uses, and
/// clusters are allocated first-fit, so modifications are deterministic too.
pub struct FatVolume<D> {
    pub(super) dev: D,
    pub(super) offset: u64,
    pub(super) geo: Geometry,
    /// The active FAT, one entry per cluster number, in whole sectors.
    pub(super) fat: Vec<u32>,
    /// FAT sectors (relative to the FAT's start) changed since the last flush.
    pub(super) dirty: BTreeSet<u32>,
}

/// A parsed directory entry and where it sits in its directory.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// Long name, or the short name (with NT lower-case flags applied) if it has none.
    pub(super) name: String,
    pub(super) short: [u8; 11],
    pub(super) attr: u8,
    pub(super) cluster: u32,
    pub(super) size: u32,
    /// First slot of the entry (its first LFN entry, or the short entry).
    pub(super) first_slot: usize,
    pub(super) short_slot: usize,
}

impl Entry {
    pub(super) fn is_dir(&self) -> bool {
        self.attr & ATTR_DIRECTORY != 0
    }

    pub(super) fn is_dot(&self) -> bool {
        &self.short == b".          " || &self.short == b"..         "
    }
}

/// A directory's clusters and contents, loaded whole.
pub(super) struct Dir {
    pub(super) cluster: u32,
    pub(super) chain: Vec<u32>,
    pub(super) data: Vec<u8>,
}

impl Dir {
    pub(super) fn slot(&self, i: usize) -> &[u8] {
        &self.data[i * DIR_ENTRY_SIZE..(i + 1) * DIR_ENTRY_SIZE]
    }

    pub(super) fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.data[i * DIR_ENTRY_SIZE..(i + 1) * DIR_ENTRY_SIZE]
    }

    pub(super) fn delete(&mut self, e: &Entry) {
        for i in e.first_slot..=e.short_slot {
            self.slot_mut(i)[0] = 0xE5;
        }
    }
}

/// Outcome of following a path.
pub(super) enum Found {
    Root,
    Entry { parent: u32, entry: Entry },
}

pub(super) fn join(comps: &[&str]) -> String {
    format!("/{}", comps.join("/"))
}

/// Parses the entries of a directory (including `.` and `..`, excluding deleted entries and
/// volume labels). Orphaned or mismatching LFN entries are ignored.
pub(super) fn parse_dir(dir: &Dir) -> Vec<Entry> {
    struct Lfn {
        checksum: u8,
        remaining: u8,
        parts: Vec<[u16; 13]>,
        first_slot: usize,
    }
    let mut out = Vec::new();
    let mut lfn: Option<Lfn> = None;
    for i in 0..dir.data.len() / DIR_ENTRY_SIZE {
        let e = dir.slot(i);
        match e[0] {
            0x00 => break,
            0xE5 => {
                lfn = None;
                continue;
            }
            _ => {}
        }
        if e[11] & 0x3F == ATTR_LFN {
            let ord = e[0];
            let seq = ord & 0x1F;
            if ord & 0x40 != 0 {
                lfn = (1..=20).contains(&seq).then(|| Lfn {
                    checksum: e[13],
                    remaining: seq - 1,
                    parts: vec![lfn_units(e)],
                    first_slot: i,
                });
            } else {
                lfn = lfn.take().filter(|l| {
                    l.remaining > 0 && seq == l.remaining && ord & 0xE0 == 0 && e[13] == l.checksum
                });
                if let Some(l) = &mut lfn {
                    l.parts.push(lfn_units(e));
                    l.remaining -= 1;
                }
            }
            continue;
        }
        if e[11] & ATTR_VOLUME_ID != 0 {
            lfn = None;
            continue;
        }
        let short: [u8; 11] = e[..11].try_into().expect("11 bytes");
        let long = lfn
            .take()
            .filter(|l| l.remaining == 0 && l.checksum == lfn_checksum(&short));
        let (name, first_slot) = match long {
            Some(l) => {
                let units: Vec<u16> = l
                    .parts
                    .iter()
                    .rev()
                    .flatten()
                    .copied()
                    .take_while(|&u| u != 0)
                    .collect();
                (String::from_utf16_lossy(&units), l.first_slot)
            }
            None => (short_display(&short, e[12]), i),
        };
        out.push(Entry {
            name,
            short,
            attr: e[11],
            cluster: entry_cluster(e),
            size: le32(e, 28),
            first_slot,
            short_slot: i,
        });
    }
    out
}

/// Case-insensitive lookup by long name or short alias.
pub(super) fn find<'e>(entries: &'e [Entry], name: &str) -> Option<&'e Entry> {
    let folded = fold(name);
    entries
        .iter()
        .filter(|e| !e.is_dot())
        .find(|e| fold(&e.name) == folded || short_display(&e.short, 0) == folded)
}

impl<D: Read + Seek> FatVolume<D> {
    /// Opens the FAT32 volume in the `size` bytes at byte `offset` of `dev`, validating its boot
    /// sector and loading its active FAT.
    pub fn open(mut dev: D, offset: u64, size: u64) -> Result<Self, FatError> {
        let mut bs = [0u8; 512];
        read_at(&mut dev, offset, &mut bs, "boot sector")?;
        let geo = Geometry::from_boot_sector(&bs, offset, size)?;
        // Only the sectors covering every cluster's entry (the FAT may be larger).
        let bps = u64::from(geo.bytes_per_sector);
        let needed = (u64::from(geo.cluster_count) + 2) * 4;
        let mut raw = vec![0u8; needed.div_ceil(bps).saturating_mul(bps) as usize];
        read_at(
            &mut dev,
            offset + geo.fat_pos(geo.active_fat),
            &mut raw,
            "file allocation table",
        )?;
        let fat = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(FatVolume {
            dev,
            offset,
            geo,
            fat,
            dirty: BTreeSet::new(),
        })
    }

    /// Lists a directory (without `.` and `..`), in on-disk order.
    pub fn read_dir(&mut self, path: &str) -> Result<Vec<DirEntry>, FatError> {
        let cluster = self.dir_cluster(&split_path(path)?)?;
        let dir = self.load_dir(cluster)?;
        Ok(parse_dir(&dir)
            .into_iter()
            .filter(|e| !e.is_dot())
            .map(|e| DirEntry {
                short_name: short_display(&e.short, 0),
                is_dir: e.is_dir(),
                size: if e.is_dir() { 0 } else { e.size },
                name: e.name,
            })
            .collect())
    }

    /// Reads a whole file.
    pub fn read_file(&mut self, path: &str) -> Result<Vec<u8>, FatError> {
        let comps = split_path(path)?;
        let entry = match self.resolve(&comps)? {
            Found::Entry { entry, .. } if !entry.is_dir() => entry,
            _ => return Err(FatError::IsADirectory { path: join(&comps) }),
        };
        let size = u64::from(entry.size);
        if size == 0 {
            return Ok(Vec::new());
        }
        let count = self.geo.clusters_for(size) as usize;
        let chain = self.chain(entry.cluster, Some(count))?;
        if chain.len() < count {
            return Err(FatError::Corrupt(format!(
                "{}: cluster chain has {} clusters, size {size} needs {count}",
                join(&comps),
                chain.len()
            )));
        }
        let mut data = self.read_clusters(&chain, "file data")?;
        data.truncate(size as usize);
        Ok(data)
    }

    /// Whether a file or directory exists at `path` (`/` always does).
    pub fn exists(&mut self, path: &str) -> Result<bool, FatError> {
        match self.resolve(&split_path(path)?) {
            Ok(_) => Ok(true),
            Err(FatError::NotFound { .. } | FatError::NotADirectory { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Free space in bytes.
    pub fn free_bytes(&self) -> u64 {
        self.free_clusters() * self.geo.cluster_bytes()
    }

    /// Gives back the underlying device.
    pub fn into_inner(self) -> D {
        self.dev
    }

    pub(super) fn free_clusters(&self) -> u64 {
        self.fat[2..self.geo.cluster_count as usize + 2]
            .iter()
            .filter(|&&v| v & FAT_MASK == 0)
            .count() as u64
    }

    /// The cluster after `c`, or `None` at the end of the chain.
    pub(super) fn next_cluster(&self, c: u32) -> Result<Option<u32>, FatError> {
        let v = self.fat[c as usize] & FAT_MASK;
        if v >= FAT_EOC_MIN {
            return Ok(None);
        }
        if v == FAT_BAD || !self.geo.is_data_cluster(v) {
            return Err(FatError::Corrupt(format!(
                "cluster {c} links to invalid cluster {v:#x}"
            )));
        }
        Ok(Some(v))
    }

    /// Follows a cluster chain from `start` (at most `limit` clusters).
    pub(super) fn chain(&self, start: u32, limit: Option<usize>) -> Result<Vec<u32>, FatError> {
        if !self.geo.is_data_cluster(start) {
            return Err(FatError::Corrupt(format!(
                "chain starts at invalid cluster {start:#x}"
            )));
        }
        let limit = limit.unwrap_or(usize::MAX);
        let mut chain = vec![start];
        let mut c = start;
        while chain.len() < limit {
            match self.next_cluster(c)? {
                Some(n) => c = n,
                None => break,
            }
            if chain.len() > self.geo.cluster_count as usize {
                return Err(FatError::Corrupt(format!(
                    "cluster chain starting at {start} loops"
                )));
            }
            chain.push(c);
        }
        Ok(chain)
    }

    pub(super) fn read_clusters(&mut self, chain: &[u32], what: &str) -> Result<Vec<u8>, FatError> {
        let cs = self.geo.cluster_bytes() as usize;
        let mut data = vec![0u8; chain.len() * cs];
        for (start, len) in runs(chain) {
            let pos = self.offset + self.geo.cluster_pos(chain[start]);
            read_at(
                &mut self.dev,
                pos,
                &mut data[start * cs..(start + len) * cs],
                what,
            )?;
        }
        Ok(data)
    }

    pub(super) fn load_dir(&mut self, cluster: u32) -> Result<Dir, FatError> {
        let max_clusters =
            (MAX_DIR_ENTRIES * DIR_ENTRY_SIZE).div_ceil(self.geo.cluster_bytes() as usize);
        let chain = self.chain(cluster, Some(max_clusters + 1))?;
        if chain.len() > max_clusters {
            return Err(FatError::Corrupt(format!(
                "directory at cluster {cluster} is larger than {MAX_DIR_ENTRIES} entries"
            )));
        }
        let mut data = self.read_clusters(&chain, "directory")?;
        // Everything after the end marker is free; make sure it reads as such.
        if let Some(end) = data.chunks(DIR_ENTRY_SIZE).position(|e| e[0] == 0) {
            data[end * DIR_ENTRY_SIZE..].fill(0);
        }
        Ok(Dir {
            cluster,
            chain,
            data,
        })
    }

    /// Follows `comps` from the root.
    pub(super) fn resolve(&mut self, comps: &[&str]) -> Result<Found, FatError> {
        let mut found = Found::Root;
        let mut cur = self.geo.root_cluster;
        for (i, comp) in comps.iter().enumerate() {
            if let Found::Entry { entry, .. } = &found {
                if !entry.is_dir() {
                    return Err(FatError::NotADirectory {
                        path: join(&comps[..i]),
                    });
                }
                cur = self.subdir_cluster(entry)?;
            }
            let dir = self.load_dir(cur)?;
            let entries = parse_dir(&dir);
            let entry = find(&entries, comp).ok_or_else(|| FatError::NotFound {
                path: join(&comps[..=i]),
            })?;
            found = Found::Entry {
                parent: cur,
                entry: entry.clone(),
            };
        }
        Ok(found)
    }

    pub(super) fn subdir_cluster(&self, entry: &Entry) -> Result<u32, FatError> {
        if !self.geo.is_data_cluster(entry.cluster) {
            return Err(FatError::Corrupt(format!(
                "directory {:?} starts at invalid cluster {:#x}",
                entry.name, entry.cluster
            )));
        }
        Ok(entry.cluster)
    }

    /// Cluster of the directory at `comps`.
    pub(super) fn dir_cluster(&mut self, comps: &[&str]) -> Result<u32, FatError> {
        match self.resolve(comps)? {
            Found::Root => Ok(self.geo.root_cluster),
            Found::Entry { entry, .. } if entry.is_dir() => self.subdir_cluster(&entry),
            Found::Entry { .. } => Err(FatError::NotADirectory { path: join(comps) }),
        }
    }

    /// How many leading `comps` exist as directories, and the cluster of the last of them.
    pub(super) fn existing_dirs(&mut self, comps: &[&str]) -> Result<(usize, u32), FatError> {
        let mut cur = self.geo.root_cluster;
        for (i, comp) in comps.iter().enumerate() {
            let dir = self.load_dir(cur)?;
            let entries = parse_dir(&dir);
            match find(&entries, comp) {
                None => return Ok((i, cur)),
                Some(e) if e.is_dir() => cur = self.subdir_cluster(e)?,
                Some(_) => {
                    return Err(FatError::NotADirectory {
                        path: join(&comps[..=i]),
                    })
                }
            }
        }
        Ok((comps.len(), cur))
    }
}

/// Runs of consecutive clusters in a chain, as (index in chain, length).
pub(super) fn runs(chain: &[u32]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, &c) in chain.iter().enumerate() {
        match out.last_mut() {
            Some((start, len)) if chain[*start] + *len as u32 == c => *len += 1,
            _ => out.push((i, 1)),
        }
    }
    out
}
