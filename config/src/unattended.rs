//! `unattended.yaml`: the site operator's only input, cloud-init style (a leading `#cloud-config`
//! line is a comment and accepted). Typed with `deny_unknown_fields`, checked as a whole: every
//! problem is reported at once with its place, and nothing is applied from a file with one.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diag::Diagnostics;
use crate::yamlcheck::{self, diagnostic_at, Loaded, Seg};

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Unattended {
    #[serde(default)]
    pub appliance: Option<Appliance>,
    /// RFC 1123 host name (letters, digits, dashes; dots for a FQDN).
    #[serde(default)]
    pub hostname: Option<String>,
    /// IANA time zone, e.g. `Europe/Paris` or `UTC`.
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub ntp: Option<Ntp>,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub ssh: Option<Ssh>,
    #[serde(default)]
    pub network: Option<Network>,
    #[serde(default)]
    pub proxy: Option<Proxy>,
    #[serde(default)]
    pub kubernetes: Option<Kubernetes>,
    #[serde(default)]
    pub registries: Option<Registries>,
    #[serde(default)]
    pub console: Option<Console>,
    #[serde(default)]
    pub write_files: Vec<WriteFile>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Appliance {
    /// Appliance id on the management console (default: the machine id, kept on the state partition).
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ntp {
    pub servers: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// A crypt(3) hash (`$y$…`, `$6$…`), never a plain password. Written 0600, never logged.
    #[serde(default)]
    pub passwd: Option<Secret>,
    /// Passwordless sudo.
    #[serde(default)]
    pub sudo: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    #[serde(default)]
    pub password_authentication: bool,
    #[serde(default)]
    pub permit_root_login: bool,
    #[serde(default)]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub dns: Option<Dns>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// Kernel name (`eth0`, `enp1s0`); give this or `mac`.
    #[serde(default)]
    pub name: Option<String>,
    /// MAC address `aa:bb:cc:dd:ee:ff`; give this or `name`.
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub dhcp: bool,
    /// Static addresses with prefix, e.g. `192.168.1.10/24`.
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub mtu: Option<u16>,
    #[serde(default)]
    pub vlans: Vec<Vlan>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Destination with prefix, e.g. `10.0.0.0/8`.
    pub to: String,
    pub via: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Vlan {
    pub id: u16,
    #[serde(default)]
    pub dhcp: bool,
    #[serde(default)]
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    #[serde(default)]
    pub servers: Vec<String>,
    #[serde(default)]
    pub search: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    #[serde(default)]
    pub http_proxy: Option<String>,
    #[serde(default)]
    pub https_proxy: Option<String>,
    #[serde(default)]
    pub no_proxy: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Kubernetes {
    #[serde(default)]
    pub pod_cidr: Option<String>,
    #[serde(default)]
    pub service_cidr: Option<String>,
    /// Must lie inside `service_cidr`.
    #[serde(default)]
    pub cluster_dns: Option<String>,
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `key=value:Effect`, Effect one of NoSchedule, PreferNoSchedule, NoExecute.
    #[serde(default)]
    pub taints: Vec<String>,
    #[serde(default)]
    pub extra_args: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Registries {
    /// Upstream host (`docker.io`) to mirror URLs, tried in order.
    #[serde(default)]
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Per registry host: credentials and CA.
    #[serde(default)]
    pub configs: BTreeMap<String, RegistryConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    #[serde(default)]
    pub username: Option<String>,
    /// Written 0600, never logged.
    #[serde(default)]
    pub password: Option<Secret>,
    /// PEM CA certificate(s).
    #[serde(default)]
    pub ca: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// `https://console.example.com` (http only for tests on loopback).
    pub endpoint: String,
    /// Pairing token. Written 0600, never logged.
    pub token: Secret,
    /// PEM CA certificate of the console.
    #[serde(default)]
    pub ca: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteFile {
    /// Absolute path under /etc or /var (the writable overlays).
    pub path: String,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub encoding: Encoding,
    /// `user:group` (default `root:root`).
    #[serde(default)]
    pub owner: Option<String>,
    /// Octal, e.g. `"0644"` (default `0644`).
    #[serde(default)]
    pub permissions: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Plain,
    Base64,
}

/// A secret value (password hash, registry password, token): `Debug` never shows it, so it
/// cannot reach a log through `{:?}`. Written 0600 by the agent.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The value, for writing it where it belongs; never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The JSON Schema `p6os schema unattended` prints.
pub fn schema() -> serde_json::Value {
    schemars::schema_for!(Unattended).to_value()
}

/// Parses and checks a whole document; every problem at once.
pub fn load(file: &Path, text: &str) -> Result<Unattended, Diagnostics> {
    let Loaded { value, tree } = match yamlcheck::load::<Unattended>(file, text) {
        Ok(loaded) => loaded,
        Err(mut diags) => {
            // Every problem at once: the sections whose own shape is right still get their
            // checks (a bad CIDR is reported beside an unknown key elsewhere).
            if let Ok(tree) = yamlcheck::parse(file, text) {
                let mut c = Check {
                    file,
                    tree: &tree,
                    diags: Diagnostics::default(),
                };
                c.document(&well_formed_sections(&tree));
                diags.extend(c.diags);
                diags.sort();
            }
            return Err(diags);
        }
    };
    let mut c = Check {
        file,
        tree: &tree,
        diags: Diagnostics::default(),
    };
    c.document(&value);
    c.diags.into_result(value)
}

/// The top-level sections of a document that deserialize on their own; the others are left
/// at their defaults (so they add no checks).
fn well_formed_sections(tree: &marked_yaml::Node) -> Unattended {
    let mut u = Unattended::default();
    let Some(map) = tree.as_mapping() else {
        return u;
    };
    macro_rules! sections {
        ($($field:ident),*) => {$(
            if let Some(node) = map.get_node(stringify!($field)) {
                if let Ok(v) = marked_yaml::from_node(node) {
                    u.$field = v;
                }
            }
        )*};
    }
    sections!(
        appliance,
        hostname,
        timezone,
        ntp,
        users,
        ssh,
        network,
        proxy,
        kubernetes,
        registries,
        console,
        write_files
    );
    u
}

/// A network with prefix, parsed from `a.b.c.d/n` or `x::y/n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = s.split_once('/')?;
        let addr: IpAddr = a.parse().ok()?;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let prefix: u8 = p.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    fn bits(addr: IpAddr) -> (u128, u8) {
        match addr {
            IpAddr::V4(a) => (u32::from(a) as u128, 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, width) = Cidr::bits(self.addr);
        let (x, w) = Cidr::bits(ip);
        if w != width {
            return false;
        }
        let shift = width - self.prefix;
        shift >= width || (net >> shift) == (x >> shift)
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

struct Check<'a> {
    file: &'a Path,
    tree: &'a marked_yaml::Node,
    diags: Diagnostics,
}

fn k(s: &str) -> Seg {
    Seg::Key(s.into())
}

fn at(base: &[Seg], more: &[Seg]) -> Vec<Seg> {
    base.iter().chain(more).cloned().collect()
}

impl Check<'_> {
    fn err(&mut self, path: Vec<Seg>, msg: impl Into<String>, hint: Option<&str>) {
        self.diags.push(diagnostic_at(
            self.file,
            self.tree,
            &path,
            msg,
            hint.map(str::to_string),
        ));
    }

    fn document(&mut self, u: &Unattended) {
        if let Some(a) = &u.appliance {
            self.appliance(a);
        }
        if let Some(h) = &u.hostname {
            if !valid_hostname(h) || h.len() > 64 || h.ends_with('.') {
                self.err(vec![k("hostname")], format!("`{h}` is not a valid host name"), Some("letters, digits and dashes, labels of at most 63 characters, separated by dots"));
            }
        }
        if let Some(tz) = &u.timezone {
            let ok = !tz.is_empty()
                && !tz.starts_with('/')
                && !tz.contains("..")
                && tz
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c));
            if !ok {
                self.err(
                    vec![k("timezone")],
                    format!("`{tz}` is not a time zone name"),
                    Some("an IANA name such as Europe/Paris or UTC"),
                );
            }
        }
        if let Some(ntp) = &u.ntp {
            for (i, s) in ntp.servers.iter().enumerate() {
                if !valid_hostname(s) && s.parse::<IpAddr>().is_err() {
                    self.err(
                        vec![k("ntp"), k("servers"), Seg::Index(i)],
                        format!("`{s}` is neither a host name nor an address"),
                        None,
                    );
                }
            }
        }
        self.users(&u.users);
        if u.ssh.as_ref().and_then(|s| s.port) == Some(0) {
            self.err(
                vec![k("ssh"), k("port")],
                "port 0 is not a port",
                Some("1..=65535; 22 by default"),
            );
        }
        if let Some(n) = &u.network {
            self.network(n);
        }
        if let Some(p) = &u.proxy {
            for (field, v) in [
                ("http_proxy", &p.http_proxy),
                ("https_proxy", &p.https_proxy),
            ] {
                if let Some(v) = v {
                    self.url(vec![k("proxy"), k(field)], v);
                }
            }
        }
        if let Some(kube) = &u.kubernetes {
            self.kubernetes(kube);
        }
        if let Some(r) = &u.registries {
            for (host, urls) in &r.mirrors {
                for (i, url) in urls.iter().enumerate() {
                    self.url(
                        vec![k("registries"), k("mirrors"), k(host), Seg::Index(i)],
                        url,
                    );
                }
            }
            for (host, c) in &r.configs {
                if c.password.is_some() && c.username.is_none() {
                    self.err(
                        vec![k("registries"), k("configs"), k(host)],
                        "a password without a username",
                        None,
                    );
                }
                if let Some(ca) = &c.ca {
                    self.pem(vec![k("registries"), k("configs"), k(host), k("ca")], ca);
                }
            }
        }
        if let Some(c) = &u.console {
            self.url(vec![k("console"), k("endpoint")], &c.endpoint);
            if c.token.expose().trim().is_empty() {
                self.err(
                    vec![k("console"), k("token")],
                    "empty pairing token",
                    Some("copy the token shown by the console"),
                );
            }
            if let Some(ca) = &c.ca {
                self.pem(vec![k("console"), k("ca")], ca);
            }
        }
        self.write_files(&u.write_files);
    }

    /// The console's rules (`p6os_protocol`), so a document the agent applies is one the
    /// console accepts.
    fn appliance(&mut self, a: &Appliance) {
        if let Some(id) = &a.id {
            if let Err(why) = p6os_protocol::check_id(id) {
                self.err(
                    vec![k("appliance"), k("id")],
                    why,
                    Some("the id the operator registers on the console, e.g. store-12-nuc"),
                );
            }
        }
        if let Some(name) = &a.name {
            if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
                self.err(
                    vec![k("appliance"), k("name")],
                    "the name must be 1 to 128 characters without control characters",
                    None,
                );
            }
        }
        for (key, value) in &a.labels {
            if let Err(why) = p6os_protocol::check_label(key, value) {
                self.err(
                    vec![k("appliance"), k("labels"), k(key)],
                    why,
                    Some("letters, digits, '.', '_', '-' and '/', e.g. site: store-12"),
                );
            }
        }
    }

    fn users(&mut self, users: &[User]) {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, user) in users.iter().enumerate() {
            let base = vec![k("users"), Seg::Index(i)];
            if !valid_account_name(&user.name) {
                self.err(
                    at(&base, &[k("name")]),
                    format!("`{}` is not a valid user name", user.name),
                    Some("lowercase letters, digits, `_` and `-`, starting with a letter"),
                );
            }
            if let Some(first) = seen.insert(&user.name, i) {
                self.err(
                    at(&base, &[k("name")]),
                    format!(
                        "user `{}` is defined twice (also users[{first}])",
                        user.name
                    ),
                    None,
                );
            }
            for (j, g) in user.groups.iter().enumerate() {
                if !valid_account_name(g) {
                    self.err(
                        at(&base, &[k("groups"), Seg::Index(j)]),
                        format!("`{g}` is not a valid group name"),
                        None,
                    );
                }
            }
            for (j, key) in user.ssh_authorized_keys.iter().enumerate() {
                if !valid_ssh_key(key) {
                    self.err(
                        at(&base, &[k("ssh_authorized_keys"), Seg::Index(j)]),
                        "not an SSH public key",
                        Some("one line as in id_ed25519.pub: `ssh-ed25519 AAAA… comment`"),
                    );
                }
            }
            if let Some(p) = user.passwd.as_ref().map(Secret::expose) {
                let hashed = ["$y$", "$6$", "$5$", "$2b$", "$2y$", "$7$"]
                    .iter()
                    .any(|pre| p.starts_with(pre))
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "./$=,".contains(c))
                    || p == "!"
                    || p == "*";
                if !hashed {
                    // The value itself is a secret: never echo it.
                    self.err(at(&base, &[k("passwd")]), "not a password hash", Some("give a crypt(3) hash, e.g. from `mkpasswd -m yescrypt`; plain passwords are refused"));
                }
            }
        }
    }

    fn network(&mut self, n: &Network) {
        for (i, iface) in n.interfaces.iter().enumerate() {
            let base = vec![k("network"), k("interfaces"), Seg::Index(i)];
            match (&iface.name, &iface.mac) {
                (None, None) => self.err(base.clone(), "an interface needs `name` or `mac`", None),
                (_, Some(mac)) if !valid_mac(mac) => self.err(
                    at(&base, &[k("mac")]),
                    format!("`{mac}` is not a MAC address"),
                    Some("six hex pairs separated by colons"),
                ),
                _ => {}
            }
            if let Some(name) = &iface.name {
                if name.is_empty()
                    || name.len() > 15
                    || name == "."
                    || name == ".."
                    || name.contains(['/', ':'])
                    || name.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    self.err(
                        at(&base, &[k("name")]),
                        format!("`{name}` is not an interface name"),
                        Some("at most 15 characters, no `/` or spaces"),
                    );
                }
            }
            let nets = self.addresses(&at(&base, &[k("addresses")]), &iface.addresses);
            if iface.dhcp && !iface.addresses.is_empty() {
                self.err(
                    at(&base, &[k("dhcp")]),
                    "both dhcp and static addresses",
                    Some("choose one"),
                );
            }
            if !iface.dhcp && iface.addresses.is_empty() && iface.vlans.is_empty() {
                self.err(
                    base.clone(),
                    "neither dhcp nor addresses",
                    Some("set `dhcp: true` or list static addresses"),
                );
            }
            if let Some(gw) = &iface.gateway {
                match gw.parse::<IpAddr>() {
                    Err(_) => self.err(
                        at(&base, &[k("gateway")]),
                        format!("`{gw}` is not an IP address"),
                        None,
                    ),
                    Ok(ip) if !nets.is_empty() && !nets.iter().any(|c| c.contains(ip)) => self.err(
                        at(&base, &[k("gateway")]),
                        format!("gateway {gw} is outside every address's network"),
                        None,
                    ),
                    Ok(_) => {}
                }
            }
            for (j, r) in iface.routes.iter().enumerate() {
                if Cidr::parse(&r.to).is_none() {
                    self.err(
                        at(&base, &[k("routes"), Seg::Index(j), k("to")]),
                        format!("`{}` is not an address with prefix", r.to),
                        Some("e.g. 10.0.0.0/8"),
                    );
                }
                if r.via.parse::<IpAddr>().is_err() {
                    self.err(
                        at(&base, &[k("routes"), Seg::Index(j), k("via")]),
                        format!("`{}` is not an IP address", r.via),
                        None,
                    );
                }
            }
            if let Some(mtu) = iface.mtu {
                if mtu < 68 {
                    self.err(
                        at(&base, &[k("mtu")]),
                        format!("MTU {mtu} is below 68"),
                        None,
                    );
                }
            }
            for (j, v) in iface.vlans.iter().enumerate() {
                if iface.vlans[..j].iter().any(|o| o.id == v.id) {
                    self.err(
                        at(&base, &[k("vlans"), Seg::Index(j), k("id")]),
                        format!("VLAN {} is defined twice", v.id),
                        None,
                    );
                }
                if v.dhcp && !v.addresses.is_empty() {
                    self.err(
                        at(&base, &[k("vlans"), Seg::Index(j), k("dhcp")]),
                        "both dhcp and static addresses",
                        Some("choose one"),
                    );
                }
                if !(1..=4094).contains(&v.id) {
                    self.err(
                        at(&base, &[k("vlans"), Seg::Index(j), k("id")]),
                        format!("VLAN id {} is outside 1..=4094", v.id),
                        None,
                    );
                }
                self.addresses(
                    &at(&base, &[k("vlans"), Seg::Index(j), k("addresses")]),
                    &v.addresses,
                );
            }
        }
        if let Some(dns) = &n.dns {
            for (i, s) in dns.servers.iter().enumerate() {
                if s.parse::<IpAddr>().is_err() {
                    self.err(
                        vec![k("network"), k("dns"), k("servers"), Seg::Index(i)],
                        format!("`{s}` is not an IP address"),
                        None,
                    );
                }
            }
            for (i, s) in dns.search.iter().enumerate() {
                if !valid_hostname(s) {
                    self.err(
                        vec![k("network"), k("dns"), k("search"), Seg::Index(i)],
                        format!("`{s}` is not a domain name"),
                        None,
                    );
                }
            }
        }
    }

    fn addresses(&mut self, base: &[Seg], list: &[String]) -> Vec<Cidr> {
        let mut out = Vec::new();
        for (i, a) in list.iter().enumerate() {
            match Cidr::parse(a) {
                Some(c) => out.push(c),
                None => self.err(
                    at(base, &[Seg::Index(i)]),
                    format!("`{a}` is not an address with prefix"),
                    Some("e.g. 192.168.1.10/24"),
                ),
            }
        }
        out
    }

    fn kubernetes(&mut self, kube: &Kubernetes) {
        let cidr = |c: &mut Self, field: &str, v: &Option<String>| -> Option<Cidr> {
            let v = v.as_ref()?;
            let parsed = Cidr::parse(v);
            if parsed.is_none() {
                c.err(
                    vec![k("kubernetes"), k(field)],
                    format!("`{v}` is not a CIDR"),
                    Some("e.g. 10.42.0.0/16"),
                );
            }
            parsed
        };
        let pods = cidr(self, "pod_cidr", &kube.pod_cidr);
        let services = cidr(self, "service_cidr", &kube.service_cidr);
        if let (Some(p), Some(s)) = (pods, services) {
            if p.overlaps(&s) {
                self.err(vec![k("kubernetes"), k("service_cidr")], "overlaps pod_cidr", Some("pods and services need separate ranges, e.g. 10.42.0.0/16 and 10.43.0.0/16"));
            }
        }
        if let Some(dns) = &kube.cluster_dns {
            match dns.parse::<IpAddr>() {
                Err(_) => self.err(
                    vec![k("kubernetes"), k("cluster_dns")],
                    format!("`{dns}` is not an IP address"),
                    None,
                ),
                Ok(ip) if services.is_some_and(|s| !s.contains(ip)) => self.err(
                    vec![k("kubernetes"), k("cluster_dns")],
                    format!("{dns} is outside service_cidr"),
                    Some("the cluster DNS address is a service address"),
                ),
                Ok(_) => {}
            }
        }
        if let Some(n) = &kube.node_name {
            if !valid_hostname(n) || n.chars().any(|c| c.is_ascii_uppercase()) {
                self.err(
                    vec![k("kubernetes"), k("node_name")],
                    format!("`{n}` is not a valid node name"),
                    Some("lowercase RFC 1123 name"),
                );
            }
        }
        for (i, t) in kube.taints.iter().enumerate() {
            let effect_ok = t.rsplit_once(':').is_some_and(|(kv, e)| {
                !kv.is_empty() && ["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&e)
            });
            if !effect_ok {
                self.err(
                    vec![k("kubernetes"), k("taints"), Seg::Index(i)],
                    format!("`{t}` is not a taint"),
                    Some("key=value:NoSchedule (or PreferNoSchedule, NoExecute)"),
                );
            }
        }
    }

    fn write_files(&mut self, files: &[WriteFile]) {
        for (i, f) in files.iter().enumerate() {
            let base = vec![k("write_files"), Seg::Index(i)];
            let comps: Vec<&str> = f.path.split('/').skip(1).collect();
            let clean = f.path.starts_with('/')
                && comps.len() >= 2
                && comps
                    .iter()
                    .all(|c| !c.is_empty() && *c != "." && *c != "..");
            let writable = matches!(comps.first(), Some(&"etc") | Some(&"var"));
            if !clean || !writable {
                self.err(
                    at(&base, &[k("path")]),
                    format!("`{}` is outside the writable overlays", f.path),
                    Some("a file under /etc or /var (the rest of the system is read-only)"),
                );
            } else if f.path.starts_with("/var/lib/p6os/")
                || ["/etc/passwd", "/etc/shadow", "/etc/group"].contains(&f.path.as_str())
            {
                self.err(
                    at(&base, &[k("path")]),
                    format!("`{}` is managed by the agent", f.path),
                    Some("use the `users` section for accounts"),
                );
            } else if let Some(first) = files[..i].iter().position(|o| o.path == f.path) {
                self.err(
                    at(&base, &[k("path")]),
                    format!("`{}` is written twice (also write_files[{first}])", f.path),
                    None,
                );
            }
            if f.encoding == Encoding::Base64
                && base64::engine::general_purpose::STANDARD
                    .decode(strip_whitespace(&f.content))
                    .is_err()
            {
                self.err(at(&base, &[k("content")]), "not valid base64", None);
            }
            if let Some(p) = &f.permissions {
                let digits = !p.is_empty() && p.bytes().all(|b| (b'0'..=b'7').contains(&b));
                if !digits || u32::from_str_radix(p, 8).map_or(true, |m| m > 0o7777) {
                    self.err(
                        at(&base, &[k("permissions")]),
                        format!("`{p}` is not an octal mode"),
                        Some("quote it, e.g. \"0644\""),
                    );
                }
            }
            if let Some(o) = &f.owner {
                let ok = o.split(':').count() <= 2
                    && !o.is_empty()
                    && o.split(':').all(|p| {
                        !p.is_empty()
                            && p.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
                    });
                if !ok {
                    self.err(
                        at(&base, &[k("owner")]),
                        format!("`{o}` is not user[:group]"),
                        None,
                    );
                }
            }
        }
    }

    fn url(&mut self, path: Vec<Seg>, url: &str) {
        if parse_http_url(url).is_none() {
            // Userinfo may carry a password: never echo it.
            self.err(
                path,
                format!("`{}` is not an http(s) URL", redact_userinfo(url)),
                Some("e.g. https://host.example:8443/path"),
            );
        }
    }

    fn pem(&mut self, path: Vec<Seg>, pem: &str) {
        if !(pem.contains("-----BEGIN CERTIFICATE-----")
            && pem.contains("-----END CERTIFICATE-----"))
        {
            self.err(
                path,
                "not a PEM certificate",
                Some("paste the whole -----BEGIN CERTIFICATE----- block"),
            );
        }
    }
}

/// Scheme, host and port of an `http(s)://[user[:pass]@]host[:port][/…]` URL; `None` if malformed.
/// IPv6 hosts must be bracketed; ports are 1..=65535.
pub fn parse_http_url(url: &str) -> Option<(&str, &str, Option<u16>)> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let (v6, after) = inner.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (v6, port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() || host.contains(':') && !hostport.starts_with('[') {
        return None;
    }
    if !hostport.starts_with('[')
        && !valid_hostname(host)
        && host.parse::<std::net::Ipv4Addr>().is_err()
    {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok().filter(|p| *p > 0)?)
        }
        Some(_) => return None,
    };
    Some((scheme, host, port))
}

/// `http://user:secret@host` -> `http://***@host`.
pub fn redact_userinfo(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            return format!("{scheme}://***@{}", &rest[at + 1..]);
        }
    }
    url.to_string()
}

/// base64 as `base64` wraps it: newlines and spaces are ignored.
pub fn strip_whitespace(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// User and group names: lowercase letters, digits, `_` and `-`, starting with a letter or `_`.
pub fn valid_account_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 32
        && n.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))
}

pub fn valid_hostname(h: &str) -> bool {
    let h = h.strip_suffix('.').unwrap_or(h);
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn valid_mac(m: &str) -> bool {
    let parts: Vec<&str> = m.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn valid_ssh_key(key: &str) -> bool {
    // One authorized_keys line: a control character (a newline) would smuggle in another.
    if key.chars().any(char::is_control) {
        return false;
    }
    let mut it = key.split_whitespace();
    let (Some(kind), Some(blob)) = (it.next(), it.next()) else {
        return false;
    };
    let known =
        kind.starts_with("ssh-") || kind.starts_with("ecdsa-sha2-") || kind.starts_with("sk-");
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(blob) else {
        return false;
    };
    // The blob starts with the key type as an SSH string: length, then the name.
    let named = raw.len() > 4 && {
        let n = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
        raw.get(4..4 + n) == Some(kind.as_bytes())
    };
    known && named
}

#[cfg(test)]
mod tests;
