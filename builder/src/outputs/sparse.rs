//! Reading a sparse image fast: holes found with `SEEK_DATA`/`SEEK_HOLE` are reported without
//! reading them, data regions are read in block-aligned chunks.
//!
//! What the filesystem reports only decides what gets *read*; every consumer treats a hole as
//! zeros, so results depend on the image's content alone, never on its extent layout.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// Block size of the scan and of the bmap.
pub(super) const BLOCK: u64 = 4096;

/// Bytes read (or zeros handed out) at a time; a multiple of [`BLOCK`].
pub(super) const CHUNK: usize = 1 << 20;

/// A chunk of zeros, for consumers that must see a hole's bytes.
pub(super) static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// A piece of the image, in order, covering it without gaps.
///
/// Both kinds start on a [`BLOCK`] boundary; only the last piece of the image may end off one.
#[derive(Debug)]
pub(super) enum Segment<'a> {
    /// Bytes read from the image at `offset` (at most [`CHUNK`] of them; they may be zeros).
    Data { offset: u64, bytes: &'a [u8] },
    /// The next `len` bytes, which the filesystem holds as a hole: all zeros, not read.
    Hole { len: u64 },
}

/// Why a scan stopped.
#[derive(Debug)]
pub(super) enum ScanError {
    /// Reading or seeking the image failed.
    Read(io::Error),
    /// The consumer failed.
    Sink(io::Error),
}

/// Which way to look from an offset.
#[derive(Clone, Copy)]
enum Whence {
    Data,
    Hole,
}

/// The next offset at or after `pos` that starts data (or a hole), or `None` past the last data.
///
/// A filesystem that cannot tell (`EINVAL`) is treated as all data.
fn seek(file: &File, pos: u64, whence: Whence) -> io::Result<Option<u64>> {
    let off = libc::off_t::try_from(pos)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset out of range"))?;
    let how = match whence {
        Whence::Data => libc::SEEK_DATA,
        Whence::Hole => libc::SEEK_HOLE,
    };
    // SAFETY: lseek on a file descriptor we own (borrowed from `file` for the call) only moves its
    // offset; no memory is passed. Readers use positional reads, so the moved offset is harmless.
    let got = unsafe { libc::lseek(file.as_raw_fd(), off, how) };
    if got >= 0 {
        return Ok(Some(got as u64));
    }
    let err = io::Error::last_os_error();
    match (err.raw_os_error(), whence) {
        (Some(libc::ENXIO), _) => Ok(None),
        (Some(libc::EINVAL), Whence::Data) => Ok(Some(pos)),
        (Some(libc::EINVAL), Whence::Hole) => Ok(None),
        _ => Err(err),
    }
}

fn round_up(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

/// Walks the first `size` bytes of `file` in order, handing each [`Segment`] to `sink`.
///
/// Data regions are widened to whole blocks (the widening reads a few hole bytes as zeros) and
/// read in [`CHUNK`]s; everything else is reported as holes.
pub(super) fn scan(
    file: &File,
    size: u64,
    mut sink: impl FnMut(Segment<'_>) -> io::Result<()>,
) -> Result<(), ScanError> {
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < size {
        let data = seek(file, pos, Whence::Data).map_err(ScanError::Read)?;
        let start = match data {
            Some(data) => (data / BLOCK * BLOCK).clamp(pos, size),
            None => size,
        };
        if start > pos {
            sink(Segment::Hole { len: start - pos }).map_err(ScanError::Sink)?;
        }
        let Some(data) = data.filter(|_| start < size) else {
            break;
        };
        let hole = seek(file, data.max(start), Whence::Hole)
            .map_err(ScanError::Read)?
            .unwrap_or(size);
        let end = round_up(hole.max(start + 1)).min(size);
        let mut at = start;
        while at < end {
            let n = (end - at).min(CHUNK as u64) as usize;
            file.read_exact_at(&mut buf[..n], at)
                .map_err(ScanError::Read)?;
            sink(Segment::Data {
                offset: at,
                bytes: &buf[..n],
            })
            .map_err(ScanError::Sink)?;
            at += n as u64;
        }
        pos = end;
    }
    Ok(())
}

/// Feeds the first `size` bytes of `file` to `write`, holes as zeros, in chunks of at most
/// [`CHUNK`] bytes.
pub(super) fn for_each_byte_chunk(
    file: &File,
    size: u64,
    mut write: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(), ScanError> {
    scan(file, size, |segment| match segment {
        Segment::Data { bytes, .. } => write(bytes),
        Segment::Hole { mut len } => {
            while len > 0 {
                let n = len.min(CHUNK as u64) as usize;
                write(&ZEROS[..n])?;
                len -= n as u64;
            }
            Ok(())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// (is data, offset, length) of each segment; a data segment's offset is checked against
    /// the running total.
    fn segments(file: &File, size: u64) -> Vec<(bool, u64, u64)> {
        let mut out = Vec::new();
        let mut at = 0;
        scan(file, size, |s| {
            let (data, len) = match s {
                Segment::Data { offset, bytes } => {
                    assert_eq!(offset, at);
                    (true, bytes.len() as u64)
                }
                Segment::Hole { len } => (false, len),
            };
            out.push((data, at, len));
            at += len;
            Ok(())
        })
        .unwrap();
        out
    }

    /// The segments cover the file in order, without gaps, block-aligned, and the bytes they
    /// stand for are the file's bytes.
    #[test]
    fn segments_cover_the_file_and_reproduce_its_bytes() {
        let mut f = tempfile::tempfile().unwrap();
        let size = 3 * CHUNK as u64 + 1234;
        f.set_len(size).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(&[7u8; 10], 2 * CHUNK as u64 + 4090).unwrap();
        f.write_all_at(b"tail", size - 4).unwrap();
        f.flush().unwrap();

        let segs = segments(&f, size);
        let mut expect = 0;
        for &(_, offset, len) in &segs {
            assert_eq!(offset, expect);
            assert_eq!(offset % BLOCK, 0);
            expect += len;
        }
        assert_eq!(expect, size);

        let mut whole = Vec::new();
        for_each_byte_chunk(&f, size, |b| {
            whole.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        let mut direct = vec![0u8; size as usize];
        f.read_exact_at(&mut direct, 0).unwrap();
        assert!(whole == direct, "scan output differs from the file");
    }

    /// A file without holes is one run of data chunks; an empty scan range yields nothing.
    #[test]
    fn dense_file_is_all_data_and_empty_is_nothing() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![1u8; 3 * BLOCK as usize]).unwrap();
        assert_eq!(segments(&f, 3 * BLOCK), vec![(true, 0, 3 * BLOCK)]);
        assert!(segments(&f, 0).is_empty());
    }

    /// An error from the consumer comes back as a sink error, not a read error.
    #[test]
    fn sink_errors_are_told_apart() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(BLOCK).unwrap();
        let got = scan(&f, BLOCK, |_| Err(io::Error::other("full")));
        assert!(matches!(got, Err(ScanError::Sink(_))));
    }
}
