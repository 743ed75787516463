//! `users`: account and group names, SSH keys, password hashes (never echoed).

use std::collections::BTreeMap;

use super::{at, k, Check};
use crate::unattended::syntax::{valid_account_name, valid_password_hash, valid_ssh_key};
use crate::unattended::types::{Secret, User};
use crate::yamlcheck::Seg;

impl Check<'_> {
    pub(super) fn users(&mut self, users: &[User]) {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, user) in users.iter().enumerate() {
            let base = vec![k("users"), Seg::Index(i)];
            if !valid_account_name(&user.name) {
                self.err(
                    at(&base, &[k("name")]),
                    format!("`{}` is not a valid user name", user.name),
                    Some("lowercase letters, digits, `_` and `-`, starting with a letter"),
                );
            }
            if let Some(first) = seen.insert(&user.name, i) {
                self.err(
                    at(&base, &[k("name")]),
                    format!(
                        "user `{}` is defined twice (also users[{first}])",
                        user.name
                    ),
                    None,
                );
            }
            for (j, g) in user.groups.iter().enumerate() {
                if !valid_account_name(g) {
                    self.err(
                        at(&base, &[k("groups"), Seg::Index(j)]),
                        format!("`{g}` is not a valid group name"),
                        None,
                    );
                }
            }
            for (j, key) in user.ssh_authorized_keys.iter().enumerate() {
                if !valid_ssh_key(key) {
                    self.err(
                        at(&base, &[k("ssh_authorized_keys"), Seg::Index(j)]),
                        "not an SSH public key",
                        Some("one line as in id_ed25519.pub: `ssh-ed25519 AAAA… comment`"),
                    );
                }
            }
            if let Some(p) = user.passwd.as_ref().map(Secret::expose) {
                if !valid_password_hash(p) {
                    // The value itself is a secret: never echo it.
                    self.err(at(&base, &[k("passwd")]), "not a password hash", Some("give a crypt(3) hash, e.g. from `mkpasswd -m yescrypt`; plain passwords are refused"));
                }
            }
        }
    }
}
