//! What a flash writes: the image's mapped ranges, from its `.bmap` (bmaptool's format 2.0,
//! checked against its own checksum) or, for a raw image without one, found by content as the
//! builder's `.bmap` is. Pure parsing here; the reading of files is in `write`.

use sha2::{Digest, Sha256};

/// A byte range of the image to write and check, with the sha256 its bytes must have when the
/// bmap says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub offset: u64,
    pub len: u64,
    pub sha256: Option<String>,
}

/// The ranges of an image of `image_size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub image_size: u64,
    pub ranges: Vec<Range>,
}

impl Plan {
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.len).sum()
    }

    /// Everything: for images whose map is unknown (a `.img.zst` without a `.bmap`).
    pub fn whole(image_size: u64) -> Plan {
        let chunk = 64 << 20;
        let mut ranges = Vec::new();
        let mut offset = 0;
        while offset < image_size {
            let len = chunk.min(image_size - offset);
            ranges.push(Range {
                offset,
                len,
                sha256: None,
            });
            offset += len;
        }
        Plan { image_size, ranges }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BmapError {
    #[error("not a bmap file: {0}")]
    Format(String),
    #[error("the bmap's own checksum does not match: the file is damaged or was edited")]
    Checksum,
    #[error("bmap checksum type `{0}` is not supported (sha256 only)")]
    ChecksumType(String),
}

fn tag<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&close)?;
    Some(text[start..end].trim())
}

/// Parses a bmap file (format 1.x without checksums, or 2.0 with sha256) and checks its
/// `BmapFileChecksum`.
pub fn parse_bmap(text: &str) -> Result<Plan, BmapError> {
    let bad = |what: &str| BmapError::Format(what.to_string());
    if !text.contains("<bmap version=") {
        return Err(bad("no <bmap version=...> element"));
    }
    let number = |name: &str| -> Result<u64, BmapError> {
        tag(text, name)
            .ok_or_else(|| bad(&format!("no <{name}>")))?
            .parse()
            .map_err(|_| bad(&format!("<{name}> is not a number")))
    };
    let image_size = number("ImageSize")?;
    let block = number("BlockSize")?;
    if block == 0 || !block.is_multiple_of(512) {
        return Err(bad("<BlockSize> must be a multiple of 512"));
    }
    if let Some(kind) = tag(text, "ChecksumType") {
        if kind != "sha256" {
            return Err(BmapError::ChecksumType(kind.to_string()));
        }
    }
    if let Some(sum) = tag(text, "BmapFileChecksum") {
        let zeroed = text.replacen(sum, &"0".repeat(sum.len()), 1);
        if hex::encode(Sha256::digest(zeroed.as_bytes())) != sum {
            return Err(BmapError::Checksum);
        }
    }
    let map = tag(text, "BlockMap").ok_or_else(|| bad("no <BlockMap>"))?;
    let mut ranges = Vec::new();
    for part in map.split("</Range>").filter(|p| p.contains("<Range")) {
        let (attrs, body) = part
            .split_once('>')
            .ok_or_else(|| bad("a <Range> without `>`"))?;
        let sha256 = attrs
            .split_once("chksum=\"")
            .and_then(|(_, rest)| rest.split_once('"').map(|(v, _)| v.to_string()));
        let body = body.trim();
        let (first, last) = match body.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (body, body),
        };
        let (first, last): (u64, u64) = match (first.parse(), last.parse()) {
            (Ok(a), Ok(b)) if a <= b => (a, b),
            _ => return Err(bad(&format!("bad range `{body}`"))),
        };
        let offset = first
            .checked_mul(block)
            .filter(|o| *o < image_size)
            .ok_or_else(|| bad(&format!("range `{body}` lies beyond the image")))?;
        let end = ((last + 1) * block).min(image_size);
        ranges.push(Range {
            offset,
            len: end - offset,
            sha256,
        });
    }
    ranges.sort_by_key(|r| r.offset);
    if ranges
        .windows(2)
        .any(|w| w[0].offset + w[0].len > w[1].offset)
    {
        return Err(bad("ranges overlap"));
    }
    Ok(Plan { image_size, ranges })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_checksum(body: &str) -> String {
        let zero = "0".repeat(64);
        let text = body.replace("SUM", &zero);
        let sum = hex::encode(Sha256::digest(text.as_bytes()));
        text.replacen(&zero, &sum, 1)
    }

    const BMAP: &str = "<?xml version=\"1.0\" ?>\n<bmap version=\"2.0\">\n    <ImageSize> 10000 </ImageSize>\n    <BlockSize> 4096 </BlockSize>\n    <BlocksCount> 3 </BlocksCount>\n    <MappedBlocksCount> 2 </MappedBlocksCount>\n    <ChecksumType> sha256 </ChecksumType>\n    <BmapFileChecksum> SUM </BmapFileChecksum>\n    <BlockMap>\n        <Range chksum=\"aa\"> 0 </Range>\n        <Range chksum=\"bb\"> 2 </Range>\n    </BlockMap>\n</bmap>\n";

    #[test]
    fn bmaps_parse_into_byte_ranges_and_check_themselves() {
        let plan = parse_bmap(&with_checksum(BMAP)).unwrap();
        assert_eq!(plan.image_size, 10000);
        assert_eq!(
            plan.ranges,
            vec![
                Range {
                    offset: 0,
                    len: 4096,
                    sha256: Some("aa".into())
                },
                // The last block ends with the image.
                Range {
                    offset: 8192,
                    len: 10000 - 8192,
                    sha256: Some("bb".into())
                },
            ]
        );
        assert_eq!(plan.mapped_bytes(), 4096 + 1808);
        let edited = with_checksum(BMAP).replace("\"bb\"> 2", "\"bb\"> 1");
        assert_eq!(parse_bmap(&edited), Err(BmapError::Checksum));
    }

    #[test]
    fn bad_bmaps_are_refused_with_a_reason() {
        let cases = [
            ("<html/>", "no <bmap"),
            (
                &BMAP.replace("<Range chksum=\"bb\"> 2 </Range>", "<Range> 9-3 </Range>"),
                "bad range",
            ),
            (
                &BMAP.replace("<Range chksum=\"bb\"> 2 </Range>", "<Range> 7 </Range>"),
                "beyond the image",
            ),
            (
                &BMAP.replace("<Range chksum=\"bb\"> 2 </Range>", "<Range> 0-1 </Range>"),
                "overlap",
            ),
            (&BMAP.replace("sha256", "md5"), "not supported"),
            (&BMAP.replace("4096", "100"), "multiple of 512"),
        ];
        for (text, want) in cases {
            let err = parse_bmap(&with_checksum(text)).unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn whole_plans_cover_the_image() {
        let plan = Plan::whole((64 << 20) * 2 + 5);
        assert_eq!(plan.ranges.len(), 3);
        assert_eq!(plan.mapped_bytes(), (64 << 20) * 2 + 5);
        assert!(Plan::whole(0).ranges.is_empty());
    }
}
