//! Making each output format under a temporary name: the raw image's checksum, zstd, qemu-img
//! and the bmap.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use super::bmap::BlockMap;
use super::sparse::{self, for_each_byte_chunk, ScanError};
use super::{OutputError, OutputFormat, OutputRecord, Pending};

/// zstd level of `.img.zst`: fast, and most of an image is zeros or already compressed squashfs.
const ZSTD_LEVEL: i32 = 3;

/// A temporary file in `dir` whose name tells which output it will become.
pub(super) fn temp_in(dir: &Path, name: &str) -> io::Result<NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
}

/// One output being made: where it goes and what it is made from.
pub(super) struct Out<'a> {
    pub dir: &'a Path,
    /// Final file name and path.
    pub name: String,
    pub path: PathBuf,
    pub image: &'a Path,
    pub file: &'a File,
    pub size: u64,
    pub qemu_img: &'a OsStr,
}

impl Out<'_> {
    fn write_err(&self, source: io::Error) -> OutputError {
        OutputError::Write {
            path: self.path.clone(),
            source,
        }
    }

    fn read_err(&self, source: io::Error) -> OutputError {
        OutputError::ReadImage {
            path: self.image.to_path_buf(),
            source,
        }
    }

    fn scan_err(&self, e: ScanError) -> OutputError {
        match e {
            ScanError::Read(e) => self.read_err(e),
            ScanError::Sink(e) => self.write_err(e),
        }
    }

    fn temp(&self) -> Result<NamedTempFile, OutputError> {
        temp_in(self.dir, &self.name).map_err(|e| self.write_err(e))
    }

    fn pending(
        &self,
        format: OutputFormat,
        temp: Option<NamedTempFile>,
        size: u64,
        sha: [u8; 32],
    ) -> Pending {
        Pending {
            record: OutputRecord {
                format,
                file: self.name.clone(),
                size,
                sha256: hex::encode(sha),
            },
            temp,
        }
    }

    /// The raw image stays where it is; only its checksum is needed.
    pub(super) fn raw(&self) -> Result<(Pending, String), OutputError> {
        let mut hasher = Sha256::new();
        for_each_byte_chunk(self.file, self.size, |b| {
            hasher.update(b);
            Ok(())
        })
        .map_err(|e| self.scan_err(e))?;
        let line = format!("{}, sha256", mib(self.size));
        let item = self.pending(OutputFormat::Raw, None, self.size, hasher.finalize().into());
        Ok((item, line))
    }

    /// Streaming multithreaded zstd, one worker per CPU.
    pub(super) fn zst(&self) -> Result<(Pending, String), OutputError> {
        let temp = self.temp()?;
        let file = temp.reopen().map_err(|e| self.write_err(e))?;
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
        let sink = BufWriter::with_capacity(sparse::CHUNK, HashWriter::new(file));
        let sink =
            zstd_encode(self.file, self.size, workers, sink).map_err(|e| self.scan_err(e))?;
        let (file, len, sha) = sink
            .into_inner()
            .map_err(|e| self.write_err(e.into_error()))?
            .finish();
        file.sync_all().map_err(|e| self.write_err(e))?;
        let line = format!("{} -> {}", mib(self.size), mib(len));
        Ok((self.pending(OutputFormat::Zst, Some(temp), len, sha), line))
    }

    /// `qemu-img convert -f raw -O qcow2`, which skips zero clusters by content.
    pub(super) fn qcow2(&self) -> Result<(Pending, String), OutputError> {
        let temp = self.temp()?;
        let out = Command::new(self.qemu_img)
            .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
            .arg(self.image)
            .arg(temp.path())
            .output()
            .map_err(|source| OutputError::QemuImgSpawn {
                path: self.path.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(OutputError::QemuImgFailed {
                path: self.path.clone(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        // qemu-img may have replaced the file: hash what is at the path now.
        let mut file = File::open(temp.path()).map_err(|e| self.write_err(e))?;
        let mut hashed = HashWriter::new(io::sink());
        io::copy(&mut file, &mut hashed).map_err(|e| self.write_err(e))?;
        file.sync_all().map_err(|e| self.write_err(e))?;
        let (_, len, sha) = hashed.finish();
        let line = format!("{} -> {}", mib(self.size), mib(len));
        Ok((
            self.pending(OutputFormat::Qcow2, Some(temp), len, sha),
            line,
        ))
    }

    /// The block map, from the image's non-zero blocks.
    pub(super) fn bmap(&self) -> Result<(Pending, String), OutputError> {
        if self.size == 0 {
            return Err(OutputError::EmptyImage {
                path: self.image.to_path_buf(),
            });
        }
        let map = BlockMap::from_image(self.file, self.size).map_err(|e| self.scan_err(e))?;
        let xml = map.to_xml();
        let mut temp = self.temp()?;
        temp.write_all(xml.as_bytes())
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|e| self.write_err(e))?;
        let line = format!(
            "{} mapped of {}, {} ranges",
            mib(map.mapped_blocks() * sparse::BLOCK),
            mib(self.size),
            map.ranges.len()
        );
        let sha = Sha256::digest(xml.as_bytes()).into();
        let item = self.pending(OutputFormat::Bmap, Some(temp), xml.len() as u64, sha);
        Ok((item, line))
    }
}

/// Compresses the first `size` bytes of `file` (holes as zeros) into `sink` as one zstd frame
/// with the content size and a checksum, using `workers` compression threads (at least one; the
/// output does not depend on how many).
pub(super) fn zstd_encode<W: Write>(
    file: &File,
    size: u64,
    workers: u32,
    sink: W,
) -> Result<W, ScanError> {
    let setup = |sink| -> io::Result<zstd::Encoder<'static, W>> {
        let mut enc = zstd::Encoder::new(sink, ZSTD_LEVEL)?;
        enc.multithread(workers.max(1))?;
        enc.include_checksum(true)?;
        enc.include_contentsize(true)?;
        enc.set_pledged_src_size(Some(size))?;
        Ok(enc)
    };
    let mut enc = setup(sink).map_err(ScanError::Sink)?;
    for_each_byte_chunk(file, size, |b| enc.write_all(b))?;
    enc.finish().map_err(ScanError::Sink)
}

/// A size for progress lines: "312 MiB", "9.5 MiB", "0.1 MiB".
pub(super) fn mib(bytes: u64) -> String {
    let m = bytes as f64 / (1024.0 * 1024.0);
    if m >= 100.0 || m == 0.0 {
        format!("{m:.0} MiB")
    } else {
        format!("{m:.1} MiB")
    }
}

/// A writer that counts and hashes what passes through it.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashWriter<W> {
    fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    fn finish(self) -> (W, u64, [u8; 32]) {
        (self.inner, self.len, self.hasher.finalize().into())
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
