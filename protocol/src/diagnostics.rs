//! Remote diagnostics: an operator asks for a device's diagnostics bundle, the console passes
//! the request on in the device's next [`crate::HeartbeatResponse`], the device collects a
//! bounded `.tar.zst` (a [`Manifest`] first, then one file per item) and uploads it with its
//! device token; the operator downloads it and checks the sha256 the console recorded. No port
//! is opened on the device: it is always the device that connects.
//!
//! Endpoints:
//! - `POST /api/v1/appliances/{id}/diagnostics` [`DiagnosticsCreate`] (admin) -> 201
//!   [`Diagnostics`] (a new request) or 200 (the one already outstanding: one at a time).
//! - `GET /api/v1/appliances/{id}/diagnostics?limit=&after=` (admin) -> [`DiagnosticsPage`],
//!   newest first.
//! - `GET /api/v1/diagnostics/{n}` (admin) -> [`Diagnostics`].
//! - `GET /api/v1/diagnostics/{n}/content` (admin) -> the bundle (a `.tar.zst`, as
//!   `application/octet-stream`).
//! - `PUT /api/v1/diagnostics/{n}/content` (the device token of the appliance asked, while
//!   the request is outstanding; at most its `max_bytes`, 413 above) -> 200 [`Diagnostics`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::API;

/// Largest bundle a console accepts (and the default size asked for).
pub const MAX_BYTES: u64 = 8 << 20;
/// Smallest size an operator may ask for: the manifest and the status fit.
pub const MIN_BYTES: u64 = 64 << 10;
/// A request not answered within this is expired (the device was off, or could not upload).
pub const TTL_SECS: u64 = 24 * 3600;
/// The name of the manifest, the first file of every bundle.
pub const MANIFEST_NAME: &str = "manifest.json";

/// Where a device uploads the bundle of request `n` (and where the operator downloads it).
pub fn content_path(n: u64) -> String {
    format!("{API}/diagnostics/{n}/content")
}

/// What the console asks of a device in a heartbeat answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DiagnosticsRequest {
    /// The request's number.
    pub id: u64,
    /// The bundle (compressed) must not be larger.
    pub max_bytes: u64,
    /// Where to `PUT` it (`application/octet-stream`, the device token).
    pub upload_path: String,
}

/// Ask a device for a diagnostics bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiagnosticsCreate {
    /// Largest bundle, bytes ([`MIN_BYTES`] to [`MAX_BYTES`]; default [`MAX_BYTES`]).
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosticsStatus {
    /// Waiting for the device's next heartbeat.
    Requested,
    /// Passed to the device; its bundle has not arrived yet.
    Delivered,
    /// The bundle is held by the console.
    Uploaded,
    /// Not answered within a day.
    Expired,
    /// The bundle was uploaded and later dropped to keep within the console's caps.
    Evicted,
    /// A status this client does not know (a newer console).
    #[serde(other)]
    Unknown,
}

impl DiagnosticsStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DiagnosticsStatus::Requested => "requested",
            DiagnosticsStatus::Delivered => "delivered",
            DiagnosticsStatus::Uploaded => "uploaded",
            DiagnosticsStatus::Expired => "expired",
            DiagnosticsStatus::Evicted => "evicted",
            DiagnosticsStatus::Unknown => "unknown",
        }
    }
}

/// A diagnostics request and, once uploaded, its bundle. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Diagnostics {
    pub id: u64,
    pub appliance_id: String,
    pub status: DiagnosticsStatus,
    pub max_bytes: u64,
    pub requested_at: u64,
    #[serde(default)]
    pub delivered_at: Option<u64>,
    #[serde(default)]
    pub uploaded_at: Option<u64>,
    /// Of the bundle as uploaded.
    #[serde(default)]
    pub size: Option<u64>,
    /// Of the bundle as uploaded, lower-case hex: the downloaded file must have it.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// A page of an appliance's diagnostics requests, newest first (`next` is an `id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DiagnosticsPage {
    pub items: Vec<Diagnostics>,
    /// Set when more follow: pass it as `after` to get the next page.
    #[serde(default)]
    pub next: Option<String>,
}

/// The first file of a bundle: what is in it, and what was left out on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Manifest {
    /// The request's number.
    pub request: u64,
    /// Unix seconds, by the device's clock.
    pub created_at: u64,
    pub agent_version: String,
    pub items: Vec<ManifestItem>,
    /// Files never included (keys, tokens, documents with secrets), and why.
    pub excluded: Vec<Excluded>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ManifestItem {
    /// The file's name in the bundle.
    pub name: String,
    /// Where it came from (a path, a command, a summary).
    pub source: String,
    /// Bytes in the bundle.
    pub size: u64,
    /// Cut at the item's bound or the bundle's.
    pub truncated: bool,
    /// Why the item is empty or partial (missing, unreadable, a link refused, a timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Excluded {
    pub path: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_statuses_and_fields_are_read() {
        let d: Diagnostics = serde_json::from_str(
            r#"{"id":3,"appliance_id":"a","status":"archived","max_bytes":1,"requested_at":2,
                "future":true}"#,
        )
        .unwrap();
        assert_eq!(d.status, DiagnosticsStatus::Unknown);
        assert_eq!(content_path(3), "/api/v1/diagnostics/3/content");
        let e = serde_json::from_str::<DiagnosticsCreate>(r#"{"max_byte":1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
