//! The JSON bodies the console accepts, from bytes to a checked value, as the handlers take
//! them: strict parsing (`extract::parse_json`), the device text made safe, and the field
//! checks. For the fuzz target (`fuzz/fuzz_targets/console_bodies.rs`) and anyone who wants to
//! know whether a body would pass.

use p6os_protocol::{
    check_version, DesiredRequest, Heartbeat, PairRequest, RegisterRequest, SelectorDesiredRequest,
};

use super::extract::parse_json;
use crate::core::{
    check_id_field, check_labels, check_name, check_version_field, clean_facts, clean_heartbeat,
    ListFilter,
};
use crate::error::ApiError;
use crate::page::{query_pairs, PageQuery};

/// Which body (or query) the bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pair,
    Heartbeat,
    Register,
    Desired,
    SelectorDesired,
    /// The query string of `GET /api/v1/appliances`.
    ListQuery,
    /// `POST /api/v1/rollouts`.
    Rollout,
    /// `PUT /api/v1/config`: the request and the unattended.yaml document in it.
    SiteConfig,
    /// `POST /api/v1/appliances/{id}/config/report` (a device's report).
    ConfigReport,
    /// `POST /api/v1/appliances/{id}/diagnostics`.
    Diagnostics,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Pair,
        Kind::Heartbeat,
        Kind::Register,
        Kind::Desired,
        Kind::SelectorDesired,
        Kind::ListQuery,
        Kind::Rollout,
        Kind::SiteConfig,
        Kind::ConfigReport,
        Kind::Diagnostics,
    ];
}

/// Parses and checks `bytes` as `kind`; the 4xx the console would answer otherwise.
pub fn check(kind: Kind, bytes: &[u8]) -> Result<(), ApiError> {
    match kind {
        Kind::Pair => {
            let mut req: PairRequest = parse_json(bytes)?;
            clean_facts(&mut req.facts);
            super::device::check_facts(&req.facts)
        }
        Kind::Heartbeat => {
            let mut beat: Heartbeat = parse_json(bytes)?;
            clean_heartbeat(&mut beat);
            check_version(&beat.version).map_err(|e| ApiError::field("version", e))?;
            match &beat.facts {
                Some(facts) => super::device::check_facts(facts),
                None => Ok(()),
            }
        }
        Kind::Register => {
            let req: RegisterRequest = parse_json(bytes)?;
            check_id_field(&req.id)?;
            check_name(&req.name, "name")?;
            check_labels(&req.labels, "labels")
        }
        Kind::Desired => {
            let req: DesiredRequest = parse_json(bytes)?;
            check_version_field(&req.version, "version")
        }
        Kind::SelectorDesired => {
            let req: SelectorDesiredRequest = parse_json(bytes)?;
            check_labels(&req.selector, "selector")?;
            check_version_field(&req.version, "version")
        }
        Kind::ListQuery => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| ApiError::bad_request("the query is not UTF-8"))?;
            let mut pairs = query_pairs(Some(text))?;
            PageQuery::take(&mut pairs)?;
            ListFilter::parse(&pairs).map(|_| ())
        }
        Kind::Rollout => {
            let req: p6os_protocol::rollout::RolloutRequest = parse_json(bytes)?;
            crate::rollout::check_request(&req)
        }
        Kind::SiteConfig => {
            use crate::siteconfig::{check, target, Refused};
            let req: p6os_protocol::siteconfig::SetConfigRequest = parse_json(bytes)?;
            let checked = target(&req)
                .map_err(Refused::from)
                .and_then(|t| check(&req.document, req.signature.as_deref(), &t));
            match checked {
                Ok(_) => Ok(()),
                Err(Refused::Field(e)) => Err(e),
                // Rendered as the handler does (every problem with its place).
                Err(Refused::Document(r)) => {
                    let _ = serde_json::to_string(&r);
                    Err(ApiError::bad_request(r.error))
                }
            }
        }
        Kind::ConfigReport => {
            let mut report: p6os_protocol::siteconfig::ConfigReport = parse_json(bytes)?;
            crate::siteconfig::clean_report(&mut report);
            Ok(())
        }
        Kind::Diagnostics => {
            let req: p6os_protocol::diagnostics::DiagnosticsCreate = parse_json(bytes)?;
            crate::diagnostics::max_bytes(req.max_bytes).map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_operation_bodies() {
        let doc = "console:\n  endpoint: https://c.example\n  token: t\n";
        let good = serde_json::json!({"id": "d-1", "document": doc}).to_string();
        assert!(check(Kind::SiteConfig, good.as_bytes()).is_ok());
        let bad = serde_json::json!({"id": "d-1", "document": "hostname: -x-\n"}).to_string();
        assert_eq!(
            check(Kind::SiteConfig, bad.as_bytes()).unwrap_err().status,
            400
        );
        let both = serde_json::json!({"id": "d-1", "selector": {"a": "b"}, "document": doc});
        assert!(check(Kind::SiteConfig, both.to_string().as_bytes()).is_err());
        let report = br#"{"config":1,"outcome":"refused","digest":"sha256:00","problems":["x"]}"#;
        assert!(check(Kind::ConfigReport, report).is_ok());
        assert!(check(
            Kind::ConfigReport,
            br#"{"config":1,"outcome":"maybe","digest":""}"#
        )
        .is_err());
        assert!(check(Kind::Diagnostics, br#"{}"#).is_ok());
        let e = check(Kind::Diagnostics, br#"{"max_bytes":1}"#).unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn good_and_bad_bodies() {
        assert!(check(Kind::Desired, br#"{"version":"2.0.0"}"#).is_ok());
        let e = check(Kind::Desired, br#"{"version":"2 0"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("version"));
        assert!(check(
            Kind::Heartbeat,
            br#"{"slot":"a","version":"1","health":"good"}"#
        )
        .is_ok());
        assert!(check(Kind::Register, br#"{"id":"../x"}"#).is_err());
        assert!(check(Kind::ListQuery, b"limit=501").is_err());
        assert!(check(Kind::ListQuery, b"status=ready&limit=5").is_ok());
        assert!(check(Kind::Rollout, br#"{"version":"2.0.0"}"#).is_ok());
        let e = check(
            Kind::Rollout,
            br#"{"version":"2.0.0","windows":[{"start":"2","end":"03:00","time_zone":"UTC"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("windows[0].start"));
        for kind in Kind::ALL {
            assert!(check(kind, b"\xff{").is_err(), "{kind:?}");
        }
    }
}
