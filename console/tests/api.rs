//! The API over real HTTP on 127.0.0.1 against a real SQLite file: operators, devices,
//! authentication, bad input, bundles, ranges, the OpenAPI document, the log, and the CLI.

mod common;

use common::*;
use p6os_protocol::{
    Appliance, Bundle, DesiredResponse, ErrorBody, Event, EventPage, HeartbeatResponse,
    OutcomeKind, PairResponse, Phase, Progress, Status, UpgradeOutcome, MAX_JSON_BODY,
};

fn appliances(s: &Server, query: &str) -> Vec<String> {
    let r = s.admin("GET", &format!("{API}/appliances{query}"), Body::None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json::<p6os_protocol::AppliancePage>()
        .items
        .into_iter()
        .map(|a| a.id)
        .collect()
}

#[test]
fn register_list_filter_show_delete() {
    let s = Server::start();
    assert_eq!(s.register("b-2", &[("site", "north")]).status, 201);
    let r = s.register("a-1", &[("site", "south"), ("tier", "edge")]);
    assert_eq!(r.status, 201);
    let a: Appliance = r.json();
    assert_eq!(a.status, Status::Unpaired);
    assert_eq!(s.register("a-1", &[]).status, 409);
    let _token = s.paired("c-3", &[("site", "south")]);

    assert_eq!(appliances(&s, ""), ["a-1", "b-2", "c-3"]);
    assert_eq!(appliances(&s, "?status=ready"), ["c-3"]);
    assert_eq!(appliances(&s, "?status=unpaired"), ["a-1", "b-2"]);
    assert_eq!(appliances(&s, "?label=site=south"), ["a-1", "c-3"]);
    assert_eq!(appliances(&s, "?label=site=south&label=tier=edge"), ["a-1"]);
    assert!(appliances(&s, "?version=9.9").is_empty());
    let r = s.admin("GET", &format!("{API}/appliances?status=bogus"), Body::None);
    assert_eq!((r.status, r.field().as_deref()), (400, Some("status")));

    let r = s.admin("GET", &format!("{API}/appliances/c-3"), Body::None);
    let c: Appliance = r.json();
    assert_eq!(c.status, Status::Ready);
    assert_eq!(c.facts.unwrap().cpu_count, 2);
    assert!(c.paired_at.is_some());
    assert_eq!(
        s.admin("GET", &format!("{API}/appliances/nope"), Body::None)
            .status,
        404
    );

    assert_eq!(
        s.admin("DELETE", &format!("{API}/appliances/b-2"), Body::None)
            .status,
        204
    );
    assert_eq!(
        s.admin("DELETE", &format!("{API}/appliances/b-2"), Body::None)
            .status,
        404
    );
    assert_eq!(appliances(&s, ""), ["a-1", "c-3"]);
}

#[test]
fn pending_then_registered_then_paired() {
    let s = Server::start();
    let r = s.pair("box-1", facts("box-1"));
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(matches!(
        r.json::<PairResponse>(),
        PairResponse::Pending { retry_secs: 30, .. }
    ));
    // Visible to the operator, with its facts.
    let a: Appliance = s
        .admin("GET", &format!("{API}/appliances/box-1"), Body::None)
        .json();
    assert_eq!(a.status, Status::Pending);
    assert_eq!(a.facts.as_ref().unwrap().hostname, "box-1");
    // Asking again: still pending.
    assert_eq!(s.pair("box-1", facts("box-1")).status, 202);
    // Registered: the next pairing succeeds.
    let r = s.register("box-1", &[("site", "x")]);
    assert_eq!(r.status, 201);
    let a: Appliance = r.json();
    assert_eq!(a.status, Status::Unpaired);
    assert!(a.facts.is_some(), "a pending id keeps its facts");
    let r = s.pair("box-1", facts("box-1"));
    assert_eq!(r.status, 200, "{}", r.text());
    let PairResponse::Ready {
        device_token,
        heartbeat_secs,
    } = r.json()
    else {
        panic!("{}", r.text())
    };
    assert_eq!(heartbeat_secs, 60);
    assert_eq!(
        s.heartbeat("box-1", &device_token, &beat("1.0.0")).status,
        200
    );
    // Another key asking for a paired id (anyone holding the fleet's pairing token) gets no
    // token and changes nothing: the device keeps its record. (More in tests/pairing.rs.)
    let intruder = device_key("intruder");
    let r = s.pair_with("box-1", facts("intruder"), &intruder);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        s.heartbeat("box-1", &device_token, &beat("1.0.0")).status,
        200
    );
    let shown: Appliance = s
        .admin("GET", &format!("{API}/appliances/box-1"), Body::None)
        .json();
    assert_eq!(shown.facts.unwrap().hostname, "box-1");
    assert_eq!(
        shown.key_fingerprint,
        Some(device_key("box-1").public().fingerprint())
    );
    assert_eq!(
        shown.requested_fingerprint,
        Some(intruder.public().fingerprint())
    );
    // The operator's way to let a replaced device pair: approve its key.
    let replacement = device_key("box-1 replacement");
    let r = s.admin(
        "POST",
        &format!("{API}/appliances/box-1/approve"),
        Body::json(&serde_json::json!({"fingerprint": replacement.public().fingerprint()})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let PairResponse::Ready {
        device_token: second,
        ..
    } = s.pair_with("box-1", facts("box-1"), &replacement).json()
    else {
        panic!()
    };
    assert_ne!(second, device_token);
    assert_eq!(
        s.heartbeat("box-1", &device_token, &beat("1.0.0")).status,
        401
    );
    assert_eq!(s.heartbeat("box-1", &second, &beat("1.0.0")).status, 200);
    let events: Vec<Event> = s
        .admin("GET", &format!("{API}/appliances/box-1/events"), Body::None)
        .json::<p6os_protocol::EventPage>()
        .items;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "pair-requested",
            "registered",
            "paired",
            "first-heartbeat",
            "key-awaits-approval",
            "key-approved",
            "paired"
        ]
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[test]
fn wrong_pairing_token_stores_nothing() {
    let s = Server::start();
    let mut req = serde_json::json!({ "pairing_token": "wrong", "facts": facts("x") });
    let r = s.call(
        "POST",
        &format!("{API}/appliances/x/pair"),
        None,
        Body::json(&req),
    );
    assert_eq!(r.status, 403);
    assert!(appliances(&s, "").is_empty());
    req["pairing_token"] = s.pairing.clone().into();
    let r = s.call(
        "POST",
        &format!("{API}/appliances/x%2Fy/pair"),
        None,
        Body::json(&req),
    );
    assert_eq!((r.status, r.field().as_deref()), (400, Some("id")));
}

#[test]
fn authentication_and_authorisation() {
    let s = Server::start();
    let a = s.paired("dev-a", &[]);
    let b = s.paired("dev-b", &[]);
    let hb = |id: &str, token: Option<&str>| {
        s.call(
            "POST",
            &format!("{API}/appliances/{id}/heartbeat"),
            token,
            Body::json(&beat("1.0.0")),
        )
    };
    assert_eq!(hb("dev-a", Some(&a)).status, 200);
    assert_eq!(hb("dev-a", Some(&b)).status, 403);
    let r = hb("dev-a", None);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(hb("dev-a", Some("garbage")).status, 401);
    assert_eq!(hb("dev-a", Some(&s.admin)).status, 403);
    // The token is checked before the body: a stranger learns nothing about the schema.
    for token in [Some("garbage"), Some(b.as_str())] {
        let r = s.call(
            "POST",
            &format!("{API}/appliances/dev-a/heartbeat"),
            token,
            Body::raw_json("{\"slot\": 1}"),
        );
        assert!(matches!(r.status, 401 | 403), "{}", r.status);
        assert_eq!(r.field(), None);
    }
    // A device token on an operator endpoint.
    let r = s.call("GET", &format!("{API}/appliances"), Some(&a), Body::None);
    assert_eq!(r.status, 403);
    let r = s.call("GET", &format!("{API}/appliances"), None, Body::None);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = s.call(
        "GET",
        &format!("{API}/appliances"),
        Some("nope"),
        Body::None,
    );
    assert_eq!(r.status, 401);
    // Deleted: its token stops working.
    assert_eq!(
        s.admin("DELETE", &format!("{API}/appliances/dev-a"), Body::None)
            .status,
        204
    );
    assert_eq!(hb("dev-a", Some(&a)).status, 401);
    let r = hb("dev-a", Some(&a));
    let e: ErrorBody = r.json();
    assert!(!e.error.is_empty());
}

#[test]
fn bad_input() {
    let s = Server::start();
    let token = s.paired("dev", &[]);
    let path = format!("{API}/appliances/dev/heartbeat");
    let hb = |body: Body| s.call("POST", &path, Some(&token), body);

    let big = format!(
        r#"{{"slot":"a","version":"1","health":"good","x":"{}"}}"#,
        "y".repeat(MAX_JSON_BODY)
    );
    assert_eq!(hb(Body::raw_json(&big)).status, 413);
    let r = hb(Body::raw_json(r#"{"slot":"a","#));
    assert_eq!(r.status, 400);
    assert!(
        r.json::<ErrorBody>().error.contains("malformed"),
        "{}",
        r.text()
    );
    // Devices of a newer release may send fields and values this console does not know.
    let r = hb(Body::raw_json(
        r#"{"slot":"a","version":"1","health":"good","colour":1}"#,
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = hb(Body::raw_json(
        r#"{"slot":"a","version":"1","health":"great"}"#,
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = hb(Body::raw_json(
        r#"{"slot":1,"version":"1","health":"good"}"#,
    ));
    assert_eq!((r.status, r.field().as_deref()), (400, Some("slot")));
    let r = hb(Body::raw_json(
        r#"{"slot":"a","version":"1 0","health":"good"}"#,
    ));
    assert_eq!((r.status, r.field().as_deref()), (400, Some("version")));
    // Operator requests refuse unknown fields (a typo is not ignored).
    let r = s.admin(
        "POST",
        &format!("{API}/appliances"),
        Body::raw_json(r#"{"id":"ok","lables":{}}"#),
    );
    assert_eq!((r.status, r.field().as_deref()), (400, Some("lables")));
    let r = hb(Body::Bytes("text/plain", b"{}".to_vec()));
    assert_eq!(r.status, 415);

    // Wrong type deep in the facts.
    let mut req = serde_json::json!({ "pairing_token": s.pairing, "facts": facts("dev") });
    req["facts"]["cpu_count"] = "two".into();
    let r = s.call(
        "POST",
        &format!("{API}/appliances/dev/pair"),
        None,
        Body::json(&req),
    );
    assert_eq!(
        (r.status, r.field().as_deref()),
        (400, Some("facts.cpu_count"))
    );
    // A missing field deep in the facts.
    req["facts"]["cpu_count"] = 2.into();
    req["facts"].as_object_mut().unwrap().remove("kernel");
    let r = s.call(
        "POST",
        &format!("{API}/appliances/dev/pair"),
        None,
        Body::json(&req),
    );
    assert_eq!(
        (r.status, r.field().as_deref()),
        (400, Some("facts.kernel"))
    );
    assert!(r.text().contains("missing field `kernel`"), "{}", r.text());

    // Ids, labels, versions.
    let r = s.admin(
        "POST",
        &format!("{API}/appliances"),
        Body::raw_json(r#"{"id":"-bad"}"#),
    );
    assert_eq!((r.status, r.field().as_deref()), (400, Some("id")));
    let r = s.admin(
        "POST",
        &format!("{API}/appliances"),
        Body::raw_json(r#"{"id":"ok","labels":{"site":"a b"}}"#),
    );
    assert_eq!((r.status, r.field().as_deref()), (400, Some("labels.site")));
    let r = s.admin(
        "PUT",
        &format!("{API}/appliances/dev/desired"),
        Body::raw_json(r#"{"version":"1 0"}"#),
    );
    assert_eq!((r.status, r.field().as_deref()), (400, Some("version")));
    let r = s.admin(
        "PUT",
        &format!("{API}/desired"),
        Body::raw_json(r#"{"selector":{},"version":"2"}"#),
    );
    assert_eq!((r.status, r.field().as_deref()), (400, Some("selector")));
    let r = s.admin("GET", &format!("{API}/nothing"), Body::None);
    assert_eq!(r.status, 404);
    r.json::<ErrorBody>();
    let r = s.admin("PATCH", &format!("{API}/appliances"), Body::None);
    assert_eq!(r.status, 405);
    assert!(!s.log_text().contains("status=500"), "{}", s.log_text());
    // Client mistakes are logged like any request, at info.
    assert!(
        s.logged("PATCH", "/api/v1/appliances", 405).is_some(),
        "{}",
        s.log_text()
    );
}

#[test]
fn desired_versions_bundles_and_heartbeats() {
    let s = Server::start();
    let a = s.paired("a", &[("site", "north")]);
    let b = s.paired("b", &[("site", "north")]);
    let c = s.paired("c", &[("site", "south")]);

    // Nothing desired yet.
    let r: HeartbeatResponse = s.heartbeat("a", &a, &beat("1.0.0")).json();
    assert_eq!((r.desired_version, r.bundle), (None, None));

    // By selector, before the bundle exists: no bundle, one event however many heartbeats.
    let r: DesiredResponse = s
        .admin(
            "PUT",
            &format!("{API}/desired"),
            Body::raw_json(r#"{"selector":{"site":"north"},"version":"2.0.0"}"#),
        )
        .json();
    assert_eq!(r.matched, ["a", "b"]);
    for _ in 0..3 {
        let r: HeartbeatResponse = s.heartbeat("a", &a, &beat("1.0.0")).json();
        assert_eq!(r.desired_version.as_deref(), Some("2.0.0"));
        assert_eq!(r.bundle, None);
    }
    let events: Vec<Event> = s
        .admin("GET", &format!("{API}/appliances/a/events"), Body::None)
        .json::<p6os_protocol::EventPage>()
        .items;
    assert_eq!(
        events.iter().filter(|e| e.kind == "bundle-missing").count(),
        1
    );

    // The bundle arrives.
    let file = bundle(&trusted_key(), "tiny", "2.0.0", 1);
    let r = s.admin(
        "POST",
        &format!("{API}/bundles"),
        Body::Bytes("application/octet-stream", file.clone()),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let held: Bundle = r.json();
    let r: HeartbeatResponse = s.heartbeat("b", &b, &beat("1.0.0")).json();
    let bref = r.bundle.expect("a bundle");
    assert_eq!(bref.sha256, held.sha256);
    assert_eq!(bref.size, file.len() as u64);
    assert_eq!(bref.version, "2.0.0");
    assert_eq!(bref.path, format!("{API}/bundles/{}/content", held.sha256));
    // The device can fetch it with its token.
    let r = s.call("GET", &bref.path, Some(&b), Body::None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, file);

    // By id; c was not matched by the selector.
    let r: HeartbeatResponse = s.heartbeat("c", &c, &beat("1.0.0")).json();
    assert_eq!(r.desired_version, None);
    let r = s.admin(
        "PUT",
        &format!("{API}/appliances/c/desired"),
        Body::raw_json(r#"{"version":"2.0.0"}"#),
    );
    assert_eq!(
        r.json::<Appliance>().desired_version.as_deref(),
        Some("2.0.0")
    );
    let r: HeartbeatResponse = s.heartbeat("c", &c, &beat("1.0.0")).json();
    assert_eq!(r.bundle.map(|b| b.sha256), Some(held.sha256.clone()));

    // The upgrade's story becomes events; cleared desired version.
    let mut hb = beat("1.0.0");
    hb.progress = Some(Progress {
        version: "2.0.0".into(),
        phase: Phase::Downloading,
        done_bytes: 10,
        total_bytes: 100,
        message: None,
    });
    s.heartbeat("c", &c, &hb);
    hb.progress = None;
    hb.last_upgrade = Some(UpgradeOutcome {
        version: "2.0.0".into(),
        outcome: OutcomeKind::RolledBack,
        slot: Some("b".into()),
        reason: Some("health check k3s failed".into()),
    });
    s.heartbeat("c", &c, &hb);
    s.heartbeat("c", &c, &hb);
    let events: Vec<Event> = s
        .admin("GET", &format!("{API}/appliances/c/events"), Body::None)
        .json::<p6os_protocol::EventPage>()
        .items;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "registered",
            "paired",
            "first-heartbeat",
            "desired",
            "upgrade-progress",
            "upgrade-outcome"
        ]
    );
    assert!(events[5].message.contains("health check k3s failed"));
    let r = s.admin(
        "PUT",
        &format!("{API}/appliances/c/desired"),
        Body::raw_json(r#"{"version":null}"#),
    );
    assert_eq!(r.json::<Appliance>().desired_version, None);
    let listed = appliances(&s, "?version=1.0.0");
    assert_eq!(listed, ["a", "b", "c"]);
}

#[test]
fn a_downgrade_needs_the_operators_flag_which_is_stored_sent_and_logged() {
    let s = Server::start();
    let a = s.paired("a", &[("site", "north")]);
    let b = s.paired("b", &[("site", "south")]);
    // Without the flag: the heartbeat does not allow a downgrade.
    s.admin(
        "PUT",
        &format!("{API}/appliances/a/desired"),
        Body::raw_json(r#"{"version":"0.9.0"}"#),
    );
    let r = s.heartbeat("a", &a, &beat("1.0.0"));
    assert!(!r.text().contains("allow_downgrade"), "{}", r.text());
    let r: HeartbeatResponse = r.json();
    assert!(!r.allow_downgrade);
    // With it, by id and by selector: stored, sent with every heartbeat, logged.
    s.admin(
        "PUT",
        &format!("{API}/appliances/a/desired"),
        Body::raw_json(r#"{"version":"0.9.0","allow_downgrade":true}"#),
    );
    let r = s.admin(
        "PUT",
        &format!("{API}/desired"),
        Body::raw_json(r#"{"selector":{"site":"south"},"version":"0.8.0","allow_downgrade":true}"#),
    );
    assert_eq!(r.json::<DesiredResponse>().matched, ["b"]);
    for _ in 0..2 {
        let r: HeartbeatResponse = s.heartbeat("a", &a, &beat("1.0.0")).json();
        assert!(r.allow_downgrade);
        assert_eq!(r.desired_version.as_deref(), Some("0.9.0"));
        let r: HeartbeatResponse = s.heartbeat("b", &b, &beat("1.0.0")).json();
        assert!(r.allow_downgrade);
    }
    for (id, version) in [("a", "0.9.0"), ("b", "0.8.0")] {
        let events = s
            .admin("GET", &format!("{API}/appliances/{id}/events"), Body::None)
            .json::<EventPage>()
            .items;
        let wanted = format!("downgrade to {version} allowed by operator");
        assert_eq!(
            events
                .iter()
                .filter(|e| e.kind == "desired" && e.message.contains(&wanted))
                .count(),
            1,
            "{events:#?}"
        );
    }
    // A new order without the flag withdraws it.
    s.admin(
        "PUT",
        &format!("{API}/appliances/a/desired"),
        Body::raw_json(r#"{"version":"0.9.0"}"#),
    );
    let r: HeartbeatResponse = s.heartbeat("a", &a, &beat("1.0.0")).json();
    assert!(!r.allow_downgrade);
}

#[test]
fn openapi_covers_every_route() {
    let s = Server::start();
    let r = s.call("GET", "/openapi.json", None, Body::None);
    assert_eq!(r.status, 200);
    let doc: serde_json::Value = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    for (method, path) in p6os_console::api::served_routes() {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not in /openapi.json"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "PairRequest",
        "Facts",
        "Heartbeat",
        "Appliance",
        "ErrorBody",
        "Bundle",
    ] {
        assert!(schemas.contains_key(name), "{name}");
    }
}

/// Not even at `trace`, with every crate's events (axum, tower-http, hyper, the console):
/// the request log has method and path only, and no crate logs headers or bodies.
#[test]
fn tokens_never_reach_the_log() {
    let s = Server::start_logging("trace");
    let token = s.paired("dev", &[]);
    s.heartbeat("dev", &token, &beat("1.0.0"));
    s.heartbeat("dev", "wrong-token", &beat("1.0.0"));
    s.call(
        "GET",
        &format!("{API}/appliances?label=a=b"),
        Some(&s.admin),
        Body::None,
    );
    s.pair("dev", facts("dev"));
    let log = s.log_text();
    let line = s
        .logged("POST", "/api/v1/appliances/dev/heartbeat", 200)
        .unwrap_or_else(|| panic!("no heartbeat line in:\n{log}"));
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains(" latency="), "{line}");
    assert!(
        s.logged("POST", "/api/v1/appliances/dev/heartbeat", 401)
            .is_some(),
        "{log}"
    );
    assert!(
        s.logged("GET", "/api/v1/appliances", 200).is_some(),
        "{log}"
    );
    for secret in [&s.admin, &s.pairing, &token] {
        assert!(
            !log.contains(secret.as_str()),
            "a token is in the log:\n{log}"
        );
    }
    assert!(
        !log.contains("label="),
        "the query string is logged:\n{log}"
    );
}

#[test]
fn fresh_facts_in_a_heartbeat_replace_the_paired_ones() {
    let s = Server::start();
    let token = s.paired("dev-f", &[]);
    let mut newer = facts("dev-f");
    newer.image_version = "2.0.0".into();
    newer.slot = "b".into();
    newer.nics[0].addresses = vec!["10.0.3.15/24".into()];
    let mut b = beat("2.0.0");
    b.facts = Some(newer.clone());
    assert_eq!(s.heartbeat("dev-f", &token, &b).status, 200);
    let a: Appliance = s
        .admin("GET", &format!("{API}/appliances/dev-f"), Body::None)
        .json();
    assert_eq!(a.facts, Some(newer));
    // The report is kept without the facts; a heartbeat without facts keeps them.
    assert_eq!(a.reported.as_ref().unwrap().facts, None);
    assert_eq!(s.heartbeat("dev-f", &token, &beat("2.0.0")).status, 200);
    let a: Appliance = s
        .admin("GET", &format!("{API}/appliances/dev-f"), Body::None)
        .json();
    assert_eq!(a.facts.unwrap().image_version, "2.0.0");
    // Facts are checked like at pairing.
    let mut bad = facts("dev-f");
    bad.labels.insert("bad key".into(), "v".into());
    b.facts = Some(bad);
    let r = s.heartbeat("dev-f", &token, &b);
    assert_eq!(r.status, 400);
    assert_eq!(r.field().as_deref(), Some("facts.labels.bad key"));
}

/// A 500: the client gets a generic message, the log the cause, at error.
#[test]
fn the_cause_of_a_500_is_logged_not_returned() {
    let s = Server::start();
    std::fs::remove_dir_all(s.dir.path().join("bundles")).unwrap();
    let r = s.admin(
        "POST",
        &format!("{API}/bundles"),
        Body::Bytes("application/octet-stream", b"not a bundle".to_vec()),
    );
    assert_eq!(r.status, 500);
    let error = r.json::<ErrorBody>().error;
    assert!(!error.contains("temporary"), "{error}");
    let line = s
        .logged("POST", "/api/v1/bundles", 500)
        .unwrap_or_else(|| panic!("no 500 line in:\n{}", s.log_text()));
    assert!(line.contains(" ERROR "), "{line}");
    assert!(
        line.contains("cause=cannot create a temporary file: No such file or directory"),
        "{line}"
    );
}
