//! Power cuts during upgrades: QEMU is killed at random instants while the slot is written,
//! while the ESP files and the entry are written, and during the first trial boot. After each
//! cut the machine must come up on a good slot by itself, and the upgrade, run again, must
//! complete. The test prints every cut (phase and delay) and the seed (`P6OS_CUT_SEED`
//! replays a run).

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p6os_qemu_tests::fixture::Fixture;
use p6os_qemu_tests::vm::{copy_image, Vm, VmConfig};

const BOOT: Duration = Duration::from_secs(240);
const CMD: Duration = Duration::from_secs(120);
const AGENT: &str = "/usr/lib/p6os/p6os-agent";
const CUTS: usize = 10;
const VERSIONS: [&str; 5] = ["2.0.0", "3.0.0", "4.0.0", "5.0.0", "6.0.0"];

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
    /// While the root filesystem streams into the other slot.
    WritingSlot,
    /// After the slot: kernel, initramfs, manifest on the ESP, the entry, the record.
    WritingEspAndEntry,
    /// During the first boot of the new slot (loader, kernel, agent, health checks).
    TrialBoot,
}

const PHASES: [Phase; 3] = [
    Phase::WritingSlot,
    Phase::WritingEspAndEntry,
    Phase::TrialBoot,
];

/// Boots and waits until the booted slot is settled (blessed); returns (slot, version).
fn boot_settled(config: &VmConfig, name: &str) -> (Vm, String, String) {
    let mut vm = config.start_in_place(name).unwrap();
    let ready = vm.wait_for_line("p6os-agent: ready slot=", BOOT).unwrap();
    let field = |key: &str| {
        ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_default()
            .to_string()
    };
    let (slot, version) = (field("slot="), field("version="));
    assert!(slot == "a" || slot == "b", "{ready}");
    // A trial boot blesses itself (health passes), a blessed boot says so.
    vm.wait_for_line(&format!("slot {slot} is blessed"), CMD)
        .unwrap_or_else(|e| panic!("slot {slot} ({version}) did not settle: {e}"));
    (vm, slot, version)
}

#[test]
fn power_cuts_during_upgrades_always_leave_a_good_slot() {
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
    let drive = |i: usize| format!("/dev/vd{}", (b'b' + i as u8) as char);

    let mut cuts = Vec::new();
    for n in 0..CUTS {
        let (mut vm, slot, version) = boot_settled(&config, &format!("cut{n}"));
        let next = VERSIONS
            .iter()
            .position(|v| *v == version)
            .map_or(0, |i| i + 1);
        assert!(next < VERSIONS.len(), "ran out of bundles at {version}");
        let phase = PHASES[n % PHASES.len()];
        vm.send_line(&format!("{AGENT} upgrade {}", drive(next)))
            .unwrap();
        let delay = match phase {
            Phase::WritingSlot => {
                vm.wait_for_line("upgrade: rootfs 10%", CMD).unwrap();
                Duration::from_millis(rng.below(1500))
            }
            Phase::WritingEspAndEntry => {
                vm.wait_for_line("upgrade: rootfs 100%", CMD).unwrap();
                Duration::from_millis(rng.below(1200))
            }
            Phase::TrialBoot => {
                vm.wait_for_line("p6os-agent: rebooting", CMD).unwrap();
                Duration::from_millis(rng.below(12_000))
            }
        };
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
            "cut {}: on slot {slot} ({version}) upgrading to {}, {phase:?} + {} ms; last line: {tail}",
            n + 1,
            VERSIONS[next],
            delay.as_millis()
        );
        cuts.push((phase, delay));
    }

    // After the last cut: the machine comes up on a good slot, and the upgrade completes.
    let (mut vm, slot, version) = boot_settled(&config, "final");
    let next = VERSIONS
        .iter()
        .position(|v| *v == version)
        .map_or(0, |i| i + 1);
    assert!(next < VERSIONS.len(), "ran out of bundles at {version}");
    let want = VERSIONS[next];
    vm.send_line(&format!("{AGENT} upgrade {}", drive(next)))
        .unwrap();
    vm.wait_for_line(&format!("upgrade: installed {want}"), CMD)
        .unwrap();
    let other = if slot == "a" { "b" } else { "a" };
    vm.wait_for_line(
        &format!("p6os-agent: ready slot={other} version={want}"),
        BOOT,
    )
    .unwrap();
    vm.wait_for_line(&format!("slot {other} is blessed"), CMD)
        .unwrap();
    eprintln!(
        "power cuts: {} cuts ({} while writing the slot, {} while writing ESP files and the entry, {} during a trial boot); every restart came up on a good slot; the final upgrade to {want} completed",
        cuts.len(),
        cuts.iter().filter(|c| matches!(c.0, Phase::WritingSlot)).count(),
        cuts.iter().filter(|c| matches!(c.0, Phase::WritingEspAndEntry)).count(),
        cuts.iter().filter(|c| matches!(c.0, Phase::TrialBoot)).count(),
    );
}
