//! GUID partition tables: a pure layout value, its on-disk encoding (protective MBR, primary and
//! backup headers and entry arrays) and a reader for inspection.

use std::io::{self, Read, Seek, SeekFrom, Write};

use uuid::Uuid;

pub const SECTOR: u64 = 512;
const ENTRY_SIZE: usize = 128;
const ENTRIES: usize = 128;
/// Sectors taken by the entry array (128 entries of 128 bytes).
const ARRAY_SECTORS: u64 = (ENTRIES * ENTRY_SIZE) as u64 / SECTOR;

pub const TYPE_ESP: Uuid = uuid::uuid!("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
/// Discoverable Partitions Specification: root, x86-64.
pub const TYPE_ROOT_X86_64: Uuid = uuid::uuid!("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
/// Discoverable Partitions Specification: variable data (/var).
pub const TYPE_VAR: Uuid = uuid::uuid!("4D21B016-B534-45C2-A9FB-5C16E091FD2D");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub number: u32,
    pub label: String,
    pub type_guid: Uuid,
    pub guid: Uuid,
    pub first_lba: u64,
    pub last_lba: u64,
}

impl Partition {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn size(&self) -> u64 {
        (self.last_lba - self.first_lba + 1) * SECTOR
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt {
    pub disk_guid: Uuid,
    /// Total disk size in sectors.
    pub sectors: u64,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("no GPT found: {0}")]
    Invalid(String),
}

/// First usable LBA when partitions start on 1 MiB boundaries.
pub const ALIGN_SECTORS: u64 = 2048;

impl Gpt {
    /// Lays partitions out back to back from 1 MiB, each `size` bytes (multiples of 1 MiB),
    /// with the backup table in the last 33 sectors after 1 MiB of slack.
    pub fn layout(disk_guid: Uuid, parts: &[(&str, Uuid, Uuid, u64)]) -> Gpt {
        let mut lba = ALIGN_SECTORS;
        let mut partitions = Vec::new();
        for (i, (label, type_guid, guid, size)) in parts.iter().enumerate() {
            let sectors = size / SECTOR;
            partitions.push(Partition {
                number: i as u32 + 1,
                label: label.to_string(),
                type_guid: *type_guid,
                guid: *guid,
                first_lba: lba,
                last_lba: lba + sectors - 1,
            });
            lba += sectors;
        }
        Gpt {
            disk_guid,
            sectors: lba + ALIGN_SECTORS,
            partitions,
        }
    }

    pub fn size_bytes(&self) -> u64 {
        self.sectors * SECTOR
    }

    pub fn by_label(&self, label: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.label == label)
    }

    fn entry_array(&self) -> Vec<u8> {
        let mut a = vec![0u8; ENTRIES * ENTRY_SIZE];
        for p in &self.partitions {
            let e = &mut a[(p.number as usize - 1) * ENTRY_SIZE..][..ENTRY_SIZE];
            e[0..16].copy_from_slice(&p.type_guid.to_bytes_le());
            e[16..32].copy_from_slice(&p.guid.to_bytes_le());
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            for (i, u) in p.label.encode_utf16().take(36).enumerate() {
                e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
            }
        }
        a
    }

    fn header(
        &self,
        current: u64,
        backup: u64,
        array_lba: u64,
        array_crc: u32,
    ) -> [u8; SECTOR as usize] {
        let mut h = [0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + ARRAY_SECTORS).to_le_bytes());
        h[48..56].copy_from_slice(&(self.sectors - 2 - ARRAY_SECTORS).to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_bytes_le());
        h[72..80].copy_from_slice(&array_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    fn protective_mbr(&self) -> [u8; SECTOR as usize] {
        let mut m = [0u8; SECTOR as usize];
        let e = &mut m[446..462];
        e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        e[4] = 0xEE;
        e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        let n = (self.sectors - 1).min(u32::MAX as u64) as u32;
        e[12..16].copy_from_slice(&n.to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xAA;
        m
    }

    /// Writes MBR, primary and backup tables into a device of exactly `self.sectors` sectors.
    pub fn write(&self, dev: &mut (impl Write + Seek)) -> io::Result<()> {
        let array = self.entry_array();
        let crc = crc32fast::hash(&array);
        let last = self.sectors - 1;
        dev.seek(SeekFrom::Start(0))?;
        dev.write_all(&self.protective_mbr())?;
        dev.write_all(&self.header(1, last, 2, crc))?;
        dev.write_all(&array)?;
        dev.seek(SeekFrom::Start((last - ARRAY_SECTORS) * SECTOR))?;
        dev.write_all(&array)?;
        dev.write_all(&self.header(last, 1, last - ARRAY_SECTORS, crc))?;
        Ok(())
    }

    /// Reads and checks the primary table (header and entry array CRCs).
    pub fn read(dev: &mut (impl Read + Seek)) -> Result<Gpt, GptError> {
        let total = dev.seek(SeekFrom::End(0))?;
        let mut h = [0u8; SECTOR as usize];
        dev.seek(SeekFrom::Start(SECTOR))?;
        dev.read_exact(&mut h)?;
        if &h[0..8] != b"EFI PART" {
            return Err(GptError::Invalid("no `EFI PART` signature at LBA 1".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
        let hsize = u32_at(12) as usize;
        if !(92..=512).contains(&hsize) {
            return Err(GptError::Invalid(format!("header size {hsize}")));
        }
        let mut check = h;
        check[16..20].fill(0);
        if crc32fast::hash(&check[..hsize]) != u32_at(16) {
            return Err(GptError::Invalid("header CRC mismatch".into()));
        }
        let (array_lba, count, esize) = (u64_at(72), u32_at(80) as usize, u32_at(84) as usize);
        if esize != ENTRY_SIZE
            || count > 1024
            || array_lba.saturating_add(((count * esize) as u64).div_ceil(SECTOR)) > total / SECTOR
        {
            return Err(GptError::Invalid(format!(
                "unsupported entry array ({count} entries of {esize} bytes at LBA {array_lba})"
            )));
        }
        let mut array = vec![0u8; count * esize];
        dev.seek(SeekFrom::Start(array_lba * SECTOR))?;
        dev.read_exact(&mut array)?;
        if crc32fast::hash(&array) != u32_at(88) {
            return Err(GptError::Invalid("entry array CRC mismatch".into()));
        }
        let disk_guid = Uuid::from_bytes_le(h[56..72].try_into().expect("16 bytes"));
        let mut partitions = Vec::new();
        for i in 0..count {
            let e = &array[i * esize..][..esize];
            let type_guid = Uuid::from_bytes_le(e[0..16].try_into().expect("16 bytes"));
            if type_guid.is_nil() {
                continue;
            }
            let first_lba = u64::from_le_bytes(e[32..40].try_into().expect("8 bytes"));
            let last_lba = u64::from_le_bytes(e[40..48].try_into().expect("8 bytes"));
            if last_lba < first_lba {
                return Err(GptError::Invalid(format!(
                    "partition {} ends before it starts",
                    i + 1
                )));
            }
            let units: Vec<u16> = e[56..128]
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|u| *u != 0)
                .collect();
            partitions.push(Partition {
                number: i as u32 + 1,
                label: String::from_utf16_lossy(&units),
                type_guid,
                guid: Uuid::from_bytes_le(e[16..32].try_into().expect("16 bytes")),
                first_lba,
                last_lba,
            });
        }
        Ok(Gpt {
            disk_guid,
            sectors: total / SECTOR,
            partitions,
        })
    }

    /// A stable text dump (for golden files).
    pub fn dump(&self) -> String {
        let mut s = format!("disk {} sectors={}\n", self.disk_guid, self.sectors);
        for p in &self.partitions {
            s += &format!(
                "{} {:<12} type={} guid={} lba={}..{} ({} MiB)\n",
                p.number,
                p.label,
                p.type_guid.to_string().to_uppercase(),
                p.guid,
                p.first_lba,
                p.last_lba,
                p.size() >> 20
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Gpt {
        let g = |n: u128| Uuid::from_u128(n);
        Gpt::layout(
            g(1),
            &[
                ("p6os-esp", TYPE_ESP, g(2), 34 << 20),
                ("p6os-root-a", TYPE_ROOT_X86_64, g(3), 8 << 20),
            ],
        )
    }

    #[test]
    fn round_trips_and_passes_sgdisk() {
        let gpt = sample();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let mut f = std::fs::File::create(&path).unwrap();
        f.set_len(gpt.size_bytes()).unwrap();
        gpt.write(&mut f).unwrap();
        drop(f);
        let back = Gpt::read(&mut std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(back, gpt);
        let out = std::process::Command::new("sgdisk")
            .arg("-v")
            .arg(&path)
            .output()
            .expect("sgdisk (package gdisk) is needed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("No problems found"),
            "sgdisk -v: {text}"
        );
    }

    #[test]
    fn detects_corruption() {
        let gpt = sample();
        let mut buf = io::Cursor::new(vec![0u8; gpt.size_bytes() as usize]);
        gpt.write(&mut buf).unwrap();
        buf.get_mut()[2 * 512 + 60] ^= 1;
        let err = Gpt::read(&mut buf).unwrap_err();
        assert!(err.to_string().contains("entry array CRC"), "{err}");
    }
}
