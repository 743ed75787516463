//! Modifying an existing volume: create, replace, remove and rename files.

use std::collections::HashSet;
use std::io::{Read, Seek, Write};

use super::names::{lfn_entries, plain_short_name, short_name_for};
use super::reader::{find, join, parse_dir, runs, Dir, Found};
use super::{
    dot_entries, fsinfo_values, io_err, le32, put32, read_at, set_entry_cluster, short_entry,
    split_path, write_at, FatError, FatVolume, ATTR_ARCHIVE, ATTR_DIRECTORY, DIR_ENTRY_SIZE,
    FAT_EOC, FAT_MASK, FSINFO_LEAD_SIG, FSINFO_STRUCT_SIG, MAX_DIR_ENTRIES,
};

/// Most directory slots one name can take: 20 LFN entries (255 characters) and the short entry.
const MAX_SLOTS_PER_NAME: usize = 21;

impl<D: Read + Write + Seek> FatVolume<D> {
    /// Creates or replaces a file, creating missing parent directories. A replaced file keeps its
    /// directory entry (and name); its old clusters are freed before the new ones are allocated.
    pub fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), FatError> {
        let comps = split_path(path)?;
        let result = self.write_file_inner(&comps, data);
        self.finish(result)
    }

    /// Removes a file (not a directory).
    pub fn remove_file(&mut self, path: &str) -> Result<(), FatError> {
        let comps = split_path(path)?;
        let result = self.remove_file_inner(&comps);
        self.finish(result)
    }

    /// Renames or moves a file or directory. An existing file at `to` is replaced when `from` is
    /// a file too; an existing directory at `to` is an error.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), FatError> {
        let fc = split_path(from)?;
        let tc = split_path(to)?;
        let result = self.rename_inner(&fc, &tc);
        self.finish(result)
    }

    /// Creates a directory and any missing parents (like `mkdir -p`).
    pub fn create_dir(&mut self, path: &str) -> Result<(), FatError> {
        let comps = split_path(path)?;
        let result = self.create_dir_inner(&comps);
        self.finish(result)
    }

    fn create_dir_inner(&mut self, comps: &[&str]) -> Result<(), FatError> {
        let (existing, _) = self.existing_dirs(comps)?;
        self.check_space(0, comps.len() - existing, false, 0)?;
        self.ensure_dirs(comps).map(|_| ())
    }

    fn write_file_inner(&mut self, comps: &[&str], data: &[u8]) -> Result<(), FatError> {
        let Some((name, parents)) = comps.split_last() else {
            return Err(FatError::IsADirectory { path: "/".into() });
        };
        if data.len() as u64 > u64::from(u32::MAX) {
            return Err(FatError::FileTooLarge {
                path: join(comps),
                size: data.len() as u64,
            });
        }
        // Check for space before changing anything.
        let (existing, cur) = self.existing_dirs(parents)?;
        let mut old = None;
        if existing == parents.len() {
            let dir = self.load_dir(cur)?;
            old = find(&parse_dir(&dir), name).cloned();
        }
        let reclaimed = match &old {
            Some(e) if e.is_dir() => return Err(FatError::IsADirectory { path: join(comps) }),
            Some(e) if e.cluster != 0 => self.chain(e.cluster, None)?.len() as u64,
            _ => 0,
        };
        let data_clusters = self.geo.clusters_for(data.len() as u64);
        self.check_space(
            data_clusters,
            parents.len() - existing,
            old.is_none(),
            reclaimed,
        )?;

        let parent = self.ensure_dirs(parents)?;
        let mut dir = self.load_dir(parent)?;
        let existing_entry = find(&parse_dir(&dir), name).cloned();
        match existing_entry {
            Some(e) => {
                if e.cluster != 0 {
                    self.free_chain(e.cluster)?;
                }
                let first = self.store_data(data)?;
                let slot = dir.slot_mut(e.short_slot);
                set_entry_cluster(slot, first);
                put32(slot, 28, data.len() as u32);
            }
            None => {
                let first = self.store_data(data)?;
                let template = short_entry(&[b' '; 11], ATTR_ARCHIVE, first, data.len() as u32);
                self.add_entry(&mut dir, &join(parents), name, &template)?;
            }
        }
        self.store_dir(&dir)
    }

    fn remove_file_inner(&mut self, comps: &[&str]) -> Result<(), FatError> {
        let (parent, entry) = match self.resolve(comps)? {
            Found::Entry { parent, entry } if !entry.is_dir() => (parent, entry),
            _ => return Err(FatError::IsADirectory { path: join(comps) }),
        };
        let mut dir = self.load_dir(parent)?;
        dir.delete(&entry);
        if entry.cluster != 0 {
            self.free_chain(entry.cluster)?;
        }
        self.store_dir(&dir)
    }

    fn rename_inner(&mut self, fc: &[&str], tc: &[&str]) -> Result<(), FatError> {
        let bad = |reason: &str| FatError::InvalidRename {
            from: join(fc),
            to: join(tc),
            reason: reason.to_string(),
        };
        let (Some((fname, fparents)), Some((tname, tparents))) = (fc.split_last(), tc.split_last())
        else {
            return Err(bad("the root directory cannot be renamed"));
        };
        let fparent = self.dir_cluster(fparents)?;
        let tparent = self.dir_cluster(tparents)?;
        let mut fdir = self.load_dir(fparent)?;
        let src = find(&parse_dir(&fdir), fname)
            .cloned()
            .ok_or_else(|| FatError::NotFound { path: join(fc) })?;
        let same_dir = fparent == tparent;
        if src.is_dir() && !same_dir {
            // Refuse to move a directory below itself: walk up from the target via `..`.
            let mut cur = tparent;
            let mut depth = 0;
            while cur != self.geo.root_cluster {
                if cur == src.cluster {
                    return Err(bad("a directory cannot be moved into itself"));
                }
                depth += 1;
                if depth > 4096 {
                    return Err(FatError::Corrupt(format!(
                        "'..' entries loop above cluster {tparent}"
                    )));
                }
                let dir = self.load_dir(cur)?;
                cur = match parse_dir(&dir).iter().find(|e| &e.short == b"..         ") {
                    Some(e) if e.cluster != 0 => e.cluster,
                    _ => self.geo.root_cluster,
                };
            }
        }
        let mut tdir = if same_dir {
            None
        } else {
            Some(self.load_dir(tparent)?)
        };
        let target = find(&parse_dir(tdir.as_ref().unwrap_or(&fdir)), tname).cloned();
        self.check_space(0, 0, true, 0)?;
        if let Some(t) = target {
            if same_dir && t.short_slot == src.short_slot {
                if t.name == *tname {
                    return Ok(());
                }
                // Only the case changes: re-create the entry below.
            } else if t.is_dir() || src.is_dir() {
                return Err(FatError::AlreadyExists { path: join(tc) });
            } else {
                tdir.as_mut().unwrap_or(&mut fdir).delete(&t);
                if t.cluster != 0 {
                    self.free_chain(t.cluster)?;
                }
            }
        }

        let mut template: [u8; 32] = fdir.slot(src.short_slot).try_into().expect("32 bytes");
        template[12] = 0; // NT case flags belong to the old short name
        fdir.delete(&src);
        match tdir.as_mut() {
            None => self.add_entry(&mut fdir, &join(tparents), tname, &template)?,
            Some(tdir) => {
                self.add_entry(tdir, &join(tparents), tname, &template)?;
                self.store_dir(tdir)?;
            }
        }
        self.store_dir(&fdir)?;
        if src.is_dir() && !same_dir {
            // Point the moved directory's `..` at its new parent (0 for the root).
            let dotdot_parent = if tparent == self.geo.root_cluster {
                0
            } else {
                tparent
            };
            let pos = self.offset + self.geo.cluster_pos(src.cluster) + DIR_ENTRY_SIZE as u64;
            let mut e = [0u8; 32];
            read_at(&mut self.dev, pos, &mut e, "directory entry")?;
            if &e[..11] == b"..         " {
                set_entry_cluster(&mut e, dotdot_parent);
                write_at(&mut self.dev, pos, &e, "directory entry")?;
            }
        }
        Ok(())
    }

    /// Fails with `NoSpace` unless `data` clusters, `new_dirs` new directories and possibly one
    /// new entry (`new_entry`) fit, counting `reclaimed` clusters that will be freed first.
    /// Conservative: assumes every directory touched has to grow.
    fn check_space(
        &self,
        data: u64,
        new_dirs: usize,
        new_entry: bool,
        reclaimed: u64,
    ) -> Result<(), FatError> {
        let growth = self
            .geo
            .clusters_for((MAX_SLOTS_PER_NAME * DIR_ENTRY_SIZE) as u64);
        let needed = data + new_dirs as u64 * (1 + growth) + if new_entry { growth } else { 0 };
        let free = self.free_clusters() + reclaimed;
        if needed > free {
            return Err(FatError::NoSpace { needed, free });
        }
        Ok(())
    }

    /// Writes FAT changes and FSInfo even if the operation failed half-way, so that the volume
    /// stays consistent with the directories already written.
    fn finish(&mut self, result: Result<(), FatError>) -> Result<(), FatError> {
        let flushed = self.flush_meta();
        result?;
        flushed
    }

    /// Makes sure the directories `comps` exist; returns the cluster of the last one.
    fn ensure_dirs(&mut self, comps: &[&str]) -> Result<u32, FatError> {
        let mut cur = self.geo.root_cluster;
        for (i, comp) in comps.iter().enumerate() {
            let mut dir = self.load_dir(cur)?;
            let entries = parse_dir(&dir);
            cur = match find(&entries, comp) {
                Some(e) if e.is_dir() => self.subdir_cluster(e)?,
                Some(_) => {
                    return Err(FatError::NotADirectory {
                        path: join(&comps[..=i]),
                    })
                }
                None => {
                    let c = self.alloc(1)?[0];
                    let parent = if cur == self.geo.root_cluster { 0 } else { cur };
                    let mut content = vec![0u8; self.geo.cluster_bytes() as usize];
                    for (slot, e) in dot_entries(c, parent).iter().enumerate() {
                        content[slot * DIR_ENTRY_SIZE..(slot + 1) * DIR_ENTRY_SIZE]
                            .copy_from_slice(e);
                    }
                    let pos = self.offset + self.geo.cluster_pos(c);
                    write_at(&mut self.dev, pos, &content, "directory")?;
                    let template = short_entry(&[b' '; 11], ATTR_DIRECTORY, c, 0);
                    self.add_entry(&mut dir, &join(&comps[..i]), comp, &template)?;
                    self.store_dir(&dir)?;
                    c
                }
            };
        }
        Ok(cur)
    }

    /// Adds `name` to `dir` (in memory) using `template` for everything but the name: LFN
    /// entries plus a unique short alias unless `name` is a pure upper-case 8.3 name. Grows the
    /// directory if no run of free slots is long enough.
    fn add_entry(
        &mut self,
        dir: &mut Dir,
        dir_path: &str,
        name: &str,
        template: &[u8; 32],
    ) -> Result<(), FatError> {
        let taken: HashSet<[u8; 11]> = parse_dir(dir).iter().map(|e| e.short).collect();
        let (short, lfn) = match plain_short_name(name).filter(|s| !taken.contains(s)) {
            Some(short) => (short, Vec::new()),
            None => {
                let short = short_name_for(name, |c| taken.contains(c))?;
                (short, lfn_entries(name, &short))
            }
        };
        let mut short_raw = *template;
        short_raw[..11].copy_from_slice(&short);
        let mut raw = lfn;
        raw.push(short_raw);
        let first = self.free_run(dir, dir_path, raw.len())?;
        for (i, e) in raw.iter().enumerate() {
            dir.slot_mut(first + i).copy_from_slice(e);
        }
        Ok(())
    }

    /// First slot of `count` consecutive free slots in `dir`, growing it as needed.
    fn free_run(&mut self, dir: &mut Dir, dir_path: &str, count: usize) -> Result<usize, FatError> {
        loop {
            let mut run = 0;
            for i in 0..dir.data.len() / DIR_ENTRY_SIZE {
                if matches!(dir.slot(i)[0], 0x00 | 0xE5) {
                    run += 1;
                    if run == count {
                        return Ok(i + 1 - count);
                    }
                } else {
                    run = 0;
                }
            }
            let cs = self.geo.cluster_bytes() as usize;
            if (dir.data.len() + cs) / DIR_ENTRY_SIZE > MAX_DIR_ENTRIES {
                return Err(FatError::DirectoryFull {
                    path: dir_path.to_string(),
                });
            }
            let c = self.alloc(1)?[0];
            let last = *dir
                .chain
                .last()
                .expect("a directory has at least one cluster");
            self.set_fat(last, c);
            dir.chain.push(c);
            dir.data.resize(dir.data.len() + cs, 0);
        }
    }

    /// Writes a directory's contents back to its clusters.
    fn store_dir(&mut self, dir: &Dir) -> Result<(), FatError> {
        debug_assert_eq!(dir.chain.first(), Some(&dir.cluster));
        self.write_clusters(&dir.chain, &dir.data, "directory")
    }

    /// Allocates clusters for `data` and writes it; returns the first cluster (0 if empty).
    fn store_data(&mut self, data: &[u8]) -> Result<u32, FatError> {
        if data.is_empty() {
            return Ok(0);
        }
        let chain = self.alloc(self.geo.clusters_for(data.len() as u64))?;
        self.write_clusters(&chain, data, "file data")?;
        Ok(chain[0])
    }

    /// Writes `data` over `chain`, zero-filling the rest of the last cluster.
    fn write_clusters(&mut self, chain: &[u32], data: &[u8], what: &str) -> Result<(), FatError> {
        let cs = self.geo.cluster_bytes() as usize;
        for (start, len) in runs(chain) {
            let pos = self.offset + self.geo.cluster_pos(chain[start]);
            let from = (start * cs).min(data.len());
            let to = ((start + len) * cs).min(data.len());
            write_at(&mut self.dev, pos, &data[from..to], what)?;
            let pad = (start + len) * cs - from - (to - from);
            if pad > 0 {
                let zeros = vec![0u8; pad];
                write_at(&mut self.dev, pos + (to - from) as u64, &zeros, what)?;
            }
        }
        Ok(())
    }

    /// Allocates `count` clusters first-fit and links them into a chain.
    fn alloc(&mut self, count: u64) -> Result<Vec<u32>, FatError> {
        let free = self.free_clusters();
        if count > free {
            return Err(FatError::NoSpace {
                needed: count,
                free,
            });
        }
        let mut chain = Vec::with_capacity(count as usize);
        let mut c = 2u32;
        while (chain.len() as u64) < count {
            if self.fat[c as usize] & FAT_MASK == 0 {
                chain.push(c);
            }
            c += 1;
        }
        for pair in chain.windows(2) {
            self.set_fat(pair[0], pair[1]);
        }
        if let Some(&last) = chain.last() {
            self.set_fat(last, FAT_EOC);
        }
        Ok(chain)
    }

    fn free_chain(&mut self, start: u32) -> Result<(), FatError> {
        for c in self.chain(start, None)? {
            self.set_fat(c, 0);
        }
        Ok(())
    }

    /// Sets a FAT entry, keeping its reserved top four bits.
    pub(super) fn set_fat(&mut self, cluster: u32, value: u32) {
        let old = self.fat[cluster as usize];
        self.fat[cluster as usize] = (old & !FAT_MASK) | (value & FAT_MASK);
        self.dirty.insert(cluster * 4 / self.geo.bytes_per_sector);
    }

    /// Writes changed FAT sectors to every FAT copy, then the FSInfo free count and hint.
    pub(super) fn flush_meta(&mut self) -> Result<(), FatError> {
        let bps = self.geo.bytes_per_sector;
        let per_sector = (bps / 4) as usize;
        let dirty: Vec<u32> = std::mem::take(&mut self.dirty).into_iter().collect();
        let mut i = 0;
        while i < dirty.len() {
            let mut j = i + 1;
            while j < dirty.len() && dirty[j] == dirty[j - 1] + 1 {
                j += 1;
            }
            let first = dirty[i] as usize * per_sector;
            let last = (dirty[j - 1] as usize + 1) * per_sector;
            let bytes: Vec<u8> = self.fat[first..last]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            let copies: Vec<u32> = if self.geo.mirrored {
                (0..self.geo.num_fats).collect()
            } else {
                vec![self.geo.active_fat]
            };
            for n in copies {
                let pos = self.offset + self.geo.fat_pos(n) + u64::from(dirty[i]) * u64::from(bps);
                write_at(&mut self.dev, pos, &bytes, "file allocation table")?;
            }
            i = j;
        }

        let (free, next) = fsinfo_values(&self.fat, self.geo.cluster_count);
        let mut sectors = vec![self.geo.fsinfo_sector];
        if self.geo.backup_boot_sector != 0 {
            sectors.push(self.geo.backup_boot_sector + 1);
        }
        for sector in sectors.into_iter().filter(|&s| s != 0) {
            let pos = self.offset + self.geo.sector_pos(sector);
            let mut s = [0u8; 512];
            read_at(&mut self.dev, pos, &mut s, "fsinfo sector")?;
            if le32(&s, 0) != FSINFO_LEAD_SIG || le32(&s, 484) != FSINFO_STRUCT_SIG {
                continue;
            }
            if le32(&s, 488) == free && le32(&s, 492) == next {
                continue;
            }
            put32(&mut s, 488, free);
            put32(&mut s, 492, next);
            write_at(&mut self.dev, pos, &s, "fsinfo sector")?;
        }
        self.dev.flush().map_err(io_err("flushing the volume"))
    }
}
