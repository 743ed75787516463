//! The default image (Debian, systemd) against a real `p6os-console` (issue 16): its
//! `p6os-register.service` pairs and reports; the operator sets a new site configuration (host
//! name and a user) with `config set`, the device fetches it, reboots, applies it through the
//! first-boot transaction and reports `applied`; a document that passes the checks but cannot be
//! applied (a file owned by a user that does not exist) is reported `refused` and changes
//! nothing; a diagnostics bundle from the device holds its journal and the configuration's
//! outcome, and none of its secrets.
//!
//! Network rule: QEMU's user network where 10.0.2.2 is the host's loopback, the guest with a
//! static 10.0.2.15/24 and no default route (it reaches the console on 127.0.0.1 and nothing
//! else), and the guest's SSH port forwarded from 127.0.0.1.

use std::path::Path;
use std::time::Duration;

use p6os_qemu_tests::console::{Console, ADMIN_TOKEN, PAIRING_TOKEN};
use p6os_qemu_tests::fixture::Fixture;
use p6os_qemu_tests::ssh::{free_port, keygen, Ssh};
use p6os_qemu_tests::vm::{Network, VmConfig};

const BOOT: Duration = Duration::from_secs(480);
const ID: &str = "store-rc";
/// The password hash of the user the console adds: must never come back from the device.
const SITE_HASH: &str =
    "$6$saltsalt$SECRETHASHsiteabcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// The device's whole configuration: the console section and the network stay in every
/// version (a document is not a patch).
fn document(console: &Console, hostname: &str, users: &str, extra: &str) -> String {
    format!(
        "appliance:\n  id: {ID}\n\
         hostname: {hostname}\n\
         users:\n{users}\
         ssh:\n  password_authentication: false\n\
         network:\n  interfaces:\n    - mac: \"52:54:00:12:34:56\"\n      addresses: [10.0.2.15/24]\n\
         {extra}{}",
        console.unattended_section("10.0.2.2")
    )
}

fn user(name: &str, key: &str, passwd: Option<&str>) -> String {
    let passwd = passwd.map_or(String::new(), |h| format!("    passwd: \"{h}\"\n"));
    format!("  - name: {name}\n    sudo: true\n{passwd}    ssh_authorized_keys:\n      - {key}\n")
}

/// `config set` of `text` for the device; returns the configuration's number.
fn set(console: &Console, dir: &Path, name: &str, text: &str) -> u64 {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    let set = console.json(&["config", "set", file.to_str().unwrap(), "--id", ID]);
    assert_eq!(set["targets"][0], ID, "{set:#}");
    set["config"].as_u64().unwrap()
}

fn wait_report(console: &Console, config: u64) -> serde_json::Value {
    console.wait_json(
        &["config", "show", ID],
        &format!("the device's report on configuration {config}"),
        BOOT,
        |v| v["current"]["config"] == config && !v["current"]["outcome"].is_null(),
    )
}

#[test]
fn the_default_image_is_reconfigured_by_the_console_and_sends_diagnostics() {
    let f = Fixture::new().unwrap();
    let image = f
        .image(&f.recipe_of("default", "1.0.0", "").unwrap())
        .unwrap();
    let console_dir = f.dir.path().join("console");
    std::fs::create_dir_all(&console_dir).unwrap();
    let console = Console::start(&console_dir, &f.public_key);
    console.register_first_key(ID, &["site=rc"]);

    let (ops_key, ops_public) = keygen(f.dir.path());
    let site_dir = f.dir.path().join("site");
    std::fs::create_dir_all(&site_dir).unwrap();
    let (site_key, site_public) = keygen(&site_dir);
    let ops = user("ops", &ops_public, None);
    f.inject(&image, &document(&console, "store-rc-1", &ops, ""))
        .unwrap();

    let port = free_port();
    let mut vm_config = VmConfig::new(&image).unwrap();
    vm_config.memory_mib = 1024;
    vm_config.network = Network::UserHostLoopbackSsh { port };
    vm_config.hard_timeout = Duration::from_secs(2400);
    let mut vm = vm_config.start_in_place("console-default").unwrap();
    vm.wait_for_line("slot a is blessed", BOOT).unwrap();
    let ssh = Ssh {
        key: &ops_key,
        port,
    };
    ssh.wait(&vm, Duration::from_secs(180));
    assert_eq!(ssh.run(&vm, "cat /proc/1/comm").trim(), "systemd");
    // The systemd unit is what talks to the console here.
    let state = ssh.run(&vm, "systemctl is-active p6os-register.service || true");
    assert_eq!(state.trim(), "active");
    let v = console.wait_for(ID, "the first heartbeat", BOOT, |v| {
        v["reported"]["version"] == "1.0.0"
    });
    assert_eq!(v["status"], "ready", "{v:#}");
    assert_eq!(v["facts"]["hostname"], "store-rc-1", "{v:#}");
    let journal = ssh.run(
        &vm,
        "sudo journalctl -b -u p6os-register.service --no-pager",
    );
    assert!(journal.contains("-> ready"), "{journal}");

    // A new host name and a second user, from the console.
    let users = format!("{ops}{}", user("site", &site_public, Some(SITE_HASH)));
    let first = set(
        &console,
        f.dir.path(),
        "rc-2.yaml",
        &document(&console, "store-rc-2", &users, ""),
    );
    vm.wait_for_line("using unattended.yaml from the console", BOOT)
        .unwrap();
    vm.wait_for_line("config applied", BOOT).unwrap();
    let report = wait_report(&console, first);
    assert_eq!(report["current"]["outcome"], "applied", "{report:#}");
    // The operator sees the document, never its secrets.
    assert_eq!(report["document"]["users"][1]["passwd"], "(redacted)");
    assert!(!report.to_string().contains(SITE_HASH));
    let site = Ssh {
        key: &site_key,
        port,
    };
    site.wait_as(&vm, "site", Duration::from_secs(240));
    assert_eq!(site.run_as(&vm, "site", "hostname").trim(), "store-rc-2");
    assert_eq!(site.run_as(&vm, "site", "id -un").trim(), "site");
    let applied = site.run_as(&vm, "site", "sudo cat /var/lib/p6os/applied.json");
    assert!(
        applied.contains("\"source_kind\":\"console\"")
            || applied.contains("\"source_kind\": \"console\""),
        "{applied}"
    );
    let v = console.wait_for(ID, "the facts after the reboot", BOOT, |v| {
        v["facts"]["hostname"] == "store-rc-2"
    });
    assert_eq!(v["reported"]["version"], "1.0.0", "{v:#}");

    // Passes every check, cannot be applied: a file for a user that does not exist. The
    // device reboots, refuses it as a whole and reports why; nothing of it is applied.
    let refused_doc = document(
        &console,
        "store-rc-3",
        &users,
        "write_files:\n  - path: /etc/rc-refused\n    content: never\n    owner: nosuchuser\n",
    );
    let second = set(&console, f.dir.path(), "rc-3.yaml", &refused_doc);
    vm.wait_for_line("using unattended.yaml from the console", BOOT)
        .unwrap();
    let report = wait_report(&console, second);
    assert_eq!(report["current"]["outcome"], "refused", "{report:#}");
    let problems = report["current"]["problems"].to_string();
    assert!(problems.contains("nosuchuser"), "{report:#}");
    site.wait_as(&vm, "site", Duration::from_secs(240));
    assert_eq!(site.run_as(&vm, "site", "hostname").trim(), "store-rc-2");
    let absent = site.run_as(
        &vm,
        "site",
        "test -e /etc/rc-refused && echo there || echo absent",
    );
    assert_eq!(absent.trim(), "absent");
    let history = console.json(&["config", "history", ID]);
    assert_eq!(history.as_array().map(Vec::len), Some(2), "{history:#}");

    // Diagnostics from a systemd device: its journal, the console's configuration outcome,
    // and no secret.
    let (tar, files) = console.diagnostics(ID, f.dir.path(), BOOT);
    assert!(files["journal/boot.txt"].contains("p6os"), "no journal");
    assert!(files["config/console-result.json"].contains("refused"));
    assert!(files["config/applied.json"].contains("console"));
    assert!(files["boot/entries/p6os-1.0.0-a.conf"].contains("efi /p6os/a/p6os.efi"));
    let text = String::from_utf8_lossy(&tar);
    for secret in [SITE_HASH, PAIRING_TOKEN, ADMIN_TOKEN] {
        assert!(!text.contains(secret), "a secret in the diagnostics bundle");
    }
    let log = vm.console_log();
    for secret in [SITE_HASH, PAIRING_TOKEN, ADMIN_TOKEN] {
        assert!(!log.contains(secret), "a secret on the serial console");
    }
}
