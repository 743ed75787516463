//! Disk growth: the tiny image on a larger disk (a sparse copy enlarged to just over 1 GiB
//! with its backup GPT left where the image ended, as `truncate` or `qemu-img resize` leave
//! it) grows its state partition and filesystem to the end of the disk on its first boot,
//! keeps what was on them, and does nothing at the next boot. Power cuts at random instants
//! during the growth (the seed is printed; `P6OS_CUT_SEED` replays a run) are finished by the
//! next boot. Checked in the guest (`p6os-agent status`, /proc/partitions) and on the host
//! (`sgdisk -v`, the partition's last sector, `e2fsck -fn`, `dumpe2fs -h`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use p6os_qemu_tests::vm::{copy_image, Vm, VmConfig};
use p6os_qemu_tests::{parse_status, test_image};

const BOOT: Duration = Duration::from_secs(240);
const CMD: Duration = Duration::from_secs(60);
const AGENT: &str = "/usr/lib/p6os/p6os-agent";
/// Not a whole number of MiB, on purpose.
const DISK_BYTES: u64 = (1 << 30) + 7 * 512;
const SECTORS: u64 = DISK_BYTES / 512;
/// The last usable LBA of a 512-byte-sector GPT with 128 entries.
const LAST_USABLE: u64 = SECTORS - 34;
const CUTS: usize = 6;

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// First and last sector of partition 4 (`sgdisk -i4`).
fn state_extent(disk: &Path) -> (u64, u64) {
    let (ok, text) = run(Command::new("sgdisk").arg("-i4").arg(disk));
    assert!(ok, "sgdisk -i4: {text}");
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in {text}"))
    };
    (field("First sector: "), field("Last sector: "))
}

fn enlarged_copy(dir: &Path, name: &str) -> PathBuf {
    let disk = dir.join(name);
    copy_image(&test_image(), &disk).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(DISK_BYTES)
        .unwrap();
    disk
}

/// From the host, with QEMU stopped: the table is clean and reaches the end of the disk, and
/// the filesystem is clean and fills its partition. Returns the filesystem's size in bytes.
fn check_on_host(disk: &Path) -> u64 {
    let (ok, text) = run(Command::new("sgdisk").arg("-v").arg(disk));
    assert!(
        ok && text.contains("No problems found"),
        "sgdisk -v: {text}"
    );
    let (first, last) = state_extent(disk);
    assert_eq!(
        last, LAST_USABLE,
        "the state partition ends at the last usable LBA"
    );
    let fs = format!("{}?offset={}", disk.display(), first * 512);
    let (ok, text) = run(Command::new("e2fsck").arg("-fn").arg(&fs));
    assert!(ok, "e2fsck -fn: {text}");
    let (ok, text) = run(Command::new("dumpe2fs").arg("-h").arg(&fs));
    assert!(ok, "dumpe2fs -h: {text}");
    let number = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in {text}"))
    };
    let fs_bytes = number("Block count:") * number("Block size:");
    let partition_bytes = (last - first + 1) * 512;
    assert!(
        fs_bytes <= partition_bytes && fs_bytes + (4 << 20) > partition_bytes,
        "filesystem {fs_bytes} bytes in a partition of {partition_bytes}"
    );
    fs_bytes
}

/// From the guest: `status` and the kernel agree with the table. Returns the status text.
fn check_in_guest(vm: &mut Vm, disk: &Path, tag: &str) -> String {
    let (first, _) = state_extent(disk);
    let partition_bytes = (LAST_USABLE - first + 1) * 512;
    let out = vm
        .run(&format!("{tag}J"), &format!("{AGENT} status --json"), CMD)
        .unwrap();
    let storage = &parse_status(&out)["storage"];
    assert_eq!(storage["disk"], "vda", "{storage}");
    assert_eq!(storage["disk_bytes"], DISK_BYTES, "{storage}");
    assert_eq!(
        storage["state_partition_bytes"], partition_bytes,
        "{storage}"
    );
    let fs = storage["state_filesystem_bytes"].as_u64().unwrap();
    assert!(
        fs <= partition_bytes && fs + (4 << 20) > partition_bytes,
        "{storage}"
    );
    let parts = vm
        .run(&format!("{tag}P"), "grep vda4 /proc/partitions", CMD)
        .unwrap();
    assert!(
        parts.contains(&format!(" {} vda4", partition_bytes / 1024)),
        "{parts}"
    );
    let text = vm
        .run(
            &format!("{tag}T"),
            &format!("{AGENT} status | grep state:"),
            CMD,
        )
        .unwrap();
    assert!(text.contains("disk vda 1024 MiB"), "{text}");
    text.trim().to_string()
}

/// Where a cut left the table, read on the host: the primary header's array and backup LBAs,
/// whether the disk's last sector holds a header, and the state partition's end.
fn table_state(disk: &Path) -> String {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(disk).unwrap();
    let mut header = [0u8; 512];
    file.read_exact_at(&mut header, 512).unwrap();
    let mut last = [0u8; 8];
    file.read_exact_at(&mut last, DISK_BYTES / 512 * 512 - 512)
        .unwrap();
    let lba = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap());
    let (_, end) = state_extent(disk);
    format!(
        "primary array at LBA {}, backup header at LBA {}{}, state ends at LBA {end}{}",
        lba(72),
        lba(32),
        if &last == b"EFI PART" {
            " (one at the end)"
        } else {
            " (none at the end)"
        },
        if end == LAST_USABLE { " (grown)" } else { "" }
    )
}

fn power_off(mut vm: Vm) {
    vm.send_line("poweroff").unwrap();
    vm.wait_exit(CMD).unwrap();
}

#[test]
fn the_state_partition_grows_once_on_a_larger_disk_and_keeps_its_data() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // First boot on a disk of the image's own size: nothing grows; a file is left on /var.
    let disk = dir.path().join("disk.img");
    copy_image(&test_image(), &disk).unwrap();
    let image_bytes = std::fs::metadata(&disk).unwrap().len();
    let config = VmConfig::new(&disk).unwrap();
    let mut vm = config.start_in_place("same-size").unwrap();
    vm.wait_for_line("p6os-agent: ready slot=a", BOOT).unwrap();
    vm.send_line("echo kept-while-growing > /var/p6os-growth && sync && echo WROTE-$((40+2))")
        .unwrap();
    vm.wait_for_line("WROTE-42", CMD).unwrap();
    assert!(
        !vm.console_log().contains("p6os-agent: grow"),
        "nothing grows on a disk of the image's size"
    );
    power_off(vm);

    // The same disk, enlarged: the first boot grows the partition, then the filesystem.
    std::fs::File::options()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(DISK_BYTES)
        .unwrap();
    assert!(image_bytes < DISK_BYTES);
    let mut vm = config.start_in_place("grow").unwrap();
    let growing = vm
        .wait_for_line("p6os-agent: growing p6os-state", BOOT)
        .unwrap();
    let grew = vm
        .wait_for_line("p6os-agent: grew p6os-state", CMD)
        .unwrap();
    let fs = vm
        .wait_for_line("p6os-agent: grew the filesystem", CMD)
        .unwrap();
    eprintln!("{}\n{}\n{}", growing.trim(), grew.trim(), fs.trim());
    assert!(growing.contains("from 64 MiB to"), "{growing}");
    vm.wait_for_line("p6os-agent: ready slot=a", BOOT).unwrap();
    let state = check_in_guest(&mut vm, &disk, "G");
    eprintln!("guest: {state}");
    let kept = vm.run("KEPT", "cat /var/p6os-growth", CMD).unwrap();
    assert!(kept.contains("kept-while-growing"), "{kept}");

    // The next boot has nothing to do.
    vm.send_line("reboot").unwrap();
    vm.wait_for_line("p6os-agent: rebooting", CMD).unwrap();
    vm.wait_for_line("p6os-agent: ready slot=a", BOOT).unwrap();
    let log = vm.console_log();
    let second = &log[log.rfind("p6os-agent: rebooting").unwrap()..];
    assert!(
        !second.contains("p6os-agent: grow") && !second.contains("not grown"),
        "the second boot grew or warned again:\n{second}"
    );
    check_in_guest(&mut vm, &disk, "S");
    power_off(vm);
    let fs_bytes = check_on_host(&disk);
    eprintln!(
        "host: sgdisk -v clean, state ends at LBA {LAST_USABLE}, e2fsck clean, \
         filesystem {fs_bytes} bytes; scenario {:.0?}",
        started.elapsed()
    );
}

/// xorshift64*: enough randomness for cut instants, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// After the line announcing the table writes: the GPT, then the kernel's view (about
    /// 50 ms under TCG: most cuts land before the writes or after the backup table; every
    /// sector-level cut of the writes is checked by `p6os_layout::gpt::grow`'s tests).
    Table,
    /// After the line announcing the filesystem's growth (ext4's online resize).
    Filesystem,
}

#[test]
fn power_cuts_during_growth_are_finished_by_the_next_boot() {
    let started = Instant::now();
    let seed = std::env::var("P6OS_CUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("growth power cuts: seed {seed} (P6OS_CUT_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    for n in 0..CUTS {
        let phase = [Phase::Table, Phase::Filesystem][n % 2];
        let disk = enlarged_copy(dir.path(), &format!("cut{n}.img"));
        let config = VmConfig::new(&disk).unwrap();
        let mut vm = config.start_in_place(&format!("cut{n}")).unwrap();
        let delay = match phase {
            Phase::Table => {
                vm.wait_for_line("p6os-agent: growing p6os-state", BOOT)
                    .unwrap();
                Duration::from_millis(rng.below(60))
            }
            Phase::Filesystem => {
                vm.wait_for_line("p6os-agent: growing the filesystem", BOOT)
                    .unwrap();
                Duration::from_millis(rng.below(120))
            }
        };
        thread::sleep(delay);
        let last: String = vm
            .console_log()
            .lines()
            .rev()
            .find(|l| l.contains("p6os-agent:"))
            .unwrap_or_default()
            .trim()
            .to_string();
        vm.power_cut();
        eprintln!(
            "cut {}: {phase:?} + {} ms; last line: {last}\n  table: {}",
            n + 1,
            delay.as_millis(),
            table_state(&disk)
        );
        // The next boot finishes the job.
        let mut vm = config.start_in_place(&format!("after{n}")).unwrap();
        vm.wait_for_line("p6os-agent: ready slot=a", BOOT).unwrap();
        let log = vm.console_log();
        let finished: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("p6os-agent: grew") || l.contains("not grown"))
            .map(str::trim)
            .collect();
        assert!(
            !log.contains("not grown"),
            "after the cut, growth failed: {finished:?}"
        );
        eprintln!("  next boot: {finished:?}");
        check_in_guest(&mut vm, &disk, &format!("C{n}"));
        power_off(vm);
        check_on_host(&disk);
    }
    eprintln!(
        "{CUTS} cuts, all finished; scenario {:.0?}",
        started.elapsed()
    );
}
