use std::collections::BTreeMap;

use p6os_protocol::rollout::{default_waves, MaintenanceWindow};
use p6os_protocol::{Progress, UpgradeOutcome};

use super::*;

fn beat(version: &str, health: Health) -> Heartbeat {
    Heartbeat {
        slot: "a".into(),
        version: version.into(),
        health,
        last_upgrade: None,
        progress: None,
        facts: None,
    }
}

fn progress(version: &str, phase: Phase, message: Option<&str>) -> Progress {
    Progress {
        version: version.into(),
        phase,
        done_bytes: 1,
        total_bytes: 2,
        message: message.map(Into::into),
    }
}

fn outcome(version: &str, outcome: OutcomeKind, reason: Option<&str>) -> UpgradeOutcome {
    UpgradeOutcome {
        version: version.into(),
        outcome,
        slot: Some("b".into()),
        reason: reason.map(Into::into),
    }
}

fn request() -> RolloutRequest {
    RolloutRequest {
        version: "2.0".into(),
        selector: BTreeMap::new(),
        waves: default_waves(),
        failure_threshold: 1,
        windows: vec![],
        allow_downgrade: false,
    }
}

#[test]
fn requests_are_checked_field_by_field() {
    assert!(check_request(&request()).is_ok());
    type Change = Box<dyn Fn(&mut RolloutRequest)>;
    let cases: Vec<(Change, &str)> = vec![
        (Box::new(|r| r.version = "2 0".into()), "version"),
        (
            Box::new(|r| {
                r.selector.insert("site".into(), "-x".into());
            }),
            "selector.site",
        ),
        (Box::new(|r| r.waves.clear()), "waves"),
        (
            Box::new(|r| r.waves = vec![Wave::Percent(100); 17]),
            "waves",
        ),
        (Box::new(|r| r.waves[0] = Wave::Count(0)), "waves[0]"),
        (Box::new(|r| r.waves[1] = Wave::Percent(0)), "waves[1]"),
        (Box::new(|r| r.waves[1] = Wave::Percent(101)), "waves[1]"),
        (Box::new(|r| r.waves[2] = Wave::Percent(50)), "waves[2]"),
        (Box::new(|r| r.waves = vec![Wave::Count(5)]), "waves[0]"),
        (Box::new(|r| r.failure_threshold = 0), "failure_threshold"),
        (
            Box::new(|r| {
                r.windows.push(MaintenanceWindow {
                    selector: BTreeMap::new(),
                    days: vec![],
                    start: "01:00".into(),
                    end: "02:00".into(),
                    time_zone: "Nowhere/Town".into(),
                })
            }),
            "windows[0].time_zone",
        ),
    ];
    for (change, field) in cases {
        let mut r = request();
        change(&mut r);
        let e = check_request(&r).unwrap_err();
        assert_eq!(e.field.as_deref(), Some(field), "{}", e.error);
    }
}

#[test]
fn waves_split_members_in_id_order() {
    let waves = default_waves();
    assert_eq!(wave_targets(&waves, 0), [0, 0, 0]);
    assert_eq!(wave_targets(&waves, 1), [1, 1, 1]);
    assert_eq!(wave_targets(&waves, 5), [1, 1, 5]);
    assert_eq!(wave_targets(&waves, 20), [1, 2, 20]);
    assert_eq!(wave_targets(&waves, 10_000), [1, 1000, 10_000]);
    // A count past the members, and a smaller size after a larger one, are clamped.
    let odd = [Wave::Count(50), Wave::Percent(10), Wave::Percent(100)];
    assert_eq!(wave_targets(&odd, 20), [20, 20, 20]);
    let t = wave_targets(&waves, 20);
    let of: Vec<usize> = (0..20).map(|i| wave_of(i, &t)).collect();
    assert_eq!(of[..3], [0, 1, 2]);
    assert!(of[2..].iter().all(|w| *w == 2));
    assert_eq!(wave_of(0, &wave_targets(&waves, 1)), 0);
}

/// Every shape of heartbeat, for the rollout's version and for another.
#[test]
fn member_states_from_heartbeats() {
    let v = "2.0";
    assert_eq!(device_state(v, None), (DeviceState::Waiting, None));
    // Running it.
    for (health, want) in [
        (Health::Good, DeviceState::Blessed),
        (Health::Assessing, DeviceState::Trial),
        (Health::Unknown, DeviceState::Trial),
    ] {
        let mut b = beat(v, health);
        assert_eq!(device_state(v, Some(&b)).0, want);
        // Whatever else it says: it runs the version.
        b.last_upgrade = Some(outcome(v, OutcomeKind::RolledBack, Some("x")));
        b.progress = Some(progress(v, Phase::Failed, None));
        assert_eq!(device_state(v, Some(&b)).0, want);
    }
    // On the way.
    let cases = [
        (Phase::Downloading, None, DeviceState::Downloading, None),
        (Phase::Rebooting, None, DeviceState::Installing, None),
        (
            Phase::Failed,
            Some("version 2.0 is not newer than the running 3.0"),
            DeviceState::Refused,
            Some("version 2.0 is not newer than the running 3.0"),
        ),
        (
            Phase::Failed,
            None,
            DeviceState::Refused,
            Some("the upgrade failed (no reason given)"),
        ),
    ];
    for (phase, message, state, reason) in cases {
        let mut b = beat("1.0", Health::Good);
        b.progress = Some(progress(v, phase, message));
        // Progress comes before an older outcome for the same version.
        b.last_upgrade = Some(outcome(v, OutcomeKind::Failed, Some("earlier")));
        assert_eq!(
            device_state(v, Some(&b)),
            (state, reason.map(String::from)),
            "{phase:?}"
        );
    }
    // Done with it, running another version.
    let cases = [
        (OutcomeKind::Installed, None, DeviceState::Installing, None),
        (
            OutcomeKind::RolledBack,
            Some("health check failed"),
            DeviceState::RolledBack,
            Some("health check failed"),
        ),
        (
            OutcomeKind::RolledBack,
            None,
            DeviceState::RolledBack,
            Some("rolled back (no reason given)"),
        ),
        (
            OutcomeKind::Failed,
            Some("bad signature"),
            DeviceState::Refused,
            Some("bad signature"),
        ),
        (
            OutcomeKind::Failed,
            None,
            DeviceState::Refused,
            Some("not installed (no reason given)"),
        ),
        (
            OutcomeKind::Blessed,
            None,
            DeviceState::RolledBack,
            Some("blessed, but it runs 1.0 now"),
        ),
    ];
    for (kind, reason, state, want) in cases {
        let mut b = beat("1.0", Health::Good);
        b.last_upgrade = Some(outcome(v, kind, reason));
        assert_eq!(
            device_state(v, Some(&b)),
            (state, want.map(String::from)),
            "{kind:?}"
        );
    }
    // About other versions only: waiting.
    let mut b = beat("1.0", Health::Assessing);
    b.progress = Some(progress("3.0", Phase::Failed, Some("x")));
    b.last_upgrade = Some(outcome("1.5", OutcomeKind::RolledBack, Some("x")));
    assert_eq!(device_state(v, Some(&b)), (DeviceState::Waiting, None));
}

fn totals(states: &[DeviceState]) -> Totals {
    let mut t = Totals::default();
    for s in states {
        t.add(*s, 1);
    }
    t
}

fn running(wave: usize) -> Standing {
    Standing {
        state: RolloutState::Running,
        wave,
        acknowledged: 0,
    }
}

#[test]
fn waves_start_when_the_previous_ones_finished_healthy() {
    use DeviceState::*;
    let later = totals(&[Waiting, Waiting]);
    // The canary is still under way: stay, whatever state it is in.
    for s in [Waiting, Downloading, Installing, Trial] {
        let waves = [totals(&[s]), later];
        assert_eq!(decide(1, &running(0), &waves), Step::Stay, "{s:?}");
    }
    // Blessed: the next wave starts.
    let waves = [totals(&[Blessed]), later];
    assert_eq!(decide(1, &running(0), &waves), Step::Advance(1));
    // Empty waves are skipped; the last one done completes.
    let waves = [totals(&[Blessed]), Totals::default(), later];
    assert_eq!(decide(1, &running(0), &waves), Step::Advance(2));
    let waves = [totals(&[Blessed]), Totals::default(), totals(&[Blessed])];
    assert_eq!(decide(1, &running(2), &waves), Step::Complete);
    assert_eq!(decide(1, &running(0), &[Totals::default()]), Step::Complete);
    assert_eq!(decide(1, &running(0), &[]), Step::Complete);
    // An earlier wave is not finished (a member came back to waiting): stay.
    let waves = [totals(&[Trial]), totals(&[Blessed])];
    assert_eq!(decide(1, &running(1), &waves), Step::Stay);
}

#[test]
fn failures_pause_at_the_threshold_and_resume_acknowledges_them() {
    use DeviceState::*;
    for failed in [RolledBack, Refused] {
        let waves = [totals(&[Blessed]), totals(&[failed, Blessed, Waiting])];
        assert!(
            matches!(decide(1, &running(1), &waves), Step::Pause(r) if r.contains("threshold 1"))
        );
        // Under a threshold of 2 it goes on; the wave is not finished yet.
        assert_eq!(decide(2, &running(1), &waves), Step::Stay);
        // A finished wave with a failure under the threshold completes.
        let waves = [totals(&[Blessed]), totals(&[failed, Blessed])];
        assert_eq!(decide(2, &running(1), &waves), Step::Complete);
        // Resumed: the failure was acknowledged, it does not pause again.
        let resumed = Standing {
            acknowledged: 1,
            ..running(1)
        };
        assert_eq!(decide(1, &resumed, &waves), Step::Complete);
        assert_eq!(counted_failures(&resumed, &waves), 0);
    }
    // Failures anywhere count (a canary that rolled back pauses before wave 1).
    let waves = [totals(&[RolledBack]), totals(&[Waiting])];
    assert!(matches!(decide(1, &running(0), &waves), Step::Pause(_)));
    // A rollout that is not running decides nothing.
    for state in [
        RolloutState::Paused,
        RolloutState::Completed,
        RolloutState::Aborted,
    ] {
        let s = Standing {
            state,
            ..running(0)
        };
        assert_eq!(decide(1, &s, &waves), Step::Stay);
        let done = [totals(&[Blessed])];
        assert_eq!(decide(1, &s, &done), Step::Stay);
    }
}

#[test]
fn operator_transitions_every_pair() {
    use RolloutState::*;
    let states = [Running, Paused, Completed, Aborted];
    let actions = [Action::Pause, Action::Resume, Action::Abort];
    for s in states {
        for a in actions {
            let got = transition(s, a).map(|(to, _)| to);
            let want = match (s, a) {
                (Running, Action::Pause) => Ok(Paused),
                (Paused, Action::Resume) => Ok(Running),
                (Running | Paused, Action::Abort) => Ok(Aborted),
                _ => Err(()),
            };
            assert_eq!(got.map_err(|_| ()), want, "{s:?} {a:?}");
        }
    }
    let e = transition(Completed, Action::Pause).unwrap_err();
    assert!(e.contains("completed") && e.contains("pause"), "{e}");
}

#[test]
fn only_waiting_members_are_held_back() {
    use RolloutState::*;
    for state in [Running, Paused, Completed, Aborted] {
        for member in DeviceState::ALL {
            for (started, mine) in [(0, 0), (0, 1), (2, 1)] {
                for open in [true, false] {
                    let got = gate(state, started, member, mine, open);
                    let want = if member != DeviceState::Waiting {
                        Gate::Proceed
                    } else if state == Running && mine <= started && open {
                        Gate::Start
                    } else {
                        Gate::Hold
                    };
                    assert_eq!(got, want, "{state:?} {member:?} {started} {mine} {open}");
                }
            }
        }
    }
    assert_eq!(gate(Running, 0, DeviceState::Waiting, 0, true), Gate::Start);
    assert_eq!(gate(Paused, 0, DeviceState::Waiting, 0, true), Gate::Hold);
    assert_eq!(gate(Running, 0, DeviceState::Waiting, 1, true), Gate::Hold);
    assert_eq!(gate(Running, 0, DeviceState::Waiting, 0, false), Gate::Hold);
    assert_eq!(
        gate(Paused, 0, DeviceState::Downloading, 0, false),
        Gate::Proceed
    );
}

/// `decide` over every rollout of up to three waves with up to two members each, in every
/// member state, every started wave, threshold and acknowledged count, against the rules
/// spelled out member by member (not by totals).
#[test]
fn decide_exhaustively_against_the_rules() {
    // Every multiset of at most two member states.
    let mut waves_of: Vec<Vec<DeviceState>> = vec![vec![]];
    for (i, a) in DeviceState::ALL.into_iter().enumerate() {
        waves_of.push(vec![a]);
        for b in DeviceState::ALL.into_iter().skip(i) {
            waves_of.push(vec![a, b]);
        }
    }
    let mut checked = 0u64;
    for w0 in &waves_of {
        for w1 in &waves_of {
            for w2 in &waves_of {
                let members = [w0, w1, w2];
                let waves: Vec<Totals> = members.iter().map(|w| totals(w)).collect();
                for started in 0..3 {
                    for threshold in 1..=3u32 {
                        for acknowledged in 0..=1u64 {
                            let standing = Standing {
                                acknowledged,
                                ..running(started)
                            };
                            let want = rules(threshold, &standing, &members);
                            let got = decide(threshold, &standing, &waves);
                            match (&got, &want) {
                                (Step::Pause(_), Step::Pause(_)) => {}
                                _ => assert_eq!(got, want, "{members:?} started {started} threshold {threshold} ack {acknowledged}"),
                            }
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, 36 * 36 * 36 * 3 * 3 * 2);
}

fn rules(threshold: u32, standing: &Standing, members: &[&Vec<DeviceState>; 3]) -> Step {
    let failed = members
        .iter()
        .flat_map(|w| w.iter())
        .filter(|s| matches!(s, DeviceState::RolledBack | DeviceState::Refused))
        .count() as u64;
    if failed.saturating_sub(standing.acknowledged) >= u64::from(threshold) {
        return Step::Pause(String::new());
    }
    let under_way = members[..=standing.wave]
        .iter()
        .flat_map(|w| w.iter())
        .any(|s| {
            !matches!(
                s,
                DeviceState::Blessed | DeviceState::RolledBack | DeviceState::Refused
            )
        });
    if under_way {
        return Step::Stay;
    }
    for (k, wave) in members.iter().enumerate().skip(standing.wave + 1) {
        if !wave.is_empty() {
            return Step::Advance(k);
        }
    }
    Step::Complete
}
