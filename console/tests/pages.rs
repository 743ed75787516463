//! The web console's pages over plain HTTP (the browser tests are `browser.rs`): the login
//! form, the headers every page carries, text from devices escaped, refusals as pages.

mod common;

use common::*;
use serde_json::json;

const PASSWORD: &str = "correct horse battery";

/// Posts the login form with `fields`, from the page of `origin` (none: no `Origin`).
fn post_login(s: &Server, fields: &[(&str, &str)], origin: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = origin.iter().map(|o| ("Origin", *o)).collect();
    call(
        &s.url,
        "POST",
        "/ui/login",
        None,
        Body::Bytes(
            "application/x-www-form-urlencoded",
            serde_urlencoded::to_string(fields).unwrap().into_bytes(),
        ),
        &headers,
    )
}

/// Logs `user` in through the form, from the console's own page.
fn form_login(s: &Server, user: &str, next: &str) -> Reply {
    let origin = s.url.clone();
    post_login(
        s,
        &[("user", user), ("password", PASSWORD), ("next", next)],
        Some(&origin),
    )
}

fn cookie(r: &Reply) -> String {
    let set = r.header("set-cookie").expect("a session cookie");
    set.split(';').next().unwrap().to_string()
}

fn page(s: &Server, path: &str, cookie: &str) -> Reply {
    call(&s.url, "GET", path, None, Body::None, &[("Cookie", cookie)])
}

fn add(s: &Server, body: serde_json::Value) {
    let r = s.admin("POST", &format!("{API}/users"), Body::json(&body));
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn the_login_form_signs_in_and_goes_back_to_the_page_asked_for() {
    let s = Server::start();
    add(
        &s,
        json!({ "name": "otto", "role": "operator", "password": PASSWORD }),
    );
    let r = s.call("GET", "/", None, Body::None);
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/")));
    let r = s.call("GET", "/ui/login?next=/ui/rollouts", None, Body::None);
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains(r#"name="next" value="/ui/rollouts""#),
        "{}",
        r.text()
    );

    let r = form_login(&s, "otto", "/ui/rollouts");
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/ui/rollouts"));
    let c = cookie(&r);
    assert_eq!(page(&s, "/ui/rollouts", &c).status, 200);
    // Never to another site.
    let r = form_login(&s, "otto", "//evil.example/");
    assert_eq!(r.header("location"), Some("/ui/"));
    // A wrong password: the form again, with the reason, and no cookie.
    let r = post_login(
        &s,
        &[("user", "otto"), ("password", "wrong password here")],
        None,
    );
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
    assert!(
        r.text().contains("wrong user name or password"),
        "{}",
        r.text()
    );
    // A login form posted from another site is refused (login CSRF).
    let r = post_login(
        &s,
        &[("user", "otto"), ("password", PASSWORD)],
        Some("http://evil.example"),
    );
    assert_eq!(r.status, 403);
    assert!(r.header("set-cookie").is_none());
}

#[test]
fn pages_carry_a_strict_policy_and_show_device_text_as_text() {
    let s = Server::start();
    add(
        &s,
        json!({ "name": "otto", "role": "operator", "password": PASSWORD }),
    );
    assert_eq!(s.register("evil", &[]).status, 201);
    let markup = r#"<script>alert(1)</script><img src=x onerror=alert(2)>"#;
    assert_eq!(s.pair("evil", facts(markup)).status, 200);
    let c = cookie(&form_login(&s, "otto", "/ui/"));
    for path in [
        "/ui/",
        "/ui/pending",
        "/ui/appliances/evil",
        "/ui/bundles",
        "/ui/rollouts",
        "/ui/configs",
        "/ui/users",
    ] {
        let r = page(&s, path, &c);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let html = r.text();
        assert!(!html.contains("<script>alert"), "{path}");
        assert!(!html.contains("<img src=x"), "{path}");
        if path == "/ui/" || path.ends_with("/evil") {
            assert!(
                html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
                "{path}: {html}"
            );
        }
        // The only script is the console's own file.
        assert_eq!(html.matches("<script").count(), 1, "{path}");
    }
}

#[test]
fn refusals_are_pages_and_scopes_hold_on_pages_too() {
    let s = Server::start();
    add(
        &s,
        json!({ "name": "vera", "role": "viewer", "password": PASSWORD, "scope": { "region": "north" } }),
    );
    s.paired("n-1", &[("region", "north")]);
    s.paired("s-1", &[("region", "south")]);
    let c = cookie(&form_login(&s, "vera", "/ui/"));
    let r = page(&s, "/ui/audit", &c);
    assert_eq!(r.status, 403);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(
        r.text().contains("this needs the admin role"),
        "{}",
        r.text()
    );
    assert_eq!(page(&s, "/ui/appliances/n-1", &c).status, 200);
    let r = page(&s, "/ui/appliances/s-1", &c);
    assert_eq!(r.status, 404, "{}", r.text());
    let fleet = page(&s, "/ui/", &c).text();
    assert!(fleet.contains("n-1") && !fleet.contains("s-1"), "{fleet}");
    assert!(fleet.contains("1 appliances in your scope"), "{fleet}");
    // A viewer's pages have no action forms.
    let pending = page(&s, "/ui/pending", &c).text();
    assert!(!pending.contains("data-api"), "{pending}");
    // An ended session goes back to the login.
    let r = page(&s, "/ui/", "p6os_session=expired-or-forged");
    assert_eq!(r.status, 303);
    assert!(r.header("location").unwrap().starts_with("/ui/login?next="));
}
