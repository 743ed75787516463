use std::path::Path;

use proptest::prelude::*;

use super::*;
use Refusal::*;

const GIB: u64 = 1 << 30;

fn s(v: &str) -> String {
    v.to_string()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| s(x)).collect()
}

/// A removable USB stick, nothing in use: every check passes.
fn stick() -> TargetInfo {
    TargetInfo {
        path: "/dev/sdb".into(),
        exists: true,
        name: Some(s("sdb")),
        kind: TargetKind::WholeDisk,
        size: 16 * GIB,
        removable: true,
        model: Some(s("Cruzer Blade")),
        vendor: Some(s("SanDisk")),
        serial: Some(s("4C530001230118108165")),
        transport: Some(s("usb")),
        ..TargetInfo::default()
    }
}

/// The stick, changed by `f`.
fn stick_with(f: impl FnOnce(&mut TargetInfo)) -> TargetInfo {
    let mut info = stick();
    f(&mut info);
    info
}

fn fixed(path: &str, what: &str) -> Refusal {
    NotRemovable {
        path: path.into(),
        what: s(what),
    }
}

fn part_of(path: &str, disk: &str) -> Refusal {
    Partition {
        path: path.into(),
        disk: s(disk),
    }
}

fn small(need: u64, have: u64) -> Refusal {
    TooSmall { need, have }
}

/// The target `path`: `disk` or its partition `partition`, with `in_use()`.
fn seen(path: &str, disk: &SysDisk, partition: Option<&str>) -> TargetInfo {
    assemble(Path::new(path), disk, partition, &in_use())
}

#[test]
fn every_refusal_alone_with_its_message() {
    let partition = |i: &mut TargetInfo| {
        (i.path, i.kind) = ("/dev/sda1".into(), TargetKind::Partition { disk: s("sda") })
    };
    let bare = TargetInfo {
        path: "/dev/loop3".into(),
        exists: true,
        kind: TargetKind::WholeDisk,
        size: GIB,
        ..TargetInfo::default()
    };
    let cases: Vec<(TargetInfo, &str)> = vec![
        (stick_with(|i| i.exists = false), "/dev/sdb does not exist: `p6os devices` lists the candidates"),
        (stick_with(|i| i.kind = TargetKind::Other), "/dev/sdb is neither a block device nor a regular file: flash a whole disk (`p6os devices` lists them)"),
        (stick_with(partition), "/dev/sda1 is a partition of sda: flash the whole disk, /dev/sda"),
        (stick_with(|i| i.mounts = strings(&["/media/x", "/mnt/y z"])), "it is mounted at /media/x, /mnt/y z: unmount it first"),
        (stick_with(|i| i.holds_root = true), "it holds the root filesystem of this machine: pick another disk (`p6os devices` lists the candidates)"),
        (stick_with(|i| i.swap = true), "it is in use as swap: `swapoff` it first"),
        (stick_with(|i| i.size = GIB / 2), "it is too small: the image needs 1.0 GiB (1073741824 bytes), it has 0.5 GiB (536870912 bytes)"),
        (stick_with(|i| i.removable = false), "/dev/sdb is not removable (a fixed disk, usb SanDisk Cruzer Blade): pass --force if it really is the target"),
        (bare, "/dev/loop3 is not removable (a fixed disk): pass --force if it really is the target"),
    ];
    assert_eq!(refusals(&stick(), GIB, Force::No), vec![]);
    for (info, text) in cases {
        let got: Vec<String> = refusals(&info, GIB, Force::No)
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(got, [text], "{info:?}");
    }
}

#[test]
fn all_refusals_at_once_and_force_lifts_only_not_removable() {
    let info = TargetInfo {
        path: "/dev/sda2".into(),
        name: Some(s("sda2")),
        kind: TargetKind::Partition { disk: s("sda") },
        size: GIB,
        removable: false,
        vendor: Some(s("ATA")),
        model: Some(s("WDC WD10EZEX")),
        transport: Some(s("sata")),
        mounts: strings(&["/", "/home"]),
        swap: true,
        holds_root: true,
        ..stick()
    };
    let all = vec![
        part_of("/dev/sda2", "sda"),
        Mounted(strings(&["/home"])),
        HoldsRoot,
        HoldsSwap,
        small(2 * GIB, GIB),
        fixed("/dev/sda2", "a fixed disk, sata WDC WD10EZEX"),
    ];
    assert_eq!(refusals(&info, 2 * GIB, Force::No), all);
    assert_eq!(refusals(&info, 2 * GIB, Force::Yes), all[..5]);
    assert_eq!(
        refusals(&stick_with(|i| i.removable = false), GIB, Force::Yes),
        vec![]
    );
}

#[test]
fn root_is_not_also_reported_as_mounted_at_slash() {
    let root = stick_with(|i| (i.holds_root, i.mounts) = (true, strings(&["/"])));
    assert_eq!(refusals(&root, GIB, Force::No), vec![HoldsRoot]);
    let not_root = stick_with(|i| i.mounts = strings(&["/"]));
    assert_eq!(
        refusals(&not_root, GIB, Force::No),
        vec![Mounted(strings(&["/"]))]
    );
}

#[test]
fn a_regular_file_is_never_not_removable_nor_too_small() {
    let file = TargetInfo {
        path: "out.img".into(),
        exists: true,
        kind: TargetKind::RegularFile,
        ..TargetInfo::default()
    };
    assert_eq!(refusals(&file, 8 * GIB, Force::No), vec![]);
    let swapfile = TargetInfo { swap: true, ..file };
    assert_eq!(refusals(&swapfile, GIB, Force::No), vec![HoldsSwap]);
}

#[test]
fn size_exactly_equal_is_enough_one_byte_less_is_not() {
    let info = stick_with(|i| i.size = 1_000_000);
    assert_eq!(refusals(&info, 1_000_000, Force::No), vec![]);
    let want = vec![small(1_000_001, 1_000_000)];
    assert_eq!(refusals(&info, 1_000_001, Force::Yes), want);
}

#[test]
fn describe_a_stick_a_symlinked_disk_and_a_file() {
    let stick_text = "/dev/sdb\n  model:     SanDisk Cruzer Blade\n  size:      16.0 GiB (17179869184 bytes)\n  \
                      serial:    4C530001230118108165\n  transport: usb, removable\n";
    assert_eq!(describe(&stick()), stick_text);
    let by_id = stick_with(|i| {
        (i.path, i.name, i.size) = (
            "/dev/disk/by-id/ata-WDC".into(),
            Some(s("sda")),
            1_000_204_886_016,
        );
        (i.vendor, i.model, i.serial) = (Some(s("ATA")), Some(s("WDC WD10EZEX")), None);
        (i.transport, i.removable, i.mounts) = (Some(s("sata")), false, strings(&["/data"]));
    });
    let by_id_text = "/dev/disk/by-id/ata-WDC (sda)\n  model:     WDC WD10EZEX\n  size:      931.5 GiB (1000204886016 bytes)\n  \
                      serial:    unknown\n  transport: sata, fixed\n  mounted:   /data\n";
    assert_eq!(describe(&by_id), by_id_text);
    let file = stick_with(|i| {
        (i.path, i.kind, i.size) = ("out.img".into(), TargetKind::RegularFile, GIB / 2)
    });
    assert_eq!(
        describe(&file),
        "out.img (a regular file)\n  size:      0.5 GiB (536870912 bytes)\n"
    );
}

const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw
28 27 8:1 / /boot rw,relatime shared:2 master:3 - vfat /dev/sda1 rw
29 27 8:17 / /media/user/MY\\040STICK rw,nosuid - vfat /dev/sdb1 rw
30 27 0:45 /@home /home rw - btrfs /dev/sdc1 rw,subvol=/@home
this line is not mountinfo
31 27 8:18 / /no/separator rw
";

fn in_use() -> InUse {
    let mut mounts = parse_mountinfo(MOUNTINFO);
    mounts[4].source_dev = Some(DevNum(8, 33)); // what the reader finds for /dev/sdc1
    InUse {
        mounts,
        swap_devs: vec![DevNum(254, 1)],
    }
}

#[test]
fn mountinfo_fields_escapes_optional_fields_and_junk() {
    let m = parse_mountinfo(MOUNTINFO);
    let fields = |e: &MountEntry| {
        (
            e.dev,
            e.mount_point.clone(),
            e.fstype.clone(),
            e.source.clone(),
        )
    };
    let want = [
        (Some(DevNum(0, 21)), "/proc", "proc", "proc"),
        (Some(DevNum(254, 0)), "/", "ext4", "/dev/mapper/vg-root"),
        (Some(DevNum(8, 1)), "/boot", "vfat", "/dev/sda1"),
        (
            Some(DevNum(8, 17)),
            "/media/user/MY STICK",
            "vfat",
            "/dev/sdb1",
        ),
        (Some(DevNum(0, 45)), "/home", "btrfs", "/dev/sdc1"),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|(d, p, f, src)| (*d, s(p), s(f), s(src)))
        .collect();
    assert_eq!(m.iter().map(fields).collect::<Vec<_>>(), want);
    assert!(m.iter().all(|e| e.source_dev.is_none()));
    assert_eq!(parse_mountinfo(""), vec![]);
    let odd = &parse_mountinfo("1 2 x:y / /c\\011d\\999\\134040 rw - f")[0];
    assert_eq!(
        (odd.dev, odd.mount_point.as_str(), odd.source.as_str()),
        (None, "/c\td\\999\\040", "")
    );
}

#[test]
fn swaps_header_escapes_and_junk() {
    let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                /dev/dm-1                               partition\t8388604\t\t0\t\t-2\n\
                /swap\\040file file 1024 0 -3\n\n garbage\n";
    assert_eq!(parse_swaps(text), strings(&["/dev/dm-1", "/swap file"]));
    assert_eq!(parse_swaps(""), Vec::<String>::new());
}

#[test]
fn device_numbers() {
    fn makedev(major: u64, minor: u64) -> u64 {
        ((major & 0xfffff000) << 32)
            | ((major & 0xfff) << 8)
            | ((minor & 0xffffff00) << 12)
            | (minor & 0xff)
    }
    for (major, minor) in [(8, 0), (259, 3), (254, 300), (4095, 1_048_575), (5000, 7)] {
        assert_eq!(
            DevNum::from_rdev(makedev(major, minor)),
            DevNum(major as u32, minor as u32)
        );
    }
    assert_eq!(DevNum::parse(" 8:16\n"), Some(DevNum(8, 16)));
    for bad in ["", "8", "8:", ":1", "a:b", "8:-1", "99999999999:0"] {
        assert_eq!(DevNum::parse(bad), None, "{bad:?}");
    }
}

fn part(name: &str, dev: &str, size: &str, holders: &[&str]) -> SysPart {
    SysPart {
        name: s(name),
        dev: s(dev),
        size: s(size),
        holders: strings(holders),
    }
}

/// A SATA disk: sda1 is /boot, sda2 is an LVM PV holding root (dm-0) and swap (dm-1).
fn sata() -> SysDisk {
    SysDisk {
        node: part("sda", "8:0", "1953525168", &[]),
        removable: s("0"),
        model: Some(s("WDC WD10EZEX-08W")),
        vendor: Some(s("ATA     ")),
        serials: strings(&["", "WD-WCC6Y0XXXX"]),
        devpath: s("/sys/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda"),
        subsystems: strings(&["scsi", "scsi", "scsi", "pci"]),
        partitions: vec![
            part("sda1", "8:1", "1048576", &[]),
            part("sda2", "8:2", "1000000", &["254:0", "254:1"]),
        ],
        ..SysDisk::default()
    }
}

fn usb() -> SysDisk {
    SysDisk {
        node: part("sdb", "8:16", "31260672", &[]),
        removable: s("1"),
        model: Some(s("Cruzer Blade    ")),
        vendor: Some(s("SanDisk ")),
        serials: strings(&["4C530001230118108165"]),
        devpath: s("/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb"),
        subsystems: strings(&["scsi", "scsi", "scsi", "usb", "usb", "usb", "pci"]),
        partitions: vec![part("sdb1", "8:17", "31258624", &[])],
        ..SysDisk::default()
    }
}

#[test]
fn assemble_a_usb_stick_with_a_mounted_partition() {
    let info = seen("/dev/sdb", &usb(), None);
    let want =
        stick_with(|i| (i.size, i.mounts) = (31260672 * 512, strings(&["/media/user/MY STICK"])));
    assert_eq!(info, want);
}

#[test]
fn assemble_the_system_disk_through_its_holders() {
    let info = seen("/dev/sda", &sata(), None);
    assert_eq!(
        (&info.kind, info.name.as_deref(), info.size),
        (&TargetKind::WholeDisk, Some("sda"), 1953525168 * 512)
    );
    assert_eq!(info.mounts, strings(&["/", "/boot"]));
    assert!(info.holds_root && info.swap && !info.removable);
    assert_eq!(
        (info.transport.as_deref(), info.vendor.as_deref()),
        (Some("sata"), Some("ATA"))
    );
    assert_eq!(info.serial.as_deref(), Some("WD-WCC6Y0XXXX"));
    let why = refusals(&info, GIB, Force::Yes);
    assert_eq!(
        why,
        vec![Mounted(strings(&["/boot"])), HoldsRoot, HoldsSwap]
    );
}

#[test]
fn assemble_a_partition_sees_only_itself() {
    let boot = seen("/dev/sda1", &sata(), Some("sda1"));
    assert_eq!(boot.kind, TargetKind::Partition { disk: s("sda") });
    assert_eq!(
        (boot.name.as_deref(), boot.size),
        (Some("sda1"), 1048576 * 512)
    );
    assert_eq!(
        (boot.mounts, boot.holds_root, boot.swap),
        (strings(&["/boot"]), false, false)
    );
    let pv = seen("/dev/sda2", &sata(), Some("sda2"));
    assert_eq!(
        (pv.mounts, pv.holds_root, pv.swap),
        (strings(&["/"]), true, true)
    );
    let gone = seen("/dev/sda9", &sata(), Some("sda9"));
    assert_eq!((gone.size, gone.mounts.len()), (0, 0));
    assert!(refusals(&gone, 1, Force::Yes).contains(&part_of("/dev/sda9", "sda")));
}

#[test]
fn mounts_match_by_source_device_when_mountinfo_shows_an_anonymous_one() {
    let node = part("sdc", "8:32", "100", &[]);
    let disk = SysDisk {
        node,
        partitions: vec![part("sdc1", "8:33", "100", &[])],
        ..SysDisk::default()
    };
    let info = seen("/dev/sdc", &disk, None);
    assert_eq!(info.mounts, strings(&["/home"]));
}

#[test]
fn odd_sysfs_contents_are_unknown_small_or_fixed() {
    let odd = SysDisk {
        node: part("sdz", "garbage", "99999999999999999999999", &["x:"]),
        removable: s("yes"),
        model: Some(s(" \t\n")),
        vendor: Some(s("\u{1b}[31mVendor\u{0}")),
        serials: strings(&["", "   ", "\u{7}"]),
        partitions: vec![part("sdz1", "", "-5", &["x"])],
        ..SysDisk::default()
    };
    let info = seen("/dev/sdz", &odd, None);
    assert_eq!(
        (info.size, info.removable, info.mounts.len()),
        (0, false, 0)
    );
    assert_eq!(
        (info.model, info.vendor.as_deref(), info.serial),
        (None, Some("[31mVendor"), None)
    );
    let mut huge = odd.clone();
    huge.node.size = s("36028797018963968"); // 2^55 sectors: × 512 overflows
    assert_eq!(seen("/dev/sdz", &huge, None).size, 0);
}

#[test]
fn transports() {
    // name, devpath, subsystems (`-`: none, else `,`-separated), transport (`-`: none).
    // "usbhid" and "ata_piix" are not usb or ata path segments.
    let table = format!(
        "sdb {} - usb\nsda {} scsi sata\n{}",
        usb().devpath,
        sata().devpath,
        "nvme0n1 /sys/devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1 nvme,pci nvme
        mmcblk0 /sys/devices/platform/fe320000.mmc/mmc_host/mmc1/mmc1:59b4/block/mmcblk0 mmc mmc
        vda /sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda virtio,pci virtio
        loop3 /sys/devices/virtual/block/loop3 - loop
        nbd0 /sys/devices/virtual/block/nbd0 - nbd
        sdc /sys/devices/platform/host2/target2:0:0/2:0:0:0/block/sdc scsi scsi
        zram0 /sys/devices/virtual/block/zram0 - -
        sdd /sys/devices/usbhid/ata_piix/block/sdd - -"
    );
    for line in table.lines() {
        let [name, path, subsystems, want] = line.split_whitespace().collect::<Vec<_>>()[..] else {
            panic!("bad case {line:?}")
        };
        let subsystems: Vec<String> = subsystems.split(',').filter(|x| *x != "-").map(s).collect();
        let want = Some(want).filter(|w| *w != "-");
        assert_eq!(
            transport(name, path, &subsystems).as_deref(),
            want,
            "{line}"
        );
    }
}

#[test]
fn sd_cards_are_removable_emmc_is_not() {
    let card = |kind: &str| SysDisk {
        node: part("mmcblk0", "179:0", "62333952", &[]),
        removable: s("0"),
        subsystems: strings(&["mmc", "mmc_host", "platform"]),
        mmc_type: Some(s(kind)),
        ..SysDisk::default()
    };
    let removable = |kind| seen("/dev/mmcblk0", &card(kind), None).removable;
    assert!(removable("SD") && !removable("MMC"));
}

#[test]
fn vpd_page_80_serials() {
    assert_eq!(
        vpd_serial(b"\x00\x80\x00\x0a  S3Z9NB0K\xff").as_deref(),
        Some("S3Z9NB0K")
    );
    assert_eq!(vpd_serial(b"\x00\x80\x00\xffAB").as_deref(), Some("AB"));
    assert_eq!(vpd_serial(b"\x00\x80\x00\x00"), None);
    assert_eq!(vpd_serial(b"\x00\x80"), None);
}

#[test]
fn which_disks_are_listed() {
    let shown = |disk: SysDisk, all: bool| {
        let info = seen(&format!("/dev/{}", disk.node.name), &disk, None);
        listed(&disk, &info, all)
    };
    assert!(shown(usb(), false) && shown(usb(), true));
    assert!(!shown(sata(), false) && shown(sata(), true));
    let lo = |backing: Option<&str>| SysDisk {
        node: part("loop0", "7:0", "2048", &[]),
        devpath: s("/sys/devices/virtual/block/loop0"),
        loop_backing: backing.map(s),
        ..SysDisk::default()
    };
    assert!(shown(lo(Some("/tmp/disk.img")), true) && !shown(lo(Some("/tmp/disk.img")), false));
    assert!(!shown(lo(None), true) && !shown(lo(Some(" ")), true));
    for name in ["zram0", "ram0", "dm-0", "md0"] {
        let devpath = format!("/sys/devices/virtual/block/{name}");
        let virt = SysDisk {
            node: part(name, "1:0", "8", &[]),
            removable: s("1"),
            devpath,
            ..SysDisk::default()
        };
        assert!(!shown(virt, true), "{name}");
    }
    let sr0 = SysDisk {
        node: part("sr0", "11:0", "8", &[]),
        removable: s("1"),
        ..SysDisk::default()
    };
    assert!(!shown(sr0, true));
    let mut empty_reader = usb();
    empty_reader.node.size = s("0");
    assert!(!shown(empty_reader, true));
}

fn sys_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[0-9:]{0,24}", Just(String::new())]
}

proptest! {
    #[test]
    fn parsers_never_panic(text in any::<String>(), bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        let _ = (parse_mountinfo(&text), parse_swaps(&text), vpd_serial(&bytes), DevNum::parse(&text));
    }

    #[test]
    fn assemble_never_panics_on_odd_sysfs(
        name in sys_text(), dev in sys_text(), size in sys_text(), removable in sys_text(),
        devpath in sys_text(), pdev in sys_text(), psize in sys_text(), mountinfo in any::<String>(),
    ) {
        let disk = SysDisk {
            node: SysPart { name, dev, size, holders: vec![] },
            removable, devpath: devpath.clone(), model: Some(devpath),
            partitions: vec![SysPart { name: s("p1"), dev: pdev, size: psize, holders: vec![] }],
            ..SysDisk::default()
        };
        let use_ = InUse { mounts: parse_mountinfo(&mountinfo), swap_devs: vec![] };
        for p in [None, Some("p1"), Some("nope")] {
            let info = assemble(Path::new("/dev/x"), &disk, p, &use_);
            let _ = (describe(&info), listed(&disk, &info, true));
            let _: Vec<String> = refusals(&info, u64::MAX, Force::No).iter().map(|r| r.to_string()).collect();
        }
    }
}
