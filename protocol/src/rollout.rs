//! Staged rollouts (operator side): a version rolled out to the appliances a selector matches,
//! in waves, paused by itself past a failure threshold, started on each device only inside its
//! maintenance window. The console decides (`p6os_console::rollout`); devices see only the
//! desired version in their heartbeat's answer, as before.
//!
//! Endpoints (admin token): `POST /api/v1/rollouts` [`RolloutRequest`] -> 201 [`Rollout`];
//! `GET /api/v1/rollouts` -> [`RolloutPage`]; `GET /api/v1/rollouts/{id}` -> [`Rollout`];
//! `GET /api/v1/rollouts/{id}/devices` -> [`RolloutDevicePage`];
//! `POST /api/v1/rollouts/{id}/{pause,resume,abort}` -> [`Rollout`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Create a rollout of `version` to every registered appliance whose labels include
/// `selector` (empty: every registered appliance). The members are fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    pub version: String,
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Cumulative sizes: wave k takes the members up to its size in all (by id). The last wave
    /// must be `{"percent": 100}`. Default: one canary, then 10%, then the rest.
    #[serde(default = "default_waves")]
    pub waves: Vec<Wave>,
    /// The rollout pauses by itself when this many members failed (rolled back, or refused or
    /// failed to install) since it was created or last resumed. At least 1; default 1.
    #[serde(default = "default_threshold")]
    pub failure_threshold: u32,
    /// A member matched by one or more windows' selectors starts its upgrade only inside one
    /// of them; a member matched by none starts at any time.
    #[serde(default)]
    pub windows: Vec<MaintenanceWindow>,
    /// Let `version` be older than what members run (as `desire --allow-downgrade`).
    #[serde(default)]
    pub allow_downgrade: bool,
}

pub fn default_waves() -> Vec<Wave> {
    vec![Wave::Count(1), Wave::Percent(10), Wave::Percent(100)]
}

fn default_threshold() -> u32 {
    1
}

/// A wave's cumulative size: a number of members or a percentage of them (rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Wave {
    Count(u32),
    Percent(u32),
}

/// When the members whose labels include `selector` may start an upgrade: on `days` (empty:
/// every day) from `start` to `end` (`HH:MM`, 24 h, local time in `time_zone`, an IANA name
/// such as `Europe/Paris`). An `end` before `start` runs past midnight into the next day;
/// `end` may be `24:00`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub days: Vec<Weekday>,
    pub start: String,
    pub end: String,
    pub time_zone: String,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Waves start as the previous ones finish healthy.
    Running,
    /// No member starts an upgrade (those under way go on); `reason` says why.
    Paused,
    /// Every wave finished.
    Completed,
    /// Stopped by an operator for good: members that had not started are told no version.
    Aborted,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Completed => "completed",
            RolloutState::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Option<RolloutState> {
        [
            RolloutState::Running,
            RolloutState::Paused,
            RolloutState::Completed,
            RolloutState::Aborted,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    /// Running or paused: the rollout owns its members' versions.
    pub fn is_active(self) -> bool {
        matches!(self, RolloutState::Running | RolloutState::Paused)
    }
}

/// A member's state, derived from its heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Not started: its wave has not started, its window is closed, or it has not asked yet.
    Waiting,
    Downloading,
    /// Written, rebooting into it.
    Installing,
    /// Runs the version on trial (health checks not passed yet).
    Trial,
    /// Runs the version, blessed.
    Blessed,
    /// Failed its trial and went back; `reason` says why.
    RolledBack,
    /// Did not install it (refused, download or write failed); `reason` says why.
    Refused,
}

impl DeviceState {
    pub const ALL: [DeviceState; 7] = [
        DeviceState::Waiting,
        DeviceState::Downloading,
        DeviceState::Installing,
        DeviceState::Trial,
        DeviceState::Blessed,
        DeviceState::RolledBack,
        DeviceState::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Waiting => "waiting",
            DeviceState::Downloading => "downloading",
            DeviceState::Installing => "installing",
            DeviceState::Trial => "trial",
            DeviceState::Blessed => "blessed",
            DeviceState::RolledBack => "rolled_back",
            DeviceState::Refused => "refused",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceState> {
        DeviceState::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Done with this version, one way or the other.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeviceState::Blessed | DeviceState::RolledBack | DeviceState::Refused
        )
    }

    /// Counts against the failure threshold.
    pub fn is_failure(self) -> bool {
        matches!(self, DeviceState::RolledBack | DeviceState::Refused)
    }
}

/// How many members are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Totals {
    pub devices: u64,
    pub waiting: u64,
    pub downloading: u64,
    pub installing: u64,
    pub trial: u64,
    pub blessed: u64,
    pub rolled_back: u64,
    pub refused: u64,
}

impl Totals {
    pub fn add(&mut self, state: DeviceState, n: u64) {
        self.devices += n;
        *match state {
            DeviceState::Waiting => &mut self.waiting,
            DeviceState::Downloading => &mut self.downloading,
            DeviceState::Installing => &mut self.installing,
            DeviceState::Trial => &mut self.trial,
            DeviceState::Blessed => &mut self.blessed,
            DeviceState::RolledBack => &mut self.rolled_back,
            DeviceState::Refused => &mut self.refused,
        } += n;
    }

    pub fn failures(&self) -> u64 {
        self.rolled_back + self.refused
    }

    /// Members done with the version (blessed, rolled back or refused).
    pub fn finished(&self) -> u64 {
        self.blessed + self.rolled_back + self.refused
    }
}

/// A rollout as the operator sees it. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Rollout {
    pub id: u64,
    /// What was asked for.
    pub request: RolloutRequest,
    pub state: RolloutState,
    /// Why it is paused, completed or aborted.
    #[serde(default)]
    pub reason: Option<String>,
    /// The last wave started (0 is the first).
    pub wave: u32,
    pub totals: Totals,
    /// Per wave, in order.
    pub waves: Vec<Totals>,
    /// Failures counted against the threshold: those since creation or the last resume.
    pub counted_failures: u64,
    pub created_at: u64,
    pub updated_at: u64,
}

/// One member of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutDevice {
    pub id: String,
    pub wave: u32,
    pub state: DeviceState,
    #[serde(default)]
    pub reason: Option<String>,
    /// The console has handed it the version (its wave started inside its window).
    pub started: bool,
    pub updated_at: u64,
}

/// A page of rollouts, by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutPage {
    pub items: Vec<Rollout>,
    /// Set when more follow: pass it as `after` to get the next page.
    #[serde(default)]
    pub next: Option<String>,
}

/// A page of a rollout's members, by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutDevicePage {
    pub items: Vec<RolloutDevice>,
    /// Set when more follow: pass it as `after` to get the next page.
    #[serde(default)]
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_with_defaults_and_refuse_unknown_fields() {
        let r: RolloutRequest = serde_json::from_str(r#"{"version":"2.0"}"#).unwrap();
        assert_eq!(r.waves, default_waves());
        assert_eq!(r.failure_threshold, 1);
        let r: RolloutRequest = serde_json::from_str(
            r#"{"version":"2.0","waves":[{"count":2},{"percent":100}],
                "windows":[{"days":["sat","sun"],"start":"02:00","end":"05:00",
                            "time_zone":"Europe/Paris"}]}"#,
        )
        .unwrap();
        assert_eq!(r.waves, [Wave::Count(2), Wave::Percent(100)]);
        assert_eq!(r.windows[0].days, [Weekday::Sat, Weekday::Sun]);
        assert!(serde_json::from_str::<RolloutRequest>(r#"{"version":"2","wave":[]}"#).is_err());
    }

    #[test]
    fn states_round_trip_and_count() {
        for s in DeviceState::ALL {
            assert_eq!(DeviceState::parse(s.as_str()), Some(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        let mut t = Totals::default();
        for s in DeviceState::ALL {
            t.add(s, 1);
        }
        assert_eq!((t.devices, t.failures(), t.finished()), (7, 2, 3));
        for r in ["running", "paused", "completed", "aborted"] {
            assert_eq!(RolloutState::parse(r).unwrap().as_str(), r);
        }
    }
}
