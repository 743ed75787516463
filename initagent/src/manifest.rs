//! `/usr/lib/p6os/manifest.json` of a slot: what is in it.
//!
//! Pure: parses the text; other fields of the manifest are ignored here.

use serde::Deserialize;

pub const MANIFEST_PATH: &str = "/usr/lib/p6os/manifest.json";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("invalid manifest json")]
    Json(#[from] serde_json::Error),
    #[error("manifest version {0:?} is empty or contains whitespace or control characters")]
    BadVersion(String),
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = serde_json::from_str(text)?;
        let v = &manifest.version;
        if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ManifestError::BadVersion(v.clone()));
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_ignores_other_fields() {
        let m = Manifest::parse(
            r#"{"name":"edge","version":"1.4.0-3","kernel":"6.1.0","layers":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(m.name, "edge");
        assert_eq!(m.version, "1.4.0-3");
    }

    #[test]
    fn rejects_missing_fields_and_bad_json() {
        assert!(matches!(
            Manifest::parse(r#"{"name":"edge"}"#),
            Err(ManifestError::Json(_))
        ));
        assert!(matches!(
            Manifest::parse(r#"{"name":"edge","version":3}"#),
            Err(ManifestError::Json(_))
        ));
        assert!(matches!(
            Manifest::parse("not json"),
            Err(ManifestError::Json(_))
        ));
        assert!(matches!(Manifest::parse(""), Err(ManifestError::Json(_))));
    }

    #[test]
    fn rejects_versions_that_would_break_the_ready_line() {
        for v in ["", "1 2", "1\n", "a\tb"] {
            let text = serde_json::json!({"name": "x", "version": v}).to_string();
            assert!(
                matches!(Manifest::parse(&text), Err(ManifestError::BadVersion(_))),
                "{v:?}"
            );
        }
    }
}
