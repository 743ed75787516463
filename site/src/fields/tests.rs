use std::path::Path;

use super::*;

fn load(text: &str) -> Unattended {
    p6os_config::unattended::load(Path::new("t.yaml"), text).unwrap_or_else(|d| panic!("{d}"))
}

fn page(section: Section, entry: Option<usize>) -> Page {
    Page { section, entry }
}

fn value(doc: &Unattended, p: Page, id: FieldId) -> String {
    fields(doc, p)
        .into_iter()
        .find(|f| f.id == id)
        .unwrap_or_else(|| panic!("no {id:?} on {p:?}"))
        .value
}

#[test]
fn pages_follow_the_lists_of_the_document() {
    let doc = load("users: [{name: a}, {name: b}]\nnetwork:\n  interfaces: [{name: eth0, dhcp: true}]\nregistries:\n  mirrors: {docker.io: [\"https://m.example\"]}\n  configs: {r.example: {username: u}}\n");
    let shown: Vec<(Section, Option<usize>)> =
        pages(&doc).iter().map(|p| (p.section, p.entry)).collect();
    assert_eq!(
        shown,
        vec![
            (Section::Start, None),
            (Section::Appliance, None),
            (Section::Host, None),
            (Section::Network, Some(0)),
            (Section::Dns, None),
            (Section::Proxy, None),
            (Section::Kubernetes, None),
            (Section::Registries, Some(0)),
            (Section::Registries, Some(1)),
            (Section::Console, None),
            (Section::Users, Some(0)),
            (Section::Users, Some(1)),
            (Section::Review, None),
        ]
    );
    // An empty list still has its page (to add the first entry).
    let empty = pages(&Unattended::default());
    assert!(empty.contains(&page(Section::Users, None)));
}

#[test]
fn every_field_reads_back_what_was_set() {
    let mut doc = Unattended::default();
    let cases: &[(Section, Option<usize>, FieldId, &str)] = &[
        (Section::Appliance, None, FieldId::ApplianceId, "store-42"),
        (Section::Appliance, None, FieldId::ApplianceName, "Lyon 42"),
        (
            Section::Appliance,
            None,
            FieldId::ApplianceLabels,
            "region=eu, store=42",
        ),
        (Section::Host, None, FieldId::Hostname, "store-42"),
        (Section::Host, None, FieldId::Timezone, "Europe/Paris"),
        (
            Section::Host,
            None,
            FieldId::NtpServers,
            "ntp1.example, 10.0.0.1",
        ),
        (Section::Network, Some(0), FieldId::IfaceName, "enp1s0"),
        (Section::Network, Some(0), FieldId::IfaceDhcp, "no"),
        (
            Section::Network,
            Some(0),
            FieldId::IfaceAddresses,
            "192.168.1.10/24, 10.1.0.2/16",
        ),
        (
            Section::Network,
            Some(0),
            FieldId::IfaceGateway,
            "192.168.1.1",
        ),
        (Section::Network, Some(0), FieldId::IfaceMtu, "9000"),
        (Section::Dns, None, FieldId::DnsServers, "192.168.1.1"),
        (Section::Dns, None, FieldId::DnsSearch, "store.example"),
        (
            Section::Proxy,
            None,
            FieldId::HttpProxy,
            "http://proxy.example:3128",
        ),
        (
            Section::Proxy,
            None,
            FieldId::NoProxy,
            "localhost, .store.example",
        ),
        (Section::Kubernetes, None, FieldId::PodCidr, "10.42.0.0/16"),
        (
            Section::Console,
            None,
            FieldId::ConsoleEndpoint,
            "https://console.example",
        ),
        (Section::Console, None, FieldId::ConsoleToken, "tok-1"),
        (Section::Users, Some(0), FieldId::UserName, "admin"),
        (Section::Users, Some(0), FieldId::UserGroups, "adm, plugdev"),
        (Section::Users, Some(0), FieldId::UserSudo, "yes"),
    ];
    for (section, entry, id, text) in cases {
        let p = page(*section, *entry);
        set(&mut doc, p, *id, text).unwrap();
        assert_eq!(value(&doc, p, *id), *text, "{id:?}");
    }
    assert_eq!(doc.network.as_ref().unwrap().interfaces[0].mtu, Some(9000));
    assert_eq!(
        doc.proxy.as_ref().unwrap().no_proxy,
        vec!["localhost", ".store.example"]
    );
    assert_eq!(doc.appliance.as_ref().unwrap().labels["store"], "42");
    assert!(doc.users[0].sudo);
}

#[test]
fn texts_that_cannot_be_read_change_nothing_and_say_why() {
    let mut doc = load("network:\n  interfaces: [{name: eth0, dhcp: true, mtu: 1500}]\nappliance: {labels: {a: b}}\n");
    let before = doc.clone();
    let net = page(Section::Network, Some(0));
    assert!(set(&mut doc, net, FieldId::IfaceMtu, "big")
        .unwrap_err()
        .contains("whole number"));
    assert!(set(
        &mut doc,
        page(Section::Appliance, None),
        FieldId::ApplianceLabels,
        "a=b, c"
    )
    .unwrap_err()
    .contains("key=value"));
    assert!(set(&mut doc, net, FieldId::IfaceDhcp, "maybe").is_err());
    assert_eq!(doc, before);
}

#[test]
fn settings_the_pages_do_not_show_are_kept() {
    let text = "hostname: a\nnetwork:\n  interfaces:\n    - name: eth0\n      addresses: [10.0.0.2/24]\n      routes: [{to: 10.9.0.0/16, via: 10.0.0.1}]\n      vlans: [{id: 7, dhcp: true}]\nkubernetes: {taints: [\"a=b:NoSchedule\"], extra_args: [\"--x=y\"]}\nssh: {port: 2222}\nwrite_files: [{path: /etc/motd, content: hi}]\n";
    let mut doc = load(text);
    let original = doc.clone();
    set(
        &mut doc,
        page(Section::Network, Some(0)),
        FieldId::IfaceAddresses,
        "10.0.0.3/24",
    )
    .unwrap();
    set(
        &mut doc,
        page(Section::Kubernetes, None),
        FieldId::PodCidr,
        "10.42.0.0/16",
    )
    .unwrap();
    set(&mut doc, page(Section::Host, None), FieldId::Hostname, "b").unwrap();
    let iface = &doc.network.as_ref().unwrap().interfaces[0];
    assert_eq!(
        iface.routes,
        original.network.as_ref().unwrap().interfaces[0].routes
    );
    assert_eq!(iface.vlans.len(), 1);
    let k = doc.kubernetes.as_ref().unwrap();
    assert_eq!((k.taints.len(), k.extra_args.len()), (1, 1));
    assert_eq!(doc.ssh, original.ssh);
    assert_eq!(doc.write_files, original.write_files);
}

#[test]
fn emptied_sections_are_dropped_and_untouched_empty_ones_stay() {
    let mut doc = load("proxy: {http_proxy: \"http://p:3128\"}\nkubernetes: {}\n");
    set(&mut doc, page(Section::Proxy, None), FieldId::HttpProxy, "").unwrap();
    assert_eq!(doc.proxy, None);
    assert!(
        doc.kubernetes.is_some(),
        "a section the operator did not touch stays"
    );
}

#[test]
fn registries_are_renamed_with_their_mirrors_and_login() {
    let mut doc = load("registries:\n  mirrors: {docker.io: [\"https://m.example\"]}\n  configs: {docker.io: {username: u}}\n");
    let p = page(Section::Registries, Some(0));
    set(&mut doc, p, FieldId::RegistryHost, "registry.store.example").unwrap();
    let r = doc.registries.as_ref().unwrap();
    assert_eq!(
        r.mirrors.keys().collect::<Vec<_>>(),
        vec!["registry.store.example"]
    );
    assert_eq!(
        r.configs["registry.store.example"].username.as_deref(),
        Some("u")
    );
    // A second registry cannot take the same name.
    let i = add_entry(&mut doc, Section::Registries).unwrap();
    let err = set(
        &mut doc,
        page(Section::Registries, Some(i)),
        FieldId::RegistryHost,
        "registry.store.example",
    );
    assert!(err.is_err());
    assert!(
        add_entry(&mut doc, Section::Registries).is_err(),
        "the unnamed one first"
    );
}

#[test]
fn ssh_keys_are_added_changed_and_removed_one_field_each() {
    let mut doc = Unattended::default();
    let i = add_entry(&mut doc, Section::Users).unwrap();
    let p = page(Section::Users, Some(i));
    set(&mut doc, p, FieldId::UserKey(0), "ssh-ed25519 AAAA a").unwrap();
    set(&mut doc, p, FieldId::UserKey(1), "ssh-ed25519 BBBB b").unwrap();
    assert_eq!(doc.users[0].ssh_authorized_keys.len(), 2);
    let labels: Vec<String> = fields(&doc, p).into_iter().map(|f| f.label).collect();
    assert!(
        labels.contains(&"SSH key 2".to_string()) && labels.contains(&"New SSH key".to_string())
    );
    set(&mut doc, p, FieldId::UserKey(0), "").unwrap();
    assert_eq!(doc.users[0].ssh_authorized_keys, vec!["ssh-ed25519 BBBB b"]);
    remove_entry(&mut doc, Section::Users, 0);
    assert!(doc.users.is_empty());
}
