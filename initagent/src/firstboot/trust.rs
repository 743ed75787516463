//! Which configuration documents a device believes. Pure.
//!
//! A configuration drive, the ESP's `/p6os/unattended.yaml` and a `p6os.config=` file can be
//! written by whoever holds a USB stick, the disk, or a workload able to label a block device.
//! So they configure a device only while it is unprovisioned (no `applied.json` yet); after
//! that only when signed (`<document>.sig`, `p6os config sign`) with a configuration key the
//! image trusts (`p6os_layout::slot::CONFIG_KEYS_DIR`), under a serial above the applied
//! one. The image's own default (in the read-only, signed slot) is always believed.
//! A document byte-identical to the applied one is believed too: it changes nothing the
//! device did not already accept (it is rendered again when the slot's files change).

use std::fmt;

/// Where a document was found, as far as trust goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A configuration drive, the ESP, or a `p6os.config=` file: writable from outside.
    Writable,
    /// The default baked into the slot (covered by the bundle's signature).
    Image,
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
    Replayed { serial: u64, applied: u64 },
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
        (SourceKind::Image, _) | (SourceKind::Writable, Provisioning::Unprovisioned) => {
            keep(signed)
        }
        (
            SourceKind::Writable,
            Provisioning::Provisioned {
                digest: applied, ..
            },
        ) if applied == digest => keep(None),
        (SourceKind::Writable, Provisioning::Provisioned { .. }) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    const APPLIED: &str = "sha256:applied";
    const OTHER: &str = "sha256:other";

    fn provisioned(serial: Option<u64>) -> Provisioning {
        Provisioning::Provisioned {
            digest: APPLIED.into(),
            serial,
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
            judge(&provisioned(Some(4)), Image, OTHER, &Signature::Absent),
            Verdict::Believe { serial: Some(4) }
        );
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
    }
}
