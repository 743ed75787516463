//! Health checks that gate the blessing of a new slot: declared in the recipe (`upgrades.health`),
//! baked into the slot as `/usr/lib/p6os/health.json`, run by the agent after a trial boot.
//! The agent's built-in checks (ready, state mounted, configuration applied) always run first.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the builder puts the health checks in the slot (and where the agent reads them).
pub const HEALTH_PATH: &str = p6os_layout::slot::HEALTH_PATH;
/// Directory of the public keys the slot trusts for update bundles (`<key id>.pub`).
pub const TRUSTED_KEYS_DIR: &str = "/usr/lib/p6os/trusted-keys";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Seconds all checks get, together, before the trial counts as failed.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u32,
    #[serde(default)]
    pub checks: Vec<Check>,
}

fn default_timeout() -> u32 {
    120
}

impl Default for Health {
    fn default() -> Self {
        Health {
            timeout_secs: default_timeout(),
            checks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Check {
    /// Passes when the command exits 0 (retried until the timeout).
    Command {
        /// Program (absolute path) and arguments.
        command: Vec<String>,
    },
    /// Passes when a GET returns 2xx (retried until the timeout). Plain http on the device.
    Http { url: String },
    /// Passes when systemd reports the unit active (systemd bases only).
    SystemdUnit { unit: String },
}

impl Check {
    /// Short text for logs and `status`: `command /bin/true`, `http http://…`.
    pub fn describe(&self) -> String {
        match self {
            Check::Command { command } => format!("command {}", command.join(" ")),
            Check::Http { url } => format!("http {url}"),
            Check::SystemdUnit { unit } => format!("systemd-unit {unit}"),
        }
    }

    /// A problem with this check's fields, if any.
    pub fn problem(&self) -> Option<String> {
        match self {
            Check::Command { command } => match command.first() {
                None => Some("an empty command".into()),
                Some(p) if !p.starts_with('/') => Some(format!("`{p}` is not an absolute path")),
                _ => None,
            },
            Check::Http { url } => match url.strip_prefix("http://") {
                Some(rest) if !rest.is_empty() && !rest.starts_with('/') => None,
                _ => Some(format!(
                    "`{url}` is not an http:// URL (checks run on the device itself)"
                )),
            },
            Check::SystemdUnit { unit } => {
                let ok = unit.contains('.')
                    && !unit.contains('/')
                    && unit
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "@._:-\\".contains(c));
                (!ok).then(|| format!("`{unit}` is not a unit name such as k3s.service"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems() {
        let ok = [
            Check::Command {
                command: vec!["/bin/true".into()],
            },
            Check::Http {
                url: "http://127.0.0.1:6443/readyz".into(),
            },
            Check::SystemdUnit {
                unit: "k3s.service".into(),
            },
        ];
        for c in ok {
            assert_eq!(c.problem(), None, "{c:?}");
        }
        let bad = [
            Check::Command { command: vec![] },
            Check::Command {
                command: vec!["true".into()],
            },
            Check::Http {
                url: "https://x".into(),
            },
            Check::Http {
                url: "http://".into(),
            },
            Check::SystemdUnit { unit: "k3s".into() },
        ];
        for c in bad {
            assert!(c.problem().is_some(), "{c:?}");
        }
    }
}
