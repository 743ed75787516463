//! The document with its secrets taken out, for showing it back (the console's `config show`):
//! password hashes, registry passwords and the pairing token; user:password in proxy URLs;
//! `extra_args` that look secret; and the content of `write_files` entries others may not
//! read (mode without o+r, or no mode: the agent writes those 0644 but the operator may have
//! meant a private file; only explicit world-readable content is shown).

use super::redact_userinfo;
use super::types::{Secret, Unattended};

/// What stands in for a secret.
pub const REDACTED: &str = "(redacted)";

/// `doc` with every secret replaced by [`REDACTED`].
pub fn redacted(doc: &Unattended) -> Unattended {
    let mut d = doc.clone();
    let hide = || Secret::new(REDACTED);
    for u in &mut d.users {
        if u.passwd.is_some() {
            u.passwd = Some(hide());
        }
    }
    if let Some(r) = &mut d.registries {
        for c in r.configs.values_mut() {
            if c.password.is_some() {
                c.password = Some(hide());
            }
        }
        for urls in r.mirrors.values_mut() {
            for url in urls.iter_mut() {
                *url = redact_userinfo(url);
            }
        }
    }
    if let Some(c) = &mut d.console {
        c.token = hide();
        c.endpoint = redact_userinfo(&c.endpoint);
    }
    if let Some(p) = &mut d.proxy {
        for url in [&mut p.http_proxy, &mut p.https_proxy]
            .into_iter()
            .flatten()
        {
            *url = redact_userinfo(url);
        }
    }
    if let Some(k) = &mut d.kubernetes {
        for arg in &mut k.extra_args {
            if looks_secret(arg) {
                let name = arg.split('=').next().unwrap_or_default();
                *arg = format!("{name}={REDACTED}");
            }
        }
    }
    for f in &mut d.write_files {
        if !world_readable(f.permissions.as_deref()) {
            f.content = REDACTED.to_string();
        }
    }
    d
}

/// The agent's rule for a k3s flag that may carry a secret.
fn looks_secret(arg: &str) -> bool {
    let lower = arg.to_ascii_lowercase();
    ["token", "secret", "password", "passwd", "key"]
        .iter()
        .any(|w| lower.contains(w))
        || (lower.contains("://") && lower.contains('@'))
}

fn world_readable(mode: Option<&str>) -> bool {
    mode.and_then(|m| u32::from_str_radix(m, 8).ok())
        .is_some_and(|m| m & 0o004 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
        let shown = serde_json::to_string(&redacted(&doc)).unwrap();
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
            "hello\\n",
            "proxy.example",
        ] {
            assert!(shown.contains(kept), "{kept} not in {shown}");
        }
        assert!(shown.contains(REDACTED));
    }
}
