//! Renders a checked `unattended.yaml` into the files it stands for: a pure function from the
//! document and what the slot holds (its pristine account files, its flavour, its Kubernetes
//! distro) to a list of files, symlinks and directories under /etc and /var. Nothing here
//! touches the disk; the transaction (`txn`) writes the result.
//!
//! Architecture invariant: the same inputs give the same bytes (no clock, no randomness, sorted
//! maps), so a second boot can tell that nothing changed.

mod accounts;
mod kubernetes;
mod network;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use base64::Engine as _;
use p6os_config::unattended::{Encoding, Unattended};
use serde_json::json;

/// What kind of init the slot runs, which decides the form of network, proxy and time settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// The agent is PID 1: it configures interfaces from `/etc/p6os/network.json` itself.
    Minimal,
    /// systemd: systemd-networkd, -resolved and -timesyncd files, manager drop-ins.
    Systemd,
}

/// The Kubernetes distro layer of the slot, which decides where `kubernetes` and `registries`
/// go. Found by `read_base` from the slot's files: `/usr/local/bin/k3s` means k3s (which
/// bundles its own containerd), else `/usr/bin/containerd` means containerd alone, else none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distro {
    /// No container runtime: the settings are kept under /etc/p6os for a later layer.
    None,
    /// Debian's containerd (1.6) and runc, no kubelet: `/etc/containerd/config.toml` and
    /// `/etc/containerd/certs.d/HOST/hosts.toml`.
    Containerd,
    /// k3s (`k3s.service`): `/etc/rancher/k3s/config.yaml` and `registries.yaml`.
    K3s,
}

/// What the renderer needs to know about the slot.
#[derive(Debug, Clone)]
pub struct Base {
    pub flavor: Flavor,
    /// The slot's own /etc/passwd, /etc/group and /etc/shadow (empty if absent).
    pub passwd: String,
    pub group: String,
    pub shadow: String,
    /// Login shell for new users (`/bin/bash` when the slot has it).
    pub shell: String,
    /// Whether the slot has an SSH daemon (`/usr/sbin/sshd`).
    pub has_sshd: bool,
    /// The machine id: the default appliance id.
    pub machine_id: String,
    /// The Kubernetes distro the slot carries.
    pub kubernetes: Distro,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    File(Vec<u8>),
    Symlink(String),
    Dir,
}

/// One target: an absolute path under /etc or /var with owner and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: String,
    pub content: Content,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Sorted by path; a directory comes before what it holds.
    pub targets: Vec<Target>,
    /// Settings that this base cannot apply (logged as warnings, not errors).
    pub notes: Vec<String>,
}

impl Rendered {
    /// One line per target (contents by size only): for golden tests.
    #[cfg(test)]
    pub fn listing(&self) -> String {
        let mut out = String::new();
        for t in &self.targets {
            let what = match &t.content {
                Content::File(bytes) => format!("file {} bytes", bytes.len()),
                Content::Symlink(to) => format!("symlink -> {to}"),
                Content::Dir => "dir".to_string(),
            };
            out.push_str(&format!(
                "{:04o} {}:{} {} ({what})\n",
                t.mode, t.uid, t.gid, t.path
            ));
        }
        out
    }
}

pub const HEADER: &str =
    "# Written by p6os-agent from unattended.yaml; changes here are replaced on the next apply.\n";
pub const NETWORK_JSON: &str = "/etc/p6os/network.json";

/// Collects targets; a path given twice is a conflict.
#[derive(Default)]
struct Out {
    targets: BTreeMap<String, Target>,
    notes: Vec<String>,
    errors: Vec<String>,
}

impl Out {
    fn file(&mut self, path: &str, content: impl Into<Vec<u8>>, mode: u32) {
        self.add(Target {
            path: path.to_string(),
            content: Content::File(content.into()),
            mode,
            uid: 0,
            gid: 0,
        });
    }

    fn add(&mut self, target: Target) {
        if self.targets.contains_key(&target.path) {
            if target.content != Content::Dir {
                self.errors.push(format!(
                    "{} would be written twice (write_files overlaps a setting the agent renders)",
                    target.path
                ));
            }
            return;
        }
        self.targets.insert(target.path.clone(), target);
    }
}

/// Renders `doc` for `base`. Errors are problems only visible against the slot (a
/// `write_files` owner that does not exist, a path written twice): the document is then
/// refused as a whole, like a validation error.
pub fn render(doc: &Unattended, base: &Base) -> Result<Rendered, Vec<String>> {
    let mut out = Out::default();
    let accounts = accounts::render(doc, base, &mut out);
    if let Some(h) = &doc.hostname {
        out.file("/etc/hostname", format!("{h}\n"), 0o644);
        let short = h.split('.').next().unwrap_or(h);
        let names = if short == h {
            h.clone()
        } else {
            format!("{h} {short}")
        };
        out.file(
            "/etc/hosts",
            format!(
                "{HEADER}127.0.0.1\tlocalhost\n127.0.1.1\t{names}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            ),
            0o644,
        );
    }
    if let Some(tz) = &doc.timezone {
        out.file("/etc/timezone", format!("{tz}\n"), 0o644);
        out.add(Target {
            path: "/etc/localtime".into(),
            content: Content::Symlink(format!("/usr/share/zoneinfo/{tz}")),
            mode: 0o777,
            uid: 0,
            gid: 0,
        });
    }
    if let Some(ntp) = doc.ntp.as_ref().filter(|n| !n.servers.is_empty()) {
        match base.flavor {
            Flavor::Systemd => out.file(
                "/etc/systemd/timesyncd.conf.d/p6os.conf",
                format!("{HEADER}[Time]\nNTP={}\n", ntp.servers.join(" ")),
                0o644,
            ),
            Flavor::Minimal => out
                .notes
                .push("ntp: the minimal base has no time daemon; servers not used".into()),
        }
    }
    if let Some(ssh) = &doc.ssh {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let mut text = format!(
            "{HEADER}PasswordAuthentication {}\nKbdInteractiveAuthentication no\nPermitRootLogin {}\n",
            yes_no(ssh.password_authentication),
            if ssh.permit_root_login { "prohibit-password" } else { "no" },
        );
        if let Some(port) = ssh.port {
            text.push_str(&format!("Port {port}\n"));
        }
        out.file("/etc/ssh/sshd_config.d/p6os.conf", text, 0o644);
        if !base.has_sshd {
            out.notes
                .push("ssh: this slot has no SSH daemon; settings written for later".into());
        }
    }
    if let Some(net) = &doc.network {
        network::render(net, base.flavor, &mut out);
    }
    if let Some(proxy) = &doc.proxy {
        proxy_files(proxy, base.flavor, &mut out);
    }
    kubernetes::render(doc, base.kubernetes, &mut out);
    if let Some(console) = &doc.console {
        let value = json!({
            "endpoint": console.endpoint,
            "token": console.token.expose(),
            "ca": console.ca,
        });
        out.file("/etc/p6os/console.json", pretty(&value), 0o600);
    }
    let appliance = doc.appliance.clone().unwrap_or_default();
    let value = json!({
        "id": appliance.id.unwrap_or_else(|| base.machine_id.clone()),
        "name": appliance.name,
        "labels": appliance.labels,
    });
    out.file("/etc/p6os/appliance.json", pretty(&value), 0o644);
    for (i, f) in doc.write_files.iter().enumerate() {
        if let Some(dir) = crate::plan::DATA_DIRS
            .iter()
            .find(|d| f.path == **d || f.path.starts_with(&format!("{d}/")))
        {
            // Those directories are bound from the state partition over the /var overlay:
            // a file written into the overlay there would never be seen.
            out.errors.push(format!(
                "write_files[{i}] ({}): {dir} belongs to the container runtime and lives outside the /var overlay; it cannot be written by unattended.yaml",
                f.path
            ));
            continue;
        }
        let bytes = match f.encoding {
            Encoding::Plain => f.content.clone().into_bytes(),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(p6os_config::unattended::strip_whitespace(&f.content))
                .unwrap_or_default(),
        };
        let mode = f
            .permissions
            .as_deref()
            .and_then(|p| u32::from_str_radix(p, 8).ok())
            .unwrap_or(0o644);
        let (uid, gid) = match accounts.owner(f.owner.as_deref().unwrap_or("root:root")) {
            Ok(ids) => ids,
            Err(e) => {
                out.errors
                    .push(format!("write_files[{i}] ({}): {e}", f.path));
                continue;
            }
        };
        out.add(Target {
            path: f.path.clone(),
            content: Content::File(bytes),
            mode,
            uid,
            gid,
        });
    }
    if !out.errors.is_empty() {
        return Err(out.errors);
    }
    Ok(Rendered {
        targets: out.targets.into_values().collect(),
        notes: out.notes,
    })
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

fn proxy_files(p: &p6os_config::unattended::Proxy, flavor: Flavor, out: &mut Out) {
    let mut vars: Vec<(&str, String)> = Vec::new();
    if let Some(v) = &p.http_proxy {
        vars.push(("http_proxy", v.clone()));
        vars.push(("HTTP_PROXY", v.clone()));
    }
    if let Some(v) = &p.https_proxy {
        vars.push(("https_proxy", v.clone()));
        vars.push(("HTTPS_PROXY", v.clone()));
    }
    if !p.no_proxy.is_empty() {
        let list = p.no_proxy.join(",");
        vars.push(("no_proxy", list.clone()));
        vars.push(("NO_PROXY", list));
    }
    if vars.is_empty() {
        return;
    }
    // A proxy URL with user:password is a secret: then only root may read the files.
    let secret = [&p.http_proxy, &p.https_proxy]
        .iter()
        .any(|v| v.as_deref().is_some_and(|u| u.contains('@')));
    let mode = if secret { 0o600 } else { 0o644 };
    let mut env = String::from(HEADER);
    let mut profile = String::from(HEADER);
    let mut manager = format!("{HEADER}[Manager]\n");
    for (k, v) in &vars {
        env.push_str(&format!("{k}={v}\n"));
        profile.push_str(&format!("export {k}='{}'\n", v.replace('\'', "'\\''")));
        manager.push_str(&format!("DefaultEnvironment=\"{k}={v}\"\n"));
    }
    out.file("/etc/environment", env, mode);
    out.file("/etc/profile.d/p6os-proxy.sh", profile, mode);
    if flavor == Flavor::Systemd {
        // Every service (containerd, the Kubernetes distro) inherits the manager's environment.
        out.file("/etc/systemd/system.conf.d/p6os-proxy.conf", manager, mode);
    }
}

/// A YAML double-quoted scalar that YAML 1.1 and 1.2 parsers read back as `s`: `\"`, `\\`,
/// `\n`, `\t`, `\r`, and `\uXXXX` for every other character YAML does not allow raw (C0 and
/// C1 controls, DEL, U+FEFF, U+FFFE, U+FFFF) or reads as a line break (U+0085, U+2028, U+2029).
/// The same as a JSON string for printable text.
fn yaml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{20}'..='\u{7e}' => out.push(c),
            '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..
                if !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') =>
            {
                out.push(c)
            }
            _ => out.push_str(&format!("\\u{:04x}", c as u32)),
        }
    }
    out.push('"');
    out
}

fn ensure_newline(s: &str) -> String {
    if s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}
