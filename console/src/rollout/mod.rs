//! Staged rollouts, the decisions (pure): checking a request, splitting the members into
//! waves, a member's state from its heartbeat, whether the next wave starts or the rollout
//! pauses or completes, the operator's transitions, and whether a member may start now.
//! No I/O, no clock: `db::rollouts` passes rows and the time in.

pub mod window;

use p6os_protocol::rollout::{DeviceState, RolloutRequest, RolloutState, Totals, Wave};
use p6os_protocol::{Health, Heartbeat, OutcomeKind, Phase};

use crate::core::{check_labels, check_version_field};
use crate::error::ApiError;

/// Most waves in a rollout.
pub const MAX_WAVES: usize = 16;

/// Checks a request; the error names the field (`waves[2]`, `windows[0].time_zone`).
pub fn check_request(req: &RolloutRequest) -> Result<(), ApiError> {
    check_version_field(&Some(req.version.clone()), "version")?;
    check_labels(&req.selector, "selector")?;
    if req.waves.is_empty() || req.waves.len() > MAX_WAVES {
        return Err(ApiError::field(
            "waves",
            format!("give 1 to {MAX_WAVES} waves, the last one {{\"percent\": 100}}"),
        ));
    }
    for (i, w) in req.waves.iter().enumerate() {
        let ok = match *w {
            Wave::Count(n) => n >= 1,
            Wave::Percent(p) => (1..=100).contains(&p),
        };
        if !ok {
            return Err(ApiError::field(
                format!("waves[{i}]"),
                "a wave is a count of at least 1 or a percent from 1 to 100",
            ));
        }
    }
    if req.waves.last() != Some(&Wave::Percent(100)) {
        return Err(ApiError::field(
            format!("waves[{}]", req.waves.len() - 1),
            "the last wave must be {\"percent\": 100} (the rest): sizes are cumulative",
        ));
    }
    if req.failure_threshold == 0 {
        return Err(ApiError::field(
            "failure_threshold",
            "at least 1: the rollout pauses when this many members failed",
        ));
    }
    window::check_windows(&req.windows)
}

/// The cumulative size of each wave for `n` members: non-decreasing, the last is `n`.
pub fn wave_targets(waves: &[Wave], n: u64) -> Vec<u64> {
    let mut done = 0;
    waves
        .iter()
        .map(|w| {
            let size = match *w {
                Wave::Count(c) => u64::from(c),
                Wave::Percent(p) => (n * u64::from(p)).div_ceil(100),
            };
            done = size.clamp(done, n);
            done
        })
        .collect()
}

/// The wave of the member at `index` (0-based, in id order) given [`wave_targets`].
pub fn wave_of(index: u64, targets: &[u64]) -> usize {
    targets
        .iter()
        .position(|t| index < *t)
        .unwrap_or(targets.len().saturating_sub(1))
}

/// A member's state and its reason, from its last heartbeat, for the rollout of `version`.
/// Running the version comes first (trial or blessed), then an upgrade to it under way, then
/// the last upgrade's outcome for it; anything else is waiting.
pub fn device_state(version: &str, beat: Option<&Heartbeat>) -> (DeviceState, Option<String>) {
    let Some(b) = beat else {
        return (DeviceState::Waiting, None);
    };
    if b.version == version {
        return match b.health {
            Health::Good => (DeviceState::Blessed, None),
            Health::Assessing | Health::Unknown => (DeviceState::Trial, None),
        };
    }
    if let Some(p) = b.progress.as_ref().filter(|p| p.version == version) {
        return match p.phase {
            Phase::Downloading => (DeviceState::Downloading, None),
            Phase::Rebooting => (DeviceState::Installing, None),
            Phase::Failed => (
                DeviceState::Refused,
                Some(
                    p.message
                        .clone()
                        .unwrap_or_else(|| "the upgrade failed (no reason given)".into()),
                ),
            ),
        };
    }
    if let Some(u) = b.last_upgrade.as_ref().filter(|u| u.version == version) {
        let reason = u.reason.clone();
        return match u.outcome {
            OutcomeKind::Installed => (DeviceState::Installing, None),
            OutcomeKind::RolledBack => (
                DeviceState::RolledBack,
                reason.or_else(|| Some("rolled back (no reason given)".into())),
            ),
            OutcomeKind::Failed => (
                DeviceState::Refused,
                reason.or_else(|| Some("not installed (no reason given)".into())),
            ),
            // Blessed once, but it runs another version now: it went back.
            OutcomeKind::Blessed => (
                DeviceState::RolledBack,
                Some(format!("blessed, but it runs {} now", b.version)),
            ),
        };
    }
    (DeviceState::Waiting, None)
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub state: RolloutState,
    /// The last wave started.
    pub wave: usize,
    /// Failures at the last resume: not counted again.
    pub acknowledged: u64,
}

/// What a rollout does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Stay,
    Pause(String),
    /// Start this wave (every wave before it finished healthy).
    Advance(usize),
    Complete,
}

/// Failures counted against the threshold.
pub fn counted_failures(standing: &Standing, waves: &[Totals]) -> u64 {
    let all: u64 = waves.iter().map(Totals::failures).sum();
    all.saturating_sub(standing.acknowledged)
}

/// The next step of a rollout from its members' totals per wave: pause at the threshold;
/// once every member of the started waves finished (blessed, rolled back or refused) under
/// the threshold, start the next wave that has members, or complete.
pub fn decide(threshold: u32, standing: &Standing, waves: &[Totals]) -> Step {
    if standing.state != RolloutState::Running {
        return Step::Stay;
    }
    let failures = counted_failures(standing, waves);
    if failures >= u64::from(threshold) {
        return Step::Pause(format!(
            "{failures} member(s) failed (rolled back or refused), threshold {threshold}: \
             look at them (`rollouts show`), then resume or abort"
        ));
    }
    let started = standing.wave.min(waves.len());
    let all_done = waves[..(started + 1).min(waves.len())]
        .iter()
        .all(|t| t.finished() == t.devices);
    if !all_done {
        return Step::Stay;
    }
    match (started + 1..waves.len()).find(|&k| waves[k].devices > 0) {
        Some(k) => Step::Advance(k),
        None => Step::Complete,
    }
}

/// An operator's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Abort,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Abort => "abort",
        }
    }
}

/// The state after an operator's order and its reason, or why the order makes no sense now.
pub fn transition(
    state: RolloutState,
    action: Action,
) -> Result<(RolloutState, Option<String>), String> {
    use RolloutState::{Aborted, Completed, Paused, Running};
    match (state, action) {
        (Running, Action::Pause) => Ok((Paused, Some("paused by an operator".into()))),
        (Paused, Action::Resume) => Ok((Running, None)),
        (Running | Paused, Action::Abort) => Ok((Aborted, Some("aborted by an operator".into()))),
        (Paused, Action::Pause) => Err("it is already paused".into()),
        (Running, Action::Resume) => Err("it is running: nothing to resume".into()),
        (Completed | Aborted, a) => Err(format!(
            "it is {}: there is nothing to {}",
            state.as_str(),
            a.as_str()
        )),
    }
}

/// What a member's heartbeat is answered with, as far as the rollout goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The rollout's version (handed now if not before).
    Start,
    /// No version: its turn has not come (wave not started, paused, window closed).
    Hold,
    /// Under way or done: the answer stays as it is.
    Proceed,
}

/// Whether a member may start now: only a waiting one is held back, until the rollout runs,
/// its wave started and its maintenance window is open.
pub fn gate(
    state: RolloutState,
    started_wave: usize,
    member: DeviceState,
    member_wave: usize,
    window_open: bool,
) -> Gate {
    if member != DeviceState::Waiting {
        return Gate::Proceed;
    }
    if state == RolloutState::Running && member_wave <= started_wave && window_open {
        Gate::Start
    } else {
        Gate::Hold
    }
}

#[cfg(test)]
mod tests;
