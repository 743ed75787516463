use std::collections::BTreeMap;

use super::*;
use crate::gpt::{parse_header, parse_header_block, GptError, HEAD_LEN};
use crate::partition::{STATE_LABEL, TYPE_ESP, TYPE_ROOT_X86_64, TYPE_VAR};
use uuid::Uuid;

const MIB: u64 = 1 << 20;
const S: usize = SECTOR as usize;

fn image_gpt() -> Gpt {
    let g = |n: u128| Uuid::from_u128(n);
    Gpt::layout(
        g(1),
        &[
            ("p6os-esp", TYPE_ESP, g(2), 4 * MIB),
            ("p6os-root-a", TYPE_ROOT_X86_64, g(3), 2 * MIB),
            ("p6os-root-b", TYPE_ROOT_X86_64, g(4), 2 * MIB),
            (STATE_LABEL, TYPE_VAR, g(5), 3 * MIB),
        ],
    )
}

/// A disk as the sectors that are not zero (disks here are mostly empty and copied often).
#[derive(Clone, PartialEq, Eq)]
struct Sparse {
    sectors: u64,
    data: BTreeMap<u64, Vec<u8>>,
}

impl std::fmt::Debug for Sparse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used: Vec<&u64> = self.data.keys().collect();
        write!(f, "disk of {} sectors, used: {used:?}", self.sectors)
    }
}

impl Sparse {
    fn new(sectors: u64) -> Sparse {
        Sparse {
            sectors,
            data: BTreeMap::new(),
        }
    }

    /// `gpt` encoded for its own size at the start of a disk of `sectors` (an image copied
    /// onto a larger disk, or enlarged with `truncate`).
    fn with(gpt: &Gpt, sectors: u64) -> Sparse {
        let mut d = Sparse::new(sectors);
        for (at, bytes) in gpt.encode() {
            d.write(at, &bytes);
        }
        d
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) {
        assert_eq!(offset % SECTOR, 0);
        assert_eq!(bytes.len() % S, 0);
        for (i, chunk) in bytes.chunks(S).enumerate() {
            let lba = offset / SECTOR + i as u64;
            assert!(lba < self.sectors, "write beyond the disk at LBA {lba}");
            if chunk.iter().all(|b| *b == 0) {
                self.data.remove(&lba);
            } else {
                self.data.insert(lba, chunk.to_vec());
            }
        }
    }

    fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        for (i, chunk) in out.chunks_mut(S).enumerate() {
            if let Some(s) = self.data.get(&(offset / SECTOR + i as u64)) {
                chunk.copy_from_slice(s);
            }
        }
        out
    }

    fn plan(&self, block: u64) -> Result<Growth, Refusal> {
        let head = self.read(0, HEAD_BYTES);
        let tail = self.read(self.sectors * SECTOR - TAIL_BYTES as u64, TAIL_BYTES);
        plan(
            &Disk {
                head: &head,
                tail: &tail,
                bytes: self.sectors * SECTOR,
                logical_block_size: block,
            },
            STATE_LABEL,
        )
    }

    fn apply(&mut self, writes: &[Write]) {
        for w in writes {
            self.write(w.offset, &w.bytes);
        }
    }

    /// The table the kernel would use (the primary if valid, else the backup at the end).
    fn primary(&self) -> Result<Vec<Partition>, GptError> {
        let head = self.read(0, HEAD_LEN);
        let h = parse_header(&head)?;
        let array = self.read(h.entries_offset, h.entries_len() as usize);
        crate::gpt::parse_entries(&array, &h)
    }

    fn backup(&self) -> Result<Vec<Partition>, GptError> {
        let last = self.sectors - 1;
        let h = parse_header_block(&self.read(last * SECTOR, S), SECTOR)?;
        assert_eq!(h.current_lba, last);
        let array = self.read(h.entries_offset, h.entries_len() as usize);
        crate::gpt::parse_entries(&array, &h)
    }

    /// What `sgdisk -v` would check, in short: both tables valid, equal, at both ends.
    fn assert_clean(&self, gpt: &Gpt) {
        assert_eq!(self.primary().as_ref(), Ok(&gpt.partitions));
        assert_eq!(self.backup().as_ref(), Ok(&gpt.partitions));
        let [(_, head), (tail_at, tail)] = gpt.encode();
        assert_eq!(self.read(0, head.len()), head);
        assert_eq!(self.read(tail_at, tail.len()), tail);
        // Nothing left in the temporary array.
        assert_eq!(
            self.read(SWITCH_ARRAY_LBA * SECTOR, (ARRAY_SECTORS * SECTOR) as usize),
            vec![0; (ARRAY_SECTORS * SECTOR) as usize]
        );
    }
}

fn grown(gpt: &Gpt, sectors: u64) -> Gpt {
    let mut g = gpt.clone();
    g.sectors = sectors;
    g.partitions.last_mut().unwrap().last_lba = sectors - 34;
    g
}

fn pieces(g: &Growth) -> Vec<Piece> {
    g.writes.iter().map(|w| w.what).collect()
}

const DISK: u64 = 64 * MIB / SECTOR;

#[test]
fn an_enlarged_image_grows_to_the_last_usable_lba() {
    let old = image_gpt();
    let mut disk = Sparse::with(&old, DISK);
    let growth = disk.plan(512).unwrap();
    assert_eq!(growth.before, old.partitions[3]);
    assert_eq!(growth.after.last_lba, DISK - 34);
    assert_eq!(growth.after.first_lba, growth.before.first_lba);
    use Piece::*;
    assert_eq!(
        pieces(&growth),
        [
            BackupTable,
            SwitchArray,
            SwitchHeader,
            PrimaryArray,
            PrimaryHeader,
            ClearSwitchArray,
            ClearOldBackupHeader,
            ProtectiveMbr
        ]
    );
    disk.apply(&growth.writes);
    disk.assert_clean(&grown(&old, DISK));
    // The old backup header is gone.
    assert_eq!(disk.read((old.sectors - 1) * SECTOR, S), vec![0; S]);
    // Done: nothing more at the next boot.
    let again = disk.plan(512).unwrap();
    assert_eq!(again.writes, []);
    assert_eq!(again.before, again.after);
    assert_eq!(again.after.last_lba, DISK - 34);
}

#[test]
fn a_flashed_disk_with_its_backup_at_the_end_grows() {
    // `p6os flash` rewrites the table for the target's size: the state keeps its size.
    let mut old = image_gpt();
    old.sectors = DISK;
    let mut disk = Sparse::with(&old, DISK);
    let growth = disk.plan(512).unwrap();
    use Piece::*;
    assert_eq!(
        pieces(&growth),
        [
            BackupTable,
            SwitchArray,
            SwitchHeader,
            PrimaryArray,
            PrimaryHeader,
            ClearSwitchArray
        ]
    );
    disk.apply(&growth.writes);
    disk.assert_clean(&grown(&old, DISK));
    assert_eq!(disk.plan(512).unwrap().writes, []);
}

#[test]
fn an_image_on_a_disk_of_its_own_size_is_left_alone() {
    let old = image_gpt();
    let disk = Sparse::with(&old, old.sectors);
    let growth = disk.plan(512).unwrap();
    assert_eq!(growth.writes, []);
    assert_eq!(growth.before, growth.after);
    // Less than 1 MiB more is not worth a write either (the backup stays where it is).
    // (The image ends with 1 MiB after the state partition: 2015 sectors to gain, short of 2048.)
    for extra in [1, 16, 32] {
        let disk = Sparse::with(&old, old.sectors + extra);
        let g = disk.plan(512).unwrap();
        assert_eq!(g.writes, [], "+{extra} sectors");
    }
    // From 1 MiB on, it grows.
    let disk = Sparse::with(&old, old.sectors + 33);
    assert_eq!(
        disk.plan(512).unwrap().after.last_lba,
        old.sectors + 33 - 34
    );
}

#[test]
fn refusals() {
    let old = image_gpt();
    let disk = Sparse::with(&old, DISK);
    assert_eq!(disk.plan(4096), Err(Refusal::BlockSize(4096)));

    // The disk is smaller than the table says (a table copied onto a smaller disk: the
    // backup is lost, the primary says the disk is larger).
    let mut small = Sparse::new(old.sectors - 2048);
    small.write(0, &old.encode()[0].1);
    assert_eq!(
        small.plan(512),
        Err(Refusal::DiskSmaller {
            disk: old.sectors - 2048,
            table: old.sectors
        })
    );

    // Another partition after the state partition.
    let g = |n: u128| Uuid::from_u128(n);
    let after = Gpt::layout(
        g(1),
        &[
            ("p6os-esp", TYPE_ESP, g(2), 4 * MIB),
            (STATE_LABEL, TYPE_VAR, g(5), 3 * MIB),
            ("p6os-root-a", TYPE_ROOT_X86_64, g(3), 2 * MIB),
        ],
    );
    let err = Sparse::with(&after, DISK).plan(512).unwrap_err();
    assert_eq!(
        err,
        Refusal::NotLast {
            label: STATE_LABEL.into(),
            after: "3 p6os-root-a".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "p6os-state is not the last partition (3 p6os-root-a lies after it)"
    );

    // No state partition.
    let none = Gpt::layout(g(1), &[("p6os-esp", TYPE_ESP, g(2), 4 * MIB)]);
    assert_eq!(
        Sparse::with(&none, DISK).plan(512),
        Err(Refusal::NoPartition(STATE_LABEL.into()))
    );

    // No table at all.
    assert!(matches!(
        Sparse::new(DISK).plan(512),
        Err(Refusal::NoTable {
            primary: GptError::NoSignature,
            backup: GptError::NoSignature
        })
    ));

    // A disk too small for two tables.
    assert_eq!(Sparse::new(100).plan(512), Err(Refusal::TooSmall(51200)));
}

/// A header and array re-signed after `edit`: still valid, but not what this crate writes.
fn edited(gpt: &Gpt, disk: &mut Sparse, edit: impl Fn(&mut [u8], &mut [u8])) {
    let mut header = disk.read(SECTOR, S);
    let mut array = disk.read(2 * SECTOR, (ARRAY_SECTORS * SECTOR) as usize);
    edit(&mut header, &mut array);
    let count = u32::from_le_bytes(header[80..84].try_into().unwrap()) as usize;
    let crc = crc32fast::hash(&array[..count * 128]);
    header[88..92].copy_from_slice(&crc.to_le_bytes());
    header[16..20].fill(0);
    let crc = crc32fast::hash(&header[..92]);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
    disk.write(SECTOR, &header);
    disk.write(2 * SECTOR, &array);
    assert_eq!(disk.primary().unwrap().len(), gpt.partitions.len());
}

#[test]
fn tables_it_could_not_write_back_are_refused() {
    let old = image_gpt();
    let foreign = |edit: &dyn Fn(&mut [u8], &mut [u8])| {
        let mut disk = Sparse::with(&old, DISK);
        edited(&old, &mut disk, edit);
        match disk.plan(512) {
            Err(Refusal::Foreign(why)) => why,
            other => panic!("{other:?}"),
        }
    };
    // An attribute bit (e.g. "no automount") would be lost.
    let why = foreign(&|_, a| a[3 * 128 + 48] = 1);
    assert!(why.contains("attribute bits"), "{why}");
    // A first usable LBA other than 34.
    foreign(&|h, _| h[40] = 40);
    // A partition in the gap the temporary array uses.
    let why = foreign(&|_, a| a[32..40].copy_from_slice(&40u64.to_le_bytes()));
    assert!(why.contains("outside 66.."), "{why}");
    // The array elsewhere (valid for the kernel, but not where this crate writes it).
    let mut disk = Sparse::with(&old, DISK);
    let array = disk.read(2 * SECTOR, (ARRAY_SECTORS * SECTOR) as usize);
    disk.write(100 * SECTOR, &array);
    edited(&old, &mut disk, |h: &mut [u8], _: &mut [u8]| h[72] = 100);
    assert_eq!(
        disk.plan(512),
        Err(Refusal::Foreign("an entry array at LBA 100".into()))
    );
    // Fewer entries.
    let why = foreign(&|h, _| h[80..84].copy_from_slice(&64u32.to_le_bytes()));
    assert!(why.contains("64 entries"), "{why}");
}

#[test]
fn a_4096_byte_sector_table_is_refused_for_its_block_size() {
    let old = image_gpt();
    let mut disk = Sparse::new(DISK);
    let [(_, head), _] = old.encode();
    let mut header = head[512..1024].to_vec();
    header[72..80].copy_from_slice(&2u64.to_le_bytes());
    header[16..20].fill(0);
    let crc = crc32fast::hash(&header[..92]);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
    disk.write(4096, &header);
    disk.write(8192, &head[1024..]);
    assert_eq!(disk.plan(512), Err(Refusal::BlockSize(4096)));
}

#[test]
fn a_lost_primary_is_rebuilt_from_the_backup_first() {
    // The backup at the end describes the grown table; the primary is gone.
    let old = image_gpt();
    let new = grown(&old, DISK);
    let mut disk = Sparse::with(&new, DISK);
    disk.write(SECTOR, &[0u8; S]);
    assert!(disk.primary().is_err());
    let growth = disk.plan(512).unwrap();
    assert_eq!(pieces(&growth), [Piece::PrimaryHeader], "{growth:?}");
    disk.apply(&growth.writes);
    disk.assert_clean(&new);

    // A flashed disk whose primary is lost: the primary is made whole before the only
    // valid copy, the backup, is rewritten.
    let mut flashed = old.clone();
    flashed.sectors = DISK;
    let mut disk = Sparse::with(&flashed, DISK);
    let mut array = disk.read(2 * SECTOR, S);
    array[100] ^= 0xAA;
    disk.write(2 * SECTOR, &array);
    assert!(disk.primary().is_err());
    let growth = disk.plan(512).unwrap();
    assert_eq!(
        pieces(&growth),
        [
            Piece::PrimaryArray,
            Piece::PrimaryHeader,
            Piece::BackupTable
        ]
    );
    disk.apply(&growth.writes);
    disk.assert_clean(&grown(&old, DISK));
}

/// The states a power cut can leave while `writes` are made: before each write, and within
/// each write after any number of its sectors (`Tears::All`; a few with `Tears::Some`), in
/// order or in reverse order.
fn cuts(start: &Sparse, writes: &[Write], tears: Tears) -> Vec<(String, Sparse)> {
    let mut states = Vec::new();
    let mut disk = start.clone();
    for w in writes {
        let n = w.bytes.len() / S;
        let ks: Vec<usize> = match tears {
            Tears::All => (0..n).collect(),
            Tears::Some => [0, 1, n / 2, n - 1]
                .into_iter()
                .filter(|k| *k < n)
                .collect(),
        };
        for k in ks {
            let mut forward = disk.clone();
            forward.write(w.offset, &w.bytes[..k * S]);
            states.push((format!("{:?} after {k} of {n} sectors", w), forward));
            if k > 0 {
                let mut backward = disk.clone();
                let from = n - k;
                backward.write(w.offset + (from * S) as u64, &w.bytes[from * S..]);
                states.push((format!("{:?}, last {k} of {n} sectors", w), backward));
            }
        }
        disk.write(w.offset, &w.bytes);
    }
    states
}

#[derive(Clone, Copy)]
enum Tears {
    All,
    Some,
}

/// Power cuts at every sector of the growth, and again at every sector of the next boot's
/// completion: the primary table stays valid throughout (the kernel uses only the primary
/// unless booted with `gpt`), showing the old or the new layout, and planning again from
/// whatever is on the disk ends in the same clean table. One leftover is allowed: a cut after
/// the primary header's switch and before the cleanup leaves the old backup header where it
/// was (the primary no longer says where that is): a stale sector in the grown partition's
/// free space, which nothing reads.
fn survives_power_cuts(start: Sparse) {
    let old = start.primary().unwrap();
    let growth = start.plan(512).unwrap();
    let mut done = start.clone();
    done.apply(&growth.writes);
    let new = done.primary().unwrap();
    let old_backup = parse_header(&start.read(0, HEAD_LEN)).unwrap().backup_lba;
    let same = |mut finished: Sparse| {
        if old_backup != start.sectors - 1 {
            finished.data.remove(&old_backup);
        }
        finished == done
    };
    assert_ne!(old, new);
    let mut seen = 0;
    for (what, cut) in cuts(&start, &growth.writes, Tears::All) {
        let table = cut.primary().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(table == old || table == new, "{what}: {table:?}");
        let redo = cut.plan(512).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(redo.after, growth.after, "{what}");
        // And a second cut while that completes.
        for (again, cut2) in cuts(&cut, &redo.writes, Tears::Some) {
            let table = cut2
                .primary()
                .unwrap_or_else(|e| panic!("{what}, then {again}: {e}"));
            assert!(table == old || table == new, "{what}, then {again}");
            let mut finished = cut2.clone();
            finished.apply(&cut2.plan(512).unwrap().writes);
            assert!(same(finished), "{what}, then {again}");
            seen += 1;
        }
        let mut finished = cut;
        finished.apply(&redo.writes);
        assert_eq!(finished.plan(512).unwrap().writes, [], "{what}");
        assert!(same(finished), "{what}");
    }
    assert!(seen > 500, "{seen}");
}

#[test]
fn power_cuts_during_growth_of_an_enlarged_image() {
    survives_power_cuts(Sparse::with(&image_gpt(), DISK));
}

#[test]
fn power_cuts_during_growth_of_a_flashed_disk() {
    let mut old = image_gpt();
    old.sectors = DISK;
    survives_power_cuts(Sparse::with(&old, DISK));
}

#[test]
fn never_panics_on_junk() {
    for fill in [0u8, 0x45, 0xff] {
        for sectors in [0u64, 1, 65, 66, 133, 134, 4096] {
            let head = vec![fill; HEAD_BYTES];
            let tail = vec![fill; TAIL_BYTES];
            let mut h = head.clone();
            h[512..520].copy_from_slice(b"EFI PART");
            for head in [&head, &h] {
                let _ = plan(
                    &Disk {
                        head,
                        tail: &tail,
                        bytes: sectors * SECTOR,
                        logical_block_size: 512,
                    },
                    STATE_LABEL,
                );
            }
        }
    }
}
