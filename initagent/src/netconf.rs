//! The minimal base's network set-up as data: from `/etc/p6os/network.json` (the checked
//! `network` section of unattended.yaml) and the interfaces present, the steps `net` runs.
//!
//! Pure. DHCP and VLANs are not handled here (the minimal base has no DHCP client); the
//! renderer has already noted that when the configuration was applied.

use std::net::IpAddr;

use p6os_config::unattended::{parse_cidr, IpNet, Network};

/// An interface as the kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    /// Lowercase `aa:bb:...`.
    pub mac: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetStep {
    SetMtu {
        dev: String,
        mtu: u16,
    },
    Up {
        dev: String,
    },
    /// `label` is the ioctl name (`eth0`, `eth0:1` for a second IPv4 address); `cidr` is the
    /// address with its prefix (host bits set).
    AddAddress {
        dev: String,
        label: String,
        cidr: IpNet,
    },
    /// `to` is a network (no host bits: the kernel refuses an IPv4 route with them).
    AddRoute {
        dev: String,
        to: IpNet,
        via: IpAddr,
    },
}

impl std::fmt::Display for NetStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetStep::SetMtu { dev, mtu } => write!(f, "{dev}: mtu {mtu}"),
            NetStep::Up { dev } => write!(f, "{dev}: up"),
            NetStep::AddAddress { dev, cidr, .. } => write!(f, "{dev}: address {cidr}"),
            NetStep::AddRoute { dev, to, via } => write!(f, "{dev}: route {to} via {via}"),
        }
    }
}

/// The plan, plus problems (an interface that is not there) to log.
pub fn plan(net: &Network, links: &[Link]) -> (Vec<NetStep>, Vec<String>) {
    let mut steps = vec![NetStep::Up { dev: "lo".into() }];
    let mut problems = Vec::new();
    for (i, iface) in net.interfaces.iter().enumerate() {
        let found = links.iter().find(|l| {
            iface.name.as_ref().is_none_or(|n| &l.name == n)
                && iface
                    .mac
                    .as_ref()
                    .is_none_or(|m| l.mac.eq_ignore_ascii_case(m))
        });
        let Some(link) = found else {
            let what = match (&iface.name, &iface.mac) {
                (Some(n), Some(m)) => format!("{n} with MAC {m}"),
                (Some(n), None) => n.clone(),
                (None, Some(m)) => format!("MAC {m}"),
                (None, None) => format!("interfaces[{i}]"),
            };
            let seen: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
            problems.push(format!(
                "network: no interface {what} (present: {})",
                seen.join(", ")
            ));
            continue;
        };
        let dev = link.name.clone();
        if let Some(mtu) = iface.mtu {
            steps.push(NetStep::SetMtu {
                dev: dev.clone(),
                mtu,
            });
        }
        steps.push(NetStep::Up { dev: dev.clone() });
        let mut v4 = 0;
        for a in &iface.addresses {
            let Some(cidr) = parse_cidr(a) else { continue };
            let label = if cidr.addr().is_ipv4() {
                v4 += 1;
                if v4 == 1 {
                    dev.clone()
                } else {
                    format!("{dev}:{}", v4 - 1)
                }
            } else {
                dev.clone()
            };
            steps.push(NetStep::AddAddress {
                dev: dev.clone(),
                label,
                cidr,
            });
        }
        if let Some(gw) = iface
            .gateway
            .as_ref()
            .and_then(|g| g.parse::<IpAddr>().ok())
        {
            let any = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
            if let Some(to) = parse_cidr(any) {
                steps.push(NetStep::AddRoute {
                    dev: dev.clone(),
                    to,
                    via: gw,
                });
            }
        }
        for r in &iface.routes {
            if let (Some(to), Ok(via)) = (parse_cidr(&r.to), r.via.parse::<IpAddr>()) {
                steps.push(NetStep::AddRoute {
                    dev: dev.clone(),
                    to: to.trunc(),
                    via,
                });
            }
        }
    }
    (steps, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p6os_config::unattended::{Interface, Route};

    fn links() -> Vec<Link> {
        vec![
            Link {
                name: "lo".into(),
                mac: "00:00:00:00:00:00".into(),
            },
            Link {
                name: "eth0".into(),
                mac: "52:54:00:12:34:56".into(),
            },
        ]
    }

    fn lines(steps: &[NetStep]) -> Vec<String> {
        steps.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn static_address_gateway_and_routes() {
        let net = Network {
            interfaces: vec![Interface {
                mac: Some("52:54:00:12:34:56".into()),
                addresses: vec![
                    "10.0.2.15/24".into(),
                    "10.0.3.1/24".into(),
                    "fd00::5/64".into(),
                ],
                gateway: Some("10.0.2.2".into()),
                routes: vec![
                    Route {
                        to: "172.16.0.0/12".into(),
                        via: "10.0.2.1".into(),
                    },
                    // Host bits in a destination: the route is to its network.
                    Route {
                        to: "192.168.7.9/16".into(),
                        via: "10.0.2.1".into(),
                    },
                ],
                mtu: Some(1400),
                ..Interface::default()
            }],
            dns: None,
        };
        let (steps, problems) = plan(&net, &links());
        assert!(problems.is_empty());
        assert_eq!(
            lines(&steps),
            [
                "lo: up",
                "eth0: mtu 1400",
                "eth0: up",
                "eth0: address 10.0.2.15/24",
                "eth0: address 10.0.3.1/24",
                "eth0: address fd00::5/64",
                "eth0: route 0.0.0.0/0 via 10.0.2.2",
                "eth0: route 172.16.0.0/12 via 10.0.2.1",
                "eth0: route 192.168.0.0/16 via 10.0.2.1",
            ]
        );
        let labels: Vec<&str> = steps
            .iter()
            .filter_map(|s| match s {
                NetStep::AddAddress { label, .. } => Some(label.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(labels, ["eth0", "eth0:1", "eth0"]);
    }

    #[test]
    fn missing_interfaces_are_reported_and_skipped() {
        let net = Network {
            interfaces: vec![
                Interface {
                    name: Some("eth9".into()),
                    addresses: vec!["10.0.0.1/8".into()],
                    ..Interface::default()
                },
                Interface {
                    name: Some("eth0".into()),
                    mac: Some("52:54:00:00:00:01".into()),
                    ..Interface::default()
                },
            ],
            dns: None,
        };
        let (steps, problems) = plan(&net, &links());
        assert_eq!(lines(&steps), ["lo: up"]);
        assert_eq!(problems.len(), 2);
        assert!(problems[0].contains("no interface eth9 (present: lo, eth0)"));
        assert!(problems[1].contains("eth0 with MAC 52:54:00:00:00:01"));
    }
}
