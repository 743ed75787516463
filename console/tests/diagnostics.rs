//! Remote diagnostics over real HTTP: the operator's request, its delivery in the heartbeat
//! answer, the device's upload (only the asked device, only while outstanding, bounded), the
//! download and its sha256, paging, the per-appliance cap, and the CLI.

mod common;

use common::*;
use p6os_protocol::diagnostics::{
    content_path, Diagnostics, DiagnosticsPage, DiagnosticsStatus, MAX_BYTES, MIN_BYTES,
};
use p6os_protocol::HeartbeatResponse;
use sha2::{Digest, Sha256};

const OCTETS: &str = "application/octet-stream";

fn request(s: &Server, id: &str, body: &str) -> Reply {
    s.admin(
        "POST",
        &format!("{API}/appliances/{id}/diagnostics"),
        Body::raw_json(body),
    )
}

fn upload(s: &Server, n: u64, token: &str, bytes: Vec<u8>) -> Reply {
    s.call(
        "PUT",
        &content_path(n),
        Some(token),
        Body::Bytes(OCTETS, bytes),
    )
}

fn beat_answer(s: &Server, id: &str, token: &str) -> HeartbeatResponse {
    let r = s.heartbeat(id, token, &beat("1.0.0"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn request_deliver_upload_download() {
    let s = Server::start();
    let token = s.paired("dev-1", &[]);
    let other = s.paired("dev-2", &[]);
    // Nothing asked: nothing in the answer (and not even the field on the wire).
    let r = s.heartbeat("dev-1", &token, &beat("1.0.0"));
    assert!(!r.text().contains("diagnostics"), "{}", r.text());

    // Bad input changes nothing; unknown appliance 404; a device token is refused.
    let r = request(&s, "dev-1", r#"{"max_bytes":1}"#);
    assert_eq!((r.status, r.field().as_deref()), (400, Some("max_bytes")));
    let r = request(&s, "dev-1", r#"{"max_byte":70000}"#);
    assert_eq!(r.status, 400);
    assert_eq!(request(&s, "nobody", "{}").status, 404);
    let r = s.call(
        "POST",
        &format!("{API}/appliances/dev-1/diagnostics"),
        Some(&token),
        Body::raw_json("{}"),
    );
    assert_eq!(r.status, 403);
    let listed: DiagnosticsPage = s
        .admin(
            "GET",
            &format!("{API}/appliances/dev-1/diagnostics"),
            Body::None,
        )
        .json();
    assert!(listed.items.is_empty());

    let r = request(&s, "dev-1", &format!(r#"{{"max_bytes":{MIN_BYTES}}}"#));
    assert_eq!(r.status, 201, "{}", r.text());
    let d: Diagnostics = r.json();
    assert_eq!(d.status, DiagnosticsStatus::Requested);
    // One at a time: asking again shows the outstanding one.
    let again = request(&s, "dev-1", "{}");
    assert_eq!(again.status, 200);
    assert_eq!(again.json::<Diagnostics>().id, d.id);

    // Only dev-1's heartbeat carries it, every time until the bundle arrives.
    assert_eq!(beat_answer(&s, "dev-2", &other).diagnostics, None);
    let asked = beat_answer(&s, "dev-1", &token).diagnostics.unwrap();
    assert_eq!(
        (asked.id, asked.max_bytes, asked.upload_path.as_str()),
        (d.id, MIN_BYTES, content_path(d.id).as_str())
    );
    assert_eq!(beat_answer(&s, "dev-1", &token).diagnostics, Some(asked));
    let shown: Diagnostics = s
        .admin("GET", &format!("{API}/diagnostics/{}", d.id), Body::None)
        .json();
    assert_eq!(shown.status, DiagnosticsStatus::Delivered);
    assert!(shown.delivered_at.is_some());

    // Nothing to download yet.
    let r = s.admin("GET", &content_path(d.id), Body::None);
    assert_eq!(r.status, 404);

    // Another device, the admin, no token, a bad number, another type: refused.
    let bundle = b"a bundle".to_vec();
    let r = upload(&s, d.id, &other, bundle.clone());
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(upload(&s, d.id, &s.admin, bundle.clone()).status, 403);
    assert_eq!(upload(&s, d.id, "nope", bundle.clone()).status, 401);
    assert_eq!(upload(&s, 999_999, &token, bundle.clone()).status, 404);
    let r = s.call(
        "PUT",
        &format!("{API}/diagnostics/x/content"),
        Some(&token),
        Body::Bytes(OCTETS, bundle.clone()),
    );
    assert_eq!((r.status, r.field().as_deref()), (400, Some("id")));
    let r = s.call(
        "PUT",
        &content_path(d.id),
        Some(&token),
        Body::Bytes("application/json", bundle.clone()),
    );
    assert_eq!(r.status, 415);
    // Over the size asked: 413, after the body was drained (the answer arrives).
    let r = upload(&s, d.id, &token, vec![7u8; MIN_BYTES as usize + 1]);
    assert_eq!(r.status, 413, "{}", r.text());

    // The device's own upload.
    let r = upload(&s, d.id, &token, bundle.clone());
    assert_eq!(r.status, 200, "{}", r.text());
    let stored: Diagnostics = r.json();
    let sha = p6os_console::auth::hex(&Sha256::digest(&bundle));
    assert_eq!(stored.status, DiagnosticsStatus::Uploaded);
    assert_eq!(
        (stored.size, stored.sha256.as_deref()),
        (Some(8), Some(sha.as_str()))
    );
    // Once only; and no longer in the heartbeat answer.
    assert_eq!(upload(&s, d.id, &token, bundle.clone()).status, 409);
    assert_eq!(beat_answer(&s, "dev-1", &token).diagnostics, None);

    // The operator downloads it; a device may not.
    let r = s.admin("GET", &content_path(d.id), Body::None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, bundle);
    assert_eq!(r.header("etag"), Some(format!("\"{sha}\"").as_str()));
    assert_eq!(
        s.call("GET", &content_path(d.id), Some(&token), Body::None)
            .status,
        403
    );
    // The events say what happened.
    let events = s
        .admin("GET", &format!("{API}/appliances/dev-1/events"), Body::None)
        .text();
    assert!(
        events.contains("diagnostics bundle") && events.contains("uploaded"),
        "{events}"
    );
}

#[test]
fn lists_are_paged_and_bundles_capped_per_appliance() {
    let s = Server::start();
    let token = s.paired("dev-1", &[]);
    let mut ids = Vec::new();
    for i in 0..7u8 {
        let d: Diagnostics = request(&s, "dev-1", "{}").json();
        assert_eq!(d.max_bytes, MAX_BYTES);
        assert_eq!(
            beat_answer(&s, "dev-1", &token).diagnostics.unwrap().id,
            d.id
        );
        assert_eq!(upload(&s, d.id, &token, vec![i; 100]).status, 200);
        ids.push(d.id);
    }
    // Newest first, two at a time.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(a) => format!("?limit=2&after={a}"),
            None => "?limit=2".into(),
        };
        let page: DiagnosticsPage = s
            .admin(
                "GET",
                &format!("{API}/appliances/dev-1/diagnostics{q}"),
                Body::None,
            )
            .json();
        assert!(page.items.len() <= 2);
        seen.extend(page.items);
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let seen_ids: Vec<u64> = seen.iter().map(|d| d.id).collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen_ids, newest_first);
    // The newest five are held; the two oldest were dropped (evicted) and cannot be fetched.
    let statuses: Vec<DiagnosticsStatus> = seen.iter().map(|d| d.status).collect();
    assert_eq!(
        statuses,
        [
            [DiagnosticsStatus::Uploaded; 5].as_slice(),
            &[DiagnosticsStatus::Evicted; 2]
        ]
        .concat()
    );
    assert_eq!(
        s.admin("GET", &content_path(ids[0]), Body::None).status,
        404
    );
    assert_eq!(
        s.admin("GET", &content_path(ids[2]), Body::None).body,
        vec![2u8; 100]
    );
    // Bad pages.
    let r = s.admin(
        "GET",
        &format!("{API}/appliances/dev-1/diagnostics?after=x"),
        Body::None,
    );
    assert_eq!((r.status, r.field().as_deref()), (400, Some("after")));
    let r = s.admin(
        "GET",
        &format!("{API}/appliances/dev-1/diagnostics?limit=0"),
        Body::None,
    );
    assert_eq!((r.status, r.field().as_deref()), (400, Some("limit")));
    let r = s.admin(
        "GET",
        &format!("{API}/appliances/nobody/diagnostics"),
        Body::None,
    );
    assert_eq!(r.status, 404);
}

#[test]
fn operator_cli_requests_lists_and_gets() {
    let s = Server::start();
    let token = s.paired("dev-1", &[]);
    let (code, out, err) = cli(&s, &["diagnostics", "request", "dev-1", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let d: Diagnostics = serde_json::from_str(&out).unwrap();
    let n = d.id.to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diag.tar.zst");
    let file_arg = file.to_str().unwrap();
    // Not uploaded yet: an error, nothing written.
    let (code, _, err) = cli(&s, &["diagnostics", "get", &n, "--out", file_arg]);
    assert_eq!(code, 1);
    assert!(err.contains("no bundle yet"), "{err}");
    assert!(!file.exists());

    assert!(beat_answer(&s, "dev-1", &token).diagnostics.is_some());
    assert_eq!(upload(&s, d.id, &token, b"the bundle".to_vec()).status, 200);
    let (code, out, err) = cli(&s, &["diagnostics", "get", &n, "--out", file_arg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("checked"), "{out}");
    assert_eq!(std::fs::read(&file).unwrap(), b"the bundle");

    let (code, out, _) = cli(&s, &["diagnostics", "list", "dev-1"]);
    assert_eq!(code, 0);
    assert!(out.contains("uploaded") && out.contains(&n), "{out}");
    let (code, out, _) = cli(
        &s,
        &["diagnostics", "list", "dev-1", "--json", "--limit", "1"],
    );
    assert_eq!(code, 0);
    let all: Vec<Diagnostics> = serde_json::from_str(&out).unwrap();
    assert_eq!(all.len(), 1);
    let (code, _, err) = cli(&s, &["diagnostics", "request", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("no appliance"), "{err}");
}
