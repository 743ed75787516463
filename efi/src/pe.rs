//! PE32+ images, as far as UEFI boot needs them: the header fields that unified kernel images
//! and Authenticode touch, read strictly from bytes (every offset checked; never panics on
//! untrusted input — the `pe` fuzz target).

use crate::EfiError;

/// `IMAGE_NT_OPTIONAL_HDR64_MAGIC`.
const PE32_PLUS: u16 = 0x20b;
/// Bytes of one section header.
pub const SECTION_HEADER: usize = 40;
/// The security (certificate table) data directory's index.
const SECURITY_DIRECTORY: u32 = 4;

/// One section header's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub raw_size: u32,
    pub raw_offset: u32,
}

/// Where the fields live in one image, and their values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The COFF file header (after `PE\0\0`).
    pub coff: usize,
    /// The optional header.
    pub optional: usize,
    /// The optional header's CheckSum field.
    pub checksum: usize,
    /// The certificate table's data directory entry (offset, size).
    pub cert_directory: usize,
    pub section_table: usize,
    pub sections: Vec<Section>,
    pub size_of_headers: usize,
    pub section_alignment: u32,
    pub file_alignment: u32,
    /// The certificate table: `(file offset, size)`, zero when unsigned.
    pub cert_table: (u32, u32),
}

pub(crate) fn u16_at(d: &[u8], at: usize) -> Result<u16, EfiError> {
    let b = d.get(at..at + 2).ok_or(EfiError::Truncated(at))?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

pub(crate) fn u32_at(d: &[u8], at: usize) -> Result<u32, EfiError> {
    let b = d.get(at..at + 4).ok_or(EfiError::Truncated(at))?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub(crate) fn put_u16(d: &mut [u8], at: usize, v: u16) {
    d[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u32(d: &mut [u8], at: usize, v: u32) {
    d[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

impl Layout {
    /// Reads the headers of a PE32+ image.
    pub fn parse(d: &[u8]) -> Result<Layout, EfiError> {
        if d.get(0..2) != Some(b"MZ") {
            return Err(EfiError::NotPe("no MZ signature"));
        }
        let pe = u32_at(d, 0x3c)? as usize;
        if pe.checked_add(24).is_none_or(|end| end > d.len()) || &d[pe..pe + 4] != b"PE\0\0" {
            return Err(EfiError::NotPe("no PE signature"));
        }
        let coff = pe + 4;
        let count = u16_at(d, coff + 2)? as usize;
        let optional_size = u16_at(d, coff + 16)? as usize;
        let optional = coff + 20;
        if u16_at(d, optional)? != PE32_PLUS {
            return Err(EfiError::NotPe("not PE32+"));
        }
        let directories = u32_at(d, optional + 108)?;
        if directories <= SECURITY_DIRECTORY {
            return Err(EfiError::NotPe("no certificate table directory"));
        }
        let cert_directory = optional + 112 + 8 * SECURITY_DIRECTORY as usize;
        if cert_directory + 8 > optional + optional_size {
            return Err(EfiError::NotPe("optional header too small"));
        }
        let section_table = optional + optional_size;
        let size_of_headers = u32_at(d, optional + 60)? as usize;
        if section_table + count * SECTION_HEADER > size_of_headers || size_of_headers > d.len() {
            return Err(EfiError::NotPe("section table beyond the headers"));
        }
        let mut sections = Vec::with_capacity(count);
        for i in 0..count {
            let at = section_table + i * SECTION_HEADER;
            let name = &d[at..at + 8];
            let name_len = name.iter().position(|&b| b == 0).unwrap_or(8);
            let s = Section {
                name: String::from_utf8_lossy(&name[..name_len]).into_owned(),
                virtual_size: u32_at(d, at + 8)?,
                virtual_address: u32_at(d, at + 12)?,
                raw_size: u32_at(d, at + 16)?,
                raw_offset: u32_at(d, at + 20)?,
            };
            if s.raw_offset as u64 + s.raw_size as u64 > d.len() as u64 {
                return Err(EfiError::NotPe("a section runs past the end of the file"));
            }
            sections.push(s);
        }
        let cert_table = (u32_at(d, cert_directory)?, u32_at(d, cert_directory + 4)?);
        let section_alignment = u32_at(d, optional + 32)?;
        let file_alignment = u32_at(d, optional + 36)?;
        if !section_alignment.is_power_of_two() || !file_alignment.is_power_of_two() {
            return Err(EfiError::NotPe("alignment is not a power of two"));
        }
        Ok(Layout {
            coff,
            optional,
            checksum: optional + 64,
            cert_directory,
            section_table,
            sections,
            size_of_headers,
            section_alignment,
            file_alignment,
            cert_table,
        })
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    pub fn is_signed(&self) -> bool {
        self.cert_table != (0, 0)
    }
}

/// The bytes of section `name` (its virtual size: what the stub reads).
pub fn section_data<'a>(d: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, EfiError> {
    let layout = Layout::parse(d)?;
    Ok(layout.section(name).map(|s| {
        let len = s.virtual_size.min(s.raw_size) as usize;
        &d[s.raw_offset as usize..s.raw_offset as usize + len]
    }))
}
