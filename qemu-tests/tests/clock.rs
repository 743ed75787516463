//! A device whose hardware clock reads 2001 (a dead CMOS battery) still pairs over https:
//! at boot the agent moves the clock up to the image's build time; the console's certificate,
//! made when the test starts (newer than any package of the locked image), is then still "not
//! valid yet", so the agent takes the console's authenticated time, sets the clock, and pairs.
//! The time it saw is saved on the state partition: after a power cut, the next boot starts
//! from it rather than from the image's build time.

use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p6os_qemu_tests::console::Console;
use p6os_qemu_tests::fixture::Fixture;
use p6os_qemu_tests::vm::{Network, VmConfig};

const BOOT: Duration = Duration::from_secs(240);
const CMD: Duration = Duration::from_secs(60);
const ID: &str = "store-2001";

#[test]
fn a_device_whose_clock_reads_2001_corrects_it_and_pairs() {
    let f = Fixture::new().unwrap();
    let image = f.image(&f.recipe("1.0.0", "", None).unwrap()).unwrap();
    let console_dir = f.dir.path().join("console");
    fs::create_dir_all(&console_dir).unwrap();
    let console = Console::start(&console_dir, &f.public_key);
    f.inject(
        &image,
        &format!(
            "appliance:\n  id: {ID}\n\
             network:\n  interfaces:\n    - name: eth0\n      addresses: [10.0.2.15/24]\n\
             {}",
            console.unattended_section("10.0.2.2")
        ),
    )
    .unwrap();

    let mut config = VmConfig::new(&image).unwrap();
    config.network = Network::UserHostLoopback;
    config.rtc_base = Some("2001-01-01T00:00:00".into());
    let mut vm = config.start_in_place("clock").unwrap();
    let floor = vm.wait_for_line("p6os-agent: clock: ", BOOT).unwrap();
    assert!(
        floor.contains("2001 00:") && floor.contains("is before the image's build time: set to"),
        "{floor}"
    );
    let corrected = vm
        .wait_for_line("the console's certificate is not valid yet", BOOT)
        .unwrap();
    assert!(
        corrected.contains("set to the console's time"),
        "{corrected}"
    );
    vm.wait_for_line("registration: unregistered -> pending", BOOT)
        .unwrap();
    let listed = console.cli(&["appliances", "list", "--status", "pending", "--json"]);
    assert!(listed.contains(ID), "{listed}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let guest: u64 = vm
        .run("DATE", "date +%s", CMD)
        .unwrap()
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .unwrap();
    assert!(guest.abs_diff(now) < 300, "guest {guest}, host {now}");

    // The saved time is the next boot's floor.
    vm.power_cut();
    let mut vm = config.start_in_place("clock-again").unwrap();
    let floor = vm.wait_for_line("p6os-agent: clock: ", BOOT).unwrap();
    assert!(
        floor.contains("is before the last time seen: set to"),
        "{floor}"
    );
}
