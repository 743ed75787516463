//! `users add|list|set|delete`, `tokens create|list|revoke`, `audit list|export`, `whoami`:
//! the operator's side of accounts, personal tokens and the audit log. Passwords come from a
//! file or standard input, never from the command line (other users see it in `ps`).

use std::io::Read as _;
use std::path::PathBuf;

use clap::Subcommand;
use p6os_protocol::users::{
    AuditEntry, AuditPage, Me, Role, Token, TokenCreated, TokenPage, TokenRequest, User, UserPage,
    UserRequest, UserUpdate,
};
use p6os_protocol::API;

use super::{all_pages, labels, print_json, Client, Failure};

/// Where a password comes from.
#[derive(Debug, clap::Args)]
#[group(multiple = false)]
pub struct PasswordSource {
    /// Read the password from this file (its first line).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Read the password from standard input (its first line).
    #[arg(long)]
    pub password_stdin: bool,
}

impl PasswordSource {
    /// The password, if a source was given.
    fn read(&self) -> Result<Option<String>, Failure> {
        let text = match (&self.password_file, self.password_stdin) {
            (Some(path), _) => std::fs::read_to_string(path).map_err(|e| {
                Failure::Usage(format!(
                    "cannot read --password-file {}: {e}",
                    path.display()
                ))
            })?,
            (None, true) => {
                let mut s = String::new();
                std::io::stdin()
                    .take(64 * 1024)
                    .read_to_string(&mut s)
                    .map_err(|e| Failure::Usage(format!("cannot read standard input: {e}")))?;
                s
            }
            (None, false) => return Ok(None),
        };
        let line = text.lines().next().unwrap_or("").to_string();
        if line.is_empty() {
            return Err(Failure::Usage("the password is empty".into()));
        }
        Ok(Some(line))
    }
}

fn role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?}: viewer, operator or admin"))
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create an operator account.
    Add {
        name: String,
        /// viewer (reads), operator (registers, configures, rolls out) or admin (also users
        /// and tokens).
        #[arg(long, value_parser = role)]
        role: Role,
        /// k=v[,k=v]: the user sees and acts on appliances with these labels only.
        #[arg(long, value_name = "K=V[,K=V]")]
        scope: Option<String>,
        #[command(flatten)]
        password: PasswordSource,
        #[arg(long)]
        json: bool,
    },
    /// List the accounts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change an account: role, scope, password, enabled, lock-out.
    Set {
        name: String,
        #[arg(long, value_parser = role)]
        role: Option<Role>,
        /// k=v[,k=v]; an empty string for the whole fleet.
        #[arg(long, value_name = "K=V[,K=V]")]
        scope: Option<String>,
        #[command(flatten)]
        password: PasswordSource,
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        #[arg(long)]
        enable: bool,
        /// End a lock-out after failed logins.
        #[arg(long)]
        unlock: bool,
        #[arg(long)]
        json: bool,
    },
    /// Delete an account with its tokens and sessions.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a personal API token; it is printed once (keep it in a 0600 file).
    Create {
        /// What it is for: laptop, ci, ...
        #[arg(long)]
        name: String,
        /// Days until it stops working (default 90).
        #[arg(long)]
        days: Option<u32>,
        /// Admins: make it for this user.
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Your tokens (an admin: everyone's, or --user's).
    List {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke { id: u64 },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// The newest entries (every page with --limit absent would be the whole log: default 50).
    List {
        #[arg(long)]
        actor: Option<String>,
        #[arg(long, default_value_t = 50, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// The whole log (or one actor's), newest first, as JSON lines on standard output.
    Export {
        #[arg(long)]
        actor: Option<String>,
    },
}

fn scope_of(text: Option<&str>) -> Result<std::collections::BTreeMap<String, String>, Failure> {
    match text {
        None | Some("") => Ok(Default::default()),
        Some(t) => labels(&[t.to_string()]),
    }
}

pub fn users(client: &Client, command: UsersCommand) -> Result<(), Failure> {
    let now = crate::api::now();
    match command {
        UsersCommand::Add {
            name,
            role,
            scope,
            password,
            json,
        } => {
            let req = UserRequest {
                name,
                role,
                scope: scope_of(scope.as_deref())?,
                password: password.read()?,
            };
            let user: User = client.post(&format!("{API}/users"), &req)?;
            show_user(&user, json, now);
        }
        UsersCommand::List { json } => {
            let all = all_pages(client, &format!("{API}/users"), &[], None, |p: UserPage| {
                (p.items, p.next)
            })?;
            if json {
                print_json(&all);
            } else {
                print!("{}", user_table(&all, now));
            }
        }
        UsersCommand::Set {
            name,
            role,
            scope,
            password,
            disable,
            enable,
            unlock,
            json,
        } => {
            let update = UserUpdate {
                role,
                scope: scope.as_deref().map(|s| scope_of(Some(s))).transpose()?,
                password: password.read()?,
                disabled: (disable || enable).then_some(disable),
                unlock,
            };
            if update == UserUpdate::default() {
                return Err(Failure::Usage(
                    "nothing to change: give --role, --scope, --password-file, --password-stdin, \
                     --disable, --enable or --unlock"
                        .into(),
                ));
            }
            let user: User = client.put(&format!("{API}/users/{name}"), &update)?;
            show_user(&user, json, now);
        }
        UsersCommand::Delete { name } => {
            client.delete(&format!("{API}/users/{name}"))?;
            println!("deleted user {name}");
        }
    }
    Ok(())
}

fn show_user(user: &User, json: bool, now: u64) {
    if json {
        print_json(user);
    } else {
        print!("{}", user_table(std::slice::from_ref(user), now));
    }
}

fn scope_text(scope: &std::collections::BTreeMap<String, String>) -> String {
    if scope.is_empty() {
        return "(whole fleet)".into();
    }
    scope
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn user_table(all: &[User], now: u64) -> String {
    let mut rows = vec![["NAME", "ROLE", "SCOPE", "PASSWORD", "STATE"]
        .map(String::from)
        .to_vec()];
    for u in all {
        let state = if u.disabled {
            "disabled".to_string()
        } else if let Some(until) = u.locked_until {
            format!("locked {}s", until.saturating_sub(now))
        } else {
            "active".to_string()
        };
        rows.push(vec![
            u.name.clone(),
            u.role.as_str().to_string(),
            scope_text(&u.scope),
            if u.has_password { "set" } else { "-" }.to_string(),
            state,
        ]);
    }
    super::format::table(&rows)
}

pub fn tokens(client: &Client, command: TokensCommand) -> Result<(), Failure> {
    let now = crate::api::now();
    match command {
        TokensCommand::Create {
            name,
            days,
            user,
            json,
        } => {
            let req = TokenRequest { name, days, user };
            let made: TokenCreated = client.post(&format!("{API}/tokens"), &req)?;
            if json {
                print_json(&made);
            } else {
                println!(
                    "token {} for {} ({}), until {}:",
                    made.token.id,
                    made.token.user,
                    made.token.name,
                    until(made.token.expires_at, now)
                );
                println!("{}", made.secret);
                eprintln!("p6os-console: it is shown only now: keep it in a file of mode 0600");
            }
        }
        TokensCommand::List { user, json } => {
            let query: Vec<(String, String)> =
                user.into_iter().map(|u| ("user".to_string(), u)).collect();
            let all = all_pages(
                client,
                &format!("{API}/tokens"),
                &query,
                None,
                |p: TokenPage| (p.items, p.next),
            )?;
            if json {
                print_json(&all);
            } else {
                print!("{}", token_table(&all, now));
            }
        }
        TokensCommand::Revoke { id } => {
            client.delete(&format!("{API}/tokens/{id}"))?;
            println!("revoked token {id}");
        }
    }
    Ok(())
}

/// `in 89d`, `in 3h`, or `expired`.
fn until(t: u64, now: u64) -> String {
    let s = t.saturating_sub(now);
    match s {
        0 => "expired".into(),
        1..3600 => format!("in {}m", s.div_ceil(60)),
        3600..86400 => format!("in {}h", s / 3600),
        _ => format!("in {}d", s / 86400),
    }
}

pub fn token_table(all: &[Token], now: u64) -> String {
    let mut rows = vec![["ID", "USER", "NAME", "EXPIRES", "LAST USED"]
        .map(String::from)
        .to_vec()];
    for t in all {
        rows.push(vec![
            t.id.to_string(),
            t.user.clone(),
            t.name.clone(),
            until(t.expires_at, now),
            super::format::ago(t.last_used, now),
        ]);
    }
    super::format::table(&rows)
}

pub fn audit(client: &Client, command: AuditCommand) -> Result<(), Failure> {
    let (actor, limit, json, export) = match command {
        AuditCommand::List { actor, limit, json } => (actor, Some(limit), json, false),
        AuditCommand::Export { actor } => (actor, None, true, true),
    };
    let query: Vec<(String, String)> = actor.into_iter().map(|a| ("actor".into(), a)).collect();
    let all = all_pages(
        client,
        &format!("{API}/audit"),
        &query,
        limit,
        |p: AuditPage| (p.items, p.next),
    )?;
    if export {
        for e in &all {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
        }
    } else if json {
        print_json(&all);
    } else {
        print!("{}", audit_table(&all, crate::api::now()));
    }
    Ok(())
}

pub fn audit_table(all: &[AuditEntry], now: u64) -> String {
    let mut rows = vec![["WHEN", "ACTOR", "FROM", "ACTION", "TARGET", "STATUS"]
        .map(String::from)
        .to_vec()];
    for e in all {
        rows.push(vec![
            super::format::ago(Some(e.at_ms / 1000), now),
            e.actor.clone(),
            e.source.clone(),
            e.action.clone(),
            e.target.clone(),
            e.status.to_string(),
        ]);
    }
    super::format::table(&rows)
}

/// `whoami`.
pub fn whoami(client: &Client, json: bool) -> Result<(), Failure> {
    let me: Me = client.get(&format!("{API}/me"))?;
    if json {
        print_json(&me);
    } else {
        println!(
            "{} ({}, {}), scope {}",
            me.user,
            me.role.as_str(),
            match me.via {
                p6os_protocol::users::Via::BootstrapToken => "the admin token",
                p6os_protocol::users::Via::Token => "a personal token",
                p6os_protocol::users::Via::Session => "a web session",
            },
            scope_text(&me.scope)
        );
    }
    Ok(())
}
