//! The document's types: what `unattended.yaml` may say (`deny_unknown_fields` everywhere), from
//! which the JSON Schema of `p6os schema unattended` is derived. No checks here beyond the
//! shape: the semantic checks are in `checks/`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    /// Hosts, domains (`.example.com`) and networks reached without the proxy: a list, or
    /// the comma-separated text environment variables use (`localhost,127.0.0.1,.corp`).
    #[serde(default, deserialize_with = "list_or_commas")]
    #[schemars(with = "ListOrCommas")]
    pub no_proxy: Vec<String>,
}

/// A list of names, or one text of names separated by commas (and blanks).
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // read through `list_or_commas`; the schema comes from here
enum ListOrCommas {
    List(Vec<String>),
    Text(String),
}

fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match ListOrCommas::deserialize(d)? {
        ListOrCommas::List(list) => list,
        ListOrCommas::Text(text) => split_commas(&text),
    })
}

/// `a, b,c` -> `[a, b, c]`: commas and blanks separate, empty entries are dropped (as curl
/// reads `no_proxy`).
pub fn split_commas(text: &str) -> Vec<String> {
    text.split([',', ' ', '\t', '\n'])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
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
