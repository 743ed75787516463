use std::collections::BTreeMap;
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
        kubernetes: Distro::None,
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
        kubernetes: Distro::None,
    }
}

fn k3s_base() -> Base {
    Base {
        kubernetes: Distro::K3s,
        ..debian_base()
    }
}

fn containerd_base() -> Base {
    Base {
        kubernetes: Distro::Containerd,
        ..debian_base()
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
        &load("write_files:\n  - {path: /etc/a, owner: nobody}\n  - {path: /etc/resolv.conf, content: x}\nnetwork:\n  interfaces: [{name: eth0, dhcp: true}]\n  dns: {servers: [10.0.0.1]}\n"),
        &minimal_base(),
    )
    .unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("`nobody` is not a user"), "{errors:?}");
    assert!(
        errors[1].contains("/etc/resolv.conf would be written twice"),
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
    assert!(notes.contains("no Kubernetes distro"), "{notes}");
    let r = render(&docs_example(), &debian_base()).unwrap();
    assert_eq!(
        r.notes,
        [
            "kubernetes: this slot has no Kubernetes distro; settings written to \
             /etc/p6os/kubernetes.json for later",
            "registries: this slot has no container runtime; settings written to \
             /etc/p6os/registries.yaml for later",
        ]
    );
    let r = render(&docs_example(), &k3s_base()).unwrap();
    assert!(r.notes.is_empty(), "{:?}", r.notes);
}

// --- The Kubernetes distro: k3s, containerd alone, none.

const CA: &str = "-----BEGIN CERTIFICATE-----\\nMIIBfakefakefake\\n-----END CERTIFICATE-----\\n";

/// A store appliance behind a proxy, pulling Docker Hub through a Harbor proxy-cache project
/// and its own images from a private registry; both registries need credentials and a CA.
fn kube_doc() -> Unattended {
    load(&format!(
        r#"proxy:
  http_proxy: http://proxy.store.example:3128
  https_proxy: http://proxy.store.example:3128
  no_proxy: [localhost, 127.0.0.1, 10.0.2.0/24, .store.example]
kubernetes:
  pod_cidr: 10.42.0.0/16
  service_cidr: 10.43.0.0/16
  cluster_dns: 10.43.0.10
  node_name: store-0421
  labels: {{p6os.io/site: store-0421, topology.kubernetes.io/zone: backroom}}
  taints: ["dedicated=pos:NoSchedule", "p6os.io/edge:PreferNoSchedule"]
  extra_args:
    - --kubelet-arg=max-pods=50
    - --disable=traefik
    - --kubelet-arg=image-gc-high-threshold=80
    - --protect-kernel-defaults
    - --node-label=p6os.io/role=pos
registries:
  mirrors:
    docker.io:
      - https://harbor.store.example/v2/dockerhub
      - https://mirror.gcr.io
    "registry.store.example:5000":
      - https://cache.store.example:8443
  configs:
    harbor.store.example:
      username: robot$pos
      password: not-a-real-secret
      ca: "{CA}"
    "registry.store.example:5000":
      username: pos-pull
      password: also-not-real
      ca: "{CA}"
"#
    ))
}

/// The files of `r` under these prefixes, path -> text.
fn files_under<'a>(r: &'a Rendered, prefixes: &[&str]) -> BTreeMap<&'a str, String> {
    r.targets
        .iter()
        .filter(|t| prefixes.iter().any(|p| t.path.starts_with(p)))
        .filter_map(|t| match &t.content {
            Content::File(bytes) => Some((
                t.path.as_str(),
                String::from_utf8(bytes.clone()).expect("UTF-8"),
            )),
            _ => None,
        })
        .collect()
}

fn text_of(r: &Rendered, path: &str) -> String {
    match &r
        .targets
        .iter()
        .find(|t| t.path == path)
        .unwrap_or_else(|| panic!("no {path}"))
        .content
    {
        Content::File(bytes) => String::from_utf8(bytes.clone()).unwrap(),
        other => panic!("{path} is {other:?}"),
    }
}

fn mode_of(r: &Rendered, path: &str) -> u32 {
    r.targets
        .iter()
        .find(|t| t.path == path)
        .unwrap_or_else(|| panic!("no {path}"))
        .mode
}

#[test]
fn kubernetes_on_k3s() {
    let r = render(&kube_doc(), &k3s_base()).unwrap();
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    insta::assert_snapshot!(dump(&r));
}

#[test]
fn kubernetes_on_containerd() {
    let r = render(&kube_doc(), &containerd_base()).unwrap();
    insta::assert_snapshot!(dump(&r));
}

#[test]
fn kubernetes_without_a_distro() {
    let r = render(&kube_doc(), &debian_base()).unwrap();
    insta::assert_snapshot!(dump(&r));
}

#[test]
fn each_distro_gets_its_own_files_only() {
    let distro_files = |base: &Base| -> Vec<String> {
        let r = render(&kube_doc(), base).unwrap();
        files_under(
            &r,
            &[
                "/etc/rancher/",
                "/etc/containerd/",
                "/etc/systemd/system/k3s",
            ],
        )
        .keys()
        .map(|p| p.to_string())
        .collect()
    };
    assert_eq!(
        distro_files(&k3s_base()),
        [
            "/etc/rancher/k3s/config.yaml",
            "/etc/rancher/k3s/registries.yaml"
        ]
    );
    assert_eq!(
        distro_files(&containerd_base()),
        [
            "/etc/containerd/certs.d/docker.io/hosts.toml",
            // Pulled from directly too: its CA is pinned for it.
            "/etc/containerd/certs.d/harbor.store.example/hosts.toml",
            "/etc/containerd/certs.d/registry.store.example:5000/hosts.toml",
            "/etc/containerd/config.toml",
        ]
    );
    assert!(distro_files(&debian_base()).is_empty());
    // What every base keeps, as before distros existed.
    for base in [k3s_base(), containerd_base(), debian_base(), minimal_base()] {
        let r = render(&kube_doc(), &base).unwrap();
        for path in [
            "/etc/p6os/kubernetes.json",
            "/etc/p6os/registries.yaml",
            "/etc/p6os/registries.d/harbor.store.example/ca.crt",
            "/etc/p6os/registries.d/registry.store.example:5000/ca.crt",
        ] {
            assert!(
                r.targets.iter().any(|t| t.path == path),
                "{path} on {base:?}"
            );
        }
    }
}

#[test]
fn k3s_registries_are_the_p6os_registries() {
    let r = render(&kube_doc(), &k3s_base()).unwrap();
    assert_eq!(
        text_of(&r, "/etc/rancher/k3s/registries.yaml"),
        text_of(&r, "/etc/p6os/registries.yaml")
    );
}

#[test]
fn settings_a_base_cannot_apply_are_noted() {
    let r = render(&kube_doc(), &containerd_base()).unwrap();
    assert_eq!(
        r.notes,
        [
            "kubernetes: this slot has containerd but no kubelet; pod_cidr, service_cidr, \
          cluster_dns, node_name, labels, taints, extra_args not applied (kept in \
          /etc/p6os/kubernetes.json for later)"
        ]
    );
    // Registries alone apply fully to containerd.
    let r = render(
        &load("registries:\n  mirrors: {docker.io: [\"https://m.example\"]}\nkubernetes: {}\n"),
        &containerd_base(),
    )
    .unwrap();
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    let r = render(&kube_doc(), &minimal_base()).unwrap();
    let notes = r.notes.join("\n");
    assert!(
        notes.contains("kubernetes: this slot has no Kubernetes distro"),
        "{notes}"
    );
    assert!(
        notes.contains("registries: this slot has no container runtime"),
        "{notes}"
    );
}

/// Every file holding a registry password or proxy credentials is 0600 and root's, on every
/// distro; and the secrets do reach the files that need them.
#[test]
fn secrets_only_in_private_files() {
    let doc = load(&format!(
        "proxy:\n  https_proxy: http://user:proxy-pw-1@proxy.example:3128\n\
         kubernetes:\n  node_name: n1\n  extra_args: [\"--token=join-token-2\", \"--kubelet-arg=v=2\"]\n\
         registries:\n  mirrors:\n    docker.io: [\"https://mirror-user:mirror-pw-3@m.example\"]\n\
         \x20 configs:\n    m.example:\n      username: u\n      password: registry-pw-4\n      ca: \"{CA}\"\n\
         \x20   docker.io: {{username: hub, password: hub-pw-5}}\n"
    ));
    let secrets = [
        "proxy-pw-1",
        "join-token-2",
        "mirror-pw-3",
        "registry-pw-4",
        "hub-pw-5",
    ];
    for (base, needed) in [
        (
            k3s_base(),
            vec![
                ("/etc/rancher/k3s/config.yaml", "join-token-2"),
                ("/etc/rancher/k3s/registries.yaml", "registry-pw-4"),
            ],
        ),
        (
            containerd_base(),
            vec![
                ("/etc/containerd/config.toml", "registry-pw-4"),
                ("/etc/containerd/config.toml", "hub-pw-5"),
            ],
        ),
        (
            debian_base(),
            vec![("/etc/p6os/registries.yaml", "registry-pw-4")],
        ),
    ] {
        let r = render(&doc, &base).unwrap();
        for t in &r.targets {
            let Content::File(bytes) = &t.content else {
                continue;
            };
            let text = String::from_utf8_lossy(bytes);
            for s in secrets {
                if text.contains(s) {
                    assert_eq!(
                        (t.mode, t.uid, t.gid),
                        (0o600, 0, 0),
                        "{} holds {s}",
                        t.path
                    );
                }
            }
        }
        for (path, secret) in needed {
            assert!(text_of(&r, path).contains(secret), "{path} lacks {secret}");
            assert_eq!(mode_of(&r, path), 0o600, "{path}");
        }
        // Mirror credentials never reach containerd's hosts.toml (containerd ignores them).
        for (path, text) in files_under(&r, &["/etc/containerd/certs.d/"]) {
            assert!(!text.contains("mirror-pw-3"), "{path}");
            assert_eq!(mode_of(&r, path), 0o644, "{path}");
        }
    }
    // Without secrets, the distro configuration stays readable.
    let r = render(
        &load("kubernetes: {node_name: n1}\nregistries: {mirrors: {docker.io: [\"https://m.example\"]}}\n"),
        &containerd_base(),
    )
    .unwrap();
    assert_eq!(mode_of(&r, "/etc/containerd/config.toml"), 0o644);
    let r = render(&load("kubernetes: {node_name: n1}\n"), &k3s_base()).unwrap();
    assert_eq!(mode_of(&r, "/etc/rancher/k3s/config.yaml"), 0o644);
}

/// Values the validator lets through unchanged (labels, taints, extra_args, user names,
/// passwords and the path of a mirror URL are free text): quotes, backslashes, colons, `#`,
/// newlines, tabs, DEL, C1 controls and Unicode line separators.
const ODD: &str = "a\\\"b'c\\\\d: e #f\\n\\tg\\u007f\\u0085\\u2028h\\u00e9";

fn odd() -> String {
    "a\"b'c\\d: e #f\n\tg\u{7f}\u{85}\u{2028}h\u{e9}".to_string()
}

fn odd_doc() -> Unattended {
    load(&format!(
        "kubernetes:\n  labels: {{\"odd/{ODD}\": \"{ODD}\"}}\n  taints: [\"k={ODD}:NoSchedule\"]\n\
         \x20 extra_args: [\"--kubelet-arg={ODD}\", \"--node-ip=10.0.0.1\"]\n\
         registries:\n  mirrors:\n    docker.io: [\"https://m.example/p/{ODD}\"]\n\
         \x20 configs:\n    m.example:\n      username: \"{ODD}\"\n      password: \"{ODD}\"\n      ca: \"{CA}\"\n"
    ))
}

#[test]
fn odd_values_are_valid_yaml_for_k3s() {
    let odd = odd();
    let r = render(&odd_doc(), &k3s_base()).unwrap();
    let parse = |path: &str| {
        p6os_config::yamlcheck::parse(Path::new(path), &text_of(&r, path))
            .unwrap_or_else(|e| panic!("{path}: {e:?}"))
    };
    let config = parse("/etc/rancher/k3s/config.yaml");
    let config = config.as_mapping().unwrap();
    let list = |key: &str| -> Vec<String> {
        config
            .get_sequence(key)
            .unwrap_or_else(|| panic!("no {key}"))
            .iter()
            .map(|n| n.as_scalar().unwrap().as_str().to_string())
            .collect()
    };
    assert_eq!(list("node-label"), [format!("odd/{odd}={odd}")]);
    assert_eq!(list("node-taint"), [format!("k={odd}:NoSchedule")]);
    assert_eq!(config.get_scalar("kubelet-arg").unwrap().as_str(), odd);
    assert_eq!(config.get_scalar("node-ip").unwrap().as_str(), "10.0.0.1");
    let reg = parse("/etc/rancher/k3s/registries.yaml");
    let reg = reg.as_mapping().unwrap();
    let endpoint = reg
        .get_mapping("mirrors")
        .and_then(|m| m.get_mapping("docker.io"))
        .and_then(|m| m.get_sequence("endpoint"))
        .and_then(|s| s.get_scalar(0))
        .unwrap();
    assert_eq!(endpoint.as_str(), format!("https://m.example/p/{odd}"));
    let auth = reg
        .get_mapping("configs")
        .and_then(|m| m.get_mapping("m.example"))
        .and_then(|m| m.get_mapping("auth"))
        .unwrap();
    assert_eq!(auth.get_scalar("username").unwrap().as_str(), odd);
    assert_eq!(auth.get_scalar("password").unwrap().as_str(), odd);
}

#[test]
fn odd_values_are_valid_toml_for_containerd() {
    let odd = odd();
    let r = render(&odd_doc(), &containerd_base()).unwrap();
    let config = toml::parse(&text_of(&r, "/etc/containerd/config.toml"));
    let auth = |key: &str| {
        config
            .get(&toml::path(&[
                "plugins",
                "io.containerd.grpc.v1.cri",
                "registry",
                "configs",
                "m.example",
                "auth",
                key,
            ]))
            .cloned()
    };
    assert_eq!(auth("username"), Some(toml::Value::Str(odd.clone())));
    assert_eq!(auth("password"), Some(toml::Value::Str(odd.clone())));
    let hosts = toml::parse(&text_of(&r, "/etc/containerd/certs.d/docker.io/hosts.toml"));
    let mirror = format!("https://m.example/p/{odd}");
    assert_eq!(
        hosts.get(&toml::path(&["host", &mirror, "override_path"])),
        Some(&toml::Value::Bool(true))
    );
    assert_eq!(
        hosts.get(&toml::path(&["host", &mirror, "ca"])),
        Some(&toml::Value::Str(
            "/etc/p6os/registries.d/m.example/ca.crt".into()
        ))
    );
    assert_eq!(
        hosts.get(&toml::path(&["server"])),
        Some(&toml::Value::Str("https://registry-1.docker.io".into()))
    );
}

#[test]
fn the_golden_toml_parses() {
    let r = render(&kube_doc(), &containerd_base()).unwrap();
    for (path, text) in files_under(&r, &["/etc/containerd/"]) {
        let parsed = toml::parse(&text);
        assert!(!parsed.is_empty(), "{path}");
    }
    let hosts = toml::parse(&text_of(
        &r,
        "/etc/containerd/certs.d/registry.store.example:5000/hosts.toml",
    ));
    assert_eq!(
        hosts.get(&toml::path(&["ca"])),
        Some(&toml::Value::Str(
            "/etc/p6os/registries.d/registry.store.example:5000/ca.crt".into()
        ))
    );
    assert_eq!(
        hosts.get(&toml::path(&[
            "host",
            "https://cache.store.example:8443/v2",
            "capabilities"
        ])),
        Some(&toml::Value::Arr(vec![
            toml::Value::Str("pull".into()),
            toml::Value::Str("resolve".into())
        ]))
    );
}

#[test]
fn docker_hub_credentials_and_wildcards_on_containerd() {
    let r = render(
        &load(&format!(
            "registries:\n  mirrors:\n    \"*\": [\"https://cache.example\"]\n  configs:\n\
             \x20   docker.io: {{username: hub, password: hub-pw}}\n\
             \x20   \"*\": {{username: all, password: all-pw, ca: \"{CA}\"}}\n"
        )),
        &containerd_base(),
    )
    .unwrap();
    let config = toml::parse(&text_of(&r, "/etc/containerd/config.toml"));
    let user = |host: &str| {
        config
            .get(&toml::path(&[
                "plugins",
                "io.containerd.grpc.v1.cri",
                "registry",
                "configs",
                host,
                "auth",
                "username",
            ]))
            .cloned()
    };
    // containerd asks by the host it contacts: Docker Hub is registry-1.docker.io.
    assert_eq!(user("docker.io"), Some(toml::Value::Str("hub".into())));
    assert_eq!(
        user("registry-1.docker.io"),
        Some(toml::Value::Str("hub".into()))
    );
    assert_eq!(user("*"), None);
    assert!(r.notes.iter().any(|n| n.contains("`*`")), "{:?}", r.notes);
    // `*` is containerd's `_default` namespace, with no server of its own.
    let default = text_of(&r, "/etc/containerd/certs.d/_default/hosts.toml");
    let hosts = toml::parse(&default);
    assert_eq!(hosts.get(&toml::path(&["server"])), None);
    assert_eq!(
        hosts.get(&toml::path(&["ca"])),
        Some(&toml::Value::Str(
            "/etc/p6os/registries.d/_default/ca.crt".into()
        ))
    );
    assert!(hosts.contains_key(&toml::path(&[
        "host",
        "https://cache.example/v2",
        "capabilities"
    ])));
    assert!(r
        .targets
        .iter()
        .any(|t| t.path == "/etc/p6os/registries.d/_default/ca.crt"));
}

#[test]
fn extra_args_must_be_k3s_flags() {
    let errors = render(
        &load(
            "kubernetes:\n  node_name: n1\n  pod_cidr: 10.42.0.0/16\n  extra_args:\n\
             \x20   - \"token=secret-value\"\n    - \"-v=2\"\n    - \"--Bad=1\"\n\
             \x20   - \"--node-name=n2\"\n    - \"--cluster-cidr=10.1.0.0/16\"\n    - \"--service-cidr=10.2.0.0/16\"\n",
        ),
        &k3s_base(),
    )
    .unwrap_err();
    assert_eq!(errors.len(), 5, "{errors:?}");
    for (i, e) in errors.iter().take(3).enumerate() {
        assert!(
            e.starts_with(&format!("kubernetes.extra_args[{i}] is not a k3s flag")),
            "{e}"
        );
    }
    assert!(
        errors[3].contains("--node-name is already set by kubernetes.node_name"),
        "{errors:?}"
    );
    assert!(
        errors[4].contains("--cluster-cidr is already set by kubernetes.pod_cidr"),
        "{errors:?}"
    );
    assert!(!errors.join("\n").contains("secret-value"), "{errors:?}");
    // Not k3s: extra_args are kept for later, not interpreted.
    let doc = load("kubernetes:\n  extra_args: [\"token=x\"]\n");
    assert!(render(&doc, &containerd_base()).is_ok());
    assert!(render(&doc, &debian_base()).is_ok());
    // A flag the fields do not set may be given as an extra argument.
    let r = render(
        &load("kubernetes:\n  extra_args: [\"--service-cidr=10.2.0.0/16\"]\n"),
        &k3s_base(),
    )
    .unwrap();
    assert_eq!(
        text_of(&r, "/etc/rancher/k3s/config.yaml"),
        format!("{HEADER}service-cidr: \"10.2.0.0/16\"\n")
    );
}

#[test]
fn an_empty_kubernetes_section_writes_no_k3s_config() {
    let r = render(&load("kubernetes: {}\n"), &k3s_base()).unwrap();
    let paths: Vec<&str> = r.targets.iter().map(|t| t.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/etc/p6os/appliance.json", "/etc/p6os/kubernetes.json"]
    );
}

/// Registry hosts name directories (CA files, containerd's certs.d): anything but a host
/// name, address, port or `*` is refused on every base.
#[test]
fn registry_hosts_must_be_hosts() {
    for bad in ["../../../shadow", "a/b", "", "host:0", "user@host", "a b"] {
        let doc = load(&format!(
            "registries:\n  configs:\n    {bad:?}: {{ca: \"{CA}\"}}\n  mirrors:\n    {bad:?}: [\"https://m.example\"]\n"
        ));
        for base in [k3s_base(), containerd_base(), debian_base()] {
            let errors = render(&doc, &base).unwrap_err();
            assert_eq!(errors.len(), 2, "{bad}: {errors:?}");
            assert!(errors[0].starts_with("registries.mirrors: "), "{errors:?}");
            assert!(errors[1].contains("is not a registry host"), "{errors:?}");
        }
    }
    for good in [
        "docker.io",
        "registry.local:5000",
        "10.0.0.1:5000",
        "[fd00::1]:5000",
        "*",
    ] {
        let doc = load(&format!(
            "registries:\n  mirrors:\n    {good:?}: [\"https://m.example\"]\n"
        ));
        render(&doc, &containerd_base()).unwrap_or_else(|e| panic!("{good}: {e:?}"));
    }
}

#[test]
fn mirror_paths_follow_k3s() {
    let r = render(
        &load(
            "registries:\n  mirrors:\n    docker.io:\n      - https://a.example\n      - https://b.example/\n\
             \x20     - http://c.example:5000/v2\n      - https://d.example/v2/hub\n",
        ),
        &containerd_base(),
    )
    .unwrap();
    let hosts = toml::parse(&text_of(&r, "/etc/containerd/certs.d/docker.io/hosts.toml"));
    for url in [
        "https://a.example/v2",
        "https://b.example/v2",
        "http://c.example:5000/v2",
    ] {
        assert!(
            hosts.contains_key(&toml::path(&["host", url, "capabilities"])),
            "{url}"
        );
        assert!(
            !hosts.contains_key(&toml::path(&["host", url, "override_path"])),
            "{url}"
        );
    }
    assert_eq!(
        hosts.get(&toml::path(&[
            "host",
            "https://d.example/v2/hub",
            "override_path"
        ])),
        Some(&toml::Value::Bool(true))
    );
    // Tried in the document's order.
    let text = text_of(&r, "/etc/containerd/certs.d/docker.io/hosts.toml");
    let at = |u: &str| text.find(u).unwrap();
    assert!(
        at("a.example") < at("b.example")
            && at("b.example") < at("c.example")
            && at("c.example") < at("d.example")
    );
}

#[test]
fn yaml_and_toml_strings_escape_what_they_must() {
    assert_eq!(yaml_str("robot$pos"), "\"robot$pos\"");
    assert_eq!(
        yaml_str("a\"\\\n\t\r\u{0}\u{7f}\u{85}\u{a0}\u{2028}\u{feff}\u{1f600}"),
        "\"a\\\"\\\\\\n\\t\\r\\u0000\\u007f\\u0085\u{a0}\\u2028\\ufeff\u{1f600}\""
    );
    assert_eq!(
        kubernetes::toml_str("a\"\\\n\t\u{8}\u{c}\u{1}\u{7f}\u{85}é"),
        "\"a\\\"\\\\\\n\\t\\b\\f\\u0001\\u007f\u{85}é\""
    );
}

/// A reader for the TOML the renderer writes (comments, `[dotted."quoted".tables]`,
/// `key = value` with basic strings, booleans, integers and arrays of them), strict where
/// TOML is: no raw control characters in strings, no key or table defined twice.
mod toml {
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Value {
        Str(String),
        Bool(bool),
        Int(i64),
        Arr(Vec<Value>),
        Table,
    }

    pub fn path(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|p| p.to_string()).collect()
    }

    /// Full key path -> value; tables appear as `Value::Table`.
    pub fn parse(text: &str) -> BTreeMap<Vec<String>, Value> {
        let mut out = BTreeMap::new();
        let mut table: Vec<String> = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim_start_matches([' ', '\t']);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let (keys, rest) = keys(rest).unwrap_or_else(|e| fail(n, raw, &e));
                let rest = rest
                    .strip_prefix(']')
                    .unwrap_or_else(|| fail(n, raw, "no ]"));
                end(rest).unwrap_or_else(|e| fail(n, raw, &e));
                if out.insert(keys.clone(), Value::Table).is_some() {
                    fail(n, raw, "table defined twice");
                }
                table = keys;
                continue;
            }
            let (k, rest) = keys(line).unwrap_or_else(|e| fail(n, raw, &e));
            let rest = rest
                .trim_start()
                .strip_prefix('=')
                .unwrap_or_else(|| fail(n, raw, "no ="));
            let (v, rest) = value(rest.trim_start()).unwrap_or_else(|e| fail(n, raw, &e));
            end(rest).unwrap_or_else(|e| fail(n, raw, &e));
            let full: Vec<String> = table.iter().cloned().chain(k).collect();
            if out.insert(full, v).is_some() {
                fail(n, raw, "key defined twice");
            }
        }
        out
    }

    fn fail(n: usize, raw: &str, what: &str) -> ! {
        panic!("line {}: {what}: {raw:?}", n + 1)
    }

    fn end(rest: &str) -> Result<(), String> {
        let rest = rest.trim_start_matches([' ', '\t']);
        if rest.is_empty() || rest.starts_with('#') {
            Ok(())
        } else {
            Err(format!("trailing {rest:?}"))
        }
    }

    fn keys(s: &str) -> Result<(Vec<String>, &str), String> {
        let mut out = Vec::new();
        let mut s = s.trim_start_matches([' ', '\t']);
        loop {
            let (k, rest) = if let Some(q) = s.strip_prefix('"') {
                basic(q)?
            } else {
                let end = s
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                    .unwrap_or(s.len());
                if end == 0 {
                    return Err("empty key".into());
                }
                (s[..end].to_string(), &s[end..])
            };
            out.push(k);
            let rest = rest.trim_start_matches([' ', '\t']);
            match rest.strip_prefix('.') {
                Some(more) => s = more.trim_start_matches([' ', '\t']),
                None => return Ok((out, rest)),
            }
        }
    }

    fn value(s: &str) -> Result<(Value, &str), String> {
        if let Some(q) = s.strip_prefix('"') {
            let (v, rest) = basic(q)?;
            return Ok((Value::Str(v), rest));
        }
        if let Some(mut rest) = s.strip_prefix('[') {
            let mut items = Vec::new();
            loop {
                rest = rest.trim_start();
                if let Some(after) = rest.strip_prefix(']') {
                    return Ok((Value::Arr(items), after));
                }
                let (v, after) = value(rest)?;
                items.push(v);
                rest = after.trim_start();
                if let Some(after) = rest.strip_prefix(',') {
                    rest = after;
                } else if !rest.starts_with(']') {
                    return Err("expected , or ]".into());
                }
            }
        }
        for (word, v) in [("true", true), ("false", false)] {
            if let Some(rest) = s.strip_prefix(word) {
                return Ok((Value::Bool(v), rest));
            }
        }
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let n = s[..end]
            .parse()
            .map_err(|_| format!("not a value: {s:?}"))?;
        Ok((Value::Int(n), &s[end..]))
    }

    /// A basic string after its opening quote -> the value and what follows the closing one.
    fn basic(s: &str) -> Result<(String, &str), String> {
        let mut out = String::new();
        let mut chars = s.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Ok((out, &s[i + 1..])),
                '\\' => {
                    let (_, e) = chars.next().ok_or("dangling \\")?;
                    match e {
                        '"' => out.push('"'),
                        '\\' => out.push('\\'),
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'u' | 'U' => {
                            let len = if e == 'u' { 4 } else { 8 };
                            let hex: String = (0..len)
                                .filter_map(|_| chars.next().map(|(_, c)| c))
                                .collect();
                            let code = u32::from_str_radix(&hex, 16)
                                .map_err(|_| format!("bad \\{e}{hex}"))?;
                            out.push(char::from_u32(code).ok_or(format!("bad scalar {code:x}"))?);
                        }
                        other => return Err(format!("unknown escape \\{other}")),
                    }
                }
                '\t' => out.push(c),
                '\u{0}'..='\u{1f}' | '\u{7f}' => {
                    return Err(format!("raw control U+{:04X}", c as u32))
                }
                _ => out.push(c),
            }
        }
        Err("unterminated string".into())
    }
}

#[test]
fn write_files_cannot_reach_the_runtime_data_dirs() {
    let doc = p6os_config::unattended::load(
        std::path::Path::new("u.yaml"),
        "write_files:\n  - path: /var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db\n    content: x\n  - path: /var/lib/p6os-ok\n    content: y\n",
    )
    .unwrap();
    let errors = render(&doc, &containerd_base()).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("write_files[0]") && errors[0].contains("/var/lib/containerd"));
}
