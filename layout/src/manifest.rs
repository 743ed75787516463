//! The slot manifest: what a slot holds. [`SlotIdentity`] is baked into the read-only root at
//! [`crate::slot::MANIFEST_PATH`]; [`SlotManifest`] (the identity plus the payloads' sizes and
//! hashes) lies beside the slot's kernel on the ESP (`/p6os/<slot>/manifest.json`) and travels
//! in bundles.
//!
//! Read tolerantly (unknown fields ignored): after a rollback an older agent reads what a newer
//! builder wrote. The version is checked with the one [`crate::version`] rule.

use serde::{Deserialize, Serialize};

use crate::version::{self, VersionError};

/// Baked into the read-only root filesystem; the agent reads `name` and `version` from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotIdentity {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// sha256 of every build input (recipe, layer definitions, resolved sources, agent).
    pub recipe_digest: String,
    /// The recipe's `upgrades.security_floor`: once a device has blessed this slot it never
    /// installs a version below this (the agent records it on the state partition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_floor: Option<String>,
}

/// On the ESP beside each slot's kernel: the identity plus what was written where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotManifest {
    #[serde(flatten)]
    pub identity: SlotIdentity,
    pub rootfs: Payload,
    /// The kernel and initramfs (inside the unified kernel image when there is one).
    pub kernel: Payload,
    pub initrd: Payload,
    /// The unified kernel image on the ESP (`p6os.efi`), signed when the image is. Absent in
    /// manifests of builders before unified kernel images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uki: Option<Payload>,
    pub kernel_release: String,
    pub agent_sha256: String,
}

/// One payload of a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// `squashfs`/`erofs` for root filesystems, else the file name.
    pub format: String,
    pub size: u64,
    pub sha256: String,
    /// Root filesystems protected by dm-verity: the hash tree follows the filesystem inside
    /// `size` ([`crate::verity`]). Absent for unprotected slots and in older manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verity: Option<crate::verity::Params>,
}

/// Why a slot identity cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("invalid manifest json")]
    Json(#[from] serde_json::Error),
    #[error("manifest version {version:?}")]
    BadVersion {
        version: String,
        #[source]
        source: VersionError,
    },
}

impl SlotIdentity {
    /// The identity in a slot's `manifest.json` (other fields ignored), its version checked.
    pub fn parse(text: &str) -> Result<SlotIdentity, ManifestError> {
        /// `arch` and `recipe_digest` may be missing in manifests of old images.
        #[derive(Deserialize)]
        struct Loose {
            name: String,
            version: String,
            #[serde(default)]
            arch: String,
            #[serde(default)]
            recipe_digest: String,
            #[serde(default)]
            security_floor: Option<String>,
        }
        let l: Loose = serde_json::from_str(text)?;
        version::check(&l.version).map_err(|source| ManifestError::BadVersion {
            version: l.version.clone(),
            source,
        })?;
        Ok(SlotIdentity {
            name: l.name,
            version: l.version,
            arch: l.arch,
            recipe_digest: l.recipe_digest,
            // Not a version: no floor (a floor is only ever raised, so none is the safe side).
            security_floor: l.security_floor.filter(|f| version::is_valid(f)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_ignores_other_fields() {
        let m = SlotIdentity::parse(
            r#"{"name":"edge","version":"1.4.0-3","kernel":"6.1.0","layers":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(m.name, "edge");
        assert_eq!(m.version, "1.4.0-3");
    }

    #[test]
    fn rejects_missing_fields_bad_json_and_bad_versions() {
        for bad in [
            r#"{"name":"edge"}"#,
            r#"{"name":"edge","version":3}"#,
            "not json",
        ] {
            assert!(
                matches!(SlotIdentity::parse(bad), Err(ManifestError::Json(_))),
                "{bad}"
            );
        }
        for version in ["", "1 0", "1\n", "a/b"] {
            let text = serde_json::json!({"name": "edge", "version": version}).to_string();
            assert!(
                matches!(
                    SlotIdentity::parse(&text),
                    Err(ManifestError::BadVersion { .. })
                ),
                "{version:?}"
            );
        }
    }

    #[test]
    fn slot_manifest_json_is_flat() {
        let p = |f: &str| Payload {
            format: f.into(),
            size: 1,
            sha256: "00".into(),
            verity: None,
        };
        let m = SlotManifest {
            identity: SlotIdentity {
                security_floor: None,
                name: "tiny".into(),
                version: "1.0.0".into(),
                arch: "x86_64".into(),
                recipe_digest: "ab".into(),
            },
            rootfs: p("squashfs"),
            kernel: p("vmlinuz"),
            initrd: p("initrd.img"),
            uki: Some(p("p6os.efi")),
            kernel_release: "6.1.0".into(),
            agent_sha256: "cd".into(),
        };
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["version"], "1.0.0");
        assert_eq!(json["rootfs"]["format"], "squashfs");
        let back: SlotManifest = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
        assert_eq!(
            SlotIdentity::parse(&serde_json::to_string(&m).unwrap()).unwrap(),
            m.identity
        );
    }
}
