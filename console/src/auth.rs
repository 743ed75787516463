//! Tokens: generation, digests, constant-time comparison and the `Authorization` header.
//!
//! The admin and pairing tokens are held as sha256 digests and compared digest to digest in
//! constant time (the digest also hides the token's length). Device tokens are stored only as
//! sha256 hex and found by that digest: a database lookup by digest leaks nothing usable.

use axum::http::{header, HeaderMap};
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// A fresh token: 32 random bytes, base64url without padding (43 characters).
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// sha256 hex of a token: how device tokens are stored.
pub fn digest_hex(token: &str) -> String {
    hex(&digest(token))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equality of two digests without an early exit.
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A secret held only as its digest; `Debug` shows nothing.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl Secret {
    pub fn new(token: &str) -> Secret {
        Secret(digest(token))
    }

    pub fn matches(&self, presented: &str) -> bool {
        digests_equal(&self.0, &digest(presented))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The bearer token of a request: `None` when the header is missing or not `Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn tokens_are_random_base64url() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn secrets_compare_by_digest() {
        let s = Secret::new("abc");
        assert!(s.matches("abc"));
        assert!(!s.matches("abd"));
        assert!(!s.matches(""));
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert_eq!(digest_hex("abc").len(), 64);
    }

    #[test]
    fn bearer_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer xyz"),
        );
        assert_eq!(bearer(&h), Some("xyz"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic xyz"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }
}
