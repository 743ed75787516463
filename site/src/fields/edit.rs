//! Writing a field's text into the document, adding and removing list entries, and dropping a
//! section the operator emptied again. Pure.

use std::collections::BTreeMap;

use p6os_config::unattended::{
    split_commas, Console, Dns, Interface, Kubernetes, Network, Ntp, Proxy, Registries,
    RegistryConfig, Secret, Unattended, User,
};

use super::{registry_hosts, FieldId, Page, Section};

/// Sets `id` of `page` in `doc` from `text`; on a text that cannot be read (a port that is
/// not a number), why, and `doc` is unchanged.
pub fn set(doc: &mut Unattended, page: Page, id: FieldId, text: &str) -> Result<(), String> {
    use FieldId::*;
    let value = text.trim();
    let some = |v: &str| (!v.is_empty()).then(|| v.to_string());
    match (id, page.entry) {
        (ApplianceId, _) => appliance(doc).id = some(value),
        (ApplianceName, _) => appliance(doc).name = some(value),
        (ApplianceLabels, _) => appliance(doc).labels = parse_pairs(value)?,
        (Hostname, _) => doc.hostname = some(value),
        (Timezone, _) => doc.timezone = some(value),
        (NtpServers, _) => {
            let servers = split_commas(value);
            doc.ntp = (!servers.is_empty()).then_some(Ntp { servers });
        }
        (IfaceName, Some(i)) => iface(doc, i).name = some(value),
        (IfaceMac, Some(i)) => iface(doc, i).mac = some(value),
        (IfaceDhcp, Some(i)) => iface(doc, i).dhcp = parse_yes_no(value)?,
        (IfaceAddresses, Some(i)) => iface(doc, i).addresses = split_commas(value),
        (IfaceGateway, Some(i)) => iface(doc, i).gateway = some(value),
        (IfaceMtu, Some(i)) => {
            iface(doc, i).mtu = match value {
                "" => None,
                v => Some(
                    v.parse()
                        .map_err(|_| "a whole number from 68 to 65535".to_string())?,
                ),
            }
        }
        (DnsServers, _) => dns(doc).servers = split_commas(value),
        (DnsSearch, _) => dns(doc).search = split_commas(value),
        (HttpProxy, _) => proxy(doc).http_proxy = some(value),
        (HttpsProxy, _) => proxy(doc).https_proxy = some(value),
        (NoProxy, _) => proxy(doc).no_proxy = split_commas(value),
        (PodCidr, _) => kubernetes(doc).pod_cidr = some(value),
        (ServiceCidr, _) => kubernetes(doc).service_cidr = some(value),
        (ClusterDns, _) => kubernetes(doc).cluster_dns = some(value),
        (NodeName, _) => kubernetes(doc).node_name = some(value),
        (RegistryHost, Some(i)) => rename_registry(doc, i, value)?,
        (RegistryMirrors, Some(i)) => {
            let host = host_of(doc, i);
            let urls = split_commas(value);
            let r = registries(doc);
            if urls.is_empty() {
                r.mirrors.remove(&host);
            } else {
                r.mirrors.insert(host, urls);
            }
        }
        (RegistryUsername, Some(i)) => registry_config(doc, i).username = some(value),
        (RegistryPassword, Some(i)) => {
            registry_config(doc, i).password = (!text.is_empty()).then(|| Secret::new(text))
        }
        (ConsoleEndpoint, _) => console(doc).endpoint = value.to_string(),
        (ConsoleToken, _) => console(doc).token = Secret::new(text.trim()),
        (UserName, Some(i)) => user(doc, i).name = value.to_string(),
        (UserGroups, Some(i)) => user(doc, i).groups = split_commas(value),
        (UserKey(k), Some(i)) => {
            let keys = &mut user(doc, i).ssh_authorized_keys;
            match (k < keys.len(), value.is_empty()) {
                (true, true) => {
                    keys.remove(k);
                }
                (true, false) => keys[k] = value.to_string(),
                (false, true) => {}
                (false, false) => keys.push(value.to_string()),
            }
        }
        (UserPasswd, Some(i)) => user(doc, i).passwd = some(value).map(Secret::new),
        (UserSudo, Some(i)) => user(doc, i).sudo = parse_yes_no(value)?,
        (RegistryCa | ConsoleCa, _) => {}
        // A field of a list page without an entry: nothing to set.
        (_, None) => {}
    }
    tidy(doc, page.section);
    Ok(())
}

/// Adds an entry to a list section; the index of the new entry.
pub fn add_entry(doc: &mut Unattended, section: Section) -> Result<usize, String> {
    match section {
        Section::Network => {
            let n = doc.network.get_or_insert_with(Network::default);
            n.interfaces.push(Interface {
                dhcp: true,
                ..Interface::default()
            });
            Ok(n.interfaces.len() - 1)
        }
        Section::Users => {
            doc.users.push(User::default());
            Ok(doc.users.len() - 1)
        }
        Section::Registries => {
            if registry_hosts(doc).iter().any(|h| h.is_empty()) {
                return Err("name the registry added last first".into());
            }
            registries(doc)
                .configs
                .insert(String::new(), RegistryConfig::default());
            Ok(registry_hosts(doc)
                .iter()
                .position(|h| h.is_empty())
                .unwrap_or(0))
        }
        _ => Err("this page has no entries to add".into()),
    }
}

/// Removes entry `i` of a list section.
pub fn remove_entry(doc: &mut Unattended, section: Section, i: usize) {
    match section {
        Section::Network => {
            if let Some(n) = doc.network.as_mut() {
                if i < n.interfaces.len() {
                    n.interfaces.remove(i);
                }
            }
        }
        Section::Users if i < doc.users.len() => {
            doc.users.remove(i);
        }
        Section::Registries => {
            let host = host_of(doc, i);
            let r = registries(doc);
            r.mirrors.remove(&host);
            r.configs.remove(&host);
        }
        _ => {}
    }
    tidy(doc, section);
}

/// The section of `id` is dropped again when nothing is left in it: opening a page and
/// leaving it empty does not add an empty section to the file. Other sections stay as they are.
fn tidy(doc: &mut Unattended, section: Section) {
    let empty_appliance = |a: &p6os_config::unattended::Appliance| {
        a.id.is_none() && a.name.is_none() && a.labels.is_empty()
    };
    match section {
        Section::Appliance if doc.appliance.as_ref().is_some_and(empty_appliance) => {
            doc.appliance = None
        }
        Section::Network | Section::Dns => {
            if let Some(n) = doc.network.as_mut() {
                if n.dns
                    .as_ref()
                    .is_some_and(|d| d.servers.is_empty() && d.search.is_empty())
                {
                    n.dns = None;
                }
            }
            if doc
                .network
                .as_ref()
                .is_some_and(|n| n.interfaces.is_empty() && n.dns.is_none())
            {
                doc.network = None;
            }
        }
        Section::Proxy if doc.proxy.as_ref() == Some(&Proxy::default()) => doc.proxy = None,
        Section::Kubernetes if doc.kubernetes.as_ref() == Some(&Kubernetes::default()) => {
            doc.kubernetes = None
        }
        Section::Registries => {
            if let Some(r) = doc.registries.as_mut() {
                // A login emptied again on a registry that has mirrors: no login entry left.
                let mirrors = &r.mirrors;
                r.configs.retain(|host, c| {
                    *c != RegistryConfig::default() || !mirrors.contains_key(host)
                });
            }
            if doc.registries.as_ref() == Some(&Registries::default()) {
                doc.registries = None;
            }
        }
        Section::Console if doc.console.as_ref() == Some(&Console::default()) => doc.console = None,
        _ => {}
    }
}

fn appliance(doc: &mut Unattended) -> &mut p6os_config::unattended::Appliance {
    doc.appliance.get_or_insert_with(Default::default)
}

fn iface(doc: &mut Unattended, i: usize) -> &mut Interface {
    let n = doc.network.get_or_insert_with(Network::default);
    if n.interfaces.len() <= i {
        n.interfaces.resize_with(i + 1, Interface::default);
    }
    &mut n.interfaces[i]
}

fn dns(doc: &mut Unattended) -> &mut Dns {
    doc.network
        .get_or_insert_with(Network::default)
        .dns
        .get_or_insert_with(Dns::default)
}

fn proxy(doc: &mut Unattended) -> &mut Proxy {
    doc.proxy.get_or_insert_with(Proxy::default)
}

fn kubernetes(doc: &mut Unattended) -> &mut Kubernetes {
    doc.kubernetes.get_or_insert_with(Kubernetes::default)
}

fn registries(doc: &mut Unattended) -> &mut Registries {
    doc.registries.get_or_insert_with(Registries::default)
}

fn console(doc: &mut Unattended) -> &mut Console {
    doc.console.get_or_insert_with(Console::default)
}

fn user(doc: &mut Unattended, i: usize) -> &mut User {
    if doc.users.len() <= i {
        doc.users.resize_with(i + 1, User::default);
    }
    &mut doc.users[i]
}

fn host_of(doc: &Unattended, i: usize) -> String {
    registry_hosts(doc).get(i).cloned().unwrap_or_default()
}

fn registry_config(doc: &mut Unattended, i: usize) -> &mut RegistryConfig {
    let host = host_of(doc, i);
    registries(doc).configs.entry(host).or_default()
}

fn rename_registry(doc: &mut Unattended, i: usize, to: &str) -> Result<(), String> {
    let from = host_of(doc, i);
    if from == to {
        return Ok(());
    }
    if registry_hosts(doc).iter().any(|h| h == to) {
        return Err(format!("{to} has a page of its own already"));
    }
    let r = registries(doc);
    if let Some(m) = r.mirrors.remove(&from) {
        r.mirrors.insert(to.to_string(), m);
    }
    let c = r.configs.remove(&from).unwrap_or_default();
    r.configs.insert(to.to_string(), c);
    Ok(())
}

fn parse_yes_no(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "y" | "true" | "on" => Ok(true),
        "no" | "n" | "false" | "off" | "" => Ok(false),
        _ => Err("yes or no".into()),
    }
}

/// `a=1, b=2` -> {a: 1, b: 2}.
fn parse_pairs(v: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for item in split_commas(v) {
        let Some((k, val)) = item.split_once('=') else {
            return Err(format!("`{item}` is not key=value"));
        };
        if out.insert(k.to_string(), val.to_string()).is_some() {
            return Err(format!("`{k}` is given twice"));
        }
    }
    Ok(out)
}
