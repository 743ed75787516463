//! One chosen document through the checks and the transaction: validated with the code of
//! `p6os validate unattended`, rendered against the slot, compared with the applied record,
//! applied by `txn`.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::applied::{self, Applied, Decision, APPLIED_PATH};
use super::source::Origin;
use super::trust::SourceKind;
use super::{invalid, log_outcome, origin_name, read_base, render, txn};

/// Validates, renders and applies the chosen document: the status for the health checks
/// (`applied`, `unchanged`, `invalid`, `failed`) and, when nothing was applied, why.
pub(super) fn apply(
    layout: &txn::Layout,
    machine_id: String,
    previous: Option<&Applied>,
    (origin, bytes, digest): (Origin, &[u8], &str),
    (serial, kind): (Option<u64>, SourceKind),
) -> (&'static str, Vec<String>) {
    let doc = match std::str::from_utf8(bytes) {
        Err(e) => {
            let problems = vec![format!("not UTF-8 text ({e})")];
            invalid(&origin, &problems);
            return ("invalid", problems);
        }
        Ok(text) => match p6os_config::unattended::load(Path::new(&origin_name(&origin)), text) {
            Ok(doc) => doc,
            Err(diags) => {
                let lines: Vec<String> = diags.0.iter().map(|d| d.to_string()).collect();
                invalid(&origin, &lines);
                return ("invalid", lines);
            }
        },
    };
    let base = read_base(layout, machine_id);
    let rendered = match render::render(&doc, &base) {
        Ok(r) => r,
        Err(errors) => {
            invalid(&origin, &errors);
            return ("invalid", errors);
        }
    };
    let stale = match applied::decide(previous, digest, &rendered) {
        Decision::Unchanged => {
            info!("config unchanged ({digest}): nothing applied");
            return ("unchanged", Vec::new());
        }
        Decision::Apply { stale } => stale,
    };
    for note in &rendered.notes {
        warn!("{note}");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut files = applied::managed_files(&rendered);
    files.push(APPLIED_PATH.to_string());
    let record = Applied {
        digest: digest.to_string(),
        rendered_digest: applied::rendered_digest(&rendered),
        source: origin.to_string(),
        applied_at: applied::rfc3339(now),
        files,
        notes: rendered.notes.clone(),
        serial,
        source_kind: Some(kind),
    };
    let mut targets = rendered.targets.clone();
    targets.push(render::Target {
        path: APPLIED_PATH.to_string(),
        content: render::Content::File(
            (serde_json::to_string_pretty(&record).unwrap_or_default() + "\n").into_bytes(),
        ),
        mode: 0o644,
        uid: 0,
        gid: 0,
    });
    match txn::apply(layout, &targets, &stale) {
        Ok(outcome) => {
            info!(
                "config applied ({digest}): {} files written, {} removed",
                record.files.len(),
                stale.len()
            );
            log_outcome(&outcome);
            // A step a user made fail in their own home is theirs; anything else is ours.
            if outcome.failed_outside_homes() {
                ("failed", Vec::new())
            } else {
                ("applied", Vec::new())
            }
        }
        Err(e) => {
            let why = crate::log::error_chain(&e);
            warn!("config not applied, the previous configuration stays: {why}");
            ("failed", vec![format!("not applied: {why}")])
        }
    }
}
