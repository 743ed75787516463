//! A document with its secrets replaced, for showing it back (the console's `config show`) and
//! for diagnostics bundles: every [`Secret`] (password hashes, registry passwords, the
//! console's pairing token), the content of every `write_files` entry (any of them may be a
//! credential; its length stays), the user part of every URL (`http://user:password@proxy`)
//! and the value of k3s `extra_args` that look secret (`--token=...`). The rest stays as
//! written, so an operator sees the configuration a device applied.
//!
//! Every struct is taken apart field by field (no `..`): a field added to the document does not
//! compile here until someone decides whether it is secret.

use super::syntax::redact_userinfo;
use super::types::*;

/// What stands in for a secret.
pub const REDACTED: &str = "(redacted)";

fn secret(s: &Option<Secret>) -> Option<Secret> {
    s.as_ref().map(|_| Secret::new(REDACTED))
}

impl Unattended {
    /// This document without its secrets.
    pub fn redacted(&self) -> Unattended {
        let Unattended {
            appliance,
            hostname,
            timezone,
            ntp,
            users,
            ssh,
            network,
            proxy,
            kubernetes,
            registries,
            console,
            write_files,
        } = self;
        Unattended {
            appliance: appliance.clone(),
            hostname: hostname.clone(),
            timezone: timezone.clone(),
            ntp: ntp.clone(),
            users: users.iter().map(user).collect(),
            ssh: ssh.clone(),
            network: network.clone(),
            proxy: proxy.as_ref().map(proxy_redacted),
            kubernetes: kubernetes.as_ref().map(kubernetes_redacted),
            registries: registries.as_ref().map(registries_redacted),
            console: console.as_ref().map(console_redacted),
            write_files: write_files.iter().map(write_file).collect(),
        }
    }
}

fn kubernetes_redacted(k: &Kubernetes) -> Kubernetes {
    let mut k = k.clone();
    for arg in &mut k.extra_args {
        if extra_arg_looks_secret(arg) {
            let name = arg.split('=').next().unwrap_or_default();
            *arg = format!("{name}={REDACTED}");
        }
    }
    k
}

/// Whether a k3s `extra_args` entry may carry a secret (a token, a key, a password, a URL
/// with credentials): the agent then writes config.yaml 0600, and it is redacted when shown.
pub fn extra_arg_looks_secret(arg: &str) -> bool {
    let lower = arg.to_ascii_lowercase();
    ["token", "secret", "password", "passwd", "key"]
        .iter()
        .any(|w| lower.contains(w))
        || (lower.contains("://") && lower.contains('@'))
}

fn user(u: &User) -> User {
    let User {
        name,
        groups,
        ssh_authorized_keys,
        passwd,
        sudo,
    } = u;
    User {
        name: name.clone(),
        groups: groups.clone(),
        // Public keys: not secret, and what an operator checks.
        ssh_authorized_keys: ssh_authorized_keys.clone(),
        passwd: secret(passwd),
        sudo: *sudo,
    }
}

fn proxy_redacted(p: &Proxy) -> Proxy {
    let Proxy {
        http_proxy,
        https_proxy,
        no_proxy,
    } = p;
    Proxy {
        http_proxy: http_proxy.as_deref().map(redact_userinfo),
        https_proxy: https_proxy.as_deref().map(redact_userinfo),
        no_proxy: no_proxy.clone(),
    }
}

fn registries_redacted(r: &Registries) -> Registries {
    let Registries { mirrors, configs } = r;
    Registries {
        mirrors: mirrors
            .iter()
            .map(|(host, urls)| {
                let urls = urls.iter().map(|u| redact_userinfo(u)).collect();
                (host.clone(), urls)
            })
            .collect(),
        configs: configs
            .iter()
            .map(|(host, c)| {
                let RegistryConfig {
                    username,
                    password,
                    ca,
                } = c;
                let c = RegistryConfig {
                    username: username.clone(),
                    password: secret(password),
                    ca: ca.clone(),
                };
                (host.clone(), c)
            })
            .collect(),
    }
}

fn console_redacted(c: &Console) -> Console {
    let Console {
        endpoint,
        token: _,
        ca,
    } = c;
    Console {
        endpoint: redact_userinfo(endpoint),
        token: Secret::new(REDACTED),
        ca: ca.clone(),
    }
}

fn write_file(w: &WriteFile) -> WriteFile {
    let WriteFile {
        path,
        content,
        encoding,
        owner,
        permissions,
    } = w;
    WriteFile {
        path: path.clone(),
        content: format!("{REDACTED} ({} bytes)", content.len()),
        encoding: *encoding,
        owner: owner.clone(),
        permissions: permissions.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;

    /// A document with one secret of every kind, each a distinct marker.
    const DOC: &str = r#"
hostname: edge-1
users:
  - name: ops
    passwd: "$6$salt$SECRETPASSWDHASH"
    ssh_authorized_keys:
      - "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@laptop"
proxy:
  http_proxy: "http://proxyuser:SECRET-PROXY-PASSWORD@proxy.example.com:3128"
  https_proxy: "http://proxyuser:SECRET-PROXYS-PASSWORD@proxy.example.com:3128"
registries:
  mirrors:
    docker.io:
      - "https://mirroruser:SECRET-MIRROR-PASSWORD@mirror.example.com"
  configs:
    registry.example.com:
      username: puller
      password: SECRET-REGISTRY-PASSWORD
console:
  endpoint: "https://console.example.com"
  token: SECRET-PAIRING-TOKEN
write_files:
  - path: /etc/app/credentials
    content: "SECRET-FILE-CONTENT"
"#;

    #[test]
    fn every_secret_kind_is_redacted() {
        let doc =
            crate::unattended::load(Path::new("u.yaml"), DOC).unwrap_or_else(|d| panic!("{d:?}"));
        // The document holds each marker before redaction (else the test proves nothing).
        let before = serde_json::to_string(&doc).unwrap();
        let markers = [
            "SECRETPASSWDHASH",
            "SECRET-PROXY-PASSWORD",
            "SECRET-PROXYS-PASSWORD",
            "SECRET-MIRROR-PASSWORD",
            "SECRET-REGISTRY-PASSWORD",
            "SECRET-PAIRING-TOKEN",
            "SECRET-FILE-CONTENT",
        ];
        for m in markers {
            assert!(before.contains(m), "{m} is not in the test document");
        }
        let after = serde_json::to_string(&doc.redacted()).unwrap();
        for m in markers {
            assert!(!after.contains(m), "{m} survived: {after}");
        }
        assert!(!after.contains("SECRET"));
        // What is not secret stays.
        let r = doc.redacted();
        assert_eq!(r.hostname.as_deref(), Some("edge-1"));
        assert_eq!(r.users[0].passwd.as_ref().unwrap().expose(), REDACTED);
        assert!(r.users[0].ssh_authorized_keys[0].contains("ops@laptop"));
        assert_eq!(
            r.registries.as_ref().unwrap().configs["registry.example.com"]
                .username
                .as_deref(),
            Some("puller")
        );
        assert_eq!(
            r.proxy.unwrap().http_proxy.as_deref(),
            Some("http://***@proxy.example.com:3128")
        );
        assert_eq!(r.write_files[0].path, "/etc/app/credentials");
        assert_eq!(r.console.unwrap().endpoint, "https://console.example.com");
    }

    #[test]
    fn absent_secrets_stay_absent() {
        let doc = Unattended {
            users: vec![User {
                name: "a".into(),
                ..User::default()
            }],
            registries: Some(Registries {
                mirrors: BTreeMap::new(),
                configs: [("r".to_string(), RegistryConfig::default())].into(),
            }),
            ..Unattended::default()
        };
        let r = doc.redacted();
        assert_eq!(r.users[0].passwd, None);
        assert_eq!(r.registries.unwrap().configs["r"].password, None);
    }

    #[test]
    fn every_secret_is_replaced_and_the_rest_kept() {
        let text = r#"
hostname: store-1
users:
  - name: ops
    passwd: "$y$j9T$abcdefghijklmnopqrstu.$0123456789abcdefghijklmnopqrstuvwxyzABCDE"
registries:
  configs:
    harbor.example: {username: robot, password: hunter2-registry}
console:
  endpoint: https://console.example
  token: pair-secret-token
proxy:
  http_proxy: http://user:proxypass@proxy.example:3128
kubernetes:
  extra_args: [--token=k3s-secret-token, --disable=traefik]
write_files:
  - {path: /etc/motd, content: "hello\n", permissions: "0644"}
  - {path: /etc/app/key, content: "private-file-content", permissions: "0600"}
"#;
        let doc = crate::unattended::load(Path::new("u.yaml"), text).unwrap();
        let shown = serde_json::to_string(&doc.redacted()).unwrap();
        for secret in [
            "abcdefghijklmnopqrstu",
            "hunter2-registry",
            "pair-secret-token",
            "proxypass",
            "k3s-secret-token",
            "private-file-content",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        for kept in [
            "store-1",
            "robot",
            "--disable=traefik",
            "/etc/motd",
            "proxy.example",
        ] {
            assert!(shown.contains(kept), "{kept} not in {shown}");
        }
        assert!(shown.contains(REDACTED));
    }
}
