//! Collections from a prepared tree: every item there, bounds, secrets redacted, excluded
//! files never read, links planted by a user not followed; and when a job starts.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use p6os_protocol::diagnostics::{Manifest, MANIFEST_NAME};

use super::*;

/// A document with secrets; the tree's applied record names its digest.
const DOC: &str = "hostname: edge-1
users:
  - name: ops
    passwd: \"$6$salt$SECRETPASSWD\"
registries:
  configs:
    registry.example.com:
      username: puller
      password: SECRET-REGISTRY
console:
  endpoint: \"https://console.example.com\"
  token: SECRET-PAIRING
write_files:
  - path: /etc/app/key
    content: SECRET-FILE
";

const SECRETS: [&str; 7] = [
    "SECRETPASSWD",
    "SECRET-REGISTRY",
    "SECRET-PAIRING",
    "SECRET-FILE",
    "SECRET-IDENTITY-KEY",
    "SECRET-DEVICE-TOKEN",
    "SECRET-CONSOLE-JSON",
];

fn write(root: &Path, rel: &str, text: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A device's tree: root and ESP.
pub(crate) fn tree() -> (tempfile::TempDir, Sources) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let esp = dir.path().join("esp");
    let r = root.as_path();
    let digest = crate::firstboot::applied::sha256(DOC.as_bytes());
    write(r, "usr/lib/p6os/unattended.yaml", DOC.as_bytes());
    write(
        r,
        "var/lib/p6os/applied.json",
        format!(r#"{{"digest":"{digest}","rendered_digest":"x","source":"image","applied_at":"2026-01-01T00:00:00Z","files":[]}}"#).as_bytes(),
    );
    write(
        r,
        "var/lib/p6os/slots.json",
        br#"{"trial":null,"rolled_back":[{"version":"2.0.0","reason":"health check k3s failed"}],"last_upgrade":{"rolled_back":{"version":"2.0.0","slot":"b","reason":"health check k3s failed"}}}"#,
    );
    write(r, "var/lib/p6os/security-floor", b"1.0.0\n");
    write(r, "var/lib/p6os/identity.key", b"SECRET-IDENTITY-KEY");
    write(
        r,
        "var/lib/p6os/registration.json",
        b"{\"device_token\":\"SECRET-DEVICE-TOKEN\"}",
    );
    write(
        r,
        "etc/p6os/console.json",
        b"{\"token\":\"SECRET-CONSOLE-JSON\"}",
    );
    // A user's link where the resolver configuration belongs, to the device key.
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::os::unix::fs::symlink(
        r.join("var/lib/p6os/identity.key"),
        r.join("etc/resolv.conf"),
    )
    .unwrap();
    write(
        r,
        "dev/kmsg",
        b"6,1,100,-;Linux version 6.1\n6,2,200,-;eth0: link up\n",
    );
    write(r, "proc/net/dev", b"Inter-|   Receive\n  eth0: 100 2 0 0\n");
    write(r, "proc/net/route", b"Iface\tDestination\neth0\t00000000\n");
    write(r, "proc/net/ipv6_route", b"");
    write(
        r,
        "proc/net/if_inet6",
        b"fe800000000000000000000000000001 02 40 20 80 eth0\n",
    );
    write(r, "proc/net/arp", b"IP address HW type\n");
    write(
        r,
        "proc/self/mountinfo",
        b"22 1 259:3 / / rw,relatime - ext4 /dev/vda3 rw\n",
    );
    write(r, "sys/class/net/eth0/address", b"52:54:00:12:34:56\n");
    write(r, "sys/class/net/eth0/operstate", b"up\n");
    write(
        r,
        "usr/bin/journalctl",
        b"#!/bin/sh\necho \"2026-01-01T00:00:00 edge-1 k3s[1]: started ($*)\"\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        r.join("usr/bin/journalctl"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    write(&esp, "loader/loader.conf", b"timeout 0\ndefault p6os-*\n");
    write(
        &esp,
        "loader/entries/p6os-a.conf",
        b"title P6OS 1.0.0 (a)\n",
    );
    write(
        &esp,
        "loader/entries/p6os-b+2-1.conf",
        b"title P6OS 2.0.0 (b)\n",
    );
    let sources = Sources {
        root,
        esp: Some(esp),
        status: Ok(serde_json::json!({"booted": "a", "registration": {"phase": "ready"}})),
    };
    (dir, sources)
}

/// The archive's files by name (the manifest parsed), from the compressed bundle.
fn open(bundle: &[u8]) -> (Vec<u8>, Manifest, BTreeMap<String, Vec<u8>>) {
    let tar = zstd::stream::decode_all(bundle).unwrap();
    let mut files = BTreeMap::new();
    let mut order = Vec::new();
    for entry in ::tar::Archive::new(&tar[..]).entries().unwrap() {
        let mut e = entry.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        order.push(name.clone());
        files.insert(name, data);
    }
    assert_eq!(order[0], MANIFEST_NAME, "the manifest comes first");
    let manifest = serde_json::from_slice(&files[MANIFEST_NAME]).unwrap();
    (tar, manifest, files)
}

fn limits() -> Limits {
    Limits {
        command_timeout: Duration::from_secs(10),
        ..Limits::for_size(p6os_protocol::diagnostics::MAX_BYTES)
    }
}

#[test]
fn every_item_is_there_and_no_secret() {
    let (_dir, sources) = tree();
    let max = p6os_protocol::diagnostics::MAX_BYTES;
    let (bundle, manifest) = collect(&sources, 42, max, limits()).unwrap();
    assert!(bundle.len() as u64 <= max);
    let (tar, read_manifest, files) = open(&bundle);
    assert_eq!(read_manifest, manifest);
    assert_eq!(manifest.request, 42);
    let text = |name: &str| {
        String::from_utf8_lossy(
            files
                .get(name)
                .unwrap_or_else(|| panic!("no {name}: {manifest:#?}")),
        )
        .into_owned()
    };
    assert!(text("agent/status.json").contains("\"booted\": \"a\""));
    assert!(text("boot/loader.conf").contains("default p6os-*"));
    assert!(text("boot/entries/p6os-a.conf").contains("1.0.0"));
    assert!(text("boot/entries/p6os-b_2-1.conf").contains("2.0.0"));
    assert!(text("boot/slots.json").contains("health check k3s failed"));
    assert_eq!(text("boot/security-floor"), "1.0.0\n");
    assert!(text("kernel/kmsg.txt").contains("eth0: link up"));
    assert!(text("journal/boot.txt").contains("k3s[1]: started (-b --no-pager"));
    assert!(text("net/dev").contains("eth0"));
    assert!(text("net/route").contains("eth0"));
    assert!(text("net/interfaces.json").contains("52:54:00:12:34:56"));
    assert!(text("disk/usage.json").contains("\"fstype\": \"ext4\""));
    assert!(text("config/applied.json").contains("sha256:"));
    let doc = text("config/document.redacted.json");
    assert!(doc.contains("edge-1") && doc.contains("puller"), "{doc}");
    assert!(doc.contains(p6os_config::unattended::REDACTED), "{doc}");
    // Each file in the archive is in the manifest with its size; nothing cut.
    for (name, data) in &files {
        if name == MANIFEST_NAME {
            continue;
        }
        let item = manifest.items.iter().find(|i| &i.name == name).unwrap();
        assert_eq!(item.size, data.len() as u64, "{name}");
        assert!(!item.truncated, "{name}");
    }
    // The link planted at etc/resolv.conf is listed, not followed.
    let resolv = manifest
        .items
        .iter()
        .find(|i| i.name == "net/resolv.conf")
        .unwrap();
    assert!(
        resolv
            .error
            .as_deref()
            .unwrap_or("")
            .contains("not followed"),
        "{resolv:?}"
    );
    assert!(!files.contains_key("net/resolv.conf"));
    // No secret anywhere in the archive, and the excluded files are named.
    let all = String::from_utf8_lossy(&tar);
    for secret in SECRETS {
        assert!(!all.contains(secret), "{secret} is in the bundle");
    }
    for path in [
        "/var/lib/p6os/identity.key",
        "/var/lib/p6os/registration.json",
        "/etc/p6os/console.json",
    ] {
        assert!(manifest.excluded.iter().any(|e| e.path == path), "{path}");
    }
}

#[test]
fn items_and_the_whole_are_bounded() {
    let (_dir, sources) = tree();
    let mut kmsg = Vec::new();
    for i in 0..2000 {
        kmsg.extend_from_slice(format!("6,{i},0,-;line {i:05}\n").as_bytes());
    }
    std::fs::write(sources.root.join("dev/kmsg"), &kmsg).unwrap();
    let small = Limits {
        kmsg: 1000,
        ..limits()
    };
    let (bundle, manifest) = collect(&sources, 1, 1 << 20, small).unwrap();
    let (_, _, files) = open(&bundle);
    let item = manifest
        .items
        .iter()
        .find(|i| i.name == "kernel/kmsg.txt")
        .unwrap();
    assert!(item.truncated && item.size <= 1000, "{item:?}");
    let log = String::from_utf8_lossy(&files["kernel/kmsg.txt"]).into_owned();
    assert!(log.ends_with("line 01999\n"), "the newest are kept: {log}");
    assert!(!log.contains("line 00000"));

    // A bundle budget smaller than the items: the later ones are cut, none exceeds it.
    let tight = Limits {
        total: 300,
        ..limits()
    };
    let (bundle, manifest) = collect(&sources, 2, 1 << 20, tight).unwrap();
    let sum: u64 = manifest.items.iter().map(|i| i.size).sum();
    assert!(sum <= 300, "{sum}");
    assert!(manifest.items.iter().any(|i| i.truncated));
    open(&bundle);

    // A bundle that cannot fit the size asked is an error, not a larger upload.
    let e = collect(&sources, 3, 10, limits()).unwrap_err();
    assert!(e.contains("over the 10 asked"), "{e}");
}

#[test]
fn a_hanging_journal_is_cut_at_the_timeout() {
    let (_dir, sources) = tree();
    write(
        &sources.root,
        "usr/bin/journalctl",
        b"#!/bin/sh\necho early\nexec sleep 30\n",
    );
    let quick = Limits {
        command_timeout: Duration::from_millis(300),
        ..limits()
    };
    let started = std::time::Instant::now();
    let (bundle, manifest) = collect(&sources, 1, 1 << 20, quick).unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    let item = manifest
        .items
        .iter()
        .find(|i| i.name == "journal/boot.txt")
        .unwrap();
    assert!(item.truncated, "{item:?}");
    let (_, _, files) = open(&bundle);
    assert_eq!(files["journal/boot.txt"], b"early\n");
}

#[test]
fn without_a_journal_or_an_esp_the_items_say_why() {
    let (_dir, mut sources) = tree();
    std::fs::remove_file(sources.root.join("usr/bin/journalctl")).unwrap();
    sources.esp = None;
    sources.status = Err("no slot record".into());
    let (_, manifest) = collect(&sources, 1, 1 << 20, limits()).unwrap();
    let error = |name: &str| {
        manifest
            .items
            .iter()
            .find(|i| i.name == name)
            .and_then(|i| i.error.clone())
            .unwrap_or_default()
    };
    assert!(error("journal/boot.txt").contains("no journalctl"));
    assert!(error("boot/entries").contains("ESP"));
    assert_eq!(error("agent/status.json"), "no slot record");
}

#[test]
fn a_configuration_from_the_console_is_reported_and_its_staged_document_never_read() {
    let (_dir, sources) = tree();
    let r = sources.root.as_path();
    write(
        r,
        "var/lib/p6os/applied.json",
        br#"{"digest":"sha256:0000","rendered_digest":"x","source":"the console (configuration 3)","source_kind":"console","applied_at":"2026-01-01T00:00:00Z","files":[]}"#,
    );
    write(
        r,
        "var/lib/p6os/console-config.result.json",
        br#"{"config":3,"outcome":"applied","problems":[]}"#,
    );
    write(
        r,
        "var/lib/p6os/console-config.json",
        br#"{"config":4,"document":"users: [{name: a, passwd: SECRET-STAGED}]","boot_id":"x"}"#,
    );
    let (bundle, manifest) = collect(&sources, 1, 1 << 20, limits()).unwrap();
    let (tar, _, files) = open(&bundle);
    assert!(String::from_utf8_lossy(&files["config/console-result.json"]).contains("applied"));
    assert!(!String::from_utf8_lossy(&tar).contains("SECRET-STAGED"));
    assert!(manifest
        .excluded
        .iter()
        .any(|e| e.path == crate::firstboot::console::STAGED_PATH));
    let doc = manifest
        .items
        .iter()
        .find(|i| i.name == "config/document.redacted.json")
        .unwrap();
    assert!(
        doc.error
            .as_deref()
            .unwrap_or_default()
            .contains("config show"),
        "{doc:?}"
    );
}

#[test]
fn one_job_at_a_time_and_each_request_once() {
    let mut done = VecDeque::new();
    assert!(should_start(1, None, &done));
    assert!(!should_start(2, Some(1), &done));
    done.push_back(1);
    assert!(!should_start(1, None, &done));
    assert!(should_start(2, None, &done));
}
