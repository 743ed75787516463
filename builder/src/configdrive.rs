//! `p6os config drive TARGET FILE`: a configuration drive, the USB stick a site operator plugs
//! into an appliance. One FAT32 filesystem labelled `P6OS-CONFIG` over the whole target, with no
//! partition table (the agent probes whole disks and partitions alike), holding
//! `/unattended.yaml` and, for a signed document, `/unattended.yaml.sig` beside it: what the
//! agent's `firstboot::source` looks for (`DRIVE_LABELS`, `DRIVE_FILES`, `SIGNATURE_SUFFIX`).
//!
//! [`plan`] is pure: the filesystem made in memory by `p6os_fat::format`, as the writes it
//! does and the ranges to clear before them. [`write`] checks the document, opens the confirmed
//! target as `p6os flash` does (nothing is written unless the opened descriptor is the target
//! that was checked and confirmed), clears, writes, syncs, and reads back: every written byte,
//! the files through `p6os_fat`'s reader, and a clean repair plan (no stale allocation left).
//! The checks before ([`crate::flash::check`]) are the caller's, as for `p6os flash`.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::diag::Diagnostics;
use crate::fat::{self, FatError, FatFile, FatVolume, FormatOptions, VolumeLabel};
use crate::flash::check::{self, Confirm};
use crate::flash::identity::Identity;
use crate::flash::open::{open_target, same_file};
use crate::flash::target::Force;
use crate::flash::{drop_caches, zero_range, FlashError};

/// The filesystem label the agent looks for (the first of its `DRIVE_LABELS`).
pub const LABEL: &str = "P6OS-CONFIG";
/// Where the document goes on the drive (the first of the agent's `DRIVE_FILES`).
pub const DOCUMENT_PATH: &str = "/unattended.yaml";
/// Its detached signature, beside it.
pub const SIGNATURE_PATH: &str = "/unattended.yaml.sig";
/// A regular file smaller than this (a new, empty one) is made this size first; larger files
/// keep theirs. It stays sparse: a few MiB at most are allocated.
pub const FILE_SIZE: u64 = 64 << 20;
/// The end of the target is cleared too: a backup GPT or a RAID superblock left there by the
/// medium's earlier life would still be found by other tools.
const TAIL_CLEARED: u64 = 1 << 20;
/// The cleared start is rounded up to this (aligned for `BLKZEROOUT`).
const CLEAR_ALIGN: u64 = 1 << 20;
/// Zeros written per call where the kernel cannot zero a range itself.
const ZERO_CHUNK: usize = 1 << 20;

/// The smallest target: one FAT32 volume (what `p6os_fat` makes), about 33 MiB.
pub fn min_size() -> u64 {
    fat::min_volume_size()
}

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// The document has problems: every one of them.
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error("{path} is not a configuration signature: {source}\n  hint: make it with `p6os config sign`, or remove it to write the document unsigned")]
    Signature {
        path: String,
        #[source]
        source: p6os_bundle::configsig::ConfigSigError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: cannot make the filesystem: {source}")]
    Fat {
        path: PathBuf,
        #[source]
        source: FatError,
    },
    #[error("{path} is no longer the target that was confirmed: it was {confirmed}, it is now {now}; nothing was written\n  hint: a disk was swapped (or a loop device re-attached) after the confirmation; run the command again and check the target")]
    TargetChanged {
        path: PathBuf,
        confirmed: Box<Identity>,
        now: Box<Identity>,
    },
    #[error(
        "verification failed: {path}: {what}\n  hint: the medium may be failing; try another one"
    )]
    Verify { path: PathBuf, what: String },
    #[error(transparent)]
    Open(FlashError),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> DriveError + '_ {
    move |source| DriveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl From<FlashError> for DriveError {
    fn from(e: FlashError) -> Self {
        match e {
            FlashError::TargetChanged {
                path,
                confirmed,
                now,
            } => DriveError::TargetChanged {
                path,
                confirmed,
                now,
            },
            FlashError::Io { path, source } => DriveError::Io { path, source },
            other => DriveError::Open(other),
        }
    }
}

/// A document and its signature as they go on a drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    pub document: Vec<u8>,
    pub signature: Option<Vec<u8>>,
}

/// Checks `document` exactly as `p6os validate unattended` does (`name` is the file the
/// diagnostics name), and that `signature`, when given, is a configuration signature (whether
/// its key is trusted is the device's business, as for `p6os config inject`).
pub fn check(name: &Path, document: &[u8], signature: Option<&[u8]>) -> Result<(), DriveError> {
    let text = std::str::from_utf8(document).map_err(|e| {
        DriveError::Invalid(Diagnostics::file_error(
            name,
            format!("is not UTF-8 text ({e})"),
        ))
    })?;
    p6os_config::unattended::load(name, text).map_err(DriveError::Invalid)?;
    if let Some(sig) = signature {
        p6os_bundle::configsig::ConfigSignature::parse(sig).map_err(|source| {
            DriveError::Signature {
                path: crate::inject::signature_path(name).display().to_string(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Reads `file`, and `file.sig` when it exists beside it (as `p6os config inject` does), and
/// [`check`]s them.
pub fn read(file: &Path) -> Result<Contents, DriveError> {
    let document = std::fs::read(file).map_err(|e| {
        DriveError::Invalid(Diagnostics::file_error(file, format!("cannot read: {e}")))
    })?;
    let sig_file = crate::inject::signature_path(file);
    let signature = match std::fs::read(&sig_file) {
        Ok(sig) => Some(sig),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_at(&sig_file)(e)),
    };
    check(file, &document, signature.as_deref())?;
    Ok(Contents {
        document,
        signature,
    })
}

/// Where every byte of a new drive goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Bytes of the filesystem, from the target's first byte.
    pub volume_size: u64,
    /// `(offset, length)` to zero before the writes: from the start through the filesystem's
    /// last written byte (`p6os_fat::format` writes only what is not zero, so stale bytes in
    /// its tables would be allocations), and the target's last MiB.
    pub clear: Vec<(u64, u64)>,
    /// `(offset, bytes)`, by offset, not overlapping.
    pub writes: Vec<(u64, Vec<u8>)>,
}

impl Plan {
    pub fn written_bytes(&self) -> u64 {
        self.writes.iter().map(|(_, b)| b.len() as u64).sum()
    }
}

/// The drive for a target of `target_size` bytes. Pure and deterministic: the volume's serial
/// number is taken from the document's sha256. The volume covers the whole target, up to the
/// largest FAT32 volume `p6os_fat` makes (about 1 TiB).
pub fn plan(target_size: u64, document: &[u8], signature: Option<&[u8]>) -> Result<Plan, FatError> {
    let volume_size = target_size.min(fat::max_volume_size());
    let mut files = vec![FatFile {
        path: DOCUMENT_PATH.into(),
        data: document.to_vec(),
    }];
    if let Some(sig) = signature {
        files.push(FatFile {
            path: SIGNATURE_PATH.into(),
            data: sig.to_vec(),
        });
    }
    let digest = Sha256::digest(document);
    let opts = FormatOptions {
        volume_id: u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]),
        label: Some(VolumeLabel::new(LABEL)?),
    };
    let mut recorder = Recorder::default();
    fat::format(&mut recorder, 0, volume_size, &opts, &files)?;
    let mut writes = recorder.writes;
    writes.sort_by_key(|(offset, _)| *offset);
    let written_end = writes
        .iter()
        .map(|(offset, bytes)| offset + bytes.len() as u64)
        .max()
        .unwrap_or(0);
    let head = written_end.next_multiple_of(CLEAR_ALIGN).min(target_size);
    let tail = target_size.saturating_sub(TAIL_CLEARED).max(head);
    let mut clear = vec![(0, head)];
    if tail < target_size {
        clear.push((tail, target_size - tail));
    }
    Ok(Plan {
        volume_size,
        clear,
        writes,
    })
}

/// A device that keeps what is written to it, for [`plan`].
#[derive(Default)]
struct Recorder {
    position: u64,
    writes: Vec<(u64, Vec<u8>)>,
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.writes.last_mut() {
            Some((offset, bytes)) if *offset + bytes.len() as u64 == self.position => {
                bytes.extend_from_slice(buf)
            }
            _ => self.writes.push((self.position, buf.to_vec())),
        }
        self.position += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Recorder {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.position = match to {
            SeekFrom::Start(n) => n,
            SeekFrom::Current(d) => self.position.checked_add_signed(d).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "seek before the start")
            })?,
            SeekFrom::End(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "a recorder has no end",
                ))
            }
        };
        Ok(self.position)
    }
}

/// What [`write`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub target_size: u64,
    pub volume_size: u64,
    /// Paths on the drive, in the order written.
    pub files: Vec<&'static str>,
}

/// Makes `target` a configuration drive holding `document` (and `signature` beside it), after
/// [`check`]ing them (diagnostics name the document `unattended.yaml`). `confirmed` is the
/// identity of the target that was checked and confirmed (`flash::check`): nothing is written
/// unless the opened target is that one. A regular file smaller than [`FILE_SIZE`] is made that
/// size first. Everything is read back before this returns.
pub fn write(
    target: &Path,
    confirmed: &Identity,
    document: &[u8],
    signature: Option<&[u8]>,
) -> Result<Report, DriveError> {
    check(Path::new("unattended.yaml"), document, signature)?;
    let (opened, _) = open_target(target, FILE_SIZE, confirmed)?;
    // Through the descriptor that was checked, buffered (the writes are small and unaligned).
    let mut dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(same_file(&opened))
        .map_err(io_at(target))?;
    let target_size = dev.seek(SeekFrom::End(0)).map_err(io_at(target))?;
    let fat_error = |source| DriveError::Fat {
        path: target.to_path_buf(),
        source,
    };
    let plan = plan(target_size, document, signature).map_err(fat_error)?;
    for &(offset, len) in &plan.clear {
        clear(&dev, offset, len).map_err(io_at(target))?;
    }
    for (offset, bytes) in &plan.writes {
        dev.write_all_at(bytes, *offset).map_err(io_at(target))?;
    }
    dev.sync_all().map_err(io_at(target))?;
    drop_caches(&dev);
    verify(target, &dev, &plan, document, signature)?;
    let mut files = vec![DOCUMENT_PATH];
    files.extend(signature.map(|_| SIGNATURE_PATH));
    Ok(Report {
        target_size,
        volume_size: plan.volume_size,
        files,
    })
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "configuration drive labelled {LABEL} ({} MiB): {} written and read back",
            self.volume_size >> 20,
            self.files.join(" and ")
        )
    }
}

/// `p6os config drive TARGET FILE`: [`read`] (FILE checked first: an invalid one never gets
/// as far as the question), then TARGET checked and confirmed on the command line
/// ([`check::check_and_confirm`]), then [`write`]. `None`: nothing was written, and stderr
/// says why (the document's problems, the target's refusals, or no "yes").
pub fn from_file(
    target: &Path,
    file: &Path,
    confirm: Confirm,
    force: Force,
) -> Result<Option<Report>, DriveError> {
    let contents = match read(file) {
        Ok(contents) => contents,
        Err(e) => {
            match e {
                DriveError::Invalid(diags) => eprintln!("{diags}"),
                e => eprintln!("error: {}", crate::diag::error_chain(&e)),
            }
            eprintln!("nothing was written to {}", target.display());
            return Ok(None);
        }
    };
    let writing = format!(
        "a configuration drive (FAT32 labelled {LABEL}) holding {}",
        file.display()
    );
    let confirmed = check::check_and_confirm(target, min_size(), force, confirm, &writing)
        .map_err(io_at(target))?;
    let Some(confirmed) = confirmed else {
        return Ok(None);
    };
    let signature = contents.signature.as_deref();
    write(target, &confirmed, &contents.document, signature).map(Some)
}

/// Zeros `len` bytes at `offset`: by the kernel where it can, else written.
fn clear(dev: &File, offset: u64, len: u64) -> io::Result<()> {
    if usize::try_from(len).is_ok_and(|n| zero_range(dev, offset, n)) {
        return Ok(());
    }
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(ZERO_CHUNK as u64) as usize;
        dev.write_all_at(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// Every planned write reads back as written; the files read back through the FAT reader;
/// the filesystem needs no repair (a clear that did not happen shows as lost clusters).
fn verify(
    target: &Path,
    dev: &File,
    plan: &Plan,
    document: &[u8],
    signature: Option<&[u8]>,
) -> Result<(), DriveError> {
    let failed = |what: String| DriveError::Verify {
        path: target.to_path_buf(),
        what,
    };
    for (offset, bytes) in &plan.writes {
        let mut back = vec![0u8; bytes.len()];
        dev.read_exact_at(&mut back, *offset)
            .map_err(io_at(target))?;
        if &back != bytes {
            let end = offset + bytes.len() as u64;
            return Err(failed(format!(
                "bytes {offset}..{end} read back other than written"
            )));
        }
    }
    let fat_error = |source| DriveError::Fat {
        path: target.to_path_buf(),
        source,
    };
    let mut volume = FatVolume::open(dev, 0, plan.volume_size).map_err(fat_error)?;
    let mut expected = vec![(DOCUMENT_PATH, document)];
    expected.extend(signature.map(|sig| (SIGNATURE_PATH, sig)));
    for (path, bytes) in expected {
        if volume.read_file(path).map_err(fat_error)? != bytes {
            return Err(failed(format!("{path} reads back other than written")));
        }
    }
    let repair = volume.plan_repair(&|_, _| false).map_err(fat_error)?;
    if !repair.is_clean() {
        return Err(failed(format!(
            "the new filesystem needs repair: {}",
            repair.summary()
        )));
    }
    Ok(())
}

#[cfg(test)]
#[path = "configdrive_tests.rs"]
mod tests;
