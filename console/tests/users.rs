//! Operators over real HTTP: users and roles, personal tokens, web sessions (cookie flags,
//! fixation, CSRF, back-off), label scopes, and the audit log; and every route of the router
//! walked with every kind of caller.

mod common;

use common::*;
use p6os_console::access::Access;
use p6os_console::api::Method;
use p6os_console::clock::ManualClock;
use p6os_console::testing::{Listen, TestConsole};
use p6os_protocol::users::{
    AuditEntry, AuditPage, LoginAnswer, Me, Role, TokenCreated, TokenPage, User, Via,
};
use p6os_protocol::AppliancePage;

/// A web session: the cookie to send back and the CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

fn login(s: &Server, user: &str, password: &str) -> Reply {
    s.call(
        "POST",
        &format!("{API}/login"),
        None,
        Body::json(&serde_json::json!({ "user": user, "password": password })),
    )
}

fn session(s: &Server, user: &str, password: &str) -> Session {
    let r = login(s, user, password);
    assert_eq!(r.status, 200, "{}", r.text());
    let set = r
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    let cookie = set.split(';').next().unwrap().to_string();
    Session {
        cookie,
        csrf: r.json::<LoginAnswer>().csrf,
    }
}

/// A call with the session's cookie, and its CSRF token when `csrf` is true.
fn with_session(
    s: &Server,
    method: &str,
    path: &str,
    sess: &Session,
    csrf: bool,
    body: Body,
) -> Reply {
    let mut headers = vec![("Cookie", sess.cookie.as_str())];
    if csrf {
        headers.push(("X-CSRF-Token", sess.csrf.as_str()));
    }
    call(&s.url, method, path, None, body, &headers)
}

fn add_user(s: &Server, name: &str, role: &str, password: Option<&str>) -> User {
    let mut body = serde_json::json!({ "name": name, "role": role });
    if let Some(p) = password {
        body["password"] = p.into();
    }
    let r = s.admin("POST", &format!("{API}/users"), Body::json(&body));
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

fn token_for(s: &Server, user: &str) -> String {
    let r = s.admin(
        "POST",
        &format!("{API}/tokens"),
        Body::json(&serde_json::json!({ "name": "test", "user": user })),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let t: TokenCreated = r.json();
    assert!(t.secret.starts_with("p6ou_"), "{}", t.secret);
    t.secret
}

const PASSWORD: &str = "correct horse battery";

/// Who may call what, written out by hand: the router's table must say the same. A route
/// added without a line here, or a role changed there alone, fails this test.
const EXPECTED_ACCESS: &[(&str, &str)] = &[
    ("GET /openapi.json", "anyone"),
    ("POST /api/v1/appliances/{id}/pair", "anyone"),
    ("POST /api/v1/appliances/{id}/heartbeat", "device"),
    ("GET /api/v1/bundles/{sha256}/content", "device or viewer"),
    ("POST /api/v1/appliances", "operator"),
    ("GET /api/v1/appliances", "viewer"),
    ("GET /api/v1/appliances/{id}", "viewer"),
    ("DELETE /api/v1/appliances/{id}", "operator"),
    ("PUT /api/v1/appliances/{id}/desired", "operator"),
    ("GET /api/v1/appliances/{id}/events", "viewer"),
    ("POST /api/v1/appliances/{id}/approve", "operator"),
    ("PUT /api/v1/appliances/{id}/image", "operator"),
    ("PUT /api/v1/desired", "operator"),
    ("POST /api/v1/bundles", "operator"),
    ("GET /api/v1/bundles", "viewer"),
    ("POST /api/v1/rollouts", "operator"),
    ("GET /api/v1/rollouts", "viewer"),
    ("GET /api/v1/rollouts/{id}", "viewer"),
    ("GET /api/v1/rollouts/{id}/devices", "viewer"),
    ("POST /api/v1/rollouts/{id}/pause", "operator"),
    ("POST /api/v1/rollouts/{id}/resume", "operator"),
    ("POST /api/v1/rollouts/{id}/abort", "operator"),
    ("PUT /api/v1/config", "operator"),
    ("GET /api/v1/appliances/{id}/config", "viewer"),
    ("GET /api/v1/appliances/{id}/config/history", "viewer"),
    ("GET /api/v1/appliances/{id}/config/{config}", "device"),
    ("POST /api/v1/appliances/{id}/config/report", "device"),
    ("POST /api/v1/appliances/{id}/diagnostics", "operator"),
    ("GET /api/v1/appliances/{id}/diagnostics", "viewer"),
    ("GET /api/v1/diagnostics/{n}", "viewer"),
    ("GET /api/v1/diagnostics/{n}/content", "operator"),
    ("PUT /api/v1/diagnostics/{n}/content", "device"),
    ("POST /api/v1/login", "anyone"),
    ("POST /api/v1/logout", "viewer"),
    ("GET /api/v1/me", "viewer"),
    ("PUT /api/v1/me/password", "viewer"),
    ("POST /api/v1/users", "admin"),
    ("GET /api/v1/users", "admin"),
    ("GET /api/v1/users/{name}", "admin"),
    ("PUT /api/v1/users/{name}", "admin"),
    ("DELETE /api/v1/users/{name}", "admin"),
    ("POST /api/v1/tokens", "viewer"),
    ("GET /api/v1/tokens", "viewer"),
    ("DELETE /api/v1/tokens/{id}", "viewer"),
    ("GET /api/v1/audit", "admin"),
    ("GET /api/v1/audit/export", "admin"),
    ("GET /", "anyone"),
    ("GET /ui/assets/app.js", "anyone"),
    ("GET /ui/assets/app.css", "anyone"),
    ("GET /ui/login", "anyone"),
    ("POST /ui/login", "anyone"),
    ("GET /ui/", "viewer"),
    ("GET /ui/pending", "viewer"),
    ("GET /ui/appliances/{id}", "viewer"),
    ("GET /ui/bundles", "viewer"),
    ("GET /ui/rollouts", "viewer"),
    ("GET /ui/rollouts/{id}", "viewer"),
    ("GET /ui/configs", "viewer"),
    ("GET /ui/users", "viewer"),
    ("GET /ui/audit", "admin"),
];

fn describe(access: Access) -> String {
    match access {
        Access::Anyone => "anyone".into(),
        Access::Device => "device".into(),
        Access::DeviceOr(r) => format!("device or {}", r.as_str()),
        Access::Operator(r) => r.as_str().into(),
    }
}

#[test]
fn the_router_asks_of_each_route_what_this_table_says() {
    let actual: Vec<(String, String)> = p6os_console::api::route_access()
        .into_iter()
        .map(|(m, p, a)| (format!("{} {p}", m.as_str().to_uppercase()), describe(a)))
        .collect();
    let expected: Vec<(String, String)> = EXPECTED_ACCESS
        .iter()
        .map(|(r, a)| (r.to_string(), a.to_string()))
        .collect();
    for (a, e) in actual.iter().zip(&expected) {
        assert_eq!(a, e, "the router (left) and this table (right) disagree");
    }
    assert_eq!(actual.len(), expected.len(), "{actual:#?}");
}

/// Every route of the router, every kind of caller: nobody, a device, a viewer, an operator and
/// an admin (each with a personal token), the bootstrap admin token, and a web session with and
/// without its CSRF token. The gate's answer is 401 or 403; anything else means it let the
/// caller through to the handler.
#[test]
fn every_route_holds_every_caller_to_its_access() {
    let s = Server::start();
    let device = s.paired("dev-1", &[("site", "north")]);
    add_user(&s, "vera", "viewer", None);
    add_user(&s, "otto", "operator", Some(PASSWORD));
    add_user(&s, "ada", "admin", None);
    let tokens = [
        (Role::Viewer, token_for(&s, "vera")),
        (Role::Operator, token_for(&s, "otto")),
        (Role::Admin, token_for(&s, "ada")),
        (Role::Admin, s.admin.clone()),
    ];
    let web = session(&s, "otto", PASSWORD);
    let routes = p6os_console::api::route_access();
    assert!(routes.len() > 40, "{}", routes.len());
    let gated = |status: u16| status == 401 || status == 403;
    for (method, route, access) in &routes {
        if *access == Access::Anyone {
            continue;
        }
        // Operators act on an appliance that does not exist (nothing changes); a device on
        // its own.
        let id = if matches!(access, Access::Device) {
            "dev-1"
        } else {
            "ghost"
        };
        let path = route
            .replace("{id}", id)
            .replace("{n}", "999")
            .replace("{config}", "999")
            .replace("{name}", "nobody")
            .replace("{sha256}", &"0".repeat(64));
        let m = method.as_str().to_uppercase();
        let body = || match method {
            Method::Get | Method::Delete => Body::None,
            Method::Post | Method::Put => Body::raw_json("{}"),
        };
        let what = format!("{m} {route}");

        let r = s.call(&m, &path, None, body());
        if p6os_console::api::is_page(route) {
            // A page sends the browser to the login, and back here afterwards.
            assert_eq!(r.status, 303, "nobody: {what}: {}", r.text());
            let to = r.header("location").unwrap_or_default();
            assert!(to.starts_with("/ui/login?next=%2Fui%2F"), "{what}: {to}");
        } else {
            assert_eq!(r.status, 401, "nobody: {what}: {}", r.text());
        }

        let r = s.call(&m, &path, Some(&device), body());
        match access {
            Access::Device | Access::DeviceOr(_) => {
                assert!(
                    !gated(r.status),
                    "device: {what}: {} {}",
                    r.status,
                    r.text()
                )
            }
            _ => assert_eq!(r.status, 403, "device: {what}: {}", r.text()),
        }

        for (role, token) in &tokens {
            let r = s.call(&m, &path, Some(token), body());
            match access.role() {
                Some(needed) if role.may(needed) => assert!(
                    !gated(r.status),
                    "{role:?}: {what}: {} {}",
                    r.status,
                    r.text()
                ),
                _ => assert_eq!(r.status, 403, "{role:?}: {what}: {}", r.text()),
            }
        }

        if route.ends_with("/logout") {
            continue; // it would end the session the next routes use
        }
        let allowed = access.role().is_some_and(|r| Role::Operator.may(r));
        let r = with_session(&s, &m, &path, &web, true, body());
        if allowed {
            assert!(
                !gated(r.status),
                "session: {what}: {} {}",
                r.status,
                r.text()
            );
        } else {
            assert_eq!(r.status, 403, "session: {what}: {}", r.text());
        }
        if allowed && !matches!(method, Method::Get) {
            let r = with_session(&s, &m, &path, &web, false, body());
            assert_eq!(r.status, 403, "session without CSRF: {what}: {}", r.text());
            assert!(r.text().contains("X-CSRF-Token"), "{}", r.text());
        }
    }
}

#[test]
fn sessions_are_new_at_each_login_and_their_cookie_is_locked_down() {
    let s = Server::start();
    add_user(&s, "otto", "operator", Some(PASSWORD));

    // A planted session id is not promoted by the login: the browser gets a new one.
    let planted = "p6os_session=planted-by-an-attacker";
    let r = call(
        &s.url,
        "POST",
        &format!("{API}/login"),
        None,
        Body::json(&serde_json::json!({ "user": "otto", "password": PASSWORD })),
        &[("Cookie", planted)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let set = r.header("set-cookie").unwrap().to_string();
    let attrs: Vec<&str> = set.split("; ").collect();
    assert!(attrs[0].starts_with("p6os_session="), "{set}");
    assert_ne!(attrs[0], planted);
    assert!(attrs[0].len() > "p6os_session=".len() + 40, "{set}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attrs.contains(&flag), "{flag} missing in {set}");
    }
    assert!(!attrs.contains(&"Secure"), "plain http: {set}");
    let one = Session {
        cookie: attrs[0].to_string(),
        csrf: r.json::<LoginAnswer>().csrf,
    };
    let r = call(
        &s.url,
        "GET",
        &format!("{API}/me"),
        None,
        Body::None,
        &[("Cookie", planted)],
    );
    assert_eq!(r.status, 401);
    let me: Me = with_session(&s, "GET", &format!("{API}/me"), &one, false, Body::None).json();
    assert_eq!(
        (me.user.as_str(), me.role, me.via),
        ("otto", Role::Operator, Via::Session)
    );

    // Two logins, two sessions; logging out ends one.
    let a = session(&s, "otto", PASSWORD);
    let b = session(&s, "otto", PASSWORD);
    assert_ne!(a.cookie, b.cookie);
    assert_ne!(a.csrf, b.csrf);
    let r = with_session(&s, "POST", &format!("{API}/logout"), &a, false, Body::None);
    assert_eq!(r.status, 403, "logout needs the CSRF token too");
    let r = with_session(&s, "POST", &format!("{API}/logout"), &a, true, Body::None);
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = with_session(&s, "GET", &format!("{API}/me"), &a, false, Body::None);
    assert_eq!(r.status, 401);
    assert!(r.text().contains("log in again"), "{}", r.text());
    let r = with_session(&s, "GET", &format!("{API}/me"), &b, false, Body::None);
    assert_eq!(r.status, 200);

    // A request from another origin is refused even with the CSRF token.
    let r = call(
        &s.url,
        "POST",
        &format!("{API}/tokens"),
        None,
        Body::json(&serde_json::json!({ "name": "x" })),
        &[
            ("Cookie", b.cookie.as_str()),
            ("X-CSRF-Token", b.csrf.as_str()),
            ("Origin", "http://evil.example"),
        ],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("cross-origin"), "{}", r.text());

    // A new password (set by an admin) ends every session of the user.
    let r = s.admin(
        "PUT",
        &format!("{API}/users/otto"),
        Body::json(&serde_json::json!({ "password": "another long password" })),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = with_session(&s, "GET", &format!("{API}/me"), &b, false, Body::None);
    assert_eq!(r.status, 401);
    assert_eq!(login(&s, "otto", PASSWORD).status, 401);
    assert_eq!(login(&s, "otto", "another long password").status, 200);
}

#[test]
fn https_sessions_use_a_secure_host_only_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, chain, key_pem) = p6os_console::tls::make_certificates(&["127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, chain).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    let admin = "admin-token-for-https";
    let config = p6os_console::Config {
        db: p6os_console::db::DbLocation::Sqlite(dir.path().join("c.db")),
        bundles: dir.path().join("bundles"),
        admin_token: admin.into(),
        pairing_token: "pairing".into(),
        trusted_keys: vec![],
        heartbeat_secs: 60,
        pending_retry_secs: 30,
        max_pending: 10,
        pairing_rate: 10,
    };
    let console = TestConsole::start(
        config,
        Listen {
            tls: Some((cert.clone(), key)),
            ..Listen::default()
        },
    );
    let roots: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(ca.as_bytes())
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
                .build(),
        )
        .build()
        .into();
    let base = console.url();
    let put = agent
        .put(format!("{base}{API}/users/admin"))
        .header("Authorization", format!("Bearer {admin}"))
        .send_json(serde_json::json!({ "password": PASSWORD }))
        .unwrap();
    assert_eq!(put.status(), 200);
    let r = agent
        .post(format!("{base}{API}/login"))
        .send_json(serde_json::json!({ "user": "admin", "password": PASSWORD }))
        .unwrap();
    let set = r.headers().get("set-cookie").unwrap().to_str().unwrap();
    assert!(set.starts_with("__Host-p6os_session="), "{set}");
    assert!(set.split("; ").any(|a| a == "Secure"), "{set}");
}

#[test]
fn failed_logins_back_off_and_an_admin_unlocks() {
    let clock = ManualClock::at(1_000_000);
    let s = Server::start_clocked(clock.clone());
    add_user(&s, "otto", "operator", Some(PASSWORD));
    for _ in 0..3 {
        let r = login(&s, "otto", "wrong password!");
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(
            r.json::<p6os_protocol::ErrorBody>().error,
            "wrong user name or password"
        );
    }
    // An unknown user gets the same answer.
    let r = login(&s, "nobody", "wrong password!");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json::<p6os_protocol::ErrorBody>().error,
        "wrong user name or password"
    );
    // The right password is not even checked while the account backs off.
    let r = login(&s, "otto", PASSWORD);
    assert_eq!(r.status, 429, "{}", r.text());
    let user: User = s
        .admin("GET", &format!("{API}/users/otto"), Body::None)
        .json();
    assert_eq!(user.failed_logins, 3);
    assert!(user.locked_until.is_some());
    let r = s.admin(
        "PUT",
        &format!("{API}/users/otto"),
        Body::json(&serde_json::json!({ "unlock": true })),
    );
    assert_eq!(r.status, 200);
    assert_eq!(login(&s, "otto", PASSWORD).status, 200);
    let user: User = s
        .admin("GET", &format!("{API}/users/otto"), Body::None)
        .json();
    assert_eq!((user.failed_logins, user.locked_until), (0, None));

    // Each login attempt is in the audit log, with its source.
    let log: AuditPage = s
        .admin("GET", &format!("{API}/audit?actor=otto"), Body::None)
        .json();
    let actions: Vec<&str> = log.items.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "login-refused").count(), 4);
    assert_eq!(actions.iter().filter(|a| **a == "login").count(), 1);
    assert!(log.items.iter().all(|e| e.source == "127.0.0.1"));
}

#[test]
fn a_disabled_user_cannot_log_in_and_their_tokens_stop() {
    let s = Server::start();
    add_user(&s, "otto", "operator", Some(PASSWORD));
    let token = token_for(&s, "otto");
    let web = session(&s, "otto", PASSWORD);
    assert_eq!(
        s.call("GET", &format!("{API}/me"), Some(&token), Body::None)
            .status,
        200
    );
    let r = s.admin(
        "PUT",
        &format!("{API}/users/otto"),
        Body::json(&serde_json::json!({ "disabled": true })),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        s.call("GET", &format!("{API}/me"), Some(&token), Body::None)
            .status,
        401
    );
    assert_eq!(
        with_session(&s, "GET", &format!("{API}/me"), &web, false, Body::None).status,
        401
    );
    assert_eq!(login(&s, "otto", PASSWORD).status, 401);
    // The bootstrap admin and one's own account stay.
    for body in [
        serde_json::json!({ "disabled": true }),
        serde_json::json!({ "role": "viewer" }),
        serde_json::json!({ "scope": { "site": "north" } }),
    ] {
        let r = s.admin("PUT", &format!("{API}/users/admin"), Body::json(&body));
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
    assert_eq!(
        s.admin("DELETE", &format!("{API}/users/admin"), Body::None)
            .status,
        403
    );
    assert_eq!(
        s.admin("DELETE", &format!("{API}/users/otto"), Body::None)
            .status,
        204
    );
    assert_eq!(
        s.admin("GET", &format!("{API}/users/otto"), Body::None)
            .status,
        404
    );
}

#[test]
fn tokens_are_personal_and_revocable() {
    let s = Server::start();
    add_user(&s, "vera", "viewer", None);
    add_user(&s, "otto", "operator", None);
    let vera = token_for(&s, "vera");
    let otto = token_for(&s, "otto");
    // A viewer makes a token for themselves, not for another user.
    let r = s.call(
        "POST",
        &format!("{API}/tokens"),
        Some(&vera),
        Body::json(&serde_json::json!({ "name": "laptop", "days": 7 })),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let laptop: TokenCreated = r.json();
    assert_eq!(laptop.token.user, "vera");
    assert_eq!(
        laptop.token.expires_at - laptop.token.created_at,
        7 * 86_400
    );
    let r = s.call(
        "POST",
        &format!("{API}/tokens"),
        Some(&vera),
        Body::json(&serde_json::json!({ "name": "x", "user": "otto" })),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let mine: TokenPage = s
        .call("GET", &format!("{API}/tokens"), Some(&vera), Body::None)
        .json();
    assert_eq!(mine.items.len(), 2);
    assert!(mine.items.iter().all(|t| t.user == "vera"));
    let all: TokenPage = s.admin("GET", &format!("{API}/tokens"), Body::None).json();
    assert_eq!(all.items.len(), 3);
    // Nobody sees a token's secret again.
    assert!(!s
        .admin("GET", &format!("{API}/tokens"), Body::None)
        .text()
        .contains("p6ou_"));
    // Another user's token is "not found" to a non-admin.
    let otto_id = all.items.iter().find(|t| t.user == "otto").unwrap().id;
    let r = s.call(
        "DELETE",
        &format!("{API}/tokens/{otto_id}"),
        Some(&vera),
        Body::None,
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        s.call("GET", &format!("{API}/me"), Some(&otto), Body::None)
            .status,
        200
    );
    let r = s.call(
        "DELETE",
        &format!("{API}/tokens/{}", laptop.token.id),
        Some(&vera),
        Body::None,
    );
    assert_eq!(r.status, 204);
    let r = s.call(
        "GET",
        &format!("{API}/me"),
        Some(&laptop.secret),
        Body::None,
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        s.admin("DELETE", &format!("{API}/tokens/{otto_id}"), Body::None)
            .status,
        204
    );
    assert_eq!(
        s.call("GET", &format!("{API}/me"), Some(&otto), Body::None)
            .status,
        401
    );
}

#[test]
fn a_scoped_operator_sees_and_acts_on_their_appliances_only() {
    let s = Server::start();
    s.paired("n-1", &[("region", "north"), ("store", "1")]);
    s.paired("s-1", &[("region", "south")]);
    let r = s.admin(
        "POST",
        &format!("{API}/users"),
        Body::json(&serde_json::json!({
            "name": "nora", "role": "operator", "scope": { "region": "north" }
        })),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let nora = token_for(&s, "nora");
    let get = |path: &str| s.call("GET", &format!("{API}{path}"), Some(&nora), Body::None);

    let page: AppliancePage = get("/appliances").json();
    let ids: Vec<&str> = page.items.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["n-1"]);
    let page: AppliancePage = get("/appliances?label=region=south").json();
    assert!(page.items.is_empty());
    assert_eq!(get("/appliances/n-1").status, 200);
    let r = get("/appliances/s-1");
    assert_eq!(
        r.status,
        404,
        "outside the scope looks like nothing: {}",
        r.text()
    );
    assert_eq!(get("/appliances/s-1/events").status, 404);
    // The same id percent-encoded (the handler decodes its path) is refused all the same,
    // and so are malformed or unknown ones.
    for path in [
        "/appliances/%73-1",
        "/appliances/%73-1/events",
        "/appliances/nope",
        "/diagnostics/%31",
    ] {
        let r = get(path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    let r = s.call(
        "DELETE",
        &format!("{API}/appliances/%73-1"),
        Some(&nora),
        Body::None,
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        s.admin("GET", &format!("{API}/appliances/%73-1"), Body::None)
            .status,
        200
    );
    // An admin is never scoped: nora cannot become one with her scope.
    let r = s.admin(
        "PUT",
        &format!("{API}/users/nora"),
        Body::json(&serde_json::json!({ "role": "admin" })),
    );
    assert_eq!(
        (r.status, r.field().as_deref()),
        (400, Some("scope")),
        "{}",
        r.text()
    );
    let r = s.admin(
        "POST",
        &format!("{API}/users"),
        Body::json(&serde_json::json!({
            "name": "boss", "role": "admin", "scope": { "region": "north" }
        })),
    );
    assert_eq!(
        (r.status, r.field().as_deref()),
        (400, Some("scope")),
        "{}",
        r.text()
    );
    let r = s.call(
        "PUT",
        &format!("{API}/appliances/s-1/desired"),
        Some(&nora),
        Body::json(&serde_json::json!({ "version": "2.0" })),
    );
    assert_eq!(r.status, 404);
    let r = s.call(
        "DELETE",
        &format!("{API}/appliances/s-1"),
        Some(&nora),
        Body::None,
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        s.admin("GET", &format!("{API}/appliances/s-1"), Body::None)
            .status,
        200
    );

    // Selectors must stay inside the scope.
    let r = s.call(
        "PUT",
        &format!("{API}/desired"),
        Some(&nora),
        Body::json(&serde_json::json!({ "selector": { "store": "1" }, "version": "2.0" })),
    );
    assert_eq!(
        (r.status, r.field().as_deref()),
        (403, Some("selector")),
        "{}",
        r.text()
    );
    let r = s.call(
        "PUT",
        &format!("{API}/desired"),
        Some(&nora),
        Body::json(&serde_json::json!({
            "selector": { "region": "north", "store": "1" }, "version": "2.0"
        })),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // New appliances are registered inside the scope only.
    let r = s.call(
        "POST",
        &format!("{API}/appliances"),
        Some(&nora),
        Body::json(&serde_json::json!({ "id": "x-1", "labels": { "region": "south" } })),
    );
    assert_eq!(
        (r.status, r.field().as_deref()),
        (403, Some("labels")),
        "{}",
        r.text()
    );
    let r = s.call(
        "POST",
        &format!("{API}/appliances"),
        Some(&nora),
        Body::json(&serde_json::json!({ "id": "n-2", "labels": { "region": "north" } })),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // Narrowing a user's scope ends their sessions; the token now sees the new scope.
    let r = s.admin(
        "PUT",
        &format!("{API}/users/nora"),
        Body::json(&serde_json::json!({ "scope": { "region": "south" } })),
    );
    assert_eq!(r.status, 200);
    let page: AppliancePage = get("/appliances").json();
    let ids: Vec<&str> = page.items.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["s-1"]);
}

#[test]
fn every_operator_action_is_audited_and_exported() {
    let s = Server::start();
    add_user(&s, "vera", "viewer", None);
    let vera = token_for(&s, "vera");
    assert_eq!(s.register("a-1", &[]).status, 201);
    // Refused actions are recorded too; reads are not.
    let r = s.call(
        "DELETE",
        &format!("{API}/appliances/a-1"),
        Some(&vera),
        Body::None,
    );
    assert_eq!(r.status, 403);
    assert!(r.text().contains("needs the operator role"), "{}", r.text());
    assert_eq!(
        s.call("GET", &format!("{API}/appliances"), Some(&vera), Body::None)
            .status,
        200
    );
    assert_eq!(
        s.call("GET", &format!("{API}/audit"), Some(&vera), Body::None)
            .status,
        403
    );

    let log: AuditPage = s.admin("GET", &format!("{API}/audit"), Body::None).json();
    let find = |actor: &str, action: &str| -> AuditEntry {
        log.items
            .iter()
            .find(|e| e.actor == actor && e.action == action)
            .unwrap_or_else(|| panic!("no {actor} {action} in {:#?}", log.items))
            .clone()
    };
    let register = find("admin", "POST /api/v1/appliances");
    assert_eq!(
        (
            register.status,
            register.via,
            register.target.as_str(),
            register.source.as_str()
        ),
        (
            201,
            Some(Via::BootstrapToken),
            "/api/v1/appliances",
            "127.0.0.1"
        )
    );
    let refused = find("vera", "DELETE /api/v1/appliances/{id}");
    assert_eq!(
        (refused.status, refused.target.as_str()),
        (403, "/api/v1/appliances/a-1")
    );
    // Reads are not recorded, unless refused.
    let reads: Vec<&AuditEntry> = log
        .items
        .iter()
        .filter(|e| e.action.starts_with("GET "))
        .collect();
    assert_eq!(reads.len(), 1, "{reads:#?}");
    assert_eq!((reads[0].actor.as_str(), reads[0].status), ("vera", 403));
    // Newest first, and paged.
    assert!(log.items.windows(2).all(|w| w[0].seq > w[1].seq));
    let first: AuditPage = s
        .admin("GET", &format!("{API}/audit?limit=1"), Body::None)
        .json();
    assert_eq!(first.items.len(), 1);
    let next = first.next.unwrap();
    let second: AuditPage = s
        .admin(
            "GET",
            &format!("{API}/audit?limit=1&after={next}"),
            Body::None,
        )
        .json();
    assert!(second.items[0].seq < first.items[0].seq);

    let r = s.admin("GET", &format!("{API}/audit/export"), Body::None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<AuditEntry> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), log.items.len());
    assert_eq!(lines[0], log.items[0]);
}

#[test]
fn the_openapi_document_names_each_routes_role() {
    let s = Server::start();
    let doc: serde_json::Value = s.call("GET", "/openapi.json", None, Body::None).json();
    let op = |path: &str, method: &str| doc["paths"][path][method].clone();
    assert_eq!(op("/api/v1/users", "post")["x-p6os-role"], "admin");
    assert_eq!(op("/api/v1/appliances", "get")["x-p6os-role"], "viewer");
    assert_eq!(op("/api/v1/rollouts", "post")["x-p6os-role"], "operator");
    assert_eq!(
        op("/api/v1/appliances/{id}/heartbeat", "post")["security"],
        serde_json::json!([{ "deviceToken": [] }])
    );
    assert_eq!(
        op("/api/v1/login", "post")["security"],
        serde_json::json!([])
    );
}

#[test]
fn the_cli_manages_users_tokens_and_reads_the_audit_log() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let pw = pw.to_str().unwrap();
    let (code, out, err) = cli(
        &s,
        &[
            "users",
            "add",
            "nora",
            "--role",
            "operator",
            "--scope",
            "region=north",
            "--password-file",
            pw,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("nora") && out.contains("region=north"),
        "{out}"
    );
    // A password on the command line is not accepted at all.
    let (code, _, err) = cli(
        &s,
        &["users", "add", "x", "--role", "viewer", "--password", "pw"],
    );
    assert_eq!(code, 2, "{err}");
    let (code, out, err) = cli(&s, &["users", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let users: Vec<User> = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["admin", "nora"]);

    let (code, out, err) = cli(
        &s,
        &[
            "tokens", "create", "--name", "ci", "--user", "nora", "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let made: TokenCreated = serde_json::from_str(&out).unwrap();
    let token_file = dir.path().join("nora.token");
    std::fs::write(&token_file, &made.secret).unwrap();
    let as_nora = |args: &[&str]| {
        let mut all = vec!["--token-file", token_file.to_str().unwrap()];
        all.extend_from_slice(args);
        cli(&s, &all)
    };
    let (code, out, err) = as_nora(&["whoami"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("nora (operator, a personal token), scope region=north"),
        "{out}"
    );
    let (code, _, err) = as_nora(&["users", "list"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("403") && err.contains("needs the admin role"),
        "{err}"
    );

    let (code, out, err) = cli(&s, &["users", "set", "nora", "--disable", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(serde_json::from_str::<User>(&out).unwrap().disabled);
    let (code, _, err) = as_nora(&["whoami"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = cli(&s, &["users", "set", "nora"]);
    assert_eq!(code, 2);
    assert!(err.contains("nothing to change"), "{err}");

    let (code, out, err) = cli(&s, &["audit", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("POST /api/v1/users") && out.contains("127.0.0.1"),
        "{out}"
    );
    let (code, out, err) = cli(&s, &["audit", "export", "--actor", "nora"]);
    assert_eq!(code, 0, "{err}");
    let entries: Vec<AuditEntry> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 1, "{out}");
    assert_eq!(entries[0].status, 403);
    let (code, out, err) = cli(&s, &["tokens", "revoke", &made.token.id.to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = cli(&s, &["users", "delete", "nora"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_pages_own_refreshes_do_not_keep_its_session_alive() {
    let clock = ManualClock::at(1_000_000);
    let s = Server::start_clocked(clock.clone());
    add_user(&s, "vera", "viewer", Some(PASSWORD));
    let sess = session(&s, "vera", PASSWORD);
    let me = format!("{API}/me");
    let get = |headers: &[(&str, &str)]| {
        let mut all = vec![("Cookie", sess.cookie.as_str())];
        all.extend_from_slice(headers);
        call(&s.url, "GET", &me, None, Body::None, &all).status
    };
    // Someone works for 50 minutes: the idle clock starts again with each request.
    for _ in 0..5 {
        clock.advance(10 * 60);
        assert_eq!(get(&[]), 200);
    }
    // Then only the page refreshes itself, every 3 s as the script does (in 10-minute
    // steps here): an hour after the last use, the session has ended.
    for _ in 0..5 {
        clock.advance(10 * 60);
        assert_eq!(get(&[("X-P6OS-Live", "1")]), 200);
    }
    clock.advance(10 * 60);
    assert_eq!(get(&[("X-P6OS-Live", "1")]), 401);
    assert_eq!(get(&[]), 401);
}
