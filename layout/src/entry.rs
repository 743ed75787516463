//! Boot entry file names: `p6os-<version>-<slot>[+LEFT[-DONE]].conf` under `/loader/entries/`.
//!
//! systemd-boot 252 renames an entry `+L-D` to `+(L-1)-(D+1)` before each boot of it; at `+0-D`
//! it is bad and sorts last. Blessing drops the counter. Like systemd-boot, a `+...` tail that is
//! not `digits[-digits]` is no counter: it is then part of the version and the slot (and the slot
//! does not parse). The slot is split off at the last `-` before the counter, so versions may hold
//! dashes and `+` (`p6os-1.0+b5-a.conf` is version `1.0+b5`, slot a, blessed).

use crate::slot::Slot;
use crate::version;

/// Boot entry file names start with this.
pub const ENTRY_PREFIX: &str = "p6os-";
/// Boot entry file names end with this.
pub const ENTRY_SUFFIX: &str = ".conf";

/// Boot counting state carried in an entry's file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// No counter: a factory or blessed entry. The loader never renames it.
    Blessed,
    /// `+LEFT-DONE`: on trial. The loader decrements `left` (and increments `done`) before
    /// each boot of the entry.
    Trial { left: u32, done: u32 },
}

impl Counter {
    /// `+0-D`: no tries left. The loader sorts it last (it still boots it if nothing else is
    /// there).
    pub fn is_bad(&self) -> bool {
        matches!(self, Counter::Trial { left: 0, .. })
    }

    pub fn is_blessed(&self) -> bool {
        matches!(self, Counter::Blessed)
    }
}

/// An entry's identity as its file name encodes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryName {
    pub version: String,
    pub slot: Slot,
    pub counter: Counter,
}

impl EntryName {
    pub fn new(version: &str, slot: Slot, counter: Counter) -> EntryName {
        EntryName {
            version: version.to_string(),
            slot,
            counter,
        }
    }

    /// Parses a file name; `None` for files that are not p6os entries: an empty version, a
    /// version the [`version`] rule refuses, a slot other than `a`/`b`, or a counter that
    /// overflows.
    pub fn parse(file: &str) -> Option<EntryName> {
        let stem = file
            .strip_prefix(ENTRY_PREFIX)?
            .strip_suffix(ENTRY_SUFFIX)?;
        let (body, counter) = match stem.rsplit_once('+') {
            Some((body, tail)) => match parse_counter(tail) {
                Some(counter) => (body, counter),
                None => (stem, Counter::Blessed),
            },
            None => (stem, Counter::Blessed),
        };
        let (version, slot) = body.rsplit_once('-')?;
        let slot = Slot::parse(slot)?;
        version::check(version).ok()?;
        Some(EntryName::new(version, slot, counter))
    }

    /// The file name: the inverse of [`EntryName::parse`]. A trial is written `+L` while
    /// `done` is 0, else `+L-D` (as the loader renames it).
    pub fn file_name(&self) -> String {
        let EntryName { version, slot, .. } = self;
        match self.counter {
            Counter::Blessed => format!("{ENTRY_PREFIX}{version}-{slot}{ENTRY_SUFFIX}"),
            Counter::Trial { left, done: 0 } => {
                format!("{ENTRY_PREFIX}{version}-{slot}+{left}{ENTRY_SUFFIX}")
            }
            Counter::Trial { left, done } => {
                format!("{ENTRY_PREFIX}{version}-{slot}+{left}-{done}{ENTRY_SUFFIX}")
            }
        }
    }
}

fn parse_counter(tail: &str) -> Option<Counter> {
    let (left, done) = match tail.split_once('-') {
        Some((left, done)) => (left, parse_digits(done)?),
        None => (tail, 0),
    };
    Some(Counter::Trial {
        left: parse_digits(left)?,
        done,
    })
}

fn parse_digits(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The sort position of a BLS `version` field: its leading decimal integer (`1.0.0` -> 1,
/// `7` -> 7); 0 without leading digits, `u64::MAX` when the digits overflow. New entries get a
/// plain integer higher than every existing one, so systemd-boot's own comparison
/// (`strverscmp`) and this one agree on which boots first.
pub fn sort_version_of(bls_version: &str) -> u64 {
    let text = bls_version.trim_start();
    let end = text
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(text.len());
    let digits = &text[..end];
    if digits.is_empty() {
        0
    } else {
        digits.parse().unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters() {
        assert!(Counter::Trial { left: 0, done: 3 }.is_bad());
        assert!(!Counter::Trial { left: 1, done: 2 }.is_bad());
        assert!(Counter::Blessed.is_blessed());
    }

    #[test]
    fn sort_versions() {
        assert_eq!(sort_version_of("1.0.0"), 1);
        assert_eq!(sort_version_of(" 7"), 7);
        assert_eq!(sort_version_of("x"), 0);
        assert_eq!(sort_version_of("99999999999999999999999"), u64::MAX);
    }
}
