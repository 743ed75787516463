//! `judge_console`: what a console-delivered document needs.

use super::*;

fn provisioned(digest: &str, serial: Option<u64>) -> Provisioning {
    Provisioning::Provisioned {
        digest: digest.into(),
        serial,
        from: SourceKind::Writable,
    }
}

fn signed(serial: u64) -> Signature {
    Signature::Valid {
        key_id: "k".into(),
        serial,
    }
}

#[test]
fn an_image_without_keys_trusts_its_console() {
    let p = provisioned("sha256:old", Some(4));
    assert_eq!(
        judge_console(&p, ConsoleTrust::Trusted, "sha256:new", &Signature::Absent),
        Verdict::Believe { serial: Some(4) }
    );
    assert_eq!(
        judge_console(
            &Provisioning::Unprovisioned,
            ConsoleTrust::Trusted,
            "sha256:new",
            &Signature::Absent
        ),
        Verdict::Believe { serial: None }
    );
}

#[test]
fn an_image_with_keys_takes_only_signed_documents_above_the_applied_serial() {
    let p = provisioned("sha256:old", Some(4));
    let t = ConsoleTrust::SignedOnly;
    assert_eq!(
        judge_console(&p, t, "sha256:new", &Signature::Absent),
        Verdict::Ignore(Refusal::ConsoleUnsigned)
    );
    assert_eq!(
        judge_console(
            &Provisioning::Unprovisioned,
            t,
            "sha256:new",
            &Signature::Absent
        ),
        Verdict::Ignore(Refusal::ConsoleUnsigned)
    );
    assert_eq!(
        judge_console(&p, t, "sha256:new", &signed(5)),
        Verdict::Believe { serial: Some(5) }
    );
    assert_eq!(
        judge_console(&p, t, "sha256:new", &signed(4)),
        Verdict::Ignore(Refusal::Replayed {
            serial: 4,
            applied: 4
        })
    );
    // The applied document itself changes nothing.
    assert_eq!(
        judge_console(&p, t, "sha256:old", &Signature::Absent),
        Verdict::Believe { serial: Some(4) }
    );
}

#[test]
fn a_signature_that_does_not_hold_is_refused_everywhere() {
    for t in [ConsoleTrust::Trusted, ConsoleTrust::SignedOnly] {
        let v = judge_console(
            &Provisioning::Unprovisioned,
            t,
            "sha256:x",
            &Signature::Invalid("unknown key".into()),
        );
        assert!(
            matches!(v, Verdict::Ignore(Refusal::BadSignature(_))),
            "{v:?}"
        );
    }
    assert!(Refusal::ConsoleUnsigned
        .to_string()
        .contains("p6os config sign"));
}
