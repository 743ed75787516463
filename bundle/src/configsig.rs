//! Detached signatures of site configuration documents (`unattended.yaml.sig` beside
//! `unattended.yaml`), made by `p6os config sign` with a `p6os keygen` key and checked by the
//! agent before it parses the document. A small text file:
//!
//! ```text
//! p6os-config-signature v1 ed25519 <key id>
//! serial <decimal u64>
//! <base64 of the 64-byte ed25519 signature>
//! ```
//!
//! What is signed: `"p6os-config-v1\n"`, then `serial <N>\n`, then the document's exact bytes.
//! The domain tag differs from the bundles' (`"p6os-bundle-v1\n"`), so a bundle signature is
//! never a configuration signature (and the other way round), even under the same key.
//! The serial is the signer's: a device records the serial of the signed document it applied
//! and refuses a lower one (and the same one for different bytes), so an old signed document
//! cannot be replayed later.

use base64::Engine as _;

use crate::keys::{KeyId, PublicKey, SecretKey, CONFIG_SIGNING_CONTEXT};

const HEADER: &str = "p6os-config-signature v1 ed25519";
/// Larger files are not signatures (the agent reads at most this much).
pub const MAX_SIGNATURE_FILE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigSigError {
    #[error("not a P6OS configuration signature: {0}")]
    Format(String),
    #[error("signed by key {key_id}, which this image does not trust for configuration (trusted: {trusted})")]
    UntrustedKey { key_id: String, trusted: String },
    #[error("the signature does not match the document (signed by someone else, or altered)")]
    BadSignature,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSignature {
    pub key_id: KeyId,
    pub serial: u64,
    signature: [u8; 64],
}

fn message(serial: u64, document: &[u8]) -> Vec<u8> {
    let mut m = format!("serial {serial}\n").into_bytes();
    m.extend_from_slice(document);
    m
}

impl ConfigSignature {
    pub fn sign(key: &SecretKey, document: &[u8], serial: u64) -> ConfigSignature {
        ConfigSignature {
            key_id: key.id(),
            serial,
            signature: key.sign_in(CONFIG_SIGNING_CONTEXT, &message(serial, document)),
        }
    }

    pub fn to_file(&self) -> String {
        format!(
            "{HEADER} {}\nserial {}\n{}\n",
            self.key_id,
            self.serial,
            base64::engine::general_purpose::STANDARD.encode(self.signature)
        )
    }

    /// Reads a signature file; never panics on any bytes.
    pub fn parse(bytes: &[u8]) -> Result<ConfigSignature, ConfigSigError> {
        let bad = |why: &str| ConfigSigError::Format(why.to_string());
        if bytes.len() > MAX_SIGNATURE_FILE {
            return Err(bad("larger than 4 KiB"));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8 text"))?;
        let mut lines = text.lines();
        let key_id = lines
            .next()
            .and_then(|l| l.strip_prefix(HEADER))
            .ok_or_else(|| bad(&format!("the first line must start with `{HEADER}`")))?;
        let key_id =
            KeyId::parse(key_id.trim()).ok_or_else(|| bad("the key id is not 16 hex digits"))?;
        let serial = lines
            .next()
            .and_then(|l| l.strip_prefix("serial "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .ok_or_else(|| bad("the second line must be `serial <number>`"))?;
        let signature: [u8; 64] = base64::engine::general_purpose::STANDARD
            .decode(lines.next().unwrap_or_default().trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("the third line must be base64 of 64 bytes"))?;
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(bad("text after the signature"));
        }
        Ok(ConfigSignature {
            key_id,
            serial,
            signature,
        })
    }

    /// Checks the signature over `document` with the trusted key it names.
    pub fn verify(&self, document: &[u8], trusted: &[PublicKey]) -> Result<(), ConfigSigError> {
        let key = trusted
            .iter()
            .find(|k| k.id() == self.key_id)
            .ok_or_else(|| ConfigSigError::UntrustedKey {
                key_id: self.key_id.to_string(),
                trusted: if trusted.is_empty() {
                    "none".to_string()
                } else {
                    trusted
                        .iter()
                        .map(|k| k.id().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })?;
        if key.verify_in(
            CONFIG_SIGNING_CONTEXT,
            &message(self.serial, document),
            &self.signature,
        ) {
            Ok(())
        } else {
            Err(ConfigSigError::BadSignature)
        }
    }
}

/// Parses `signature_file` and verifies it over `document`: the signature when it holds.
pub fn verify(
    document: &[u8],
    signature_file: &[u8],
    trusted: &[PublicKey],
) -> Result<ConfigSignature, ConfigSigError> {
    let signature = ConfigSignature::parse(signature_file)?;
    signature.verify(document, trusted)?;
    Ok(signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    const DOC: &[u8] = b"hostname: store-1\n";

    #[test]
    fn signed_document_verifies_with_its_serial() {
        let k = key(1);
        let file = ConfigSignature::sign(&k, DOC, 7).to_file();
        assert!(file.starts_with("p6os-config-signature v1 ed25519 "));
        let sig = verify(DOC, file.as_bytes(), &[key(2).public(), k.public()]).unwrap();
        assert_eq!((sig.key_id, sig.serial), (k.id(), 7));
    }

    #[test]
    fn altered_document_serial_or_key_is_refused() {
        let k = key(1);
        let file = ConfigSignature::sign(&k, DOC, 7).to_file();
        assert_eq!(
            verify(b"hostname: store-2\n", file.as_bytes(), &[k.public()]),
            Err(ConfigSigError::BadSignature)
        );
        let raised = file.replace("serial 7", "serial 8");
        assert_eq!(
            verify(DOC, raised.as_bytes(), &[k.public()]),
            Err(ConfigSigError::BadSignature)
        );
        assert!(matches!(
            verify(DOC, file.as_bytes(), &[key(2).public()]),
            Err(ConfigSigError::UntrustedKey { .. })
        ));
        let none = verify(DOC, file.as_bytes(), &[]).unwrap_err();
        assert!(none.to_string().contains("trusted: none"), "{none}");
    }

    #[test]
    fn a_bundle_signature_is_never_a_configuration_signature() {
        let k = key(1);
        // The bundle key signs "manifest" bytes equal to what a config signature covers.
        let covered = message(7, DOC);
        let bundle_sig = k.sign_manifest(&covered);
        let forged = ConfigSignature {
            key_id: k.id(),
            serial: 7,
            signature: bundle_sig,
        };
        assert_eq!(
            forged.verify(DOC, &[k.public()]),
            Err(ConfigSigError::BadSignature)
        );
        // And the other way round.
        let config_sig = ConfigSignature::sign(&k, DOC, 7);
        assert!(!k.public().verify_manifest(&covered, &config_sig.signature));
    }

    #[test]
    fn malformed_files_are_refused_with_a_reason() {
        let k = key(1);
        let good = ConfigSignature::sign(&k, DOC, 1).to_file();
        for (bad, why) in [
            (String::new(), "first line"),
            ("p6os-public-key v1 ed25519 00\n".to_string(), "first line"),
            (good.replace("serial 1", "serial x"), "serial"),
            (good.replace("serial 1\n", ""), "serial"),
            (format!("{good}more\n"), "after the signature"),
            (good.replace(&k.id().to_string(), "zz"), "16 hex digits"),
        ] {
            let e = ConfigSignature::parse(bad.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
        }
        assert!(ConfigSignature::parse(&[0xff; 10]).is_err());
        assert!(ConfigSignature::parse(&vec![b'a'; MAX_SIGNATURE_FILE + 1]).is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = ConfigSignature::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_near_misses(serial in any::<u64>(), tail in "\\PC{0,120}") {
            let text = format!("{HEADER} 0011223344556677\nserial {serial}\n{tail}\n");
            let _ = ConfigSignature::parse(text.as_bytes());
        }
    }
}
