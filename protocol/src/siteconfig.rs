//! Remote reconfiguration: the operator sets a site configuration (an `unattended.yaml`
//! document, optionally with its `p6os config sign` signature) for one appliance or a label
//! selector; the device learns of it in its heartbeat's answer ([`ConfigRef`]), fetches it with
//! its device token ([`ConfigDocument`]), applies it through the first-boot transaction and
//! reports ([`ConfigReport`]).
//!
//! Operator endpoints (admin token):
//! - `PUT /api/v1/config` [`SetConfigRequest`] -> 200 [`SetConfigResponse`]; a document with
//!   problems is a 400 [`ConfigRejected`] listing every problem with its line and column.
//! - `GET /api/v1/appliances/{id}/config` -> [`ConfigShow`] (secrets redacted).
//! - `GET /api/v1/appliances/{id}/config/history?limit=&after=` -> [`ConfigHistoryPage`],
//!   newest first.
//!
//! Device endpoints (device token, own id only):
//! - `GET /api/v1/appliances/{id}/config/{config}` -> [`ConfigDocument`] (only the document
//!   currently set for that appliance).
//! - `POST /api/v1/appliances/{id}/config/report` [`ConfigReport`] -> 204.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Largest document the console takes (it travels inside a JSON body of at most
/// [`crate::MAX_JSON_BODY`], escaped).
pub const MAX_SITE_CONFIG: usize = 128 << 10;
/// Largest signature file (`p6os config sign` writes about 150 bytes).
pub const MAX_CONFIG_SIGNATURE: usize = 4 << 10;
/// Most problems one report carries, and longest problem text (a device cannot fill the
/// console's database).
pub const MAX_REPORT_PROBLEMS: usize = 100;
pub const MAX_PROBLEM_LEN: usize = 1000;

/// `PUT /api/v1/config`: exactly one of `id` and `selector`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetConfigRequest {
    /// One appliance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Every appliance whose labels include these (non-empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// The `unattended.yaml` text, checked like `p6os validate unattended`.
    pub document: String,
    /// The `.sig` file made by `p6os config sign` for exactly these bytes (needed by devices
    /// whose image names configuration keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SetConfigResponse {
    /// The stored configuration's number (devices fetch it by this number).
    pub config: u64,
    /// `sha256:` of the document's bytes.
    pub digest: String,
    /// The signature's serial, if one was given.
    #[serde(default)]
    pub serial: Option<u64>,
    /// The appliances it was set for, by id.
    pub targets: Vec<String>,
}

/// One problem in an uploaded document (1-based line and column; 0 when not known).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConfigProblem {
    pub line: usize,
    pub column: usize,
    /// The field path, e.g. `users[0].passwd`; empty for the document itself.
    pub field: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// The 400 answer to a document with problems: an `ErrorBody` (`error`, `field`) plus every
/// problem. Nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConfigRejected {
    pub error: String,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub problems: Vec<ConfigProblem>,
}

/// In a heartbeat's answer: the configuration the operator set for this device and it has
/// not reported on yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConfigRef {
    pub config: u64,
    /// `sha256:` of the document's bytes.
    pub digest: String,
    /// The document's size in bytes.
    pub size: u64,
    /// Where to fetch it with the device token (`/api/v1/appliances/{id}/config/{config}`).
    pub path: String,
}

/// What a device fetches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConfigDocument {
    pub config: u64,
    pub document: String,
    #[serde(default)]
    pub signature: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConfigOutcome {
    /// Applied through the first-boot transaction.
    Applied,
    /// The device already runs this configuration: nothing written.
    Unchanged,
    /// Not applied (problems, or not trusted): nothing changed.
    Refused,
}

impl ConfigOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigOutcome::Applied => "applied",
            ConfigOutcome::Unchanged => "unchanged",
            ConfigOutcome::Refused => "refused",
        }
    }
}

/// `POST /api/v1/appliances/{id}/config/report`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConfigReport {
    pub config: u64,
    pub outcome: ConfigOutcome,
    /// `sha256:` of the document the device judged.
    pub digest: String,
    /// Why it was refused (one line each, with line:column where known).
    #[serde(default)]
    pub problems: Vec<String>,
}

/// One configuration set for an appliance, and what the appliance said of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConfigAssignment {
    /// Orders an appliance's history (the `after` key of its pages).
    pub seq: u64,
    pub config: u64,
    pub digest: String,
    #[serde(default)]
    pub serial: Option<u64>,
    /// Unix seconds.
    pub set_at: u64,
    /// None while the device has not reported.
    #[serde(default)]
    pub outcome: Option<ConfigOutcome>,
    #[serde(default)]
    pub reported_at: Option<u64>,
    #[serde(default)]
    pub problems: Vec<String>,
}

/// `GET /api/v1/appliances/{id}/config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConfigShow {
    pub appliance: String,
    pub current: ConfigAssignment,
    /// The document as JSON with every secret replaced by `(redacted)`.
    pub document: serde_json::Value,
}

/// A page of an appliance's configuration history, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConfigHistoryPage {
    pub items: Vec<ConfigAssignment>,
    #[serde(default)]
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_request_refuses_unknown_fields_and_reports_read_tolerantly() {
        let e =
            serde_json::from_str::<SetConfigRequest>(r#"{"document":"","idd":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("idd"), "{e}");
        let r: ConfigReport = serde_json::from_str(
            r#"{"config":3,"outcome":"refused","digest":"sha256:x","problems":["a"],"new":1}"#,
        )
        .unwrap();
        assert_eq!(r.outcome, ConfigOutcome::Refused);
        assert_eq!(r.problems, ["a"]);
    }
}
