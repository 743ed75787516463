use super::*;

fn errors(text: &str) -> Vec<String> {
    match load(Path::new("u.yaml"), text) {
        Ok(v) => panic!("expected problems, got {v:?}"),
        Err(d) => d.iter().map(|d| d.to_string()).collect(),
    }
}

/// The example in docs/unattended.md is valid: the docs and the checks agree.
#[test]
fn documented_example_is_valid() {
    let doc = include_str!("../../../docs/unattended.md");
    let start = doc.find("```yaml\n").expect("example block") + 8;
    let end = start + doc[start..].find("```").expect("end of block");
    let u =
        load(Path::new("docs/unattended.md"), &doc[start..end]).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(u.hostname.as_deref(), Some("store-0421"));
    assert_eq!(u.users[0].ssh_authorized_keys.len(), 1);
    assert_eq!(u.write_files[1].encoding, Encoding::Base64);
}

/// Every documented section is in the schema and vice versa.
#[test]
fn docs_table_matches_the_schema() {
    let doc = include_str!("../../../docs/unattended.md");
    let s = schema();
    let props: Vec<&String> = s["properties"].as_object().unwrap().keys().collect();
    for p in &props {
        assert!(
            doc.contains(&format!("| `{p}")),
            "docs/unattended.md does not document `{p}`"
        );
    }
    assert_eq!(s["additionalProperties"], false);
}

#[test]
fn empty_and_cloud_config_documents_are_valid() {
    assert_eq!(
        load(Path::new("u.yaml"), "#cloud-config\n{}\n").unwrap(),
        Unattended::default()
    );
    assert!(load(Path::new("u.yaml"), "#cloud-config\nhostname: a\n").is_ok());
}

#[test]
fn reports_every_mistake_with_places() {
    let text = "\
hostnme: x
users:
  - name: ops
    passwd: hunter2
    ssh_authorized_keys: [ssh-ed25519 notbase64]
  - name: ops
network:
  interfaces:
    - addresses: [10.0.0.5/33]
      gateway: 192.168.1.1
      dhcp: true
kubernetes:
  pod_cidr: 10.42.0.0/16
  service_cidr: 10.42.128.0/17
  cluster_dns: 10.99.0.10
proxy:
  http_proxy: proxy:3128
write_files:
  - path: /usr/bin/evil
    permissions: \"0999\"
";
    let with_typo = errors(text);
    assert_eq!(
        with_typo[0],
        "u.yaml:1:1: hostnme: unknown field `hostnme`\n  hint: did you mean `hostname`?"
    );
    let errs = errors(&text.replace("hostnme", "hostname"));
    assert_eq!(
        with_typo[1..],
        errs[..],
        "a shape error elsewhere hides no other problem"
    );
    let want = [
        "u.yaml:4:13: users[0].passwd: not a password hash",
        "u.yaml:5:27: users[0].ssh_authorized_keys[0]: not an SSH public key",
        "u.yaml:6:11: users[1].name: user `ops` is defined twice (also users[0])",
        "u.yaml:9:7: network.interfaces[0]: an interface needs `name` or `mac`",
        "u.yaml:9:19: network.interfaces[0].addresses[0]: `10.0.0.5/33` is not an address with prefix",
        "u.yaml:11:13: network.interfaces[0].dhcp: both dhcp and static addresses",
        "u.yaml:14:17: kubernetes.service_cidr: overlaps pod_cidr",
        "u.yaml:15:16: kubernetes.cluster_dns: 10.99.0.10 is outside service_cidr",
        "u.yaml:17:15: proxy.http_proxy: `proxy:3128` is not an http(s) URL",
        "u.yaml:19:11: write_files[0].path: `/usr/bin/evil` is outside the writable overlays",
        "u.yaml:20:18: write_files[0].permissions: `0999` is not an octal mode",
    ];
    for w in want {
        assert!(
            errs.iter().any(|e| e.starts_with(w)),
            "missing `{w}` in:\n{}",
            errs.join("\n")
        );
    }
    assert_eq!(errs.len(), want.len(), "{}", errs.join("\n"));
    assert!(!errs.join("\n").contains("hunter2"), "a secret was echoed");
}

#[test]
fn urls_are_parsed_strictly_and_secrets_redacted() {
    assert_eq!(
        parse_http_url("https://console.example.com"),
        Some(("https", "console.example.com", None))
    );
    assert_eq!(
        parse_http_url("http://u:p@[::1]:8080/x"),
        Some(("http", "::1", Some(8080)))
    );
    assert_eq!(
        parse_http_url("http://10.0.2.2:3128"),
        Some(("http", "10.0.2.2", Some(3128)))
    );
    for bad in [
        "proxy:3128",
        "http://[::1",
        "http://[::1]junk",
        "http://[1.2.3.4]",
        "http://host:abc",
        "http://host:99999",
        "http://a:1:2",
        "ftp://x",
        "http://",
        "http://host:+80",
        "http://host:0",
    ] {
        assert_eq!(parse_http_url(bad), None, "{bad}");
    }
    assert_eq!(
        redact_userinfo("http://user:hunter2@proxy/x"),
        "http://***@proxy/x"
    );
    let errs = errors("proxy:\n  http_proxy: http://user:hunter2@[::1\n");
    assert!(!errs.join("").contains("hunter2"), "{errs:?}");
}

#[test]
fn secrets_never_show_in_debug() {
    let u = load(
        Path::new("u.yaml"),
        "console: {endpoint: https://c.example, token: tok-123}\n",
    )
    .unwrap();
    assert_eq!(u.console.as_ref().unwrap().token.expose(), "tok-123");
    assert!(!format!("{u:?}").contains("tok-123"));
}

#[test]
fn file_paths_hashes_groups_and_modes() {
    let errs = errors(
        "users:\n  - name: ops\n    groups: [Adm]\n    passwd: \"$6$x:0:0\"\nwrite_files:\n  - path: /etc/\n  - path: /var/lib/p6os/applied.json\n  - path: /etc/a\n    permissions: \"+644\"\n  - path: /etc/a\n  - path: /etc/b\n    encoding: base64\n    content: \"aGVs\\nbG8=\"\n",
    );
    let joined = errs.join("\n");
    for want in [
        "users[0].groups[0]: `Adm` is not a valid group name",
        "users[0].passwd: not a password hash",
        "write_files[0].path: `/etc/` is outside the writable overlays",
        "write_files[1].path: `/var/lib/p6os/applied.json` is the agent's own state",
        "write_files[2].permissions: `+644` is not an octal mode",
        "write_files[3].path: `/etc/a` is written twice (also write_files[2])",
    ] {
        assert!(joined.contains(want), "missing `{want}` in:\n{joined}");
    }
    assert!(
        !joined.contains("write_files[4]"),
        "wrapped base64 is fine: {joined}"
    );
    assert_eq!(parse_cidr("10.0.0.0/+8"), None);
}

#[test]
fn interfaces_vlans_and_ports() {
    let errs = errors("ssh: {port: 0}\nnetwork:\n  interfaces:\n    - name: \"..\"\n      dhcp: true\n      vlans:\n        - {id: 7, dhcp: true, addresses: [10.7.0.2/24]}\n        - {id: 7, dhcp: true}\n");
    let joined = errs.join("\n");
    for want in [
        "ssh.port: port 0 is not a port",
        "network.interfaces[0].name: `..` is not an interface name",
        "network.interfaces[0].vlans[0].dhcp: both dhcp and static addresses",
        "network.interfaces[0].vlans[1].id: VLAN 7 is defined twice",
    ] {
        assert!(joined.contains(want), "missing `{want}` in:\n{joined}");
    }
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    parse_cidr(s).unwrap_or_else(|| panic!("`{s}` should parse"))
}

#[test]
fn cidr_math() {
    let c = net("10.42.0.0/16");
    assert!(c.contains(&ip("10.42.255.1")));
    assert!(!c.contains(&ip("10.43.0.1")));
    assert!(overlaps(&c, &net("10.0.0.0/8")));
    assert!(!overlaps(&c, &net("10.43.0.0/16")));
    assert!(net("0.0.0.0/0").contains(&ip("1.2.3.4")));
    assert!(net("fd00::/8").contains(&ip("fd12::1")));
    assert!(!net("fd00::/8").contains(&ip("10.0.0.1")));
    assert_eq!(parse_cidr("10.0.0.0/40"), None);
}

/// An address with prefix keeps its host bits (it is an interface's address); its network is
/// what `contains` and `overlaps` compare, whichever side has the longer prefix.
#[test]
fn cidrs_are_addresses_with_a_network() {
    let a = net("192.168.1.10/24");
    assert_eq!(a.addr(), ip("192.168.1.10"));
    assert_eq!(a.prefix_len(), 24);
    assert_eq!(a.network(), ip("192.168.1.0"));
    assert_eq!(a.trunc(), net("192.168.1.0/24"));
    assert!(a.contains(&ip("192.168.1.1")));
    assert!(!a.contains(&ip("192.168.2.1")));
    assert!(overlaps(&net("10.42.7.9/16"), &net("10.42.200.1/24")));
    assert!(overlaps(&net("10.42.200.1/24"), &net("10.42.7.9/16")));
    assert!(!overlaps(&net("10.42.7.9/24"), &net("10.42.8.1/24")));
    assert!(
        !overlaps(&net("::/0"), &net("0.0.0.0/0")),
        "IP versions never overlap"
    );
    assert!(net("::/0").contains(&ip("2001:db8::1")));
    assert_eq!(net("fe80::1/128").network(), ip("fe80::1"));
}

/// The syntax is the rest of the document's: addresses by the standard library's rules (the
/// gateway's and DNS servers' too), prefixes as plain decimal digits.
#[test]
fn cidr_syntax_is_strict() {
    for bad in [
        "10.0.0.1",
        "10.0.0.1/",
        "/24",
        "010.0.0.1/8",
        "10.0.0.1/ 8",
        "10.0.0.1/-1",
        "10.0.0.1/33",
        "::1/129",
        "10.0.0.1/24/1",
        "fe80::1%eth0/64",
        "host.example/24",
    ] {
        assert_eq!(parse_cidr(bad), None, "{bad}");
    }
    assert_eq!(parse_cidr("10.0.0.1/08"), Some(net("10.0.0.1/8")));
    assert_eq!(net("::ffff:10.0.0.1/120").prefix_len(), 120);
    let errs =
        errors("network:\n  interfaces:\n    - name: eth0\n      addresses: [010.0.0.1/8]\n");
    assert_eq!(
        errs,
        ["u.yaml:4:19: network.interfaces[0].addresses[0]: `010.0.0.1/8` is not an address with prefix\n  hint: e.g. 192.168.1.10/24"],
    );
}

/// A gateway must lie in an address's network; a route's destination may have host bits set
/// (the agent takes its network).
#[test]
fn gateways_and_routes() {
    let ok = "network:\n  interfaces:\n    - name: eth0\n      addresses: [192.168.1.10/24, fd00::10/64]\n      gateway: 192.168.1.1\n      routes:\n        - {to: 10.1.2.3/8, via: 192.168.1.254}\n";
    assert!(load(Path::new("u.yaml"), ok).is_ok());
    let errs = errors(
        &ok.replace("gateway: 192.168.1.1", "gateway: 192.168.2.1")
            .replace("10.1.2.3/8", "10.1.2.3"),
    );
    let joined = errs.join("\n");
    for want in [
        "network.interfaces[0].gateway: gateway 192.168.2.1 is outside every address's network",
        "network.interfaces[0].routes[0].to: `10.1.2.3` is not an address with prefix",
    ] {
        assert!(joined.contains(want), "missing `{want}` in:\n{joined}");
    }
    assert_eq!(errs.len(), 2, "{joined}");
}

#[test]
fn ssh_keys_are_checked_for_real() {
    // A real ed25519 public key blob: type name inside matches the prefix.
    let good = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHn6vQzj8cJ2a1bU3m8k0a9n3F0kJm2b0o6u5rT1xYzA c";
    assert!(valid_ssh_key(good));
    assert!(
        !valid_ssh_key(&good.replace("ssh-ed25519", "ssh-rsa")),
        "blob type must match"
    );
    assert!(!valid_ssh_key("ssh-ed25519"));
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    /// unattended.yaml-ish text: its keys, YAML punctuation and values that stress the checks.
    fn yamlish() -> impl Strategy<Value = String> {
        let atoms = prop::sample::select(vec![
            "hostname: ",
            "users:\n",
            "  - name: ",
            "    passwd: ",
            "    ssh_authorized_keys: [",
            "ssh-ed25519 ",
            "AAAAC3NzaC1lZDI1NTE5",
            "network:\n",
            "  interfaces:\n",
            "    - addresses: [",
            "10.0.0.1/",
            "33",
            "24",
            "]",
            "      gateway: ",
            "::1",
            "kubernetes:\n",
            "  pod_cidr: ",
            "  service_cidr: ",
            "0.0.0.0/0",
            "write_files:\n",
            "  - path: ",
            "/etc/x",
            "    encoding: base64\n",
            "    content: ",
            "====",
            "console: {endpoint: ",
            "http://[::1",
            "}",
            "\n",
            "  ",
            "- ",
            ": ",
            "\"",
            "#cloud-config\n",
            "é",
            "~",
        ]);
        prop::collection::vec(atoms, 0..50).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]
        #[test]
        fn loader_never_panics(text in yamlish()) {
            let _ = load(Path::new("u.yaml"), &text);
        }

        #[test]
        fn cidr_and_names_never_panic(s in "\\PC{0,40}") {
            let _ = parse_cidr(&s);
            let _ = valid_hostname(&s);
            let _ = valid_ssh_key(&s);
            let _ = valid_mac(&s);
        }
    }
}

#[test]
fn shape_errors_do_not_hide_problems_in_other_sections() {
    let errs = errors(
        "hostnme: store-9\n\
         network:\n  interfaces:\n    - name: eth0\n      addresses: [10.0.2.300/24]\n\
         users:\n  - name: ops\n    passwd: hunter2\n\
         ssh: {port: 0, colour: blue}\n",
    );
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(
        errs[0].starts_with("u.yaml:1:1: hostnme: unknown field"),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with("u.yaml:5:19: network.interfaces[0].addresses[0]"),
        "{errs:#?}"
    );
    assert!(
        errs[2].starts_with("u.yaml:8:13: users[0].passwd: not a password hash"),
        "{errs:#?}"
    );
    // A section with a shape error gets no further checks (port 0 is not reported twice).
    assert!(errs[3].contains("ssh.colour: unknown field"), "{errs:#?}");
}

#[test]
fn appliance_ids_and_labels_follow_the_console_rules() {
    let e = errors(
        "appliance:\n  id: store/12\n  name: \"\"\n  labels: {site: Main Office, ok: fine}\n",
    );
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(
        e[0].contains("appliance.id") && e[0].contains("'/'"),
        "{e:#?}"
    );
    assert!(e[1].contains("appliance.name"), "{e:#?}");
    assert!(e[2].contains("appliance.labels.site"), "{e:#?}");
    assert!(load(
        Path::new("u.yaml"),
        "appliance: {id: store-12-nuc, labels: {site: store-12}}\n"
    )
    .is_ok());
}

/// A cloud-init document gets an answer per key: why P6OS does not take it and what to use.
#[test]
fn cloud_init_keys_are_answered_with_what_to_use_instead() {
    let text = "\
#cloud-config
packages: [htop]
runcmd: [echo hi]
bootcmd: [echo early]
ssh_authorized_keys: [ssh-ed25519 AAAA]
ssh_pwauth: false
users:
  - name: ops
    lock_passwd: true
    plain_text_passwd: hunter2
network:
  version: 2
  ethernets: {}
hostnme: x
";
    let errs = load(Path::new("u.yaml"), text).unwrap_err();
    let by_field = |f: &str| {
        errs.iter()
            .find(|d| d.field == f)
            .unwrap_or_else(|| panic!("nothing about {f} in {errs}"))
    };
    let hint = |f: &str| by_field(f).hint.clone().unwrap_or_default();
    assert!(by_field("packages")
        .message
        .contains("installs nothing at boot"));
    assert!(hint("packages").contains("layer"), "{}", hint("packages"));
    for f in ["runcmd", "bootcmd"] {
        assert!(
            by_field(f).message.contains("immutable")
                || by_field(f).message.contains("no such hook")
        );
        assert!(hint(f).contains("DaemonSet"), "{}", hint(f));
    }
    assert!(hint("ssh_authorized_keys").contains("users:"));
    assert!(hint("ssh_pwauth").contains("password_authentication"));
    assert!(hint("users[0].lock_passwd").contains("passwd"));
    assert!(by_field("users[0].plain_text_passwd")
        .message
        .contains("clear text"));
    assert!(hint("network.version").contains("interfaces"));
    assert!(hint("network.ethernets").contains("interfaces"));
    // Not cloud-init: the usual answer.
    assert_eq!(hint("hostnme"), "did you mean `hostname`?");
    // Nothing says "unknown field" about a key it has an answer for.
    assert_eq!(
        errs.iter()
            .filter(|d| d.message.starts_with("unknown field"))
            .count(),
        1,
        "{errs}"
    );
    // The line points at the key.
    assert_eq!(by_field("runcmd").line, 3);
}

#[test]
fn no_proxy_takes_a_list_or_the_comma_separated_text_of_environment_variables() {
    let read = |text: &str| {
        load(Path::new("u.yaml"), text)
            .unwrap()
            .proxy
            .unwrap()
            .no_proxy
    };
    let want = vec!["localhost", "127.0.0.1", ".store.example", "10.0.0.0/8"];
    assert_eq!(
        read("proxy:\n  no_proxy: [localhost, 127.0.0.1, .store.example, 10.0.0.0/8]\n"),
        want
    );
    assert_eq!(
        read("proxy:\n  no_proxy: \"localhost,127.0.0.1, .store.example,,10.0.0.0/8\"\n"),
        want
    );
    assert_eq!(read("proxy:\n  no_proxy: localhost\n"), vec!["localhost"]);
    let errs = errors("proxy:\n  no_proxy: {a: b}\n").join("\n");
    assert!(errs.contains("proxy.no_proxy"), "{errs}");
}

/// Each path the agent writes gets the setting that writes it, not a hint about accounts.
#[test]
fn files_the_agent_writes_are_answered_with_their_setting() {
    let text = "hostname: a\nproxy: {http_proxy: \"http://p:3128\"}\nwrite_files:\n  - path: /var/lib/p6os/x\n  - path: /etc/hostname\n  - path: /etc/environment\n  - path: /etc/shadow\n  - path: /etc/timezone\n";
    let errs = load(Path::new("u.yaml"), text).unwrap_err();
    let hint = |f: &str| {
        errs.iter()
            .find(|d| d.field == f)
            .and_then(|d| d.hint.clone())
            .unwrap_or_else(|| panic!("no hint for {f} in {errs}"))
    };
    assert!(!hint("write_files[0].path").contains("users"));
    assert!(hint("write_files[1].path").contains("hostname"));
    assert!(hint("write_files[2].path").contains("proxy"));
    assert!(hint("write_files[3].path").contains("passwd"));
    // No timezone set: the agent does not write /etc/timezone, the file may.
    assert!(
        errs.iter().all(|d| d.field != "write_files[4].path"),
        "{errs}"
    );
}
