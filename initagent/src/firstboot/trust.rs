//! Which configuration documents a device believes, and which one it applies. Pure.
//!
//! A configuration drive, the ESP's `/p6os/unattended.yaml` and a `p6os.config=` file can be
//! written by whoever holds a USB stick, the disk, or a workload able to label a block device.
//! So they configure a device only while it is unprovisioned (no `applied.json` yet); after
//! that only when signed (`<document>.sig`, `p6os config sign`) with a configuration key the
//! image trusts (`p6os_layout::slot::CONFIG_KEYS_DIR`), under a serial above the applied
//! one. A document byte-identical to the applied one is believed too: it changes nothing the
//! device did not already accept (it is rendered again when the slot's files change).
//!
//! The image's own default (in the read-only, signed slot) configures a new device, and a
//! device whose applied configuration came from the image's default (a new slot may bring a
//! new default). Once a device applied a document from outside the image, the default never
//! replaces it: when every document found is ignored or absent, the applied configuration
//! stays ([`Choice::KeepApplied`]). Otherwise removing a signed stick (its update applied)
//! and leaving an older unsigned ESP copy would let the image's default undo the update.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a document was found, as far as trust goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A configuration drive, the ESP, or a `p6os.config=` file: writable from outside.
    Writable,
    /// The default baked into the slot (covered by the bundle's signature).
    Image,
    /// Set by the operator on the console and staged by the agent ([`judge_console`]).
    Console,
}

/// What the device has applied before (`applied.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioning {
    Unprovisioned,
    Provisioned {
        /// `sha256:` of the applied document's bytes.
        digest: String,
        /// The serial of the newest signed document applied, if any.
        serial: Option<u64>,
        /// Where the applied document came from (`Writable` when the record does not say and
        /// cannot be read: the image's default then never replaces it).
        from: SourceKind,
    },
}

/// The document's detached signature, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    Absent,
    Valid {
        key_id: String,
        serial: u64,
    },
    /// Present but not good: malformed, an untrusted key, or not over these bytes.
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Validate and apply it; record `serial` (the newest signed serial) with it.
    Believe { serial: Option<u64> },
    /// Ignore the document, as if it were absent.
    Ignore(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    BadSignature(String),
    Unsigned,
    Replayed {
        serial: u64,
        applied: u64,
    },
    /// The image's default, on a device configured from outside the image.
    ImageDefaultBelowApplied,
    /// A console's document, unsigned, on an image that names configuration keys.
    ConsoleUnsigned,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BadSignature(why) => write!(f, "its signature is not good: {why}"),
            Refusal::Unsigned => write!(
                f,
                "the device is provisioned and the document is not signed (sign it with `p6os config sign` and a configuration key the image trusts)"
            ),
            Refusal::Replayed { serial, applied } => write!(
                f,
                "its serial {serial} is not above the applied serial {applied} (an old document replayed?)"
            ),
            Refusal::ConsoleUnsigned => write!(
                f,
                "the image names configuration keys and the console's document is not signed \
                 (upload it with the .sig of `p6os config sign`)"
            ),
            Refusal::ImageDefaultBelowApplied => write!(
                f,
                "the applied configuration came from outside the image and the image's default never replaces it (sign a new document to change it)"
            ),
        }
    }
}

/// The decision for a document with `digest` found in a source of `kind`.
pub fn judge(
    provisioning: &Provisioning,
    kind: SourceKind,
    digest: &str,
    signature: &Signature,
) -> Verdict {
    let applied_serial = match provisioning {
        Provisioning::Unprovisioned => None,
        Provisioning::Provisioned { serial, .. } => *serial,
    };
    if let Signature::Invalid(why) = signature {
        // A signature that does not hold is never ignored silently, not even on a new device.
        return Verdict::Ignore(Refusal::BadSignature(why.clone()));
    }
    let signed = match signature {
        Signature::Valid { serial, .. } => Some(*serial),
        _ => None,
    };
    let keep = |new: Option<u64>| Verdict::Believe {
        serial: new.max(applied_serial),
    };
    match (kind, provisioning) {
        (_, Provisioning::Unprovisioned)
        | (
            SourceKind::Image,
            Provisioning::Provisioned {
                from: SourceKind::Image,
                ..
            },
        ) => keep(signed),
        (SourceKind::Image, Provisioning::Provisioned { .. }) => {
            Verdict::Ignore(Refusal::ImageDefaultBelowApplied)
        }
        (
            SourceKind::Writable | SourceKind::Console,
            Provisioning::Provisioned {
                digest: applied, ..
            },
        ) if applied == digest => keep(None),
        (SourceKind::Writable | SourceKind::Console, Provisioning::Provisioned { .. }) => {
            match (signed, applied_serial) {
                (None, _) => Verdict::Ignore(Refusal::Unsigned),
                (Some(serial), Some(applied)) if serial <= applied => {
                    Verdict::Ignore(Refusal::Replayed { serial, applied })
                }
                (Some(serial), _) => keep(Some(serial)),
            }
        }
    }
}

/// Whether the image lets its console configure it unsigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleTrust {
    /// The image names no configuration keys: the console (which the device reaches over
    /// TLS with its token, and which the image's `console` section named) is trusted.
    Trusted,
    /// The image names `upgrades.config_keys`: a console's document must be signed by one of
    /// them, under a serial above the applied one, so a compromised console cannot add a
    /// user.
    SignedOnly,
}

/// The decision for a document the console delivered (staged by the agent). A signature
/// that is present must hold, as for every source.
pub fn judge_console(
    provisioning: &Provisioning,
    trust: ConsoleTrust,
    digest: &str,
    signature: &Signature,
) -> Verdict {
    let applied_serial = match provisioning {
        Provisioning::Unprovisioned => None,
        Provisioning::Provisioned { serial, .. } => *serial,
    };
    match (trust, signature) {
        (_, Signature::Invalid(why)) => Verdict::Ignore(Refusal::BadSignature(why.clone())),
        (ConsoleTrust::Trusted, Signature::Absent) => Verdict::Believe {
            serial: applied_serial,
        },
        (ConsoleTrust::SignedOnly, Signature::Absent) => match provisioning {
            Provisioning::Provisioned { digest: d, .. } if d == digest => Verdict::Believe {
                serial: applied_serial,
            },
            _ => Verdict::Ignore(Refusal::ConsoleUnsigned),
        },
        (_, Signature::Valid { .. }) => judge(provisioning, SourceKind::Console, digest, signature),
    }
}

/// A document found, judged by [`choose`]; `item` is the caller's (where, the bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<T> {
    pub item: T,
    pub kind: SourceKind,
    /// `sha256:` of the document's bytes.
    pub digest: String,
    pub signature: Signature,
}

/// What this boot does with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice<T> {
    /// Validate and apply this document; record `serial` with it.
    Apply {
        candidate: Candidate<T>,
        serial: Option<u64>,
    },
    /// A provisioned device found nothing it believes: the applied configuration stays.
    KeepApplied,
    /// A new device found no document.
    Nothing,
}

/// The first candidate believed, in the contract's order (the iterator may read lazily: it is
/// not pulled past the one chosen). `ignored` hears each candidate refused, with why.
pub fn choose<T>(
    provisioning: &Provisioning,
    candidates: impl IntoIterator<Item = Candidate<T>>,
    mut ignored: impl FnMut(&Candidate<T>, &Refusal),
) -> Choice<T> {
    for candidate in candidates {
        match judge(
            provisioning,
            candidate.kind,
            &candidate.digest,
            &candidate.signature,
        ) {
            Verdict::Believe { serial } => return Choice::Apply { candidate, serial },
            Verdict::Ignore(why) => ignored(&candidate, &why),
        }
    }
    match provisioning {
        Provisioning::Unprovisioned => Choice::Nothing,
        Provisioning::Provisioned { .. } => Choice::KeepApplied,
    }
}

#[cfg(test)]
#[path = "trust_console_tests.rs"]
mod console_tests;

#[cfg(test)]
mod tests {
    use super::*;

    const APPLIED: &str = "sha256:applied";
    const OTHER: &str = "sha256:other";

    fn provisioned(serial: Option<u64>) -> Provisioning {
        provisioned_from(serial, SourceKind::Writable)
    }

    fn provisioned_from(serial: Option<u64>, from: SourceKind) -> Provisioning {
        Provisioning::Provisioned {
            digest: APPLIED.into(),
            serial,
            from,
        }
    }

    fn valid(serial: u64) -> Signature {
        Signature::Valid {
            key_id: "0011223344556677".into(),
            serial,
        }
    }

    fn bad() -> Signature {
        Signature::Invalid("the signature does not match the document".into())
    }

    use SourceKind::{Image, Writable};

    #[test]
    fn unprovisioned_device_believes_any_good_or_absent_signature() {
        let new = Provisioning::Unprovisioned;
        for kind in [Writable, Image] {
            assert_eq!(
                judge(&new, kind, OTHER, &Signature::Absent),
                Verdict::Believe { serial: None }
            );
            assert_eq!(
                judge(&new, kind, OTHER, &valid(3)),
                Verdict::Believe { serial: Some(3) }
            );
        }
    }

    #[test]
    fn provisioned_device_ignores_an_unsigned_drive() {
        for serial in [None, Some(4)] {
            assert_eq!(
                judge(&provisioned(serial), Writable, OTHER, &Signature::Absent),
                Verdict::Ignore(Refusal::Unsigned)
            );
        }
    }

    #[test]
    fn a_bad_signature_is_ignored_everywhere_it_is_found() {
        for p in [Provisioning::Unprovisioned, provisioned(Some(1))] {
            for kind in [Writable, Image] {
                for digest in [APPLIED, OTHER] {
                    assert!(matches!(
                        judge(&p, kind, digest, &bad()),
                        Verdict::Ignore(Refusal::BadSignature(_))
                    ));
                }
            }
        }
    }

    #[test]
    fn provisioned_device_believes_a_signed_document_with_a_higher_serial() {
        assert_eq!(
            judge(&provisioned(None), Writable, OTHER, &valid(0)),
            Verdict::Believe { serial: Some(0) }
        );
        assert_eq!(
            judge(&provisioned(Some(4)), Writable, OTHER, &valid(5)),
            Verdict::Believe { serial: Some(5) }
        );
    }

    #[test]
    fn an_old_or_equal_serial_is_a_replay() {
        for serial in [3, 4] {
            assert_eq!(
                judge(&provisioned(Some(4)), Writable, OTHER, &valid(serial)),
                Verdict::Ignore(Refusal::Replayed { serial, applied: 4 })
            );
        }
    }

    #[test]
    fn the_applied_document_itself_and_the_image_default_are_believed() {
        // The ESP copy the device was provisioned with, found again at every boot.
        assert_eq!(
            judge(&provisioned(Some(4)), Writable, APPLIED, &Signature::Absent),
            Verdict::Believe { serial: Some(4) }
        );
        assert_eq!(
            judge(&provisioned(Some(4)), Writable, APPLIED, &valid(4)),
            Verdict::Believe { serial: Some(4) }
        );
        // The slot's default never lowers the recorded serial.
        assert_eq!(
            judge(
                &provisioned_from(Some(4), Image),
                Image,
                OTHER,
                &Signature::Absent
            ),
            Verdict::Believe { serial: Some(4) }
        );
    }

    /// The kinds of document a boot can find, for the exhaustive test below.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Found {
        WritableUnsigned,
        WritableApplied,
        WritableSignedNewer,
        WritableSignedReplayed,
        WritableBadSignature,
        ImageDefault,
        ImageDefaultApplied,
    }

    const ALL_FOUND: [Found; 7] = [
        Found::WritableUnsigned,
        Found::WritableApplied,
        Found::WritableSignedNewer,
        Found::WritableSignedReplayed,
        Found::WritableBadSignature,
        Found::ImageDefault,
        Found::ImageDefaultApplied,
    ];

    fn candidate(found: Found) -> Candidate<Found> {
        let (kind, digest, signature) = match found {
            Found::WritableUnsigned => (Writable, OTHER, Signature::Absent),
            Found::WritableApplied => (Writable, APPLIED, Signature::Absent),
            Found::WritableSignedNewer => (Writable, OTHER, valid(5)),
            Found::WritableSignedReplayed => (Writable, OTHER, valid(4)),
            Found::WritableBadSignature => (Writable, OTHER, bad()),
            Found::ImageDefault => (Image, OTHER, Signature::Absent),
            Found::ImageDefaultApplied => (Image, APPLIED, Signature::Absent),
        };
        Candidate {
            item: found,
            kind,
            digest: digest.into(),
            signature,
        }
    }

    /// The rules, as a table: whether a device in state `p` believes a document.
    fn believed(p: &Provisioning, found: Found) -> bool {
        use Found::*;
        match p {
            Provisioning::Unprovisioned => found != WritableBadSignature,
            Provisioning::Provisioned { from, .. } => match found {
                WritableApplied | WritableSignedNewer => true,
                WritableUnsigned | WritableSignedReplayed | WritableBadSignature => false,
                ImageDefault | ImageDefaultApplied => *from == Image,
            },
        }
    }

    fn sequences(max: usize) -> Vec<Vec<Found>> {
        let mut all = vec![vec![]];
        let mut last = vec![vec![]];
        for _ in 0..max {
            let mut next = Vec::new();
            for seq in &last {
                for f in ALL_FOUND {
                    let mut s: Vec<Found> = seq.clone();
                    s.push(f);
                    next.push(s);
                }
            }
            all.extend(next.iter().cloned());
            last = next;
        }
        all
    }

    #[test]
    fn choose_over_every_state_origin_and_sequence_of_documents_found() {
        let states = [
            Provisioning::Unprovisioned,
            provisioned_from(Some(4), Writable),
            provisioned_from(Some(4), Image),
        ];
        for p in &states {
            for seq in sequences(3) {
                let mut refused = Vec::new();
                let mut pulled = 0;
                let got = choose(
                    p,
                    seq.iter().map(|f| {
                        pulled += 1;
                        candidate(*f)
                    }),
                    |c, _| refused.push(c.item),
                );
                let first = seq.iter().position(|f| believed(p, *f));
                let case = format!("{p:?} {seq:?}");
                match (first, p) {
                    (Some(i), _) => {
                        let Choice::Apply { candidate, .. } = &got else {
                            panic!("{case}: {got:?}")
                        };
                        assert_eq!(candidate.item, seq[i], "{case}");
                        assert_eq!(refused, seq[..i].to_vec(), "{case}");
                        assert_eq!(pulled, i + 1, "{case}: read past the chosen one");
                    }
                    (None, Provisioning::Unprovisioned) => {
                        assert_eq!(got, Choice::Nothing, "{case}");
                        assert_eq!(refused, seq, "{case}");
                    }
                    (None, Provisioning::Provisioned { .. }) => {
                        assert_eq!(got, Choice::KeepApplied, "{case}");
                        assert_eq!(refused, seq, "{case}");
                    }
                }
                if let (
                    Provisioning::Provisioned { from: Writable, .. },
                    Choice::Apply { candidate, .. },
                ) = (p, &got)
                {
                    assert_eq!(
                        candidate.kind, Writable,
                        "{case}: the image default replaced a configuration from outside"
                    );
                }
            }
        }
    }

    #[test]
    fn signed_update_stays_when_the_stick_is_gone_and_the_esp_copy_is_older() {
        // Provisioned from the ESP (v1), then a signed v2 from a stick was applied.
        let after_v2 = provisioned_from(Some(2), Writable);
        // Next boot: no stick; the ESP still holds the unsigned v1; the image has a default.
        let found = [Found::WritableUnsigned, Found::ImageDefault].map(candidate);
        let mut refused = Vec::new();
        let got = choose(&after_v2, found, |c, why| {
            refused.push((c.item, why.clone()))
        });
        assert_eq!(got, Choice::KeepApplied);
        assert_eq!(
            refused,
            vec![
                (Found::WritableUnsigned, Refusal::Unsigned),
                (Found::ImageDefault, Refusal::ImageDefaultBelowApplied),
            ]
        );
    }

    #[test]
    fn the_image_default_configures_a_new_device_and_one_it_configured_before() {
        let default = || [candidate(Found::ImageDefault)];
        for p in [
            Provisioning::Unprovisioned,
            provisioned_from(Some(4), Image),
        ] {
            assert!(
                matches!(choose(&p, default(), |_, _| {}), Choice::Apply { .. }),
                "{p:?}"
            );
        }
    }

    #[test]
    fn refusals_say_what_to_do() {
        let text = Refusal::Unsigned.to_string();
        assert!(text.contains("p6os config sign"), "{text}");
        let text = Refusal::Replayed {
            serial: 2,
            applied: 5,
        }
        .to_string();
        assert!(text.contains("serial 2") && text.contains("5"), "{text}");
        let text = Refusal::ImageDefaultBelowApplied.to_string();
        assert!(text.contains("sign"), "{text}");
    }
}
