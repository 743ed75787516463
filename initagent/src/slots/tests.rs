//! Tests of the slot state machine against a small model of systemd-boot 252: exhaustive
//! single steps from every state, the states reachable from a factory image (power cuts
//! included), scenarios, and the parsing and comparison helpers.

use std::collections::{HashSet, VecDeque};

use proptest::prelude::*;

use super::*;

const VA: &str = "1.0.0";
const VB: &str = "2.0.0";

fn entry(version: &str, slot: Slot, counter: Counter, sort_version: u64) -> Entry {
    Entry {
        file_name: entry_file_name(version, slot, counter),
        image_version: version.to_string(),
        slot,
        counter,
        sort_version,
    }
}

fn trial(left: u32, done: u32) -> Counter {
    Counter::Trial { left, done }
}

// ---------------------------------------------------------------------------------------
// A model of systemd-boot 252 and of the disk the agent changes.

/// The entry systemd-boot 252 starts: not bad before bad, then the highest `version`, then
/// the file name (`strverscmp` on the id; plain order is enough for these names).
fn loader_pick(entries: &[Entry]) -> Option<&Entry> {
    entries.iter().max_by(|a, b| {
        (!a.counter.is_bad())
            .cmp(&!b.counter.is_bad())
            .then(a.sort_version.cmp(&b.sort_version))
            .then_with(|| a.file_name.cmp(&b.file_name))
    })
}

/// One boot by the loader: picks an entry and, if it counts tries, renames it `+(L-1)-(D+1)`
/// (`+0-D` stays at 0 left) before starting it. Blessed entries are never renamed.
fn loader_boot(entries: &[Entry]) -> Option<(Slot, Vec<Entry>)> {
    let chosen = loader_pick(entries)?.clone();
    let mut out = entries.to_vec();
    if let Counter::Trial { left, done } = chosen.counter {
        let counter = trial(left.saturating_sub(1), done.saturating_add(1));
        let e = out
            .iter_mut()
            .find(|e| e.file_name == chosen.file_name)
            .unwrap();
        e.counter = counter;
        e.file_name = entry_file_name(&e.image_version, e.slot, counter);
    }
    Some((chosen.slot, out))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Machine {
    booted: Slot,
    entries: Vec<Entry>,
    record: Record,
}

impl Machine {
    fn view(&self) -> View {
        View {
            booted: self.booted,
            entries: self.entries.clone(),
            record: self.record.clone(),
        }
    }

    /// The factory image: slot A blessed, version 1.0.0, no record.
    fn factory() -> Machine {
        Machine {
            booted: Slot::A,
            entries: vec![entry(VA, Slot::A, Counter::Blessed, 1)],
            record: Record::default(),
        }
    }

    /// Carries out one action; true for `Reboot`. Panics on an action that names a file
    /// that is not there (the plans must only refer to what they saw).
    fn apply(&mut self, action: &Action) -> bool {
        let find = |entries: &mut Vec<Entry>, name: &str| -> usize {
            entries
                .iter()
                .position(|e| e.file_name == name)
                .unwrap_or_else(|| panic!("{name} is not on the ESP: {entries:?}"))
        };
        match action {
            Action::RemoveEntry { file_name } => {
                let i = find(&mut self.entries, file_name);
                self.entries.remove(i);
            }
            Action::WriteEntry(e) => {
                assert!(
                    self.entries.iter().all(|x| x.file_name != e.file_name),
                    "{} exists",
                    e.file_name
                );
                assert_eq!(
                    parse_entry_name(&e.file_name),
                    Some((e.image_version.clone(), e.slot, e.counter))
                );
                self.entries.push(e.clone());
            }
            Action::RenameEntry { from, to } => {
                let i = find(&mut self.entries, from);
                let (version, slot, counter) = parse_entry_name(to).unwrap();
                let e = &mut self.entries[i];
                assert_eq!((version.as_str(), slot), (e.image_version.as_str(), e.slot));
                e.file_name = to.clone();
                e.counter = counter;
            }
            Action::SetSortVersion {
                file_name,
                sort_version,
            } => {
                let i = find(&mut self.entries, file_name);
                self.entries[i].sort_version = *sort_version;
            }
            Action::SaveRecord(record) => self.record = record.clone(),
            Action::Reboot => return true,
        }
        false
    }

    /// Applies `actions` up to the first `Reboot` (not carried out), checking the invariant
    /// after each one when it held before: a power cut may stop the list anywhere.
    fn apply_checked(&mut self, actions: &[Action]) -> bool {
        let held = invariant_holds(&self.entries);
        for (i, action) in actions.iter().enumerate() {
            if self.apply(action) {
                assert_eq!(i + 1, actions.len(), "actions after Reboot: {actions:?}");
                return true;
            }
            if held {
                assert!(
                    invariant_holds(&self.entries),
                    "invariant broken after {action:?} of {actions:?}: {self:?}"
                );
            }
        }
        false
    }

    /// The loader boots; the new boot sees the renamed entries.
    fn boot(&self) -> Machine {
        let (booted, entries) = loader_boot(&self.entries).expect("nothing to boot");
        Machine {
            booted,
            entries,
            record: self.record.clone(),
        }
    }

    /// Same state with `sort_version`s replaced by their rank (only their order matters),
    /// so that repeated upgrades reach finitely many states.
    fn normalized(&self) -> Machine {
        let mut m = self.clone();
        let mut versions: Vec<u64> = m.entries.iter().map(|e| e.sort_version).collect();
        versions.sort_unstable();
        versions.dedup();
        for e in &mut m.entries {
            e.sort_version = versions.binary_search(&e.sort_version).unwrap() as u64 + 1;
        }
        m.entries.sort_by(|a, b| a.file_name.cmp(&b.file_name));
        m
    }
}

fn upgrade_actions(plan: &UpgradePlan) -> Vec<Action> {
    let mut actions = plan.before_write();
    actions.extend(plan.after_write());
    actions
}

fn request(version: &str) -> UpgradeRequest {
    UpgradeRequest {
        version: version.to_string(),
        allow_downgrade: false,
        allow_retry: false,
        tries: DEFAULT_TRIES,
    }
}

// ---------------------------------------------------------------------------------------
// The loader model itself, against the measured facts.

#[test]
fn loader_model_counts_down_then_falls_back() {
    let mut entries = vec![
        entry(VA, Slot::A, Counter::Blessed, 1),
        entry(VB, Slot::B, trial(3, 0), 2),
    ];
    let mut names = Vec::new();
    for _ in 0..3 {
        let (slot, next) = loader_boot(&entries).unwrap();
        assert_eq!(slot, Slot::B);
        entries = next;
        names.push(entry_of(&entries, Slot::B).unwrap().file_name.clone());
    }
    assert_eq!(
        names,
        [
            "p6os-2.0.0-b+2-1.conf",
            "p6os-2.0.0-b+1-2.conf",
            "p6os-2.0.0-b+0-3.conf"
        ]
    );
    let (slot, next) = loader_boot(&entries).unwrap();
    assert_eq!(slot, Slot::A);
    assert_eq!(next, entries, "a blessed entry is never renamed");
    // Alone, a bad entry still boots, and stays at 0 left.
    let (slot, next) = loader_boot(&[entry(VB, Slot::B, trial(0, 3), 2)]).unwrap();
    assert_eq!(slot, Slot::B);
    assert_eq!(next[0].file_name, "p6os-2.0.0-b+0-4.conf");
}

// ---------------------------------------------------------------------------------------
// Exhaustive single steps.

/// Entry of one slot: missing, blessed, or a trial with 0..=3 tries left and 0, 1 or 3 done.
fn counter_choices() -> Vec<Option<Counter>> {
    let mut choices = vec![None, Some(Counter::Blessed)];
    for left in 0..=3 {
        for done in [0, 1, 3] {
            choices.push(Some(trial(left, done)));
        }
    }
    choices
}

fn record_choices() -> Vec<Record> {
    let mut trials = vec![None];
    for (slot, version) in [(Slot::A, VA), (Slot::B, VB)] {
        for version in [version, "9.9"] {
            for last_failure in [None, Some("boom".to_string())] {
                trials.push(Some(Trial {
                    slot,
                    version: version.to_string(),
                    last_failure,
                }));
            }
        }
    }
    let rolled_back = |v: &str| RolledBack {
        version: v.to_string(),
        reason: format!("{v} failed"),
    };
    let mut records = Vec::new();
    for t in &trials {
        for rb in [vec![], vec![rolled_back(VA)], vec![rolled_back(VB)]] {
            records.push(Record {
                trial: t.clone(),
                rolled_back: rb,
                last_upgrade: None,
            });
        }
    }
    records
}

/// Corrupt leftovers: none, an old blessed A entry, an old bad B entry.
fn extra_choices() -> Vec<Option<Entry>> {
    vec![
        None,
        Some(entry("0.5", Slot::A, Counter::Blessed, 0)),
        Some(entry("0.6", Slot::B, trial(0, 3), 0)),
    ]
}

fn all_states() -> Vec<Machine> {
    let mut states = Vec::new();
    for booted in [Slot::A, Slot::B] {
        for a in counter_choices() {
            for b in counter_choices() {
                for (sa, sb) in [(1, 2), (2, 1)] {
                    for extra in extra_choices() {
                        for record in record_choices() {
                            let mut entries = Vec::new();
                            if let Some(c) = a {
                                entries.push(entry(VA, Slot::A, c, sa));
                            }
                            if let Some(c) = b {
                                entries.push(entry(VB, Slot::B, c, sb));
                            }
                            entries.extend(extra.clone());
                            states.push(Machine {
                                booted,
                                entries,
                                record,
                            });
                        }
                    }
                }
            }
        }
    }
    states
}

fn upgrade_requests() -> Vec<UpgradeRequest> {
    vec![
        request("3.0.0"),
        request(VB),
        UpgradeRequest {
            allow_retry: true,
            allow_downgrade: true,
            ..request(VB)
        },
        UpgradeRequest {
            allow_retry: true,
            ..request(VA)
        },
        request("0.9"),
        UpgradeRequest {
            allow_downgrade: true,
            ..request("0.9")
        },
        UpgradeRequest {
            tries: 0,
            ..request("3.0.0")
        },
        UpgradeRequest {
            tries: 1,
            ..request("3.0.0")
        },
        request("3.0/0"),
        request(""),
    ]
}

fn check_assess(m: &Machine) {
    let view = m.view();
    let mine = view.entry(m.booted);
    let theirs = view.entry(m.booted.other());
    let assessment = assess(&view);
    match &assessment {
        Assessment::Unmanaged { slot } => {
            assert!(mine.is_none());
            assert_eq!(*slot, m.booted);
        }
        Assessment::RunHealthChecks {
            slot,
            version,
            recorded,
        } => {
            let mine = mine.unwrap();
            assert!(!mine.counter.is_blessed());
            assert_eq!((slot, version), (&m.booted, &mine.image_version));
            let t = m.record.trial.as_ref();
            assert_eq!(
                *recorded,
                t.is_some_and(|t| t.slot == *slot && &t.version == version)
            );
        }
        Assessment::FellBack {
            bad_slot,
            version,
            reason,
        } => {
            assert!(mine.unwrap().counter.is_blessed());
            let theirs = theirs.unwrap();
            assert_eq!((bad_slot, version), (&theirs.slot, &theirs.image_version));
            assert!(!theirs.counter.is_blessed());
            assert!(!reason.is_empty());
        }
        Assessment::StaleTrial { outcome } => {
            assert!(mine.unwrap().counter.is_blessed());
            assert!(m.record.trial.is_some());
            assert!(matches!(
                outcome,
                Outcome::Blessed { .. } | Outcome::Failed { .. }
            ));
        }
        Assessment::Good => {
            assert!(mine.unwrap().counter.is_blessed());
        }
    }
    // Whatever the record says, a bad other entry next to a blessed booted one is a fallback.
    if mine.is_some_and(|e| e.counter.is_blessed()) && theirs.is_some_and(|e| e.counter.is_bad()) {
        assert!(matches!(assessment, Assessment::FellBack { .. }));
    }
    // Settling converges at once: afterwards there is nothing left to settle.
    let mut settled = m.clone();
    settled.apply_checked(&settle(&view, &assessment));
    let again = assess(&settled.view());
    assert!(
        settle(&settled.view(), &again).is_empty(),
        "{m:?}: {assessment:?} then {again:?}"
    );
    if let Assessment::FellBack { version, .. } = &assessment {
        assert!(settled.record.trial.is_none());
        assert!(settled.record.rolled_back_reason(version).is_some());
        assert!(matches!(again, Assessment::Good));
    }
}

fn check_health(m: &Machine) {
    let view = m.view();
    let mine = view.entry(m.booted).cloned();
    let on_trial = mine.as_ref().is_some_and(|e| !e.counter.is_blessed());

    let mut passed = m.clone();
    let actions = after_health(&view, &HealthResult::Passed);
    assert!(!passed.apply_checked(&actions), "no reboot after passing");
    if on_trial {
        let mine = mine.as_ref().unwrap();
        let now = entry_of(&passed.entries, m.booted).unwrap();
        assert!(now.counter.is_blessed());
        assert_eq!(now.image_version, mine.image_version);
        assert!(passed.record.trial.is_none());
        assert!(passed
            .record
            .rolled_back_reason(&mine.image_version)
            .is_none());
        assert!(invariant_holds(&passed.entries));
        assert!(!matches!(
            assess(&passed.view()),
            Assessment::RunHealthChecks { .. }
        ));
    } else {
        assert!(actions.is_empty());
    }

    let mut failed = m.clone();
    let actions = after_health(&view, &HealthResult::Failed("boom".into()));
    let rebooted = failed.apply_checked(&actions);
    assert_eq!(failed.entries, m.entries, "a failure changes no entry");
    if on_trial {
        let mine = mine.unwrap();
        let t = failed.record.trial.as_ref().unwrap();
        assert_eq!(
            (t.slot, t.version.as_str(), t.last_failure.as_deref()),
            (m.booted, mine.image_version.as_str(), Some("boom"))
        );
        let fallback = view
            .entry(m.booted.other())
            .is_some_and(|e| e.counter.is_blessed());
        assert_eq!(rebooted, !mine.counter.is_bad() || fallback);
        // After the reboot the loader either tries again or falls back to a blessed slot.
        if rebooted && mine.counter.is_bad() {
            let next = failed.boot();
            assert_ne!(next.booted, m.booted);
            let fell_back = assess(&next.view());
            assert_eq!(
                fell_back,
                Assessment::FellBack {
                    bad_slot: m.booted,
                    version: mine.image_version.clone(),
                    reason: "boom".into()
                }
            );
        }
    } else {
        assert!(actions.is_empty());
    }
}

/// The refusal `plan_upgrade` must give, computed independently.
fn expected_refusal(m: &Machine, r: &UpgradeRequest) -> Option<&'static str> {
    let mine = entry_of(&m.entries, m.booted);
    let Some(mine) = mine else {
        return Some("no booted entry");
    };
    if !mine.counter.is_blessed() {
        return Some("booted not blessed");
    }
    if r.version.is_empty() || r.version.contains('/') {
        return Some("invalid version");
    }
    if r.tries == 0 {
        return Some("no tries");
    }
    if !r.allow_retry && m.record.rolled_back.iter().any(|x| x.version == r.version) {
        return Some("rolled back");
    }
    let newer = match (r.version.as_str(), mine.image_version.as_str()) {
        ("3.0.0", _) => true,
        (VB, v) => v == VA || v == "0.5",
        (VA, v) => v == "0.5",
        ("0.9", v) => v == "0.5",
        _ => unreachable!(),
    };
    if !r.allow_downgrade && !newer {
        return Some("not newer");
    }
    None
}

fn refusal_kind(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::NoBootedEntry { .. } => "no booted entry",
        Refusal::BootedNotBlessed { .. } => "booted not blessed",
        Refusal::InvalidVersion { .. } => "invalid version",
        Refusal::NoTries => "no tries",
        Refusal::RolledBackBefore { .. } => "rolled back",
        Refusal::NotNewer { .. } => "not newer",
        other => panic!("unexpected refusal {other:?}"),
    }
}

fn check_upgrade(m: &Machine, r: &UpgradeRequest) {
    let view = m.view();
    match plan_upgrade(&view, r) {
        Err(refusal) => assert_eq!(
            Some(refusal_kind(&refusal)),
            expected_refusal(m, r),
            "{m:?} {r:?}"
        ),
        Ok(plan) => {
            assert_eq!(expected_refusal(m, r), None, "{m:?} {r:?}");
            let target = m.booted.other();
            assert_eq!(plan.target, target);
            assert_eq!(plan.new_entry.counter, trial(r.tries, 0));
            assert!(m
                .entries
                .iter()
                .all(|e| e.sort_version < plan.new_entry.sort_version));
            let mut after = m.clone();
            let actions = upgrade_actions(&plan);
            // The target's entries are gone before the slot is written.
            let mut before = m.clone();
            before.apply_checked(&plan.before_write());
            assert!(before.entries.iter().all(|e| e.slot != target));
            assert!(after.apply_checked(&actions));
            // The booted slot's entries are untouched.
            let of = |entries: &[Entry], slot| -> Vec<Entry> {
                entries.iter().filter(|e| e.slot == slot).cloned().collect()
            };
            assert_eq!(of(&after.entries, m.booted), of(&m.entries, m.booted));
            // The loader starts the new slot next, as a recorded trial.
            let next = after.boot();
            assert_eq!(next.booted, target);
            assert_eq!(
                assess(&next.view()),
                Assessment::RunHealthChecks {
                    slot: target,
                    version: r.version.clone(),
                    recorded: true
                }
            );
        }
    }
}

fn check_rollback(m: &Machine) {
    let view = m.view();
    let target = m.booted.other();
    let theirs = view.entry(target).cloned();
    match plan_rollback(&view, None) {
        Err(refusal) => {
            match theirs {
                None => assert_eq!(refusal, Refusal::NoRollbackTarget { slot: target }),
                Some(e) => {
                    assert!(!e.counter.is_blessed());
                    assert!(matches!(refusal, Refusal::RollbackTargetNotBlessed { .. }));
                }
            }
            assert!(refusal.to_string().starts_with("cannot roll back"));
        }
        Ok(actions) => {
            let theirs = theirs.unwrap();
            assert!(theirs.counter.is_blessed());
            let mut after = m.clone();
            assert!(after.apply_checked(&actions));
            let next = after.boot();
            assert_eq!(next.booted, target);
            let now = entry_of(&next.entries, target).unwrap();
            assert_eq!(now.file_name, theirs.file_name);
            assert!(m.entries.iter().all(|e| e.sort_version < now.sort_version));
            assert!(after
                .record
                .rolled_back_reason(&theirs.image_version)
                .is_none());
            assert!(after.record.trial.is_none());
            if let Some(mine) = view.entry(m.booted) {
                // The version left is not installed again by itself.
                assert_eq!(
                    after.record.rolled_back_reason(&mine.image_version),
                    m.record
                        .rolled_back_reason(&mine.image_version)
                        .or(Some(REQUESTED_ROLLBACK_REASON))
                );
            }
            assert!(after
                .entries
                .iter()
                .all(|e| e.slot == target || e.counter.is_blessed()));
            assert_eq!(assess(&next.view()), Assessment::Good, "{m:?}");
        }
    }
}

fn check_loader_boot(m: &Machine) {
    let Some((booted, entries)) = loader_boot(&m.entries) else {
        assert!(m.entries.is_empty());
        return;
    };
    if invariant_holds(&m.entries) {
        assert!(invariant_holds(&entries));
        // A blessed entry never yields to a bad one.
        assert!(!loader_pick(&m.entries).unwrap().counter.is_bad());
    }
    let next = Machine {
        booted,
        entries,
        record: m.record.clone(),
    };
    check_assess(&next);
}

#[test]
fn every_state_and_event() {
    let states = all_states();
    // 2 booted slots x 14 x 14 entry choices x 2 orders x 3 leftovers x 27 records.
    assert_eq!(states.len(), 2 * 14 * 14 * 2 * 3 * 27);
    let requests = upgrade_requests();
    let mut transitions = 0;
    let mut valid = 0;
    for m in &states {
        if invariant_holds(&m.entries) {
            valid += 1;
        }
        let json = serde_json::to_string(&m.record).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), m.record);
        check_assess(m);
        check_health(m);
        for r in &requests {
            check_upgrade(m, r);
        }
        check_rollback(m);
        check_loader_boot(m);
        // assess, health passed, health failed, every request, rollback, loader boot.
        transitions += 4 + requests.len() + 1;
    }
    assert_eq!(transitions, states.len() * 15);
    eprintln!(
        "{} states ({valid} with a blessed entry), {transitions} transitions",
        states.len()
    );
    assert!(valid > 0);
}

// ---------------------------------------------------------------------------------------
// Everything reachable from the factory image.

/// What the agent may do at one boot, each list cut short anywhere by a power cut.
fn agent_runs(m: &Machine) -> Vec<Vec<Action>> {
    let view = m.view();
    let assessment = assess(&view);
    let mut runs = Vec::new();
    let settled = settle(&view, &assessment);
    if let Assessment::RunHealthChecks { .. } = assessment {
        // The kernel or the agent never got to report: just another boot.
        runs.push(Vec::new());
        for result in [
            HealthResult::Passed,
            HealthResult::Failed("health failed".into()),
        ] {
            let mut run = settled.clone();
            run.extend(after_health(&view, &result));
            runs.push(run);
        }
    } else {
        runs.push(settled.clone());
    }
    // Then, if still up: an operation (refusals change nothing).
    let mut with_ops = Vec::new();
    for run in runs {
        with_ops.push(run.clone());
        if run.last() == Some(&Action::Reboot) {
            continue;
        }
        let mut up = m.clone();
        up.apply_checked(&run);
        let view = up.view();
        for version in ["2", "3"] {
            if let Ok(plan) = plan_upgrade(&view, &request(version)) {
                assert!(
                    up.record.rolled_back_reason(version).is_none(),
                    "retried {version} without allow_retry"
                );
                let mut r = run.clone();
                r.extend(upgrade_actions(&plan));
                with_ops.push(r);
            }
        }
        if let Ok(actions) = plan_rollback(&view, None) {
            let mut r = run.clone();
            r.extend(actions);
            with_ops.push(r);
        }
    }
    with_ops
}

#[test]
fn every_reachable_state_keeps_a_blessed_slot() {
    let start = Machine::factory();
    let mut seen = HashSet::new();
    let mut states = Vec::new();
    let mut queue = VecDeque::from([start.clone()]);
    seen.insert(format!("{start:?}"));
    states.push(start);
    let mut cuts = 0;
    while let Some(m) = queue.pop_front() {
        assert!(invariant_holds(&m.entries), "{m:?}");
        for run in agent_runs(&m) {
            // A power cut after any prefix of the run, then the next boot.
            for n in 0..=run.len() {
                let mut cut = m.clone();
                cut.apply_checked(&run[..n]);
                cuts += 1;
                let next = cut.boot().normalized();
                if seen.insert(format!("{next:?}")) {
                    states.push(next.clone());
                    queue.push_back(next);
                }
            }
        }
        assert!(seen.len() < 100_000, "state space does not close");
    }
    // From every reachable state, boots whose health checks pass settle in a few boots.
    for m in &states {
        let mut m = m.clone();
        let mut good = false;
        for _ in 0..5 {
            let view = m.view();
            let a = assess(&view);
            let mut actions = settle(&view, &a);
            if let Assessment::RunHealthChecks { .. } = a {
                actions.extend(after_health(&view, &HealthResult::Passed));
            }
            m.apply_checked(&actions);
            if matches!(assess(&m.view()), Assessment::Good) {
                good = true;
                break;
            }
            m = m.boot();
        }
        assert!(good, "{m:?} does not settle");
    }
    eprintln!("{} reachable states, {cuts} power cuts", states.len());
    assert!(states.len() > 50, "{}", states.len());
    assert!(cuts > states.len());
}

// ---------------------------------------------------------------------------------------
// Scenarios.

fn v1_on_a_upgraded_to_v2_on_b() -> Machine {
    let mut m = Machine::factory();
    assert_eq!(assess(&m.view()), Assessment::Good);
    let plan = plan_upgrade(&m.view(), &request("2.0.0")).unwrap();
    assert_eq!(plan.target, Slot::B);
    assert!(plan.remove_entries.is_empty());
    assert_eq!(plan.new_entry.file_name, "p6os-2.0.0-b+3.conf");
    assert_eq!(plan.new_entry.sort_version, 2);
    assert!(m.apply_checked(&upgrade_actions(&plan)));
    assert_eq!(
        m.record.last_upgrade,
        Some(Outcome::Installed {
            version: "2.0.0".into(),
            slot: Slot::B
        })
    );
    m
}

#[test]
fn scenario_upgrade_passes() {
    let mut m = v1_on_a_upgraded_to_v2_on_b().boot();
    assert_eq!(m.booted, Slot::B);
    let view = m.view();
    assert_eq!(
        assess(&view),
        Assessment::RunHealthChecks {
            slot: Slot::B,
            version: "2.0.0".into(),
            recorded: true
        }
    );
    let actions = after_health(&view, &HealthResult::Passed);
    assert_eq!(
        actions[0],
        Action::RenameEntry {
            from: "p6os-2.0.0-b+2-1.conf".into(),
            to: "p6os-2.0.0-b.conf".into()
        }
    );
    assert!(!m.apply_checked(&actions));
    let names: Vec<&str> = m.entries.iter().map(|e| e.file_name.as_str()).collect();
    assert_eq!(names, ["p6os-1.0.0-a.conf", "p6os-2.0.0-b.conf"]);
    assert_eq!(m.record.trial, None);
    assert_eq!(
        m.record.last_upgrade,
        Some(Outcome::Blessed {
            version: "2.0.0".into(),
            slot: Slot::B
        })
    );
    // B boots from now on, blessed.
    let m = m.boot();
    assert_eq!(m.booted, Slot::B);
    assert_eq!(assess(&m.view()), Assessment::Good);
}

#[test]
fn scenario_health_fails_three_times_then_no_retry() {
    let mut m = v1_on_a_upgraded_to_v2_on_b();
    for attempt in 1..=3 {
        m = m.boot();
        assert_eq!(m.booted, Slot::B, "try {attempt}");
        let view = m.view();
        assert!(matches!(
            assess(&view),
            Assessment::RunHealthChecks { recorded: true, .. }
        ));
        let reason = format!("kubelet not ready (try {attempt})");
        let actions = after_health(&view, &HealthResult::Failed(reason));
        assert_eq!(actions.last(), Some(&Action::Reboot));
        assert!(m.apply_checked(&actions));
    }
    m = m.boot();
    assert_eq!(m.booted, Slot::A);
    let view = m.view();
    let assessment = assess(&view);
    assert_eq!(
        assessment,
        Assessment::FellBack {
            bad_slot: Slot::B,
            version: "2.0.0".into(),
            reason: "kubelet not ready (try 3)".into()
        }
    );
    m.apply_checked(&settle(&view, &assessment));
    assert_eq!(m.entries, [entry(VA, Slot::A, Counter::Blessed, 1)]);
    assert_eq!(
        m.record.last_upgrade,
        Some(Outcome::RolledBack {
            version: "2.0.0".into(),
            slot: Slot::B,
            reason: "kubelet not ready (try 3)".into()
        })
    );
    assert_eq!(assess(&m.view()), Assessment::Good);
    // No retry loop: the console still asking for 2.0.0 gets a refusal.
    let refusal = plan_upgrade(&m.view(), &request("2.0.0")).unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "version 2.0.0 rolled back before (kubelet not ready (try 3)): not installing it again \
         unless a retry is allowed"
    );
    let retry = UpgradeRequest {
        allow_retry: true,
        ..request("2.0.0")
    };
    let plan = plan_upgrade(&m.view(), &retry).unwrap();
    assert_eq!(plan.new_entry.file_name, "p6os-2.0.0-b+3.conf");
    // A newer version is fine.
    assert!(plan_upgrade(&m.view(), &request("2.0.1")).is_ok());
}

#[test]
fn scenario_kernel_never_reaches_the_agent() {
    let mut m = v1_on_a_upgraded_to_v2_on_b();
    for _ in 0..3 {
        m = m.boot();
        assert_eq!(m.booted, Slot::B);
    }
    m = m.boot();
    assert_eq!(m.booted, Slot::A);
    assert_eq!(
        m.entries.iter().map(|e| &e.file_name).collect::<Vec<_>>(),
        ["p6os-1.0.0-a.conf", "p6os-2.0.0-b+0-3.conf"]
    );
    let view = m.view();
    assert_eq!(
        assess(&view),
        Assessment::FellBack {
            bad_slot: Slot::B,
            version: "2.0.0".into(),
            reason: DEFAULT_FALLBACK_REASON.into()
        }
    );
    // The same with the record lost.
    let lost = View {
        record: Record::default(),
        ..view.clone()
    };
    assert!(
        matches!(assess(&lost), Assessment::FellBack { reason, .. } if reason == DEFAULT_FALLBACK_REASON)
    );
    // The initramfs left a note on why slot b did not start: the fallback says so.
    let failure = BootFailure {
        slot: Slot::B,
        version: "2.0.0".into(),
        reason: "dm-verity: the root does not verify".into(),
    };
    let noted = View {
        record: view.record.clone().with_boot_failure(&failure),
        ..view.clone()
    };
    assert!(
        matches!(assess(&noted), Assessment::FellBack { reason, .. } if reason == failure.reason)
    );
    // A note about another slot, another version, or a trial with a reason of its own
    // changes nothing.
    for other in [
        BootFailure {
            slot: Slot::A,
            ..failure.clone()
        },
        BootFailure {
            version: "1.0.0".into(),
            ..failure.clone()
        },
    ] {
        assert_eq!(view.record.clone().with_boot_failure(&other), view.record);
    }
    let mut reasoned = view.record.clone();
    reasoned.trial.as_mut().unwrap().last_failure = Some("health".into());
    assert_eq!(reasoned.clone().with_boot_failure(&failure), reasoned);
    assert_eq!(lost.record.clone().with_boot_failure(&failure), lost.record);
}

#[test]
fn scenario_rollback_between_blessed_slots() {
    let mut m = v1_on_a_upgraded_to_v2_on_b().boot();
    let actions = after_health(&m.view(), &HealthResult::Passed);
    m.apply_checked(&actions);
    let m2 = m.boot();
    assert_eq!(m2.booted, Slot::B);
    let mut m = m2;
    let actions = plan_rollback(&m.view(), None).unwrap();
    assert_eq!(
        actions,
        [
            Action::SetSortVersion {
                file_name: "p6os-1.0.0-a.conf".into(),
                sort_version: 3
            },
            Action::SaveRecord(Record {
                trial: None,
                rolled_back: vec![RolledBack {
                    version: "2.0.0".into(),
                    reason: REQUESTED_ROLLBACK_REASON.into()
                }],
                last_upgrade: Some(Outcome::RolledBack {
                    version: "2.0.0".into(),
                    slot: Slot::B,
                    reason: REQUESTED_ROLLBACK_REASON.into()
                })
            }),
            Action::Reboot
        ]
    );
    assert!(m.apply_checked(&actions));
    let mut m = m.boot();
    assert_eq!(m.booted, Slot::A);
    assert_eq!(assess(&m.view()), Assessment::Good);
    assert!(matches!(
        plan_upgrade(&m.view(), &request("2.0.0")),
        Err(Refusal::RolledBackBefore { .. })
    ));
    // And back again to B: 2.0.0 leaves rolled_back, 1.0.0 enters it.
    m.apply_checked(&plan_rollback(&m.view(), None).unwrap());
    let m = m.boot();
    assert_eq!(m.booted, Slot::B);
    assert_eq!(m.record.rolled_back.len(), 1);
    assert_eq!(m.record.rolled_back[0].version, "1.0.0");
}

#[test]
fn rollback_from_a_trial_counts_as_its_failure() {
    let mut m = v1_on_a_upgraded_to_v2_on_b().boot();
    assert!(m.apply_checked(&plan_rollback(&m.view(), None).unwrap()));
    assert_eq!(m.entries, [entry(VA, Slot::A, Counter::Blessed, 3)]);
    assert_eq!(
        m.record.last_upgrade,
        Some(Outcome::RolledBack {
            version: "2.0.0".into(),
            slot: Slot::B,
            reason: REQUESTED_ROLLBACK_REASON.into()
        })
    );
    let m = m.boot();
    assert_eq!(m.booted, Slot::A);
    assert_eq!(assess(&m.view()), Assessment::Good);
}

#[test]
fn odd_states() {
    let a = entry(VA, Slot::A, Counter::Blessed, 1);
    let view = |booted, entries: Vec<Entry>, trial: Option<Trial>| View {
        booted,
        entries,
        record: Record {
            trial,
            ..Record::default()
        },
    };
    let t = |slot, version: &str| {
        Some(Trial {
            slot,
            version: version.into(),
            last_failure: None,
        })
    };
    // Direct kernel boot of B: nothing to do, nothing allowed.
    let v = view(Slot::B, vec![a.clone()], None);
    assert_eq!(assess(&v), Assessment::Unmanaged { slot: Slot::B });
    assert!(after_health(&v, &HealthResult::Failed("x".into())).is_empty());
    assert_eq!(
        plan_upgrade(&v, &request("3")),
        Err(Refusal::NoBootedEntry { slot: Slot::B })
    );
    // A trial the record does not know (record lost): health decides, and records it.
    let b = entry(VB, Slot::B, trial(2, 1), 2);
    let v = view(Slot::B, vec![a.clone(), b.clone()], None);
    assert!(matches!(
        assess(&v),
        Assessment::RunHealthChecks {
            recorded: false,
            ..
        }
    ));
    let actions = after_health(&v, &HealthResult::Failed("x".into()));
    assert_eq!(
        actions[0],
        Action::SaveRecord(Record {
            trial: Some(Trial {
                slot: Slot::B,
                version: VB.into(),
                last_failure: Some("x".into())
            }),
            ..Record::default()
        })
    );
    // Written, reboot pending (or a manual pick of A): not a fallback.
    let pending = entry(VB, Slot::B, trial(3, 0), 2);
    let v = view(Slot::A, vec![a.clone(), pending], t(Slot::B, VB));
    assert_eq!(assess(&v), Assessment::Good);
    // Started and then A booted with the record knowing it: a fallback.
    let v = view(Slot::A, vec![a.clone(), b.clone()], t(Slot::B, VB));
    assert!(matches!(assess(&v), Assessment::FellBack { .. }));
    // Started, record lost: left to the loader.
    let v = view(Slot::A, vec![a.clone(), b], None);
    assert_eq!(assess(&v), Assessment::Good);
    // Power cut between blessing and saving the record.
    let blessed_b = entry(VB, Slot::B, Counter::Blessed, 2);
    let v = view(Slot::B, vec![a.clone(), blessed_b], t(Slot::B, VB));
    assert_eq!(
        assess(&v),
        Assessment::StaleTrial {
            outcome: Outcome::Blessed {
                version: VB.into(),
                slot: Slot::B
            }
        }
    );
    // Record saved but the entry never written.
    let v = view(Slot::A, vec![a.clone()], t(Slot::B, VB));
    let Assessment::StaleTrial {
        outcome: Outcome::Failed { version, reason },
    } = assess(&v)
    else {
        panic!()
    };
    assert_eq!(version, VB);
    assert_eq!(
        reason,
        "interrupted: slot b has no boot entry for version 2.0.0"
    );
    // That is not a rollback: installing it again is allowed.
    let mut m = Machine {
        booted: Slot::A,
        entries: v.entries.clone(),
        record: v.record.clone(),
    };
    m.apply_checked(&settle(&v, &assess(&v)));
    assert!(plan_upgrade(&m.view(), &request(VB)).is_ok());
    // Last try failed, no blessed fallback: stay up rather than loop.
    let only = entry(VB, Slot::B, trial(0, 3), 2);
    let v = view(Slot::B, vec![only], t(Slot::B, VB));
    assert_eq!(
        after_health(&v, &HealthResult::Failed("x".into())).last(),
        Some(&Action::SaveRecord(Record {
            trial: Some(Trial {
                slot: Slot::B,
                version: VB.into(),
                last_failure: Some("x".into())
            }),
            ..Record::default()
        }))
    );
    // Two entries for A: the newer counts, the upgrade removes both of B's.
    let old_b = entry("0.1", Slot::B, Counter::Blessed, 0);
    let bad_b = entry("0.2", Slot::B, trial(0, 3), 1);
    let newest_a = entry("1.5", Slot::A, Counter::Blessed, 5);
    let v = view(Slot::A, vec![a, newest_a.clone(), old_b, bad_b], None);
    assert_eq!(v.entry(Slot::A), Some(&newest_a));
    let plan = plan_upgrade(&v, &request("2")).unwrap();
    assert_eq!(
        plan.remove_entries,
        ["p6os-0.1-b.conf", "p6os-0.2-b+0-3.conf"]
    );
    assert_eq!(plan.new_entry.sort_version, 6);
}

#[test]
fn refusals() {
    let a = entry(VA, Slot::A, Counter::Blessed, u64::MAX);
    let v = View {
        booted: Slot::A,
        entries: vec![a],
        record: Record::default(),
    };
    assert_eq!(
        plan_upgrade(&v, &request("2")),
        Err(Refusal::SortVersionExhausted { max: u64::MAX })
    );
    let b = entry(VB, Slot::B, trial(1, 2), 2);
    let v = View {
        booted: Slot::B,
        entries: vec![entry(VA, Slot::A, Counter::Blessed, 1), b.clone()],
        record: Record::default(),
    };
    let messages = [
        plan_upgrade(&v, &request("3")).unwrap_err(),
        plan_upgrade(
            &View {
                booted: Slot::A,
                ..v.clone()
            },
            &request("0.1"),
        )
        .unwrap_err(),
        plan_rollback(
            &View {
                booted: Slot::A,
                ..v.clone()
            },
            None,
        )
        .unwrap_err(),
        plan_rollback(
            &View {
                booted: Slot::A,
                entries: vec![entry(VA, Slot::A, Counter::Blessed, 1)],
                record: Record::default(),
            },
            None,
        )
        .unwrap_err(),
        Refusal::NoTries,
        Refusal::InvalidVersion {
            version: "a b".into(),
        },
        Refusal::NotNewer {
            version: "1".into(),
            booted: "2".into(),
        },
    ];
    let expected = [
        "the booted slot b (version 2.0.0) is on trial and not blessed yet: the other slot is \
         the only fallback and must not be overwritten",
        "version 0.1 is not newer than the booted version 1.0.0: not installing it unless a \
         downgrade is allowed",
        "cannot roll back: slot b (version 2.0.0) was never blessed",
        "cannot roll back: slot b has no boot entry",
        "at least one boot try is needed",
        "invalid version \"a b\": expected 1 to 64 letters, digits, '.', '_', '+', '~' or '-'",
        "version 1 is not newer than the booted version 2: not installing it unless a downgrade \
         is allowed",
    ];
    for (m, e) in messages.iter().zip(expected) {
        assert_eq!(m.to_string(), e);
        assert!(m.to_string().starts_with(|c: char| !c.is_uppercase()));
    }
}

// ---------------------------------------------------------------------------------------
// Names, versions, the record.

#[test]
fn entry_names() {
    type Parsed = Option<(&'static str, Slot, Counter)>;
    let cases: &[(&str, Parsed)] = &[
        (
            "p6os-1.0.0-a.conf",
            Some(("1.0.0", Slot::A, Counter::Blessed)),
        ),
        ("p6os-2-b+3.conf", Some(("2", Slot::B, trial(3, 0)))),
        ("p6os-2-b+2-1.conf", Some(("2", Slot::B, trial(2, 1)))),
        ("p6os-2-b+0-3.conf", Some(("2", Slot::B, trial(0, 3)))),
        ("p6os-2-b+0.conf", Some(("2", Slot::B, trial(0, 0)))),
        (
            "p6os-1.0-rc1-a.conf",
            Some(("1.0-rc1", Slot::A, Counter::Blessed)),
        ),
        (
            "p6os-1.0-rc1-a+3-0.conf",
            Some(("1.0-rc1", Slot::A, trial(3, 0))),
        ),
        (
            "p6os-1.0+git5-a.conf",
            Some(("1.0+git5", Slot::A, Counter::Blessed)),
        ),
        (
            "p6os-1.0+git5-b+1-2.conf",
            Some(("1.0+git5", Slot::B, trial(1, 2))),
        ),
        ("p6os--a.conf", None),
        ("p6os-a.conf", None),
        ("p6os-1-c.conf", None),
        ("p6os-1-A.conf", None),
        ("p6os-1-a+x.conf", None),
        ("p6os-1-a+3-x.conf", None),
        ("p6os-1-a+-3.conf", None),
        ("p6os-1-a+3-.conf", None),
        ("p6os-1-a+.conf", None),
        ("p6os-1-a++3.conf", None),
        ("p6os-1-a+99999999999.conf", None),
        ("p6os-1-a", None),
        ("other-1-a.conf", None),
        ("p6os-1-a.conf.bak", None),
    ];
    for (name, expected) in cases {
        let got = parse_entry_name(name);
        let expected = expected.map(|(v, s, c)| (v.to_string(), s, c));
        assert_eq!(got, expected, "{name}");
        if let Some((v, s, c)) = got {
            assert_eq!(
                parse_entry_name(&entry_file_name(&v, s, c)),
                Some((v, s, c))
            );
        }
    }
    assert_eq!(
        entry_file_name("2", Slot::B, trial(3, 0)),
        "p6os-2-b+3.conf"
    );
    assert_eq!(
        entry_file_name("2", Slot::B, trial(0, 3)),
        "p6os-2-b+0-3.conf"
    );
    assert_eq!(
        Entry::from_file("p6os-1.0.0-a.conf", "1.0.0"),
        Some(entry(VA, Slot::A, Counter::Blessed, 1))
    );
    assert_eq!(Entry::from_file("loader.conf", "1"), None);
}

#[test]
fn sort_versions() {
    for (text, n) in [
        ("1.0.0", 1),
        ("7", 7),
        (" 12abc", 12),
        ("", 0),
        ("v2", 0),
        ("99999999999999999999999", u64::MAX),
    ] {
        assert_eq!(sort_version_of(text), n, "{text:?}");
    }
}

#[test]
fn record_json() {
    let record = Record {
        trial: Some(Trial {
            slot: Slot::B,
            version: "2".into(),
            last_failure: Some("boom".into()),
        }),
        rolled_back: vec![RolledBack {
            version: "1.5".into(),
            reason: "r".into(),
        }],
        last_upgrade: Some(Outcome::Installed {
            version: "2".into(),
            slot: Slot::B,
        }),
    };
    let json = serde_json::to_string(&record).unwrap();
    assert_eq!(
        json,
        r#"{"trial":{"slot":"b","version":"2","last_failure":"boom"},"rolled_back":[{"version":"1.5","reason":"r"}],"last_upgrade":{"outcome":"installed","version":"2","slot":"b"}}"#
    );
    assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), record);
    // An older or newer agent's record: missing fields default, unknown ones are ignored.
    assert_eq!(
        serde_json::from_str::<Record>(r#"{"future":1}"#).unwrap(),
        Record::default()
    );
    assert!(serde_json::from_str::<Record>(r#"{"trial":{"slot":"c","version":"2"}}"#).is_err());
    for outcome in [
        Outcome::Blessed {
            version: "2".into(),
            slot: Slot::A,
        },
        Outcome::RolledBack {
            version: "2".into(),
            slot: Slot::A,
            reason: "r".into(),
        },
        Outcome::Failed {
            version: "2".into(),
            reason: "r".into(),
        },
    ] {
        let json = serde_json::to_string(&outcome).unwrap();
        assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), outcome);
    }
}

#[test]
fn rolled_back_is_bounded_and_unique() {
    let mut record = Record::default();
    for i in 0..40 {
        record = record_fallback(&record, Slot::B, &i.to_string(), "r");
        record = record_fallback(&record, Slot::B, &i.to_string(), "again");
    }
    assert_eq!(record.rolled_back.len(), MAX_ROLLED_BACK);
    assert_eq!(record.rolled_back[0].version, "8");
    assert!(record.rolled_back.iter().all(|r| r.reason == "r"));
}

proptest! {
    #[test]
    fn entry_names_round_trip(
        version in "[A-Za-z0-9][A-Za-z0-9._+~-]{0,19}",
        slot in prop_oneof![Just(Slot::A), Just(Slot::B)],
        counter in prop_oneof![
            Just(Counter::Blessed),
            (0u32..1000, 0u32..1000).prop_map(|(left, done)| Counter::Trial { left, done }),
        ],
    ) {
        let name = entry_file_name(&version, slot, counter);
        prop_assert_eq!(parse_entry_name(&name), Some((version, slot, counter)));
    }

    #[test]
    fn parsing_any_name_never_panics(name in "p6os-[a-b0-9.+-]{0,16}\\.conf") {
        if let Some((v, s, c)) = parse_entry_name(&name) {
            prop_assert!(!v.is_empty());
            let again = entry_file_name(&v, s, c);
            prop_assert_eq!(parse_entry_name(&again), Some((v, s, c)));
        }
    }

    #[test]
    fn version_order_is_a_total_preorder(
        a in "[0-9a-c]{0,3}([.-][0-9a-c]{0,3}){0,3}",
        b in "[0-9a-c]{0,3}([.-][0-9a-c]{0,3}){0,3}",
        c in "[0-9a-c]{0,3}([.-][0-9a-c]{0,3}){0,3}",
    ) {
        prop_assert_eq!(compare_versions(&a, &b), compare_versions(&b, &a).reverse());
        if compare_versions(&a, &b).is_le() && compare_versions(&b, &c).is_le() {
            prop_assert!(compare_versions(&a, &c).is_le());
        }
    }
}

/// The agent reads entry names as the shared table says (`layout/tests/entry-names.txt`),
/// the same table the builder's tests read.
#[test]
fn entry_names_follow_the_shared_table() {
    for line in include_str!("../../../layout/tests/entry-names.txt").lines() {
        let Some((file, expect)) = line.split_once('|').filter(|_| !line.starts_with('#')) else {
            continue;
        };
        let entry = Entry::from_file(file.trim(), "1");
        assert_eq!(entry.is_some(), expect.trim() != "-", "{file}");
        if let Some(e) = entry {
            let fields: Vec<&str> = expect.split_whitespace().collect();
            assert_eq!(e.image_version, fields[0], "{file}");
            assert_eq!(e.slot.as_str(), fields[1], "{file}");
            assert_eq!(e.counter.is_blessed(), fields[2] == "blessed", "{file}");
        }
    }
}

#[test]
fn a_rollback_to_a_slot_below_the_security_floor_is_refused_naming_the_floor() {
    use p6os_bundle::floor::{effective, Recorded};
    const FILE: &str = "/var/lib/p6os/security-floor";
    // Running 2.0.0 in B; A holds 1.0.0, blessed: a rollback target but for the floor.
    let v = View {
        booted: Slot::B,
        entries: vec![
            entry(VA, Slot::A, Counter::Blessed, 1),
            entry(VB, Slot::B, Counter::Blessed, 2),
        ],
        record: Record::default(),
    };
    let refused = |floor: Option<p6os_bundle::floor::Floor>| match plan_rollback(&v, floor.as_ref())
    {
        Err(Refusal::RollbackBelowFloor {
            slot,
            version,
            floor,
        }) => {
            assert_eq!((slot, version.as_str()), (Slot::A, VA));
            floor
        }
        other => panic!("{floor:?}: {other:?}"),
    };
    // The recorded floor, and the running slot's own floor when higher.
    let text = refused(effective(&Recorded::At("1.5.0".into()), FILE, VB, None));
    assert!(text.contains("1.5.0") && text.contains(FILE), "{text}");
    let text = refused(effective(&Recorded::Absent, FILE, VB, Some("1.2.0")));
    assert!(
        text.contains("1.2.0") && text.contains("running slot"),
        "{text}"
    );
    // A damaged floor file: closed, named.
    let damaged = Recorded::Damaged {
        file: FILE.into(),
        problem: "`` is not a version".into(),
    };
    let text = refused(effective(&damaged, FILE, VB, None));
    assert!(text.contains(FILE) && text.contains("damaged"), "{text}");
    let message = plan_rollback(&v, effective(&damaged, FILE, VB, None).as_ref())
        .unwrap_err()
        .to_string();
    assert!(message.starts_with("cannot roll back"), "{message}");
    // At or below the target's version, and no floor at all: the rollback goes ahead.
    for floor in [
        effective(&Recorded::At(VA.into()), FILE, VB, None),
        effective(&Recorded::At("0.9".into()), FILE, VB, Some("1.0.0")),
        None,
    ] {
        assert!(plan_rollback(&v, floor.as_ref()).is_ok(), "{floor:?}");
    }
}

#[test]
fn a_boot_failure_note_matches_its_trial_whatever_the_case_of_the_version() {
    // systemd-boot reports entry names in lower case.
    let record = Record {
        trial: Some(Trial {
            slot: Slot::B,
            version: "2.0.0-RC1".into(),
            last_failure: None,
        }),
        ..Record::default()
    };
    let noted = record.with_boot_failure(&BootFailure {
        slot: Slot::B,
        version: "2.0.0-rc1".into(),
        reason: "did not verify".into(),
    });
    assert_eq!(
        noted.trial.unwrap().last_failure.as_deref(),
        Some("did not verify")
    );
}
