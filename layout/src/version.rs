//! The one rule for image versions, and their order.
//!
//! A version names an image in recipes, slot manifests, bundles, boot entry file names (on
//! FAT), ESP paths, heartbeats and the console's desired versions; every one of them checks
//! it with [`check`].

use std::cmp::Ordering;

/// Longest version (it becomes part of a FAT file name).
pub const MAX_LEN: usize = 64;

/// Why a text is not a version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("the version is empty")]
    Empty,
    #[error("the version is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("the version must start with a letter or a digit")]
    BadStart,
    #[error("the version may hold only ASCII letters, digits and . _ + ~ - (found {0:?})")]
    BadChar(char),
}

/// A version is 1 to [`MAX_LEN`] ASCII letters, digits, `.`, `_`, `+`, `~` or `-`, starting
/// with a letter or a digit: Debian-style versions (`1.0.0-rc1`, `2+deb12u1`, `1.0~beta`) fit,
/// and no version can hold a `/`, a space or a character FAT refuses.
pub fn check(version: &str) -> Result<(), VersionError> {
    let first = version.chars().next().ok_or(VersionError::Empty)?;
    if version.len() > MAX_LEN {
        return Err(VersionError::TooLong);
    }
    if !first.is_ascii_alphanumeric() {
        return Err(VersionError::BadStart);
    }
    match version
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._+~-".contains(*c)))
    {
        Some(c) => Err(VersionError::BadChar(c)),
        None => Ok(()),
    }
}

/// Whether [`check`] accepts `version`.
pub fn is_valid(version: &str) -> bool {
    check(version).is_ok()
}

/// Compares versions part by part: runs of digits as numbers, runs of letters as text (other
/// characters only separate), a number above text. When one runs out, a further number makes
/// the other newer (`1.0.1 > 1.0`) and further text older (`1.0.0-rc1 < 1.0.0`).
pub fn compare(a: &str, b: &str) -> Ordering {
    let (pa, pb) = (tokens(a), tokens(b));
    for i in 0..pa.len().max(pb.len()) {
        let ord = match (pa.get(i), pb.get(i)) {
            (Some(Token::Num(x)), Some(Token::Num(y))) => x.cmp(y),
            (Some(Token::Num(_)), Some(Token::Text(_))) => Ordering::Greater,
            (Some(Token::Text(_)), Some(Token::Num(_))) => Ordering::Less,
            (Some(Token::Text(x)), Some(Token::Text(y))) => x.cmp(y),
            (Some(Token::Num(_)), None) | (None, Some(Token::Text(_))) => Ordering::Greater,
            (Some(Token::Text(_)), None) | (None, Some(Token::Num(_))) => Ordering::Less,
            (None, None) => Ordering::Equal,
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    Num(u128),
    Text(&'a str),
}

fn tokens(s: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        if bytes[i].is_ascii_digit() {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            // Absurdly long numbers saturate rather than fail.
            out.push(Token::Num(s[start..i].parse().unwrap_or(u128::MAX)));
        } else if bytes[i].is_ascii_alphabetic() {
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            out.push(Token::Text(&s[start..i]));
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        for ok in [
            "1",
            "1.0.0",
            "2.0.0-rc1",
            "1.0+b5",
            "1.0~beta",
            "v2",
            "unknown",
            "1_2",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        assert_eq!(check(""), Err(VersionError::Empty));
        assert_eq!(check(&"1".repeat(65)), Err(VersionError::TooLong));
        assert!(check(&"1".repeat(64)).is_ok());
        assert_eq!(check("-1"), Err(VersionError::BadStart));
        assert_eq!(check(".1"), Err(VersionError::BadStart));
        assert_eq!(check("1 0"), Err(VersionError::BadChar(' ')));
        assert_eq!(check("1/0"), Err(VersionError::BadChar('/')));
        assert_eq!(check("1.0é"), Err(VersionError::BadChar('é')));
        assert_eq!(check("1:2"), Err(VersionError::BadChar(':')));
    }

    #[test]
    fn order() {
        use Ordering::*;
        for (a, b, o) in [
            ("1.0.1", "1.0", Greater),
            ("1.0.0-rc1", "1.0.0", Less),
            ("1.0.0", "1.0.0-1", Less),
            ("1.10", "1.9", Greater),
            ("1.0", "1.0", Equal),
            ("1.a", "1.1", Less),
            ("1.0.10", "1.0.9", Greater),
            ("2", "1.9.9", Greater),
            ("1.0.0+1", "1.0.0", Greater),
            ("1.0.0-rc2", "1.0.0-rc10", Less),
            ("2024.05", "2024.11", Less),
            ("1.01", "1.1", Equal),
            ("1.0-2", "1.0-rc", Greater),
            ("99999999999999999999999", "9", Greater),
            ("b", "a", Greater),
        ] {
            assert_eq!(compare(a, b), o, "{a} vs {b}");
            assert_eq!(compare(b, a), o.reverse(), "{b} vs {a}");
        }
    }
}
