//! Which bytes of a file a `GET` asks for: one `Range: bytes=` range, honoured only while
//! `If-Range` (when present) names the current strong ETag (RFC 9110 §14).

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// 200, the whole file.
    Full,
    /// 206, bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Decides from the `Range` and `If-Range` header values and the file's length and ETag.
/// A malformed or multi-range `Range` is ignored (a full 200), as the RFC allows.
pub fn plan(range: Option<&str>, if_range: Option<&str>, len: u64, etag: &str) -> Plan {
    let Some(range) = range else {
        return Plan::Full;
    };
    if if_range.is_some_and(|v| v.trim() != etag) {
        return Plan::Full;
    }
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return Plan::Full;
    };
    if spec.contains(',') {
        return Plan::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Plan::Full;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match num(suffix) {
            None => Plan::Full,
            Some(0) => Plan::Unsatisfiable,
            Some(_) if len == 0 => Plan::Unsatisfiable,
            Some(n) => Plan::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        },
        (first, last) => {
            let Some(start) = num(first) else {
                return Plan::Full;
            };
            let end = if last.is_empty() {
                None
            } else {
                match num(last) {
                    Some(e) if e >= start => Some(e),
                    _ => return Plan::Full,
                }
            };
            if start >= len {
                return Plan::Unsatisfiable;
            }
            Plan::Partial {
                start,
                end: end.map_or(len - 1, |e| e.min(len - 1)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: &str = "\"abc\"";

    #[test]
    fn ranges() {
        let p = |r: &str| plan(Some(r), None, 100, E);
        assert_eq!(plan(None, None, 100, E), Plan::Full);
        assert_eq!(p("bytes=0-"), Plan::Partial { start: 0, end: 99 });
        assert_eq!(p("bytes=10-19"), Plan::Partial { start: 10, end: 19 });
        assert_eq!(p("bytes=10-1000"), Plan::Partial { start: 10, end: 99 });
        assert_eq!(p("bytes=-10"), Plan::Partial { start: 90, end: 99 });
        assert_eq!(p("bytes=-1000"), Plan::Partial { start: 0, end: 99 });
        assert_eq!(p("bytes=100-"), Plan::Unsatisfiable);
        assert_eq!(p("bytes=-0"), Plan::Unsatisfiable);
        assert_eq!(p("bytes=5-2"), Plan::Full);
        assert_eq!(p("bytes=0-1,5-6"), Plan::Full);
        assert_eq!(p("items=0-1"), Plan::Full);
        assert_eq!(p("bytes=a-"), Plan::Full);
        assert_eq!(p("bytes=+1-"), Plan::Full);
        assert_eq!(plan(Some("bytes=0-"), None, 0, E), Plan::Unsatisfiable);
    }

    #[test]
    fn if_range() {
        assert_eq!(
            plan(Some("bytes=10-"), Some(E), 100, E),
            Plan::Partial { start: 10, end: 99 }
        );
        assert_eq!(plan(Some("bytes=10-"), Some("\"old\""), 100, E), Plan::Full);
        assert_eq!(
            plan(
                Some("bytes=10-"),
                Some("Wed, 21 Oct 2015 07:28:00 GMT"),
                100,
                E
            ),
            Plan::Full
        );
    }
}
