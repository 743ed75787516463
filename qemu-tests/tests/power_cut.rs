//! Power cuts during upgrades, under Secure Boot (OVMF with the fixture's keys enrolled, every
//! image and bundle signed): QEMU is killed at random instants while the slot is written, in
//! every phase that writes the ESP (the slot's old files removed, the unified kernel image, the
//! manifest with the entry and the record, the agent's repair of the ESP at the next boot) and
//! during the first trial boot (the loader's counter rename, the blessing). After each cut the
//! machine must come up on a good, signed slot by itself, the ESP must pass `fsck.vfat -n` once
//! the agent has used it, and an upgrade run after the last cut must complete, on a 64 MiB ESP
//! that holds two slots' kernel images with little room to spare. The test prints every cut
//! (phase and delay) and the seed (`P6OS_CUT_SEED` replays a run).

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use p6os_qemu_tests::esp;
use p6os_qemu_tests::fixture::Fixture;
use p6os_qemu_tests::vm::{copy_image, Firmware, Vm, VmConfig};

const BOOT: Duration = Duration::from_secs(240);
const CMD: Duration = Duration::from_secs(120);
const AGENT: &str = "/usr/lib/p6os/p6os-agent";
const CUTS: usize = 24;
/// Installed in turn (`--allow-downgrade` after the last): a cut may or may not leave the
/// upgrade complete, so the next one is always "another version than the running one".
const VERSIONS: [&str; 3] = ["2.0.0", "3.0.0", "4.0.0"];
const REPAIRING: &str = "p6os-agent: ESP: repairing";
const BLESSED: &str = "is blessed";

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// While the root filesystem streams into the other slot.
    WritingSlot,
    /// The target slot's old kernel image and manifest removed from the ESP.
    EspOldFiles,
    /// `p6os.efi.new` (the signed unified kernel image) written, synced, renamed.
    EspKernel,
    /// The manifest, then the boot entry, then the record.
    EspManifestAndEntry,
    /// The agent repairing the ESP at the boot after a cut (lost clusters, leftovers).
    EspRepair,
    /// During the first boot of the new slot (the loader's counter rename, kernel, agent,
    /// health checks, the blessing's rename).
    TrialBoot,
}

impl Phase {
    /// The console line the phase starts at, and how long after it the cut may come (ms):
    /// a little longer than the phase takes under TCG, so cuts land inside it and just after.
    /// Measured on the tiny image (2 cores, TCG): the kernel image ~1050 ms (kernel and
    /// initramfs), manifest + entry + record ~50 ms, the repair a few ms.
    fn start_and_window(self) -> (&'static str, u64) {
        match self {
            Phase::WritingSlot => ("upgrade: rootfs 10%", 1500),
            Phase::EspOldFiles => ("upgrade: esp: removing slot", 60),
            Phase::EspKernel => ("upgrade: esp: writing /p6os/SLOT/p6os.efi", 1200),
            Phase::EspManifestAndEntry => ("upgrade: esp: writing /p6os/SLOT/manifest.json", 80),
            Phase::EspRepair => (REPAIRING, 40),
            Phase::TrialBoot => ("p6os-agent: rebooting", 12_000),
        }
    }
}

/// Each ESP write phase at least three times in 24 cuts; the repair comes right after the cuts
/// most likely to leave something to repair.
const SCHEDULE: [Phase; 8] = [
    Phase::EspKernel,
    Phase::EspRepair,
    Phase::EspKernel,
    Phase::EspRepair,
    Phase::EspOldFiles,
    Phase::EspManifestAndEntry,
    Phase::TrialBoot,
    Phase::WritingSlot,
];

/// (slot, version) of the last `ready` line.
fn ready_fields(vm: &Vm) -> (String, String) {
    let log = vm.console_log();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("p6os-agent: ready slot="))
        .unwrap_or_default()
        .to_string();
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_default()
            .to_string()
    };
    let (slot, version) = (field("slot="), field("version="));
    assert!(slot == "a" || slot == "b", "no ready line: {line}");
    (slot, version)
}

/// Waits until the booted slot is settled (blessed); returns (slot, version).
fn settle(vm: &mut Vm) -> (String, String) {
    vm.wait_for_line("p6os-agent: ready slot=", BOOT).unwrap();
    let (slot, version) = ready_fields(vm);
    // A trial boot blesses itself (health passes), a blessed boot says so.
    vm.wait_for_line(&format!("slot {slot} {BLESSED}"), CMD)
        .unwrap_or_else(|e| panic!("slot {slot} ({version}) did not settle: {e}"));
    (slot, version)
}

/// Once the agent has let go of the ESP (unmounted, so the dirty flag is clear and everything
/// written), `fsck.vfat -n` on the disk image must find nothing.
fn check_esp(vm: &mut Vm, disk: &Path, tag: &str) -> Duration {
    vm.run(
        tag,
        "while grep -q ' /run/p6os/esp ' /proc/mounts; do sleep 1; done",
        CMD,
    )
    .unwrap();
    let started = Instant::now();
    if let Err(e) = esp::fsck(disk) {
        panic!("the ESP is not clean after {tag}: {e}");
    }
    started.elapsed()
}

fn next_version(version: &str) -> &'static str {
    VERSIONS
        .iter()
        .position(|v| *v == version)
        .map_or(VERSIONS[0], |i| VERSIONS[(i + 1) % VERSIONS.len()])
}

fn upgrade_command(version: &str) -> String {
    let i = VERSIONS.iter().position(|v| *v == version).unwrap();
    let drive = format!("/dev/vd{}", (b'b' + i as u8) as char);
    format!("{AGENT} upgrade {drive} --allow-downgrade --allow-retry")
}

#[test]
fn power_cuts_during_upgrades_always_leave_a_good_slot_and_a_clean_esp() {
    let seed = std::env::var("P6OS_CUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("power cuts: seed {seed} (P6OS_CUT_SEED={seed} replays it)");
    let started = Instant::now();
    let mut rng = Rng(seed);
    let f = Fixture::new().unwrap();
    let image = f.image(&f.recipe("1.0.0", "", None).unwrap()).unwrap();
    let bundles: Vec<PathBuf> = VERSIONS
        .iter()
        .map(|v| f.bundle_disk(&f.recipe(v, "", None).unwrap()).unwrap())
        .collect();
    let disk = f.dir.path().join("disk.img");
    copy_image(&image, &disk).unwrap();
    let mut config = VmConfig::new(&disk).unwrap();
    config.extra_drives = bundles;
    config.firmware = Firmware::SecureBoot {
        vars: f.secure_boot_vars().unwrap(),
    };
    eprintln!("power cuts: fixtures ready after {:.0?}", started.elapsed());

    let mut cuts: Vec<(Phase, Duration)> = Vec::new();
    let mut repairs = 0;
    let mut fscks = 0;
    for n in 0..CUTS {
        let mut phase = SCHEDULE[n % SCHEDULE.len()];
        let mut vm = config.start_in_place(&format!("cut{n}")).unwrap();
        if phase == Phase::EspRepair {
            let (which, _) = vm
                .wait_for_any(&[REPAIRING, BLESSED], BOOT)
                .unwrap_or_else(|e| panic!("no repair and no settled slot: {e}"));
            if which == 0 {
                repairs += 1;
                let delay = Duration::from_millis(rng.below(phase.start_and_window().1));
                thread::sleep(delay);
                vm.power_cut();
                eprintln!("cut {}: {phase:?} + {} ms", n + 1, delay.as_millis());
                cuts.push((phase, delay));
                continue;
            }
            // The ESP was clean: this boot's cut goes into the kernel's write instead.
            phase = Phase::EspKernel;
        }
        let (slot, version) = if phase == Phase::EspKernel && vm.console_log().contains(BLESSED) {
            ready_fields(&vm)
        } else {
            settle(&mut vm)
        };
        repairs += vm.console_log().matches(REPAIRING).count();
        check_esp(&mut vm, &disk, &format!("recovery{n}"));
        fscks += 1;
        let want = next_version(&version);
        vm.send_line(&upgrade_command(want)).unwrap();
        let (start, window) = phase.start_and_window();
        let other = if slot == "a" { "b" } else { "a" };
        let start = start.replace("SLOT", other);
        vm.wait_for_line(&start, CMD).unwrap();
        let delay = Duration::from_millis(rng.below(window));
        thread::sleep(delay);
        let tail: String = vm
            .console_log()
            .lines()
            .rev()
            .find(|l| l.contains("p6os-agent:") || l.contains("Booting") || l.contains("Linux"))
            .unwrap_or_default()
            .to_string();
        vm.power_cut();
        eprintln!(
            "cut {}: on slot {slot} ({version}) upgrading to {want}, {phase:?} + {} ms; last line: {tail}",
            n + 1,
            delay.as_millis()
        );
        cuts.push((phase, delay));
    }

    // After the last cut: the machine comes up on a good slot, and the upgrade completes.
    let mut vm = config.start_in_place("final").unwrap();
    let (slot, version) = settle(&mut vm);
    check_esp(&mut vm, &disk, "the last recovery");
    let want = next_version(&version);
    vm.send_line(&upgrade_command(want)).unwrap();
    vm.wait_for_line(&format!("upgrade: installed {want}"), CMD)
        .unwrap();
    let other = if slot == "a" { "b" } else { "a" };
    vm.wait_for_line(
        &format!("p6os-agent: ready slot={other} version={want}"),
        BOOT,
    )
    .unwrap();
    vm.wait_for_line(&format!("slot {other} {BLESSED}"), CMD)
        .unwrap();
    assert!(
        vm.console_log().contains("p6os-agent: secure boot: on"),
        "the kernel did not run under Secure Boot"
    );
    check_esp(&mut vm, &disk, "the final upgrade");
    fscks += 2;
    let count = |p: Phase| cuts.iter().filter(|c| c.0 == p).count();
    assert!(cuts.len() >= 20);
    eprintln!(
        "power cuts: {} cuts (slot {}, old ESP files {}, kernel image {}, manifest+entry {}, \
         ESP repair {}, trial boot {}); {repairs} boots repaired the ESP; fsck.vfat -n clean {fscks} times; \
         every restart came up on a good slot; the final upgrade to {want} completed; {:.0?} in all",
        cuts.len(),
        count(Phase::WritingSlot),
        count(Phase::EspOldFiles),
        count(Phase::EspKernel),
        count(Phase::EspManifestAndEntry),
        count(Phase::EspRepair),
        count(Phase::TrialBoot),
        started.elapsed(),
    );
}
