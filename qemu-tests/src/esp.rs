//! The ESP of a disk image, checked from the host with `fsck.vfat -n` (dosfstools) while the
//! guest has it unmounted.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Byte range of the first GPT partition (the ESP in P6OS images), from the primary table.
fn first_partition(disk: &mut File) -> Result<(u64, u64)> {
    let mut header = [0u8; 512];
    disk.seek(SeekFrom::Start(512))?;
    disk.read_exact(&mut header)?;
    if &header[..8] != b"EFI PART" {
        bail!("no GPT header at LBA 1");
    }
    let entries_lba = u64::from_le_bytes(header[72..80].try_into()?);
    let mut entry = [0u8; 128];
    disk.seek(SeekFrom::Start(entries_lba * 512))?;
    disk.read_exact(&mut entry)?;
    let first = u64::from_le_bytes(entry[32..40].try_into()?);
    let last = u64::from_le_bytes(entry[40..48].try_into()?);
    if first == 0 || last < first {
        bail!("the first GPT entry is empty");
    }
    Ok((first * 512, (last - first + 1) * 512))
}

/// Runs `fsck.vfat -n` on the image's ESP (copied out: fsck has no offset option). `Ok` with
/// fsck's output when it exits 0 and says nothing besides its version and summary lines,
/// else an error with the output.
pub fn fsck(disk_image: &Path) -> Result<String> {
    let mut disk = File::open(disk_image).with_context(|| format!("{}", disk_image.display()))?;
    let (offset, size) = first_partition(&mut disk)?;
    let part = tempfile::NamedTempFile::new()?;
    {
        let mut dst = part.reopen()?;
        disk.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            disk.read_exact(&mut buf[..n])?;
            if buf[..n].iter().any(|&b| b != 0) {
                dst.write_all(&buf[..n])?;
            } else {
                dst.seek(SeekFrom::Current(n as i64))?;
            }
            left -= n as u64;
        }
        dst.set_len(size)?;
    }
    let fsck = ["/usr/sbin/fsck.vfat", "/sbin/fsck.vfat"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("fsck.vfat");
    let out = Command::new(fsck)
        .arg("-n")
        .arg(part.path())
        .output()
        .with_context(|| format!("running {fsck} (install dosfstools)"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let complaints = text
        .lines()
        .filter(|l| !l.starts_with("fsck.fat ") && !l.contains(" files, "))
        .count();
    if !out.status.success() || complaints > 0 {
        bail!("fsck.vfat -n ({}):\n{text}", out.status);
    }
    Ok(text)
}

/// `mtools` on the image's ESP: `-i IMAGE@@OFFSET`.
fn mtools(disk_image: &Path, program: &str, args: &[&str]) -> Result<Vec<u8>> {
    let (offset, _) = first_partition(&mut File::open(disk_image)?)?;
    let out = Command::new(program)
        .arg("-i")
        .arg(format!("{}@@{offset}", disk_image.display()))
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .with_context(|| format!("running {program} (install mtools)"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// A file of the image's ESP (`/p6os/a/p6os.efi`), read from the host.
pub fn read_file(disk_image: &Path, path: &str) -> Result<Vec<u8>> {
    let tmp = tempfile::NamedTempFile::new()?;
    let dest = tmp.path().to_str().context("temp path")?.to_string();
    mtools(disk_image, "mcopy", &["-o", &format!("::{path}"), &dest])?;
    Ok(std::fs::read(tmp.path())?)
}

/// Replaces a file of the image's ESP from the host (what someone with the disk can do).
pub fn write_file(disk_image: &Path, path: &str, data: &[u8]) -> Result<()> {
    let tmp = tempfile::NamedTempFile::new()?;
    std::fs::write(tmp.path(), data)?;
    let src = tmp.path().to_str().context("temp path")?.to_string();
    mtools(disk_image, "mcopy", &["-o", &src, &format!("::{path}")])?;
    Ok(())
}
