//! What the agent says of a bundle it could not check: in its own words. Until the signature
//! is verified, the manifest is anybody's text (a key id, a digest, what serde quotes of it),
//! and the failure goes to the console; so header, signature and manifest errors become fixed
//! wording, and the details go to the local log only (escaped, bounded).

use p6os_bundle::format::BundleError;

use super::http::words::for_log;
use super::install::InstallError;
use super::Failure;
use crate::log::error_chain;

/// The failure for an error of [`super::install::check`] or of the first pass over a file.
/// A source that breaks off is a failure to try again, not a verdict on the bundle.
pub fn judge(e: &InstallError) -> Failure {
    let words = match e {
        InstallError::Bundle(b) => match b {
            BundleError::Read(_) => return failed_read(e),
            BundleError::Truncated(_) => return Failure::Failed(error_chain(e)),
            BundleError::Magic => "not a P6OS bundle",
            BundleError::ManifestTooLarge(_)
            | BundleError::Manifest(_)
            | BundleError::SignatureLength(_) => "the bundle's header is damaged",
            BundleError::Unsigned => "the bundle is not signed",
            BundleError::UntrustedKey { .. } | BundleError::BadSignature => {
                "the bundle's signature does not verify with the slot's keys"
            }
            // After the signature: the manifest's text is the signer's.
            _ => return Failure::Refused(error_chain(e)),
        },
        // Compatibility: read from a verified manifest.
        _ => return Failure::Refused(error_chain(e)),
    };
    warn!("upgrade: {words}: {}", for_log(&error_chain(e)));
    Failure::Refused(words.to_string())
}

/// A read error can carry a server's text (a download's error): logged, not sent.
fn failed_read(e: &InstallError) -> Failure {
    let words = "the bundle could not be read";
    warn!("upgrade: {words}: {}", for_log(&error_chain(e)));
    Failure::Failed(words.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use p6os_bundle::format::{read_header, MAGIC};

    const HOSTILE: &str = "\u{1b}[2J\u{1b}[Hupgrade finished: version 9.9.9 installed";

    /// A bundle header whose (unsigned, unverified) manifest is `manifest`, with a 64-byte
    /// signature block of zeros.
    fn bundle(manifest: &serde_json::Value) -> Vec<u8> {
        let m = serde_json::to_vec(manifest).unwrap();
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&(m.len() as u32).to_le_bytes());
        b.extend_from_slice(&m);
        b.extend_from_slice(&64u32.to_le_bytes());
        b.extend_from_slice(&[0u8; 64]);
        b
    }

    fn manifest(key_id: &str, digest: &str, tries: serde_json::Value) -> serde_json::Value {
        let payload = |kind: &str| {
            serde_json::json!({"kind": kind, "size": 1, "compressed_size": 1,
                "sha256": digest, "compressed_sha256": digest})
        };
        serde_json::json!({
            "format": 1, "name": "tiny", "version": "2.0.0", "arch": "x86_64",
            "compatible": ["tiny"], "min_agent_version": "0.1.0", "recipe_digest": "x",
            "rootfs_type": "squashfs", "kernel_args": [], "tries": tries,
            "key_id": key_id, "slot_manifest": {},
            "payloads": [payload("kernel"), payload("initrd"), payload("rootfs")],
        })
    }

    /// The console's text for a bundle: the check as the agent runs it, then `judge`.
    fn console_text(bytes: &[u8]) -> String {
        let err = read_header(&mut &bytes[..])
            .and_then(|h| h.verify(&[]).map(|_| ()))
            .unwrap_err();
        judge(&InstallError::Bundle(err)).to_string()
    }

    #[test]
    fn hostile_text_in_an_unverified_manifest_never_reaches_the_console() {
        let good = format!("sha256:{}", "a".repeat(64));
        let cases = [
            // Echoed as the untrusted key id.
            (
                manifest(HOSTILE, &good, 3.into()),
                "signature does not verify",
            ),
            // Echoed as a malformed digest.
            (manifest("k", HOSTILE, 3.into()), "header is damaged"),
            // Quoted by serde in its message.
            (manifest("k", &good, HOSTILE.into()), "header is damaged"),
        ];
        for (m, words) in cases {
            let text = console_text(&bundle(&m));
            assert!(text.contains(words), "{text:?}");
            for bad in ["\u{1b}", "upgrade finished", "9.9.9"] {
                assert!(!text.contains(bad), "{bad:?} in {text:?}");
            }
        }
    }
}
