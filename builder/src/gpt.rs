//! GUID partition tables on image files and devices: the I/O around the contract's pure
//! [`p6os_layout::gpt`] (layout value, encoding, strict parser).

use std::io::{self, Read, Seek, SeekFrom, Write};

pub use p6os_layout::gpt::{Gpt, GptError as InvalidGpt, Partition, ALIGN_SECTORS, SECTOR};
pub use p6os_layout::partition::{TYPE_ESP, TYPE_ROOT_X86_64, TYPE_VAR};

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("i/o")]
    Io(#[from] io::Error),
    #[error("no GPT found")]
    Invalid(#[from] InvalidGpt),
    #[error(
        "unsupported GPT: {block_size}-byte sectors, {count} entries of {size} bytes \
         (P6OS images use 512-byte sectors and at most 128 entries of 128 bytes)"
    )]
    Unsupported {
        block_size: u64,
        count: u32,
        size: u32,
    },
}

/// Writes MBR, primary and backup tables into a device of exactly `gpt.sectors` sectors.
pub fn write(gpt: &Gpt, dev: &mut (impl Write + Seek)) -> io::Result<()> {
    for (at, bytes) in gpt.encode() {
        dev.seek(SeekFrom::Start(at))?;
        dev.write_all(&bytes)?;
    }
    Ok(())
}

/// Reads and checks the primary table (header and entry array CRCs).
pub fn read(dev: &mut (impl Read + Seek)) -> Result<Gpt, GptError> {
    {
        let total = dev.seek(SeekFrom::End(0))?;
        dev.seek(SeekFrom::Start(0))?;
        let mut head = Vec::new();
        dev.take(p6os_layout::gpt::HEAD_LEN as u64 + p6os_layout::gpt::MAX_ENTRIES_LEN)
            .read_to_end(&mut head)?;
        let header = p6os_layout::gpt::parse_header(&head)?;
        // What the builder's `Gpt` can describe and write back: 512-byte sectors and 128
        // entries of 128 bytes (a 4Kn table or a longer array would be rewritten wrongly).
        if header.block_size != SECTOR
            || header.entry_size as usize != p6os_layout::gpt::ENTRY_SIZE
            || header.entry_count as usize > p6os_layout::gpt::ENTRIES
        {
            return Err(GptError::Unsupported {
                block_size: header.block_size,
                count: header.entry_count,
                size: header.entry_size,
            });
        }
        let start = header.entries_offset;
        let len = header.entries_len();
        if start.saturating_add(len) > total {
            return Err(InvalidGpt::EntryArray {
                count: header.entry_count,
                size: header.entry_size,
                lba: start / header.block_size,
            }
            .into());
        }
        let mut array = vec![0u8; len as usize];
        dev.seek(SeekFrom::Start(start))?;
        dev.read_exact(&mut array)?;
        Ok(Gpt {
            disk_guid: header.disk_guid,
            sectors: total / header.block_size,
            partitions: p6os_layout::gpt::parse_entries(&array, &header)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

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
        write(&gpt, &mut f).unwrap();
        drop(f);
        let back = read(&mut std::fs::File::open(&path).unwrap()).unwrap();
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
    fn refuses_tables_it_could_not_write_back() {
        let gpt = sample();
        let mut bytes = vec![0u8; gpt.size_bytes() as usize];
        // The same table with 4096-byte sectors: the header at byte 4096.
        let [(_, head), _] = gpt.encode();
        let mut header = head[512..1024].to_vec();
        header[72..80].copy_from_slice(&2u64.to_le_bytes());
        header[16..20].fill(0);
        let crc = crc32fast::hash(&header[..92]);
        header[16..20].copy_from_slice(&crc.to_le_bytes());
        bytes[4096..4608].copy_from_slice(&header);
        bytes[8192..8192 + 16384].copy_from_slice(&head[1024..1024 + 16384]);
        let err = read(&mut io::Cursor::new(bytes)).unwrap_err();
        assert!(err.to_string().contains("4096-byte sectors"), "{err}");
    }

    #[test]
    fn detects_corruption() {
        let gpt = sample();
        let mut buf = io::Cursor::new(vec![0u8; gpt.size_bytes() as usize]);
        write(&gpt, &mut buf).unwrap();
        buf.get_mut()[2 * 512 + 60] ^= 1;
        let err = read(&mut buf).unwrap_err();
        let text = p6os_config::diag::error_chain(&err);
        assert!(text.contains("entry array CRC"), "{text}");
    }
}
