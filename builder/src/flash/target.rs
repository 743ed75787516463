//! `p6os flash` targets: what a path is (disk, partition, file), whether writing it is safe, and
//! the candidates `p6os devices` lists.
//!
//! A pure core (`parse_mountinfo`, `parse_swaps`, `assemble`, `refusals`, `describe`) over a thin
//! reader (`inspect`, `list_devices`) that only copies raw texts out of `/sys` and `/proc`: odd
//! sysfs contents are the core's problem, and it turns them into "unknown", size 0 or "not
//! removable", never into a panic and never into a more permissive answer.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub enum TargetKind {
    RegularFile,
    WholeDisk,
    /// `disk` is the kernel name of the whole disk, e.g. `sda`.
    Partition {
        disk: String,
    },
    /// Exists but is neither a block device nor a regular file; also the kind of a missing path.
    #[default]
    Other,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TargetInfo {
    /// As given (not resolved: `/dev/disk/by-id/...` stays as typed).
    pub path: PathBuf,
    /// `false` when nothing is at `path`; `refusals` then says `NotFound` and nothing else.
    pub exists: bool,
    /// Kernel name: `sda`, `loop3`, `nvme0n1`.
    pub name: Option<String>,
    pub kind: TargetKind,
    /// Bytes: a regular file's length; `/sys/class/block/X/size` × 512 for a device.
    pub size: u64,
    /// `removable` is 1, the transport is USB, or an SD card on an MMC host.
    pub removable: bool,
    pub model: Option<String>,
    pub vendor: Option<String>,
    pub serial: Option<String>,
    /// `usb`, `sata`, `nvme`, `mmc`, `virtio`, `scsi`, `loop`, `nbd`.
    pub transport: Option<String>,
    /// Mount points of the device, its partitions and whatever is stacked on them (dm, md).
    pub mounts: Vec<String>,
    /// It, a partition of it or a device stacked on them is in `/proc/swaps`; for a regular
    /// file: it is a swap file.
    pub swap: bool,
    /// It, a partition of it or a device stacked on them is the source of `/`.
    pub holds_root: bool,
}

/// A reason not to write the target: lowercase, what is wrong, then what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{} does not exist: `p6os devices` lists the candidates", .0.display())]
    NotFound(PathBuf),
    #[error("it is mounted at {}: unmount it first", .0.join(", "))]
    Mounted(Vec<String>),
    #[error("it holds the root filesystem of this machine: pick another disk (`p6os devices` lists the candidates)")]
    HoldsRoot,
    #[error("it is in use as swap: `swapoff` it first")]
    HoldsSwap,
    #[error("{} is a partition of {disk}: flash the whole disk, /dev/{disk}", .path.display())]
    Partition { path: PathBuf, disk: String },
    #[error("it is too small: the image needs {} ({need} bytes), it has {} ({have} bytes)", gib(*need), gib(*have))]
    TooSmall { need: u64, have: u64 },
    /// `what`: "a fixed disk", then the transport and model when known.
    #[error("{} is not removable ({what}): pass --force if it really is the target", .path.display())]
    NotRemovable { path: PathBuf, what: String },
    #[error("{} is neither a block device nor a regular file: flash a whole disk (`p6os devices` lists them)", .0.display())]
    NotABlockDeviceOrFile(PathBuf),
}

/// `--force`: lifts `NotRemovable` and nothing else.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Force {
    No,
    Yes,
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Every refusal at once, in a fixed order (empty = go). A missing path or one that is neither a
/// device nor a file gives only that refusal. A regular file is never too small (writing extends
/// it) nor "not removable". `/` is left out of `Mounted` when `HoldsRoot` says it better.
pub fn refusals(info: &TargetInfo, image_size: u64, force: Force) -> Vec<Refusal> {
    let path = info.path.clone();
    let device = match &info.kind {
        _ if !info.exists => return vec![Refusal::NotFound(path)],
        TargetKind::Other => return vec![Refusal::NotABlockDeviceOrFile(path)],
        TargetKind::RegularFile => false,
        TargetKind::WholeDisk | TargetKind::Partition { .. } => true,
    };
    let mut out = Vec::new();
    if let TargetKind::Partition { disk } = &info.kind {
        let (path, disk) = (path.clone(), disk.clone());
        out.push(Refusal::Partition { path, disk });
    }
    let mut mounts = info.mounts.clone();
    mounts.retain(|m| !(info.holds_root && m == "/"));
    if !mounts.is_empty() {
        out.push(Refusal::Mounted(mounts));
    }
    if info.holds_root {
        out.push(Refusal::HoldsRoot);
    }
    if info.swap {
        out.push(Refusal::HoldsSwap);
    }
    let (need, have) = (image_size, info.size);
    if device && have < need {
        out.push(Refusal::TooSmall { need, have });
    }
    if device && !info.removable && force == Force::No {
        let known = [info.transport.clone(), model_line(info)];
        let known: Vec<String> = known.into_iter().flatten().collect();
        let mut what = String::from("a fixed disk");
        if !known.is_empty() {
            what += &format!(", {}", known.join(" "));
        }
        out.push(Refusal::NotRemovable { path, what });
    }
    out
}

/// Vendor and model, without the vendor when it is `ATA` or already begins the model.
fn model_line(info: &TargetInfo) -> Option<String> {
    match (&info.vendor, &info.model) {
        (Some(v), Some(m)) if v != "ATA" && !m.to_lowercase().starts_with(&v.to_lowercase()) => {
            Some(format!("{v} {m}"))
        }
        (v, m) => m.clone().or(v.clone()),
    }
}

/// The text shown before asking for confirmation.
pub fn describe(info: &TargetInfo) -> String {
    let file = info.kind == TargetKind::RegularFile;
    let mut s = info.path.display().to_string();
    match &info.name {
        _ if file => s.push_str(" (a regular file)"),
        Some(name) if info.path != Path::new("/dev").join(name) => s += &format!(" ({name})"),
        _ => {}
    }
    let unknown = || "unknown".to_string();
    let mut rows = vec![("size", format!("{} ({} bytes)", gib(info.size), info.size))];
    if !file {
        let removable = if info.removable { "removable" } else { "fixed" };
        let transport = info.transport.clone().unwrap_or_else(unknown);
        rows.insert(0, ("model", model_line(info).unwrap_or_else(unknown)));
        rows.push(("serial", info.serial.clone().unwrap_or_else(unknown)));
        rows.push(("transport", format!("{transport}, {removable}")));
    }
    if !info.mounts.is_empty() {
        rows.push(("mounted", info.mounts.join(", ")));
    }
    for (label, value) in rows {
        s += &format!("\n  {:<11}{value}", format!("{label}:"));
    }
    s + "\n"
}

/// A block device number, `major:minor` as in sysfs `dev` files and mountinfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct DevNum(pub u32, pub u32);

impl DevNum {
    pub fn parse(text: &str) -> Option<DevNum> {
        let (major, minor) = text.trim().split_once(':')?;
        Some(DevNum(major.parse().ok()?, minor.parse().ok()?))
    }
    /// Linux's `dev_t` encoding (glibc `gnu_dev_major`/`gnu_dev_minor`).
    pub fn from_rdev(rdev: u64) -> DevNum {
        let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff);
        let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff);
        DevNum(major as u32, minor as u32)
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Field 3; btrfs and overlays show an anonymous `0:N` here, hence `source_dev`.
    pub dev: Option<DevNum>,
    pub mount_point: String,
    pub fstype: String,
    pub source: String,
    /// The device number of `source` when it is a block device node (filled by the reader).
    pub source_dev: Option<DevNum>,
}

/// Undo the kernel's escapes of space, tab, newline and backslash (the latter last).
fn unescape(field: &str) -> String {
    let pairs = [
        ("\\040", " "),
        ("\\011", "\t"),
        ("\\012", "\n"),
        ("\\134", "\\"),
    ];
    pairs
        .iter()
        .fold(field.to_string(), |s, (a, b)| s.replace(a, b))
}

/// Lines that do not look like mountinfo are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    let entry = |line: &str| {
        let f: Vec<String> = line.split_whitespace().map(unescape).collect();
        let sep = 6 + f.get(6..)?.iter().position(|x| x == "-")?;
        let field = |i: usize| f.get(i).cloned().unwrap_or_default();
        let (dev, mount_point) = (DevNum::parse(&f[2]), field(4));
        let (fstype, source) = (field(sep + 1), field(sep + 2));
        Some(MountEntry {
            dev,
            mount_point,
            fstype,
            source,
            source_dev: None,
        })
    };
    text.lines().filter_map(entry).collect()
}

/// The file names in `/proc/swaps` (devices and swap files).
pub fn parse_swaps(text: &str) -> Vec<String> {
    let names = text.lines().filter_map(|l| l.split_whitespace().next());
    names.filter(|p| p.starts_with('/')).map(unescape).collect()
}

/// The serial in a SCSI VPD page 0x80 (`device/vpd_pg80`): 4 header bytes, then ASCII.
pub fn vpd_serial(page: &[u8]) -> Option<String> {
    let len = usize::from(u16::from_be_bytes([*page.get(2)?, *page.get(3)?]));
    let body = page.get(4..)?;
    clean(&String::from_utf8_lossy(&body[..len.min(body.len())]))
}

/// Trimmed, control characters dropped, `None` when nothing is left.
fn clean(text: &str) -> Option<String> {
    let s: String = text.chars().filter(|c| !c.is_control()).collect();
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

/// A partition, or a whole disk's own numbers, as read from sysfs: raw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysPart {
    pub name: String,
    pub dev: String,
    /// 512-byte sectors.
    pub size: String,
    /// `dev` of every device stacked on it (`holders/`, transitively): dm, md.
    pub holders: Vec<String>,
}

/// A whole disk as the reader found it under `/sys/class/block/NAME`: raw file contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysDisk {
    pub node: SysPart,
    pub removable: String,
    pub model: Option<String>,
    pub vendor: Option<String>,
    /// Candidates, best first: `serial`, `device/serial`, VPD page 0x80, the USB device's `serial`.
    pub serials: Vec<String>,
    /// The canonical `/sys/devices/...` path of the disk.
    pub devpath: String,
    /// `subsystem` of `device` and of each ancestor, nearest first: `scsi`, `usb`, `pci`...
    pub subsystems: Vec<String>,
    /// `device/type` on an MMC host: `SD`, `MMC` (eMMC), `SDIO`.
    pub mmc_type: Option<String>,
    pub loop_backing: Option<String>,
    pub partitions: Vec<SysPart>,
}

/// What `/proc` says is in use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InUse {
    pub mounts: Vec<MountEntry>,
    /// Device numbers of the block devices in `/proc/swaps`.
    pub swap_devs: Vec<DevNum>,
}

/// A `/`-separated segment of `path` is `prefix` followed by digits (`usb2`, `ata1`).
fn segment_is(path: &str, prefix: &str) -> bool {
    let numbered = |n: &str| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit());
    path.split('/')
        .any(|s| s.strip_prefix(prefix).is_some_and(numbered))
}

/// The transport, from the kernel name, the device path and the subsystems above the disk.
pub fn transport(name: &str, devpath: &str, subsystems: &[String]) -> Option<String> {
    let has = |s: &str| subsystems.iter().any(|x| x == s);
    let rules = [
        ("loop", name.starts_with("loop")),
        ("usb", has("usb") || segment_is(devpath, "usb")),
        ("nvme", has("nvme") || name.starts_with("nvme")),
        ("mmc", has("mmc") || name.starts_with("mmcblk")),
        ("sata", segment_is(devpath, "ata")),
        ("virtio", has("virtio") || name.starts_with("vd")),
        ("nbd", name.starts_with("nbd")),
        ("scsi", has("scsi")),
    ];
    rules.iter().find(|r| r.1).map(|r| r.0.to_string())
}

/// Pure: the target `path` is `disk`, or its partition named `partition`.
pub fn assemble(
    path: &Path,
    disk: &SysDisk,
    partition: Option<&str>,
    in_use: &InUse,
) -> TargetInfo {
    let transport = transport(&disk.node.name, &disk.devpath, &disk.subsystems);
    let t = transport.as_deref();
    let sd_card = t == Some("mmc") && disk.mmc_type.as_deref() == Some("SD");
    let removable = disk.removable.trim() == "1" || t == Some("usb") || sd_card;
    let (kind, nodes) = match partition {
        None => (
            TargetKind::WholeDisk,
            [std::slice::from_ref(&disk.node), &disk.partitions].concat(),
        ),
        Some(p) => {
            let unknown = SysPart {
                name: p.into(),
                ..SysPart::default()
            };
            let part = disk
                .partitions
                .iter()
                .find(|x| x.name == p)
                .unwrap_or(&unknown);
            (
                TargetKind::Partition {
                    disk: disk.node.name.clone(),
                },
                vec![part.clone()],
            )
        }
    };
    let ids = nodes
        .iter()
        .flat_map(|n| std::iter::once(&n.dev).chain(&n.holders));
    let devs: Vec<DevNum> = ids.filter_map(|d| DevNum::parse(d)).collect();
    let ours = |m: &MountEntry| {
        [m.dev, m.source_dev]
            .iter()
            .flatten()
            .any(|d| devs.contains(d))
    };
    let mut seen = HashSet::new();
    let mounts = in_use
        .mounts
        .iter()
        .filter(|m| ours(m) && seen.insert(&m.mount_point));
    let root = in_use.mounts.iter().rev().find(|m| m.mount_point == "/");
    let sectors = nodes[0].size.trim().parse::<u64>().ok();
    TargetInfo {
        path: path.to_path_buf(),
        exists: true,
        name: Some(nodes[0].name.clone()),
        kind,
        size: sectors.and_then(|s| s.checked_mul(512)).unwrap_or(0),
        removable,
        model: disk.model.as_deref().and_then(clean),
        vendor: disk.vendor.as_deref().and_then(clean),
        serial: disk.serials.iter().find_map(|s| clean(s)),
        transport,
        mounts: mounts.map(|m| m.mount_point.clone()).collect(),
        swap: in_use.swap_devs.iter().any(|d| devs.contains(d)),
        holds_root: root.is_some_and(ours),
    }
}

/// Whether `p6os devices` shows a disk: never virtual devices (ram, zram, dm, md, nbd, unattached
/// loops), optical or floppy drives, or empty ones; an attached loop only with `all`; without
/// `all`, only removable (or USB) disks.
pub fn listed(disk: &SysDisk, info: &TargetInfo, all: bool) -> bool {
    let name = disk.node.name.as_str();
    let backed = disk
        .loop_backing
        .as_deref()
        .is_some_and(|b| !b.trim().is_empty());
    let attached_loop = name.starts_with("loop") && backed;
    let virtual_ = disk.devpath.contains("/devices/virtual/") || name.starts_with("loop");
    let drive = name.starts_with("sr") || name.starts_with("fd");
    let shown = info.size > 0 && !drive && (attached_loop || !virtual_);
    shown && (all || info.removable)
}

// ---- the reader ----

fn at(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn name_of(p: &Path) -> String {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
    name.unwrap_or_default()
}

fn read_text(p: &Path) -> Option<String> {
    let bytes = fs::read(p).ok()?;
    Some(String::from_utf8_lossy(&bytes).trim().to_string())
}

/// The entries of a directory; none when it cannot be read.
fn entries(dir: &Path) -> impl Iterator<Item = PathBuf> {
    let dir = fs::read_dir(dir).into_iter().flatten();
    dir.flatten().map(|e| e.path())
}

fn holders_of(dir: &Path, depth: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in entries(&dir.join("holders")) {
        let h = Path::new("/sys/class/block").join(name_of(&e));
        out.extend(read_text(&h.join("dev")));
        if depth < 8 {
            out.extend(holders_of(&h, depth + 1));
        }
    }
    out
}

fn read_node(dir: &Path) -> SysPart {
    let text = |f: &str| read_text(&dir.join(f)).unwrap_or_default();
    let holders = holders_of(dir, 0);
    SysPart {
        name: name_of(dir),
        dev: text("dev"),
        size: text("size"),
        holders,
    }
}

/// Copies what `assemble` needs from a whole disk's sysfs directory.
pub fn read_disk(dir: &Path) -> SysDisk {
    let device = dir.join("device");
    let (mut subsystems, mut usb_serial) = (Vec::new(), None);
    let mut up = fs::canonicalize(&device).ok();
    while let Some(d) = up.filter(|d| d.starts_with("/sys/devices") && subsystems.len() < 64) {
        let sub = fs::read_link(d.join("subsystem")).map(|s| name_of(&s)).ok();
        if sub.as_deref() == Some("usb") && usb_serial.is_none() {
            usb_serial = read_text(&d.join("serial"));
        }
        subsystems.extend(sub);
        up = d.parent().map(Path::to_path_buf);
    }
    let mmc = subsystems.first().is_some_and(|s| s == "mmc");
    let dev_text = |f: &str| read_text(&device.join(f));
    let vpd = fs::read(device.join("vpd_pg80")).ok();
    let vpd = vpd.and_then(|b| vpd_serial(&b));
    let serials = [
        read_text(&dir.join("serial")),
        dev_text("serial"),
        vpd,
        usb_serial,
    ];
    let mut partitions: Vec<SysPart> = entries(dir)
        .filter(|p| p.join("partition").exists())
        .map(|p| read_node(&p))
        .collect();
    partitions.sort_by(|a, b| a.name.cmp(&b.name));
    let devpath = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    SysDisk {
        node: read_node(dir),
        removable: read_text(&dir.join("removable")).unwrap_or_default(),
        model: dev_text("model").or_else(|| dev_text("name").filter(|_| mmc)),
        vendor: dev_text("vendor"),
        serials: serials.into_iter().flatten().collect(),
        devpath: devpath.display().to_string(),
        mmc_type: dev_text("type").filter(|_| mmc),
        loop_backing: read_text(&dir.join("loop/backing_file")),
        partitions,
        subsystems,
    }
}

fn block_dev(path: &Path) -> Option<DevNum> {
    let m = fs::metadata(path).ok()?;
    let block = m.file_type().is_block_device();
    block.then(|| DevNum::from_rdev(m.rdev()))
}

fn swaps() -> Vec<String> {
    // No /proc/swaps without CONFIG_SWAP: nothing is swap then.
    parse_swaps(&fs::read_to_string("/proc/swaps").unwrap_or_default())
}

/// Reads `/proc/self/mountinfo` (resolving `/dev/...` sources) and `/proc/swaps`.
pub fn read_in_use() -> io::Result<InUse> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(at("/proc/self/mountinfo"))?;
    let mut mounts = parse_mountinfo(&text);
    for m in mounts.iter_mut().filter(|m| m.source.starts_with("/dev/")) {
        m.source_dev = block_dev(Path::new(&m.source));
    }
    let swaps = swaps();
    let swap_devs = swaps.iter().filter_map(|s| block_dev(Path::new(s)));
    Ok(InUse {
        mounts,
        swap_devs: swap_devs.collect(),
    })
}

/// What `path` is (symlinks followed). A missing path is `exists: false`, not an error.
pub fn inspect(path: &Path) -> io::Result<TargetInfo> {
    let mut found = TargetInfo {
        path: path.into(),
        ..TargetInfo::default()
    };
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(at(path.display())(e)),
    };
    found.exists = true;
    if meta.is_file() {
        let me = (meta.dev(), meta.ino());
        let same = |s: &String| fs::metadata(s).is_ok_and(|m| (m.dev(), m.ino()) == me);
        found.swap = swaps().iter().any(same);
        (found.size, found.kind) = (meta.len(), TargetKind::RegularFile);
        return Ok(found);
    }
    if !meta.file_type().is_block_device() {
        return Ok(found);
    }
    let DevNum(major, minor) = DevNum::from_rdev(meta.rdev());
    let sys = format!("/sys/dev/block/{major}:{minor}");
    let sys = fs::canonicalize(&sys).map_err(at(format!("{}: {sys}", path.display())))?;
    let (disk_dir, partition) = match sys.parent() {
        Some(parent) if sys.join("partition").exists() => (parent.into(), Some(name_of(&sys))),
        _ => (sys, None),
    };
    let disk = read_disk(&disk_dir);
    Ok(assemble(path, &disk, partition.as_deref(), &read_in_use()?))
}

/// `p6os devices`: the candidates (removable or USB), or with `all` every whole disk; by name.
pub fn list_devices(all: bool) -> io::Result<Vec<TargetInfo>> {
    let in_use = read_in_use()?;
    let mut out = Vec::new();
    let dirs = fs::read_dir("/sys/block").map_err(at("/sys/block"))?;
    for e in dirs.flatten() {
        let disk = read_disk(&e.path());
        let dev = Path::new("/dev").join(&disk.node.name);
        let info = assemble(&dev, &disk, None, &in_use);
        if listed(&disk, &info, all) {
            out.push(info);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
#[path = "target_tests.rs"]
mod tests;
