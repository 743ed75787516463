//! /etc/passwd, /etc/group, /etc/shadow, homes, SSH keys and sudo rules for `users`.
//!
//! Rendered from the slot's pristine account files plus the document, never from the live
//! ones: the document owns these files, so removing a user from it removes the account (its
//! home under /var/home stays). New users get the lowest free ids from 1000 in document order;
//! users the slot already has keep their ids and shell. Homes live in /var/home (the slot's
//! /home and /root are read-only).

use p6os_config::unattended::{Unattended, User};

use super::{Base, Content, Out, Target, HEADER};

const FIRST_ID: u32 = 1000;
const LAST_ID: u32 = 59999;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Passwd {
    name: String,
    password: String,
    uid: u32,
    gid: u32,
    gecos: String,
    home: String,
    shell: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    name: String,
    password: String,
    gid: u32,
    members: Vec<String>,
}

/// The accounts after rendering, to resolve `write_files` owners.
pub struct Accounts {
    users: Vec<Passwd>,
    groups: Vec<Group>,
}

impl Accounts {
    /// `user[:group]` to ids; without a group, the user's primary group.
    pub fn owner(&self, spec: &str) -> Result<(u32, u32), String> {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let u = self
            .users
            .iter()
            .find(|p| p.name == user)
            .ok_or_else(|| format!("owner `{user}` is not a user of this system"))?;
        let gid = match group {
            None => u.gid,
            Some(g) => {
                self.groups
                    .iter()
                    .find(|x| x.name == g)
                    .ok_or_else(|| format!("group `{g}` is not a group of this system"))?
                    .gid
            }
        };
        Ok((u.uid, gid))
    }
}

fn parse_passwd(text: &str) -> Vec<Passwd> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() != 7 {
                return None;
            }
            Some(Passwd {
                name: f[0].into(),
                password: f[1].into(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                gecos: f[4].into(),
                home: f[5].into(),
                shell: f[6].into(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<Group> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() != 4 {
                return None;
            }
            Some(Group {
                name: f[0].into(),
                password: f[1].into(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(String::from)
                    .collect(),
            })
        })
        .collect()
}

fn free_id(taken: impl Fn(u32) -> bool) -> Option<u32> {
    (FIRST_ID..=LAST_ID).find(|id| !taken(*id))
}

/// Renders the account files (only when the document has users) and returns the accounts
/// for owner lookups either way.
pub fn render(doc: &Unattended, base: &Base, out: &mut Out) -> Accounts {
    let mut users = parse_passwd(&base.passwd);
    let mut groups = parse_group(&base.group);
    if doc.users.is_empty() {
        return Accounts { users, groups };
    }
    let mut shadow: Vec<(String, String)> = base
        .shadow
        .lines()
        .filter_map(|l| l.split_once(':').map(|(n, r)| (n.into(), r.into())))
        .collect();
    for user in &doc.users {
        let home = add_or_update_user(user, base, &mut users, &mut groups, out);
        let Some(home) = home else { continue };
        let entry = users.iter().find(|p| p.name == user.name).cloned();
        let Some(entry) = entry else { continue };
        let hash = user
            .passwd
            .as_ref()
            .map(|s| s.expose().to_string())
            .unwrap_or_else(|| "*".into());
        let rest = format!("{hash}::0:99999:7:::");
        match shadow.iter_mut().find(|(n, _)| *n == user.name) {
            Some(line) => line.1 = rest,
            None => shadow.push((user.name.clone(), rest)),
        }
        home_files(user, &entry, &home, out);
    }
    for user in &doc.users {
        for g in &user.groups {
            if !groups.iter().any(|x| &x.name == g) {
                let Some(gid) = free_id(|id| groups.iter().any(|x| x.gid == id)) else {
                    out.errors.push(format!("no free group id for `{g}`"));
                    continue;
                };
                groups.push(Group {
                    name: g.clone(),
                    password: "x".into(),
                    gid,
                    members: Vec::new(),
                });
            }
            if let Some(group) = groups.iter_mut().find(|x| &x.name == g) {
                if !group.members.contains(&user.name) {
                    group.members.push(user.name.clone());
                }
            }
        }
    }
    let passwd_text: String = users
        .iter()
        .map(|p| {
            format!(
                "{}:{}:{}:{}:{}:{}:{}\n",
                p.name, p.password, p.uid, p.gid, p.gecos, p.home, p.shell
            )
        })
        .collect();
    let group_text: String = groups
        .iter()
        .map(|g| {
            format!(
                "{}:{}:{}:{}\n",
                g.name,
                g.password,
                g.gid,
                g.members.join(",")
            )
        })
        .collect();
    let shadow_text: String = shadow
        .iter()
        .map(|(n, rest)| format!("{n}:{rest}\n"))
        .collect();
    out.file("/etc/passwd", passwd_text, 0o644);
    out.file("/etc/group", group_text, 0o644);
    out.file("/etc/shadow", shadow_text, 0o600);
    let sudoers: Vec<&str> = doc
        .users
        .iter()
        .filter(|u| u.sudo)
        .map(|u| u.name.as_str())
        .collect();
    if !sudoers.is_empty() {
        let mut text = String::from(HEADER);
        for name in sudoers {
            text.push_str(&format!("{name} ALL=(ALL) NOPASSWD:ALL\n"));
        }
        out.file("/etc/sudoers.d/p6os", text, 0o440);
    }
    Accounts { users, groups }
}

/// Adds `user` (with a primary group of its name) or updates the slot's entry; returns the
/// home directory, or None if no id was free.
fn add_or_update_user(
    user: &User,
    base: &Base,
    users: &mut Vec<Passwd>,
    groups: &mut Vec<Group>,
    out: &mut Out,
) -> Option<String> {
    let home = format!("/var/home/{}", user.name);
    if let Some(existing) = users.iter_mut().find(|p| p.name == user.name) {
        if !(existing.home.starts_with("/var/") || existing.home.starts_with("/etc/")) {
            existing.home = home;
        }
        existing.password = "x".into();
        return Some(existing.home.clone());
    }
    let Some(uid) = free_id(|id| users.iter().any(|p| p.uid == id)) else {
        out.errors
            .push(format!("no free user id for `{}`", user.name));
        return None;
    };
    let gid = match groups.iter().find(|g| g.name == user.name) {
        Some(g) => g.gid,
        None => {
            let gid = if groups.iter().any(|g| g.gid == uid) {
                free_id(|id| groups.iter().any(|g| g.gid == id))?
            } else {
                uid
            };
            groups.push(Group {
                name: user.name.clone(),
                password: "x".into(),
                gid,
                members: Vec::new(),
            });
            gid
        }
    };
    users.push(Passwd {
        name: user.name.clone(),
        password: "x".into(),
        uid,
        gid,
        gecos: String::new(),
        home: home.clone(),
        shell: base.shell.clone(),
    });
    Some(home)
}

fn home_files(user: &User, entry: &Passwd, home: &str, out: &mut Out) {
    let owned = |path: String, content: Content, mode: u32| Target {
        path,
        content,
        mode,
        uid: entry.uid,
        gid: entry.gid,
    };
    out.add(owned(home.to_string(), Content::Dir, 0o700));
    if user.ssh_authorized_keys.is_empty() {
        return;
    }
    out.add(owned(format!("{home}/.ssh"), Content::Dir, 0o700));
    let keys: String = user
        .ssh_authorized_keys
        .iter()
        .map(|k| format!("{}\n", k.trim()))
        .collect();
    out.add(owned(
        format!("{home}/.ssh/authorized_keys"),
        Content::File(keys.into_bytes()),
        0o600,
    ));
}
