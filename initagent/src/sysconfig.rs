//! Service mode on the minimal base: puts the applied configuration into effect at every
//! boot (systemd does this itself on systemd bases): host name, network, and the system
//! environment (`/etc/environment`, e.g. proxies) for the processes the agent starts.

use std::fs;
use std::io;

use p6os_config::unattended::Network;

use crate::firstboot::render::NETWORK_JSON;
use crate::{net, netconf};

const HOSTNAME: &str = "/etc/hostname";
const ENVIRONMENT: &str = "/etc/environment";

pub fn apply_hostname() {
    let name = match fs::read_to_string(HOSTNAME) {
        Ok(text) => text.trim().to_string(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            warn!("cannot read {HOSTNAME}: {e}");
            return;
        }
    };
    if name.is_empty() {
        return;
    }
    match rustix::system::sethostname(name.as_bytes()) {
        Ok(()) => info!("host name {name}"),
        Err(e) => warn!("cannot set the host name to {name}: {e}"),
    }
}

pub fn apply_network() {
    let text = match fs::read(NETWORK_JSON) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            warn!("cannot read {NETWORK_JSON}: {e}");
            return;
        }
    };
    let network: Network = match serde_json::from_slice(&text) {
        Ok(n) => n,
        Err(e) => {
            warn!("{NETWORK_JSON}: {e}; network not configured");
            return;
        }
    };
    let (steps, problems) = netconf::plan(&network, &net::links());
    for p in problems {
        warn!("{p}");
    }
    for step in steps {
        match net::run(&step) {
            Ok(()) => info!("network {step}"),
            // Re-running on an already configured interface (a service restart).
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => info!("network {step} (present)"),
            Err(e) => warn!("network {step}: {e}"),
        }
    }
}

/// `/etc/environment` for the shell and other children; absent means empty.
pub fn environment() -> Vec<(String, String)> {
    match fs::read_to_string(ENVIRONMENT) {
        Ok(text) => parse_environment(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            warn!("cannot read {ENVIRONMENT}: {e}");
            Vec::new()
        }
    }
}

/// pam_env's simple form: `KEY=value` lines, `#` comments, optional quotes around the value.
pub fn parse_environment(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let valid_key = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_key {
                return None;
            }
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_lines() {
        let text =
            "# comment\nhttp_proxy=http://p:3128\nexport A=\"b c\"\nB='x'\n\n1X=no\nbad line\n=v\n";
        assert_eq!(
            parse_environment(text),
            [
                ("http_proxy".to_string(), "http://p:3128".to_string()),
                ("A".into(), "b c".into()),
                ("B".into(), "x".into()),
            ]
        );
    }
}
