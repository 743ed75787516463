//! What a flash writes: the image's mapped ranges, from its `.bmap` (bmaptool's XML format 2.0,
//! checked against its own checksum, or 1.x; read with roxmltree, as the file comes with a
//! downloaded image and is untrusted) or, for a raw image without one, found by content as the
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
    #[error("not a bmap file: the XML is malformed: {0}")]
    Xml(String),
    #[error("bmap format version `{0}` is not supported (1.x and 2.x are)")]
    Version(String),
    #[error("the bmap's own checksum does not match: the file is damaged or was edited")]
    Checksum,
    #[error("bmap checksum type `{0}` is not supported (sha256 only)")]
    ChecksumType(String),
}

/// The first child element of `parent` named `name` (bmaptool reads the first one too).
fn child<'a, 'i>(parent: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    parent.children().find(|n| n.has_tag_name(name))
}

/// An element's text, trimmed (`<ImageSize> 20580 </ImageSize>`); empty when it has none.
fn text_of<'a>(node: roxmltree::Node<'a, '_>) -> &'a str {
    node.text().unwrap_or("").trim()
}

/// The major number of a `major.minor` format version.
fn major_version(version: &str) -> Option<u32> {
    let (major, minor) = version.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(major) && digits(minor)).then(|| major.parse().ok())?
}

/// Parses a bmap file and checks its `BmapFileChecksum`, with an XML parser (roxmltree: no DTD,
/// so no entity expansion) and bmaptool's rules for the versions:
/// - 2.x: `ChecksumType` (sha256 only) and `BmapFileChecksum` are required; each `Range`'s
///   `chksum` is the sha256 of its blocks. The file checksum is verified as `BmapCopy` does it:
///   the first occurrence of the value in the file is replaced with as many `0`s, then hashed.
/// - 1.x: no checksum type; range checksums (`sha1`) and `BmapFileSHA1` (1.3+) are sha1, which
///   is not checked here, so the ranges carry none (the flash still reads every range back).
///
/// `ImageSize`, `BlockSize` and `BlockMap` are required in both; `BlocksCount` and
/// `MappedBlocksCount`, when present, must agree with them.
pub fn parse_bmap(text: &str) -> Result<Plan, BmapError> {
    let bad = |what: &str| BmapError::Format(what.to_string());
    let doc = roxmltree::Document::parse(text).map_err(|e| BmapError::Xml(e.to_string()))?;
    let root = doc.root_element();
    let version = root
        .attribute("version")
        .filter(|_| root.has_tag_name("bmap"))
        .ok_or_else(|| bad("no <bmap version=...> element"))?;
    let major = match major_version(version) {
        Some(major @ (1 | 2)) => major,
        _ => return Err(BmapError::Version(version.to_string())),
    };
    let number = |name: &str| -> Result<Option<u64>, BmapError> {
        child(root, name)
            .map(|n| {
                text_of(n)
                    .parse()
                    .map_err(|_| bad(&format!("<{name}> is not a number")))
            })
            .transpose()
    };
    let required = |name: &str| -> Result<u64, BmapError> {
        number(name)?.ok_or_else(|| bad(&format!("no <{name}>")))
    };
    let image_size = required("ImageSize")?;
    let block = required("BlockSize")?;
    if block == 0 || !block.is_multiple_of(512) {
        return Err(bad("<BlockSize> must be a multiple of 512"));
    }
    if major >= 2 {
        let kind = child(root, "ChecksumType")
            .map(text_of)
            .ok_or_else(|| bad("no <ChecksumType> (bmap 2.x names its checksum type)"))?;
        if kind != "sha256" {
            return Err(BmapError::ChecksumType(kind.to_string()));
        }
        let sum = child(root, "BmapFileChecksum")
            .map(text_of)
            .ok_or_else(|| bad("no <BmapFileChecksum>"))?;
        if sum.is_empty() {
            return Err(BmapError::Checksum);
        }
        let zeroed = text.replacen(sum, &"0".repeat(sum.len()), 1);
        if hex::encode(Sha256::digest(zeroed.as_bytes())) != sum {
            return Err(BmapError::Checksum);
        }
    }
    let map = child(root, "BlockMap").ok_or_else(|| bad("no <BlockMap>"))?;
    let mut ranges = Vec::new();
    let mut mapped_blocks = 0u64;
    for range in map.children().filter(|n| n.has_tag_name("Range")) {
        let body = text_of(range);
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
        // The last block ends with the image (it may be partial, or the range too long).
        let end = last
            .checked_add(1)
            .and_then(|n| n.checked_mul(block))
            .map_or(image_size, |e| e.min(image_size));
        mapped_blocks = mapped_blocks.saturating_add(last - first + 1);
        let sha256 = if major >= 2 {
            range.attribute("chksum").map(str::to_string)
        } else {
            None
        };
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
    if let Some(count) = number("BlocksCount")? {
        if count != image_size.div_ceil(block) {
            return Err(bad(&format!(
                "<BlocksCount> {count} does not match an image of {image_size} bytes in blocks of {block}"
            )));
        }
    }
    if let Some(count) = number("MappedBlocksCount")? {
        if count != mapped_blocks {
            return Err(bad(&format!(
                "<MappedBlocksCount> {count} does not match the {mapped_blocks} blocks of the ranges"
            )));
        }
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

    /// What an XML parser settles that splitting strings did not: malformed XML, elements in
    /// comments or other elements, entities, a DTD (no entity expansion).
    #[test]
    fn the_xml_is_parsed_for_real() {
        let ok = with_checksum(BMAP);
        for (text, want) in [
            (ok.replace("</BlockMap>", "</Blockmap>"), "malformed"),
            (ok.replace("</bmap>\n", ""), "malformed"),
            (
                ok.replace("<bmap version=\"2.0\">", "<bmap version=\"2.0>"),
                "malformed",
            ),
            ("".to_string(), "malformed"),
            ("\u{0}<bmap/>".to_string(), "malformed"),
            (
                format!(
                    "<!DOCTYPE bmap [<!ENTITY a \"aaaa\">]>{}",
                    &ok[ok.find("<bmap").unwrap()..]
                ),
                "malformed",
            ),
            // An element inside a comment or another element is not the bmap's.
            (
                BMAP.replace(
                    "<ImageSize> 10000 </ImageSize>",
                    "<!-- <ImageSize> 10000 </ImageSize> -->",
                ),
                "no <ImageSize>",
            ),
            (
                BMAP.replace(
                    "<BlockSize> 4096 </BlockSize>",
                    "<X><BlockSize> 4096 </BlockSize></X>",
                ),
                "no <BlockSize>",
            ),
            (
                BMAP.replace("<bmap version=\"2.0\">", "<bmap>"),
                "no <bmap version",
            ),
            (BMAP.replace("bmap", "map"), "no <bmap version"),
        ] {
            let err = parse_bmap(&with_checksum(&text)).unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
        // Entities and CDATA are text like any other.
        let escaped = BMAP
            .replace("> 10000 <", "> 1&#48;000 <")
            .replace("> 4096 <", "><![CDATA[4096]]><");
        assert_eq!(
            parse_bmap(&with_checksum(&escaped)).unwrap().image_size,
            10000
        );
    }

    #[test]
    fn missing_and_inconsistent_elements_are_named() {
        let drop = |name: &str| {
            let start = BMAP.find(&format!("<{name}>")).unwrap();
            let end = BMAP.find(&format!("</{name}>")).unwrap() + name.len() + 3;
            format!("{}{}", &BMAP[..start], &BMAP[end..])
        };
        for (text, want) in [
            (drop("ImageSize"), "no <ImageSize>"),
            (drop("BlockSize"), "no <BlockSize>"),
            (drop("BlockMap"), "no <BlockMap>"),
            (drop("ChecksumType"), "no <ChecksumType>"),
            (drop("BmapFileChecksum"), "no <BmapFileChecksum>"),
            (
                BMAP.replace("> 10000 <", "> ten <"),
                "<ImageSize> is not a number",
            ),
            (
                BMAP.replace("<BlocksCount> 3 <", "<BlocksCount> 4 <"),
                "<BlocksCount> 4 does not match",
            ),
            (
                BMAP.replace("<MappedBlocksCount> 2 <", "<MappedBlocksCount> 3 <"),
                "<MappedBlocksCount> 3 does not match",
            ),
            (
                BMAP.replace("> 2 </Range>", "> 2- </Range>"),
                "bad range `2-`",
            ),
            (
                BMAP.replace("> 2 </Range>", "> 18446744073709551615 </Range>"),
                "beyond the image",
            ),
        ] {
            let err = parse_bmap(&with_checksum(&text)).unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
        // The counts are optional; a range running past the image ends with it, even one
        // whose end overflows.
        let text = drop("BlocksCount").replace("> 2 </Range>", "> 2-18446744073709551615 </Range>");
        let plan = parse_bmap(&with_checksum(&drop_count(&text))).unwrap();
        assert_eq!(plan.ranges[1].offset + plan.ranges[1].len, 10000);
        // The file checksum is required in 2.x and must be a real one.
        assert_eq!(
            parse_bmap(&BMAP.replace("SUM", "")),
            Err(BmapError::Checksum)
        );
        assert_eq!(
            parse_bmap(&BMAP.replace("SUM", &"0".repeat(64))),
            Err(BmapError::Checksum)
        );
    }

    fn drop_count(text: &str) -> String {
        let start = text.find("<MappedBlocksCount>").unwrap();
        let end = text.find("</MappedBlocksCount>").unwrap() + "</MappedBlocksCount>".len();
        format!("{}{}", &text[..start], &text[end..])
    }

    /// bmap 1.x (bmaptool before 3.0): no checksum type, sha1 range checksums and (1.3+) a
    /// `BmapFileSHA1`, neither checked here; the ranges are the same. Other major versions
    /// are refused, as bmaptool refuses them.
    #[test]
    fn bmap_1x_is_read_without_checksums_and_3x_is_refused() {
        let v14 = "<?xml version=\"1.0\" ?>\n<bmap version=\"1.4\">\n    <ImageSize> 10000 </ImageSize>\n    <BlockSize> 4096 </BlockSize>\n    <BlocksCount> 3 </BlocksCount>\n    <MappedBlocksCount> 2 </MappedBlocksCount>\n    <BmapFileSHA1> 0123456789abcdef0123456789abcdef01234567 </BmapFileSHA1>\n    <BlockMap>\n        <Range sha1=\"aa\"> 0 </Range>\n        <Range sha1=\"bb\"> 2 </Range>\n    </BlockMap>\n</bmap>\n";
        let plan = parse_bmap(v14).unwrap();
        assert_eq!(plan.image_size, 10000);
        let ranges: Vec<(u64, u64, Option<String>)> = plan
            .ranges
            .iter()
            .map(|r| (r.offset, r.len, r.sha256.clone()))
            .collect();
        assert_eq!(ranges, [(0, 4096, None), (8192, 1808, None)]);
        // A 1.x file names no checksum type: a `chksum` there is not taken for a sha256.
        let odd = v14.replace("sha1=\"aa\"", "chksum=\"aa\"");
        assert_eq!(parse_bmap(&odd).unwrap().ranges[0].sha256, None);
        let v10 = v14.replace("1.4", "1.0");
        assert!(parse_bmap(&v10).is_ok());
        for version in ["3.0", "0.9", "2", "2.x", "two", ""] {
            let text = with_checksum(&BMAP.replace("\"2.0\"", &format!("\"{version}\"")));
            assert_eq!(
                parse_bmap(&text),
                Err(BmapError::Version(version.to_string())),
                "{version}"
            );
        }
        // 2.1 is a 2.x: read as 2.0.
        assert!(parse_bmap(&with_checksum(&BMAP.replace("\"2.0\"", "\"2.1\""))).is_ok());
    }

    /// The fuzz target's committed seeds are bmaps the parser accepts.
    #[test]
    fn the_fuzz_seeds_are_valid_bmaps() {
        let v14 = parse_bmap(include_str!("../../../fuzz/seeds/bmap/bmap-1.4.bmap")).unwrap();
        assert_eq!(v14.ranges.len(), 2);
        let v20 = parse_bmap(include_str!(
            "../../../fuzz/seeds/bmap/bmap-2.0-ranges.bmap"
        ))
        .unwrap();
        assert_eq!(v20.mapped_bytes(), 4 * 4096 + 100);
    }

    #[test]
    fn whole_plans_cover_the_image() {
        let plan = Plan::whole((64 << 20) * 2 + 5);
        assert_eq!(plan.ranges.len(), 3);
        assert_eq!(plan.mapped_bytes(), (64 << 20) * 2 + 5);
        assert!(Plan::whole(0).ranges.is_empty());
    }
}
