//! Remote reconfiguration, the pure part: checking an uploaded document with the agent's own
//! validator (`p6os_config::unattended::load`, what `p6os validate unattended` runs), its
//! signature's form, the target, and cleaning a device's report.

use std::collections::BTreeMap;
use std::path::Path;

use p6os_bundle::configsig::ConfigSignature;
use p6os_protocol::siteconfig::{
    ConfigProblem, ConfigRejected, ConfigReport, SetConfigRequest, MAX_CONFIG_SIGNATURE,
    MAX_PROBLEM_LEN, MAX_REPORT_PROBLEMS, MAX_SITE_CONFIG,
};
use sha2::{Digest, Sha256};

use crate::core::{check_id_field, check_labels};
use crate::error::ApiError;

/// The name documents carry in problems (`unattended.yaml:3:7: ...`).
pub const DOCUMENT_NAME: &str = "unattended.yaml";

/// A document that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// `sha256:` of the bytes.
    pub digest: String,
    pub serial: Option<u64>,
    /// The document as JSON, secrets replaced (`p6os_config::unattended::redacted`).
    pub redacted: serde_json::Value,
}

/// Why an upload is refused: a field, or the document's problems.
#[derive(Debug)]
pub enum Refused {
    Field(ApiError),
    Document(ConfigRejected),
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Refused {
        Refused::Field(e)
    }
}

/// Whom a request targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Id(String),
    Selector(BTreeMap<String, String>),
}

/// The request's target: exactly one of `id` and a non-empty `selector`.
pub fn target(req: &SetConfigRequest) -> Result<Target, ApiError> {
    match (&req.id, req.selector.is_empty()) {
        (Some(id), true) => {
            check_id_field(id)?;
            Ok(Target::Id(id.clone()))
        }
        (None, false) => {
            check_labels(&req.selector, "selector")?;
            Ok(Target::Selector(req.selector.clone()))
        }
        (Some(_), false) => Err(ApiError::field(
            "selector",
            "give either id or selector, not both",
        )),
        (None, true) => Err(ApiError::field(
            "id",
            "no target: give id (one appliance) or a non-empty selector (labels)",
        )),
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Checks the document as the agent will (every problem with its line and column) and the
/// signature's form (the device checks it against its image's keys).
pub fn check(document: &str, signature: Option<&str>, target: &Target) -> Result<Checked, Refused> {
    if document.len() > MAX_SITE_CONFIG {
        return Err(ApiError::field(
            "document",
            format!(
                "the document is {} bytes, more than {} KiB",
                document.len(),
                MAX_SITE_CONFIG / 1024
            ),
        )
        .into());
    }
    let serial = match signature {
        None => None,
        Some(s) if s.len() > MAX_CONFIG_SIGNATURE => {
            return Err(ApiError::field("signature", "larger than 4 KiB").into())
        }
        Some(s) => Some(
            ConfigSignature::parse(s.as_bytes())
                .map_err(|e| {
                    ApiError::field(
                        "signature",
                        format!("{e} (give the .sig file `p6os config sign` wrote)"),
                    )
                })?
                .serial,
        ),
    };
    let doc =
        p6os_config::unattended::load(Path::new(DOCUMENT_NAME), document).map_err(|diags| {
            let problems: Vec<ConfigProblem> = diags
                .iter()
                .map(|d| ConfigProblem {
                    line: d.line,
                    column: d.column,
                    field: d.field.clone(),
                    message: d.message.clone(),
                    hint: d.hint.clone(),
                })
                .collect();
            Refused::Document(ConfigRejected {
                error: format!(
                    "the document has {} problem{}; nothing was stored",
                    problems.len(),
                    if problems.len() == 1 { "" } else { "s" }
                ),
                field: Some("document".into()),
                problems,
            })
        })?;
    keeps_in_touch(&doc, target)?;
    let redacted =
        serde_json::to_value(doc.redacted()).map_err(|e| Refused::Field(ApiError::internal(e)))?;
    Ok(Checked {
        digest: sha256(document.as_bytes()),
        serial,
        redacted,
    })
}

/// A document that would cut the device off from this console is refused early (the device
/// refuses it too): it must keep a `console` section (the document owns the device's console
/// settings), and an `appliance.id` it names must be the appliance's it is set for.
fn keeps_in_touch(
    doc: &p6os_config::unattended::Unattended,
    target: &Target,
) -> Result<(), ApiError> {
    if doc.console.is_none() {
        return Err(ApiError::field(
            "document",
            "the document has no console section: applied, it would remove the device's console \
             settings and it would stop reporting (keep the console's endpoint and token)",
        ));
    }
    let named = doc.appliance.as_ref().and_then(|a| a.id.as_deref());
    match (named, target) {
        (Some(named), Target::Id(id)) if named != id => Err(ApiError::field(
            "document",
            format!(
                "appliance.id is {named:?} but the document is set for {id:?}: the device would \
                 register as another appliance (set appliance.id: {id}, or leave it out when \
                 the appliance's id is its machine id)"
            ),
        )),
        _ => Ok(()),
    }
}

/// A device's report, bounded: at most `MAX_REPORT_PROBLEMS` problems of `MAX_PROBLEM_LEN`
/// characters, control characters replaced.
pub fn clean_report(report: &mut ConfigReport) {
    report.problems.truncate(MAX_REPORT_PROBLEMS);
    for p in &mut report.problems {
        let mut clean: String = p
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX_PROBLEM_LEN)
            .collect();
        clean.truncate(clean.trim_end().len());
        *p = clean;
    }
    report.digest = report.digest.chars().take(100).collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use p6os_protocol::siteconfig::ConfigOutcome;

    #[test]
    fn every_problem_comes_with_its_line_and_column() {
        let text = "hostname: -bad-\nusers:\n  - name: ops\n    sudo: maybe\ntimezon: UTC\n";
        let Err(Refused::Document(r)) = check(text, None, &Target::Id("a".into())) else {
            panic!("accepted")
        };
        assert!(r.problems.len() >= 2, "{r:?}");
        assert!(
            r.problems.iter().all(|p| p.line > 0 && p.column > 0),
            "{r:?}"
        );
        assert!(r.problems.iter().any(|p| p.line == 5), "{r:?}");
        assert_eq!(r.field.as_deref(), Some("document"));
    }

    #[test]
    fn a_good_document_is_digested_and_redacted() {
        let text = "hostname: store-1\nconsole: {endpoint: https://c.example, token: pair-xyz}\n";
        let c = check(text, None, &Target::Id("a".into())).unwrap();
        assert_eq!(c.digest, sha256(text.as_bytes()));
        assert!(!c.redacted.to_string().contains("pair-xyz"));
        assert_eq!(c.redacted["hostname"], "store-1");
    }

    #[test]
    fn a_malformed_signature_names_its_field() {
        let t = Target::Id("a".into());
        let Err(Refused::Field(e)) = check("hostname: a\n", Some("not a signature"), &t) else {
            panic!()
        };
        assert_eq!(e.field.as_deref(), Some("signature"));
    }

    #[test]
    fn a_document_that_would_cut_the_device_off_is_refused() {
        let id = Target::Id("store-1".into());
        let console = "console: {endpoint: https://c.example, token: t}\n";
        let refused = |doc: &str, t: &Target| match check(doc, None, t) {
            Err(Refused::Field(e)) => e.error,
            other => panic!("{other:?}"),
        };
        assert!(refused("hostname: a\n", &id).contains("no console section"));
        let other = format!("appliance: {{id: store-2}}\n{console}");
        assert!(refused(&other, &id).contains("store-2"));
        let same = format!("appliance: {{id: store-1}}\n{console}");
        assert!(check(&same, None, &id).is_ok());
        // Left out (the machine id) or for a selector: the devices judge it.
        assert!(check(console, None, &id).is_ok());
        let north = Target::Selector([("site".to_string(), "n".to_string())].into());
        assert!(check(&other, None, &north).is_ok());
    }

    #[test]
    fn target_is_one_of_id_and_selector() {
        let mut req = SetConfigRequest::default();
        assert_eq!(target(&req).unwrap_err().field.as_deref(), Some("id"));
        req.id = Some("a".into());
        assert_eq!(target(&req).unwrap(), Target::Id("a".into()));
        req.selector.insert("site".into(), "x".into());
        assert!(target(&req).is_err());
        req.id = None;
        assert!(matches!(target(&req).unwrap(), Target::Selector(_)));
        req.id = Some("bad id!".into());
        req.selector.clear();
        assert!(target(&req).is_err());
    }

    #[test]
    fn reports_are_bounded() {
        let mut r = ConfigReport {
            config: 1,
            outcome: ConfigOutcome::Refused,
            digest: "x".repeat(500),
            problems: vec!["a\nb".repeat(1000); 500],
        };
        clean_report(&mut r);
        assert_eq!(r.problems.len(), MAX_REPORT_PROBLEMS);
        assert!(r.problems[0].chars().count() <= MAX_PROBLEM_LEN);
        assert!(!r.problems[0].contains('\n'));
        assert_eq!(r.digest.len(), 100);
    }
}
