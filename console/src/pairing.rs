//! Pairing decisions, pure: which device key an appliance id is bound to, what a pairing
//! request with a proven key does, what an operator's approval does, and the stateless
//! challenges devices sign.
//!
//! The fleet's pairing token is in every site's unattended.yaml, so it is treated as public: it
//! only lets a device *ask*. An id is bound to one device key (ed25519, made by the device);
//! a key gets an id only by an operator's word (a fingerprint registered or approved), or, for
//! ids registered with the `first-key` policy, by being the first to ask. A paired device that
//! lost its token proves its key and gets a new one; no other key ever does without an operator.
//! Every answer that does not pair is the same `pending` (202), whether the id exists or not.

use hmac::{Hmac, Mac};
use p6os_protocol::{PairingPolicy, Status};
use sha2::Sha256;

/// How long a challenge can be answered.
pub const CHALLENGE_SECS: u64 = 300;
const CHALLENGE_MS: u64 = CHALLENGE_SECS * 1000;
/// A pending id older than this is dropped when the pending list is full and another asks.
pub const PENDING_MAX_AGE_SECS: u64 = 86_400;
/// Tag of the MAC input: no other use of the secret can produce a valid challenge.
/// v2: the time is in milliseconds.
const CHALLENGE_CONTEXT: &[u8] = b"p6os-pair-challenge-v2\n";

/// What the pairing decision needs to know of an existing appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub status: Status,
    /// The fingerprint the id is bound to (registered, approved, or of its first key).
    pub bound: Option<String>,
    /// A key that asked and waits for approval.
    pub requested: Option<String>,
    pub policy: PairingPolicy,
}

/// What a pairing request with a proven key (`fingerprint`) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairAction {
    /// Unknown id: stored as pending with the key as its requested one (if the pending list
    /// has room).
    StorePending,
    /// Not for this key yet: the key is recorded as the requested one for the operator to
    /// approve; an event when it is a key the console had not seen asking.
    AwaitApproval { new_key: bool },
    /// Bind the key (if it was not), new device token: ready.
    Pair,
    /// Paired with this very key: the device lost its token (wiped, or a proxy refused it
    /// once); a new token replaces the old one.
    ReissueToken,
}

pub fn pair_action(existing: Option<&Binding>, fingerprint: &str) -> PairAction {
    let Some(b) = existing else {
        return PairAction::StorePending;
    };
    let bound_here = b.bound.as_deref() == Some(fingerprint);
    let wait = PairAction::AwaitApproval {
        new_key: b.requested.as_deref() != Some(fingerprint),
    };
    match (b.status, &b.bound) {
        (Status::Pending, _) => wait,
        (Status::Unpaired, Some(_)) if bound_here => PairAction::Pair,
        (Status::Unpaired, None) if b.policy == PairingPolicy::FirstKey => PairAction::Pair,
        (Status::Unpaired, _) => wait,
        (Status::Ready, Some(_)) if bound_here => PairAction::ReissueToken,
        // Another key for a paired id, or an id paired before keys existed: an operator
        // decides (`approve`).
        (Status::Ready, _) => wait,
    }
}

/// What an operator's approval of `fingerprint` does to an appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApproveAction {
    /// Registered (if it was pending) and bound to the key: the device pairs at its next try.
    Bind,
    /// Paired with this key already: nothing changes.
    AlreadyBound,
    /// Paired with another key (a replaced device): bound to the new key, back to unpaired,
    /// the old device token stops working.
    Rebind,
}

pub fn approve_action(existing: &Binding, fingerprint: &str) -> ApproveAction {
    match existing.status {
        Status::Ready if existing.bound.as_deref() == Some(fingerprint) => {
            ApproveAction::AlreadyBound
        }
        Status::Ready => ApproveAction::Rebind,
        Status::Pending | Status::Unpaired => ApproveAction::Bind,
    }
}

/// Whether a proof over a challenge issued at `issued_ms` may issue a device token, when the
/// last one issued for the id answered a challenge of `last_ms`: only a newer challenge, so a
/// captured proof is not replayed within the challenge's validity.
pub fn challenge_is_new(issued_ms: u64, last_ms: Option<u64>) -> bool {
    last_ms.is_none_or(|last| issued_ms > last)
}

/// Challenges: `<unix ms>.<hex of HMAC-SHA256(secret, context, id, key, ms)>`. The console
/// keeps nothing per challenge (an unauthenticated request stores nothing), and any console
/// holding the same secret checks it; the issue time of the last one that got a token is
/// kept per appliance ([`challenge_is_new`]).
pub struct Challenges {
    secret: [u8; 32],
}

impl Challenges {
    pub fn new(secret: [u8; 32]) -> Challenges {
        Challenges { secret }
    }

    fn mac(&self, id: &str, key: &str, at: u64) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        for part in [
            CHALLENGE_CONTEXT,
            id.as_bytes(),
            b"\n",
            key.as_bytes(),
            b"\n",
        ] {
            mac.update(part);
        }
        mac.update(at.to_string().as_bytes());
        mac
    }

    /// A challenge for `id` and `key`, issued at `now_ms` (Unix milliseconds).
    pub fn make(&self, id: &str, key: &str, now_ms: u64) -> String {
        let tag = self.mac(id, key, now_ms).finalize().into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        format!("{now_ms}.{hex}")
    }

    /// When `challenge` was issued (Unix ms), if this console made it for this id and key
    /// at most [`CHALLENGE_SECS`] before `now_ms` (and not in the future).
    pub fn check(&self, challenge: &str, id: &str, key: &str, now_ms: u64) -> Option<u64> {
        let (at, hex) = challenge.split_once('.')?;
        let at = at.parse::<u64>().ok()?;
        if at > now_ms || now_ms - at > CHALLENGE_MS || hex.len() != 64 {
            return None;
        }
        let tag = (0..32)
            .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        // Constant-time comparison.
        self.mac(id, key, at).verify_slice(&tag).ok().map(|()| at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "SHA256:one";
    const K2: &str = "SHA256:two";

    fn binding(status: Status, bound: Option<&str>, policy: PairingPolicy) -> Binding {
        Binding {
            status,
            bound: bound.map(String::from),
            requested: None,
            policy,
        }
    }

    /// Every combination of status, bound key, requested key and policy, against the rule:
    /// a key pairs only where it is the bound one, or where the operator chose `first-key`
    /// for an unpaired id bound to nothing.
    #[test]
    fn pairing_every_combination() {
        use PairAction::*;
        assert_eq!(pair_action(None, K1), StorePending);
        for status in [Status::Pending, Status::Unpaired, Status::Ready] {
            for bound in [None, Some(K1), Some(K2)] {
                for requested in [None, Some(K1), Some(K2)] {
                    for policy in [PairingPolicy::Approve, PairingPolicy::FirstKey] {
                        let b = Binding {
                            requested: requested.map(String::from),
                            ..binding(status, bound, policy)
                        };
                        let got = pair_action(Some(&b), K1);
                        let wait = AwaitApproval {
                            new_key: requested != Some(K1),
                        };
                        let want = match (status, bound, policy) {
                            (Status::Pending, _, _) => wait,
                            (Status::Unpaired, Some(K1), _) => Pair,
                            (Status::Unpaired, None, PairingPolicy::FirstKey) => Pair,
                            (Status::Unpaired, _, _) => wait,
                            (Status::Ready, Some(K1), _) => ReissueToken,
                            (Status::Ready, _, _) => wait,
                        };
                        assert_eq!(got, want, "{b:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn approving() {
        for policy in [PairingPolicy::Approve, PairingPolicy::FirstKey] {
            for bound in [None, Some(K1), Some(K2)] {
                for status in [Status::Pending, Status::Unpaired] {
                    let b = binding(status, bound, policy);
                    assert_eq!(approve_action(&b, K1), ApproveAction::Bind);
                }
            }
            let ready = |bound| binding(Status::Ready, bound, policy);
            assert_eq!(
                approve_action(&ready(Some(K1)), K1),
                ApproveAction::AlreadyBound
            );
            assert_eq!(approve_action(&ready(Some(K2)), K1), ApproveAction::Rebind);
            assert_eq!(approve_action(&ready(None), K1), ApproveAction::Rebind);
        }
    }

    #[test]
    fn challenges_are_bound_to_id_key_and_time() {
        let c = Challenges::new([1; 32]);
        let t = 1_700_000_000_123;
        let made = c.make("store-12", "KEY", t);
        assert!(made.starts_with("1700000000123."), "milliseconds: {made}");
        assert_eq!(c.check(&made, "store-12", "KEY", t), Some(t));
        assert_eq!(c.check(&made, "store-12", "KEY", t + CHALLENGE_MS), Some(t));
        assert_eq!(
            c.check(&made, "store-12", "KEY", t + 1 + CHALLENGE_MS),
            None
        );
        assert_eq!(c.check(&made, "store-12", "KEY", t - 1), None, "future");
        assert_eq!(c.check(&made, "store-13", "KEY", t), None);
        assert_eq!(c.check(&made, "store-12", "KEY2", t), None);
        assert_eq!(
            Challenges::new([2; 32]).check(&made, "store-12", "KEY", t),
            None
        );
        let (_, tag) = made.split_once('.').unwrap();
        assert_eq!(
            c.check(&format!("{}.{tag}", t - 1), "store-12", "KEY", t),
            None
        );
        for bad in ["", ".", "1000.", "x.y", "1000.zz", &made[..made.len() - 1]] {
            assert_eq!(c.check(bad, "store-12", "KEY", t), None, "{bad}");
        }
    }

    #[test]
    fn only_a_newer_challenge_gets_a_token() {
        assert!(challenge_is_new(5, None));
        assert!(challenge_is_new(6, Some(5)));
        assert!(!challenge_is_new(5, Some(5)), "the same challenge again");
        assert!(!challenge_is_new(4, Some(5)));
    }
}
