//! Diagnostics requests (pure): where one stands, who may upload its bundle, the size an
//! operator may ask for, and which held bundles go to keep within the caps.

use p6os_protocol::diagnostics::{Diagnostics, DiagnosticsStatus, MAX_BYTES, MIN_BYTES, TTL_SECS};

use crate::error::ApiError;

/// How many bundles the console holds: per appliance (the newest), and in all (the newest,
/// across the fleet, whose sizes add up to at most `total_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub per_appliance: usize,
    pub total_bytes: u64,
}

/// The console's caps: 5 bundles an appliance, 2 GiB in all.
pub const CAPS: Caps = Caps {
    per_appliance: 5,
    total_bytes: 2 << 30,
};

/// Requests kept per appliance (rows, with or without a bundle): older ones are forgotten.
pub const MAX_ROWS_PER_APPLIANCE: usize = 100;

/// A request as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: u64,
    pub appliance_id: String,
    pub max_bytes: u64,
    pub requested_at: u64,
    pub delivered_at: Option<u64>,
    pub uploaded_at: Option<u64>,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    /// The bundle's bytes are still held.
    pub held: bool,
}

impl Row {
    pub fn status(&self, now: u64) -> DiagnosticsStatus {
        match (self.uploaded_at, self.held) {
            (Some(_), true) => DiagnosticsStatus::Uploaded,
            (Some(_), false) => DiagnosticsStatus::Evicted,
            (None, _) if now >= self.requested_at.saturating_add(TTL_SECS) => {
                DiagnosticsStatus::Expired
            }
            (None, _) if self.delivered_at.is_some() => DiagnosticsStatus::Delivered,
            (None, _) => DiagnosticsStatus::Requested,
        }
    }

    /// Waiting for the device's bundle.
    pub fn outstanding(&self, now: u64) -> bool {
        matches!(
            self.status(now),
            DiagnosticsStatus::Requested | DiagnosticsStatus::Delivered
        )
    }

    pub fn view(&self, now: u64) -> Diagnostics {
        Diagnostics {
            id: self.id,
            appliance_id: self.appliance_id.clone(),
            status: self.status(now),
            max_bytes: self.max_bytes,
            requested_at: self.requested_at,
            delivered_at: self.delivered_at,
            uploaded_at: self.uploaded_at,
            size: self.size,
            sha256: self.sha256.clone(),
        }
    }
}

/// The size an operator asked for, checked (400 naming `max_bytes`), or the default.
pub fn max_bytes(asked: Option<u64>) -> Result<u64, ApiError> {
    match asked {
        None => Ok(MAX_BYTES),
        Some(n) if (MIN_BYTES..=MAX_BYTES).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::field(
            "max_bytes",
            format!("{n} is not from {MIN_BYTES} to {MAX_BYTES} bytes"),
        )),
    }
}

/// Why a device may not upload a bundle for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No such request, or another appliance's (answered alike: a device learns nothing
    /// about other devices' requests).
    NotFound,
    /// The request is answered, expired or evicted.
    NotOutstanding(DiagnosticsStatus),
}

impl Refusal {
    pub fn error(&self, id: u64) -> ApiError {
        match self {
            Refusal::NotFound => {
                ApiError::not_found(format!("no diagnostics request {id} for this device"))
            }
            Refusal::NotOutstanding(status) => ApiError::conflict(format!(
                "diagnostics request {id} is {}: it takes no upload",
                status.as_str()
            )),
        }
    }
}

/// Whether `device` may upload the bundle of `row` now.
pub fn may_upload(row: Option<&Row>, device: &str, now: u64) -> Result<(), Refusal> {
    match row {
        Some(r) if r.appliance_id == device => {
            if r.outstanding(now) {
                Ok(())
            } else {
                Err(Refusal::NotOutstanding(r.status(now)))
            }
        }
        _ => Err(Refusal::NotFound),
    }
}

/// A held bundle: id, appliance, size.
pub type Held<'a> = (u64, &'a str, u64);

/// Which of the `held` bundles (newest first) to drop: beyond the newest `per_appliance` of
/// an appliance, then every bundle past the point where the newest add up to `total_bytes`.
pub fn evictions(held: &[Held], caps: Caps) -> Vec<u64> {
    let mut per: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut total: u64 = 0;
    let mut out = Vec::new();
    for &(id, appliance, size) in held {
        let n = per.entry(appliance).or_default();
        *n += 1;
        if *n > caps.per_appliance || total.saturating_add(size) > caps.total_bytes {
            out.push(id);
        } else {
            total += size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(appliance: &str) -> Row {
        Row {
            id: 7,
            appliance_id: appliance.into(),
            max_bytes: MAX_BYTES,
            requested_at: 1000,
            delivered_at: None,
            uploaded_at: None,
            size: None,
            sha256: None,
            held: false,
        }
    }

    #[test]
    fn statuses() {
        let mut r = row("a");
        assert_eq!(r.status(1000), DiagnosticsStatus::Requested);
        assert!(r.outstanding(1000));
        r.delivered_at = Some(1001);
        assert_eq!(r.status(1001), DiagnosticsStatus::Delivered);
        assert!(r.outstanding(1000 + TTL_SECS - 1));
        assert_eq!(r.status(1000 + TTL_SECS), DiagnosticsStatus::Expired);
        assert!(!r.outstanding(1000 + TTL_SECS));
        r.uploaded_at = Some(1002);
        r.held = true;
        assert_eq!(r.status(1000 + TTL_SECS), DiagnosticsStatus::Uploaded);
        r.held = false;
        assert_eq!(r.status(1003), DiagnosticsStatus::Evicted);
        assert_eq!(r.view(1003).status, DiagnosticsStatus::Evicted);
    }

    #[test]
    fn only_the_asked_device_uploads_and_only_once() {
        let r = row("a");
        assert_eq!(may_upload(Some(&r), "a", 1000), Ok(()));
        assert_eq!(may_upload(Some(&r), "b", 1000), Err(Refusal::NotFound));
        assert_eq!(may_upload(None, "a", 1000), Err(Refusal::NotFound));
        assert_eq!(
            may_upload(Some(&r), "a", 1000 + TTL_SECS),
            Err(Refusal::NotOutstanding(DiagnosticsStatus::Expired))
        );
        let done = Row {
            uploaded_at: Some(1001),
            held: true,
            ..row("a")
        };
        assert_eq!(
            may_upload(Some(&done), "a", 1002),
            Err(Refusal::NotOutstanding(DiagnosticsStatus::Uploaded))
        );
        assert_eq!(Refusal::NotFound.error(7).status.as_u16(), 404);
        assert_eq!(
            Refusal::NotOutstanding(DiagnosticsStatus::Uploaded)
                .error(7)
                .status
                .as_u16(),
            409
        );
    }

    #[test]
    fn sizes_asked_for() {
        assert_eq!(max_bytes(None).unwrap(), MAX_BYTES);
        assert_eq!(max_bytes(Some(MIN_BYTES)).unwrap(), MIN_BYTES);
        for bad in [0, MIN_BYTES - 1, MAX_BYTES + 1] {
            assert_eq!(
                max_bytes(Some(bad)).unwrap_err().field.as_deref(),
                Some("max_bytes")
            );
        }
    }

    #[test]
    fn evictions_keep_the_newest_per_appliance_and_in_all() {
        let caps = Caps {
            per_appliance: 2,
            total_bytes: 100,
        };
        // Newest first.
        let held = [
            (9, "a", 10),
            (8, "b", 10),
            (7, "a", 10),
            (6, "a", 10), // third of a
            (5, "b", 50),
            (4, "c", 30), // 10+10+10+50 = 80, +30 > 100
            (3, "c", 20), // 80 + 20 = 100: fits
        ];
        assert_eq!(evictions(&held, caps), vec![6, 4]);
        assert!(evictions(&[], caps).is_empty());
        // A single bundle larger than the total goes too.
        assert_eq!(evictions(&[(1, "a", 101)], caps), vec![1]);
    }
}
