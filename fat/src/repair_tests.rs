//! The repair planner and writer on small volumes made by [`format`] and modified the way
//! interrupted writes leave them. `tool_tests` checks repaired volumes with `fsck.vfat`.

use std::io::Cursor;

use super::tests::{esp_files, file, format_in_memory, noise, MIB, OFFSET};
use super::*;

pub(super) const SIZE: u64 = 64 * MIB;

/// The agent's rule: `*.new` files are leftovers.
pub(super) fn dot_new(_dir: &str, name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".new")
}

fn open(img: Vec<u8>) -> FatVolume<Cursor<Vec<u8>>> {
    FatVolume::open(Cursor::new(img), OFFSET, SIZE).unwrap()
}

fn plan(img: &[u8]) -> Repair {
    open(img.to_vec()).plan_repair(&dot_new).unwrap()
}

/// Plans and repairs; returns the plan and the repaired image.
pub(super) fn repaired(img: Vec<u8>) -> (Repair, Vec<u8>) {
    let mut vol = open(img);
    let plan = vol.plan_repair(&dot_new).unwrap();
    vol.repair(&plan).unwrap();
    (plan, vol.into_inner().into_inner())
}

fn fat_pos(copy: u64) -> usize {
    let vol = open(format_in_memory(SIZE, &[]));
    (OFFSET + vol.geo.fat_pos(copy as u32)) as usize
}

fn fat_entry(img: &[u8], copy: u64, cluster: u32) -> u32 {
    let at = fat_pos(copy) + cluster as usize * 4;
    u32::from_le_bytes(img[at..at + 4].try_into().unwrap())
}

fn set_fat_entry(img: &mut [u8], copies: &[u64], cluster: u32, value: u32) {
    for &copy in copies {
        let at = fat_pos(copy) + cluster as usize * 4;
        img[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }
}

/// First cluster of a file, from its directory entry.
fn first_cluster(img: Vec<u8>, dir: &str, name: &str) -> u32 {
    let mut vol = open(img);
    let c = vol.dir_cluster(&split_path(dir).unwrap()).unwrap();
    let d = vol.load_dir(c).unwrap();
    reader::parse_dir(&d)
        .into_iter()
        .find(|e| e.name == name)
        .unwrap()
        .cluster
}

/// A chain of `n` clusters no entry reaches, written to both FATs at the end of the volume:
/// what a cut between allocating and writing the directory entry leaves.
pub(super) fn leak(img: &mut [u8], first: u32, n: u32) {
    for c in first..first + n {
        let next = if c + 1 == first + n { FAT_EOC } else { c + 1 };
        set_fat_entry(img, &[0, 1], c, next);
    }
}

fn esp() -> Vec<u8> {
    format_in_memory(SIZE, &esp_files())
}

fn assert_esp_intact(img: Vec<u8>) {
    let mut vol = open(img);
    super::tests::assert_contents(&mut vol, &esp_files());
}

#[test]
fn a_fresh_volume_is_clean() {
    let p = plan(&esp());
    assert!(p.is_clean(), "{p:?}");
    assert_eq!(p.summary(), "clean");
    let (_, img) = repaired(esp());
    assert_eq!(img, esp(), "a clean volume is not written");
}

#[test]
fn lost_clusters_are_freed_in_every_copy_and_counted() {
    let mut img = esp();
    leak(&mut img, 100_000, 40);
    leak(&mut img, 100_100, 1);
    let p = plan(&img);
    assert_eq!(p.lost, vec![(100_000, 40), (100_100, 1)]);
    assert!(p.problems.is_empty() && p.remove.is_empty());
    let (_, img) = repaired(img);
    for copy in [0, 1] {
        assert_eq!(fat_entry(&img, copy, 100_000), 0);
        assert_eq!(fat_entry(&img, copy, 100_100), 0);
    }
    assert!(plan(&img).is_clean());
    assert_esp_intact(img);
}

#[test]
fn leftovers_are_removed_and_their_clusters_freed() {
    let mut vol = open(esp());
    vol.write_file("/p6os/b/initrd.img.new", &noise(70_000, 9))
        .unwrap();
    vol.write_file("/loader/entries/p6os-3-b+3.conf.new", b"title x\n")
        .unwrap();
    let img = vol.into_inner().into_inner();
    let p = plan(&img);
    let removed: Vec<&str> = p.remove.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        removed,
        [
            "/p6os/b/initrd.img.new",
            "/loader/entries/p6os-3-b+3.conf.new"
        ]
    );
    // 70 000 bytes in 512-byte clusters, and the entry's one.
    assert_eq!(p.lost_clusters(), 137 + 1);
    let (_, img) = repaired(img);
    assert!(plan(&img).is_clean());
    let mut vol = open(img.clone());
    assert!(!vol.exists("/p6os/b/initrd.img.new").unwrap());
    assert!(!vol.exists("/loader/entries/p6os-3-b+3.conf.new").unwrap());
    assert_esp_intact(img);
}

#[test]
fn a_leftover_sharing_a_kept_files_chain_leaves_it_to_the_file() {
    // A rename cut between writing the new name and removing the old one: `vmlinuz.new` and
    // `vmlinuz` both point at the same chain. The leftover goes; the file keeps its clusters.
    let mut vol = open(esp());
    let data = noise(4096, 4);
    vol.write_file("/p6os/b/vmlinuz.new", &data).unwrap();
    let img = vol.into_inner().into_inner();
    let kept = first_cluster(img.clone(), "/p6os/b", "vmlinuz");
    let temp = first_cluster(img.clone(), "/p6os/b", "vmlinuz.new");
    let mut vol = open(img);
    let c = vol.dir_cluster(&split_path("/p6os/b").unwrap()).unwrap();
    let mut d = vol.load_dir(c).unwrap();
    let e = reader::parse_dir(&d)
        .into_iter()
        .find(|e| e.name == "vmlinuz.new")
        .unwrap();
    set_entry_cluster(d.slot_mut(e.short_slot), kept);
    let pos = (OFFSET + vol.geo.cluster_pos(c)) as usize;
    let mut img = vol.into_inner().into_inner();
    img[pos..pos + d.data.len()].copy_from_slice(&d.data);
    let p = plan(&img);
    assert!(p.problems.is_empty(), "{p:?}");
    assert_eq!(p.remove.len(), 1);
    assert_eq!(p.lost, vec![(temp, 8)], "the leftover's own chain is lost");
    let (_, img) = repaired(img);
    assert!(plan(&img).is_clean());
    assert_esp_intact(img);
}

#[test]
fn fat_copies_that_differ_follow_the_first() {
    let mut img = esp();
    set_fat_entry(&mut img, &[1], 120_000, 0x0FFF_FFFF);
    let p = plan(&img);
    assert_eq!(p.fat_copies_differ, vec![(1, 120_000 * 4 / 512)]);
    assert!(p.lost.is_empty());
    let (_, img) = repaired(img);
    assert_eq!(fat_entry(&img, 1, 120_000), 0);
    assert!(plan(&img).is_clean());
}

#[test]
fn lost_only_in_the_first_fat_is_freed_there_and_both_agree() {
    let mut img = esp();
    set_fat_entry(&mut img, &[0], 120_000, 0x0FFF_FFFF);
    let p = plan(&img);
    assert_eq!(p.lost, vec![(120_000, 1)]);
    assert!(
        p.fat_copies_differ.is_empty(),
        "after the repair they agree"
    );
    let (_, img) = repaired(img);
    assert_eq!(fat_entry(&img, 0, 120_000), 0);
    assert!(plan(&img).is_clean());
}

#[test]
fn a_wrong_free_count_and_the_dirty_flag_are_fixed() {
    let mut img = esp();
    let fsinfo = OFFSET as usize + 512 + 488;
    img[fsinfo..fsinfo + 4].copy_from_slice(&7u32.to_le_bytes());
    img[OFFSET as usize + 0x41] |= 1;
    let p = plan(&img);
    assert!(p.dirty);
    assert_eq!(p.free_count.map(|f| f.0), Some(7));
    assert!(
        p.summary().contains("clear the dirty flag"),
        "{}",
        p.summary()
    );
    let (_, img) = repaired(img);
    assert!(plan(&img).is_clean());
    assert_eq!(img, esp());
}

/// Problems: the plan says what it does not understand, and the repair writes nothing.
fn refused(img: Vec<u8>, expect: &str) {
    let (p, after) = repaired(img.clone());
    assert!(
        p.problems.iter().any(|why| why.contains(expect)),
        "expected a problem with {expect:?}: {p:?}"
    );
    assert!(p.summary().starts_with("not repaired: "));
    assert!(after == img, "a plan with problems wrote something");
}

#[test]
fn a_chain_shorter_than_its_file_is_refused() {
    let mut img = esp();
    let c = first_cluster(img.clone(), "/p6os/a", "vmlinuz");
    set_fat_entry(&mut img, &[0, 1], c + 3, FAT_EOC);
    leak(&mut img, 100_000, 2);
    refused(img, "need");
}

#[test]
fn a_chain_longer_than_its_file_is_refused() {
    let mut img = esp();
    let c = first_cluster(img.clone(), "/p6os/b", "vmlinuz");
    set_fat_entry(&mut img, &[0, 1], c + 7, 100_000);
    set_fat_entry(&mut img, &[0, 1], 100_000, FAT_EOC);
    refused(img, "its chain has more");
}

#[test]
fn a_chain_through_a_free_cluster_is_refused() {
    let mut img = esp();
    let c = first_cluster(img.clone(), "/p6os/a", "vmlinuz");
    set_fat_entry(&mut img, &[0, 1], c + 3, 0);
    refused(img, "invalid cluster");
}

#[test]
fn cross_linked_files_are_refused() {
    let mut img = esp();
    let a = first_cluster(img.clone(), "/p6os/a", "initrd.img");
    let b = first_cluster(img.clone(), "/p6os/b", "vmlinuz");
    // b's chain continues into a's: b is longer than its size, and shares clusters with a.
    set_fat_entry(&mut img, &[0, 1], b + 7, a);
    refused(img, "/p6os/");
}

#[test]
fn a_looping_chain_is_refused() {
    let mut img = esp();
    let c = first_cluster(img.clone(), "/p6os/a", "vmlinuz");
    set_fat_entry(&mut img, &[0, 1], c + 5, c);
    refused(img, "/p6os/a/vmlinuz");
}

#[test]
fn a_directory_loop_is_refused() {
    // /p6os/a's entry pointing at the root directory.
    let img = esp();
    let mut vol = open(img);
    let c = vol.dir_cluster(&split_path("/p6os").unwrap()).unwrap();
    let mut d = vol.load_dir(c).unwrap();
    let e = reader::parse_dir(&d)
        .into_iter()
        .find(|e| e.name == "a")
        .unwrap();
    set_entry_cluster(d.slot_mut(e.short_slot), vol.geo.root_cluster);
    let pos = (OFFSET + vol.geo.cluster_pos(c)) as usize;
    let mut img = vol.into_inner().into_inner();
    img[pos..pos + d.data.len()].copy_from_slice(&d.data);
    refused(img, "shares clusters");
}

#[test]
fn an_unmirrored_volume_is_refused() {
    let mut img = esp();
    img[OFFSET as usize + 40] = 0x80;
    refused(img, "not mirrored");
}

#[test]
fn deep_directories_are_bounded() {
    let mut vol = open(format_in_memory(SIZE, &[]));
    let deep: String = (0..MAX_DEPTH + 2).map(|i| format!("/d{i}")).collect();
    vol.write_file(&format!("{deep}/f"), b"x").unwrap();
    refused(vol.into_inner().into_inner(), "deeper than");
}

#[test]
fn repeated_cuts_of_a_file_written_again_and_again_never_fill_the_volume() {
    // What the power-cut scenario does to the ESP, without a kernel: each round a big leftover
    // and a leak, then the repair. The free space comes back every time.
    let mut img = format_in_memory(SIZE, &[file("/p6os/a/vmlinuz", noise(100_000, 1))]);
    let mut free = None;
    for round in 0..50u32 {
        let mut vol = open(img);
        vol.write_file(
            "/p6os/b/vmlinuz.new",
            &noise(20 * MIB as usize / 8, u64::from(round)),
        )
        .unwrap();
        img = vol.into_inner().into_inner();
        leak(&mut img, 110_000 + round * 7, 5);
        let (p, after) = repaired(img);
        assert!(p.problems.is_empty(), "round {round}: {p:?}");
        img = after;
        // Round 0 creates /p6os/b (one cluster that stays).
        let now = open(img.clone()).free_bytes();
        assert_eq!(*free.get_or_insert(now), now, "round {round}");
    }
}
