//! The default image (Debian bookworm, systemd as PID 1, containerd) end to end: built from
//! `recipes/default.yaml` and its lock, with an OCI archive the test makes itself preloaded;
//! unattended.yaml sets the host name and a user with an SSH key; the test logs in over SSH
//! (QEMU forwards 127.0.0.1:<port> to the guest's port 22), checks the agent's units,
//! containerd and the imported image, then upgrades to a rebuilt 2.0.0 and sees it blessed.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use p6os_qemu_tests::fixture::Fixture;
use p6os_qemu_tests::oci;
use p6os_qemu_tests::slot;
use p6os_qemu_tests::vm::{Network, Vm, VmConfig};

const BOOT: Duration = Duration::from_secs(420);
const AGENT: &str = "/usr/lib/p6os/p6os-agent";
const IMAGE_NAME: &str = "docker.io/p6os/hello:1.0";

/// A free loopback port for the SSH forward.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Ssh<'a> {
    key: &'a Path,
    port: u16,
}

impl Ssh<'_> {
    fn command(&self, cmd: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
            "-i",
        ])
        .arg(self.key)
        .args(["-p", &self.port.to_string(), "ops@127.0.0.1", cmd]);
        c
    }

    /// Runs `cmd` as the SSH user; panics with its output (and the console) if it fails.
    fn run(&self, vm: &Vm, cmd: &str) -> String {
        let out = self.command(cmd).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            panic!(
                "ssh `{cmd}` failed ({}): {text}{}\n(console: {})",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                vm.log_path().display()
            );
        }
        text
    }

    /// Waits until a login works (sshd up, the key accepted).
    fn wait(&self, vm: &Vm, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(o) = self.command("true").output() {
                if o.status.success() {
                    return;
                }
            }
            assert!(
                start.elapsed() < timeout,
                "no SSH login after {timeout:?} (console: {})",
                vm.log_path().display()
            );
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    fn status(&self, vm: &Vm) -> serde_json::Value {
        p6os_qemu_tests::parse_status(&self.run(vm, &format!("sudo {AGENT} status --json")))
    }
}

#[test]
fn default_image_boots_systemd_applies_config_runs_containerd_and_upgrades() {
    let f = Fixture::new().unwrap();
    // The air-gapped content: an OCI archive the test makes.
    let archive = oci::archive(IMAGE_NAME, "hello from an air-gapped site\n");
    let archive_path = f.dir.path().join("hello.tar");
    std::fs::write(&archive_path, &archive).unwrap();
    let images = format!(
        "images:\n  - file: {}\n    sha256: {}\n",
        archive_path.display(),
        oci::sha256(&archive)
    );
    let image = f
        .image(&f.recipe_of("default", "1.0.0", &images).unwrap())
        .unwrap();
    let v2 = f
        .bundle_disk(&f.recipe_of("default", "2.0.0", &images).unwrap())
        .unwrap();

    // The operator's key and unattended.yaml.
    let key = f.dir.path().join("id_ed25519");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ops@test", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(keygen.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let config = format!(
        "hostname: store-0421\nusers:\n  - name: ops\n    sudo: true\n    ssh_authorized_keys:\n      - {}\nssh:\n  password_authentication: false\n",
        public.trim()
    );
    f.inject(&image, &config).unwrap();

    let port = free_port();
    let mut vm_config = VmConfig::new(&image).unwrap();
    vm_config.memory_mib = 1024;
    vm_config.network = Network::UserRestrictedSsh { port };
    vm_config.extra_drives = vec![v2];
    let mut vm = vm_config.start("default-image").unwrap();
    let ssh = Ssh { key: &key, port };

    // systemd is PID 1; the agent's boot assessment ran after multi-user.target.
    vm.wait_for_line("slot a is blessed", BOOT).unwrap();
    ssh.wait(&vm, Duration::from_secs(120));
    assert_eq!(ssh.run(&vm, "cat /proc/1/comm").trim(), "systemd");
    assert_eq!(ssh.run(&vm, "hostname").trim(), "store-0421");
    assert_eq!(ssh.run(&vm, "id -un").trim(), "ops");
    for unit in [
        "p6os-firstboot.service",
        "p6os-assess.service",
        "p6os-images.service",
        "containerd.service",
        "ssh.service",
    ] {
        let state = ssh.run(&vm, &format!("systemctl is-active {unit} || true"));
        assert_eq!(state.trim(), "active", "{unit}");
    }
    // Nothing failed at boot.
    let failed = ssh.run(&vm, "systemctl --failed --no-legend --plain || true");
    assert_eq!(failed.trim(), "", "failed units");
    // The root is read-only; /tmp is a tmpfs; containerd keeps its data on the state partition.
    let ro = ssh.run(&vm, "touch /usr/x 2>&1 || true");
    assert!(ro.contains("Read-only file system"), "{ro}");
    let fstype = |dir: &str| ssh.run(&vm, &format!("findmnt -rno FSTYPE --target {dir}"));
    assert_eq!(fstype("/tmp").trim(), "tmpfs");
    assert_eq!(fstype("/var/lib/containerd").trim(), "ext4");
    assert_eq!(fstype("/var/log").trim(), "overlay");
    // The preloaded image was imported once and is there.
    let listed = ssh.run(&vm, "sudo ctr --namespace k8s.io images ls -q");
    assert!(listed.lines().any(|l| l == IMAGE_NAME), "{listed}");
    let journal = ssh.run(
        &vm,
        "sudo journalctl -b -u p6os-images.service --no-pager -o cat",
    );
    assert!(journal.contains("imported"), "{journal}");
    // SSH host keys were made on the device: they are in the /etc overlay's upper layer on
    // the state partition, not in the image.
    let keys = ssh.run(&vm, "sudo ls /run/p6os/state/overlay/etc/upper/ssh/");
    assert!(keys.contains("ssh_host_ed25519_key"), "{keys}");
    // Name resolution goes through systemd-resolved, not the build host's resolv.conf.
    let resolv = ssh.run(&vm, "readlink /etc/resolv.conf");
    assert_eq!(resolv.trim(), "../run/systemd/resolve/stub-resolv.conf");

    // Upgrade to 2.0.0 from the attached bundle; the new slot is blessed after its checks.
    let out = ssh
        .command(&format!("sudo {AGENT} upgrade /dev/vdb"))
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("installed 2.0.0 into slot b"), "{said}");
    vm.wait_for_line("p6os-agent: boot entry p6os-2.0.0-b", BOOT)
        .unwrap();
    vm.wait_for_line("health checks passed: blessing slot b", BOOT)
        .unwrap();
    ssh.wait(&vm, Duration::from_secs(180));
    let s = ssh.status(&vm);
    assert_eq!(s["booted"], "b", "{s:#}");
    assert_eq!(slot(&s, "b")["state"], "blessed", "{s:#}");
    assert_eq!(slot(&s, "b")["version"], "2.0.0", "{s:#}");
    // The configuration and the imported image survive the upgrade (state partition).
    assert_eq!(ssh.run(&vm, "hostname").trim(), "store-0421");
    let listed = ssh.run(&vm, "sudo ctr --namespace k8s.io images ls -q");
    assert!(listed.lines().any(|l| l == IMAGE_NAME), "{listed}");
}
