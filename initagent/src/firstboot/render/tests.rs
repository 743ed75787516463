use std::path::Path;

use p6os_config::unattended::{self, Unattended};

use super::*;

/// The full example of docs/unattended.md: what operators copy.
fn docs_example() -> Unattended {
    let doc = include_str!("../../../../docs/unattended.md");
    let start = doc.find("```yaml\n").expect("example block") + "```yaml\n".len();
    let end = start + doc[start..].find("```").expect("end of example");
    unattended::load(Path::new("docs/unattended.md"), &doc[start..end]).expect("example is valid")
}

fn load(text: &str) -> Unattended {
    unattended::load(Path::new("t.yaml"), text).unwrap()
}

fn minimal_base() -> Base {
    Base {
        flavor: Flavor::Minimal,
        passwd: "root:x:0:0:root:/root:/bin/sh\n".into(),
        group: "root:x:0:\n".into(),
        shadow: String::new(),
        shell: "/bin/sh".into(),
        has_sshd: false,
        machine_id: "0123456789abcdef0123456789abcdef".into(),
    }
}

fn debian_base() -> Base {
    Base {
        flavor: Flavor::Systemd,
        passwd: "root:x:0:0:root:/root:/bin/bash\n\
                 daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                 taken:x:1000:1000::/home/taken:/bin/bash\n"
            .into(),
        group: "root:x:0:\nadm:x:4:\nsudo:x:27:\ntaken:x:1000:\n".into(),
        shadow: "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n".into(),
        shell: "/bin/bash".into(),
        has_sshd: true,
        machine_id: "fedcba9876543210fedcba9876543210".into(),
    }
}

/// Every target with its content: the golden form of what the agent writes.
fn dump(r: &Rendered) -> String {
    let mut out = r.listing();
    for t in &r.targets {
        match &t.content {
            Content::File(bytes) => out.push_str(&format!(
                "\n=== {}\n{}",
                t.path,
                String::from_utf8_lossy(bytes)
            )),
            Content::Symlink(_) | Content::Dir => {}
        }
    }
    for n in &r.notes {
        out.push_str(&format!("\nnote: {n}"));
    }
    out
}

#[test]
fn docs_example_on_the_minimal_base() {
    let r = render(&docs_example(), &minimal_base()).unwrap();
    insta::assert_snapshot!(dump(&r));
}

#[test]
fn docs_example_on_a_systemd_base() {
    let r = render(&docs_example(), &debian_base()).unwrap();
    insta::assert_snapshot!(dump(&r));
}

#[test]
fn rendering_is_deterministic() {
    let a = render(&docs_example(), &debian_base()).unwrap();
    let b = render(&docs_example(), &debian_base()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn secrets_are_0600_and_root_owned() {
    let r = render(&docs_example(), &debian_base()).unwrap();
    for path in [
        "/etc/shadow",
        "/etc/p6os/registries.yaml",
        "/etc/p6os/console.json",
    ] {
        let t = r.targets.iter().find(|t| t.path == path).unwrap();
        assert_eq!((t.mode, t.uid, t.gid), (0o600, 0, 0), "{path}");
    }
    let keys = r
        .targets
        .iter()
        .find(|t| t.path == "/var/home/ops/.ssh/authorized_keys")
        .unwrap();
    assert_eq!(keys.mode, 0o600);
    assert_eq!(keys.uid, 1001, "1000 is taken by the slot");
}

#[test]
fn an_empty_document_renders_only_the_appliance_record() {
    let r = render(&load("#cloud-config\n{}\n"), &minimal_base()).unwrap();
    let paths: Vec<&str> = r.targets.iter().map(|t| t.path.as_str()).collect();
    assert_eq!(paths, ["/etc/p6os/appliance.json"]);
    let Content::File(bytes) = &r.targets[0].content else {
        panic!("not a file")
    };
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    assert_eq!(v["id"], "0123456789abcdef0123456789abcdef");
}

#[test]
fn existing_users_keep_ids_and_move_home_to_var() {
    let r = render(
        &load("users:\n  - name: root\n    ssh_authorized_keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHn6vQzj8cJ2a1bU3m8k0a9n3F0kJm2b0o6u5rT1xYzA k\"]\n"),
        &minimal_base(),
    )
    .unwrap();
    let passwd = r.targets.iter().find(|t| t.path == "/etc/passwd").unwrap();
    assert_eq!(
        passwd.content,
        Content::File(b"root:x:0:0:root:/var/home/root:/bin/sh\n".to_vec())
    );
    assert!(r
        .targets
        .iter()
        .any(|t| t.path == "/var/home/root/.ssh/authorized_keys" && t.uid == 0));
}

#[test]
fn write_files_owner_must_exist_and_paths_must_not_collide() {
    let errors = render(
        &load("write_files:\n  - {path: /etc/a, owner: nobody}\n  - {path: /etc/hostname, content: x}\nhostname: h\n"),
        &minimal_base(),
    )
    .unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("`nobody` is not a user"), "{errors:?}");
    assert!(
        errors[1].contains("/etc/hostname would be written twice"),
        "{errors:?}"
    );
    // A user the document creates can own files.
    let r = render(
        &load("users: [{name: pos}]\nwrite_files:\n  - {path: /var/lib/pos/x, owner: \"pos:pos\", permissions: \"0640\"}\n"),
        &minimal_base(),
    )
    .unwrap();
    let t = r
        .targets
        .iter()
        .find(|t| t.path == "/var/lib/pos/x")
        .unwrap();
    assert_eq!((t.uid, t.gid, t.mode), (1000, 1000, 0o640));
}

#[test]
fn proxy_credentials_make_the_environment_files_private() {
    let r = render(
        &load("proxy:\n  https_proxy: http://u:p@proxy.example:3128\n"),
        &minimal_base(),
    )
    .unwrap();
    for t in &r.targets {
        if t.path == "/etc/environment" || t.path == "/etc/profile.d/p6os-proxy.sh" {
            assert_eq!(t.mode, 0o600, "{}", t.path);
        }
    }
}

#[test]
fn minimal_base_notes_what_it_cannot_do() {
    let r = render(&docs_example(), &minimal_base()).unwrap();
    let notes = r.notes.join("\n");
    assert!(notes.contains("ntp"), "{notes}");
    assert!(notes.contains("DHCP"), "{notes}");
    assert!(notes.contains("VLAN"), "{notes}");
    assert!(notes.contains("no SSH daemon"), "{notes}");
    let r = render(&docs_example(), &debian_base()).unwrap();
    assert!(r.notes.is_empty(), "{:?}", r.notes);
}
