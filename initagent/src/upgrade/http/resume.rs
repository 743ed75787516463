//! The rules of resumption (pure): what the first response said about the file, what a
//! resumed request asks (`Range: bytes=<offset>-` with `If-Range`), and whether an answer
//! continues the same file, from where, and what it teaches about the file's size.
//!
//! A bundle replaced on the server mid-download must not be spliced onto the old one's
//! beginning: a different validator (the strong `ETag`, else `Last-Modified`) or size is
//! [`Mismatch::Changed`]. A file with neither a known size nor a validator cannot be recognised
//! at all, so a broken download of it is not resumed ([`FileIdentity::recognisable`]).

/// What the first response said about the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileIdentity {
    /// The size, when the first response had a `Content-Length` (not for a chunked one).
    pub len: Option<u64>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl FileIdentity {
    /// The `If-Range` value: the strong `ETag`, else `Last-Modified` (a weak `ETag` is not
    /// allowed there).
    pub fn if_range(&self) -> Option<&str> {
        let strong_etag = self.etag.as_deref().filter(|e| !e.starts_with("W/"));
        strong_etag.or(self.last_modified.as_deref())
    }

    /// Whether an answer to a resumed request can be told to be the same file: it needs a
    /// size or a validator to compare.
    pub fn recognisable(&self) -> bool {
        self.len.is_some() || self.etag.is_some() || self.last_modified.is_some()
    }
}

/// The parts of the answer to a resumed request that decide.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResumedHead<'a> {
    pub status: u16,
    pub content_length: Option<u64>,
    pub content_range: Option<&'a str>,
    pub etag: Option<&'a str>,
    pub last_modified: Option<&'a str>,
}

/// How an acceptable answer continues the download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuation {
    /// A 206: the body starts at the offset asked for.
    FromOffset { total: u64 },
    /// A 200: the whole file again, whose first `skip` bytes were received already.
    FromStart { skip: u64, total: Option<u64> },
}

impl Continuation {
    /// The file's size, when the answer tells it.
    pub fn total(self) -> Option<u64> {
        match self {
            Continuation::FromOffset { total } => Some(total),
            Continuation::FromStart { total, .. } => total,
        }
    }
}

/// Why an answer does not continue the download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// Another file now: the text says what differs.
    Changed(String),
    /// An answer that contradicts the request.
    Malformed(String),
    /// Neither 200 nor 206.
    Status(u16),
}

/// Whether `head`, the answer to `Range: bytes=<offset>-` (with `If-Range` from `file`),
/// continues the download of `file`.
pub fn check_resumed(
    file: &FileIdentity,
    offset: u64,
    head: &ResumedHead,
) -> Result<Continuation, Mismatch> {
    let (name, ours, theirs) = match &file.etag {
        Some(etag) => ("etag", Some(etag), head.etag),
        None => (
            "last-modified",
            file.last_modified.as_ref(),
            head.last_modified,
        ),
    };
    match (ours, theirs) {
        (Some(ours), Some(theirs)) if ours != theirs => {
            return Err(Mismatch::Changed(format!(
                "its {name} went from {ours} to {theirs}"
            )));
        }
        (Some(_), None) if head.status == 200 => {
            return Err(Mismatch::Changed(format!("it has no {name} any more")));
        }
        _ => {}
    }
    let size_changed = |total: u64| match file.len {
        Some(len) if len != total => Some(Mismatch::Changed(format!(
            "its size went from {len} to {total} bytes"
        ))),
        _ => None,
    };
    match head.status {
        206 => {
            let range = head.content_range.unwrap_or_default();
            let (start, end, total) = parse_content_range(range)
                .ok_or_else(|| Mismatch::Malformed(format!("206 with content-range {range:?}")))?;
            if let Some(changed) = total.and_then(size_changed) {
                return Err(changed);
            }
            // `bytes a-b/*` gives no size: then only a size from the first response tells
            // whether the range reaches the end of the file.
            let total = total.or(file.len).ok_or_else(|| {
                Mismatch::Malformed(format!("206 with content-range {range:?} gives no size"))
            })?;
            if start != offset
                || end.checked_add(1) != Some(total)
                || head
                    .content_length
                    .is_some_and(|l| Some(l) != total.checked_sub(offset))
            {
                let why = format!("asked for bytes {offset}- and got {range:?}");
                return Err(Mismatch::Malformed(why));
            }
            Ok(Continuation::FromOffset { total })
        }
        200 => {
            if let Some(changed) = head.content_length.and_then(size_changed) {
                return Err(changed);
            }
            Ok(Continuation::FromStart {
                skip: offset,
                total: head.content_length.or(file.len),
            })
        }
        status => Err(Mismatch::Status(status)),
    }
}

/// `bytes <start>-<end>/<total>`, the total `None` for `*` (unknown).
pub fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let (range, total) = value.strip_prefix("bytes ")?.trim().split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let total = match total {
        "*" => None,
        total => Some(total.parse().ok()?),
    };
    let (start, end) = (start.parse().ok()?, end.parse().ok()?);
    (start <= end).then_some((start, end, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(len: Option<u64>, etag: Option<&str>, last_modified: Option<&str>) -> FileIdentity {
        FileIdentity {
            len,
            etag: etag.map(str::to_string),
            last_modified: last_modified.map(str::to_string),
        }
    }

    const LM: &str = "Tue, 01 Jul 2025 10:00:00 GMT";

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 5-9/10"), Some((5, 9, Some(10))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes */10"), None);
        assert_eq!(parse_content_range("bytes 9-5/10"), None);
        assert_eq!(parse_content_range("items 5-9/10"), None);
        assert_eq!(parse_content_range("bytes 5-9/x"), None);
    }

    #[test]
    fn if_range_is_the_strong_etag_else_last_modified() {
        assert_eq!(
            file(None, Some("\"v1\""), Some(LM)).if_range(),
            Some("\"v1\"")
        );
        assert_eq!(file(None, Some("W/\"v1\""), Some(LM)).if_range(), Some(LM));
        assert_eq!(file(None, Some("W/\"v1\""), None).if_range(), None);
        assert_eq!(file(Some(3), None, None).if_range(), None);
        assert!(file(Some(3), None, None).recognisable());
        assert!(file(None, Some("W/\"v1\""), None).recognisable());
        assert!(file(None, None, Some(LM)).recognisable());
        assert!(!file(None, None, None).recognisable());
    }

    #[test]
    fn a_partial_answer_continues_at_the_offset() {
        let f = file(Some(100), Some("\"v1\""), None);
        let head = ResumedHead {
            status: 206,
            content_length: Some(60),
            content_range: Some("bytes 40-99/100"),
            etag: Some("\"v1\""),
            last_modified: None,
        };
        assert_eq!(
            check_resumed(&f, 40, &head),
            Ok(Continuation::FromOffset { total: 100 })
        );
        // A chunked first response: the 206 teaches the size.
        let chunked = file(None, Some("\"v1\""), None);
        let answer = check_resumed(&chunked, 40, &head).unwrap();
        assert_eq!(answer.total(), Some(100));
        // An unknown total is fine when the first response gave the size.
        let unknown_total = ResumedHead {
            content_range: Some("bytes 40-99/*"),
            ..head
        };
        assert_eq!(
            check_resumed(&f, 40, &unknown_total),
            Ok(Continuation::FromOffset { total: 100 })
        );
        assert_eq!(
            check_resumed(&chunked, 40, &unknown_total),
            Err(Mismatch::Malformed(
                "206 with content-range \"bytes 40-99/*\" gives no size".into()
            ))
        );
        for (range, length) in [
            ("bytes 41-99/100", Some(59)),
            ("bytes 40-98/100", Some(59)),
            ("bytes 40-99/100", Some(59)),
        ] {
            let head = ResumedHead {
                content_range: Some(range),
                content_length: length,
                ..head
            };
            assert_eq!(
                check_resumed(&f, 40, &head),
                Err(Mismatch::Malformed(format!(
                    "asked for bytes 40- and got {range:?}"
                ))),
            );
        }
        let no_range = ResumedHead {
            content_range: None,
            ..head
        };
        assert_eq!(
            check_resumed(&f, 40, &no_range),
            Err(Mismatch::Malformed("206 with content-range \"\"".into()))
        );
    }

    #[test]
    fn a_whole_answer_is_skipped_to_the_offset() {
        let f = file(Some(100), None, Some(LM));
        let head = ResumedHead {
            status: 200,
            content_length: Some(100),
            last_modified: Some(LM),
            ..ResumedHead::default()
        };
        assert_eq!(
            check_resumed(&f, 40, &head),
            Ok(Continuation::FromStart {
                skip: 40,
                total: Some(100)
            })
        );
        // Chunked this time: the size stays the first response's.
        let chunked = ResumedHead {
            content_length: None,
            ..head
        };
        assert_eq!(check_resumed(&f, 40, &chunked).unwrap().total(), Some(100));
        let unknown = file(None, None, Some(LM));
        assert_eq!(check_resumed(&unknown, 40, &chunked).unwrap().total(), None);
    }

    #[test]
    fn another_file_is_a_change() {
        let f = file(Some(100), Some("\"v1\""), Some(LM));
        let changed = |head: ResumedHead| match check_resumed(&f, 40, &head) {
            Err(Mismatch::Changed(why)) => why,
            other => panic!("{other:?}"),
        };
        let v2 = ResumedHead {
            status: 206,
            etag: Some("\"v2\""),
            content_range: Some("bytes 40-99/100"),
            ..ResumedHead::default()
        };
        assert_eq!(changed(v2), "its etag went from \"v1\" to \"v2\"");
        let gone = ResumedHead {
            status: 200,
            content_length: Some(100),
            ..ResumedHead::default()
        };
        assert_eq!(changed(gone), "it has no etag any more");
        let bigger = ResumedHead {
            status: 200,
            content_length: Some(101),
            etag: Some("\"v1\""),
            ..ResumedHead::default()
        };
        assert_eq!(changed(bigger), "its size went from 100 to 101 bytes");
        let bigger_range = ResumedHead {
            status: 206,
            content_range: Some("bytes 40-100/101"),
            etag: Some("\"v1\""),
            ..ResumedHead::default()
        };
        assert_eq!(changed(bigger_range), "its size went from 100 to 101 bytes");
        // Only the etag is compared when there is one; last-modified alone otherwise.
        let f = file(Some(100), None, Some(LM));
        let head = ResumedHead {
            status: 200,
            content_length: Some(100),
            last_modified: Some("Wed, 02 Jul 2025 10:00:00 GMT"),
            ..ResumedHead::default()
        };
        assert!(matches!(
            check_resumed(&f, 40, &head),
            Err(Mismatch::Changed(why)) if why.starts_with("its last-modified went from")
        ));
    }

    #[test]
    fn other_statuses_end_the_download() {
        let f = file(Some(100), None, None);
        let head = ResumedHead {
            status: 416,
            ..ResumedHead::default()
        };
        assert_eq!(check_resumed(&f, 40, &head), Err(Mismatch::Status(416)));
    }
}
