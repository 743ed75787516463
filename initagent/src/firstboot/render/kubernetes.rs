//! `kubernetes` and `registries` in the form the slot's Kubernetes distro reads.
//!
//! Always: `/etc/p6os/kubernetes.json` (the checked section) and `/etc/p6os/registries.yaml`
//! (k3s's `mirrors`/`configs` format, 0600) with CA certificates in
//! `/etc/p6os/registries.d/HOST/ca.crt`. Then, by distro:
//!
//! - k3s: `/etc/rancher/k3s/config.yaml` (node name, labels, taints, CIDRs, cluster DNS and
//!   `extra_args` as k3s flags) and `/etc/rancher/k3s/registries.yaml` (the same text as
//!   `/etc/p6os/registries.yaml`). No proxy drop-in: k3s takes the proxy from the environment
//!   every service gets from the manager drop-in, and adds its pod and service CIDRs and the
//!   cluster domain to `NO_PROXY` itself.
//! - containerd without a kubelet: `/etc/containerd/config.toml` (the CRI registry's
//!   `config_path` and credentials, 0600 when it holds a password) and
//!   `/etc/containerd/certs.d/HOST/hosts.toml` per mirrored or CA-pinned registry. The node
//!   settings do not apply; a note says so.
//! - none: only the /etc/p6os files, and a note.

use std::collections::{BTreeMap, BTreeSet};

use p6os_config::unattended::{
    parse_http_url, redact_userinfo, Kubernetes, Registries, RegistryConfig, Unattended,
};

use super::{ensure_newline, yaml_str, Distro, Out, HEADER};

pub const KUBERNETES_JSON: &str = "/etc/p6os/kubernetes.json";
pub const REGISTRIES_YAML: &str = "/etc/p6os/registries.yaml";
pub const K3S_CONFIG: &str = "/etc/rancher/k3s/config.yaml";
pub const K3S_REGISTRIES: &str = "/etc/rancher/k3s/registries.yaml";
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
pub const CONTAINERD_CERTS_D: &str = "/etc/containerd/certs.d";
/// The CRI plugin's table in containerd's version 2 configuration.
const CRI: &str = "plugins.\"io.containerd.grpc.v1.cri\"";
/// Where containerd (and k3s, for `docker.io`) send requests for Docker Hub.
const DOCKER_HUB: &str = "registry-1.docker.io";

pub fn render(doc: &Unattended, distro: Distro, out: &mut Out) {
    if let Some(kube) = &doc.kubernetes {
        let text = serde_json::to_string_pretty(kube).unwrap_or_default() + "\n";
        let secret = kube
            .extra_args
            .iter()
            .any(|a| p6os_config::unattended::extra_arg_looks_secret(a));
        out.file(KUBERNETES_JSON, text, if secret { 0o600 } else { 0o644 });
        match distro {
            Distro::K3s => k3s_config(kube, out),
            Distro::Containerd => {
                let unused = node_settings(kube);
                if !unused.is_empty() {
                    out.notes.push(format!(
                        "kubernetes: this slot has containerd but no kubelet; {} not applied \
                         (kept in {KUBERNETES_JSON} for later)",
                        unused.join(", ")
                    ));
                }
            }
            Distro::None => out.notes.push(format!(
                "kubernetes: this slot has no Kubernetes distro; settings written to \
                 {KUBERNETES_JSON} for later"
            )),
        }
    }
    if let Some(reg) = &doc.registries {
        if !registry_hosts_ok(reg, out) {
            return;
        }
        let text = registries_yaml(reg, out);
        match distro {
            Distro::K3s => out.file(K3S_REGISTRIES, text.as_str(), 0o600),
            Distro::Containerd => containerd(reg, out),
            Distro::None => out.notes.push(format!(
                "registries: this slot has no container runtime; settings written to \
                 {REGISTRIES_YAML} for later"
            )),
        }
        out.file(REGISTRIES_YAML, text, 0o600);
    }
}

/// The `kubernetes` settings that only a kubelet uses, by name, when set.
fn node_settings(k: &Kubernetes) -> Vec<&'static str> {
    [
        ("pod_cidr", k.pod_cidr.is_some()),
        ("service_cidr", k.service_cidr.is_some()),
        ("cluster_dns", k.cluster_dns.is_some()),
        ("node_name", k.node_name.is_some()),
        ("labels", !k.labels.is_empty()),
        ("taints", !k.taints.is_empty()),
        ("extra_args", !k.extra_args.is_empty()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect()
}

/// A value of a k3s flag in config.yaml: a string, or `true` for a flag given without one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FlagValue {
    Str(String),
    True,
}

impl FlagValue {
    fn yaml(&self) -> String {
        match self {
            FlagValue::Str(s) => yaml_str(s),
            FlagValue::True => "true".into(),
        }
    }
}

/// k3s flags that the document's own fields set, with the field's name.
const K3S_SCALARS: [(&str, &str); 4] = [
    ("node-name", "node_name"),
    ("cluster-cidr", "pod_cidr"),
    ("service-cidr", "service_cidr"),
    ("cluster-dns", "cluster_dns"),
];
/// Repeatable k3s flags the fields fill: `extra_args` add to them.
const K3S_LISTS: [&str; 2] = ["node-label", "node-taint"];

/// `--name=value` or `--name` (a lowercase k3s flag name) -> name and value.
fn k3s_flag(arg: &str) -> Option<(&str, FlagValue)> {
    let rest = arg.strip_prefix("--")?;
    let (name, value) = match rest.split_once('=') {
        Some((n, v)) => (n, FlagValue::Str(v.to_string())),
        None => (rest, FlagValue::True),
    };
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ok.then_some((name, value))
}

/// `/etc/rancher/k3s/config.yaml`: keys are k3s's flag names (config file keys are flags
/// without `--`), repeatable flags are lists. Fields first in a fixed order, then `extra_args`
/// by flag name; an extra flag given twice becomes a list.
fn k3s_config(kube: &Kubernetes, out: &mut Out) {
    let mut fixed: Vec<(&str, Vec<FlagValue>)> = Vec::new();
    let str_value = |s: &str| vec![FlagValue::Str(s.to_string())];
    if let Some(n) = &kube.node_name {
        fixed.push(("node-name", str_value(n)));
    }
    let labels = kube
        .labels
        .iter()
        .map(|(k, v)| FlagValue::Str(format!("{k}={v}")))
        .collect();
    fixed.push(("node-label", labels));
    let taints = kube
        .taints
        .iter()
        .map(|t| FlagValue::Str(t.clone()))
        .collect();
    fixed.push(("node-taint", taints));
    for (key, v) in [
        ("cluster-cidr", &kube.pod_cidr),
        ("service-cidr", &kube.service_cidr),
        ("cluster-dns", &kube.cluster_dns),
    ] {
        if let Some(v) = v {
            fixed.push((key, str_value(v)));
        }
    }
    let mut extra: BTreeMap<&str, Vec<FlagValue>> = BTreeMap::new();
    let mut secret = false;
    for (i, arg) in kube.extra_args.iter().enumerate() {
        // The entry itself may be a secret: errors name it by index only.
        let Some((name, value)) = k3s_flag(arg) else {
            out.errors.push(format!(
                "kubernetes.extra_args[{i}] is not a k3s flag: give `--name=value` or `--name`, \
                 e.g. --kubelet-arg=max-pods=50"
            ));
            continue;
        };
        if let Some((_, field)) = K3S_SCALARS
            .iter()
            .find(|(flag, _)| *flag == name)
            .filter(|(flag, _)| fixed.iter().any(|(k, _)| k == flag))
        {
            out.errors.push(format!(
                "kubernetes.extra_args[{i}]: --{name} is already set by kubernetes.{field}"
            ));
            continue;
        }
        secret |= p6os_config::unattended::extra_arg_looks_secret(arg);
        match fixed.iter_mut().find(|(k, _)| *k == name) {
            Some((_, values)) => values.push(value),
            None => extra.entry(name).or_default().push(value),
        }
    }
    let mut text = String::from(HEADER);
    let mut any = false;
    for (key, values) in fixed
        .iter()
        .map(|(k, v)| (*k, v))
        .chain(extra.iter().map(|(k, v)| (*k, v)))
    {
        if values.is_empty() {
            continue;
        }
        any = true;
        if values.len() == 1 && !K3S_LISTS.contains(&key) {
            text.push_str(&format!("{key}: {}\n", values[0].yaml()));
        } else {
            text.push_str(&format!("{key}:\n"));
            for v in values {
                text.push_str(&format!("  - {}\n", v.yaml()));
            }
        }
    }
    if any {
        out.file(K3S_CONFIG, text, if secret { 0o600 } else { 0o644 });
    }
}

/// A registry host as a `mirrors` or `configs` key: `host`, `host:port`, `[v6]:port`, or `*`
/// (every registry). It names directories, so nothing else is accepted.
fn registry_host_ok(h: &str) -> bool {
    h == "*"
        || (!h.contains(['/', '\\', '?', '#', '@'])
            && parse_http_url(&format!("https://{h}")).is_some())
}

/// The directory name for a registry host: `_default` for `*` (containerd's name for it).
fn host_dir(host: &str) -> &str {
    if host == "*" {
        "_default"
    } else {
        host
    }
}

fn ca_path(host: &str) -> String {
    format!("/etc/p6os/registries.d/{}/ca.crt", host_dir(host))
}

fn registry_hosts_ok(r: &Registries, out: &mut Out) -> bool {
    let mut ok = true;
    for (section, host) in r
        .mirrors
        .keys()
        .map(|h| ("mirrors", h))
        .chain(r.configs.keys().map(|h| ("configs", h)))
    {
        if !registry_host_ok(host) {
            ok = false;
            out.errors.push(format!(
                "registries.{section}: {host:?} is not a registry host \
                 (host, host:port, or * for every registry)"
            ));
        }
    }
    ok
}

/// The `mirrors`/`configs` format of k3s (and rke2), CA certificates beside it; the text is
/// returned for the distro's own copy.
fn registries_yaml(r: &Registries, out: &mut Out) -> String {
    let mut text = String::from(HEADER);
    text.push_str("mirrors:\n");
    if r.mirrors.is_empty() {
        text.truncate(text.len() - 1);
        text.push_str(" {}\n");
    }
    for (host, urls) in &r.mirrors {
        text.push_str(&format!("  {}:\n    endpoint:\n", yaml_str(host)));
        for u in urls {
            text.push_str(&format!("      - {}\n", yaml_str(u)));
        }
    }
    text.push_str("configs:\n");
    if r.configs.is_empty() {
        text.truncate(text.len() - 1);
        text.push_str(" {}\n");
    }
    for (host, c) in &r.configs {
        text.push_str(&format!("  {}:\n", yaml_str(host)));
        if c.username.is_some() || c.password.is_some() {
            text.push_str("    auth:\n");
            if let Some(u) = &c.username {
                text.push_str(&format!("      username: {}\n", yaml_str(u)));
            }
            if let Some(p) = &c.password {
                text.push_str(&format!("      password: {}\n", yaml_str(p.expose())));
            }
        }
        if let Some(ca) = &c.ca {
            let path = ca_path(host);
            text.push_str(&format!("    tls:\n      ca_file: {}\n", yaml_str(&path)));
            out.file(&path, ensure_newline(ca), 0o644);
        }
    }
    text
}

/// A TOML basic string: `\"`, `\\`, the short escapes, and `\uXXXX` for the other control
/// characters TOML does not allow raw (U+0000 to U+001F, U+007F).
pub(super) fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{0}'..='\u{1f}' | '\u{7f}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A mirror URL as a `[host."…"]` key of hosts.toml, the way k3s writes it: an empty, `/` or
/// `/v2` path becomes `/v2`; any other path is the API root as given (`override_path`, e.g.
/// a Harbor proxy-cache project `https://harbor.example/v2/dockerhub`). Credentials in the URL
/// are dropped: containerd never uses them.
struct Endpoint {
    url: String,
    override_path: bool,
    /// `host[:port]`, the key of its entry in `configs`.
    authority: String,
    had_userinfo: bool,
}

fn endpoint(url: &str) -> Endpoint {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (had_userinfo, authority) = match authority.rsplit_once('@') {
        Some((_, hostport)) => (true, hostport),
        None => (false, authority),
    };
    let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
    let (path, query) = tail.split_at(path_end);
    let override_path = !matches!(path, "" | "/" | "/v2" | "/v2/");
    let path = if override_path { path } else { "/v2" };
    Endpoint {
        url: format!("{scheme}://{authority}{path}{query}"),
        override_path,
        authority: authority.to_string(),
        had_userinfo,
    }
}

/// The `configs` key and entry for an upstream registry: for `docker.io`, an entry for
/// `registry-1.docker.io` comes first (as in k3s).
fn upstream_config<'a>(r: &'a Registries, host: &str) -> Option<(&'a str, &'a RegistryConfig)> {
    let get = |h: &str| r.configs.get_key_value(h).map(|(k, c)| (k.as_str(), c));
    (host == "docker.io")
        .then(|| get(DOCKER_HUB))
        .flatten()
        .or_else(|| get(host))
}

/// containerd 1.6 with the CRI plugin: registry settings through `config_path` (hosts.toml
/// files), credentials in `registry.configs."HOST".auth` (still read by 1.6 when `config_path`
/// is set; `configs.tls` is not, and is refused beside it, so CAs go into hosts.toml).
fn containerd(r: &Registries, out: &mut Out) {
    let mut text = format!(
        "{HEADER}version = 2\n\n[{CRI}.registry]\n  config_path = {}\n",
        toml_str(CONTAINERD_CERTS_D)
    );
    // containerd asks for credentials by the host it contacts: Docker Hub is
    // registry-1.docker.io, so `docker.io` credentials are given under that name too.
    let mut auths: BTreeMap<&str, &RegistryConfig> = BTreeMap::new();
    for (host, c) in &r.configs {
        if c.username.is_none() && c.password.is_none() {
            continue;
        }
        if host == "*" {
            out.notes.push(
                "registries: containerd has no credentials for every registry (`*`); \
                 give them per host in registries.configs"
                    .into(),
            );
            continue;
        }
        auths.insert(host, c);
        if host == "docker.io" && !r.configs.contains_key(DOCKER_HUB) {
            auths.insert(DOCKER_HUB, c);
        }
    }
    let mut secret = false;
    for (host, c) in &auths {
        text.push_str(&format!(
            "\n[{CRI}.registry.configs.{}.auth]\n",
            toml_str(host)
        ));
        if let Some(u) = &c.username {
            text.push_str(&format!("  username = {}\n", toml_str(u)));
        }
        if let Some(p) = &c.password {
            text.push_str(&format!("  password = {}\n", toml_str(p.expose())));
            secret = true;
        }
    }
    out.file(CONTAINERD_CONFIG, text, if secret { 0o600 } else { 0o644 });

    // One hosts.toml per mirrored registry and per registry with a CA.
    let hosts: BTreeSet<&str> = r
        .mirrors
        .keys()
        .map(String::as_str)
        .chain(
            r.configs
                .iter()
                .filter(|(_, c)| c.ca.is_some())
                .map(|(h, _)| h.as_str()),
        )
        .collect();
    for host in hosts {
        let mut text = String::from(HEADER);
        match host {
            // `_default` applies to every registry: its server is the one asked for.
            "*" => {}
            "docker.io" => text.push_str(&format!(
                "server = {}\n",
                toml_str(&format!("https://{DOCKER_HUB}"))
            )),
            _ => text.push_str(&format!(
                "server = {}\n",
                toml_str(&format!("https://{host}"))
            )),
        }
        if let Some((key, _)) = upstream_config(r, host).filter(|(_, c)| c.ca.is_some()) {
            text.push_str(&format!("ca = {}\n", toml_str(&ca_path(key))));
        }
        let mirrors = r.mirrors.get(host).map(Vec::as_slice).unwrap_or_default();
        for url in mirrors {
            let e = endpoint(url);
            if e.had_userinfo {
                out.notes.push(format!(
                    "registries: {}: containerd does not use credentials in a mirror URL; \
                     give them in registries.configs",
                    redact_userinfo(url)
                ));
            }
            text.push_str(&format!(
                "\n[host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n",
                toml_str(&e.url)
            ));
            if e.override_path {
                text.push_str("  override_path = true\n");
            }
            if r.configs.get(&e.authority).is_some_and(|c| c.ca.is_some()) {
                text.push_str(&format!("  ca = {}\n", toml_str(&ca_path(&e.authority))));
            }
        }
        if mirrors.is_empty() {
            // containerd 1.6 refuses a hosts.toml without a `host` table (containerd#10027).
            text.push_str("\n[host]\n");
        }
        out.file(
            &format!("{CONTAINERD_CERTS_D}/{}/hosts.toml", host_dir(host)),
            text,
            0o644,
        );
    }
}
