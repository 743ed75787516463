//! File names: validation, 8.3 short-name aliases, VFAT long-name (LFN) entries.

use super::{FatError, ATTR_LFN};

/// Punctuation allowed in a short (8.3) name besides `A-Z` and `0-9`.
const SHORT_SPECIAL: &[u8] = b"!#$%&'()-@^_`{}~";

/// Characters never allowed in a long name (besides control characters).
const LONG_FORBIDDEN: &str = "\"*/:<>?\\|";

/// UTF-16 code units in one LFN entry.
const LFN_CHARS: usize = 13;

/// Byte offsets of the 13 UTF-16 characters inside an LFN entry.
const LFN_OFFSETS: [usize; LFN_CHARS] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

fn is_short_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || SHORT_SPECIAL.contains(&b)
}

/// Checks that `name` can be stored as a long file name.
pub(crate) fn validate_name(name: &str) -> Result<(), FatError> {
    let fail = |reason: String| {
        Err(FatError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return fail("name is empty".into());
    }
    if name == "." || name == ".." {
        return fail("'.' and '..' are reserved".into());
    }
    if name.encode_utf16().count() > 255 {
        return fail("longer than 255 utf-16 code units".into());
    }
    if let Some(c) = name
        .chars()
        .find(|&c| (c as u32) < 0x20 || c == '\u{7f}' || LONG_FORBIDDEN.contains(c))
    {
        return fail(format!("contains {c:?}, which fat does not allow"));
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return fail("ends with '.' or ' ', which windows would strip".into());
    }
    Ok(())
}

/// A volume label: 1 to 11 of `A-Z`, `0-9`, space (not first) and the punctuation of short
/// names, as `mkfs.fat -n` takes it; stored space-padded in the boot sector and as the root
/// directory's label entry. Lower case is refused rather than folded (what is written is what
/// was asked for); `NO NAME` is what a volume without a label says, so it is refused too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeLabel([u8; 11]);

impl VolumeLabel {
    pub fn new(label: &str) -> Result<VolumeLabel, FatError> {
        let fail = |reason: &str| {
            Err(FatError::InvalidLabel {
                label: label.to_string(),
                reason: reason.to_string(),
            })
        };
        let bytes = label.as_bytes();
        if bytes.is_empty() || bytes.len() > 11 {
            return fail("a label has 1 to 11 characters");
        }
        if bytes[0] == b' ' || bytes[bytes.len() - 1] == b' ' {
            return fail("a label neither starts nor ends with a space");
        }
        if bytes.iter().any(u8::is_ascii_lowercase) {
            return fail("a label is upper case (FAT stores it so)");
        }
        if !bytes.iter().all(|&b| b == b' ' || is_short_char(b)) {
            return fail("a label takes only A-Z, 0-9, space and !#$%&'()-@^_`{}~");
        }
        if label == "NO NAME" {
            return fail("NO NAME means no label");
        }
        let mut padded = [b' '; 11];
        padded[..bytes.len()].copy_from_slice(bytes);
        Ok(VolumeLabel(padded))
    }

    /// The 11 bytes on disk, space-padded.
    pub fn as_bytes(&self) -> &[u8; 11] {
        &self.0
    }
}

impl std::fmt::Display for VolumeLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only ASCII is ever stored.
        f.write_str(String::from_utf8_lossy(&self.0).trim_end())
    }
}

fn pack(base: &[u8], ext: &[u8]) -> [u8; 11] {
    let mut out = [b' '; 11];
    out[..base.len()].copy_from_slice(base);
    out[8..8 + ext.len()].copy_from_slice(ext);
    out
}

/// The 11-byte directory name if `name` is a pure upper-case 8.3 name (stored without LFN entries).
pub(crate) fn plain_short_name(name: &str) -> Option<[u8; 11]> {
    let bytes = name.as_bytes();
    let (base, ext) = match name.find('.') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[][..]),
    };
    let ext_ok = if name.contains('.') {
        (1..=3).contains(&ext.len())
    } else {
        true
    };
    if base.is_empty() || base.len() > 8 || !ext_ok {
        return None;
    }
    // `is_short_char` rejects '.', so a second dot fails here.
    if !base.iter().chain(ext).all(|&b| is_short_char(b)) {
        return None;
    }
    Some(pack(base, ext))
}

/// Generates the short-name alias of a long name, like Windows and mtools: upper-case, characters
/// that are invalid in 8.3 names become '_', spaces and embedded dots are dropped, leading dots
/// are stripped, base and extension are cut to 8 and 3 characters (extension = after the last
/// dot), and a numeric tail `~N` is added when the conversion was lossy, the name did not fit 8.3,
/// or the basis is already `taken` in the directory.
pub(crate) fn short_name_for(
    name: &str,
    taken: impl Fn(&[u8; 11]) -> bool,
) -> Result<[u8; 11], FatError> {
    let mut lossy = false;
    let mut chars: Vec<u8> = Vec::with_capacity(name.len());
    for c in name.chars() {
        match c {
            ' ' => {}
            '.' => chars.push(b'.'),
            c if c.is_ascii() => {
                let u = c.to_ascii_uppercase() as u8;
                if is_short_char(u) {
                    chars.push(u);
                } else {
                    chars.push(b'_');
                    lossy = true;
                }
            }
            _ => {
                chars.push(b'_');
                lossy = true;
            }
        }
    }
    let start = chars.iter().position(|&b| b != b'.').unwrap_or(chars.len());
    let chars = &chars[start..];
    let (base_part, ext_part) = match chars.iter().rposition(|&b| b == b'.') {
        Some(i) => (&chars[..i], &chars[i + 1..]),
        None => (chars, &[][..]),
    };
    let mut base: Vec<u8> = base_part
        .iter()
        .copied()
        .filter(|&b| b != b'.')
        .take(8)
        .collect();
    if base.is_empty() {
        base.push(b'_');
        lossy = true;
    }
    let ext: Vec<u8> = ext_part.iter().copied().take(3).collect();

    let fits = name.is_ascii() && plain_short_name(&name.to_ascii_uppercase()).is_some();
    if fits && !lossy {
        let basis = pack(&base, &ext);
        if !taken(&basis) {
            return Ok(basis);
        }
    }
    for n in 1..=999_999u32 {
        let tail = format!("~{n}");
        let keep = base.len().min(8 - tail.len());
        let mut b = base[..keep].to_vec();
        b.extend_from_slice(tail.as_bytes());
        let candidate = pack(&b, &ext);
        if !taken(&candidate) {
            return Ok(candidate);
        }
    }
    Err(FatError::ShortNamesExhausted {
        name: name.to_string(),
    })
}

/// Checksum of a short name, stored in each of its LFN entries.
pub(crate) fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

/// The LFN entries for `name`, in on-disk order (last part first).
pub(crate) fn lfn_entries(name: &str, short: &[u8; 11]) -> Vec<[u8; 32]> {
    let units: Vec<u16> = name.encode_utf16().collect();
    let count = units.len().div_ceil(LFN_CHARS);
    let checksum = lfn_checksum(short);
    let mut out = Vec::with_capacity(count);
    for seq in (1..=count).rev() {
        let mut e = [0u8; 32];
        e[0] = seq as u8 | if seq == count { 0x40 } else { 0 };
        e[11] = ATTR_LFN;
        e[13] = checksum;
        for (i, &off) in LFN_OFFSETS.iter().enumerate() {
            let idx = (seq - 1) * LFN_CHARS + i;
            let unit = match idx.cmp(&units.len()) {
                std::cmp::Ordering::Less => units[idx],
                std::cmp::Ordering::Equal => 0x0000,
                std::cmp::Ordering::Greater => 0xFFFF,
            };
            e[off..off + 2].copy_from_slice(&unit.to_le_bytes());
        }
        out.push(e);
    }
    out
}

/// The 13 UTF-16 code units of one LFN entry.
pub(crate) fn lfn_units(e: &[u8]) -> [u16; LFN_CHARS] {
    let mut out = [0u16; LFN_CHARS];
    for (o, &off) in out.iter_mut().zip(LFN_OFFSETS.iter()) {
        *o = u16::from_le_bytes([e[off], e[off + 1]]);
    }
    out
}

/// Display form of a short name; `nt_flags` bits 0x08/0x10 mean lower-case base/extension.
pub(crate) fn short_display(raw: &[u8; 11], nt_flags: u8) -> String {
    let conv = |bytes: &[u8], lower: bool| -> String {
        let mut bytes = bytes.to_vec();
        if bytes.first() == Some(&0x05) {
            bytes[0] = 0xE5;
        }
        let s: String = bytes.iter().map(|&b| char::from(b)).collect();
        let s = s.trim_end_matches(' ');
        if lower {
            s.to_ascii_lowercase()
        } else {
            s.to_string()
        }
    };
    let base = conv(&raw[..8], nt_flags & 0x08 != 0);
    let ext = conv(&raw[8..], nt_flags & 0x10 != 0);
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

/// Case-folded form used for FAT's case-insensitive comparisons.
pub(crate) fn fold(name: &str) -> String {
    name.chars().flat_map(char::to_uppercase).collect()
}
