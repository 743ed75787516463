//! `p6os flash` target checks against real devices: loop devices with partitions, mounts and swap
//! (root only), and the disk holding `/`. A test that cannot set up its device says why on
//! stderr and passes; every loop device, mount and swap is undone in `Drop`, even on failure.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use p6os_builder::flash::identity::Identity;
use p6os_builder::flash::target::{
    describe, inspect, list_devices, refusals, Force, Refusal, TargetKind,
};
use p6os_builder::flash::{write_image, FlashError};
use p6os_builder::progress::Progress;

const MIB: u64 = 1 << 20;

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).output();
    let out = out.map_err(|e| format!("{program}: {e}"))?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        false => Err(format!(
            "{program} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

fn skip(test: &str, why: &str) {
    eprintln!("skipped {test}: {why}");
}

/// Waits up to `ms` for a device node the kernel creates asynchronously (partitions).
fn appears(path: &Path, ms: u64) -> bool {
    let start = Instant::now();
    while !path.exists() && start.elapsed() < Duration::from_millis(ms) {
        std::thread::sleep(Duration::from_millis(50));
    }
    path.exists()
}

/// Held while a test picks a free loop device (`losetup --find`) and while one detaches and
/// reattaches its own: otherwise a test running in parallel can take the freed `/dev/loopN`.
static LOOP_SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `losetup DEV FILE`, retried for up to 5 s while the kernel still finishes the previous
/// detach (`losetup --detach` returns before it does) or udev's probe holds the device.
fn reattach(dev: &str, file: &str) -> Result<String, String> {
    let start = Instant::now();
    loop {
        match run("losetup", &[dev, file]) {
            Err(e) if e.contains("busy") && start.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            other => return other,
        }
    }
}

/// A loop device over a sparse file in a temp dir; detached in `Drop`.
struct Loop {
    dev: PathBuf,
    _dir: tempfile::TempDir,
}

impl Loop {
    /// `None` (and the reason printed) when not root or `losetup` fails.
    fn new(test: &str, size: u64, partitioned: bool) -> Option<Loop> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            skip(test, "needs root for loop devices");
            return None;
        }
        match Loop::attach(size, partitioned) {
            Ok(l) => Some(l),
            Err(e) => {
                skip(test, &e);
                None
            }
        }
    }

    fn attach(size: u64, partitioned: bool) -> Result<Loop, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let file = dir.path().join("disk.img");
        let f = std::fs::File::create(&file).map_err(|e| e.to_string())?;
        f.set_len(size).map_err(|e| e.to_string())?;
        let img = file.to_str().ok_or("temp path is not UTF-8")?;
        if partitioned {
            let table = "label: gpt\n,\n";
            let mut child = Command::new("sfdisk")
                .args(["--quiet", img])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("sfdisk: {e}"))?;
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(table.as_bytes())
                .map_err(|e| e.to_string())?;
            let status = child.wait().map_err(|e| e.to_string())?;
            status
                .success()
                .then_some(())
                .ok_or(format!("sfdisk: {status}"))?;
        }
        let args = if partitioned {
            vec!["--find", "--show", "--partscan", img]
        } else {
            vec!["--find", "--show", img]
        };
        let dev = {
            let _setup = LOOP_SETUP.lock().unwrap_or_else(|p| p.into_inner());
            PathBuf::from(run("losetup", &args)?)
        };
        let l = Loop { dev, _dir: dir };
        if partitioned && !appears(&l.part(), 500) {
            // Kernels without the GPT parser (CONFIG_EFI_PARTITION=n) find nothing: partx adds
            // the partitions libblkid reads, through BLKPG.
            run("partx", &["--add", l.path()])?;
            appears(&l.part(), 3000)
                .then_some(())
                .ok_or(format!("{} never appeared", l.part().display()))?;
        }
        Ok(l)
    }

    fn path(&self) -> &str {
        self.dev.to_str().unwrap_or_default()
    }

    fn name(&self) -> String {
        self.dev
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    }

    fn part(&self) -> PathBuf {
        PathBuf::from(format!("{}p1", self.path()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Err(e) = run("losetup", &["--detach", self.path()]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A filesystem mounted on a temp dir; unmounted in `Drop` (declare it after its `Loop`).
struct Mount(tempfile::TempDir);

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = run("umount", &[self.0.path().to_str().unwrap_or_default()]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Swap on a device; `swapoff` in `Drop` (declare it after its `Loop`).
struct Swap(String);

impl Drop for Swap {
    fn drop(&mut self) {
        if let Err(e) = run("swapoff", &[&self.0]) {
            eprintln!("cleanup: {e}");
        }
    }
}

#[test]
fn a_partition_is_refused_as_a_partition_of_its_disk() {
    let Some(lo) = Loop::new("partition", 16 * MIB, true) else {
        return;
    };
    let part = inspect(&lo.part()).unwrap();
    assert_eq!(part.kind, TargetKind::Partition { disk: lo.name() });
    assert_eq!(part.name, Some(format!("{}p1", lo.name())));
    let want = Refusal::Partition {
        path: lo.part(),
        disk: lo.name(),
    };
    assert!(refusals(&part, 0, Force::Yes).contains(&want), "{part:?}");
    assert_eq!(
        want.to_string(),
        format!(
            "{} is a partition of {}: flash the whole disk, {}",
            lo.part().display(),
            lo.name(),
            lo.path()
        )
    );
    let disk = inspect(&lo.dev).unwrap();
    assert_eq!((disk.kind, disk.size), (TargetKind::WholeDisk, 16 * MIB));
}

#[test]
fn a_disk_with_a_mounted_partition_is_refused_until_unmounted() {
    let Some(lo) = Loop::new("mounted", 16 * MIB, true) else {
        return;
    };
    let part = lo.part();
    let part = part.to_str().unwrap();
    if let Err(e) = run("mkfs.ext4", &["-q", "-F", part]) {
        return skip("mounted", &e);
    }
    let dir = tempfile::tempdir().unwrap();
    let at = std::fs::canonicalize(dir.path())
        .unwrap()
        .display()
        .to_string();
    if let Err(e) = run("mount", &[part, &at]) {
        return skip("mounted", &e);
    }
    let mount = Mount(dir);
    let disk = inspect(&lo.dev).unwrap();
    assert_eq!(disk.mounts, vec![at.clone()]);
    assert_eq!(
        refusals(&disk, MIB, Force::Yes),
        vec![Refusal::Mounted(vec![at.clone()])]
    );
    assert_eq!(inspect(Path::new(part)).unwrap().mounts, vec![at]);
    drop(mount);
    assert_eq!(inspect(&lo.dev).unwrap().mounts, Vec::<String>::new());
}

#[test]
fn a_device_in_use_as_swap_is_refused_until_swapoff() {
    let Some(lo) = Loop::new("swap", 16 * MIB, false) else {
        return;
    };
    if let Err(e) = run("mkswap", &[lo.path()]).and_then(|_| run("swapon", &[lo.path()])) {
        return skip("swap", &e);
    }
    let swap = Swap(lo.path().to_string());
    let info = inspect(&lo.dev).unwrap();
    assert!(info.swap, "{info:?}");
    assert_eq!(refusals(&info, MIB, Force::Yes), vec![Refusal::HoldsSwap]);
    drop(swap);
    assert!(!inspect(&lo.dev).unwrap().swap);
}

#[test]
fn a_device_smaller_than_the_image_is_refused_equal_is_fine() {
    let Some(lo) = Loop::new("too small", 4 * MIB, false) else {
        return;
    };
    let info = inspect(&lo.dev).unwrap();
    assert_eq!(info.size, 4 * MIB);
    assert_eq!(refusals(&info, 4 * MIB, Force::Yes), vec![]);
    let too_small = Refusal::TooSmall {
        need: 4 * MIB + 1,
        have: 4 * MIB,
    };
    assert_eq!(refusals(&info, 4 * MIB + 1, Force::Yes), vec![too_small]);
}

#[test]
fn a_loop_device_is_not_removable_unless_forced_and_found_through_a_symlink() {
    let Some(lo) = Loop::new("not removable", 4 * MIB, false) else {
        return;
    };
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("by-id-style-link");
    std::os::unix::fs::symlink(&lo.dev, &link).unwrap();
    let info = inspect(&link).unwrap();
    assert_eq!(
        (info.path.as_path(), info.name.clone()),
        (link.as_path(), Some(lo.name()))
    );
    assert_eq!(
        (info.removable, info.transport.as_deref()),
        (false, Some("loop"))
    );
    let why = refusals(&info, MIB, Force::No);
    assert!(
        matches!(why.as_slice(), [Refusal::NotRemovable { .. }]),
        "{why:?}"
    );
    assert_eq!(refusals(&info, MIB, Force::Yes), vec![]);
}

/// The whole disk under `name`: through dm/md slaves, then from a partition to its disk.
fn disk_of(name: &str) -> Option<String> {
    let dir = std::fs::canonicalize(format!("/sys/class/block/{name}")).ok()?;
    let slave = std::fs::read_dir(dir.join("slaves"))
        .ok()
        .and_then(|mut d| d.next()?.ok());
    if let Some(slave) = slave {
        return disk_of(&slave.file_name().to_string_lossy());
    }
    match dir.join("partition").exists() {
        true => Some(dir.parent()?.file_name()?.to_string_lossy().into_owned()),
        false => Some(name.to_string()),
    }
}

#[test]
fn the_disk_holding_root_is_refused() {
    let source = match run("findmnt", &["-no", "SOURCE", "/"]) {
        Ok(s) => s.split('[').next().unwrap_or_default().to_string(), // btrfs: /dev/sda2[/@]
        Err(e) => return skip("root", &e),
    };
    // /dev/mapper/vg-root and /dev/root are links or aliases: the kernel name is the target's.
    let real = std::fs::canonicalize(&source).ok();
    let Some(name) = real
        .as_deref()
        .and_then(|r| disk_of(r.file_name()?.to_str()?))
    else {
        return skip(
            "root",
            &format!("/ comes from {source:?}, not a block device"),
        );
    };
    let disk = PathBuf::from(format!("/dev/{name}"));
    if !disk.exists() {
        return skip("root", &format!("no node {}", disk.display()));
    }
    let info = inspect(&disk).unwrap();
    assert!(
        info.holds_root && info.mounts.contains(&"/".to_string()),
        "{info:?}"
    );
    let why = refusals(&info, 0, Force::Yes);
    assert!(why.contains(&Refusal::HoldsRoot), "{why:?}");
    assert!(!why
        .iter()
        .any(|r| matches!(r, Refusal::Mounted(m) if m.contains(&"/".to_string()))));
    assert!(inspect(Path::new(&source)).unwrap().holds_root, "{source}");
}

#[test]
fn a_regular_file_and_a_missing_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.img");
    std::fs::write(&file, [0u8; 512]).unwrap();
    let info = inspect(&file).unwrap();
    assert_eq!(
        (info.kind.clone(), info.size, info.swap),
        (TargetKind::RegularFile, 512, false)
    );
    assert_eq!(refusals(&info, 8 * MIB, Force::No), vec![]);
    let missing = dir.path().join("nope");
    let info = inspect(&missing).unwrap();
    assert_eq!(
        refusals(&info, 0, Force::Yes),
        vec![Refusal::NotFound(missing)]
    );
    let info = inspect(Path::new("/dev/null")).unwrap();
    assert_eq!(
        refusals(&info, 0, Force::Yes),
        vec![Refusal::NotABlockDeviceOrFile("/dev/null".into())]
    );
}

#[test]
fn devices_lists_an_attached_loop_only_with_all() {
    let Some(lo) = Loop::new("devices", 4 * MIB, false) else {
        return;
    };
    let all = list_devices(true).unwrap();
    let ours = all.iter().find(|d| d.name == Some(lo.name()));
    let ours = ours.unwrap_or_else(|| panic!("{} not in {all:?}", lo.name()));
    eprintln!("{}", describe(ours));
    assert_eq!(
        (ours.size, ours.transport.as_deref()),
        (4 * MIB, Some("loop"))
    );
    for d in &all {
        let name = d.name.clone().unwrap_or_default();
        let backing = Path::new("/sys/block")
            .join(&name)
            .join("loop/backing_file");
        assert!(
            !name.starts_with("zram") && !name.starts_with("ram"),
            "{name}"
        );
        assert!(
            !name.starts_with("loop") || backing.exists(),
            "unattached {name}"
        );
    }
    let names: Vec<_> = all.iter().map(|d| d.name.clone()).collect();
    assert!(names.windows(2).all(|w| w[0] <= w[1]), "{names:?}");
    let candidates = list_devices(false).unwrap();
    assert!(candidates.iter().all(|d| d.removable), "{candidates:?}");
}

/// The command line: every refusal printed at once and nothing written; without a terminal
/// and without `--yes` it asks for `--yes`; with `--yes --force` it writes.
#[test]
fn the_cli_refuses_without_confirmation_and_writes_with_it() {
    let Some(lo) = Loop::new("cli", 16 * MIB, false) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("x.img");
    std::fs::write(&image, vec![0x5a; 4 * MIB as usize]).unwrap();
    let p6os = env!("CARGO_BIN_EXE_p6os");
    let flash = |extra: &[&str]| {
        std::process::Command::new(p6os)
            .arg("flash")
            .arg(&image)
            .arg(&lo.dev)
            .args(extra)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let head = || {
        let mut b = vec![0u8; 4096];
        std::fs::File::open(&lo.dev)
            .unwrap()
            .read_exact(&mut b)
            .unwrap();
        b
    };
    let blank = head();
    // Not removable: refused, with the hint, nothing written.
    let out = flash(&["--yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--force") && err.contains("nothing was written"),
        "{err}"
    );
    // No terminal to confirm on.
    let out = flash(&["--force"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("pass --yes"), "{err}");
    assert_eq!(head(), blank);
    let out = flash(&["--force", "--yes", "-q"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(head(), vec![0x5a; 4096]);
}

#[test]
fn a_loop_device_reattached_to_another_file_after_the_confirmation_is_not_written() {
    let Some(lo) = Loop::new("reattached", 4 * MIB, false) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.img");
    std::fs::write(&image, vec![0xa5u8; MIB as usize]).unwrap();
    // What `p6os flash` shows and the user confirms.
    let info = inspect(&lo.dev).unwrap();
    assert_eq!(refusals(&info, MIB, Force::Yes), vec![]);
    let confirmed = Identity::of_path(&lo.dev).unwrap();
    // Meanwhile the same /dev/loopN comes to stand for another medium: same path, same device
    // number.
    let other = dir.path().join("other.img");
    std::fs::write(&other, vec![0xeeu8; 4 * MIB as usize]).unwrap();
    {
        let _setup = LOOP_SETUP.lock().unwrap_or_else(|p| p.into_inner());
        run("losetup", &["--detach", lo.path()]).unwrap();
        reattach(lo.path(), other.to_str().unwrap()).unwrap();
    }
    let err =
        write_image(&image, &lo.dev, &confirmed, None, None, &Progress::silent()).unwrap_err();
    assert!(matches!(err, FlashError::TargetChanged { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(lo.path()) && text.contains("nothing was written"),
        "{text}"
    );
    assert!(
        std::fs::read(&other).unwrap().iter().all(|&b| b == 0xee),
        "the other medium is untouched"
    );
    // Confirmed again, the same device is written.
    let again = Identity::of_path(&lo.dev).unwrap();
    write_image(&image, &lo.dev, &again, None, None, &Progress::silent()).unwrap();
    let mut head = vec![0u8; MIB as usize];
    std::fs::File::open(&lo.dev)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    assert!(head.iter().all(|&b| b == 0xa5));
}
