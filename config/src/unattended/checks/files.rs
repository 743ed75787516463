//! `write_files`: where a file may go (the writable overlays, not the agent's own files, once
//! each), its encoding, mode and owner.

use base64::Engine as _;

use super::{at, k, Check};
use crate::unattended::syntax::{
    in_writable_overlay, strip_whitespace, valid_octal_mode, valid_owner,
};
use crate::unattended::types::{Encoding, WriteFile};
use crate::yamlcheck::Seg;

impl Check<'_> {
    pub(super) fn write_files(&mut self, files: &[WriteFile]) {
        for (i, f) in files.iter().enumerate() {
            let base = vec![k("write_files"), Seg::Index(i)];
            if !in_writable_overlay(&f.path) {
                self.err(
                    at(&base, &[k("path")]),
                    format!("`{}` is outside the writable overlays", f.path),
                    Some("a file under /etc or /var (the rest of the system is read-only)"),
                );
            } else if let Some((what, hint)) = agent_file(&f.path, self.sections) {
                self.err(
                    at(&base, &[k("path")]),
                    format!("`{}` is {what}", f.path),
                    Some(hint),
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
                if !valid_octal_mode(p) {
                    self.err(
                        at(&base, &[k("permissions")]),
                        format!("`{p}` is not an octal mode"),
                        Some("quote it, e.g. \"0644\""),
                    );
                }
            }
            if let Some(o) = &f.owner {
                if !valid_owner(o) {
                    self.err(
                        at(&base, &[k("owner")]),
                        format!("`{o}` is not user[:group]"),
                        None,
                    );
                }
            }
        }
    }
}

/// Which sections of the document are set, for [`agent_file`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Sections {
    pub hostname: bool,
    pub timezone: bool,
    pub ssh: bool,
    pub proxy: bool,
    pub console: bool,
}

/// A `write_files` path the agent owns (its state) or writes itself from a section that is
/// set: what it is, and the setting to use instead.
fn agent_file(path: &str, set: Sections) -> Option<(&'static str, &'static str)> {
    if path.starts_with("/var/lib/p6os/") {
        return Some((
            "the agent's own state (identity, applied configuration, upgrades)",
            "nothing else may write there; the sections of this file are how to change what the agent does",
        ));
    }
    let rendered: &[(&str, bool, &str, &str)] = &[
        (
            "/etc/passwd",
            true,
            "the accounts database, written by the agent",
            "list accounts in `users` (name, groups, ssh_authorized_keys, passwd, sudo)",
        ),
        (
            "/etc/shadow",
            true,
            "the password database, written by the agent",
            "give `users[].passwd` a crypt hash (`mkpasswd -m yescrypt`)",
        ),
        (
            "/etc/group",
            true,
            "the groups database, written by the agent",
            "list the groups in `users[].groups`",
        ),
        (
            "/etc/gshadow",
            true,
            "the groups database, written by the agent",
            "list the groups in `users[].groups`",
        ),
        (
            "/etc/hostname",
            set.hostname,
            "written by the agent from `hostname`",
            "set `hostname` alone",
        ),
        (
            "/etc/hosts",
            set.hostname,
            "written by the agent from `hostname`",
            "set `hostname` alone, or leave `hostname` out to write /etc/hosts yourself",
        ),
        (
            "/etc/timezone",
            set.timezone,
            "written by the agent from `timezone`",
            "set `timezone` alone",
        ),
        (
            "/etc/localtime",
            set.timezone,
            "written by the agent from `timezone`",
            "set `timezone` alone",
        ),
        (
            "/etc/ssh/sshd_config.d/p6os.conf",
            set.ssh,
            "written by the agent from `ssh`",
            "set the `ssh` section, or write another file in /etc/ssh/sshd_config.d",
        ),
        (
            "/etc/environment",
            set.proxy,
            "written by the agent from `proxy`",
            "set the `proxy` section alone",
        ),
        (
            "/etc/profile.d/p6os-proxy.sh",
            set.proxy,
            "written by the agent from `proxy`",
            "set the `proxy` section alone",
        ),
        (
            "/etc/systemd/system.conf.d/p6os-proxy.conf",
            set.proxy,
            "written by the agent from `proxy`",
            "set the `proxy` section alone",
        ),
        (
            "/etc/p6os/console.json",
            set.console,
            "written by the agent from `console`",
            "set the `console` section",
        ),
        (
            "/etc/p6os/appliance.json",
            true,
            "written by the agent from `appliance`",
            "set the `appliance` section (id, name, labels)",
        ),
    ];
    rendered
        .iter()
        .find(|(p, when, _, _)| *p == path && *when)
        .map(|(_, _, what, hint)| (*what, *hint))
}
