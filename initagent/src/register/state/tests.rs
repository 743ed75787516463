use super::*;

fn fresh() -> Registration {
    Registration::resume(None, "nuc-1", "http://10.0.2.2:8080")
}

fn ready() -> Registration {
    Registration {
        phase: Phase::Ready,
        device_token: Some("tok".into()),
        heartbeat_secs: Some(10),
        ..fresh()
    }
}

/// A sha256-shaped name from a letter.
fn sha(c: &str) -> String {
    c.repeat(64)
}

fn bundle(version: &str, c: &str) -> BundleRef {
    BundleRef {
        version: version.into(),
        path: format!("/api/v1/bundles/{}/content", sha(c)),
        sha256: sha(c),
        size: 1,
    }
}

fn response(desired: Option<&str>, b: Option<BundleRef>) -> HeartbeatResponse {
    HeartbeatResponse {
        desired_version: desired.map(String::from),
        bundle: b,
        heartbeat_secs: 10,
        allow_downgrade: false,
        config: None,
        diagnostics: None,
    }
}

#[test]
fn resume_keeps_the_record_only_for_the_same_id_and_console() {
    let saved = ready();
    assert_eq!(
        Registration::resume(Some(saved.clone()), "nuc-1", "http://10.0.2.2:8080"),
        saved
    );
    let other_id = Registration::resume(Some(saved.clone()), "nuc-2", "http://10.0.2.2:8080");
    assert_eq!(other_id.phase, Phase::Unregistered);
    assert_eq!(other_id.device_token, None);
    let other_console = Registration::resume(Some(saved), "nuc-1", "https://c.example");
    assert_eq!(other_console.phase, Phase::Unregistered);
}

#[test]
fn backoff_doubles_up_to_the_limit_with_jitter_between_half_and_full() {
    let (first, max) = (Duration::from_secs(1), Duration::from_secs(300));
    for failures in 0..40 {
        let full = first.saturating_mul(1 << failures.min(20)).min(max);
        for random in [0, 1, 7, 499, 1000, u64::MAX] {
            let d = backoff(failures, first, max, random);
            assert!(d >= full / 2 && d <= full, "{failures} {random}: {d:?}");
        }
    }
    assert_eq!(backoff(0, first, max, 0), Duration::from_millis(500));
    assert_eq!(backoff(3, first, max, 4000), Duration::from_millis(8000));
    assert_eq!(backoff(60, first, max, 0), Duration::from_secs(150));
}

#[test]
fn jitter_stays_within_ten_percent() {
    for random in [0, 1, 2000, u64::MAX] {
        let d = jittered_secs(10, random);
        assert!(
            d >= Duration::from_secs(9) && d <= Duration::from_secs(11),
            "{d:?}"
        );
    }
    assert!(jittered_secs(0, 0) >= Duration::from_millis(900));
}

#[test]
fn pairing_goes_pending_then_ready() {
    let mut attempts = Attempts::default();
    let pending = PairResponse::Pending {
        retry_secs: 5,
        message: "register the id".into(),
    };
    let (reg, wait) = after_pair(&fresh(), Answer::Ok(pending), &mut attempts, 0);
    assert_eq!(reg.phase, Phase::Pending);
    assert!(wait >= Duration::from_millis(4500) && wait <= Duration::from_millis(5500));
    let ok = PairResponse::Ready {
        device_token: "secret".into(),
        heartbeat_secs: 30,
    };
    let (reg, wait) = after_pair(&reg, Answer::Ok(ok), &mut attempts, 0);
    assert_eq!(reg.phase, Phase::Ready);
    assert_eq!(reg.device_token.as_deref(), Some("secret"));
    assert_eq!(reg.heartbeat_secs, Some(30));
    assert_eq!(wait, Duration::ZERO);
}

#[test]
fn an_unreachable_console_backs_off_and_a_success_resets_it() {
    let mut attempts = Attempts::default();
    let mut reg = fresh();
    let mut waits = Vec::new();
    for _ in 0..12 {
        let (next, wait) = after_pair(
            &reg,
            Answer::Unavailable("connection refused".into()),
            &mut attempts,
            u64::MAX,
        );
        assert_eq!(next.phase, Phase::Unregistered);
        assert_eq!(next.last_error.as_deref(), Some("connection refused"));
        waits.push(wait);
        reg = next;
    }
    assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
    assert!(*waits.last().unwrap() <= BACKOFF_MAX);
    assert_eq!(attempts.failures, 12);
    let ok = PairResponse::Ready {
        device_token: "t".into(),
        heartbeat_secs: 30,
    };
    let (reg, _) = after_pair(&reg, Answer::Ok(ok), &mut attempts, 0);
    assert_eq!(attempts.failures, 0);
    assert_eq!(reg.last_error, None);
}

#[test]
fn a_wrong_pairing_token_waits_long() {
    let mut attempts = Attempts::default();
    let (reg, wait) = after_pair(&fresh(), Answer::Denied("403".into()), &mut attempts, 0);
    assert_eq!(reg.phase, Phase::Unregistered);
    assert!(wait >= BACKOFF_MAX / 2);
}

#[test]
fn a_denied_heartbeat_pairs_again() {
    let mut attempts = Attempts::default();
    let (reg, next) = after_heartbeat(
        &ready(),
        Answer::Denied("401".into()),
        "1.0",
        Health::Good,
        &mut attempts,
        0,
    );
    assert_eq!(reg.phase, Phase::Unregistered);
    assert_eq!(reg.device_token, None);
    assert!(matches!(next, AfterHeartbeat::Wait(_)));
}

#[test]
fn heartbeat_failures_back_off_no_longer_than_the_interval() {
    let mut attempts = Attempts::default();
    let mut reg = ready();
    for _ in 0..10 {
        let (next, after) = after_heartbeat(
            &reg,
            Answer::Unavailable("503".into()),
            "1.0",
            Health::Good,
            &mut attempts,
            u64::MAX,
        );
        let AfterHeartbeat::Wait(wait) = after else {
            panic!("{after:?}")
        };
        assert!(wait <= Duration::from_secs(10), "{wait:?}");
        assert_eq!(next.phase, Phase::Ready);
        reg = next;
    }
}

#[test]
fn upgrade_only_when_wanted_new_healthy_and_not_refused() {
    let b = bundle("2.0", "a");
    let elsewhere = BundleRef {
        path: format!("/../../elsewhere/{}/content", sha("a")),
        ..b.clone()
    };
    let not_a_sha = BundleRef {
        sha256: "abc".into(),
        path: "/api/v1/bundles/abc/content".into(),
        ..b.clone()
    };
    type Case<'a> = (
        Option<&'a str>,
        Option<BundleRef>,
        &'a str,
        Health,
        Option<&'a str>,
        bool,
    );
    let cases: Vec<Case> = vec![
        (
            Some("2.0"),
            Some(b.clone()),
            "1.0",
            Health::Good,
            None,
            true,
        ),
        // Nothing desired, or no bundle for it.
        (None, None, "1.0", Health::Good, None, false),
        (Some("2.0"), None, "1.0", Health::Good, None, false),
        // The bundle is for another version than the desired one.
        (
            Some("3.0"),
            Some(b.clone()),
            "1.0",
            Health::Good,
            None,
            false,
        ),
        // Already running it.
        (
            Some("2.0"),
            Some(b.clone()),
            "2.0",
            Health::Good,
            None,
            false,
        ),
        // The booted slot is still on trial.
        (
            Some("2.0"),
            Some(b.clone()),
            "1.0",
            Health::Assessing,
            None,
            false,
        ),
        (
            Some("2.0"),
            Some(b.clone()),
            "1.0",
            Health::Unknown,
            None,
            false,
        ),
        // Refused before.
        (
            Some("2.0"),
            Some(b.clone()),
            "1.0",
            Health::Good,
            Some("a"),
            false,
        ),
        // Another bundle than the refused one.
        (
            Some("2.0"),
            Some(b.clone()),
            "1.0",
            Health::Good,
            Some("d"),
            true,
        ),
        // Not on the console's bundle path: the device token goes nowhere else.
        (
            Some("2.0"),
            Some(elsewhere),
            "1.0",
            Health::Good,
            None,
            false,
        ),
        (
            Some("2.0"),
            Some(not_a_sha),
            "1.0",
            Health::Good,
            None,
            false,
        ),
    ];
    for (desired, offered, running, health, refused, upgrade) in cases {
        let reg = Registration {
            refused_bundle: refused.map(sha),
            ..ready()
        };
        let mut attempts = Attempts::default();
        let (_, after) = after_heartbeat(
            &reg,
            Answer::Ok(response(desired, offered.clone())),
            running,
            health,
            &mut attempts,
            0,
        );
        assert_eq!(
            matches!(after, AfterHeartbeat::Upgrade(..)),
            upgrade,
            "{desired:?} {offered:?} {running} {health:?} {refused:?}"
        );
    }
}

#[test]
fn the_record_round_trips() {
    let text = serde_json::to_string(&ready()).unwrap();
    assert_eq!(
        serde_json::from_str::<Registration>(&text).unwrap(),
        ready()
    );
}

#[test]
fn failed_installations_back_off_then_give_up_on_that_bundle() {
    let b = bundle("2.0", "a");
    let mut reg = ready();
    let mut waits = Vec::new();
    for _ in 0..MAX_INSTALL_ATTEMPTS {
        let mut attempts = Attempts::default();
        let (_, after) = after_heartbeat(
            &reg,
            Answer::Ok(response(Some("2.0"), Some(b.clone()))),
            "1.0",
            Health::Good,
            &mut attempts,
            0,
        );
        assert!(matches!(after, AfterHeartbeat::Upgrade(..)), "{after:?}");
        let (next, wait) = after_setback(&reg, &b, Downgrade::Refuse, Setback::Failed, u64::MAX);
        waits.push(wait);
        reg = next;
    }
    for (wait, full) in waits.iter().zip([30, 60, 120, 240, 480]) {
        let full = Duration::from_secs(full);
        assert!(*wait >= full / 2 && *wait <= full, "{waits:?}");
    }
    let mut attempts = Attempts::default();
    let (_, after) = after_heartbeat(
        &reg,
        Answer::Ok(response(Some("2.0"), Some(b.clone()))),
        "1.0",
        Health::Good,
        &mut attempts,
        0,
    );
    assert!(
        matches!(after, AfterHeartbeat::Wait(_)),
        "given up: {after:?}"
    );
    // Another bundle starts afresh.
    let other = bundle("2.1", "d");
    let (next, wait) = after_setback(&reg, &other, Downgrade::Refuse, Setback::Failed, u64::MAX);
    assert_eq!(next.failed_bundle.unwrap().attempts, 1);
    assert!(wait <= Duration::from_secs(30));
    // A refusal is remembered at once.
    let (next, _) = after_setback(&ready(), &b, Downgrade::Refuse, Setback::Refused, 0);
    assert_eq!(next.refused_bundle, Some(sha("a")));
}

#[test]
fn repeated_denials_slow_down_and_rejections_wait_long() {
    let mut attempts = Attempts::default();
    let mut waits = Vec::new();
    for _ in 0..6 {
        let (_, after) = after_heartbeat(
            &ready(),
            Answer::Denied("401".into()),
            "1.0",
            Health::Good,
            &mut attempts,
            u64::MAX,
        );
        let AfterHeartbeat::Wait(w) = after else {
            panic!()
        };
        // A successful pairing in between does not reset the count.
        let ok = PairResponse::Ready {
            device_token: "t".into(),
            heartbeat_secs: 10,
        };
        after_pair(&fresh(), Answer::Ok(ok), &mut attempts, 0);
        waits.push(w);
    }
    assert!(waits.windows(2).all(|w| w[0] < w[1]), "{waits:?}");
    let (reg, wait) = after_pair(
        &fresh(),
        Answer::Rejected("409: paired already".into()),
        &mut attempts,
        0,
    );
    assert_eq!(reg.phase, Phase::Unregistered);
    assert!(wait >= BACKOFF_MAX / 2);
    let (reg, after) = after_heartbeat(
        &ready(),
        Answer::Rejected("400".into()),
        "1.0",
        Health::Good,
        &mut attempts,
        0,
    );
    assert_eq!(reg.phase, Phase::Ready);
    assert!(matches!(after, AfterHeartbeat::Wait(w) if w >= BACKOFF_MAX / 2));
}

#[test]
fn records_of_other_releases_are_read() {
    let mut value = serde_json::to_value(ready()).unwrap();
    value["written_by_a_newer_agent"] = serde_json::json!(true);
    let reg: Registration = serde_json::from_value(value).unwrap();
    assert_eq!(reg, ready());
    let old =
        r#"{"phase":"ready","id":"nuc-1","endpoint":"http://10.0.2.2:8080","device_token":"tok"}"#;
    let reg: Registration = serde_json::from_str(old).unwrap();
    assert_eq!(reg.failed_bundle, None);
}
