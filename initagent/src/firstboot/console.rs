//! A site configuration delivered by the console (remote reconfiguration). The agent's
//! registration loop fetches it, checks it and stages it on the state partition
//! ([`STAGED_PATH`], one JSON file written atomically, 0600), then reboots; at boot the
//! first-boot step takes it before any other source, judges it ([`super::trust::judge_console`]),
//! applies it with the same transaction as every document, removes it and leaves the outcome
//! in [`RESULT_PATH`] for the loop to report. Both files are read and written here only
//! before the overlays are mounted (in their upper directory), and through the mounted /var
//! by the loop.

use std::fs;
use std::io::Read;
use std::path::Path;

use p6os_protocol::siteconfig::{ConfigOutcome, ConfigReport};
use serde::{Deserialize, Serialize};

use super::applied::Applied;
use p6os_bundle::configsig;
use p6os_bundle::keys::PublicKey;

use super::trust::{ConsoleTrust, Provisioning, Signature, SourceKind};
use super::txn::{self, Layout};

/// The staged document (a [`Staged`]).
pub const STAGED_PATH: &str = "/var/lib/p6os/console-config.json";
/// The outcome of the last staged document (a [`ConfigReport`]).
pub const RESULT_PATH: &str = "/var/lib/p6os/console-config.result.json";
/// Largest staged record read (the console's documents are at most 128 KiB, escaped).
pub const MAX_STAGED: u64 = 1 << 20;

/// What the loop stages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    pub config: u64,
    pub document: String,
    #[serde(default)]
    pub signature: Option<String>,
    /// The boot it was staged in (`/proc/sys/kernel/random/boot_id`): still there after
    /// another boot means the boot did not take it, and it is not tried again.
    pub boot_id: String,
}

/// The record of what was applied before, and what it means for trust. A record that does
/// not read still means "provisioned": trust nothing new unsigned, and never let the image's
/// default replace what it may have recorded.
pub fn provisioning(bytes: Option<&[u8]>) -> (Provisioning, Option<Applied>) {
    let previous: Option<Applied> = bytes.and_then(|b| serde_json::from_slice(b).ok());
    let p = match (bytes, &previous) {
        (None, _) => Provisioning::Unprovisioned,
        (Some(_), Some(p)) => Provisioning::Provisioned {
            digest: p.digest.clone(),
            serial: p.serial,
            from: p.source_kind(),
        },
        (Some(_), None) => Provisioning::Provisioned {
            digest: String::new(),
            serial: None,
            from: SourceKind::Writable,
        },
    };
    (p, previous)
}

/// What a console's document needs on this image.
pub fn console_trust(keys: &[PublicKey]) -> ConsoleTrust {
    if keys.is_empty() {
        ConsoleTrust::Trusted
    } else {
        ConsoleTrust::SignedOnly
    }
}

/// A detached signature checked against `keys`.
pub fn signature_of(document: &[u8], signature: Option<&[u8]>, keys: &[PublicKey]) -> Signature {
    match signature {
        None => Signature::Absent,
        Some(sig) => match configsig::verify(document, sig, keys) {
            Ok(s) => Signature::Valid {
                key_id: s.key_id.to_string(),
                serial: s.serial,
            },
            Err(e) => Signature::Invalid(e.to_string()),
        },
    }
}

/// The staged document, if any. One that cannot be read is removed (and said).
pub fn take(layout: &Layout) -> Option<Staged> {
    let path = layout.upper(STAGED_PATH).ok()?;
    let mut bytes = Vec::new();
    match fs::File::open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => warn!("cannot read {}: {e}", path.display()),
        Ok(f) => {
            if let Err(e) = f.take(MAX_STAGED + 1).read_to_end(&mut bytes) {
                warn!("cannot read {}: {e}", path.display());
            }
        }
    }
    match serde_json::from_slice::<Staged>(&bytes) {
        Ok(s) if bytes.len() as u64 <= MAX_STAGED => Some(s),
        _ => {
            warn!(
                "the console's staged configuration {} does not read; removed",
                path.display()
            );
            let _ = fs::remove_file(&path);
            None
        }
    }
}

/// The outcome at boot, for the report: applied, unchanged (`previous` was applied from this
/// very configuration: a power cut after the commit and before the result was written counts
/// as applied), or refused with the problems.
pub fn report(
    staged: &Staged,
    digest: &str,
    (status, problems): (&str, &[String]),
    previous_source: Option<&str>,
    origin: &str,
) -> ConfigReport {
    let (outcome, problems) = match status {
        "unchanged" if previous_source == Some(origin) => (ConfigOutcome::Applied, vec![]),
        "unchanged" => (ConfigOutcome::Unchanged, vec![]),
        "applied" => (ConfigOutcome::Applied, vec![]),
        "failed" if problems.is_empty() => (
            ConfigOutcome::Applied,
            vec![
                "committed, but some steps are not done yet (tried again at every boot: see \
                  the device's log)"
                    .to_string(),
            ],
        ),
        _ => (ConfigOutcome::Refused, problems.to_vec()),
    };
    ConfigReport {
        config: staged.config,
        outcome,
        digest: digest.to_string(),
        problems,
    }
}

/// Writes the outcome (temporary file, fsync, rename, 0600), then removes the staged
/// document. Failures are logged: at worst the document is judged again at the next boot.
pub fn finish(layout: &Layout, report: &ConfigReport) {
    let (Ok(result), Ok(staged)) = (layout.upper(RESULT_PATH), layout.upper(STAGED_PATH)) else {
        return;
    };
    let bytes = serde_json::to_vec_pretty(report).unwrap_or_default();
    if let Err(e) = write_atomic(&result, &bytes) {
        warn!("cannot write {}: {e}", result.display());
    }
    if let Err(e) = fs::remove_file(&staged) {
        warn!("cannot remove {}: {e}", staged.display());
    }
    if let Some(dir) = staged.parent() {
        let _ = fs::File::open(dir).and_then(|d| d.sync_all());
    }
}

/// `path` replaced by `bytes` as a whole (0600): a temporary file beside it, fsync, rename,
/// fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().ok_or("no directory")?;
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = path.with_extension("new");
    let _ = fs::remove_file(&tmp);
    txn::write_synced(&tmp, bytes, 0o600).map_err(|e| e.to_string())?;
    fs::rename(&tmp, path).map_err(|e| format!("cannot rename {}: {e}", tmp.display()))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn staged() -> Staged {
        Staged {
            config: 7,
            document: "hostname: a\n".into(),
            signature: None,
            boot_id: "b1".into(),
        }
    }

    #[test]
    fn outcomes_at_boot() {
        let s = staged();
        let o = "the console (site configuration 7)";
        let r = |st, prev| report(&s, "sha256:d", (st, &[]), prev, o).outcome;
        assert_eq!(r("applied", None), ConfigOutcome::Applied);
        assert_eq!(r("unchanged", Some("the ESP")), ConfigOutcome::Unchanged);
        // Applied at a boot cut short before the result was written.
        assert_eq!(r("unchanged", Some(o)), ConfigOutcome::Applied);
        // Committed with a step left for the next boot: applied, and said.
        let partial = report(&s, "sha256:d", ("failed", &[]), None, o);
        assert_eq!(partial.outcome, ConfigOutcome::Applied);
        assert_eq!(partial.problems.len(), 1);
        let problems = vec!["u.yaml:1:1: bad".to_string()];
        for status in ["invalid", "failed"] {
            let refused = report(&s, "sha256:d", (status, &problems), None, o);
            assert_eq!(refused.outcome, ConfigOutcome::Refused);
            assert_eq!(refused.problems, problems);
            assert_eq!(refused.config, 7);
        }
    }

    #[test]
    fn staged_is_taken_and_finished_in_the_upper_directory() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout {
            state: dir.path(),
            slot: dir.path(),
        };
        assert_eq!(take(&layout), None);
        let path = layout.upper(STAGED_PATH).unwrap();
        write_atomic(&path, &serde_json::to_vec(&staged()).unwrap()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!path.with_extension("new").exists());
        assert_eq!(take(&layout), Some(staged()));
        let r = report(&staged(), "sha256:d", ("applied", &[]), None, "x");
        finish(&layout, &r);
        assert!(!path.exists());
        let back: ConfigReport =
            serde_json::from_slice(&fs::read(layout.upper(RESULT_PATH).unwrap()).unwrap()).unwrap();
        assert_eq!(back, r);
        // A garbled staged file is removed, not tried at every boot.
        fs::write(&path, b"{not json").unwrap();
        assert_eq!(take(&layout), None);
        assert!(!path.exists());
    }

    #[test]
    fn an_unreadable_record_still_means_provisioned() {
        assert_eq!(provisioning(None).0, Provisioning::Unprovisioned);
        let (p, prev) = provisioning(Some(b"garbage"));
        assert!(prev.is_none());
        assert!(matches!(
            p,
            Provisioning::Provisioned {
                from: SourceKind::Writable,
                ..
            }
        ));
    }
}
