//! Unit tests and in-memory round trips; `tool_tests` checks against the real tools.

use std::io::{Cursor, Read, Seek};

use super::names::{lfn_checksum, lfn_entries, plain_short_name, short_name_for};
use super::*;

/// Volumes in image files start 1 MiB in, like a partition.
pub(super) const OFFSET: u64 = 1 << 20;
pub(super) const MIB: u64 = 1 << 20;

pub(super) fn opts() -> FormatOptions {
    FormatOptions {
        volume_id: 0x1234_ABCD,
        label: None,
    }
}

/// Deterministic pseudo-random bytes (xorshift64).
pub(super) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub(super) fn file(path: &str, data: Vec<u8>) -> FatFile {
    FatFile {
        path: path.to_string(),
        data,
    }
}

/// What an ESP of ours looks like.
pub(super) fn esp_files() -> Vec<FatFile> {
    vec![
        file("/EFI/BOOT/BOOTX64.EFI", noise(300_000, 1)),
        file(
            "/loader/loader.conf",
            b"timeout 3\ndefault p6os-*\n".to_vec(),
        ),
        file(
            "/loader/entries/p6os-1.0.0-a+3.conf",
            b"title P6OS 1.0.0 (A)\nlinux /p6os/a/vmlinuz\n".to_vec(),
        ),
        file(
            "/loader/entries/p6os-2-b+2-1.conf",
            b"title P6OS 2 (B)\nlinux /p6os/b/vmlinuz\n".to_vec(),
        ),
        file("/p6os/a/vmlinuz", noise(5 * MIB as usize + 123, 2)),
        file("/p6os/a/initrd.img", noise(2 * MIB as usize, 3)),
        file("/p6os/b/vmlinuz", noise(4096, 4)),
        file("/p6os/manifest.json", br#"{"version":"1.0.0"}"#.to_vec()),
        file("/p6os/empty", Vec::new()),
    ]
}

pub(super) fn format_in_memory(size: u64, files: &[FatFile]) -> Vec<u8> {
    let mut dev = Cursor::new(vec![0u8; (OFFSET + size) as usize]);
    format(&mut dev, OFFSET, size, &opts(), files).unwrap();
    dev.into_inner()
}

pub(super) fn assert_contents<D: Read + Seek>(vol: &mut FatVolume<D>, files: &[FatFile]) {
    for f in files {
        let got = vol.read_file(&f.path).unwrap();
        assert!(got == f.data, "content of {} differs", f.path);
    }
}

// ---------------------------------------------------------------------------------------------
// Names

#[test]
fn plain_short_names_need_no_lfn() {
    for name in [
        "BOOTX64.EFI",
        "EFI",
        "BOOT",
        "A",
        "12345678.123",
        "A-B_C~1.$$$",
    ] {
        assert!(plain_short_name(name).is_some(), "{name}");
    }
    assert_eq!(&plain_short_name("BOOTX64.EFI").unwrap(), b"BOOTX64 EFI");
    for name in [
        "vmlinuz",
        "a",
        "Boot",
        "LOADER.CONF",
        "A.B.C",
        "ABCDEFGHI",
        ".A",
        "A B",
        "A+B",
        "ÄB",
    ] {
        assert!(plain_short_name(name).is_none(), "{name}");
    }
}

#[test]
fn short_names_like_windows_and_mtools() {
    // Expected values cross-checked with mtools 4.0 (`mcopy` + `mdir`).
    let cases: &[(&str, &[u8; 11])] = &[
        ("p6os-1.0.0-a+3.conf", b"P6OS-1~1CON"),
        ("p6os-2-b+2-1.conf", b"P6OS-2~1CON"),
        ("loader.conf", b"LOADER~1CON"),
        ("manifest.json", b"MANIFE~1JSO"),
        ("unattended.yaml", b"UNATTE~1YAM"),
        ("initrd.img", b"INITRD  IMG"),
        ("vmlinuz", b"VMLINUZ    "),
        ("p6os", b"P6OS       "),
        ("a", b"A          "),
        ("Mixed.Txt", b"MIXED   TXT"),
        ("a b.txt", b"AB~1    TXT"),
        ("foo.bar.baz", b"FOOBAR~1BAZ"),
        (".bashrc", b"BASHRC~1   "),
        ("x[1];=,+.t", b"X_1___~1T  "),
        ("ab cd ef gh.txt", b"ABCDEF~1TXT"),
        ("über.txt", b"_BER~1  TXT"),
    ];
    for (name, want) in cases {
        let got = short_name_for(name, |_| false).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(*want),
            "{name}"
        );
    }
}

#[test]
fn short_names_are_unique_within_a_directory() {
    let mut taken = std::collections::HashSet::new();
    let mut got = Vec::new();
    for i in 0..12 {
        let name = format!("loader-{i}.conf");
        let s = short_name_for(&name, |c| taken.contains(c)).unwrap();
        assert!(taken.insert(s));
        got.push(String::from_utf8_lossy(&s).into_owned());
    }
    assert_eq!(got[0], "LOADER~1CON");
    assert_eq!(got[1], "LOADER~2CON");
    assert_eq!(got[8], "LOADER~9CON");
    assert_eq!(got[9], "LOADE~10CON");
    // A lower-case name that fits 8.3 gets a tail only on collision.
    taken.insert(*b"VMLINUZ    ");
    let s = short_name_for("vmlinuz", |c| taken.contains(c)).unwrap();
    assert_eq!(&s, b"VMLINU~1   ");
}

#[test]
fn lfn_checksum_matches_mtools() {
    // Checksums read from LFN entries written by mcopy.
    assert_eq!(lfn_checksum(b"LOADER~1CON"), 0xB6);
    assert_eq!(lfn_checksum(b"P6OS-1~1CON"), 0xF7);
    assert_eq!(lfn_checksum(b"FOOBAR~1BAZ"), 0xFD);
}

#[test]
fn lfn_entry_layout() {
    let short = *b"LOADER~1CON";
    let e = lfn_entries("loader.conf", &short);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0][0], 0x41);
    assert_eq!(e[0][11], 0x0F);
    assert_eq!(e[0][13], 0xB6);
    assert_eq!(&e[0][1..3], &[b'l', 0]);
    assert_eq!(&e[0][26..28], &[0, 0]);
    // 11 characters, then a NUL terminator, then 0xFFFF padding.
    assert_eq!(&e[0][28..30], &[0, 0]);
    assert_eq!(&e[0][30..32], &[0xFF, 0xFF]);

    // Exactly 13 characters: no terminator. 14: two entries, last part first.
    let e = lfn_entries("abcdefghijklm", &short);
    assert_eq!(e.len(), 1);
    assert_eq!(&e[0][30..32], &[b'm', 0]);
    let e = lfn_entries("abcdefghijklmn", &short);
    assert_eq!(e.len(), 2);
    assert_eq!((e[0][0], e[1][0]), (0x42, 0x01));
    assert_eq!(&e[0][1..5], &[b'n', 0, 0, 0]);
}

#[test]
fn invalid_paths_and_names_are_rejected() {
    for path in [
        "EFI/x",
        "/a//b",
        "/a/../b",
        "/a/./b",
        "/a:b",
        "/a*",
        "/trailing.",
        "/trailing ",
        "/ctl\u{1}",
    ] {
        let err = format(
            &mut Cursor::new(Vec::new()),
            0,
            64 * MIB,
            &opts(),
            &[file(path, vec![1])],
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                FatError::InvalidPath { .. } | FatError::InvalidName { .. }
            ),
            "{path}: {err}"
        );
    }
    let long = format!("/{}", "x".repeat(256));
    assert!(matches!(
        format(
            &mut Cursor::new(Vec::new()),
            0,
            64 * MIB,
            &opts(),
            &[file(&long, vec![])]
        ),
        Err(FatError::InvalidName { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Geometry

#[test]
fn geometry_picks_largest_cluster_with_enough_clusters() {
    let spc = |size: u64| Geometry::for_new_volume(size).unwrap().sectors_per_cluster;
    assert_eq!(spc(34 * MIB), 1);
    assert_eq!(spc(64 * MIB), 1);
    assert_eq!(spc(128 * MIB), 2);
    assert_eq!(spc(256 * MIB), 4);
    assert_eq!(spc(260 * MIB), 8);
    assert_eq!(spc(1024 * MIB), 8);
    for size in [
        34 * MIB,
        64 * MIB,
        200 * MIB,
        256 * MIB,
        300 * MIB,
        4096 * MIB,
    ] {
        let g = Geometry::for_new_volume(size).unwrap();
        assert!(g.cluster_count >= MIN_CLUSTERS, "{size}");
        assert!(u64::from(g.fat_sectors) * 128 >= u64::from(g.cluster_count) + 2);
        // The FAT is minimal: one sector less would not hold every cluster.
        let data = u64::from(g.total_sectors) - 32 - 2 * u64::from(g.fat_sectors - 1);
        let clusters = data / u64::from(g.sectors_per_cluster);
        assert!(u64::from(g.fat_sectors - 1) * 128 < clusters + 2, "{size}");
    }
}

#[test]
fn too_small_volume_is_an_error_with_sizes() {
    let min = min_volume_size();
    assert!(Geometry::for_new_volume(min).is_ok());
    let err = Geometry::for_new_volume(min - 512).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FatError::VolumeTooSmall { .. }));
    assert!(
        msg.contains(&(min - 512).to_string()) && msg.contains(&min.to_string()),
        "{msg}"
    );
    assert!(matches!(
        format(&mut Cursor::new(Vec::new()), 0, 32 * MIB, &opts(), &[]),
        Err(FatError::VolumeTooSmall { .. })
    ));
    assert!(matches!(
        format(&mut Cursor::new(Vec::new()), 100, 64 * MIB, &opts(), &[]),
        Err(FatError::Misaligned { offset: 100 })
    ));
}

#[test]
fn boot_sector_fields() {
    let img = format_in_memory(64 * MIB, &[]);
    let bs = &img[OFFSET as usize..OFFSET as usize + 512];
    assert_eq!(&bs[3..11], b"P6OS    ");
    assert_eq!(le16(bs, 11), 512);
    assert_eq!(bs[13], 1);
    assert_eq!(le16(bs, 14), 32);
    assert_eq!(bs[16], 2);
    assert_eq!(bs[21], 0xF8);
    assert_eq!(le32(bs, 28), (OFFSET / 512) as u32);
    assert_eq!(le32(bs, 32), (64 * MIB / 512) as u32);
    assert_eq!(le32(bs, 44), 2);
    assert_eq!((le16(bs, 48), le16(bs, 50)), (1, 6));
    assert_eq!(bs[66], 0x29);
    assert_eq!(le32(bs, 67), 0x1234_ABCD);
    assert_eq!(&bs[71..82], b"NO NAME    ");
    assert_eq!(&bs[82..90], b"FAT32   ");
    assert_eq!(&bs[510..512], &[0x55, 0xAA]);
    let backup = &img[OFFSET as usize + 6 * 512..OFFSET as usize + 7 * 512];
    assert_eq!(bs, backup);
    // Empty root: one cluster, no volume label entry.
    let vol = &img[OFFSET as usize..];
    let g = Geometry::for_new_volume(64 * MIB).unwrap();
    let root = &vol[g.cluster_pos(2) as usize..][..512];
    assert!(root.iter().all(|&b| b == 0));
}

#[test]
fn volume_labels_are_checked() {
    let label = VolumeLabel::new("P6OS-CONFIG").unwrap();
    assert_eq!(label.as_bytes(), b"P6OS-CONFIG");
    assert_eq!(VolumeLabel::new("ESP").unwrap().as_bytes(), b"ESP        ");
    assert_eq!(VolumeLabel::new("A B_1").unwrap().to_string(), "A B_1");
    for (bad, why) in [
        ("", "1 to 11"),
        ("P6OS-CONFIG1", "1 to 11"),
        (" ESP", "space"),
        ("ESP ", "space"),
        ("cidata", "upper case"),
        ("A.B", "only A-Z"),
        ("A/B", "only A-Z"),
        ("ÉTÉ", "only A-Z"),
        ("NO NAME", "no label"),
    ] {
        let err = VolumeLabel::new(bad).unwrap_err();
        assert!(
            matches!(&err, FatError::InvalidLabel { label, .. } if label == bad)
                && err.to_string().contains(why),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn a_label_goes_to_both_boot_sectors_and_first_in_the_root() {
    let size = 64 * MIB;
    let opts = FormatOptions {
        label: Some(VolumeLabel::new("P6OS-CONFIG").unwrap()),
        ..opts()
    };
    let files = [file("/unattended.yaml", b"hostname: a\n".to_vec())];
    let mut dev = Cursor::new(vec![0u8; (OFFSET + size) as usize]);
    format(&mut dev, OFFSET, size, &opts, &files).unwrap();
    let img = dev.into_inner();
    let vol = &img[OFFSET as usize..];
    assert_eq!(&vol[71..82], b"P6OS-CONFIG");
    assert_eq!(&vol[6 * 512 + 71..6 * 512 + 82], b"P6OS-CONFIG");
    let g = Geometry::for_new_volume(size).unwrap();
    let root = &vol[g.cluster_pos(2) as usize..][..64];
    assert_eq!(&root[..11], b"P6OS-CONFIG");
    assert_eq!(root[11], ATTR_VOLUME_ID);
    assert_eq!(entry_cluster(&root[..32]), 0);
    // Then the file: its long name's entry first.
    assert_eq!(root[32 + 11], ATTR_LFN);

    // Not listed, not in the way of the reader, the writer or the repair.
    let mut vol = FatVolume::open(Cursor::new(img), OFFSET, size).unwrap();
    let names: Vec<String> = vol
        .read_dir("/")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["unattended.yaml"]);
    vol.write_file("/unattended.yaml.sig", b"sig\n").unwrap();
    vol.rename("/unattended.yaml", "/user-data").unwrap();
    assert_eq!(vol.read_file("/user-data").unwrap(), b"hostname: a\n");
    assert!(vol.plan_repair(&|_, _| false).unwrap().is_clean());
    let img = vol.into_inner().into_inner();
    assert_eq!(
        &img[OFFSET as usize + 71..OFFSET as usize + 82],
        b"P6OS-CONFIG"
    );
}

// ---------------------------------------------------------------------------------------------
// Round trips in memory

#[test]
fn round_trip_reads_back_every_file() {
    let files = esp_files();
    let img = format_in_memory(64 * MIB, &files);
    let mut vol = FatVolume::open(Cursor::new(img), OFFSET, 64 * MIB).unwrap();
    assert_contents(&mut vol, &files);

    let names = |v: Vec<DirEntry>| v.into_iter().map(|e| e.name).collect::<Vec<_>>();
    assert_eq!(names(vol.read_dir("/").unwrap()), ["EFI", "loader", "p6os"]);
    assert_eq!(
        names(vol.read_dir("/loader/entries").unwrap()),
        ["p6os-1.0.0-a+3.conf", "p6os-2-b+2-1.conf"]
    );
    let p6os = vol.read_dir("/p6os/").unwrap();
    assert_eq!(names(p6os.clone()), ["a", "b", "empty", "manifest.json"]);
    assert!(p6os[0].is_dir && !p6os[3].is_dir);
    assert_eq!(p6os[3].size, 19);
    assert_eq!(p6os[3].short_name, "MANIFE~1.JSO");

    // FAT lookups are case-insensitive and accept short aliases.
    assert_eq!(
        vol.read_file("/efi/boot/bootx64.efi").unwrap(),
        files[0].data
    );
    assert_eq!(
        vol.read_file("/LOADER/LOADER~1.CON").unwrap(),
        files[1].data
    );
    assert!(vol.exists("/").unwrap());
    assert!(vol.exists("/P6OS/A").unwrap());
    assert!(!vol.exists("/p6os/c").unwrap());
    assert!(!vol.exists("/p6os/manifest.json/x").unwrap());
    assert!(matches!(
        vol.read_file("/p6os/a"),
        Err(FatError::IsADirectory { .. })
    ));
    assert!(matches!(
        vol.read_dir("/p6os/manifest.json"),
        Err(FatError::NotADirectory { .. })
    ));
    assert!(matches!(
        vol.read_file("/nope/x"),
        Err(FatError::NotFound { path }) if path == "/nope"
    ));
}

#[test]
fn format_is_deterministic_and_ignores_input_order() {
    let files = esp_files();
    let a = format_in_memory(64 * MIB, &files);
    let b = format_in_memory(64 * MIB, &files);
    assert!(a == b, "two formats differ");
    let mut reversed = files.clone();
    reversed.reverse();
    let c = format_in_memory(64 * MIB, &reversed);
    assert!(a == c, "input order changed the image");
    let mut other = opts();
    other.volume_id ^= 1;
    let mut dev = Cursor::new(vec![0u8; (OFFSET + 64 * MIB) as usize]);
    format(&mut dev, OFFSET, 64 * MIB, &other, &files).unwrap();
    assert!(dev.into_inner() != a, "volume id is not used");
}

#[test]
fn bad_file_lists_are_rejected() {
    let fmt = |files: &[FatFile]| {
        format(
            &mut Cursor::new(vec![0u8; (64 * MIB) as usize]),
            0,
            64 * MIB,
            &opts(),
            files,
        )
    };
    assert!(matches!(
        fmt(&[file("/a/b", vec![1]), file("/A/B", vec![2])]),
        Err(FatError::DuplicatePath { .. })
    ));
    assert!(matches!(
        fmt(&[file("/a", vec![1]), file("/a/b", vec![2])]),
        Err(FatError::NotADirectory { .. })
    ));
    assert!(matches!(
        fmt(&[file("/a/b", vec![1]), file("/a", vec![2])]),
        Err(FatError::IsADirectory { .. })
    ));
    assert!(matches!(
        fmt(&[file("/", vec![1])]),
        Err(FatError::IsADirectory { .. })
    ));
    assert!(matches!(
        fmt(&[file("/big", vec![0; 65 * MIB as usize])]),
        Err(FatError::NoSpace { .. })
    ));
}

#[test]
fn modifications_in_memory() {
    let files = esp_files();
    let img = format_in_memory(64 * MIB, &files);
    let mut vol = FatVolume::open(Cursor::new(img), OFFSET, 64 * MIB).unwrap();
    let free0 = vol.free_bytes();

    vol.write_file("/p6os/unattended.yaml", b"hostname: edge\n")
        .unwrap();
    assert_eq!(
        vol.read_file("/P6OS/UNATTENDED.YAML").unwrap(),
        b"hostname: edge\n"
    );
    // Replacing keeps the original name and frees the old clusters.
    vol.write_file("/P6OS/A/VMLINUZ", &[7; 10]).unwrap();
    assert_eq!(vol.read_file("/p6os/a/vmlinuz").unwrap(), [7; 10]);
    assert!(vol
        .read_dir("/p6os/a")
        .unwrap()
        .iter()
        .any(|e| e.name == "vmlinuz"));
    assert!(vol.free_bytes() > free0);
    vol.write_file("/p6os/a/vmlinuz", &files[4].data).unwrap();
    vol.remove_file("/p6os/unattended.yaml").unwrap();
    assert_eq!(vol.free_bytes(), free0);
    assert!(!vol.exists("/p6os/unattended.yaml").unwrap());
    assert_contents(&mut vol, &files);

    assert!(matches!(
        vol.remove_file("/p6os/a"),
        Err(FatError::IsADirectory { .. })
    ));
    assert!(matches!(
        vol.write_file("/p6os/a", b"x"),
        Err(FatError::IsADirectory { .. })
    ));
    assert!(matches!(
        vol.write_file("/p6os/manifest.json/x", b"x"),
        Err(FatError::NotADirectory { .. })
    ));
    assert!(matches!(
        vol.rename("/p6os", "/p6os/a/p6os"),
        Err(FatError::InvalidRename { .. })
    ));
    assert!(matches!(
        vol.rename("/p6os/a", "/p6os/b"),
        Err(FatError::AlreadyExists { .. })
    ));
    let free = vol.free_bytes();
    assert!(matches!(
        vol.write_file("/huge", &vec![0; 70 * MIB as usize]),
        Err(FatError::NoSpace { .. })
    ));
    assert_eq!(vol.free_bytes(), free);

    // The same modifications give the same bytes.
    let run = || {
        let img = format_in_memory(64 * MIB, &files);
        let mut vol = FatVolume::open(Cursor::new(img), OFFSET, 64 * MIB).unwrap();
        vol.write_file("/p6os/unattended.yaml", b"x: 1\n").unwrap();
        vol.write_file("/p6os/a/vmlinuz", &noise(100_000, 6))
            .unwrap();
        vol.rename("/loader/loader.conf", "/loader/loader.conf.old")
            .unwrap();
        vol.remove_file("/p6os/b/vmlinuz").unwrap();
        vol.into_inner().into_inner()
    };
    assert!(run() == run(), "modifications are not deterministic");
}
