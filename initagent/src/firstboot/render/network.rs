//! `network` in the form the base uses: on the minimal base, `/etc/p6os/network.json` (the
//! checked section, applied by the agent's service mode) and `/etc/resolv.conf`; on systemd
//! bases, systemd-networkd `.network`/`.netdev` files and a systemd-resolved drop-in.

use p6os_config::unattended::{Interface, Network};

use super::{Flavor, Out, HEADER, NETWORK_JSON};

pub fn render(net: &Network, flavor: Flavor, out: &mut Out) {
    match flavor {
        Flavor::Minimal => minimal(net, out),
        Flavor::Systemd => systemd(net, out),
    }
}

fn minimal(net: &Network, out: &mut Out) {
    let text = serde_json::to_string_pretty(net).unwrap_or_default() + "\n";
    out.file(NETWORK_JSON, text, 0o644);
    if let Some(dns) = &net.dns {
        let mut text = String::from(HEADER);
        for s in &dns.servers {
            text.push_str(&format!("nameserver {s}\n"));
        }
        if !dns.search.is_empty() {
            text.push_str(&format!("search {}\n", dns.search.join(" ")));
        }
        out.file("/etc/resolv.conf", text, 0o644);
    }
    for (i, iface) in net.interfaces.iter().enumerate() {
        let name = describe(i, iface);
        if iface.dhcp || iface.vlans.iter().any(|v| v.dhcp) {
            out.notes.push(format!(
                "network: {name}: DHCP is not available on the minimal base (no DHCP client); \
                 only static addresses are configured"
            ));
        }
        if !iface.vlans.is_empty() {
            out.notes.push(format!(
                "network: {name}: VLANs are not configured on the minimal base"
            ));
        }
    }
}

fn describe(i: usize, iface: &Interface) -> String {
    match (&iface.name, &iface.mac) {
        (Some(n), _) => n.clone(),
        (None, Some(m)) => format!("interface {m}"),
        (None, None) => format!("interfaces[{i}]"),
    }
}

/// Name of a VLAN device: `<parent>.<id>` when that fits in 15 bytes, else `vlan<i>.<id>`.
fn vlan_name(i: usize, iface: &Interface, id: u16) -> String {
    match &iface.name {
        Some(n) if n.len() + 1 + id.to_string().len() <= 15 => format!("{n}.{id}"),
        _ => format!("vlan{i}.{id}"),
    }
}

fn systemd(net: &Network, out: &mut Out) {
    for (i, iface) in net.interfaces.iter().enumerate() {
        let mut text = format!("{HEADER}[Match]\n");
        if let Some(mac) = &iface.mac {
            text.push_str(&format!("MACAddress={}\n", mac.to_ascii_lowercase()));
        }
        if let Some(name) = &iface.name {
            text.push_str(&format!("Name={name}\n"));
        }
        if let Some(mtu) = iface.mtu {
            text.push_str(&format!("\n[Link]\nMTUBytes={mtu}\n"));
        }
        text.push_str("\n[Network]\n");
        text.push_str(if iface.dhcp {
            "DHCP=yes\n"
        } else {
            "DHCP=no\n"
        });
        for a in &iface.addresses {
            text.push_str(&format!("Address={a}\n"));
        }
        if let Some(gw) = &iface.gateway {
            text.push_str(&format!("Gateway={gw}\n"));
        }
        for v in &iface.vlans {
            text.push_str(&format!("VLAN={}\n", vlan_name(i, iface, v.id)));
        }
        for r in &iface.routes {
            text.push_str(&format!(
                "\n[Route]\nDestination={}\nGateway={}\n",
                r.to, r.via
            ));
        }
        out.file(
            &format!("/etc/systemd/network/10-p6os-{i}.network"),
            text,
            0o644,
        );
        for v in &iface.vlans {
            let name = vlan_name(i, iface, v.id);
            out.file(
                &format!("/etc/systemd/network/10-p6os-{i}-vlan{}.netdev", v.id),
                format!(
                    "{HEADER}[NetDev]\nName={name}\nKind=vlan\n\n[VLAN]\nId={}\n",
                    v.id
                ),
                0o644,
            );
            let mut text = format!("{HEADER}[Match]\nName={name}\n\n[Network]\n");
            text.push_str(if v.dhcp { "DHCP=yes\n" } else { "DHCP=no\n" });
            for a in &v.addresses {
                text.push_str(&format!("Address={a}\n"));
            }
            out.file(
                &format!("/etc/systemd/network/10-p6os-{i}-vlan{}.network", v.id),
                text,
                0o644,
            );
        }
    }
    if let Some(dns) = &net.dns {
        let mut text = format!("{HEADER}[Resolve]\n");
        if !dns.servers.is_empty() {
            text.push_str(&format!("DNS={}\n", dns.servers.join(" ")));
        }
        if !dns.search.is_empty() {
            text.push_str(&format!("Domains={}\n", dns.search.join(" ")));
        }
        out.file("/etc/systemd/resolved.conf.d/p6os.conf", text, 0o644);
    }
}
