//! The default image (Debian bookworm, systemd as PID 1, containerd) end to end: built from
//! `recipes/default.yaml` and its lock, with an OCI archive the test makes itself preloaded;
//! unattended.yaml sets the host name and a user with an SSH key; the test logs in over SSH
//! (QEMU forwards 127.0.0.1:<port> to the guest's port 22), checks the agent's units,
//! containerd and the imported image, then upgrades to a rebuilt 2.0.0 and sees it blessed.

use std::time::Duration;

use p6os_qemu_tests::fixture::Fixture;
use p6os_qemu_tests::oci;
use p6os_qemu_tests::slot;
use p6os_qemu_tests::ssh::{free_port, keygen, ops_config, Ssh, AGENT};
use p6os_qemu_tests::vm::{Network, VmConfig};

const BOOT: Duration = Duration::from_secs(420);
const IMAGE_NAME: &str = "docker.io/p6os/hello:1.0";

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
    let (key, public) = keygen(f.dir.path());
    f.inject(&image, &ops_config("store-0421", &public))
        .unwrap();

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
