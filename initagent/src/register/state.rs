//! The registration state machine, pure: what the agent does next and how long it waits,
//! given what the console answered. The record is kept on the state partition
//! (`/var/lib/p6os/registration.json`, 0600: it holds the device token) so a reboot resumes
//! where it was: `unregistered` -> `pending` -> `ready`.

use std::time::Duration;

use p6os_bundle::compat::Downgrade;
use p6os_protocol::{BundleRef, Health, HeartbeatResponse, PairResponse};
use serde::{Deserialize, Serialize};

pub const REGISTRATION_PATH: &str = "/var/lib/p6os/registration.json";

/// Longest wait between attempts when the console cannot be reached.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Never paired (or the console forgot this device).
    Unregistered,
    /// The console knows the id but no operator registered it yet.
    Pending,
    /// Paired: heartbeats with the device token.
    Ready,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Unregistered => "unregistered",
            Phase::Pending => "pending",
            Phase::Ready => "ready",
        }
    }
}

/// What is kept across reboots. Read tolerantly (unknown fields ignored): after a rollback an
/// older agent reads what a newer one wrote, and losing the record would mean pairing again,
/// which the console refuses for a paired id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub phase: Phase,
    pub id: String,
    pub endpoint: String,
    #[serde(default)]
    pub device_token: Option<String>,
    #[serde(default)]
    pub heartbeat_secs: Option<u32>,
    /// The last problem talking to the console (cleared by a success).
    #[serde(default)]
    pub last_error: Option<String>,
    /// A bundle (sha256) the upgrade refused: not downloaded again until the console offers
    /// another one.
    #[serde(default)]
    pub refused_bundle: Option<String>,
    /// Whether the operator allowed a downgrade when `refused_bundle` was refused: a bundle
    /// refused as a downgrade is tried again once the operator allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_downgrade: Option<Downgrade>,
    /// A bundle whose installation failed (download, write), and how many times in a row.
    #[serde(default)]
    pub failed_bundle: Option<FailedBundle>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedBundle {
    pub sha256: String,
    pub attempts: u32,
}

/// Installations of one bundle tried before giving up on it (until the console offers another).
pub const MAX_INSTALL_ATTEMPTS: u32 = 5;
/// Wait after the first failed installation; doubles with each further one.
pub const INSTALL_BACKOFF_FIRST: Duration = Duration::from_secs(30);
pub const INSTALL_BACKOFF_MAX: Duration = Duration::from_secs(3600);

impl Registration {
    /// The saved record when it is for this id and console; a fresh one otherwise (a new
    /// unattended.yaml with another console or id starts over).
    pub fn resume(saved: Option<Registration>, id: &str, endpoint: &str) -> Registration {
        match saved {
            Some(r) if r.id == id && r.endpoint == endpoint => r,
            _ => Registration {
                phase: Phase::Unregistered,
                id: id.to_string(),
                endpoint: endpoint.to_string(),
                device_token: None,
                heartbeat_secs: None,
                last_error: None,
                refused_bundle: None,
                refused_downgrade: None,
                failed_bundle: None,
            },
        }
    }
}

/// How a request to the console ended, as far as the state machine cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    Ok(T),
    /// 401 or 403: our credentials are not (or no longer) accepted.
    Denied(String),
    /// Another 4xx (a paired id, an invalid label, a protocol mismatch): retrying soon will
    /// not help; an operator has to act. Retried rarely.
    Rejected(String),
    /// Unreachable, timed out, DNS failure, 5xx, 408, 429, or a garbled answer: try again later.
    Unavailable(String),
}

/// Consecutive setbacks, for the backoffs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attempts {
    /// Requests that found no console (reset by any answer).
    pub failures: u32,
    /// Heartbeats denied since the last accepted one (a token that keeps failing right after
    /// pairing must not turn into a pairing loop).
    pub denials: u32,
}

/// The wait after a rejection: an operator has to act first.
fn rejected_wait(random: u64) -> Duration {
    backoff(30, BACKOFF_FIRST, BACKOFF_MAX, random)
}

/// Exponential backoff with jitter: `first * 2^failures`, at most `max`, then a random
/// 50..100% of it (`random` is any u64), so a fleet that lost its console does not come back in
/// lockstep.
pub fn backoff(failures: u32, first: Duration, max: Duration, random: u64) -> Duration {
    let full = first.saturating_mul(1u32 << failures.min(20)).min(max);
    let millis = full.as_millis() as u64;
    let half = millis / 2;
    Duration::from_millis(half + random % (millis - half + 1))
}

/// A server-given interval with +-10% jitter (at least one second).
pub fn jittered_secs(secs: u32, random: u64) -> Duration {
    let millis = u64::from(secs.max(1)) * 1000;
    let spread = millis / 5;
    Duration::from_millis(millis - spread / 2 + random % (spread + 1))
}

/// The next state and the wait after a pairing attempt.
pub fn after_pair(
    reg: &Registration,
    answer: Answer<PairResponse>,
    attempts: &mut Attempts,
    random: u64,
) -> (Registration, Duration) {
    let mut next = reg.clone();
    match answer {
        Answer::Ok(PairResponse::Ready {
            device_token,
            heartbeat_secs,
        }) => {
            attempts.failures = 0;
            next.phase = Phase::Ready;
            next.device_token = Some(device_token);
            next.heartbeat_secs = Some(heartbeat_secs);
            next.last_error = None;
            // Heartbeat at once: the console learns the slot and version now.
            (next, Duration::ZERO)
        }
        Answer::Ok(PairResponse::Pending { retry_secs, .. }) => {
            attempts.failures = 0;
            next.phase = Phase::Pending;
            next.last_error = None;
            (next, jittered_secs(retry_secs, random))
        }
        Answer::Denied(why) | Answer::Rejected(why) => {
            // A wrong pairing token, an id paired already, an invalid label: none fixes
            // itself. Ask rarely, in case an operator fixes the console's side.
            attempts.failures = 0;
            next.phase = Phase::Unregistered;
            next.last_error = Some(why);
            (next, rejected_wait(random))
        }
        Answer::Ok(PairResponse::Challenge { .. }) => after_pair(
            reg,
            Answer::Unavailable("the console answered with another challenge".into()),
            attempts,
            random,
        ),
        Answer::Unavailable(why) => {
            next.last_error = Some(why);
            let wait = backoff(attempts.failures, BACKOFF_FIRST, BACKOFF_MAX, random);
            attempts.failures += 1;
            (next, wait)
        }
    }
}

/// What to do after a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterHeartbeat {
    /// Wait, then heartbeat (or pair again when the phase went back to unregistered).
    Wait(Duration),
    /// Install this bundle, then reboot; a lower version only when the operator allowed it.
    Upgrade(BundleRef, Downgrade),
}

/// The next state and action after a heartbeat. `running` is the booted image's version and
/// `health` its standing: no upgrade starts while the booted slot is still on trial.
pub fn after_heartbeat(
    reg: &Registration,
    answer: Answer<HeartbeatResponse>,
    running: &str,
    health: Health,
    attempts: &mut Attempts,
    random: u64,
) -> (Registration, AfterHeartbeat) {
    let mut next = reg.clone();
    let interval = reg.heartbeat_secs.unwrap_or(60);
    match answer {
        Answer::Ok(r) => {
            *attempts = Attempts::default();
            next.last_error = None;
            next.heartbeat_secs = Some(r.heartbeat_secs);
            let wait = AfterHeartbeat::Wait(jittered_secs(r.heartbeat_secs, random));
            let Some(bundle) = r.bundle else {
                return (next, wait);
            };
            let downgrade = if r.allow_downgrade {
                Downgrade::Allow
            } else {
                Downgrade::Refuse
            };
            let desired = r.desired_version.as_deref();
            if !wanted(reg, desired, &bundle, downgrade, running, health) {
                return (next, wait);
            }
            (next, AfterHeartbeat::Upgrade(bundle, downgrade))
        }
        Answer::Denied(why) => {
            // The token was refused: the console forgot us (deleted, its database replaced),
            // rotated the token, or a proxy on the way answered 401/403. Pair again: proving
            // the device key gets a new token from a console that still knows the key, so one
            // refusal never orphans the device. More slowly each time it happens without an
            // accepted heartbeat in between.
            let wait = backoff(attempts.denials, BACKOFF_FIRST, BACKOFF_MAX, random);
            attempts.denials += 1;
            next.phase = Phase::Unregistered;
            next.device_token = None;
            next.last_error = Some(why);
            (next, AfterHeartbeat::Wait(wait))
        }
        Answer::Rejected(why) => {
            next.last_error = Some(why);
            (next, AfterHeartbeat::Wait(rejected_wait(random)))
        }
        Answer::Unavailable(why) => {
            next.last_error = Some(why);
            let max = BACKOFF_MAX
                .min(Duration::from_secs(interval.into()))
                .max(BACKOFF_FIRST);
            let wait = backoff(attempts.failures, BACKOFF_FIRST, max, random);
            attempts.failures += 1;
            (next, AfterHeartbeat::Wait(wait))
        }
    }
}

/// Whether to install `bundle`: it is the desired version, served from the console's bundle
/// path (the device token goes nowhere else), not running already, the booted slot is
/// blessed, and this bundle was neither refused nor failed too often here.
fn wanted(
    reg: &Registration,
    desired: Option<&str>,
    bundle: &BundleRef,
    downgrade: Downgrade,
    running: &str,
    health: Health,
) -> bool {
    let from_console = p6os_protocol::check_sha256(&bundle.sha256).is_ok()
        && bundle.path == p6os_protocol::bundle_content_path(&bundle.sha256);
    let given_up = reg
        .failed_bundle
        .as_ref()
        .is_some_and(|f| f.sha256 == bundle.sha256 && f.attempts >= MAX_INSTALL_ATTEMPTS);
    desired == Some(bundle.version.as_str())
        && from_console
        && bundle.version != running
        && health == Health::Good
        && !refused(reg, bundle, downgrade)
        && !given_up
}

/// Whether `bundle` was refused here before, under the same or a wider permission: a refusal
/// without the downgrade flag does not stand once the operator sets it.
fn refused(reg: &Registration, bundle: &BundleRef, downgrade: Downgrade) -> bool {
    reg.refused_bundle.as_deref() == Some(bundle.sha256.as_str())
        && !(downgrade == Downgrade::Allow && reg.refused_downgrade == Some(Downgrade::Refuse))
}

/// Why an installation did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setback {
    /// The bundle was refused (signature, compatibility, a version that rolled back here):
    /// never again.
    Refused,
    /// Downloading or writing failed, or the machine could not upgrade just then: again
    /// later, with a growing wait, at most [`MAX_INSTALL_ATTEMPTS`] times.
    Failed,
}

/// The record and the wait after an installation of `bundle` did not happen.
pub fn after_setback(
    reg: &Registration,
    bundle: &BundleRef,
    downgrade: Downgrade,
    setback: Setback,
    random: u64,
) -> (Registration, Duration) {
    let mut next = reg.clone();
    match setback {
        Setback::Refused => {
            next.refused_bundle = Some(bundle.sha256.clone());
            next.refused_downgrade = Some(downgrade);
            (
                next,
                jittered_secs(reg.heartbeat_secs.unwrap_or(60), random),
            )
        }
        Setback::Failed => {
            let attempts = match &reg.failed_bundle {
                Some(f) if f.sha256 == bundle.sha256 => f.attempts + 1,
                _ => 1,
            };
            next.failed_bundle = Some(FailedBundle {
                sha256: bundle.sha256.clone(),
                attempts,
            });
            let wait = backoff(
                attempts - 1,
                INSTALL_BACKOFF_FIRST,
                INSTALL_BACKOFF_MAX,
                random,
            );
            (next, wait)
        }
    }
}

#[cfg(test)]
mod tests;
