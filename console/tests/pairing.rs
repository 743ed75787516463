//! Pairing binds an id to a device key (issue 15, findings 4, 5, 6 and 9): the fleet's pairing
//! token is public, so whoever holds it can only ask; an operator decides which key an id
//! gets; a paired device proves its key to get a new token; pending ids, refused pairings and
//! sources are bounded; the image a device gets bundles of is the one recorded at pairing.

mod common;

use common::*;
use p6os_protocol::{
    Appliance, AppliancePage, BundlePage, Event, EventPage, KeyProof, PairRequest, PairResponse,
    Status,
};

fn approve(s: &Server, id: &str, fingerprint: &str) -> Reply {
    s.admin(
        "POST",
        &format!("{API}/appliances/{id}/approve"),
        Body::json(&serde_json::json!({ "fingerprint": fingerprint })),
    )
}

fn show(s: &Server, id: &str) -> Appliance {
    s.admin("GET", &format!("{API}/appliances/{id}"), Body::None)
        .json()
}

fn events(s: &Server, id: &str) -> Vec<Event> {
    s.admin("GET", &format!("{API}/appliances/{id}/events"), Body::None)
        .json::<EventPage>()
        .items
}

fn token(r: &Reply) -> String {
    match r.json() {
        PairResponse::Ready { device_token, .. } => device_token,
        other => panic!("not paired: {other:?}"),
    }
}

/// The black-box report: after `appliances register store-12`, one POST with the pairing
/// token and made-up facts returned a device token. Now the made-up device waits, and the
/// id goes to the key the operator approves.
#[test]
fn a_registered_id_is_not_handed_to_whoever_asks_first() {
    let s = Server::start();
    let r = s.admin(
        "POST",
        &format!("{API}/appliances"),
        Body::json(&serde_json::json!({ "id": "store-12" })),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let attacker = device_key("attacker");
    let r = s.pair_with("store-12", facts("made-up"), &attacker);
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(matches!(r.json(), PairResponse::Pending { .. }));
    let a = show(&s, "store-12");
    assert_eq!(a.status, Status::Unpaired);
    assert_eq!(a.key_fingerprint, None);
    assert_eq!(
        a.requested_fingerprint,
        Some(attacker.public().fingerprint())
    );
    // The operator checks the fingerprint on the real device and approves that one.
    let real = device_key("store-12");
    assert_eq!(
        approve(&s, "store-12", &real.public().fingerprint()).status,
        200
    );
    assert_eq!(
        s.pair_with("store-12", facts("made-up"), &attacker).status,
        202
    );
    let r = s.pair_with("store-12", facts("store-12"), &real);
    assert_eq!(r.status, 200, "{}", r.text());
    let t = token(&r);
    assert_eq!(s.heartbeat("store-12", &t, &beat("1.0.0")).status, 200);
    let a = show(&s, "store-12");
    assert_eq!(a.status, Status::Ready);
    assert_eq!(a.key_fingerprint, Some(real.public().fingerprint()));
    assert_eq!(a.facts.unwrap().hostname, "store-12");
}

/// A fingerprint registered ahead binds the id to that key alone, with no approval step.
#[test]
fn a_registered_fingerprint_pairs_that_key_only() {
    let s = Server::start();
    let real = device_key("nuc-7");
    let r = s.admin(
        "POST",
        &format!("{API}/appliances"),
        Body::json(&serde_json::json!({
            "id": "nuc-7", "fingerprint": real.public().fingerprint()
        })),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        s.pair_with("nuc-7", facts("x"), &device_key("other"))
            .status,
        202
    );
    assert_eq!(s.pair_with("nuc-7", facts("nuc-7"), &real).status, 200);
    // A malformed fingerprint is refused, naming the field.
    let r = s.admin(
        "POST",
        &format!("{API}/appliances"),
        Body::json(&serde_json::json!({ "id": "nuc-8", "fingerprint": "MD5:aa" })),
    );
    assert_eq!((r.status, r.field().as_deref()), (400, Some("fingerprint")));
}

/// Whether an id exists, is registered or is paired, or whether the pending list is full, is
/// not told to someone who only holds the pairing token: every answer that does not pair is
/// the same 202.
#[test]
fn unknown_registered_and_paired_ids_answer_alike() {
    // One pending id fills the list: "unknown" takes the place, "unknown-2" finds it full.
    let s = Server::start_with("info", |c| c.max_pending = 1);
    s.paired("paired", &[]);
    assert_eq!(
        s.admin(
            "POST",
            &format!("{API}/appliances"),
            Body::json(&serde_json::json!({ "id": "registered" })),
        )
        .status,
        201
    );
    let stranger = device_key("stranger");
    let answers: Vec<(u16, String)> = ["unknown", "registered", "paired", "unknown-2"]
        .iter()
        .map(|id| {
            let r = s.pair_with(id, facts("x"), &stranger);
            let PairResponse::Pending { message, .. } = r.json() else {
                panic!("{}", r.text())
            };
            (r.status, message)
        })
        .collect();
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0].0, 202);
    let r = s.admin("GET", &format!("{API}/appliances/unknown-2"), Body::None);
    assert_eq!(r.status, 404, "not stored: {}", r.text());
}

/// Finding 5: a device whose token was refused once (a proxy answering 403) or lost (a wiped
/// state partition would also lose the key; a reinstalled agent keeps it) proves its key and
/// gets a new token; the old one stops working.
#[test]
fn a_paired_device_proves_its_key_for_a_new_token() {
    let s = Server::start();
    let first = s.paired("dev", &[]);
    let r = s.pair("dev", facts("dev"));
    assert_eq!(r.status, 200, "{}", r.text());
    let second = token(&r);
    assert_ne!(first, second);
    assert_eq!(s.heartbeat("dev", &first, &beat("1.0.0")).status, 401);
    assert_eq!(s.heartbeat("dev", &second, &beat("1.0.0")).status, 200);
    let kinds: Vec<String> = events(&s, "dev").into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["registered", "paired", "paired", "first-heartbeat"]);
}

/// A proof binds the id, the key and the challenge; without one nothing is stored.
#[test]
fn pairing_needs_a_fresh_proof_of_the_key() {
    let s = Server::start();
    let key = device_key("dev");
    let path = format!("{API}/appliances/dev/pair");
    let mut req = PairRequest {
        pairing_token: s.pairing.clone(),
        facts: facts("dev"),
        device_key: None,
        proof: None,
    };
    let r = s.call("POST", &path, None, Body::json(&req));
    assert_eq!((r.status, r.field().as_deref()), (400, Some("device_key")));
    req.device_key = Some("AAAA".into());
    let r = s.call("POST", &path, None, Body::json(&req));
    assert_eq!((r.status, r.field().as_deref()), (400, Some("device_key")));
    req.device_key = Some(key.public().encode());
    let PairResponse::Challenge { challenge } =
        s.call("POST", &path, None, Body::json(&req)).json()
    else {
        panic!()
    };
    // Signed by another key, for another id, or a challenge made up.
    let bad = [
        (
            challenge.clone(),
            device_key("x").sign_pair("dev", &challenge),
            "proof.signature",
        ),
        (
            challenge.clone(),
            key.sign_pair("other", &challenge),
            "proof.signature",
        ),
        (
            "1.00".into(),
            key.sign_pair("dev", "1.00"),
            "proof.challenge",
        ),
    ];
    for (challenge, signature, field) in bad {
        req.proof = Some(KeyProof {
            challenge,
            signature,
        });
        let r = s.call("POST", &path, None, Body::json(&req));
        assert_eq!(
            (r.status, r.field().as_deref()),
            (400, Some(field)),
            "{}",
            r.text()
        );
    }
    // A challenge made for another id does not serve this one.
    let other = PairRequest {
        proof: None,
        ..req.clone()
    };
    let PairResponse::Challenge { challenge: theirs } = s
        .call(
            "POST",
            &format!("{API}/appliances/other/pair"),
            None,
            Body::json(&other),
        )
        .json()
    else {
        panic!()
    };
    req.proof = Some(KeyProof {
        signature: key.sign_pair("dev", &theirs),
        challenge: theirs,
    });
    let r = s.call("POST", &path, None, Body::json(&req));
    assert_eq!(r.field().as_deref(), Some("proof.challenge"));
    let all = s
        .admin("GET", &format!("{API}/appliances"), Body::None)
        .json::<AppliancePage>()
        .items;
    assert!(all.is_empty(), "{all:?}");
}

/// Finding 6 and review (d): at most `max_pending` unknown ids are stored; past it the
/// answer is the same 202 as for any other id (a 429 told strangers the list was full),
/// nothing is stored, pending ids older than a day are dropped to make room, and the console
/// warns at most once a minute.
#[test]
fn pending_ids_are_capped() {
    let s = Server::start_with("info", |c| c.max_pending = 3);
    let pending = || -> Vec<String> {
        s.admin(
            "GET",
            &format!("{API}/appliances?status=pending"),
            Body::None,
        )
        .json::<AppliancePage>()
        .items
        .into_iter()
        .map(|a| a.id)
        .collect()
    };
    let mut answers = Vec::new();
    for i in 0..3 {
        let r = s.pair(&format!("p-{i}"), facts("x"));
        answers.push((r.status, r.text()));
    }
    for id in ["p-3", "p-4"] {
        let r = s.pair(id, facts("x"));
        answers.push((r.status, r.text()));
    }
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0].0, 202);
    assert_eq!(pending(), ["p-0", "p-1", "p-2"]);
    let warnings = s.log_text().matches("pending list full (3)").count();
    assert_eq!(warnings, 1, "once a minute:\n{}", s.log_text());
    assert!(
        s.log_text().contains("pair request from 127.0.0.1"),
        "{}",
        s.log_text()
    );
    // Asking again for a stored one is fine; registering one makes room.
    assert_eq!(s.pair("p-0", facts("x")).status, 202);
    assert_eq!(s.register("p-0", &[]).status, 201);
    assert_eq!(s.pair("p-3", facts("x")).status, 202);
    assert_eq!(pending(), ["p-1", "p-2", "p-3"]);
    // A pending id older than a day goes when the list is full and another asks.
    p6os_console::testing::pg::probe(&s.db)
        .auto(|c| {
            c.execute(
                "UPDATE appliances SET created_at = created_at - 2 * 86400 WHERE id = 'p-1'",
                &[],
            )
        })
        .unwrap();
    assert_eq!(s.pair("p-5", facts("x")).status, 202);
    assert_eq!(pending(), ["p-2", "p-3", "p-5"]);
}

/// Finding 6: one source gets a burst of pairing requests, then is refused (nothing parsed);
/// strangers' proven requests for one id are limited, but never the id's own key.
#[test]
fn pairing_is_rate_limited_per_source_and_per_id() {
    let s = Server::start();
    let burst =
        p6os_console::limit::per_source(p6os_console::limit::DEFAULT_PAIRING_RATE).burst as usize;
    let statuses: Vec<u16> = (0..burst + 20)
        .map(|i| s.pair(&format!("r-{i}"), facts("x")).status)
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.iter().filter(|&&c| c != 429).count() >= burst / 2);

    let s = Server::start();
    let real = s.paired("shop", &[]);
    let per_id = p6os_console::limit::per_id(30).burst as usize;
    let strangers: Vec<u16> = (0..per_id + 2)
        .map(|i| {
            s.pair_with("shop", facts("x"), &device_key(&format!("k{i}")))
                .status
        })
        .collect();
    assert_eq!(strangers.last(), Some(&429), "{strangers:?}");
    // Each new stranger key was one event, then the limit stopped them.
    let awaiting = events(&s, "shop")
        .iter()
        .filter(|e| e.kind == "key-awaits-approval")
        .count();
    assert_eq!(
        awaiting,
        per_id - 1,
        "the real device's own pairing used one"
    );
    // The bound key still pairs.
    let r = s.pair("shop", facts("shop"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_ne!(token(&r), real);
}

/// Review (e): the per-source limit comes before the body is read. A client over its rate that
/// sends a pair request's head with a Content-Length and never the body is answered 429 with
/// Retry-After at once (it used to hold the connection until the body timeout, and the console
/// read every body before counting it).
#[test]
fn a_source_over_its_rate_is_refused_before_its_body_is_read() {
    use std::io::{Read as _, Write as _};
    let s = Server::start_with("info", |c| c.pairing_rate = 1);
    let path = format!("{API}/appliances/slow/pair");
    let burst = p6os_console::limit::per_source(1).burst as usize;
    for _ in 0..burst {
        let r = s.call("POST", &path, None, Body::raw_json("{}"));
        assert_eq!(r.status, 400, "within the burst: {}", r.text());
    }
    let mut tcp = std::net::TcpStream::connect(s.console.addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(
        tcp,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "no answer without the body ({other:?}); got {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 429"), "{head}");
    let retry: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .unwrap_or_else(|| panic!("no Retry-After: {head}"))
        .trim()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{head}");
}

/// Review (f): a captured proof (a signed challenge) is not replayed within the challenge's
/// five minutes: the second use is a 400 naming `proof.challenge`, no new token is issued and
/// the device's token keeps working.
#[test]
fn the_same_proof_pairs_once() {
    let s = Server::start();
    assert_eq!(s.register("dev", &[]).status, 201);
    let key = device_key("dev");
    let path = format!("{API}/appliances/dev/pair");
    let mut req = PairRequest {
        pairing_token: s.pairing.clone(),
        facts: facts("dev"),
        device_key: Some(key.public().encode()),
        proof: None,
    };
    let PairResponse::Challenge { challenge } =
        s.call("POST", &path, None, Body::json(&req)).json()
    else {
        panic!()
    };
    req.proof = Some(KeyProof {
        signature: key.sign_pair("dev", &challenge),
        challenge,
    });
    let first = s.call("POST", &path, None, Body::json(&req));
    assert_eq!(first.status, 200, "{}", first.text());
    let t = token(&first);
    let replay = s.call("POST", &path, None, Body::json(&req));
    assert_eq!(
        (replay.status, replay.field().as_deref()),
        (400, Some("proof.challenge")),
        "{}",
        replay.text()
    );
    assert!(replay.text().contains("already used"), "{}", replay.text());
    assert_eq!(s.heartbeat("dev", &t, &beat("1.0.0")).status, 200);
    let paired = events(&s, "dev")
        .iter()
        .filter(|e| e.kind == "paired")
        .count();
    assert_eq!(paired, 1, "no second token");
    // A fresh challenge still pairs the device again.
    let r = s.pair("dev", facts("dev"));
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Finding 9: the image whose bundles a device gets is recorded at pairing; a heartbeat that
/// claims another image changes nothing but an event. An operator can change it.
#[test]
fn a_device_gets_bundles_of_the_image_it_paired_with() {
    let s = Server::start();
    let key = trusted_key();
    for name in ["tiny", "other"] {
        let r = s.call(
            "POST",
            &format!("{API}/bundles"),
            Some(&s.admin),
            Body::Bytes("application/octet-stream", bundle(&key, name, "2.0.0", 1)),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let t = s.paired("dev", &[]);
    let r = s.admin(
        "PUT",
        &format!("{API}/appliances/dev/desired"),
        Body::json(&serde_json::json!({ "version": "2.0.0" })),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut claim = beat("1.0.0");
    let mut f = facts("dev");
    f.image_name = "other".into();
    claim.facts = Some(f);
    let answer: p6os_protocol::HeartbeatResponse = s.heartbeat("dev", &t, &claim).json();
    let tiny_bundle = answer.bundle.expect("a bundle");
    let bundles = s
        .admin("GET", &format!("{API}/bundles"), Body::None)
        .json::<BundlePage>()
        .items;
    let name_of = |sha: &str| {
        bundles
            .iter()
            .find(|b| b.sha256 == sha)
            .unwrap()
            .name
            .clone()
    };
    assert_eq!(name_of(&tiny_bundle.sha256), "tiny");
    assert!(events(&s, "dev").iter().any(|e| e.kind == "image-mismatch"));
    // The operator moves it to the other image.
    let r = s.admin(
        "PUT",
        &format!("{API}/appliances/dev/image"),
        Body::json(&serde_json::json!({ "image_name": "other", "arch": "x86_64" })),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let answer: p6os_protocol::HeartbeatResponse = s.heartbeat("dev", &t, &beat("1.0.0")).json();
    assert_eq!(name_of(&answer.bundle.unwrap().sha256), "other");
}

/// Review (c): an unknown id's pair request (the pairing token is public) stores no name and
/// no labels of its own choosing; registering that id takes the operator's name and labels
/// only, so a stranger cannot steer rollouts by selector. What it sent stays in its facts,
/// as reported by the device.
#[test]
fn a_pending_requests_name_and_labels_do_not_survive_registration() {
    let s = Server::start();
    let mut seeded = facts("x");
    seeded.name = Some("seeded".into());
    seeded.labels = [("ring".to_string(), "canary".to_string())].into();
    let r = s.pair_with("store-40", seeded, &device_key("stranger"));
    assert_eq!(r.status, 202, "{}", r.text());
    let a = show(&s, "store-40");
    assert_eq!(a.status, Status::Pending);
    assert_eq!((a.name.as_deref(), a.labels.len()), (None, 0), "{a:?}");
    let reported = a.facts.expect("the device's facts are kept");
    assert_eq!(reported.labels["ring"], "canary", "as the device reported");
    let r = s.admin(
        "POST",
        &format!("{API}/appliances"),
        Body::json(&serde_json::json!({ "id": "store-40", "labels": { "site": "s40" } })),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let a = show(&s, "store-40");
    assert_eq!(a.name, None);
    assert_eq!(
        a.labels,
        [("site".to_string(), "s40".to_string())].into(),
        "only the operator's labels"
    );
    let r = s.admin(
        "PUT",
        &format!("{API}/desired"),
        Body::json(&serde_json::json!({ "selector": { "ring": "canary" }, "version": "9.9.9" })),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json::<p6os_protocol::DesiredResponse>()
            .matched
            .is_empty(),
        "{}",
        r.text()
    );
}
