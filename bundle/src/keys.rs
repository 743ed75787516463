//! ed25519 keys in two small text files:
//!
//! ```text
//! p6os-secret-key v1 ed25519 <key id>      (mode 0600)
//! <base64 of the 32-byte seed>
//!
//! p6os-public-key v1 ed25519 <key id>
//! <base64 of the 32-byte public key>
//! ```
//!
//! The key id is the first 8 bytes of the public key's sha256, in hex: bundles name the key
//! that signed them, so a device holding several trusted keys knows which one to use.

use std::fmt;

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

const SECRET_HEADER: &str = "p6os-secret-key v1 ed25519";
const PUBLIC_HEADER: &str = "p6os-public-key v1 ed25519";
/// What is signed: this domain tag, then the manifest bytes.
pub const SIGNING_CONTEXT: &[u8] = b"p6os-bundle-v1\n";
/// The domain tag of configuration signatures (`crate::configsig`): no bundle signature is
/// ever a configuration signature, and no configuration signature a bundle's.
pub const CONFIG_SIGNING_CONTEXT: &[u8] = b"p6os-config-v1\n";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a P6OS {0} key file (the first line must start with `{1}`)")]
    Header(&'static str, &'static str),
    #[error("the key is not valid base64 of 32 bytes")]
    Encoding,
    #[error("the key id in the header ({header}) does not match the key ({actual})")]
    IdMismatch { header: String, actual: String },
    #[error("not a valid ed25519 public key")]
    Point,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    pub fn of(public: &VerifyingKey) -> KeyId {
        let digest = Sha256::digest(public.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }

    pub fn parse(hex: &str) -> Option<KeyId> {
        if hex.len() != 16 {
            return None;
        }
        let mut id = [0u8; 8];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(KeyId(id))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A signing key; `Debug` never shows the secret.
pub struct SecretKey(SigningKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.id())
    }
}

impl SecretKey {
    /// From 32 bytes of the operating system's randomness.
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn id(&self) -> KeyId {
        self.public().id()
    }

    pub fn sign_manifest(&self, manifest: &[u8]) -> [u8; 64] {
        self.sign_in(SIGNING_CONTEXT, manifest)
    }

    /// Signs `context` followed by `bytes`.
    pub(crate) fn sign_in(&self, context: &[u8], bytes: &[u8]) -> [u8; 64] {
        let mut message = context.to_vec();
        message.extend_from_slice(bytes);
        self.0.sign(&message).to_bytes()
    }

    pub fn to_file(&self) -> String {
        format!(
            "{SECRET_HEADER} {}\n{}\n",
            self.id(),
            base64::engine::general_purpose::STANDARD.encode(self.0.to_bytes())
        )
    }

    pub fn from_file(text: &str) -> Result<SecretKey, KeyError> {
        let (id, bytes) = parse_file(text, SECRET_HEADER, "secret")?;
        let key = SecretKey(SigningKey::from_bytes(&bytes));
        check_id(id, key.id())?;
        Ok(key)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

impl PublicKey {
    pub fn id(&self) -> KeyId {
        KeyId::of(&self.0)
    }

    /// Whether `signature` is this key's over the manifest bytes (strict verification).
    pub fn verify_manifest(&self, manifest: &[u8], signature: &[u8; 64]) -> bool {
        self.verify_in(SIGNING_CONTEXT, manifest, signature)
    }

    /// Whether `signature` is this key's over `context` followed by `bytes` (strict).
    pub(crate) fn verify_in(&self, context: &[u8], bytes: &[u8], signature: &[u8; 64]) -> bool {
        let mut message = context.to_vec();
        message.extend_from_slice(bytes);
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify_strict(&message, &signature).is_ok()
    }

    pub fn to_file(&self) -> String {
        format!(
            "{PUBLIC_HEADER} {}\n{}\n",
            self.id(),
            base64::engine::general_purpose::STANDARD.encode(self.0.as_bytes())
        )
    }

    pub fn from_file(text: &str) -> Result<PublicKey, KeyError> {
        let (id, bytes) = parse_file(text, PUBLIC_HEADER, "public")?;
        let key = PublicKey(VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::Point)?);
        check_id(id, key.id())?;
        Ok(key)
    }
}

fn parse_file<'a>(
    text: &'a str,
    header: &'static str,
    kind: &'static str,
) -> Result<(Option<&'a str>, [u8; 32]), KeyError> {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let rest = first
        .strip_prefix(header)
        .ok_or(KeyError::Header(kind, header))?;
    let id = rest.trim();
    let id = (!id.is_empty()).then_some(id);
    let body = lines.next().unwrap_or_default().trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| KeyError::Encoding)?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Encoding)?;
    Ok((id, bytes))
}

fn check_id(header: Option<&str>, actual: KeyId) -> Result<(), KeyError> {
    match header {
        Some(h) if h != actual.to_string() => Err(KeyError::IdMismatch {
            header: h.to_string(),
            actual: actual.to_string(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    #[test]
    fn files_round_trip_and_ids_match() {
        let k = key(7);
        let back = SecretKey::from_file(&k.to_file()).unwrap();
        assert_eq!(back.id(), k.id());
        let p = PublicKey::from_file(&k.public().to_file()).unwrap();
        assert_eq!(p, k.public());
        assert!(k
            .public()
            .to_file()
            .starts_with("p6os-public-key v1 ed25519 "));
        assert_eq!(KeyId::parse(&k.id().to_string()), Some(k.id()));
    }

    #[test]
    fn signatures_verify_only_for_the_same_key_and_bytes() {
        let k = key(1);
        let sig = k.sign_manifest(b"{\"a\":1}");
        assert!(k.public().verify_manifest(b"{\"a\":1}", &sig));
        assert!(!k.public().verify_manifest(b"{\"a\":2}", &sig));
        assert!(!key(2).public().verify_manifest(b"{\"a\":1}", &sig));
        let mut flipped = sig;
        flipped[10] ^= 1;
        assert!(!k.public().verify_manifest(b"{\"a\":1}", &flipped));
    }

    #[test]
    fn bad_files_are_refused() {
        let k = key(3);
        assert_eq!(
            PublicKey::from_file(&k.to_file()).unwrap_err(),
            KeyError::Header("public", PUBLIC_HEADER)
        );
        assert_eq!(
            SecretKey::from_file("p6os-secret-key v1 ed25519\nAAAA\n").unwrap_err(),
            KeyError::Encoding
        );
        let wrong_id = k
            .public()
            .to_file()
            .replace(&k.id().to_string(), "0000000000000000");
        assert!(matches!(
            PublicKey::from_file(&wrong_id),
            Err(KeyError::IdMismatch { .. })
        ));
        assert!(!format!("{k:?}").contains(&k.to_file().lines().nth(1).unwrap()[..8]));
    }
}
