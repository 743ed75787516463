//! The semantic checks of a document whose shape is right: one file per section (`accounts`,
//! `network`, `kubernetes` with the registries, `console` with the appliance, `files`), the
//! small top-level fields here. Each problem becomes a diagnostic at its place in the YAML;
//! none stops the others.

mod accounts;
mod console;
mod files;
mod kubernetes;
mod network;

use std::net::IpAddr;
use std::path::Path;

use super::syntax::{
    is_pem_certificate, parse_http_url, redact_userinfo, valid_hostname, valid_timezone,
};
use super::types::Unattended;
use crate::diag::Diagnostics;
use crate::yamlcheck::{diagnostic_at, Seg};

/// Every problem of `u`, placed in `tree` (the YAML it was read from).
pub(super) fn check(file: &Path, tree: &marked_yaml::Node, u: &Unattended) -> Diagnostics {
    let mut c = Check {
        file,
        tree,
        diags: Diagnostics::default(),
        sections: files::Sections {
            hostname: u.hostname.is_some(),
            timezone: u.timezone.is_some(),
            ssh: u.ssh.is_some(),
            proxy: u.proxy.is_some(),
            console: u.console.is_some(),
        },
    };
    c.document(u);
    c.diags
}

struct Check<'a> {
    file: &'a Path,
    tree: &'a marked_yaml::Node,
    diags: Diagnostics,
    /// Which sections are set (the files the agent writes from them).
    sections: files::Sections,
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
            if !valid_timezone(tz) {
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
            self.registries(r);
        }
        if let Some(c) = &u.console {
            self.console(c);
        }
        self.write_files(&u.write_files);
    }

    /// An http(s) URL; the message never shows its userinfo (it may carry a password).
    fn url(&mut self, path: Vec<Seg>, url: &str) {
        if parse_http_url(url).is_none() {
            self.err(
                path,
                format!("`{}` is not an http(s) URL", redact_userinfo(url)),
                Some("e.g. https://host.example:8443/path"),
            );
        }
    }

    fn pem(&mut self, path: Vec<Seg>, pem: &str) {
        if !is_pem_certificate(pem) {
            self.err(
                path,
                "not a PEM certificate",
                Some("paste the whole -----BEGIN CERTIFICATE----- block"),
            );
        }
    }
}
