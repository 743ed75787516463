//! Repair after power cuts: FAT has no journal, so a write cut short can leave clusters
//! allocated that no directory entry reaches ("lost clusters"), the FAT copies apart, FSInfo's
//! free count wrong, the dirty flag set, and the temporary files of interrupted writes.
//!
//! [`FatVolume::plan_repair`] only reads: it walks every directory from the root cluster
//! (bounded in depth, directories and entries; a cluster reached twice is a cross-link or a
//! loop), marks every cluster a kept entry reaches, and says what it would change as a
//! [`Repair`] value. Anything it does not understand (a file whose chain does not match its
//! size, a chain through a free or bad cluster, a cross-link, a volume whose FAT copies are not
//! mirrored) is a problem, and a plan with problems changes nothing. [`FatVolume::repair`]
//! writes the plan, in an order that a cut during the repair itself leaves a volume the next
//! repair understands: the leftovers' directory slots (long-name slots before the short
//! entry), then the first FAT, then the other FAT copies, then FSInfo, and the dirty flag last.
//!
//! What is a leftover is the caller's rule ([`is_leftover`](FatVolume::plan_repair)): the crate
//! knows FAT, not which files its users write under temporary names. A leftover claims no
//! clusters: those only it reached are freed with the lost ones; a leftover sharing its chain
//! with a kept file (a rename cut between its two directory writes) leaves that chain to the file.

use std::collections::BTreeSet;
use std::io::{Read, Seek, Write};

use super::reader::{parse_dir, Dir};
use super::{
    le32, read_at, write_at, FatError, FatVolume, DIR_ENTRY_SIZE, FAT_BAD, FAT_MASK,
    FSINFO_LEAD_SIG, FSINFO_STRUCT_SIG,
};

/// Deepest directory the walk follows (the ESP needs 3).
pub const MAX_DEPTH: usize = 16;
/// Most directories the walk reads.
pub const MAX_DIRS: usize = 4096;
/// Most directory entries the walk looks at, in all directories together.
pub const MAX_ENTRIES: usize = 1 << 20;
/// The walk stops at this many problems (a plan with one already changes nothing): a crafted
/// volume cannot make the plan's messages grow without bound.
pub const MAX_PROBLEMS: usize = 16;
/// More leftovers than this is not what interrupted writes leave: a problem.
pub const MAX_REMOVALS: usize = 1024;

/// Byte of the FAT32 boot sector that Linux sets while a volume is mounted read-write
/// (`fat32.state`, bit 0 = dirty) and clears at a clean unmount.
const STATE_BYTE: usize = 0x41;
const STATE_DIRTY: u8 = 0x01;

/// A leftover file to remove: its path and its directory slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub path: String,
    /// First cluster of the directory holding it.
    pub dir_cluster: u32,
    /// Its first slot (first long-name slot, or the short entry) and its short entry's slot.
    pub first_slot: usize,
    pub short_slot: usize,
    /// The short entry's 11 name bytes, checked again before the slots are cleared.
    pub short_name: [u8; 11],
}

/// What [`FatVolume::repair`] would change. Empty (see [`Repair::is_clean`]) on a clean volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repair {
    /// Leftover files to remove.
    pub remove: Vec<Removal>,
    /// Allocated clusters no kept entry reaches, as runs `(first, count)`; freed in every copy.
    pub lost: Vec<(u32, u32)>,
    /// FAT sectors (index within a FAT) of the other copies that differ from the first FAT as
    /// repaired, as `(copy, sector)`.
    pub fat_copies_differ: Vec<(u32, u32)>,
    /// FSInfo's free cluster count `(on disk, true)`, when wrong.
    pub free_count: Option<(u32, u32)>,
    /// The dirty flag is set (the volume was mounted when the power went).
    pub dirty: bool,
    /// What the walk does not understand; when there is any, [`FatVolume::repair`] writes nothing.
    pub problems: Vec<String>,
}

impl Repair {
    /// Nothing to change and nothing not understood.
    pub fn is_clean(&self) -> bool {
        self.remove.is_empty()
            && self.lost.is_empty()
            && self.fat_copies_differ.is_empty()
            && self.free_count.is_none()
            && !self.dirty
            && self.problems.is_empty()
    }

    /// Clusters freed.
    pub fn lost_clusters(&self) -> u64 {
        self.lost.iter().map(|&(_, n)| u64::from(n)).sum()
    }

    /// One line for a log.
    pub fn summary(&self) -> String {
        if !self.problems.is_empty() {
            return format!("not repaired: {}", self.problems.join("; "));
        }
        let mut parts = Vec::new();
        if !self.remove.is_empty() {
            let paths: Vec<&str> = self.remove.iter().map(|r| r.path.as_str()).collect();
            parts.push(format!("remove {}", paths.join(", ")));
        }
        if !self.lost.is_empty() {
            parts.push(format!(
                "free {} lost clusters in {} runs",
                self.lost_clusters(),
                self.lost.len()
            ));
        }
        if !self.fat_copies_differ.is_empty() {
            parts.push(format!(
                "copy {} fat sectors to the other copies",
                self.fat_copies_differ.len()
            ));
        }
        if let Some((was, is)) = self.free_count {
            parts.push(format!("free count {was:#x} -> {is}"));
        }
        if self.dirty {
            parts.push("clear the dirty flag".into());
        }
        if parts.is_empty() {
            "clean".into()
        } else {
            parts.join(", ")
        }
    }
}

impl<D: Read + Seek> FatVolume<D> {
    /// Walks the volume and plans its repair; reads only. `is_leftover(directory path, name)`
    /// says which files are temporary files of interrupted writes, to be removed.
    pub fn plan_repair(
        &mut self,
        is_leftover: &dyn Fn(&str, &str) -> bool,
    ) -> Result<Repair, FatError> {
        let mut plan = Repair::default();
        let mut bs = [0u8; 512];
        read_at(&mut self.dev, self.offset, &mut bs, "boot sector")?;
        plan.dirty = bs[STATE_BYTE] & STATE_DIRTY != 0;
        if !self.geo.mirrored {
            plan.problems
                .push("the fat copies are not mirrored (one active fat)".into());
            return Ok(plan);
        }
        let claimed = self.walk(is_leftover, &mut plan)?;
        if !plan.problems.is_empty() {
            return Ok(plan);
        }
        let end = self.geo.cluster_count as usize + 2;
        let mut fat = self.fat.clone();
        let mut c = 2;
        while c < end {
            let lost = |c: usize| {
                let v = fat[c] & FAT_MASK;
                v != 0 && v != FAT_BAD && !claimed[c]
            };
            if lost(c) {
                let first = c;
                while c < end && lost(c) {
                    c += 1;
                }
                plan.lost.push((first as u32, (c - first) as u32));
            } else {
                c += 1;
            }
        }
        for &(first, n) in &plan.lost {
            for c in first..first + n {
                fat[c as usize] &= !FAT_MASK;
            }
        }
        // The other copies against the first as repaired, sector by sector (the FAT may be
        // longer than the clusters need; only the sectors in use are compared and written).
        let bps = self.geo.bytes_per_sector as usize;
        let raw: Vec<u8> = fat.iter().flat_map(|v| v.to_le_bytes()).collect();
        for n in 1..self.geo.num_fats {
            let mut copy = vec![0u8; raw.len()];
            read_at(
                &mut self.dev,
                self.offset + self.geo.fat_pos(n),
                &mut copy,
                "file allocation table copy",
            )?;
            for (i, (a, b)) in raw.chunks(bps).zip(copy.chunks(bps)).enumerate() {
                if a != b {
                    plan.fat_copies_differ.push((n, i as u32));
                }
            }
        }
        let free = fat[2..end].iter().filter(|&&v| v & FAT_MASK == 0).count() as u32;
        if self.geo.fsinfo_sector != 0 {
            let mut s = [0u8; 512];
            let pos = self.offset + self.geo.sector_pos(self.geo.fsinfo_sector);
            read_at(&mut self.dev, pos, &mut s, "fsinfo sector")?;
            if le32(&s, 0) == FSINFO_LEAD_SIG
                && le32(&s, 484) == FSINFO_STRUCT_SIG
                && le32(&s, 488) != free
            {
                plan.free_count = Some((le32(&s, 488), free));
            }
        }
        Ok(plan)
    }

    /// Every directory from the root: the clusters kept entries reach, the leftovers to remove
    /// (into `plan`), and what is not understood (into `plan.problems`).
    fn walk(
        &mut self,
        is_leftover: &dyn Fn(&str, &str) -> bool,
        plan: &mut Repair,
    ) -> Result<Vec<bool>, FatError> {
        let mut claimed = vec![false; self.geo.cluster_count as usize + 2];
        let mut pending = vec![(self.geo.root_cluster, String::new(), 0usize)];
        let mut dirs = 0;
        let mut entries_seen = 0;
        while let Some((cluster, path, depth)) = pending.pop() {
            if plan.problems.len() >= MAX_PROBLEMS {
                break;
            }
            dirs += 1;
            if dirs > MAX_DIRS {
                plan.problems
                    .push(format!("more than {MAX_DIRS} directories"));
                break;
            }
            let shown = if path.is_empty() { "/" } else { path.as_str() };
            let dir = match self.load_dir(cluster) {
                Ok(d) => d,
                Err(FatError::Corrupt(why)) => {
                    plan.problems.push(format!("directory {shown}: {why}"));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !claim(&mut claimed, &dir.chain) {
                plan.problems.push(format!(
                    "directory {shown} shares clusters with another file or directory"
                ));
                continue;
            }
            for e in parse_dir(&dir) {
                if plan.problems.len() >= MAX_PROBLEMS {
                    return Ok(claimed);
                }
                entries_seen += 1;
                if entries_seen > MAX_ENTRIES {
                    plan.problems
                        .push(format!("more than {MAX_ENTRIES} directory entries"));
                    return Ok(claimed);
                }
                if e.is_dot() {
                    continue;
                }
                let child = format!("{path}/{}", e.name);
                if e.is_dir() {
                    if depth + 1 >= MAX_DEPTH {
                        plan.problems
                            .push(format!("{child}: deeper than {MAX_DEPTH} directories"));
                    } else if !self.geo.is_data_cluster(e.cluster) {
                        plan.problems.push(format!(
                            "directory {child} starts at invalid cluster {:#x}",
                            e.cluster
                        ));
                    } else {
                        pending.push((e.cluster, child, depth + 1));
                    }
                    continue;
                }
                if is_leftover(shown, &e.name) {
                    if plan.remove.len() >= MAX_REMOVALS {
                        plan.problems
                            .push(format!("more than {MAX_REMOVALS} leftover files"));
                        return Ok(claimed);
                    }
                    plan.remove.push(Removal {
                        path: child,
                        dir_cluster: dir.cluster,
                        first_slot: e.first_slot,
                        short_slot: e.short_slot,
                        short_name: e.short,
                    });
                    continue;
                }
                if let Err(why) = self.file_chain(&e.name, e.cluster, e.size, &mut claimed) {
                    plan.problems.push(format!("{child}: {why}"));
                }
            }
        }
        Ok(claimed)
    }

    /// Claims the chain of a kept file, which must be exactly as long as its size needs.
    fn file_chain(
        &self,
        _name: &str,
        start: u32,
        size: u32,
        claimed: &mut [bool],
    ) -> Result<(), String> {
        if size == 0 {
            return match start {
                0 => Ok(()),
                c => Err(format!("empty but starts at cluster {c:#x}")),
            };
        }
        let want = self.geo.clusters_for(u64::from(size)) as usize;
        let chain = self.chain(start, Some(want + 1)).map_err(|e| match e {
            FatError::Corrupt(why) => why,
            e => e.to_string(),
        })?;
        if chain.len() != want {
            return Err(format!(
                "{size} bytes need {want} clusters, its chain has {}",
                if chain.len() > want {
                    "more".to_string()
                } else {
                    chain.len().to_string()
                }
            ));
        }
        if !claim(claimed, &chain) {
            return Err("shares clusters with another file or directory (cross-linked)".into());
        }
        Ok(())
    }
}

/// Marks `chain` as reached; false if any of it was reached before.
fn claim(claimed: &mut [bool], chain: &[u32]) -> bool {
    if chain.iter().any(|&c| claimed[c as usize]) {
        return false;
    }
    for &c in chain {
        claimed[c as usize] = true;
    }
    true
}

impl<D: Read + Write + Seek> FatVolume<D> {
    /// Carries out `plan` (made by [`plan_repair`](Self::plan_repair) on this volume, unchanged
    /// since). Writes nothing if the plan has problems. The caller syncs the device.
    pub fn repair(&mut self, plan: &Repair) -> Result<(), FatError> {
        if !plan.problems.is_empty() {
            return Ok(());
        }
        // 1. Leftovers: every slot of each, written in slot order, so the short entry goes last.
        let by_dir: BTreeSet<u32> = plan.remove.iter().map(|r| r.dir_cluster).collect();
        for cluster in by_dir {
            let mut dir = self.load_dir(cluster)?;
            let mut slots = Vec::new();
            for r in plan.remove.iter().filter(|r| r.dir_cluster == cluster) {
                if r.short_slot * DIR_ENTRY_SIZE >= dir.data.len()
                    || dir.slot(r.short_slot)[..11] != r.short_name
                {
                    return Err(FatError::Corrupt(format!(
                        "{} changed since the repair was planned",
                        r.path
                    )));
                }
                for i in r.first_slot..=r.short_slot {
                    dir.slot_mut(i)[0] = 0xE5;
                    slots.push(i);
                }
            }
            slots.sort_unstable();
            self.write_dir_slots(&dir, &slots)?;
        }
        // 2. Lost clusters in the first FAT; 3. the changed sectors in the other copies too,
        // then FSInfo (`flush_meta`); 4. copies that differed elsewhere.
        for &(first, n) in &plan.lost {
            for c in first..first + n {
                self.set_fat(c, 0);
            }
        }
        self.flush_meta()?;
        let bps = u64::from(self.geo.bytes_per_sector);
        let per_sector = bps as usize / 4;
        for &(copy, sector) in &plan.fat_copies_differ {
            let from = sector as usize * per_sector;
            let bytes: Vec<u8> = self.fat[from..from + per_sector]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            let pos = self.offset + self.geo.fat_pos(copy) + u64::from(sector) * bps;
            write_at(&mut self.dev, pos, &bytes, "file allocation table copy")?;
        }
        // 5. The dirty flag, last: the volume is consistent now.
        if plan.dirty {
            let mut bs = [0u8; 512];
            read_at(&mut self.dev, self.offset, &mut bs, "boot sector")?;
            bs[STATE_BYTE] &= !STATE_DIRTY;
            write_at(&mut self.dev, self.offset, &bs, "boot sector")?;
        }
        self.dev
            .flush()
            .map_err(super::io_err("flushing the volume"))
    }

    /// Writes the sectors of `dir` holding `slots`, in the order of the slots.
    fn write_dir_slots(&mut self, dir: &Dir, slots: &[usize]) -> Result<(), FatError> {
        let bps = self.geo.bytes_per_sector as usize;
        let cs = self.geo.cluster_bytes() as usize;
        let mut done = BTreeSet::new();
        for &slot in slots {
            let byte = slot * DIR_ENTRY_SIZE;
            let sector = byte / bps;
            if !done.insert(sector) {
                continue;
            }
            let cluster = dir.chain[byte / cs];
            let within = (byte % cs) / bps * bps;
            let pos = self.offset + self.geo.cluster_pos(cluster) + within as u64;
            write_at(
                &mut self.dev,
                pos,
                &dir.data[sector * bps..(sector + 1) * bps],
                "directory",
            )?;
        }
        Ok(())
    }
}
