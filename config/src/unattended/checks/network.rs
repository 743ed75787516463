//! `network`: interfaces by name or MAC, static addresses or DHCP, the gateway inside an
//! address's network, routes, MTU, VLANs, DNS.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{at, k, Check};
use crate::unattended::syntax::{parse_cidr, valid_hostname, valid_interface_name, valid_mac};
use crate::unattended::types::Network;
use crate::yamlcheck::Seg;

impl Check<'_> {
    pub(super) fn network(&mut self, n: &Network) {
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
                if !valid_interface_name(name) {
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
                    Ok(ip) if !nets.is_empty() && !nets.iter().any(|c| c.contains(&ip)) => self
                        .err(
                            at(&base, &[k("gateway")]),
                            format!("gateway {gw} is outside every address's network"),
                            None,
                        ),
                    Ok(_) => {}
                }
            }
            for (j, r) in iface.routes.iter().enumerate() {
                if parse_cidr(&r.to).is_none() {
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

    /// Interface addresses with their prefixes (host bits set: they are addresses); the ones
    /// that parse, for the gateway check.
    fn addresses(&mut self, base: &[Seg], list: &[String]) -> Vec<IpNet> {
        let mut out = Vec::new();
        for (i, a) in list.iter().enumerate() {
            match parse_cidr(a) {
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
}
