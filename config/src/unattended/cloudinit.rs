//! Keys of cloud-init's `#cloud-config` that P6OS does not take, and what to use instead.
//!
//! People bring the cloud-init documents they already have. A bare "unknown field `runcmd`"
//! leaves them guessing; these answers say why the key has no place on an immutable appliance
//! and which setting, recipe layer or workload does the job. Pure: a key's place in, the
//! message and the hint out.

use crate::yamlcheck::Seg;

/// Why a group of keys is not taken, and what to do instead.
struct Answer {
    keys: &'static [&'static str],
    message: &'static str,
    hint: &'static str,
}

const PACKAGES: &str = "add a layer to the image's recipe (`layers:` in the recipe) and roll out the new image or bundle";

/// Top-level keys.
const TOP: &[Answer] = &[
    Answer {
        keys: &["packages", "package_update", "package_upgrade", "package_reboot_if_required", "apt", "yum_repos", "snap", "zypper"],
        message: "is cloud-init's package installation: a P6OS appliance installs nothing at boot, its system is one signed, read-only image",
        hint: PACKAGES,
    },
    Answer {
        keys: &["runcmd", "bootcmd"],
        message: "runs commands as root at boot: a P6OS appliance has no such hook, because every machine would run them forever with nothing to check, sign or undo them",
        hint: "set what the commands set with the sections of this file; ship a program with the image (a recipe layer with its systemd unit), or run it as a Kubernetes workload (a DaemonSet or a Job)",
    },
    Answer {
        keys: &["ssh_authorized_keys"],
        message: "puts SSH keys on the default user: P6OS has no default user and puts keys on a named account",
        hint: "users: [{name: admin, ssh_authorized_keys: [\"ssh-ed25519 AAAA...\"]}]",
    },
    Answer {
        keys: &["ssh_pwauth"],
        message: "is cloud-init's name for SSH password logins",
        hint: "ssh: {password_authentication: true}",
    },
    Answer {
        keys: &["disable_root"],
        message: "is cloud-init's name for root logins over SSH",
        hint: "ssh: {permit_root_login: false} (the default)",
    },
    Answer {
        keys: &["chpasswd", "password"],
        message: "sets passwords in cloud-init's way: P6OS takes a password only as a crypt hash on its account",
        hint: "users[].passwd with the output of `mkpasswd -m yescrypt` (never the password itself)",
    },
    Answer {
        keys: &["fqdn", "preserve_hostname", "prefer_fqdn_over_hostname", "manage_etc_hosts"],
        message: "is cloud-init's host name handling",
        hint: "hostname: store-042 (or a full name with dots); /etc/hosts follows it",
    },
    Answer {
        keys: &["mounts", "disk_setup", "fs_setup", "growpart", "resize_rootfs", "swap"],
        message: "lays out disks: the image fixes a P6OS appliance's disk (two system slots and a state partition that grows by itself)",
        hint: "change the partition sizes in the recipe's `partitions`; data for workloads goes to Kubernetes volumes on the state partition",
    },
    Answer {
        keys: &["power_state"],
        message: "reboots or powers off after cloud-init: on P6OS only the agent reboots, to install or roll back an upgrade",
        hint: "nothing is needed: the appliance boots on into its workloads",
    },
    Answer {
        keys: &["phone_home", "final_message", "reporting"],
        message: "reports to a server in cloud-init's way: a P6OS appliance reports to p6os-console",
        hint: "console: {endpoint: https://console.example.com, token: ...}",
    },
    Answer {
        keys: &["ca_certs", "ca-certs"],
        message: "adds system-wide certificate authorities: P6OS takes a CA where it is used",
        hint: "registries.configs.HOST.ca, console.ca, or a recipe layer with the CA for the whole system",
    },
    Answer {
        keys: &["locale", "keyboard"],
        message: "is set by the image on P6OS, not per site",
        hint: "set it in a recipe layer",
    },
    Answer {
        keys: &["groups", "user", "system_info"],
        message: "is cloud-init's default-user and group setup: P6OS creates only the accounts listed in `users`",
        hint: "users: [{name: admin, groups: [adm], sudo: true}]",
    },
];

/// Keys inside a `users` entry.
const USER: &[Answer] = &[
    Answer {
        keys: &["hashed_passwd"],
        message: "is cloud-init's name for the password hash",
        hint: "passwd: \"$y$...\" (the output of `mkpasswd -m yescrypt`)",
    },
    Answer {
        keys: &["plain_text_passwd"],
        message: "would keep a password in clear text: P6OS takes only a crypt hash",
        hint: "passwd: \"$y$...\" (the output of `mkpasswd -m yescrypt`)",
    },
    Answer {
        keys: &["lock_passwd"],
        message: "is cloud-init's switch for password logins",
        hint: "leave `passwd` out (no password), or passwd: \"!\" for a locked one",
    },
    Answer {
        keys: &["shell", "gecos", "homedir", "primary_group", "no_create_home", "system", "uid", "expiredate", "inactive"],
        message: "is not set per site by P6OS: accounts get the image's default shell and a home under /home",
        hint: "name, groups, ssh_authorized_keys, passwd and sudo are what an account takes",
    },
];

/// Keys inside `network` (cloud-init's network-config version 1 and 2).
const NETWORK: &[Answer] = &[Answer {
    keys: &["version", "ethernets", "config", "bonds", "bridges", "renderer", "wifis"],
    message: "is cloud-init's network configuration format, which P6OS does not read",
    hint: "network: {interfaces: [{name: enp1s0, dhcp: true}]}; addresses, gateway, routes, mtu, vlans and dns per interface",
}];

/// The message and hint for `key` at `path` (its parent), when it is a cloud-init key P6OS
/// does not take.
pub(super) fn answer(path: &[Seg], key: &str) -> Option<(String, String)> {
    let table = match path {
        [] => TOP,
        [Seg::Key(users), Seg::Index(_)] if users == "users" => USER,
        [Seg::Key(network)] if network == "network" => NETWORK,
        _ => return None,
    };
    let found = table.iter().find(|a| a.keys.contains(&key))?;
    Some((format!("`{key}` {}", found.message), found.hint.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Seg {
        Seg::Key(s.into())
    }

    #[test]
    fn every_key_has_one_answer_per_place() {
        for table in [TOP, USER, NETWORK] {
            let mut seen = std::collections::BTreeSet::new();
            for a in table {
                for k in a.keys {
                    assert!(seen.insert(*k), "{k} answered twice");
                }
            }
        }
    }

    #[test]
    fn answers_depend_on_the_place() {
        assert!(answer(&[], "runcmd").unwrap().0.contains("runs commands"));
        assert!(answer(&[key("users"), Seg::Index(3)], "runcmd").is_none());
        assert!(answer(&[key("users"), Seg::Index(3)], "lock_passwd").is_some());
        assert!(answer(&[], "lock_passwd").is_none());
        assert!(answer(&[key("network")], "ethernets").is_some());
        assert!(answer(&[key("proxy")], "ethernets").is_none());
        assert!(
            answer(&[], "hostnme").is_none(),
            "typos are left to did-you-mean"
        );
    }
}
