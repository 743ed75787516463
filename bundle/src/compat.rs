//! Whether a verified bundle may be installed on this device: pure checks, every problem
//! reported, before a byte is written.

use std::cmp::Ordering;

use crate::format::{Manifest, PayloadKind};

/// What the device is.
#[derive(Debug, Clone)]
pub struct Device<'a> {
    /// Image name of the running slot.
    pub name: &'a str,
    pub arch: &'a str,
    /// Image version of the running slot.
    pub version: &'a str,
    pub agent_version: &'a str,
    /// Size of the slot partition the bundle would go to.
    pub slot_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downgrade {
    Refuse,
    Allow,
}

/// Every reason not to install `m` (empty: go ahead).
pub fn problems(m: &Manifest, device: &Device, downgrade: Downgrade) -> Vec<String> {
    let mut out = Vec::new();
    if m.arch != device.arch {
        out.push(format!(
            "the bundle is for {}, this device is {}",
            m.arch, device.arch
        ));
    }
    if !m.compatible.iter().any(|c| c == device.name) {
        out.push(format!(
            "the bundle is for images {}, this device runs `{}`",
            m.compatible
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", "),
            device.name
        ));
    }
    if compare_versions(device.agent_version, &m.min_agent_version) == Ordering::Less {
        out.push(format!(
            "the bundle needs agent {} or newer, this one is {}",
            m.min_agent_version, device.agent_version
        ));
    }
    if let Some(root) = m.payload(PayloadKind::Rootfs) {
        if root.size > device.slot_bytes {
            out.push(format!(
                "the root filesystem ({} bytes) is larger than the slot ({} bytes)",
                root.size, device.slot_bytes
            ));
        }
    }
    if downgrade == Downgrade::Refuse
        && compare_versions(&m.version, device.version) != Ordering::Greater
    {
        out.push(format!(
            "version {} is not newer than the running {} (use --allow-downgrade to install it anyway)",
            m.version, device.version
        ));
    }
    out
}

/// Compares versions part by part: runs of digits as numbers, runs of letters as text (other
/// characters only separate), a number above text. When one runs out, a further number makes
/// the other newer (`1.0.1 > 1.0`) and further text older (`1.0.0-rc1 < 1.0.0`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
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
