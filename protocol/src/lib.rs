//! The console protocol (v1): the JSON bodies that `p6os-agent` and `p6os-console` exchange,
//! and the checks both sides apply to ids and labels. Serde types only: no I/O, no HTTP.
//!
//! Device endpoints (bearer: the pairing token in the body for `pair`, then the device token):
//! - `POST /api/v1/appliances/{id}/pair` [`PairRequest`] with the device's key ->
//!   200 [`PairResponse::Challenge`]; the same request with the signed challenge ([`KeyProof`])
//!   -> 200 [`PairResponse::Ready`] (the id is bound to this key) or 202
//!   [`PairResponse::Pending`] (not registered, or this key is not approved yet; retry later).
//!   See [`identity`].
//! - `POST /api/v1/appliances/{id}/heartbeat` [`Heartbeat`] -> 200 [`HeartbeatResponse`].
//! - `GET /api/v1/bundles/{sha256}/content` -> the bundle, with `Range` support.
//!
//! Operator endpoints (bearer: the admin token) are listed in the console's `/openapi.json`.
//!
//! Compatibility: operator requests refuse unknown fields (`deny_unknown_fields`: a typo is an
//! error, not a silently ignored setting). What devices send and what the console answers is
//! read tolerantly, so an agent and a console of different releases keep talking: new fields
//! are optional and ignored by older readers; an incompatible change gets a new path
//! (`/api/v2`).

pub mod diagnostics;
pub mod identity;
pub mod rollout;
pub mod siteconfig;
pub mod users;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Prefix of every API path.
pub const API: &str = "/api/v1";
/// Largest JSON request body the console accepts (413 above).
pub const MAX_JSON_BODY: usize = 256 << 10;
/// Longest appliance id.
pub const MAX_ID_LEN: usize = 64;

/// The appliance id rule: 1 to 64 characters from `A-Z a-z 0-9 . _ -`, starting with a letter
/// or digit (machine ids, host names and serial numbers fit; nothing needs escaping in a URL).
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the id is empty".into());
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!("the id is longer than {MAX_ID_LEN} characters"));
    }
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("the id must start with a letter or a digit".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
    {
        return Err(format!(
            "the id contains {c:?}: only letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// Label keys and values: 1 to 63 characters from `A-Z a-z 0-9 . _ - /`, starting and ending
/// with a letter or digit (Kubernetes-like, so labels can be copied to nodes).
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    for (what, s) in [("key", key), ("value", value)] {
        if s.is_empty() || s.len() > 63 {
            return Err(format!("label {what} {s:?} must be 1 to 63 characters"));
        }
        let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if !edge_ok(s.chars().next()) || !edge_ok(s.chars().last()) {
            return Err(format!(
                "label {what} {s:?} must start and end with a letter or a digit"
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._-/".contains(*c)))
        {
            return Err(format!("label {what} {s:?} contains {c:?}"));
        }
    }
    Ok(())
}

/// Versions as images, bundles and heartbeats carry them: the on-disk contract's one rule
/// ([`p6os_layout::version::check`]).
pub fn check_version(version: &str) -> Result<(), String> {
    p6os_layout::version::check(version).map_err(|e| e.to_string())
}

/// A sha256 as the console names bundles: 64 lower-case hex digits.
pub fn check_sha256(s: &str) -> Result<(), String> {
    if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err("expected 64 lower-case hex digits".into())
    }
}

/// Where the console serves the bundle with this sha256.
pub fn bundle_content_path(sha256: &str) -> String {
    format!("{API}/bundles/{sha256}/content")
}

/// `seconds` since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn rfc3339(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rem = seconds % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

// ----- device side -----

/// What a device says about itself when it pairs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PairRequest {
    /// The fleet's pairing token (unattended.yaml `console.token`).
    pub pairing_token: String,
    pub facts: Facts,
    /// The device's identity key ([`identity::DeviceKey`], base64). Required by consoles of
    /// this release: an id is bound to one key.
    #[serde(default)]
    pub device_key: Option<String>,
    /// The console's challenge, signed with that key; absent in the first request.
    #[serde(default)]
    pub proof: Option<KeyProof>,
}

/// Proof that the device holds its key: the challenge the console answered with, and the
/// signature of [`identity::pair_message`] over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KeyProof {
    pub challenge: String,
    pub signature: String,
}

/// Device facts, gathered by the agent from /proc, /sys and the slot's manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Facts {
    pub hostname: String,
    /// From unattended.yaml `appliance.name`.
    #[serde(default)]
    pub name: Option<String>,
    /// From unattended.yaml `appliance.labels`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub cpu_model: String,
    pub cpu_count: u32,
    pub memory_bytes: u64,
    #[serde(default)]
    pub disks: Vec<Disk>,
    #[serde(default)]
    pub nics: Vec<Nic>,
    /// `x86_64`, `aarch64`.
    pub arch: String,
    /// The base OS (`PRETTY_NAME` of os-release, or the image name).
    pub base_os: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// The image's name and version (the slot manifest).
    pub image_name: String,
    pub image_version: String,
    pub agent_version: String,
    /// Booted slot: `a` or `b`.
    pub slot: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Disk {
    /// Kernel name: `vda`, `nvme0n1`, `sda`.
    pub name: String,
    pub size_bytes: u64,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub removable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Nic {
    pub name: String,
    #[serde(default)]
    pub mac: Option<String>,
    /// Addresses with prefix length: `10.0.2.15/24`, `fe80::1/64`.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// The console's answer to a pairing request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PairResponse {
    /// Sign this (see [`identity::pair_message`]) and ask again within a few minutes.
    Challenge { challenge: String },
    /// Paired: the token authenticates this device's later requests (kept 0600, never logged).
    Ready {
        device_token: String,
        heartbeat_secs: u32,
    },
    /// Not paired: the id is not registered yet, or this device's key waits for an operator's
    /// approval. Ask again later.
    Pending { retry_secs: u32, message: String },
}

/// What the device reports at every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Heartbeat {
    /// Booted slot: `a` or `b`.
    pub slot: String,
    /// Version of the booted image.
    pub version: String,
    pub health: Health,
    /// The last upgrade's outcome, as the device recorded it.
    #[serde(default)]
    pub last_upgrade: Option<UpgradeOutcome>,
    /// An upgrade under way.
    #[serde(default)]
    pub progress: Option<Progress>,
    /// Fresh facts: sent with the first heartbeat after each boot (addresses, disks and the
    /// image version change), replacing the ones from pairing.
    #[serde(default)]
    pub facts: Option<Facts>,
}

/// The booted slot's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Blessed: passed its health checks (or was the factory slot).
    Good,
    /// On trial: health checks not passed yet.
    Assessing,
    /// The device could not tell (or a newer agent sent a standing this console does not know).
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UpgradeOutcome {
    pub version: String,
    pub outcome: OutcomeKind,
    #[serde(default)]
    pub slot: Option<String>,
    /// Why it rolled back or failed.
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// Written, on trial.
    Installed,
    /// Passed its health checks.
    Blessed,
    /// Left again: failed its trial (automatic fallback) or rolled back on request.
    RolledBack,
    /// Never got to boot (refused, download or write failed).
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Progress {
    pub version: String,
    pub phase: Phase,
    pub done_bytes: u64,
    pub total_bytes: u64,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Downloading,
    Rebooting,
    Failed,
}

/// The console's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeartbeatResponse {
    /// The version the operator wants on this device (none: stay).
    #[serde(default)]
    pub desired_version: Option<String>,
    /// The bundle for that version, when the console holds one for this device's image.
    #[serde(default)]
    pub bundle: Option<BundleRef>,
    pub heartbeat_secs: u32,
    /// The operator allowed the desired version to be older than the running one
    /// (`--allow-downgrade`); without it the device refuses a downgrade. Never below the
    /// device's security floor.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_downgrade: bool,
    /// A site configuration the operator set for this device and it has not reported on
    /// (`siteconfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<siteconfig::ConfigRef>,
    /// The operator asked for a diagnostics bundle ([`diagnostics`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<diagnostics::DiagnosticsRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BundleRef {
    pub version: String,
    /// Path on the console (`/api/v1/bundles/<sha256>/content`), fetched with the device token.
    pub path: String,
    /// Of the whole `.p6b` file, lower-case hex (no `sha256:` prefix: it goes into paths).
    pub sha256: String,
    pub size: u64,
}

// ----- operator side -----

/// Register an appliance id (it becomes `unpaired`, or stays what it is if paired).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The device key's fingerprint, read off the device (`p6os-agent status`): only that
    /// key pairs as this id, with no further approval.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// Which key may pair when no fingerprint is given (default: an operator approves it).
    #[serde(default)]
    pub pairing: PairingPolicy,
}

/// Who decides which device key an id is bound to, when no fingerprint was registered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PairingPolicy {
    /// A key that asks waits until an operator approves its fingerprint.
    #[default]
    Approve,
    /// The first key that asks is bound (for labs and CI: whoever holds the fleet's pairing
    /// token and knows the id gets there first).
    FirstKey,
}

impl PairingPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PairingPolicy::Approve => "approve",
            PairingPolicy::FirstKey => "first-key",
        }
    }

    pub fn parse(s: &str) -> Option<PairingPolicy> {
        match s {
            "approve" => Some(PairingPolicy::Approve),
            "first-key" => Some(PairingPolicy::FirstKey),
            _ => None,
        }
    }
}

/// Bind an appliance id to the device key with this fingerprint (a pending or an unpaired id,
/// or a paired one whose device was replaced: its old key and token stop working).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    pub fingerprint: String,
}

/// The image a device may fetch bundles of: recorded at pairing; changed only by an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageRequest {
    pub image_name: String,
    pub arch: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A device asked to pair with an id no operator registered.
    Pending,
    /// Registered by an operator; the device has not paired yet.
    Unpaired,
    /// Paired: the device reports in.
    Ready,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Unpaired => "unpaired",
            Status::Ready => "ready",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "pending" => Some(Status::Pending),
            "unpaired" => Some(Status::Unpaired),
            "ready" => Some(Status::Ready),
            _ => None,
        }
    }
}

/// An appliance as the operator sees it. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Appliance {
    pub id: String,
    pub status: Status,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub facts: Option<Facts>,
    #[serde(default)]
    pub desired_version: Option<String>,
    /// The last heartbeat.
    #[serde(default)]
    pub reported: Option<Heartbeat>,
    /// The fingerprint of the key this id is bound to.
    #[serde(default)]
    pub key_fingerprint: Option<String>,
    /// A key that asked to pair as this id and waits for an operator's approval.
    #[serde(default)]
    pub requested_fingerprint: Option<String>,
    #[serde(default)]
    pub pairing: PairingPolicy,
    /// The image whose bundles this device gets (recorded at pairing).
    #[serde(default)]
    pub image: Option<ImageRequest>,
    pub created_at: u64,
    #[serde(default)]
    pub paired_at: Option<u64>,
    #[serde(default)]
    pub last_seen: Option<u64>,
}

/// Set (or with `null`, clear) one appliance's desired version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DesiredRequest {
    pub version: Option<String>,
    /// Allow `version` to be older than what the devices run (recorded in the event log).
    #[serde(default)]
    pub allow_downgrade: bool,
}

/// Set the desired version of every appliance whose labels include all of `selector`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectorDesiredRequest {
    pub selector: BTreeMap<String, String>,
    pub version: Option<String>,
    /// Allow `version` to be older than what the devices run (recorded in the event log).
    #[serde(default)]
    pub allow_downgrade: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DesiredResponse {
    /// The ids whose desired version was set, sorted.
    pub matched: Vec<String>,
}

/// A bundle held by the console (signature verified on upload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Bundle {
    pub sha256: String,
    pub name: String,
    pub version: String,
    pub arch: String,
    pub size: u64,
    pub key_id: String,
    pub uploaded_at: u64,
}

/// Something that happened to an appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    pub seq: i64,
    pub at: u64,
    pub kind: String,
    pub message: String,
}

/// Operator lists come in pages: `?limit=` items (default `DEFAULT_PAGE_LIMIT`, at most
/// `MAX_PAGE_LIMIT`; more is a 400) after the key `?after=` (the previous page's `next`).
pub const DEFAULT_PAGE_LIMIT: usize = 100;
pub const MAX_PAGE_LIMIT: usize = 500;

macro_rules! page {
    ($name:ident, $item:ty, $what:literal) => {
        #[doc = concat!("A page of ", $what, ".")]
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Set when more follow: pass it as `after` to get the next page.
            #[serde(default)]
            pub next: Option<String>,
        }
    };
}

page!(AppliancePage, Appliance, "appliances, by id");
page!(
    EventPage,
    Event,
    "an appliance's events, oldest first (`next` is a `seq`)"
);
page!(
    BundlePage,
    Bundle,
    "bundles, by name, arch, upload time and version (`next` is a sha256)"
);

/// Every error response: what went wrong and, for a bad body, the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default)]
    pub field: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for good in ["a", "0123456789abcdef0123456789abcdef", "store-12.nuc_1"] {
            assert_eq!(check_id(good), Ok(()), "{good}");
        }
        for bad in ["", "-a", ".a", "a/b", "a b", "é", &"x".repeat(65), "a%2f"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels() {
        assert_eq!(check_label("site", "store-12"), Ok(()));
        assert_eq!(check_label("example.com/tier", "a"), Ok(()));
        assert!(check_label("", "a").is_err());
        assert!(check_label("a", "").is_err());
        assert!(check_label("a-", "b").is_err());
        assert!(check_label("a", "b c").is_err());
        assert!(check_label(&"k".repeat(64), "v").is_err());
    }

    #[test]
    fn bundle_paths() {
        let sha = "ab".repeat(32);
        assert_eq!(check_sha256(&sha), Ok(()));
        assert_eq!(
            bundle_content_path(&sha),
            format!("/api/v1/bundles/{sha}/content")
        );
        for bad in [
            "",
            "AB",
            &"AB".repeat(32),
            &"ab".repeat(33),
            &"x".repeat(64),
        ] {
            assert!(check_sha256(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_307_045), "2026-11-22T00:24:05Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn versions() {
        assert_eq!(check_version("2.0.0-rc1"), Ok(()));
        assert!(check_version("").is_err());
        assert!(check_version("1 0").is_err());
    }

    #[test]
    fn pair_response_is_tagged_by_status() {
        let ready = PairResponse::Ready {
            device_token: "t".into(),
            heartbeat_secs: 60,
        };
        let text = serde_json::to_string(&ready).unwrap();
        assert_eq!(
            text,
            r#"{"status":"ready","device_token":"t","heartbeat_secs":60}"#
        );
        assert_eq!(serde_json::from_str::<PairResponse>(&text).unwrap(), ready);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e =
            serde_json::from_str::<DesiredRequest>(r#"{"version":"1","verison":"2"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `verison`"), "{e}");
    }
}

#[cfg(test)]
mod compatibility {
    use super::*;

    #[test]
    fn device_messages_from_newer_releases_are_read() {
        let beat: Heartbeat =
            serde_json::from_str(r#"{"slot":"a","version":"1","health":"degraded","future":1}"#)
                .unwrap();
        assert_eq!(beat.health, Health::Unknown);
        let answer: HeartbeatResponse =
            serde_json::from_str(r#"{"heartbeat_secs":5,"maintenance_window":"02:00"}"#).unwrap();
        assert_eq!(answer.heartbeat_secs, 5);
        let pair: PairResponse = serde_json::from_str(
            r#"{"status":"ready","device_token":"t","heartbeat_secs":5,"extra":true}"#,
        )
        .unwrap();
        assert!(matches!(pair, PairResponse::Ready { .. }));
    }
}
