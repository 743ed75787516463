//! `/var/lib/p6os/applied.json`: what was applied last (digests, source, time, files), and
//! the decision whether a document needs applying. Pure.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::render::{Content, Rendered};
use super::source::Origin;
use super::trust::SourceKind;

pub const APPLIED_PATH: &str = "/var/lib/p6os/applied.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// `sha256:` of the document's bytes.
    pub digest: String,
    /// `sha256:` of everything rendered from it (paths, owners, modes, contents): changes when
    /// the document or the slot's account files change.
    pub rendered_digest: String,
    /// Where the document came from.
    pub source: String,
    /// UTC, RFC 3339.
    pub applied_at: String,
    /// Files the agent manages (removed again when a later document no longer renders them).
    pub files: Vec<String>,
    /// Settings this base could not apply.
    #[serde(default)]
    pub notes: Vec<String>,
    /// The serial of the newest signed document applied (`trust`): a lower one is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
    /// Whether the document came from the image's default or from outside (`trust`); absent
    /// in records written before it was recorded (see [`Applied::source_kind`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_kind: Option<SourceKind>,
}

impl Applied {
    /// Where the applied document came from. An older record without `source_kind` came from
    /// the image's default exactly when its `source` is the default's own description; any
    /// other record came from outside the image.
    pub fn source_kind(&self) -> SourceKind {
        match self.source_kind {
            Some(kind) => kind,
            None if self.source == Origin::Baked.to_string() => SourceKind::Image,
            None => SourceKind::Writable,
        }
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

pub fn rendered_digest(r: &Rendered) -> String {
    let mut h = Sha256::new();
    for t in &r.targets {
        h.update(format!("{}\0{:o}\0{}\0{}\0", t.path, t.mode, t.uid, t.gid).as_bytes());
        match &t.content {
            Content::File(bytes) => {
                h.update(b"f");
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(bytes);
            }
            Content::Symlink(to) => {
                h.update(b"l");
                h.update(to.as_bytes());
                h.update(b"\0");
            }
            Content::Dir => h.update(b"d"),
        }
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// What to do with a valid document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Same document, same rendering: touch nothing.
    Unchanged,
    /// Apply; `stale` are files managed before and not rendered now.
    Apply { stale: Vec<String> },
}

pub fn decide(previous: Option<&Applied>, digest: &str, rendered: &Rendered) -> Decision {
    let rendered_now = rendered_digest(rendered);
    match previous {
        Some(p) if p.digest == digest && p.rendered_digest == rendered_now => Decision::Unchanged,
        _ => {
            let stale = previous
                .map(|p| {
                    p.files
                        .iter()
                        .filter(|f| !rendered.targets.iter().any(|t| &t.path == *f))
                        .filter(|f| f.as_str() != APPLIED_PATH)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            Decision::Apply { stale }
        }
    }
}

/// Files (not directories: those may hold user data) that the record lists.
pub fn managed_files(r: &Rendered) -> Vec<String> {
    r.targets
        .iter()
        .filter(|t| t.content != Content::Dir)
        .map(|t| t.path.clone())
        .collect()
}

pub use p6os_protocol::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firstboot::render::Target;

    fn rendered(paths: &[&str]) -> Rendered {
        Rendered {
            targets: paths
                .iter()
                .map(|p| Target {
                    path: p.to_string(),
                    content: Content::File(b"x\n".to_vec()),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                })
                .collect(),
            notes: Vec::new(),
        }
    }

    fn record(digest: &str, r: &Rendered) -> Applied {
        Applied {
            digest: digest.into(),
            rendered_digest: rendered_digest(r),
            source: "test".into(),
            applied_at: rfc3339(0),
            files: managed_files(r),
            notes: Vec::new(),
            serial: None,
            source_kind: Some(SourceKind::Writable),
        }
    }

    #[test]
    fn first_time_applies_with_nothing_stale() {
        let r = rendered(&["/etc/hostname"]);
        assert_eq!(
            decide(None, "sha256:a", &r),
            Decision::Apply { stale: vec![] }
        );
    }

    #[test]
    fn same_document_and_rendering_is_unchanged() {
        let r = rendered(&["/etc/hostname"]);
        let prev = record("sha256:a", &r);
        assert_eq!(decide(Some(&prev), "sha256:a", &r), Decision::Unchanged);
    }

    #[test]
    fn changed_document_or_rendering_applies_and_removes_what_is_gone() {
        let old = rendered(&["/etc/environment", "/etc/hostname"]);
        let prev = record("sha256:a", &old);
        let new = rendered(&["/etc/hostname"]);
        assert_eq!(
            decide(Some(&prev), "sha256:b", &new),
            Decision::Apply {
                stale: vec!["/etc/environment".into()]
            }
        );
        // Same document, but the slot changed what it renders to (e.g. its /etc/passwd).
        let mut changed = old.clone();
        changed.targets[1].content = Content::File(b"y\n".to_vec());
        assert_eq!(
            decide(Some(&prev), "sha256:a", &changed),
            Decision::Apply { stale: vec![] }
        );
    }

    #[test]
    fn rendered_digest_sees_mode_owner_and_kind() {
        let a = rendered(&["/etc/x"]);
        let mut b = a.clone();
        b.targets[0].mode = 0o600;
        let mut c = a.clone();
        c.targets[0].uid = 1000;
        let mut d = a.clone();
        d.targets[0].content = Content::Symlink("x\n".into());
        let all = [&a, &b, &c, &d].map(rendered_digest);
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                assert_ne!(all[i], all[j], "{i} {j}");
            }
        }
    }
    #[test]
    fn the_source_kind_is_recorded_and_read_from_older_records() {
        let r = rendered(&["/etc/hostname"]);
        let mut rec = record("sha256:a", &r);
        rec.source_kind = Some(SourceKind::Image);
        let text = serde_json::to_string(&rec).unwrap();
        assert!(text.contains(r#""source_kind":"image""#), "{text}");
        let back: Applied = serde_json::from_str(&text).unwrap();
        assert_eq!(back.source_kind(), SourceKind::Image);
        // Written before the field existed: told apart by the source's description.
        let old = |source: &str| {
            format!(
                r#"{{"digest":"sha256:a","rendered_digest":"sha256:b","source":"{source}","applied_at":"1970-01-01T00:00:00Z","files":[]}}"#
            )
        };
        let baked: Applied = serde_json::from_str(&old(&Origin::Baked.to_string())).unwrap();
        assert_eq!(baked.source_kind(), SourceKind::Image);
        for source in [
            Origin::Esp.to_string(),
            "configuration drive /dev/sdb (/user-data)".into(),
        ] {
            let rec: Applied = serde_json::from_str(&old(&source)).unwrap();
            assert_eq!(rec.source_kind(), SourceKind::Writable, "{source}");
        }
    }
}
