//! `kubernetes` (pod and service ranges apart, the cluster DNS among the services, node name,
//! taints) and `registries` (mirror URLs, credentials, CAs).

use std::net::IpAddr;

use ipnet::IpNet;

use super::{k, Check};
use crate::unattended::syntax::{overlaps, parse_cidr, valid_hostname};
use crate::unattended::types::{Kubernetes, Registries};
use crate::yamlcheck::Seg;

impl Check<'_> {
    pub(super) fn kubernetes(&mut self, kube: &Kubernetes) {
        let cidr = |c: &mut Self, field: &str, v: &Option<String>| -> Option<IpNet> {
            let v = v.as_ref()?;
            let parsed = parse_cidr(v);
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
            if overlaps(&p, &s) {
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
                Ok(ip) if services.is_some_and(|s| !s.contains(&ip)) => self.err(
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

    pub(super) fn registries(&mut self, r: &Registries) {
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
}
