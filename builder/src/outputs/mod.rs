//! The image output formats of `p6os build`: the raw image, `.img.zst`, `.qcow2`, a `.bmap`, and
//! the `SHA256SUMS` listing them.
//!
//! Every format is a function of the raw image's bytes alone, so the same image gives
//! byte-identical outputs whatever the filesystem did with its holes: holes are found with
//! `SEEK_DATA`/`SEEK_HOLE` only to skip reading them, the bmap maps non-zero blocks, zstd gets the
//! holes as zeros, and `qemu-img` detects zero clusters by content.
//!
//! Each output is written under a temporary name in the image's directory; only when all selected
//! formats are complete are they renamed into place, then `SHA256SUMS` is written, then (if the
//! raw image was not selected) the raw image is removed. A failure leaves no partial file.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use tempfile::NamedTempFile;

mod bmap;
mod make;
mod sparse;

#[cfg(test)]
mod bmap_tests;
#[cfg(test)]
mod tests;

use make::{temp_in, Out};

/// Name of the checksum file written beside the outputs.
pub const SHA256SUMS: &str = "SHA256SUMS";

/// An image output format.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// The raw disk image, `<base>.img` (sparse).
    Raw,
    /// The raw image compressed with zstd, `<base>.img.zst` (content size in the frame header).
    Zst,
    /// A qcow2 image made by `qemu-img convert`, `<base>.qcow2`.
    Qcow2,
    /// A bmaptool block map of the raw image (format 2.0, sha256 checksums), `<base>.bmap`.
    Bmap,
}

impl OutputFormat {
    /// Every format, in the order they are written and listed.
    pub const ALL: [OutputFormat; 4] = [
        OutputFormat::Raw,
        OutputFormat::Zst,
        OutputFormat::Qcow2,
        OutputFormat::Bmap,
    ];

    /// The file name extension after `<base>.`: `img`, `img.zst`, `qcow2` or `bmap`.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Raw => "img",
            OutputFormat::Zst => "img.zst",
            OutputFormat::Qcow2 => "qcow2",
            OutputFormat::Bmap => "bmap",
        }
    }

    /// The name used on the command line and in progress lines.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Raw => "raw",
            OutputFormat::Zst => "zst",
            OutputFormat::Qcow2 => "qcow2",
            OutputFormat::Bmap => "bmap",
        }
    }
}

/// One output file that [`write_outputs`] wrote (or, for [`OutputFormat::Raw`], kept).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutputRecord {
    /// Its format.
    pub format: OutputFormat,
    /// Its file name (no directory), e.g. `edge-1.0.img.zst`.
    pub file: String,
    /// Its size in bytes (the raw image's apparent size, holes included).
    pub size: u64,
    /// Lowercase hex sha256 of its bytes.
    pub sha256: String,
}

/// Why the outputs could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// No format was asked for.
    #[error("no output format selected: choose at least one of raw, zst, qcow2, bmap")]
    NoFormats,
    /// The image is not `<base>.img` in a directory.
    #[error(
        "raw image {} must be named {expected} (the outputs are named after it)",
        path.display()
    )]
    ImageName {
        /// The image given.
        path: PathBuf,
        /// The name it should have.
        expected: String,
    },
    /// The raw image could not be opened or read.
    #[error("cannot read raw image {}: {source}", path.display())]
    ReadImage {
        /// The image.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A bmap cannot describe an empty image.
    #[error("raw image {} is empty: bmaptool cannot map an image without blocks", path.display())]
    EmptyImage {
        /// The image.
        path: PathBuf,
    },
    /// An output file could not be written or renamed into place.
    #[error(
        "cannot write {}: {source} (check free space and permissions of the output directory)",
        path.display()
    )]
    Write {
        /// The file being written (its final name).
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// `qemu-img` could not be started.
    #[error("cannot run qemu-img to write {}: {source} (install qemu-utils)", path.display())]
    QemuImgSpawn {
        /// The qcow2 file being written.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// `qemu-img convert` failed.
    #[error("qemu-img convert to {} failed ({status}): {stderr}", path.display())]
    QemuImgFailed {
        /// The qcow2 file being written.
        path: PathBuf,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The raw image, not selected, could not be removed after the other formats were written.
    #[error(
        "cannot remove raw image {} after writing the other formats: {source} \
         (remove it by hand, or select the raw format)",
        path.display()
    )]
    RemoveImage {
        /// The image.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// An output made under a temporary name, waiting to be renamed into place.
struct Pending {
    record: OutputRecord,
    /// `None` for the raw image, which is already in place.
    temp: Option<NamedTempFile>,
}

/// The ranges the `.bmap` of this raw image lists: `(offset, len, sha256 hex)` in order
/// (non-zero blocks, plus the GPT tables and the ESP in full).
pub(crate) fn mapped_ranges(image: &File, size: u64) -> io::Result<Vec<(u64, u64, String)>> {
    let map = bmap::BlockMap::from_image(image, size).map_err(|e| match e {
        sparse::ScanError::Read(e) | sparse::ScanError::Sink(e) => e,
    })?;
    Ok(map
        .ranges
        .iter()
        .map(|r| {
            let offset = r.first * sparse::BLOCK;
            let end = ((r.last + 1) * sparse::BLOCK).min(size);
            (offset, end - offset, hex::encode(r.sha256))
        })
        .collect())
}

/// Writes the selected formats of the finished raw image `image` (a sparse file `<base>.img`)
/// next to it, in its directory, as `<base>.img.zst`, `<base>.qcow2`, `<base>.bmap`, and always a
/// [`SHA256SUMS`] file listing every output file written (`sha256sum` format: `<hex>  <name>\n`,
/// sorted by name; the raw image is listed when [`OutputFormat::Raw`] is selected).
///
/// When Raw is not selected, the raw image is removed at the end, after the others were made
/// from it. Each file is written under a temporary name in the directory and renamed into place
/// once every selected format is complete, so a failure leaves no partial output files (and if a
/// rename fails, the outputs this call already renamed into place are removed again).
/// `progress` gets one line per format. Returns the records in [`OutputFormat::ALL`] order.
pub fn write_outputs(
    image: &Path,
    base: &str,
    formats: &[OutputFormat],
    progress: &dyn Fn(&str),
) -> Result<Vec<OutputRecord>, OutputError> {
    write_outputs_with(image, base, formats, progress, OsStr::new("qemu-img"))
}

/// [`write_outputs`] with the `qemu-img` program to run (tests make it fail).
fn write_outputs_with(
    image: &Path,
    base: &str,
    formats: &[OutputFormat],
    progress: &dyn Fn(&str),
    qemu_img: &OsStr,
) -> Result<Vec<OutputRecord>, OutputError> {
    let mut selected = formats.to_vec();
    selected.sort();
    selected.dedup();
    if selected.is_empty() {
        return Err(OutputError::NoFormats);
    }
    let expected = format!("{base}.{}", OutputFormat::Raw.extension());
    let dir = match (image.file_name(), image.parent()) {
        (Some(name), Some(dir)) if name == expected.as_str() && !base.contains('/') => dir,
        _ => {
            return Err(OutputError::ImageName {
                path: image.to_path_buf(),
                expected,
            })
        }
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let read_err = |source| OutputError::ReadImage {
        path: image.to_path_buf(),
        source,
    };
    let file = File::open(image).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();

    let mut pending = Vec::new();
    for format in selected.iter().copied() {
        let name = format!("{base}.{}", format.extension());
        let out = Out {
            dir,
            path: dir.join(&name),
            name,
            image,
            file: &file,
            size,
            qemu_img,
        };
        let started = Instant::now();
        let (item, line) = match format {
            OutputFormat::Raw => out.raw()?,
            OutputFormat::Zst => out.zst()?,
            OutputFormat::Qcow2 => out.qcow2()?,
            OutputFormat::Bmap => out.bmap()?,
        };
        progress(&format!(
            "{}: {line} in {:.1} s",
            format.name(),
            started.elapsed().as_secs_f64()
        ));
        pending.push(item);
    }

    // Rename into place; if that fails part way, take back what this call put there, so the
    // directory never holds outputs that SHA256SUMS does not list.
    let mut placed = Vec::new();
    let records = place(dir, pending, &mut placed).inspect_err(|_| {
        for path in &placed {
            let _ = std::fs::remove_file(path);
        }
    })?;

    if !selected.contains(&OutputFormat::Raw) {
        drop(file);
        std::fs::remove_file(image).map_err(|source| OutputError::RemoveImage {
            path: image.to_path_buf(),
            source,
        })?;
    }
    Ok(records)
}

/// Renames the pending outputs into place, then writes [`SHA256SUMS`] listing them, recording
/// each path it fills in `placed`.
fn place(
    dir: &Path,
    pending: Vec<Pending>,
    placed: &mut Vec<PathBuf>,
) -> Result<Vec<OutputRecord>, OutputError> {
    let mut records = Vec::new();
    for item in pending {
        if let Some(temp) = item.temp {
            let path = dir.join(&item.record.file);
            temp.persist(&path).map_err(|e| OutputError::Write {
                path: path.clone(),
                source: e.error,
            })?;
            placed.push(path);
        }
        records.push(item.record);
    }

    let mut sums: Vec<&OutputRecord> = records.iter().collect();
    sums.sort_by(|a, b| a.file.cmp(&b.file));
    let text: String = sums
        .iter()
        .map(|r| format!("{}  {}\n", r.sha256, r.file))
        .collect();
    let sums_path = dir.join(SHA256SUMS);
    let write_err = |source| OutputError::Write {
        path: sums_path.clone(),
        source,
    };
    let mut temp = temp_in(dir, SHA256SUMS).map_err(write_err)?;
    temp.write_all(text.as_bytes()).map_err(write_err)?;
    temp.as_file().sync_all().map_err(write_err)?;
    temp.persist(&sums_path).map_err(|e| write_err(e.error))?;
    Ok(records)
}
