//! A site whose only way to its console is its web proxy: a real `tinyproxy` the test starts on
//! the host's loopback (with Basic authentication), reached from the guest as 10.0.2.2 (QEMU's
//! user network, no default route in the guest). unattended.yaml names that proxy with its
//! credentials and a console at https://127.0.0.1:PORT: the guest's own loopback, where nothing
//! listens, so only the proxy's CONNECT (made on the host) reaches the console. (QEMU's
//! `guestfwd` to a host socket carries one connection only, so `restrict=on` with a forward to
//! the proxy is not usable here without a relay program.) The device pairs, heartbeats, downloads a bundle and upgrades
//! through it; the proxy's log shows the tunnels; the credentials never reach the serial console.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use p6os_qemu_tests::console::Console;
use p6os_qemu_tests::fixture::Fixture;
use p6os_qemu_tests::vm::{Network, VmConfig};

const BOOT: Duration = Duration::from_secs(240);
const UPGRADE: Duration = Duration::from_secs(400);
const ID: &str = "store-7-nuc";
const PROXY_USER: &str = "store7";
const PROXY_PASSWORD: &str = "proxy-secret-for-the-test";

/// `tinyproxy -d` on 127.0.0.1, killed on drop.
struct Tinyproxy {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Tinyproxy {
    fn start(dir: &Path) -> Tinyproxy {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("tinyproxy.log");
        let config = dir.join("tinyproxy.conf");
        // No ConnectPort line: CONNECT to any port (the console's is a free one).
        fs::write(
            &config,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 120\nLogFile \"{}\"\nLogLevel Connect\n\
                 Allow 127.0.0.1\nBasicAuth {PROXY_USER} {PROXY_PASSWORD}\n",
                log.display()
            ),
        )
        .unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy (Debian package tinyproxy; `cargo xtask deps` installs it)");
        let mut proxy = Tinyproxy { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("tinyproxy stopped ({status}): {}", proxy.log());
            }
            assert!(Instant::now() < deadline, "tinyproxy does not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        proxy
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_device_behind_a_proxy_pairs_and_upgrades_through_it() {
    let f = Fixture::new().unwrap();
    let image = f.image(&f.recipe("1.0.0", "", None).unwrap()).unwrap();
    let bundle = f.bundle(&f.recipe("2.0.0", "", None).unwrap()).unwrap();
    let console_dir = f.dir.path().join("console");
    fs::create_dir_all(&console_dir).unwrap();
    let console = Console::start(&console_dir, &f.public_key);
    let proxy = Tinyproxy::start(f.dir.path());

    let proxy_url = format!(
        "http://{PROXY_USER}:{PROXY_PASSWORD}@10.0.2.2:{}",
        proxy.port
    );
    f.inject(
        &image,
        &format!(
            "appliance:\n  id: {ID}\n  labels: {{site: store-7}}\n\
             network:\n  interfaces:\n    - name: eth0\n      addresses: [10.0.2.15/24]\n\
             proxy:\n  http_proxy: {proxy_url}\n  https_proxy: {proxy_url}\n\
             {}",
            console.unattended_section("127.0.0.1")
        ),
    )
    .unwrap();

    let mut config = VmConfig::new(&image).unwrap();
    config.network = Network::UserHostLoopback;
    let mut vm = config.start("proxy").unwrap();
    vm.wait_for_line("p6os-agent: ready slot=a version=1.0.0", BOOT)
        .unwrap();
    vm.wait_for_line("registration: unregistered -> pending", BOOT)
        .unwrap();
    console.cli(&[
        "appliances",
        "register",
        ID,
        "--label",
        "site=store-7",
        "--pairing",
        "first-key",
    ]);
    vm.wait_for_line("registration: pending -> ready", BOOT)
        .unwrap();
    console.wait_for(ID, "the first heartbeat", BOOT, |v| {
        v["reported"]["version"] == "1.0.0"
    });

    console.cli(&["bundles", "add", bundle.to_str().unwrap()]);
    console.cli(&["desire", "--version", "2.0.0", "--selector", "site=store-7"]);
    vm.wait_for_line("upgrade: installed 2.0.0 into slot b", UPGRADE)
        .unwrap();
    vm.wait_for_line("slot b is blessed", BOOT).unwrap();
    console.wait_for(ID, "the report of 2.0.0, blessed", BOOT, |v| {
        v["reported"]["version"] == "2.0.0" && v["reported"]["last_upgrade"]["outcome"] == "blessed"
    });

    // Every request went through the proxy: tunnels to the console, authenticated.
    let log = proxy.log();
    let target = format!("127.0.0.1:{}", console.port());
    let tunnels = log
        .lines()
        .filter(|l| l.contains("CONNECT") && l.contains(&target))
        .count();
    assert!(
        tunnels >= 3,
        "pair, heartbeats and the download: {tunnels} tunnels in\n{log}"
    );
    let serial = vm.console_log();
    assert!(
        !serial.contains(PROXY_PASSWORD),
        "the proxy password reached the serial console"
    );
}
