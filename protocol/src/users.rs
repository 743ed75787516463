//! Operators: accounts, roles, personal API tokens, web sessions and the audit log.
//!
//! - `GET /api/v1/me` -> [`Me`]: who the presented token or session is.
//! - `POST /api/v1/login` [`LoginRequest`] -> 200 [`LoginAnswer`] and a session cookie;
//!   `POST /api/v1/logout` ends the session.
//! - `POST /api/v1/users` [`UserRequest`] (admin) -> 201 [`User`]; `GET /api/v1/users` ->
//!   [`UserPage`]; `GET|PUT|DELETE /api/v1/users/{name}` ([`UserUpdate`]: absent fields stay).
//! - `PUT /api/v1/me/password` [`PasswordChange`]: an operator's own password.
//! - `POST /api/v1/tokens` [`TokenRequest`] -> 201 [`TokenCreated`] (the token, shown once);
//!   `GET /api/v1/tokens` -> [`TokenPage`]; `DELETE /api/v1/tokens/{id}`.
//! - `GET /api/v1/audit` (admin) -> [`AuditPage`], newest first; `GET /api/v1/audit/export`
//!   -> the same entries as JSON lines.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What an operator may do. Each role may do all that the ones before it may.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the fleet, its bundles, rollouts, configurations and diagnostics.
    Viewer,
    /// Also registers and approves appliances, sets versions and configurations, uploads
    /// bundles, runs rollouts and asks for diagnostics.
    Operator,
    /// Also manages users, everyone's tokens, and reads the audit log.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether this role may do what `needed` may.
    pub fn may(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest user name.
pub const MAX_USER_NAME: usize = 64;
/// Shortest password the console takes.
pub const MIN_PASSWORD: usize = 12;
/// Longest password the console takes (argon2 reads all of it; bounds the work a login does).
pub const MAX_PASSWORD: usize = 256;

/// The user name rule: 1 to 64 characters from `a-z 0-9 . _ -`, starting with a letter
/// (lower case: `Alice` and `alice` are not two accounts).
pub fn check_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the user name is empty".into());
    }
    if name.len() > MAX_USER_NAME {
        return Err(format!(
            "the user name is longer than {MAX_USER_NAME} characters"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("the user name must start with a lower-case letter".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(*c)))
    {
        return Err(format!(
            "the user name contains {c:?}: only a-z, 0-9, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// The password rule: 12 to 256 characters (a passphrase is welcome; no composition rules).
pub fn check_password(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD {
        return Err(format!(
            "the password has {n} characters: at least {MIN_PASSWORD} are needed (a few words \
             make a good one)"
        ));
    }
    if password.len() > MAX_PASSWORD {
        return Err(format!("the password is longer than {MAX_PASSWORD} bytes"));
    }
    Ok(())
}

/// A new operator account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    pub name: String,
    pub role: Role,
    /// The user sees and acts only on appliances whose labels include every pair of this
    /// selector (absent or empty: the whole fleet).
    #[serde(default)]
    pub scope: BTreeMap<String, String>,
    /// For the web console; a user without one uses API tokens only.
    #[serde(default)]
    pub password: Option<String>,
}

/// Changes to an account (admin); absent fields stay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    #[serde(default)]
    pub role: Option<Role>,
    /// Replaces the scope (`{}`: the whole fleet).
    #[serde(default)]
    pub scope: Option<BTreeMap<String, String>>,
    /// Sets a new password; the user's sessions end.
    #[serde(default)]
    pub password: Option<String>,
    /// A disabled user cannot log in, and their tokens and sessions stop working.
    #[serde(default)]
    pub disabled: Option<bool>,
    /// `true` ends a lock-out after failed logins.
    #[serde(default)]
    pub unlock: bool,
}

/// An operator account as shown (never its password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct User {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub scope: BTreeMap<String, String>,
    pub has_password: bool,
    pub disabled: bool,
    /// Unix seconds until which logins are refused after failed attempts (absent: not locked).
    #[serde(default)]
    pub locked_until: Option<u64>,
    pub failed_logins: u32,
    pub created_at: u64,
    /// The bootstrap admin, whose token is the console's `--admin-token-file`: it cannot be
    /// deleted, disabled or given another role.
    pub bootstrap: bool,
}

/// A page of users, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserPage {
    pub items: Vec<User>,
    #[serde(default)]
    pub next: Option<String>,
}

/// An operator's own password change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// Absent only for a user who has none yet.
    #[serde(default)]
    pub current: Option<String>,
    pub new: String,
}

/// A web login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub user: String,
    pub password: String,
}

/// A login's answer; the session itself is the `p6os_session` cookie (HttpOnly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LoginAnswer {
    pub user: String,
    pub role: Role,
    /// Send it back as the `X-CSRF-Token` header with every state-changing request made with
    /// the session cookie.
    pub csrf: String,
    /// Unix seconds: the session ends then at the latest.
    pub expires_at: u64,
}

/// How the caller is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The console's admin token (`--admin-token-file`): the bootstrap admin's.
    BootstrapToken,
    /// A personal API token.
    Token,
    /// A web session (cookie).
    Session,
}

/// Who the caller is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Me {
    pub user: String,
    pub role: Role,
    #[serde(default)]
    pub scope: BTreeMap<String, String>,
    pub via: Via,
}

/// A new personal API token for the caller (or, by an admin, for `user`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// What it is for (`laptop`, `ci`): 1 to 64 printable characters.
    pub name: String,
    /// Days until it stops working (1 to 3650; absent: 90).
    #[serde(default)]
    pub days: Option<u32>,
    /// Admins only: make it for this user.
    #[serde(default)]
    pub user: Option<String>,
}

/// A token as listed (never the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Token {
    pub id: u64,
    pub user: String,
    pub name: String,
    pub created_at: u64,
    pub expires_at: u64,
    #[serde(default)]
    pub last_used: Option<u64>,
}

/// A token just made: the secret is in this answer only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenCreated {
    #[serde(flatten)]
    pub token: Token,
    /// `p6ou_...`: give it as `Authorization: Bearer ...` (the CLI's `--token-file`).
    pub secret: String,
}

/// A page of tokens, newest first (`next` is an id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenPage {
    pub items: Vec<Token>,
    #[serde(default)]
    pub next: Option<String>,
}

/// One operator action, or a login attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditEntry {
    pub seq: u64,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// The user name (for a failed login: the name given, if it is a valid name).
    pub actor: String,
    #[serde(default)]
    pub via: Option<Via>,
    /// The peer's address.
    pub source: String,
    /// `METHOD /route/{param}` (or `login`, `logout`, `login-refused`).
    pub action: String,
    /// The request's path.
    pub target: String,
    /// The HTTP status of the answer.
    pub status: u16,
}

/// A page of the audit log, newest first (`next` is a `seq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    #[serde(default)]
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_what_they_may_do() {
        assert!(Role::Admin.may(Role::Operator));
        assert!(Role::Operator.may(Role::Viewer));
        assert!(!Role::Viewer.may(Role::Operator));
        assert!(!Role::Operator.may(Role::Admin));
        for r in Role::ALL {
            assert!(r.may(r));
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn user_names_and_passwords_have_rules() {
        check_user_name("alice.b-2").unwrap();
        for bad in ["", "Alice", "1a", "a b", "a/b", &"a".repeat(65)] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
        check_password("correct horse battery").unwrap();
        assert!(check_password("short").is_err());
        assert!(check_password(&"x".repeat(257)).is_err());
    }
}
