//! Device identity: each appliance makes an ed25519 key at its first registration (kept 0600 on
//! its state partition) and pairs with it. The console binds an appliance id to one key; the
//! fleet's pairing token (which every site's unattended.yaml holds, so it is treated as public)
//! only lets a device *ask*. A device proves it holds its key by signing a challenge the console
//! made for this id and this key ([`pair_message`]), so a recorded proof is worth nothing for
//! another id, another key or, after a few minutes, at all.
//!
//! Wire forms: the public key as standard base64 of its 32 bytes; the fingerprint as
//! `SHA256:` and the unpadded base64 of the key's sha256 (what `ssh-keygen -l` prints for SSH
//! keys, so operators recognise the shape); the signature as standard base64 of 64 bytes.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// Domain separation: what a device signs starts with this tag, so no other P6OS signature
/// (bundles, configuration documents) can be replayed as a pairing proof, nor the reverse.
pub const PAIR_CONTEXT: &[u8] = b"p6os-pair-v1\n";

/// Longest challenge the console makes (base64 text).
pub const MAX_CHALLENGE_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// Not base64 of 32 bytes, or not a point on the curve.
    Key,
    /// Not base64 of 64 bytes.
    SignatureEncoding,
    /// The signature does not verify.
    Signature,
}

impl std::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IdentityError::Key => "the device key is not base64 of a 32-byte ed25519 public key",
            IdentityError::SignatureEncoding => "the signature is not base64 of 64 bytes",
            IdentityError::Signature => "the signature does not match the device key",
        })
    }
}

impl std::error::Error for IdentityError {}

/// A device's public key, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceKey(VerifyingKey);

impl DeviceKey {
    pub fn parse(text: &str) -> Result<DeviceKey, IdentityError> {
        let bytes: [u8; 32] = STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(IdentityError::Key)?;
        VerifyingKey::from_bytes(&bytes)
            .map(DeviceKey)
            .map_err(|_| IdentityError::Key)
    }

    /// Standard base64 of the 32 bytes.
    pub fn encode(&self) -> String {
        STANDARD.encode(self.0.as_bytes())
    }

    /// `SHA256:<unpadded base64 of the key's sha256>`.
    pub fn fingerprint(&self) -> String {
        format!(
            "SHA256:{}",
            STANDARD_NO_PAD.encode(Sha256::digest(self.0.as_bytes()))
        )
    }

    /// Checks a base64 signature of [`pair_message`]`(id, challenge)`.
    pub fn verify_pair(
        &self,
        id: &str,
        challenge: &str,
        signature: &str,
    ) -> Result<(), IdentityError> {
        let bytes: [u8; 64] = STANDARD
            .decode(signature.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(IdentityError::SignatureEncoding)?;
        self.0
            .verify(&pair_message(id, challenge), &Signature::from_bytes(&bytes))
            .map_err(|_| IdentityError::Signature)
    }
}

/// Whether `text` has the shape of a fingerprint (`SHA256:` and 43 base64 characters).
pub fn check_fingerprint(text: &str) -> Result<(), String> {
    let ok = text.strip_prefix("SHA256:").is_some_and(|b| {
        STANDARD_NO_PAD
            .decode(b)
            .is_ok_and(|d| d.len() == 32 && b.len() == 43)
    });
    if ok {
        Ok(())
    } else {
        Err("expected SHA256: and 43 base64 characters, as `p6os-agent status` shows it".into())
    }
}

/// What a device signs to pair as `id`: the context tag, the id, a newline, the challenge.
pub fn pair_message(id: &str, challenge: &str) -> Vec<u8> {
    let mut m = PAIR_CONTEXT.to_vec();
    m.extend_from_slice(id.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(challenge.as_bytes());
    m
}

/// A device's secret key (the agent's side). `Debug` never shows it.
#[derive(Clone)]
pub struct DeviceSecret(SigningKey);

impl std::fmt::Debug for DeviceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceSecret({})", self.public().fingerprint())
    }
}

impl DeviceSecret {
    pub fn from_seed(seed: [u8; 32]) -> DeviceSecret {
        DeviceSecret(SigningKey::from_bytes(&seed))
    }

    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public(&self) -> DeviceKey {
        DeviceKey(self.0.verifying_key())
    }

    /// The base64 signature of [`pair_message`]`(id, challenge)`.
    pub fn sign_pair(&self, id: &str, challenge: &str) -> String {
        STANDARD.encode(self.0.sign(&pair_message(id, challenge)).to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_binds_id_challenge_and_key() {
        let device = DeviceSecret::from_seed([7; 32]);
        let key = DeviceKey::parse(&device.public().encode()).unwrap();
        let sig = device.sign_pair("store-12", "c1");
        assert_eq!(key.verify_pair("store-12", "c1", &sig), Ok(()));
        assert_eq!(
            key.verify_pair("store-13", "c1", &sig),
            Err(IdentityError::Signature)
        );
        assert_eq!(
            key.verify_pair("store-12", "c2", &sig),
            Err(IdentityError::Signature)
        );
        // The id cannot bleed into the challenge: "a\nb" + "c" differs from "a" + "b\nc" only
        // if ids cannot hold a newline, which check_id guarantees.
        assert!(crate::check_id("a\nb").is_err());
        let other = DeviceSecret::from_seed([8; 32]).public();
        assert_eq!(
            other.verify_pair("store-12", "c1", &sig),
            Err(IdentityError::Signature)
        );
        assert_eq!(
            key.verify_pair("store-12", "c1", "!!"),
            Err(IdentityError::SignatureEncoding)
        );
    }

    #[test]
    fn keys_and_fingerprints() {
        let key = DeviceSecret::from_seed([7; 32]).public();
        let fp = key.fingerprint();
        assert!(fp.starts_with("SHA256:") && fp.len() == 50, "{fp}");
        assert_eq!(check_fingerprint(&fp), Ok(()));
        for bad in ["", "SHA256:", "sha256:abc", &fp[..49], &format!("{fp}A")] {
            assert!(check_fingerprint(bad).is_err(), "{bad}");
        }
        assert_eq!(DeviceKey::parse("AAAA"), Err(IdentityError::Key));
        assert_eq!(DeviceKey::parse(&key.encode()), Ok(key));
        assert!(!format!("{:?}", DeviceSecret::from_seed([7; 32])).contains("BwcH"));
    }
}
