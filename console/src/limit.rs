//! Rate limits for unauthenticated requests (pairing), pure and bounded: a token bucket per
//! key (a source address, an appliance id) in a map that never holds more than `max_keys`.
//!
//! Why not `governor`: its keyed limiter grows with every new key until someone calls
//! `retain_recent`, and a flood of new keys (random ids, IPv6 addresses) is exactly what this
//! must survive. Here a full map first drops the keys whose buckets have refilled (they are
//! worth nothing), at most once per refill period, and otherwise one arbitrary key: a flood of
//! new keys costs the flooder its own limits, never a newcomer's access.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A bucket's shape: `burst` requests at once, then one every `every_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub every_ms: u64,
}

impl Rate {
    /// Milliseconds for an empty bucket to fill up again.
    fn refill_ms(self) -> u64 {
        self.every_ms.saturating_mul(u64::from(self.burst))
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// When the bucket is full again (ms); each request pushes it by `every_ms`.
    full_at: u64,
}

/// Token buckets per key, at most `max_keys` of them.
#[derive(Debug)]
pub struct Limiter<K> {
    rate: Rate,
    max_keys: usize,
    buckets: HashMap<K, Bucket>,
    last_sweep: u64,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(rate: Rate, max_keys: usize) -> Limiter<K> {
        Limiter {
            rate,
            max_keys,
            buckets: HashMap::new(),
            last_sweep: 0,
        }
    }

    /// Whether a request for `key` at `now_ms` is allowed (and counts it if so).
    pub fn allow(&mut self, key: &K, now_ms: u64) -> bool {
        self.wait_ms(key, now_ms).is_none()
    }

    /// `None` if a request for `key` at `now_ms` is allowed (and counts it), else how many
    /// milliseconds until it would be.
    pub fn wait_ms(&mut self, key: &K, now_ms: u64) -> Option<u64> {
        let refill = self.rate.refill_ms();
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            // Full: drop the buckets that refilled (at most once per refill period), and if
            // that freed nothing, one arbitrary bucket. A full map never refuses a newcomer:
            // that would lock out the legitimate device that comes after a flood.
            if now_ms.saturating_sub(self.last_sweep) >= refill.max(1) {
                self.last_sweep = now_ms;
                self.buckets.retain(|_, b| b.full_at > now_ms);
            }
            if self.buckets.len() >= self.max_keys {
                if let Some(victim) = self.buckets.keys().next().cloned() {
                    self.buckets.remove(&victim);
                }
            }
        }
        let bucket = self
            .buckets
            .entry(key.clone())
            .or_insert(Bucket { full_at: 0 });
        // The bucket holds (refill - (full_at - now)) / every_ms tokens.
        let start = bucket.full_at.max(now_ms);
        let after = start - now_ms + self.rate.every_ms;
        if after > refill {
            return Some(after - refill);
        }
        bucket.full_at = start + self.rate.every_ms;
        None
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// The key of a source address: the address for IPv4, its /64 for IPv6 (one site or host gets
/// a whole /64, so counting single v6 addresses would count nothing).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
    }
}

/// At most one `true` every `every_ms`: for warnings a stranger could otherwise have the
/// console write as often as it asks.
#[derive(Debug, Clone, Copy)]
pub struct Throttle {
    every_ms: u64,
    last: Option<u64>,
}

impl Throttle {
    pub fn new(every_ms: u64) -> Throttle {
        Throttle {
            every_ms,
            last: None,
        }
    }

    /// Whether the throttled thing may happen at `now_ms` (and counts it if so).
    pub fn due(&mut self, now_ms: u64) -> bool {
        if self
            .last
            .is_some_and(|last| now_ms.saturating_sub(last) < self.every_ms)
        {
            return false;
        }
        self.last = Some(now_ms);
        true
    }
}

/// How often the console warns that the pending list is full.
pub const PENDING_FULL_WARNING_MS: u64 = 60_000;

/// Whether a pairing request for an id came within the id's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRate {
    Within,
    Exceeded,
}

/// Pairing requests per source (all of them, before anything is parsed) and per id (those with
/// a valid proof). Shared by the handlers; each lock is held for one map operation.
pub struct PairLimits {
    source: Mutex<Limiter<IpAddr>>,
    id: Mutex<Limiter<String>>,
    pending_full: Mutex<Throttle>,
    start: Instant,
}

/// A source's default: 10 requests a second (`serve --pairing-rate`), two per pairing attempt
/// (challenge, proof).
pub const DEFAULT_PAIRING_RATE: u32 = 10;

/// A source: `per_second` requests a second after a burst of six seconds' worth (a site behind
/// one address, a console restart).
pub fn per_source(per_second: u32) -> Rate {
    let per_second = per_second.max(1);
    Rate {
        burst: per_second.saturating_mul(6),
        every_ms: (1000 / u64::from(per_second)).max(1),
    }
}
/// An id: 10 proven requests at once, then one every 6 seconds, or twice as often as a
/// pending device is told to ask again (`--pending-retry-secs`), whichever is more.
pub fn per_id(pending_retry_secs: u32) -> Rate {
    Rate {
        burst: 10,
        every_ms: (u64::from(pending_retry_secs) * 500).clamp(100, 6_000),
    }
}
/// Most sources and ids tracked at once.
pub const MAX_TRACKED: usize = 100_000;

impl PairLimits {
    /// `per_second` pairing requests a second per source (see [`per_source`]); per id, see
    /// [`per_id`].
    pub fn new(per_second: u32, pending_retry_secs: u32) -> PairLimits {
        PairLimits {
            source: Mutex::new(Limiter::new(per_source(per_second), MAX_TRACKED)),
            id: Mutex::new(Limiter::new(per_id(pending_retry_secs), MAX_TRACKED)),
            pending_full: Mutex::new(Throttle::new(PENDING_FULL_WARNING_MS)),
            start: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// `None` if a pairing request from `ip` is allowed (and counts it), else how long until
    /// it would be.
    pub fn source_wait(&self, ip: IpAddr) -> Option<Duration> {
        let now = self.now_ms();
        match self.source.lock() {
            Ok(mut l) => l.wait_ms(&source_key(ip), now).map(Duration::from_millis),
            Err(_) => Some(Duration::from_secs(1)),
        }
    }

    /// Whether to warn now that the pending list is full (at most once a minute).
    pub fn pending_full_warning_due(&self) -> bool {
        let now = self.now_ms();
        self.pending_full
            .lock()
            .map(|mut t| t.due(now))
            .unwrap_or(false)
    }

    pub fn id_rate(&self, id: &str) -> IdRate {
        let now = self.now_ms();
        match self.id.lock().map(|mut l| l.allow(&id.to_string(), now)) {
            Ok(true) => IdRate::Within,
            _ => IdRate::Exceeded,
        }
    }
}

/// Login attempts from one source (IPv6: one /64): 10 at once, then one every 6 seconds. On
/// top of the per-account back-off ([`crate::access::refused_until`]), which a guesser
/// spreading over many accounts does not meet.
pub fn login_per_source() -> Rate {
    Rate {
        burst: 10,
        every_ms: 6_000,
    }
}

/// The login limits, shared by the login handlers.
pub struct LoginLimits {
    source: Mutex<Limiter<IpAddr>>,
    start: Instant,
}

impl Default for LoginLimits {
    fn default() -> LoginLimits {
        LoginLimits {
            source: Mutex::new(Limiter::new(login_per_source(), MAX_TRACKED)),
            start: Instant::now(),
        }
    }
}

impl LoginLimits {
    /// `None` if a login from `ip` is allowed (and counts it), else how long until it would be.
    pub fn source_wait(&self, ip: IpAddr) -> Option<Duration> {
        let now = self.start.elapsed().as_millis() as u64;
        match self.source.lock() {
            Ok(mut l) => l.wait_ms(&source_key(ip), now).map(Duration::from_millis),
            Err(_) => Some(Duration::from_secs(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        burst: 3,
        every_ms: 100,
    };

    #[test]
    fn a_burst_then_the_rate() {
        let mut l = Limiter::new(RATE, 10);
        assert!((0..3).all(|_| l.allow(&"a", 1000)));
        assert!(!l.allow(&"a", 1000), "burst spent");
        assert_eq!(
            l.wait_ms(&"a", 1000),
            Some(100),
            "one token back in every_ms"
        );
        assert_eq!(l.wait_ms(&"a", 1060), Some(40));
        assert!(l.allow(&"b", 1000), "another key has its own bucket");
        assert!(!l.allow(&"a", 1099));
        assert!(l.allow(&"a", 1100), "one token back after every_ms");
        assert!(!l.allow(&"a", 1100));
        assert!((0..3).all(|_| l.allow(&"a", 5000)), "full again");
        assert!(!l.allow(&"a", 5000));
    }

    #[test]
    fn the_map_stays_bounded() {
        let mut l = Limiter::new(RATE, 100);
        for i in 0..10_000u32 {
            assert!(
                l.allow(&i, 1000),
                "a newcomer is never refused for a full map"
            );
            assert!(l.len() <= 100);
        }
        // Full of busy keys: a new key still gets its bucket (one busy key is dropped).
        assert!(l.allow(&20_000, 1000));
        assert_eq!(l.len(), 100);
        assert!(l.allow(&20_000, 1000), "it is counted in its own bucket");
        // Once the old buckets refilled, they are dropped for new keys (one sweep).
        assert!(l.allow(&20_001, 1000 + RATE.refill_ms() + 1));
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn a_throttle_lets_one_through_per_period() {
        let mut t = Throttle::new(60_000);
        assert!(t.due(5));
        assert!(!t.due(5));
        assert!(!t.due(60_004));
        assert!(t.due(60_005));
        assert!(!t.due(100_000));
    }

    #[test]
    fn sources() {
        let v4: IpAddr = "127.0.0.9".parse().unwrap();
        assert_eq!(source_key(v4), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_eq!(source_key(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(source_key(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
    }
}
