//! Every operator list is paged (`limit`, at most 500; `after` = the previous page's `next`),
//! events are capped per appliance, and a selector update is done in SQL; the operator CLI
//! follows the pages.

mod common;

use std::collections::BTreeSet;

use common::*;
use p6os_protocol::{AppliancePage, BundlePage, DesiredResponse, EventPage, MAX_PAGE_LIMIT};

const FLEET: usize = 1234;

/// Registers `nuc-0000` .. `nuc-1233` (every third one labelled `site=north`) over one
/// kept-alive connection.
fn register_fleet(s: &Server) {
    let agent = agent();
    for i in 0..FLEET {
        let labels = if i % 3 == 0 {
            serde_json::json!({ "site": "north" })
        } else {
            serde_json::json!({})
        };
        let r = agent
            .post(format!("{}{API}/appliances", s.url))
            .header("Authorization", format!("Bearer {}", s.admin))
            .send_json(serde_json::json!({ "id": format!("nuc-{i:04}"), "labels": labels }))
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
}

/// Every id of `GET /appliances?{query}` page by page: the ids in order and the page count.
fn walk(s: &Server, query: &str) -> (Vec<String>, usize) {
    let (mut ids, mut pages, mut after) = (Vec::new(), 0, None::<String>);
    loop {
        let q = match &after {
            Some(a) => format!("{query}&after={a}"),
            None => query.to_string(),
        };
        let r = s.admin("GET", &format!("{API}/appliances?{q}"), Body::None);
        assert_eq!(r.status, 200, "{}", r.text());
        let page: AppliancePage = r.json();
        pages += 1;
        ids.extend(page.items.into_iter().map(|a| a.id));
        match page.next {
            Some(next) => after = Some(next),
            None => return (ids, pages),
        }
    }
}

#[test]
fn paging_walks_all_1234_appliances_exactly_once() {
    let s = Server::start();
    register_fleet(&s);
    let every: Vec<String> = (0..FLEET).map(|i| format!("nuc-{i:04}")).collect();
    for (query, pages) in [("limit=500", 3), ("limit=100", 13)] {
        let (ids, n) = walk(&s, query);
        assert_eq!(ids, every, "{query}");
        assert_eq!(n, pages, "{query}");
    }
    // The default page is 100.
    let first: AppliancePage = s
        .admin("GET", &format!("{API}/appliances"), Body::None)
        .json();
    assert_eq!(first.items.len(), 100);
    assert_eq!(first.next.as_deref(), Some("nuc-0099"));
    // A label filter is applied before the limit: full pages of matching ones.
    let (north, pages) = walk(&s, "label=site%3Dnorth&limit=100");
    let want: Vec<String> = (0..FLEET)
        .step_by(3)
        .map(|i| format!("nuc-{i:04}"))
        .collect();
    assert_eq!(north, want);
    assert_eq!(pages, want.len().div_ceil(100));
    // An id deleted between two pages does not disturb the walk.
    let page: AppliancePage = s
        .admin("GET", &format!("{API}/appliances?limit=10"), Body::None)
        .json();
    let next = page.next.unwrap();
    assert_eq!(
        s.admin("DELETE", &format!("{API}/appliances/{next}"), Body::None)
            .status,
        204
    );
    let page: AppliancePage = s
        .admin(
            "GET",
            &format!("{API}/appliances?limit=1&after={next}"),
            Body::None,
        )
        .json();
    assert_eq!(page.items[0].id, "nuc-0010");
}

#[test]
fn a_limit_above_the_maximum_is_refused() {
    let s = Server::start();
    for path in [
        format!("{API}/appliances"),
        format!("{API}/bundles"),
        format!("{API}/appliances/none/events"),
    ] {
        for bad in ["limit=501", "limit=0", "limit=ten"] {
            let r = s.admin("GET", &format!("{path}?{bad}"), Body::None);
            assert_eq!(r.status, 400, "{path}?{bad}: {}", r.text());
            assert_eq!(r.field().as_deref(), Some("limit"), "{path}?{bad}");
        }
    }
    let r = s.admin(
        "GET",
        &format!("{API}/appliances?limit={MAX_PAGE_LIMIT}"),
        Body::None,
    );
    assert_eq!(r.status, 200);
    let r = s.admin("GET", &format!("{API}/bundles?colour=red"), Body::None);
    assert_eq!((r.status, r.field().as_deref()), (400, Some("colour")));
}

#[test]
fn events_are_capped_at_the_newest_1000() {
    let s = Server::start();
    assert_eq!(s.register("nuc-1", &[]).status, 201);
    let agent = agent();
    // "registered", then 1,010 "desired" events.
    for i in 0..1010 {
        let r = agent
            .put(format!("{}{API}/appliances/nuc-1/desired", s.url))
            .header("Authorization", format!("Bearer {}", s.admin))
            .send_json(serde_json::json!({ "version": format!("1.0.{i}") }))
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let mut events = Vec::new();
    let mut after = 0i64;
    loop {
        let page: EventPage = s
            .admin(
                "GET",
                &format!("{API}/appliances/nuc-1/events?limit=500&after={after}"),
                Body::None,
            )
            .json();
        events.extend(page.items);
        match page.next {
            Some(n) => after = n.parse().unwrap(),
            None => break,
        }
    }
    assert_eq!(events.len(), 1000);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(events.iter().all(|e| e.kind == "desired"));
    assert_eq!(events[0].message, "desired version set to 1.0.10");
    assert_eq!(events[999].message, "desired version set to 1.0.1009");
    let r = s.admin(
        "GET",
        &format!("{API}/appliances/nuc-1/events?after=x"),
        Body::None,
    );
    assert_eq!((r.status, r.field().as_deref()), (400, Some("after")));
}

#[test]
fn a_selector_update_matches_in_sql_and_records_only_changes() {
    let s = Server::start();
    register_fleet(&s);
    let set = |version: &str| -> DesiredResponse {
        let r = s.admin(
            "PUT",
            &format!("{API}/desired"),
            Body::json(&serde_json::json!({ "selector": { "site": "north" }, "version": version })),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    let matched = set("2.0.0").matched;
    let want: Vec<String> = (0..FLEET)
        .step_by(3)
        .map(|i| format!("nuc-{i:04}"))
        .collect();
    assert_eq!(matched, want);
    // Again with the same version: matched, but nothing changed, so no new event.
    assert_eq!(set("2.0.0").matched, want);
    let events: EventPage = s
        .admin(
            "GET",
            &format!("{API}/appliances/nuc-0003/events"),
            Body::None,
        )
        .json();
    let kinds: Vec<&str> = events.items.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["registered", "desired"]);
    let a: p6os_protocol::Appliance = s
        .admin("GET", &format!("{API}/appliances/nuc-0003"), Body::None)
        .json();
    assert_eq!(a.desired_version.as_deref(), Some("2.0.0"));
    let b: p6os_protocol::Appliance = s
        .admin("GET", &format!("{API}/appliances/nuc-0001"), Body::None)
        .json();
    assert_eq!(b.desired_version, None);
    // Cleared.
    set_clear(&s);
    let a: p6os_protocol::Appliance = s
        .admin("GET", &format!("{API}/appliances/nuc-0003"), Body::None)
        .json();
    assert_eq!(a.desired_version, None);
}

fn set_clear(s: &Server) {
    let r = s.admin(
        "PUT",
        &format!("{API}/desired"),
        Body::raw_json(r#"{"selector":{"site":"north"},"version":null}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn bundles_are_paged_by_name_arch_and_upload() {
    let s = Server::start();
    let key = trusted_key();
    for (name, version, seed) in [
        ("tiny", "1.0.0", 1),
        ("tiny", "2.0.0", 2),
        ("big", "1.0.0", 3),
    ] {
        let r = s.admin(
            "POST",
            &format!("{API}/bundles"),
            Body::Bytes(
                "application/octet-stream",
                bundle(&key, name, version, seed),
            ),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let mut seen = Vec::new();
    let mut query = "limit=1".to_string();
    loop {
        let page: BundlePage = s
            .admin("GET", &format!("{API}/bundles?{query}"), Body::None)
            .json();
        assert!(page.items.len() <= 1);
        seen.extend(
            page.items
                .iter()
                .map(|b| (b.name.clone(), b.version.clone())),
        );
        match page.next {
            Some(n) => query = format!("limit=1&after={n}"),
            None => break,
        }
    }
    let names: Vec<(&str, &str)> = seen.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    assert_eq!(
        names,
        [("big", "1.0.0"), ("tiny", "1.0.0"), ("tiny", "2.0.0")]
    );
    let r = s.admin(
        "GET",
        &format!("{API}/bundles?after={}", "0".repeat(64)),
        Body::None,
    );
    assert_eq!((r.status, r.field().as_deref()), (400, Some("after")));
}

#[test]
fn the_cli_follows_every_page() {
    let s = Server::start();
    register_fleet(&s);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_p6os-console"))
            .args(["--url", &s.url])
            .args(args)
            .env("P6OS_CONSOLE_ADMIN_TOKEN", &s.admin)
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let all: Vec<p6os_protocol::Appliance> =
        serde_json::from_str(&run(&["appliances", "list", "--json"])).unwrap();
    let ids: BTreeSet<String> = all.into_iter().map(|a| a.id).collect();
    assert_eq!(ids.len(), FLEET);
    let some: Vec<p6os_protocol::Appliance> =
        serde_json::from_str(&run(&["appliances", "list", "--limit", "7", "--json"])).unwrap();
    assert_eq!(some.len(), 7);
    let table = run(&["appliances", "list", "--label", "site=north"]);
    assert_eq!(table.lines().count(), 1 + FLEET.div_ceil(3));
    let events: Vec<p6os_protocol::Event> =
        serde_json::from_str(&run(&["appliances", "events", "nuc-0000", "--json"])).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(run(&["bundles", "list", "--json"]).trim(), "[]");
}
