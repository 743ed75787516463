//! The pages and fields of the setup screens, and how each field reads and writes the
//! document. Pure: a document in, texts out; a text in, the document changed or why not.
//!
//! Every field is one line of text: lists are written with commas (`10.0.0.5/24, 10.0.0.6/24`),
//! labels as `key=value` pairs, yes/no fields as `yes` or `no`. What a page does not show is
//! never touched (routes, VLANs, taints, `write_files`...), so a document opened and saved keeps it.

use std::collections::{BTreeMap, BTreeSet};

mod edit;

pub use edit::{add_entry, remove_entry, set};

use p6os_config::unattended::Unattended;

/// A part of the document with a page (or, for lists, a page per entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Section {
    Start,
    Appliance,
    Host,
    Network,
    Dns,
    Proxy,
    Kubernetes,
    Registries,
    Console,
    Users,
    Review,
}

impl Section {
    pub const ALL: [Section; 11] = [
        Section::Start,
        Section::Appliance,
        Section::Host,
        Section::Network,
        Section::Dns,
        Section::Proxy,
        Section::Kubernetes,
        Section::Registries,
        Section::Console,
        Section::Users,
        Section::Review,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Section::Start => "Start",
            Section::Appliance => "Appliance",
            Section::Host => "Name and time",
            Section::Network => "Network port",
            Section::Dns => "Name servers",
            Section::Proxy => "Proxy",
            Section::Kubernetes => "Kubernetes",
            Section::Registries => "Registry",
            Section::Console => "Console",
            Section::Users => "Account",
            Section::Review => "Review and save",
        }
    }

    /// Sections with one page per entry (Ctrl-A adds one, Ctrl-D removes one).
    pub fn is_list(self) -> bool {
        matches!(
            self,
            Section::Network | Section::Registries | Section::Users
        )
    }

    /// What an entry is called in messages.
    pub fn entry_name(self) -> &'static str {
        match self {
            Section::Network => "network port",
            Section::Registries => "registry",
            Section::Users => "account",
            _ => "entry",
        }
    }
}

/// One page: a section, and for list sections the entry (None: the list is empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Page {
    pub section: Section,
    pub entry: Option<usize>,
}

impl Page {
    /// Its name in the list of pages: `Account 2`, `Proxy`.
    pub fn name(&self) -> String {
        match self.entry {
            Some(e) => format!("{} {}", self.section.title(), e + 1),
            None => self.section.title().to_string(),
        }
    }
}

/// The pages of `doc`, in order.
pub fn pages(doc: &Unattended) -> Vec<Page> {
    let mut out = Vec::new();
    for section in Section::ALL {
        let count = if section.is_list() {
            entries(doc, section)
        } else {
            0
        };
        if section.is_list() && count > 0 {
            out.extend((0..count).map(|i| Page {
                section,
                entry: Some(i),
            }));
        } else {
            out.push(Page {
                section,
                entry: None,
            });
        }
    }
    out
}

/// How many entries a list section has.
pub fn entries(doc: &Unattended, section: Section) -> usize {
    match section {
        Section::Network => doc.network.as_ref().map_or(0, |n| n.interfaces.len()),
        Section::Registries => registry_hosts(doc).len(),
        Section::Users => doc.users.len(),
        _ => 0,
    }
}

/// How a field is edited and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// Shown as stars; never in a screen or a log.
    Secret,
    /// `yes` or `no`: Space toggles.
    YesNo,
    /// Shown, not edited here (multi-line certificates): kept as in the file.
    Kept,
}

/// Which field of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldId {
    ApplianceId,
    ApplianceName,
    ApplianceLabels,
    Hostname,
    Timezone,
    NtpServers,
    IfaceName,
    IfaceMac,
    IfaceDhcp,
    IfaceAddresses,
    IfaceGateway,
    IfaceMtu,
    DnsServers,
    DnsSearch,
    HttpProxy,
    HttpsProxy,
    NoProxy,
    PodCidr,
    ServiceCidr,
    ClusterDns,
    NodeName,
    RegistryHost,
    RegistryMirrors,
    RegistryUsername,
    RegistryPassword,
    RegistryCa,
    ConsoleEndpoint,
    ConsoleToken,
    ConsoleCa,
    UserName,
    UserGroups,
    /// The n-th SSH key; one past the last is the empty "new key" field.
    UserKey(usize),
    UserPasswd,
    UserSudo,
}

/// A field as shown: what it is, its text, where its problems are reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub id: FieldId,
    pub label: String,
    pub help: &'static str,
    pub kind: Kind,
    pub value: String,
    /// Field path of the document (`network.interfaces[0].addresses`): problems reported at
    /// it or below it are this field's.
    pub path: String,
}

fn field(
    id: FieldId,
    label: &str,
    help: &'static str,
    kind: Kind,
    value: String,
    path: String,
) -> Field {
    Field {
        id,
        label: label.to_string(),
        help,
        kind,
        value,
        path,
    }
}

fn list(items: &[String]) -> String {
    items.join(", ")
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

fn pairs(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every registry host named in mirrors or configs, sorted.
pub fn registry_hosts(doc: &Unattended) -> Vec<String> {
    let Some(r) = &doc.registries else {
        return Vec::new();
    };
    let hosts: BTreeSet<&String> = r.mirrors.keys().chain(r.configs.keys()).collect();
    hosts.into_iter().cloned().collect()
}

/// The fields of `page` with their values in `doc`.
pub fn fields(doc: &Unattended, page: Page) -> Vec<Field> {
    use FieldId::*;
    use Kind::*;
    let p = |s: &str| s.to_string();
    match (page.section, page.entry) {
        (Section::Appliance, _) => {
            let a = doc.appliance.clone().unwrap_or_default();
            vec![
                field(ApplianceId, "Appliance id", "The name the management console knows this appliance by (letters, digits, '.', '_', '-'). Empty: the machine's own id.", Text, opt(&a.id), p("appliance.id")),
                field(ApplianceName, "Display name", "A name people recognise, e.g. Lyon store 42.", Text, opt(&a.name), p("appliance.name")),
                field(ApplianceLabels, "Labels", "key=value pairs separated by commas, e.g. region=eu, store=42. Rollouts choose appliances by them.", Text, pairs(&a.labels), p("appliance.labels")),
            ]
        }
        (Section::Host, _) => vec![
            field(
                Hostname,
                "Host name",
                "The appliance's name on the network: letters, digits and dashes, e.g. store-042.",
                Text,
                opt(&doc.hostname),
                p("hostname"),
            ),
            field(
                Timezone,
                "Time zone",
                "e.g. Europe/Paris, America/New_York or UTC.",
                Text,
                opt(&doc.timezone),
                p("timezone"),
            ),
            field(
                NtpServers,
                "Time servers",
                "Host names or addresses separated by commas. Empty: the system's default servers.",
                Text,
                doc.ntp.as_ref().map_or(String::new(), |n| list(&n.servers)),
                p("ntp"),
            ),
        ],
        (Section::Network, Some(i)) => {
            let f = doc
                .network
                .as_ref()
                .and_then(|n| n.interfaces.get(i))
                .cloned()
                .unwrap_or_default();
            let base = format!("network.interfaces[{i}]");
            vec![
                field(IfaceName, "Port name", "The network port's name, e.g. enp1s0 or eth0. Or give its MAC address below.", Text, opt(&f.name), format!("{base}.name")),
                field(IfaceMac, "MAC address", "Six pairs of hex digits, e.g. 52:54:00:12:34:56 (on the machine's label).", Text, opt(&f.mac), format!("{base}.mac")),
                field(IfaceDhcp, "Automatic address", "yes: the network's DHCP server gives the address. no: enter a fixed address below. Space switches.", YesNo, yes_no(f.dhcp), format!("{base}.dhcp")),
                field(IfaceAddresses, "Fixed addresses", "Address and prefix length, e.g. 192.168.1.10/24; several separated by commas.", Text, list(&f.addresses), format!("{base}.addresses")),
                field(IfaceGateway, "Gateway", "The router's address, e.g. 192.168.1.1. Empty with an automatic address.", Text, opt(&f.gateway), format!("{base}.gateway")),
                field(IfaceMtu, "MTU", "Largest packet size. Leave it empty unless the network needs another (e.g. 9000).", Text, f.mtu.map_or(String::new(), |m| m.to_string()), format!("{base}.mtu")),
            ]
        }
        (Section::Dns, _) => {
            let d = doc
                .network
                .as_ref()
                .and_then(|n| n.dns.clone())
                .unwrap_or_default();
            vec![
                field(
                    DnsServers,
                    "Name servers",
                    "Addresses separated by commas, e.g. 192.168.1.1. Empty: from DHCP.",
                    Text,
                    list(&d.servers),
                    p("network.dns.servers"),
                ),
                field(
                    DnsSearch,
                    "Search domains",
                    "Domains tried for short names, e.g. store.example; separated by commas.",
                    Text,
                    list(&d.search),
                    p("network.dns.search"),
                ),
            ]
        }
        (Section::Proxy, _) => {
            let x = doc.proxy.clone().unwrap_or_default();
            vec![
                field(HttpProxy, "HTTP proxy", "e.g. http://proxy.store.example:3128 (with a login: http://user:password@host:3128). Empty: no proxy.", Text, opt(&x.http_proxy), p("proxy.http_proxy")),
                field(HttpsProxy, "HTTPS proxy", "Usually the same as the HTTP proxy.", Text, opt(&x.https_proxy), p("proxy.https_proxy")),
                field(NoProxy, "No proxy for", "Hosts, .domains and networks reached directly, separated by commas: localhost, 127.0.0.1, .store.example, 10.0.0.0/8.", Text, list(&x.no_proxy), p("proxy.no_proxy")),
            ]
        }
        (Section::Kubernetes, _) => {
            let k = doc.kubernetes.clone().unwrap_or_default();
            vec![
                field(PodCidr, "Pod network", "Addresses for containers, e.g. 10.42.0.0/16. Must not overlap the site's own networks.", Text, opt(&k.pod_cidr), p("kubernetes.pod_cidr")),
                field(ServiceCidr, "Service network", "Addresses for services, e.g. 10.43.0.0/16. Must not overlap the pod network.", Text, opt(&k.service_cidr), p("kubernetes.service_cidr")),
                field(ClusterDns, "Cluster DNS", "The cluster's name server, inside the service network, e.g. 10.43.0.10.", Text, opt(&k.cluster_dns), p("kubernetes.cluster_dns")),
                field(NodeName, "Node name", "The appliance's name in Kubernetes. Empty: the host name.", Text, opt(&k.node_name), p("kubernetes.node_name")),
            ]
        }
        (Section::Registries, Some(i)) => {
            let host = registry_hosts(doc).get(i).cloned().unwrap_or_default();
            let r = doc.registries.clone().unwrap_or_default();
            let mirrors = r.mirrors.get(&host).cloned().unwrap_or_default();
            let c = r.configs.get(&host).cloned().unwrap_or_default();
            let base = format!("registries.configs.{host}");
            vec![
                field(RegistryHost, "Registry", "The registry's host, e.g. docker.io or registry.store.example:5000; * for every registry.", Text, host.clone(), format!("registries.*.{host}")),
                field(RegistryMirrors, "Mirrors", "URLs tried in order before the registry itself, separated by commas.", Text, list(&mirrors), format!("registries.mirrors.{host}")),
                field(RegistryUsername, "User name", "The login for this registry, if it needs one.", Text, opt(&c.username), format!("{base}.username")),
                field(RegistryPassword, "Password", "The password of that login; kept secret on the appliance.", Secret, c.password.as_ref().map_or(String::new(), |s| s.expose().to_string()), format!("{base}.password")),
                field(RegistryCa, "Certificate", "The registry's CA certificate is set in the file (PEM), not on this screen.", Kept, kept(&c.ca), format!("{base}.ca")),
            ]
        }
        (Section::Console, _) => {
            let c = doc.console.clone();
            vec![
                field(ConsoleEndpoint, "Console address", "The management console's address from the fleet's operators, e.g. https://console.example.com.", Text, c.as_ref().map_or(String::new(), |c| c.endpoint.clone()), p("console.endpoint")),
                field(ConsoleToken, "Pairing token", "The fleet's pairing token from the fleet's operators.", Secret, c.as_ref().map_or(String::new(), |c| c.token.expose().to_string()), p("console.token")),
                field(ConsoleCa, "Certificate", "The console's CA certificate is set in the file (PEM), not on this screen.", Kept, kept(&c.and_then(|c| c.ca)), p("console.ca")),
            ]
        }
        (Section::Users, Some(i)) => {
            let u = doc.users.get(i).cloned().unwrap_or_default();
            let base = format!("users[{i}]");
            let mut out = vec![
                field(
                    UserName,
                    "Account name",
                    "Lowercase letters, digits, '-' and '_', e.g. admin.",
                    Text,
                    u.name.clone(),
                    format!("{base}.name"),
                ),
                field(
                    UserGroups,
                    "Groups",
                    "Extra groups separated by commas, e.g. adm.",
                    Text,
                    list(&u.groups),
                    format!("{base}.groups"),
                ),
            ];
            for (k, key) in u.ssh_authorized_keys.iter().enumerate() {
                out.push(field(
                    UserKey(k),
                    &format!("SSH key {}", k + 1),
                    "One public key: ssh-ed25519 AAAA... name. Empty it to remove it.",
                    Text,
                    key.clone(),
                    format!("{base}.ssh_authorized_keys[{k}]"),
                ));
            }
            let n = u.ssh_authorized_keys.len();
            out.push(field(
                UserKey(n),
                "New SSH key",
                "Paste a public key (ssh-ed25519 AAAA... name) to add it.",
                Text,
                String::new(),
                format!("{base}.ssh_authorized_keys[{n}]"),
            ));
            out.push(field(UserPasswd, "Password hash", "A hash made with `mkpasswd -m yescrypt`, never the password itself. Empty: SSH keys only.", Secret, u.passwd.as_ref().map_or(String::new(), |s| s.expose().to_string()), format!("{base}.passwd")));
            out.push(field(
                UserSudo,
                "Administrator",
                "yes: the account may run commands as root (sudo). Space switches.",
                YesNo,
                yes_no(u.sudo),
                format!("{base}.sudo"),
            ));
            out
        }
        _ => Vec::new(),
    }
}

fn kept(ca: &Option<String>) -> String {
    match ca {
        Some(pem) => format!("set ({} lines, kept)", pem.lines().count()),
        None => "none".to_string(),
    }
}

#[cfg(test)]
mod tests;
