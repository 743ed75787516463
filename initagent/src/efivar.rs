//! EFI variables of the Boot Loader Interface (set by systemd-boot), as efivarfs shows
//! them: `/sys/firmware/efi/efivars/<Name>-<vendor GUID>`.
//!
//! Pure: decodes the bytes of a variable file; reading it (and mounting efivarfs) is in
//! `loader`. Nothing here panics, whatever the bytes.

use std::fmt;
use std::io;

/// Where efivarfs is mounted. On a UEFI boot sysfs provides the empty directory.
pub const EFIVARS_DIR: &str = "/sys/firmware/efi/efivars";
/// Vendor GUID of the Boot Loader Interface variables.
pub const LOADER_VENDOR: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// PARTUUID of the partition (the ESP) the boot loader was loaded from.
pub const LOADER_DEVICE_PART_UUID: &str = "LoaderDevicePartUUID";
/// Identifier of the boot entry the boot loader started (a BLS entry file name).
pub const LOADER_ENTRY_SELECTED: &str = "LoaderEntrySelected";
/// Larger files are not Boot Loader Interface strings.
pub const MAX_VARIABLE_SIZE: usize = 4096;

/// efivarfs prefixes the value with its 32-bit attributes.
const ATTRIBUTES_LEN: usize = 4;

/// The UEFI global variables' vendor GUID (`SecureBoot` is one).
pub const GLOBAL_VENDOR: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// `SecureBoot-<global GUID>`.
pub fn secure_boot_path() -> String {
    format!("{EFIVARS_DIR}/SecureBoot-{GLOBAL_VENDOR}")
}

/// A one-byte boolean variable (`SecureBoot`): 4 bytes of attributes, then 0 or 1.
pub fn decode_flag(bytes: &[u8]) -> Option<bool> {
    match bytes {
        [_, _, _, _, 0] => Some(false),
        [_, _, _, _, 1] => Some(true),
        _ => None,
    }
}

/// The efivarfs path of the Boot Loader Interface variable `name`.
pub fn loader_variable_path(name: &str) -> String {
    format!("{EFIVARS_DIR}/{name}-{LOADER_VENDOR}")
}

/// The text of a string variable: 4 bytes of attributes, then UTF-16LE, normally
/// NUL-terminated. The text ends at the first NUL (or at the end without one); a final
/// odd byte is ignored. None if the attributes are missing, the file is larger than
/// `MAX_VARIABLE_SIZE`, the text is empty, not valid UTF-16 or contains control characters.
pub fn decode_string(bytes: &[u8]) -> Option<String> {
    if bytes.len() > MAX_VARIABLE_SIZE {
        return None;
    }
    let data = bytes.get(ATTRIBUTES_LEN..)?;
    let units = data
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .take_while(|&unit| unit != 0);
    let mut text = String::new();
    for c in char::decode_utf16(units) {
        let c = c.ok()?;
        if c.is_control() {
            return None;
        }
        text.push(c);
    }
    (!text.is_empty()).then_some(text)
}

/// A GUID in the canonical 8-4-4-4-12 hex form (either case), lowercased; None otherwise.
pub fn normalize_guid(text: &str) -> Option<String> {
    let groups: Vec<&str> = text.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let hex = groups
        .iter()
        .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    (lengths == [8, 4, 4, 4, 12] && hex).then(|| text.to_ascii_lowercase())
}

/// `LoaderDevicePartUUID`: the boot partition's PARTUUID, lowercase (as in uevent files).
pub fn decode_part_uuid(bytes: &[u8]) -> Option<String> {
    normalize_guid(&decode_string(bytes)?)
}

/// What looking up one variable gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(String),
    /// Not set, or no efivarfs (not booted through UEFI, or it could not be mounted).
    Absent,
    /// Set, but not what the Boot Loader Interface defines.
    Invalid,
    /// Reading failed for another reason than absence.
    Unreadable(String),
}

impl Lookup {
    /// Interprets the result of reading a variable file with `decode`.
    pub fn from_read(read: io::Result<Vec<u8>>, decode: fn(&[u8]) -> Option<String>) -> Lookup {
        match read {
            Ok(bytes) => decode(&bytes).map_or(Lookup::Invalid, Lookup::Found),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Lookup::Absent,
            Err(e) => Lookup::Unreadable(e.to_string()),
        }
    }

    pub fn value(&self) -> Option<&str> {
        match self {
            Lookup::Found(value) => Some(value),
            _ => None,
        }
    }

    /// Why there is no value, for messages: `no LoaderEntrySelected`,
    /// `invalid LoaderEntrySelected`, `cannot read LoaderEntrySelected: ...`.
    pub fn problem(&self, name: &str) -> Option<String> {
        match self {
            Lookup::Found(_) => None,
            Lookup::Absent => Some(format!("no {name}")),
            Lookup::Invalid => Some(format!("invalid {name}")),
            Lookup::Unreadable(e) => Some(format!("cannot read {name}: {e}")),
        }
    }
}

/// The selected boot entry for log lines: the name, or `unknown`.
pub struct EntryName<'a>(pub &'a Lookup);

impl fmt::Display for EntryName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.value().unwrap_or("unknown"))
    }
}

/// The initramfs stage's line about the boot entry:
/// `boot entry p6os-1.0.0-a.conf` or `boot entry unknown (no LoaderEntrySelected)`.
pub fn describe_entry(entry: &Lookup) -> String {
    match entry.problem(LOADER_ENTRY_SELECTED) {
        None => format!("boot entry {}", EntryName(entry)),
        Some(problem) => format!("boot entry unknown ({problem})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_boot_is_one_byte_after_the_attributes() {
        assert_eq!(decode_flag(&[6, 0, 0, 0, 1]), Some(true));
        assert_eq!(decode_flag(&[6, 0, 0, 0, 0]), Some(false));
        for bad in [
            &[][..],
            &[6, 0, 0, 0],
            &[6, 0, 0, 0, 2],
            &[6, 0, 0, 0, 1, 0],
        ] {
            assert_eq!(decode_flag(bad), None, "{bad:?}");
        }
        assert!(secure_boot_path().ends_with("/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"));
    }

    /// A variable file as efivarfs shows it: attributes, then `text` in UTF-16LE.
    fn var(text: &str, nul: bool) -> Vec<u8> {
        let mut bytes = 0x0000_0006u32.to_le_bytes().to_vec();
        for unit in text.encode_utf16().chain(nul.then_some(0)) {
            bytes.extend(unit.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn paths() {
        assert_eq!(
            loader_variable_path(LOADER_ENTRY_SELECTED),
            "/sys/firmware/efi/efivars/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
        );
    }

    #[test]
    fn decodes_entry_names() {
        let name = "p6os-1.0.0-a.conf";
        assert_eq!(decode_string(&var(name, true)).as_deref(), Some(name));
        // The NUL is optional; attributes do not matter.
        assert_eq!(decode_string(&var(name, false)).as_deref(), Some(name));
        let mut other_attrs = var(name, true);
        other_attrs[..4].copy_from_slice(&[0xff; 4]);
        assert_eq!(decode_string(&other_attrs).as_deref(), Some(name));
        // Text ends at the first NUL.
        let mut two = var("first", true);
        two.extend(&var("second", true)[4..]);
        assert_eq!(decode_string(&two).as_deref(), Some("first"));
        // Beyond ASCII, including a surrogate pair.
        assert_eq!(decode_string(&var("é😀 x", true)).as_deref(), Some("é😀 x"));
    }

    #[test]
    fn odd_lengths_drop_the_last_byte() {
        let mut bytes = var("ab", true);
        bytes.push(b'c');
        assert_eq!(decode_string(&bytes).as_deref(), Some("ab"));
        let mut bytes = var("ab", false);
        bytes.push(0);
        assert_eq!(decode_string(&bytes).as_deref(), Some("ab"));
        // Attributes and half a unit.
        assert_eq!(decode_string(&[6, 0, 0, 0, b'a']), None);
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(decode_string(&[]), None);
        assert_eq!(decode_string(&[6, 0, 0]), None);
        assert_eq!(decode_string(&[6, 0, 0, 0]), None);
        assert_eq!(decode_string(&var("", true)), None);
        // Lone surrogates.
        assert_eq!(decode_string(&[6, 0, 0, 0, 0x00, 0xd8, b'a', 0]), None);
        assert_eq!(decode_string(&[6, 0, 0, 0, 0x00, 0xdc]), None);
        // Control characters would break log lines.
        assert_eq!(decode_string(&var("a\nb", true)), None);
        assert_eq!(decode_string(&var("a\u{7f}", true)), None);
        // Too large to be a boot loader string.
        let mut huge = var("x", false);
        huge.resize(MAX_VARIABLE_SIZE + 1, b'x');
        assert_eq!(decode_string(&huge), None);
    }

    #[test]
    fn never_panics_on_any_short_input() {
        for len in 0..12 {
            for fill in [0u8, 0x41, 0xd8, 0xdc, 0xff] {
                let bytes = vec![fill; len];
                let _ = decode_string(&bytes);
                let _ = decode_part_uuid(&bytes);
            }
        }
    }

    #[test]
    fn part_uuids() {
        let uuid = "5E7A3B4C-1D2E-4F60-8A9B-0C1D2E3F4A5B";
        assert_eq!(
            decode_part_uuid(&var(uuid, true)).as_deref(),
            Some("5e7a3b4c-1d2e-4f60-8a9b-0c1d2e3f4a5b")
        );
        assert_eq!(
            decode_part_uuid(&var(&uuid.to_lowercase(), false)).as_deref(),
            Some("5e7a3b4c-1d2e-4f60-8a9b-0c1d2e3f4a5b")
        );
        for bad in [
            "5E7A3B4C1D2E4F608A9B0C1D2E3F4A5B",
            "5E7A3B4C-1D2E-4F60-8A9B-0C1D2E3F4A5",
            "5E7A3B4C-1D2E-4F60-8A9B-0C1D2E3F4A5G",
            "{5E7A3B4C-1D2E-4F60-8A9B-0C1D2E3F4A5B}",
            " 5E7A3B4C-1D2E-4F60-8A9B-0C1D2E3F4A5B",
            "5E7A3B4C-1D2E-4F60-8A9B-0C1D2E3F4A5B-",
            "+E7A3B4C-1D2E-4F60-8A9B-0C1D2E3F4A5B",
        ] {
            assert_eq!(decode_part_uuid(&var(bad, true)), None, "{bad}");
        }
    }

    #[test]
    fn lookups() {
        let found = Lookup::from_read(Ok(var("p6os-1.0.0-a.conf", true)), decode_string);
        assert_eq!(found, Lookup::Found("p6os-1.0.0-a.conf".into()));
        assert_eq!(describe_entry(&found), "boot entry p6os-1.0.0-a.conf");
        assert_eq!(EntryName(&found).to_string(), "p6os-1.0.0-a.conf");

        let absent = Lookup::from_read(Err(io::ErrorKind::NotFound.into()), decode_string);
        assert_eq!(absent, Lookup::Absent);
        assert_eq!(
            describe_entry(&absent),
            "boot entry unknown (no LoaderEntrySelected)"
        );
        assert_eq!(EntryName(&absent).to_string(), "unknown");

        let invalid = Lookup::from_read(Ok(vec![1, 2]), decode_string);
        assert_eq!(invalid, Lookup::Invalid);
        assert_eq!(
            describe_entry(&invalid),
            "boot entry unknown (invalid LoaderEntrySelected)"
        );

        let failed = Lookup::from_read(Err(io::Error::from_raw_os_error(libc::EIO)), decode_string);
        assert_eq!(
            describe_entry(&failed),
            "boot entry unknown (cannot read LoaderEntrySelected: Input/output error (os error 5))"
        );
        assert_eq!(EntryName(&failed).to_string(), "unknown");
    }
}
