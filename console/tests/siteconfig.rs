//! Remote reconfiguration through the API: a document is checked with the agent's own
//! validator (every problem with line and column, nothing stored), set for an id or a
//! selector, announced in heartbeats, fetched only by the devices it was set for, shown back
//! without its secrets, reported on, and kept in a paged history.

mod common;

use common::*;
use p6os_protocol::siteconfig::{
    ConfigDocument, ConfigHistoryPage, ConfigOutcome, ConfigRejected, ConfigReport, ConfigShow,
    SetConfigResponse,
};
use p6os_protocol::HeartbeatResponse;

const CONSOLE: &str = "console: {endpoint: https://console.example, token: pair-token-secret}\n";
const SECRET_HASH: &str = "$y$j9T$abcdefghijklmnopqrstu.$0123456789abcdefghijklmnopqrstuvwxyzABCDE";

fn document(host: &str) -> String {
    format!(
        "hostname: {host}\nusers:\n  - name: ops\n    sudo: true\n    passwd: \"{SECRET_HASH}\"\n\
         registries:\n  configs:\n    harbor.example: {{username: robot, password: registry-pw-42}}\n\
         console: {{endpoint: \"https://console.example\", token: pair-token-secret}}\n"
    )
}

fn set(s: &Server, body: serde_json::Value) -> Reply {
    s.admin("PUT", &format!("{API}/config"), Body::json(&body))
}

fn offer(s: &Server, id: &str, token: &str) -> Option<p6os_protocol::siteconfig::ConfigRef> {
    let r = s.heartbeat(id, token, &beat("1.0.0"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json::<HeartbeatResponse>().config
}

#[test]
fn an_invalid_document_lists_every_problem_with_its_place_and_stores_nothing() {
    let s = Server::start();
    let token = s.paired("a1", &[("site", "north")]);
    let bad = "hostname: -bad-\nusers:\n  - name: ops\n    sudo: maybe\ntimezon: UTC\n";
    let r = set(&s, serde_json::json!({ "id": "a1", "document": bad }));
    assert_eq!(r.status, 400, "{}", r.text());
    let rejected: ConfigRejected = r.json();
    assert_eq!(rejected.field.as_deref(), Some("document"));
    assert!(rejected.problems.len() >= 3, "{rejected:?}");
    assert!(rejected.problems.iter().all(|p| p.line > 0 && p.column > 0));
    let lines: Vec<usize> = rejected.problems.iter().map(|p| p.line).collect();
    for line in [1, 4, 5] {
        assert!(lines.contains(&line), "line {line} in {rejected:?}");
    }
    // An unknown key comes with the closest known one.
    assert!(rejected
        .problems
        .iter()
        .any(|p| p.hint.as_deref().unwrap_or("").contains("timezone")));
    // Nothing stored: no configuration, nothing announced.
    assert_eq!(
        s.admin("GET", &format!("{API}/appliances/a1/config"), Body::None)
            .status,
        404
    );
    assert_eq!(offer(&s, "a1", &token), None);
    // Other bad input names its field.
    for (body, field) in [
        (serde_json::json!({ "document": "hostname: a\n" }), "id"),
        (
            serde_json::json!({ "id": "a1", "selector": {"site": "north"}, "document": "" }),
            "selector",
        ),
        (
            serde_json::json!({ "id": "a1", "document": "hostname: a\n", "signature": "nope" }),
            "signature",
        ),
        (
            serde_json::json!({ "id": "a1", "document": "hostname: a\n", "extra": 1 }),
            "extra",
        ),
    ] {
        let r = set(&s, body);
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.field().as_deref(), Some(field), "{}", r.text());
    }
    assert_eq!(
        set(
            &s,
            serde_json::json!({ "id": "nobody", "document": format!("hostname: a\n{CONSOLE}") })
        )
        .status,
        404
    );
    // A document that would cut the device off from the console is refused at once.
    let r = set(
        &s,
        serde_json::json!({ "id": "a1", "document": "hostname: a\n" }),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("no console section"), "{}", r.text());
    let other = format!("appliance: {{id: a2}}\n{CONSOLE}");
    let r = set(&s, serde_json::json!({ "id": "a1", "document": other }));
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("register as another appliance"),
        "{}",
        r.text()
    );
}

#[test]
fn set_by_id_and_selector_fetch_only_your_own_secrets_never_shown() {
    let s = Server::start();
    let t1 = s.paired("n1", &[("site", "north")]);
    let t2 = s.paired("n2", &[("site", "north")]);
    let t3 = s.paired("s1", &[("site", "south")]);
    let doc = document("store-n");
    let r = set(
        &s,
        serde_json::json!({ "selector": {"site": "north"}, "document": doc }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let set_north: SetConfigResponse = r.json();
    assert_eq!(set_north.targets, ["n1", "n2"]);
    assert!(set_north.digest.starts_with("sha256:"));
    // Announced to the targets only.
    let o1 = offer(&s, "n1", &t1).expect("announced to n1");
    assert_eq!((o1.config, o1.size), (set_north.config, doc.len() as u64));
    assert!(offer(&s, "n2", &t2).is_some());
    assert_eq!(offer(&s, "s1", &t3), None);
    // The device fetches its own, secrets included (it applies them).
    let r = s.call("GET", &o1.path, Some(&t1), Body::None);
    assert_eq!(r.status, 200, "{}", r.text());
    let fetched: ConfigDocument = r.json();
    assert_eq!(fetched.document, doc);
    // Another device's token, the admin token, no token: refused.
    assert_eq!(s.call("GET", &o1.path, Some(&t3), Body::None).status, 403);
    assert_eq!(
        s.call("GET", &o1.path, Some(&s.admin), Body::None).status,
        403
    );
    assert_eq!(s.call("GET", &o1.path, None, Body::None).status, 401);
    // s1 cannot fetch north's document under its own id either: not set for it.
    let theirs = format!("{API}/appliances/s1/config/{}", set_north.config);
    assert_eq!(s.call("GET", &theirs, Some(&t3), Body::None).status, 404);
    // One id: only that one.
    let r = set(
        &s,
        serde_json::json!({ "id": "s1", "document": document("store-s") }),
    );
    let set_south: SetConfigResponse = r.json();
    assert_eq!(set_south.targets, ["s1"]);
    assert_ne!(set_south.config, set_north.config);
    // Shown back to the operator without a secret, anywhere.
    for path in [
        "/appliances/n1/config",
        "/appliances/n1/config/history",
        "/appliances/s1/config",
    ] {
        let r = s.admin("GET", &format!("{API}{path}"), Body::None);
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        for secret in [
            "abcdefghijklmnopqrstu",
            "registry-pw-42",
            "pair-token-secret",
        ] {
            assert!(!text.contains(secret), "{secret} in {path}: {text}");
        }
    }
    let show: ConfigShow = s
        .admin("GET", &format!("{API}/appliances/n1/config"), Body::None)
        .json();
    assert_eq!(show.document["hostname"], "store-n");
    assert_eq!(show.document["users"][0]["passwd"], "(redacted)");
    assert_eq!(show.current.outcome, None);
    // Nor in the events.
    let events = s
        .admin("GET", &format!("{API}/appliances/n1/events"), Body::None)
        .text();
    assert!(!events.contains("registry-pw-42"));
}

#[test]
fn reports_end_the_announcement_and_a_newer_configuration_wins() {
    let s = Server::start();
    let t = s.paired("r1", &[]);
    let first: SetConfigResponse = set(
        &s,
        serde_json::json!({ "id": "r1", "document": document("one") }),
    )
    .json();
    let report = |config, outcome, problems: &[&str]| {
        let body = ConfigReport {
            config,
            outcome,
            digest: "sha256:x".into(),
            problems: problems.iter().map(|p| p.to_string()).collect(),
        };
        s.call(
            "POST",
            &format!("{API}/appliances/r1/config/report"),
            Some(&t),
            Body::json(&body),
        )
    };
    assert_eq!(
        report(
            first.config,
            ConfigOutcome::Refused,
            &["u.yaml:1:1: bad\nline"]
        )
        .status,
        204
    );
    assert_eq!(offer(&s, "r1", &t), None, "reported: no longer announced");
    let show: ConfigShow = s
        .admin("GET", &format!("{API}/appliances/r1/config"), Body::None)
        .json();
    assert_eq!(show.current.outcome, Some(ConfigOutcome::Refused));
    assert_eq!(show.current.problems, ["u.yaml:1:1: bad line"]);
    // A newer one is announced; a report on the older is a 409.
    let second: SetConfigResponse = set(
        &s,
        serde_json::json!({ "id": "r1", "document": document("two") }),
    )
    .json();
    assert_eq!(offer(&s, "r1", &t).map(|o| o.config), Some(second.config));
    assert_eq!(
        report(first.config, ConfigOutcome::Applied, &[]).status,
        409
    );
    // The older document cannot be fetched any more.
    let old = format!("{API}/appliances/r1/config/{}", first.config);
    assert_eq!(s.call("GET", &old, Some(&t), Body::None).status, 404);
    assert_eq!(
        report(second.config, ConfigOutcome::Applied, &[]).status,
        204
    );
    // Another device's token cannot report for r1.
    let other = s.paired("r2", &[]);
    let body = ConfigReport {
        config: second.config,
        outcome: ConfigOutcome::Refused,
        digest: String::new(),
        problems: vec![],
    };
    let r = s.call(
        "POST",
        &format!("{API}/appliances/r1/config/report"),
        Some(&other),
        Body::json(&body),
    );
    assert_eq!(r.status, 403);
    let events = s
        .admin("GET", &format!("{API}/appliances/r1/events"), Body::None)
        .text();
    assert!(
        events.contains("site configuration 1 refused: u.yaml:1:1: bad line"),
        "{events}"
    );
}

#[test]
fn history_is_paged_newest_first() {
    let s = Server::start();
    s.paired("h1", &[]);
    let mut numbers = Vec::new();
    for i in 0..7 {
        let r: SetConfigResponse = set(
            &s,
            serde_json::json!({ "id": "h1", "document": format!("hostname: h{i}\n{CONSOLE}") }),
        )
        .json();
        numbers.push(r.config);
    }
    numbers.reverse();
    let (mut seen, mut after, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let q = after
            .as_ref()
            .map_or(String::new(), |a| format!("&after={a}"));
        let r = s.admin(
            "GET",
            &format!("{API}/appliances/h1/config/history?limit=3{q}"),
            Body::None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let page: ConfigHistoryPage = r.json();
        pages += 1;
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|a| a.config));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, numbers);
    assert_eq!(pages, 3);
    let r = s.admin(
        "GET",
        &format!("{API}/appliances/h1/config/history?limit=501"),
        Body::None,
    );
    assert_eq!(r.field().as_deref(), Some("limit"));
    let r = s.admin(
        "GET",
        &format!("{API}/appliances/nobody/config/history"),
        Body::None,
    );
    assert_eq!(r.status, 404);
}

#[test]
fn config_cli_set_show_history() {
    let s = Server::start();
    s.paired("c1", &[("site", "north")]);
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "hostname: -bad-\ntimezon: UTC\n").unwrap();
    let bad = bad.to_str().unwrap();
    let (code, out, err) = cli(&s, &["config", "set", bad, "--id", "c1"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&format!("{bad}:1:11: hostname:")), "{err}");
    assert!(err.contains(&format!("{bad}:2:1:")), "{err}");
    assert!(err.contains("hint: did you mean `timezone`?"), "{err}");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, document("store-c")).unwrap();
    let good = good.to_str().unwrap();
    let (code, out, err) = cli(
        &s,
        &["config", "set", good, "--selector", "site=north", "--json"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let set: SetConfigResponse = serde_json::from_str(&out).unwrap();
    assert_eq!(set.targets, ["c1"]);
    let (code, out, _) = cli(&s, &["config", "show", "c1", "--json"]);
    assert_eq!(code, 0);
    let show: ConfigShow = serde_json::from_str(&out).unwrap();
    assert_eq!(show.current.config, set.config);
    let (code, out, _) = cli(&s, &["config", "show", "c1"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("not reported yet") && out.contains("store-c"),
        "{out}"
    );
    assert!(!out.contains("registry-pw-42"), "{out}");
    let (code, out, _) = cli(&s, &["config", "history", "c1", "--json"]);
    assert_eq!(code, 0);
    let all: Vec<p6os_protocol::siteconfig::ConfigAssignment> = serde_json::from_str(&out).unwrap();
    assert_eq!(all.len(), 1);
    let (code, _, _) = cli(&s, &["config", "set", good]);
    assert_eq!(code, 2, "a target is required");
}
