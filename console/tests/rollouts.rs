//! Staged rollouts over real HTTP against a real SQLite file, with a clock the tests drive:
//! waves, every member state, the failure threshold, pause/resume/abort, maintenance
//! windows, overlapping rollouts and manual desired versions, a bundle deleted mid-rollout,
//! a console restarted mid-wave. The CLI is `rollouts_cli.rs`.

mod common;
mod rollout_fleet;

use common::*;
use p6os_protocol::rollout::{DeviceState, Rollout, RolloutDevicePage, RolloutPage, RolloutState};
use p6os_protocol::{Appliance, Health, OutcomeKind, Phase, Progress};
use rollout_fleet::*;
use serde_json::json;

#[test]
fn waves_start_as_the_previous_ones_are_blessed_and_every_state_shows() {
    let (f, d) = Fleet::start(5);
    let r = f.create(json!({"version": "2.0.0", "selector": {"site": "s"}}));
    assert_eq!(r.status, 201, "{}", r.text());
    let created: Rollout = r.json();
    assert_eq!((created.id, created.state), (1, RolloutState::Running));
    // 1, 10%, 100% of 5: the canary d-0, an empty wave, then the rest.
    assert_eq!(
        created.waves.iter().map(|w| w.devices).collect::<Vec<_>>(),
        [1, 0, 4]
    );
    assert_eq!(f.beat(&d[0], &beat("1.0.0")).as_deref(), Some("2.0.0"));
    for dev in &d[1..] {
        assert_eq!(f.beat(dev, &beat("1.0.0")), None, "{}", dev.0);
    }
    let states = [
        (downloading("1.0.0", "2.0.0"), DeviceState::Downloading),
        (
            {
                let mut b = beat("1.0.0");
                b.progress = Some(Progress {
                    version: "2.0.0".into(),
                    phase: Phase::Rebooting,
                    done_bytes: 10,
                    total_bytes: 10,
                    message: None,
                });
                b
            },
            DeviceState::Installing,
        ),
        (running("2.0.0", Health::Assessing), DeviceState::Trial),
    ];
    for (b, want) in states {
        assert_eq!(f.beat(&d[0], &b).as_deref(), Some("2.0.0"));
        assert_eq!(f.member(1, "d-0").state, want);
        assert_eq!(f.beat(&d[1], &beat("1.0.0")), None, "wave 3 waits");
    }
    let m = f.member(1, "d-0");
    assert!(m.started && m.wave == 0);
    // Blessed: the last wave starts (the empty one is skipped).
    f.beat(&d[0], &running("2.0.0", Health::Good));
    let r = f.rollout(1);
    assert_eq!(
        (r.state, r.wave, r.totals.blessed),
        (RolloutState::Running, 2, 1)
    );
    for dev in &d[1..] {
        assert_eq!(f.beat(dev, &beat("1.0.0")).as_deref(), Some("2.0.0"));
    }
    // The members' list is paged and filtered.
    let page: RolloutDevicePage =
        f.s.admin(
            "GET",
            &format!("{API}/rollouts/1/devices?limit=2"),
            Body::None,
        )
        .json();
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.next.as_deref(), Some("d-1"));
    let page: RolloutDevicePage =
        f.s.admin(
            "GET",
            &format!("{API}/rollouts/1/devices?limit=2&after=d-1"),
            Body::None,
        )
        .json();
    assert_eq!(page.items[0].id, "d-2");
    let blessed: RolloutDevicePage =
        f.s.admin(
            "GET",
            &format!("{API}/rollouts/1/devices?state=blessed"),
            Body::None,
        )
        .json();
    assert_eq!(blessed.items.len(), 1);
    let bad = f.s.admin(
        "GET",
        &format!("{API}/rollouts/1/devices?state=happy"),
        Body::None,
    );
    assert_eq!((bad.status, bad.field().as_deref()), (400, Some("state")));
    // Everyone blessed: completed; the devices keep the version asked of them.
    for dev in &d[1..] {
        f.beat(dev, &running("2.0.0", Health::Good));
    }
    let r = f.rollout(1);
    assert_eq!((r.state, r.totals.blessed), (RolloutState::Completed, 5));
    assert_eq!(
        f.beat(&d[3], &running("2.0.0", Health::Good)).as_deref(),
        Some("2.0.0")
    );
    let events =
        f.s.admin("GET", &format!("{API}/appliances/d-0/events"), Body::None)
            .text();
    assert!(
        events.contains("rollout 1 (wave 1): desired version set to 2.0.0"),
        "{events}"
    );
    // Listing is paged.
    let list: RolloutPage =
        f.s.admin("GET", &format!("{API}/rollouts?limit=1"), Body::None)
            .json();
    assert_eq!((list.items.len(), list.next), (1, None));
}

#[test]
fn failures_pause_the_rollout_by_itself_and_resume_goes_on() {
    let (f, d) = Fleet::start(4);
    let r = f.create(
        json!({"version": "2.0.0", "waves": [{"count": 2}, {"percent": 100}],
                            "failure_threshold": 2}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    f.beat(&d[0], &beat("1.0.0"));
    f.beat(&d[1], &beat("1.0.0"));
    // One refusal is under the threshold of 2: it goes on.
    f.beat(&d[0], &{
        let mut b = beat("1.0.0");
        b.progress = Some(Progress {
            version: "2.0.0".into(),
            phase: Phase::Failed,
            done_bytes: 0,
            total_bytes: 10,
            message: Some("version 2.0.0 is not newer than the running 3.0".into()),
        });
        b
    });
    let m = f.member(1, "d-0");
    assert_eq!(m.state, DeviceState::Refused);
    assert!(m.reason.unwrap().contains("not newer"));
    assert_eq!(f.rollout(1).state, RolloutState::Running);
    // A rollback is the second failure: paused, with the reason.
    f.beat(
        &d[1],
        &after("2.0.0", OutcomeKind::RolledBack, "health check k3s failed"),
    );
    let r = f.rollout(1);
    assert_eq!(r.state, RolloutState::Paused);
    assert!(
        r.reason.as_deref().unwrap().contains("threshold 2"),
        "{r:?}"
    );
    assert_eq!(
        (r.totals.refused, r.totals.rolled_back, r.counted_failures),
        (1, 1, 2)
    );
    let m = f.member(1, "d-1");
    assert_eq!(
        (m.state, m.reason.as_deref()),
        (DeviceState::RolledBack, Some("health check k3s failed"))
    );
    // Paused: the next wave does not start.
    assert_eq!(f.beat(&d[2], &beat("1.0.0")), None);
    // Resume acknowledges the failures: the first wave is done, the next one starts.
    let r: Rollout = f.order(1, "resume").json();
    assert_eq!(
        (r.state, r.wave, r.counted_failures),
        (RolloutState::Running, 1, 0)
    );
    assert_eq!(f.beat(&d[2], &beat("1.0.0")).as_deref(), Some("2.0.0"));
    // Pause by the operator: a member that was handed the version but has not started is
    // held; one under way goes on.
    f.beat(&d[2], &downloading("1.0.0", "2.0.0"));
    let r: Rollout = f.order(1, "pause").json();
    assert_eq!(r.reason.as_deref(), Some("paused by an operator"));
    assert_eq!(f.beat(&d[3], &beat("1.0.0")), None);
    assert_eq!(
        f.beat(&d[2], &downloading("1.0.0", "2.0.0")).as_deref(),
        Some("2.0.0")
    );
    let again = f.order(1, "pause");
    assert_eq!(again.status, 409);
    assert!(again.text().contains("already paused"), "{}", again.text());
    assert_eq!(f.order(1, "resume").status, 200);
    assert_eq!(f.order(1, "resume").status, 409);
    assert_eq!(f.beat(&d[3], &beat("1.0.0")).as_deref(), Some("2.0.0"));
    assert_eq!(f.order(9, "pause").status, 404);
    let bad = f.order(0, "pause");
    assert_eq!((bad.status, bad.field().as_deref()), (400, Some("id")));
}

#[test]
fn abort_withdraws_the_version_from_members_that_had_not_started() {
    let (f, d) = Fleet::start(3);
    f.create(json!({"version": "2.0.0", "waves": [{"count": 2}, {"percent": 100}]}));
    assert_eq!(f.beat(&d[0], &beat("1.0.0")).as_deref(), Some("2.0.0"));
    assert_eq!(f.beat(&d[1], &beat("1.0.0")).as_deref(), Some("2.0.0"));
    f.beat(&d[1], &downloading("1.0.0", "2.0.0"));
    let r: Rollout = f.order(1, "abort").json();
    assert_eq!(r.state, RolloutState::Aborted);
    // d-0 had not started: no version any more. d-1 was under way: it keeps it. d-2 never
    // got it.
    assert_eq!(f.beat(&d[0], &beat("1.0.0")), None);
    assert_eq!(
        f.beat(&d[1], &downloading("1.0.0", "2.0.0")).as_deref(),
        Some("2.0.0")
    );
    assert_eq!(f.beat(&d[2], &beat("1.0.0")), None);
    let a: Appliance =
        f.s.admin("GET", &format!("{API}/appliances/d-0"), Body::None)
            .json();
    assert_eq!(a.desired_version, None);
    assert_eq!(f.order(1, "abort").status, 409);
    assert_eq!(f.order(1, "resume").status, 409);
    // The rollout no longer owns them: a manual desired version is taken again.
    let r = f.s.admin(
        "PUT",
        &format!("{API}/appliances/d-2/desired"),
        Body::json(&json!({"version": "2.0.0"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn overlaps_manual_desires_and_bad_requests_are_refused() {
    let (f, _d) = Fleet::start(2);
    f.s.paired("other", &[("site", "t")]);
    let r = f.create(json!({"version": "2.0.0", "selector": {"site": "s"}}));
    assert_eq!(r.status, 201, "{}", r.text());
    // A second rollout over any of the same devices: 409 naming the first.
    let r = f.create(json!({"version": "2.0.0"}));
    assert_eq!(r.status, 409);
    assert!(
        r.text()
            .contains("appliance d-0 is in rollout 1 of version 2.0.0"),
        "{}",
        r.text()
    );
    // Manual desired versions of members: 409, one by one or by selector.
    let r = f.s.admin(
        "PUT",
        &format!("{API}/appliances/d-1/desired"),
        Body::json(&json!({"version": "2.0.0"})),
    );
    assert_eq!(r.status, 409);
    assert!(r.text().contains("rollout 1"), "{}", r.text());
    let r = f.s.admin(
        "PUT",
        &format!("{API}/desired"),
        Body::json(&json!({"selector": {"site": "s"}, "version": null})),
    );
    assert_eq!(r.status, 409);
    // Others are free.
    let r = f.create(json!({"version": "2.0.0", "selector": {"site": "t"}}));
    assert_eq!(r.status, 201, "{}", r.text());
    // Bad input names the field and creates nothing.
    for (body, status, field) in [
        (json!({"version": "9.9.9"}), 400, "version"),
        (
            json!({"version": "2.0.0", "selector": {"site": "none"}}),
            400,
            "selector",
        ),
        (json!({"version": "2 0"}), 400, "version"),
        (
            json!({"version": "2.0.0", "waves": [{"count": 1}]}),
            400,
            "waves[0]",
        ),
        (
            json!({"version": "2.0.0", "failure_threshold": 0}),
            400,
            "failure_threshold",
        ),
        (
            json!({"version": "2.0.0", "windows": [{"start": "02:00", "end": "05:00",
                                                   "time_zone": "Mars/Base"}]}),
            400,
            "windows[0].time_zone",
        ),
        (json!({"version": "2.0.0", "wavez": []}), 400, "wavez"),
    ] {
        let r = f.create(body.clone());
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert_eq!(r.field().as_deref(), Some(field), "{body}: {}", r.text());
    }
    let list: RolloutPage =
        f.s.admin("GET", &format!("{API}/rollouts"), Body::None)
            .json();
    assert_eq!(list.items.len(), 2);
    assert_eq!(
        f.s.admin("GET", &format!("{API}/rollouts/77"), Body::None)
            .status,
        404
    );
    // Devices cannot reach the operator's rollouts.
    let (_, token) = &_d[0];
    let r =
        f.s.call("GET", &format!("{API}/rollouts"), Some(token), Body::None);
    assert!(matches!(r.status, 401 | 403), "{}", r.status);
}

#[test]
fn a_member_starts_only_inside_its_maintenance_window() {
    let (f, d) = Fleet::start(1);
    let lab = ("lab-1".to_string(), f.s.paired("lab-1", &[("site", "lab")]));
    // Site s: 02:00-05:00 in Paris (01:00-04:00 UTC in January), weekdays. Lab: no window.
    let r = f.create(json!({
        "version": "2.0.0", "waves": [{"percent": 100}],
        "windows": [{"selector": {"site": "s"}, "days": ["mon", "tue", "wed", "thu", "fri"],
                     "start": "02:00", "end": "05:00", "time_zone": "Europe/Paris"}]
    }));
    assert_eq!(r.status, 201, "{}", r.text());
    // Monday 10:00 UTC: the window is closed; the lab device has none and starts.
    assert_eq!(f.beat(&d[0], &beat("1.0.0")), None);
    assert_eq!(f.beat(&lab, &beat("1.0.0")).as_deref(), Some("2.0.0"));
    assert!(!f.member(1, "d-0").started);
    // Tuesday 01:30 UTC = 02:30 in Paris: open.
    f.clock.set(MONDAY_10H + 15 * 3600 + 30 * 60);
    assert_eq!(f.beat(&d[0], &beat("1.0.0")).as_deref(), Some("2.0.0"));
    assert!(f.member(1, "d-0").started);
    // The window closes before it started: held again until the next one.
    f.clock.advance(3 * 3600);
    assert_eq!(f.beat(&d[0], &beat("1.0.0")), None);
    // Once under way it goes on whatever the time.
    f.beat(&lab, &downloading("1.0.0", "2.0.0"));
    assert_eq!(
        f.beat(&lab, &downloading("1.0.0", "2.0.0")).as_deref(),
        Some("2.0.0")
    );
    // Saturday 03:00 in Paris: not a window day.
    f.clock.set(MONDAY_10H + 4 * 86_400 + 16 * 3600 + 3600);
    assert_eq!(f.beat(&d[0], &beat("1.0.0")), None);
}

#[test]
fn a_bundle_deleted_mid_rollout_pauses_it_with_the_reason() {
    let (f, d) = Fleet::start(3);
    f.create(json!({"version": "2.0.0", "waves": [{"count": 1}, {"percent": 100}]}));
    f.beat(&d[0], &beat("1.0.0"));
    f.beat(&d[0], &running("2.0.0", Health::Good));
    assert_eq!(f.rollout(1).wave, 1);
    // The bundle goes (by hand: its row and its file).
    let sha: String = p6os_console::testing::pg::probe(&f.s.db)
        .auto(|c| {
            let sha = c
                .query_one("SELECT sha256 FROM bundles WHERE version = '2.0.0'", &[])?
                .get(0)?;
            c.execute("DELETE FROM bundles WHERE version = '2.0.0'", &[])?;
            Ok::<String, p6os_console::db::sql::SqlError>(sha)
        })
        .unwrap();
    std::fs::remove_file(f.s.dir.path().join("bundles").join(format!("{sha}.p6b"))).unwrap();
    assert_eq!(f.beat(&d[1], &beat("1.0.0")), None);
    let r = f.rollout(1);
    assert_eq!(r.state, RolloutState::Paused);
    let reason = r.reason.unwrap();
    assert!(
        reason.contains("no bundle of version 2.0.0 for image tiny on x86_64"),
        "{reason}"
    );
    assert!(!f.member(1, "d-1").started);
    // Uploaded again and resumed: it goes on.
    f.upload("2.0.0", 1);
    assert_eq!(f.order(1, "resume").status, 200);
    assert_eq!(f.beat(&d[1], &beat("1.0.0")).as_deref(), Some("2.0.0"));
}

#[test]
fn a_console_restarted_mid_wave_goes_on_from_the_database() {
    let (f, d) = Fleet::start(3);
    f.create(json!({"version": "2.0.0", "waves": [{"count": 1}, {"percent": 100}]}));
    assert_eq!(f.beat(&d[0], &beat("1.0.0")).as_deref(), Some("2.0.0"));
    f.beat(&d[0], &downloading("1.0.0", "2.0.0"));
    let f = f.restart();
    let r = f.rollout(1);
    assert_eq!(
        (r.state, r.wave, r.totals.downloading),
        (RolloutState::Running, 0, 1)
    );
    assert!(f.member(1, "d-0").started);
    assert_eq!(f.beat(&d[1], &beat("1.0.0")), None);
    assert_eq!(
        f.beat(&d[0], &running("2.0.0", Health::Good)).as_deref(),
        Some("2.0.0")
    );
    let f = f.restart();
    assert_eq!(f.rollout(1).wave, 1);
    assert_eq!(f.beat(&d[1], &beat("1.0.0")).as_deref(), Some("2.0.0"));
    assert_eq!(f.beat(&d[2], &beat("1.0.0")).as_deref(), Some("2.0.0"));
}

#[test]
fn deleting_the_last_unfinished_member_of_a_wave_moves_on() {
    let (f, d) = Fleet::start(3);
    f.create(json!({"version": "2.0.0", "waves": [{"count": 2}, {"percent": 100}]}));
    f.beat(&d[0], &beat("1.0.0"));
    f.beat(&d[0], &running("2.0.0", Health::Good));
    // d-1 never reports: the first wave waits for it.
    assert_eq!(f.beat(&d[2], &beat("1.0.0")), None);
    assert_eq!(f.rollout(1).wave, 0);
    assert_eq!(
        f.s.admin("DELETE", &format!("{API}/appliances/d-1"), Body::None)
            .status,
        204
    );
    let r = f.rollout(1);
    assert_eq!((r.wave, r.totals.devices), (1, 2));
    assert_eq!(f.beat(&d[2], &beat("1.0.0")).as_deref(), Some("2.0.0"));
}
