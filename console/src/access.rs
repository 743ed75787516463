//! Who may do what (pure): what a route asks of its caller, the authenticated operator, their
//! label scope, the login back-off, session lifetimes and the session cookie.
//!
//! Every route declares an [`Access`] in the router's table (`api::routes`); one middleware
//! (`api::gate`) authenticates the caller, holds them to it and records operator actions in
//! the audit log. A test walks the table with every kind of caller.

use std::collections::BTreeMap;

use p6os_protocol::users::{Role, Via};

use crate::core::matches_selector;

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the pairing route (its token is in the body), the login, the login page, the
    /// API document and the web console's static files.
    Anyone,
    /// A paired device's token; the handler finds which device (and that it is its own).
    Device,
    /// A paired device, or an operator with at least this role.
    DeviceOr(Role),
    /// An operator with at least this role.
    Operator(Role),
}

impl Access {
    /// The operator role the route needs, if operators may use it.
    pub fn role(self) -> Option<Role> {
        match self {
            Access::Anyone | Access::Device => None,
            Access::DeviceOr(r) | Access::Operator(r) => Some(r),
        }
    }
}

/// The label selector an operator is held to (empty: the whole fleet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(pub BTreeMap<String, String>);

impl Scope {
    pub fn whole_fleet(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an appliance with `labels` is in scope.
    pub fn admits(&self, labels: &BTreeMap<String, String>) -> bool {
        matches_selector(labels, &self.0)
    }

    /// The selector that picks what `selector` picks within this scope: both sets of pairs,
    /// or `Err` with the label they disagree on (such a selector picks nothing in scope).
    pub fn narrow(
        &self,
        selector: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut out = selector.clone();
        for (k, v) in &self.0 {
            match out.get(k) {
                Some(theirs) if theirs != v => {
                    return Err(format!(
                        "the selector asks for {k}={theirs}, outside your scope {k}={v}"
                    ))
                }
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        Ok(out)
    }

    /// Whether everything `selector` picks is in scope (it names every pair of the scope).
    pub fn covers(&self, selector: &BTreeMap<String, String>) -> bool {
        matches_selector(selector, &self.0)
    }
}

/// An authenticated operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub role: Role,
    pub scope: Scope,
    pub via: Via,
    /// The session's CSRF token (sessions only).
    pub csrf: Option<String>,
}

impl Principal {
    pub fn may(&self, needed: Role) -> bool {
        self.role.may(needed)
    }
}

/// The bootstrap admin: the console's admin token is this user's.
pub const BOOTSTRAP_USER: &str = "admin";

/// Failed logins in a row before each further attempt waits (1 s, then doubling).
pub const BACKOFF_AFTER: u32 = 3;
/// Failed logins in a row that lock the account for [`LOCKOUT_SECS`] (an admin can unlock).
pub const LOCKOUT_AFTER: u32 = 10;
pub const LOCKOUT_SECS: u64 = 15 * 60;

/// Until when (Unix seconds) logins of an account are refused after its `failures`-th failed
/// login in a row at `now`: not at all for the first few, then a wait doubling from 1 s (at
/// most 5 minutes), and a lock-out from [`LOCKOUT_AFTER`] failures on. The wait is enforced
/// before the password is checked, so guessing during it costs the guesser nothing to learn.
pub fn refused_until(failures: u32, now: u64) -> Option<u64> {
    if failures >= LOCKOUT_AFTER {
        return Some(now + LOCKOUT_SECS);
    }
    let over = failures.checked_sub(BACKOFF_AFTER)?;
    Some(now + (1u64 << over.min(8)).min(300))
}

/// A web session ends after this long without a request.
pub const SESSION_IDLE_SECS: u64 = 60 * 60;
/// A web session ends this long after its login, whatever happens.
pub const SESSION_MAX_SECS: u64 = 12 * 60 * 60;
/// A session's last use is written at most this often (not at every request).
pub const SESSION_TOUCH_SECS: u64 = 60;
/// Most live sessions per user; a new login ends the oldest beyond it.
pub const MAX_SESSIONS_PER_USER: usize = 20;
/// Most tokens per user.
pub const MAX_TOKENS_PER_USER: usize = 50;
/// A token's life when the request names none.
pub const DEFAULT_TOKEN_DAYS: u32 = 90;
pub const MAX_TOKEN_DAYS: u32 = 3650;
/// Personal API tokens start with this (device tokens do not), so the console knows where to
/// look and a secret scanner can spot one.
pub const TOKEN_PREFIX: &str = "p6ou_";

/// Whether a session that started at `created` and was last used at `last_seen` is still
/// alive at `now`.
pub fn session_alive(created: u64, last_seen: u64, now: u64) -> bool {
    now < created.saturating_add(SESSION_MAX_SECS)
        && now < last_seen.saturating_add(SESSION_IDLE_SECS)
}

/// The session cookie's name. With the `__Host-` prefix over https: the browser then takes
/// it only with `Secure`, `Path=/` and no `Domain`, so a sibling host cannot plant one.
pub fn session_cookie_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Https => "__Host-p6os_session",
        Transport::Http => "p6os_session",
    }
}

/// How the console is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    Https,
}

/// The `Set-Cookie` value that gives the browser session `id` (HttpOnly: no script reads it;
/// SameSite=Strict: no other site's page sends it; Secure over https).
pub fn session_cookie(transport: Transport, id: &str) -> String {
    let secure = match transport {
        Transport::Https => "; Secure",
        Transport::Http => "",
    };
    format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_MAX_SECS}{secure}",
        session_cookie_name(transport)
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_session_cookie(transport: Transport) -> String {
    let secure = match transport {
        Transport::Https => "; Secure",
        Transport::Http => "",
    };
    format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}",
        session_cookie_name(transport)
    )
}

/// The session id in a `Cookie` header, if any.
pub fn session_from_cookies(cookie_header: &str, transport: Transport) -> Option<&str> {
    let name = session_cookie_name(transport);
    cookie_header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Whether a request's `Origin` (if the browser sent one) is the console itself (`host`, the
/// request's `Host`). A state-changing request from a page of another origin is refused even
/// with a valid CSRF token.
pub fn same_origin(origin: Option<&str>, host: Option<&str>, transport: Transport) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let scheme = match transport {
        Transport::Http => "http://",
        Transport::Https => "https://",
    };
    match (origin.strip_prefix(scheme), host) {
        (Some(o), Some(h)) => o.eq_ignore_ascii_case(h),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_scope_narrows_selectors_and_admits_only_its_appliances() {
        let scope = Scope(sel(&[("region", "north")]));
        assert!(scope.admits(&sel(&[("region", "north"), ("store", "1")])));
        assert!(!scope.admits(&sel(&[("region", "south")])));
        assert!(!scope.admits(&sel(&[])));
        assert_eq!(
            scope.narrow(&sel(&[("store", "1")])).unwrap(),
            sel(&[("region", "north"), ("store", "1")])
        );
        assert_eq!(
            scope.narrow(&sel(&[])).unwrap(),
            sel(&[("region", "north")])
        );
        let e = scope.narrow(&sel(&[("region", "south")])).unwrap_err();
        assert!(e.contains("region=south"), "{e}");
        assert!(scope.covers(&sel(&[("region", "north"), ("store", "1")])));
        assert!(!scope.covers(&sel(&[("store", "1")])));
        let everything = Scope::default();
        assert!(everything.whole_fleet() && everything.admits(&sel(&[])));
        assert!(everything.covers(&sel(&[])));
    }

    #[test]
    fn failed_logins_back_off_then_lock() {
        assert_eq!(refused_until(0, 100), None);
        assert_eq!(refused_until(BACKOFF_AFTER - 1, 100), None);
        assert_eq!(refused_until(BACKOFF_AFTER, 100), Some(101));
        assert_eq!(refused_until(BACKOFF_AFTER + 1, 100), Some(102));
        assert_eq!(refused_until(BACKOFF_AFTER + 4, 100), Some(116));
        let mut last = 0;
        for n in BACKOFF_AFTER..LOCKOUT_AFTER {
            let until = refused_until(n, 0).unwrap();
            assert!(until > last && until <= 300, "{n}: {until}");
            last = until;
        }
        assert_eq!(refused_until(LOCKOUT_AFTER, 100), Some(100 + LOCKOUT_SECS));
        assert_eq!(refused_until(u32::MAX, 100), Some(100 + LOCKOUT_SECS));
    }

    #[test]
    fn sessions_end_when_idle_or_old() {
        assert!(session_alive(0, 0, SESSION_IDLE_SECS - 1));
        assert!(!session_alive(0, 0, SESSION_IDLE_SECS));
        let late = SESSION_MAX_SECS - 10;
        assert!(session_alive(0, late, late + 5));
        assert!(!session_alive(0, late, SESSION_MAX_SECS));
    }

    #[test]
    fn the_session_cookie_is_http_only_strict_and_secure_over_https() {
        let c = session_cookie(Transport::Https, "abc");
        assert!(c.starts_with("__Host-p6os_session=abc; Path=/;"), "{c}");
        for flag in ["HttpOnly", "SameSite=Strict", "Secure"] {
            assert!(c.split("; ").any(|p| p == flag), "{flag} in {c}");
        }
        let c = session_cookie(Transport::Http, "abc");
        assert!(!c.contains("Secure") && c.contains("HttpOnly"), "{c}");
        assert!(clear_session_cookie(Transport::Http).contains("Max-Age=0"));
        assert_eq!(
            session_from_cookies("a=b; p6os_session=xyz; c=d", Transport::Http),
            Some("xyz")
        );
        assert_eq!(
            session_from_cookies("p6os_session=xyz", Transport::Https),
            None,
            "over https only the __Host- cookie counts"
        );
        assert_eq!(session_from_cookies("p6os_session=", Transport::Http), None);
    }

    #[test]
    fn only_the_consoles_own_origin_may_change_state() {
        let t = Transport::Http;
        assert!(same_origin(None, Some("127.0.0.1:80"), t));
        assert!(same_origin(
            Some("http://127.0.0.1:80"),
            Some("127.0.0.1:80"),
            t
        ));
        assert!(!same_origin(
            Some("http://evil.example"),
            Some("127.0.0.1:80"),
            t
        ));
        assert!(!same_origin(
            Some("https://127.0.0.1:80"),
            Some("127.0.0.1:80"),
            t
        ));
        assert!(!same_origin(Some("null"), Some("127.0.0.1:80"), t));
        assert!(!same_origin(Some("http://127.0.0.1:80"), None, t));
    }
}
