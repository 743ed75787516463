//! `p6os flash IMAGE TARGET`: writes only the image's mapped ranges (from its `.bmap`, or found
//! by content for a raw image) with large aligned writes (`O_DIRECT` on block devices where it
//! works), `fsync`s, then reads every written range back and checks its sha256. A target
//! larger than the image gets its backup GPT moved to its end (the state partition can grow);
//! `--config` writes a checked unattended.yaml into the target's ESP last.
//!
//! Nothing is written before the image, its bmap, the configuration and the target passed
//! their checks ([`target::refusals`]).

pub mod check;
pub mod identity;
pub(crate) mod open;
pub mod plan;
pub mod target;
#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::progress::Progress;
use identity::Identity;
use open::{open_target, same_file, Direct};
use plan::{Plan, Range};

/// Bytes moved per read and write: large, and a multiple of every logical block size.
const CHUNK: usize = 8 << 20;
/// O_DIRECT buffers and offsets are aligned to this.
const ALIGN: usize = 4096;
/// Compared with each chunk (a memcmp, much faster than a loop over bytes).
static ZEROS: [u8; CHUNK] = [0; CHUNK];

#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Bmap {
        path: PathBuf,
        source: plan::BmapError,
    },
    #[error("{bmap} describes an image of {bmap_size} bytes, but {image} has {image_size}\n  hint: the bmap belongs to another build; pass the image it was made with")]
    BmapSize {
        bmap: PathBuf,
        bmap_size: u64,
        image: PathBuf,
        image_size: u64,
    },
    #[error("{image}: the bytes at {offset}..{end} do not match the bmap's checksum: the image is damaged\n  hint: build or download it again; the target holds a partial copy")]
    ImageDamaged {
        image: PathBuf,
        offset: u64,
        end: u64,
    },
    #[error("verification failed: {target} at {offset}..{end} reads back other bytes than were written\n  hint: the medium may be failing; try another one")]
    Verify {
        target: PathBuf,
        offset: u64,
        end: u64,
    },
    #[error("{0}")]
    Config(p6os_config::diag::Diagnostics),
    #[error("{0}")]
    Inject(#[from] crate::inject::InjectError),
    #[error("{path} is no longer the target that was confirmed: it was {confirmed}, it is now {now}; nothing was written\n  hint: a disk was swapped (or a loop device re-attached) after the confirmation; run `p6os flash` again and check the target")]
    TargetChanged {
        path: PathBuf,
        confirmed: Box<Identity>,
        now: Box<Identity>,
    },
    #[error("{path}: the size of a .zst image must be in its frame header or its .bmap\n  hint: flash the raw .img, or make the .img.zst with `p6os build`")]
    UnknownSize { path: PathBuf },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> FlashError + '_ {
    move |source| FlashError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a flash did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    pub image_size: u64,
    pub written: u64,
    pub ranges: usize,
    pub bmap: Option<PathBuf>,
    pub write_secs: f64,
    pub verify_secs: f64,
    /// The backup GPT was moved to the end of a larger target.
    pub gpt_moved: bool,
    pub config_written: bool,
}

/// The image's format, by name.
fn is_zst(image: &Path) -> bool {
    image.extension().is_some_and(|e| e == "zst")
}

/// `X.img` and `X.img.zst` both look for `X.bmap` beside them.
pub fn bmap_beside(image: &Path) -> PathBuf {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .strip_suffix(".img.zst")
        .or_else(|| name.strip_suffix(".zst"))
        .or_else(|| name.strip_suffix(".img"))
        .unwrap_or(&name);
    image.with_file_name(format!("{stem}.bmap"))
}

/// The size of the image the file holds (a `.zst`: from its frame header).
fn image_size(image: &Path) -> Result<Option<u64>, FlashError> {
    if !is_zst(image) {
        return Ok(Some(fs::metadata(image).map_err(io_at(image))?.len()));
    }
    let mut head = vec![0u8; 18];
    let n = File::open(image)
        .and_then(|mut f| f.read(&mut head))
        .map_err(io_at(image))?;
    Ok(zstd::zstd_safe::get_frame_content_size(&head[..n])
        .ok()
        .flatten())
}

/// The ranges to write: the bmap's, else found by content (raw), else everything (zst).
pub fn plan_for(image: &Path, bmap: Option<&Path>) -> Result<(Plan, Option<PathBuf>), FlashError> {
    let size = image_size(image)?;
    let beside = bmap_beside(image);
    let bmap = bmap
        .map(Path::to_path_buf)
        .or_else(|| beside.is_file().then_some(beside));
    if let Some(b) = &bmap {
        let text = fs::read_to_string(b).map_err(io_at(b))?;
        let plan = plan::parse_bmap(&text).map_err(|source| FlashError::Bmap {
            path: b.clone(),
            source,
        })?;
        if let Some(size) = size.filter(|s| *s != plan.image_size) {
            return Err(FlashError::BmapSize {
                bmap: b.clone(),
                bmap_size: plan.image_size,
                image: image.to_path_buf(),
                image_size: size,
            });
        }
        return Ok((plan, bmap));
    }
    let size = size.ok_or_else(|| FlashError::UnknownSize {
        path: image.to_path_buf(),
    })?;
    if is_zst(image) {
        return Ok((Plan::whole(size), None));
    }
    let file = File::open(image).map_err(io_at(image))?;
    let ranges = crate::outputs::mapped_ranges(&file, size)
        .map_err(io_at(image))?
        .into_iter()
        .map(|(offset, len, sha256)| Range {
            offset,
            len,
            sha256: Some(sha256),
        })
        .collect();
    Ok((
        Plan {
            image_size: size,
            ranges,
        },
        None,
    ))
}

/// A buffer whose start is [`ALIGN`]ed, for O_DIRECT.
struct Aligned {
    raw: Vec<u8>,
    start: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let raw = vec![0u8; len + ALIGN];
        let start = (ALIGN - raw.as_ptr() as usize % ALIGN) % ALIGN;
        Aligned { raw, start }
    }
    fn get(&mut self, len: usize) -> &mut [u8] {
        &mut self.raw[self.start..self.start + len]
    }
}

/// Reads the image in order: raw files by offset, `.zst` streams by skipping forward.
enum ImageReader {
    Raw(File),
    Zst {
        decoder: zstd::stream::read::Decoder<'static, io::BufReader<File>>,
        pos: u64,
    },
}

impl ImageReader {
    fn open(image: &Path) -> io::Result<ImageReader> {
        let file = File::open(image)?;
        Ok(if is_zst(image) {
            ImageReader::Zst {
                decoder: zstd::stream::read::Decoder::new(file)?,
                pos: 0,
            }
        } else {
            ImageReader::Raw(file)
        })
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            ImageReader::Raw(f) => f.read_exact_at(buf, offset),
            ImageReader::Zst { decoder, pos } => {
                if offset < *pos {
                    return Err(io::Error::other("ranges out of order"));
                }
                io::copy(&mut decoder.by_ref().take(offset - *pos), &mut io::sink())?;
                decoder.read_exact(buf)?;
                *pos = offset + buf.len() as u64;
                Ok(())
            }
        }
    }
}

/// Buffers in flight between the reading and the writing thread.
const IN_FLIGHT: usize = 4;

/// A chunk read, on its way to be written or hashed.
struct Chunk {
    buf: Aligned,
    len: usize,
    pos: u64,
}

/// Writes the plan's ranges of `image` to `target`; returns each range's sha256 as written.
/// One thread reads and hashes the image while this one writes: the two overlap.
fn write_ranges(
    image: &Path,
    (target, out, direct): (&Path, &File, Direct),
    plan: &Plan,
    progress: &Progress,
) -> Result<Vec<[u8; 32]>, FlashError> {
    let mut reader = ImageReader::open(image).map_err(io_at(image))?;
    let total = plan.mapped_bytes();
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Chunk>(IN_FLIGHT);
    let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<Aligned>(IN_FLIGHT);
    for _ in 0..IN_FLIGHT {
        free_tx
            .send(Aligned::new(CHUNK))
            .expect("room for every buffer");
    }
    std::thread::scope(|scope| {
        let read = scope.spawn(move || -> Result<Vec<[u8; 32]>, FlashError> {
            let mut sums = Vec::with_capacity(plan.ranges.len());
            for r in &plan.ranges {
                // With the bmap's checksum, the read-back is checked against it (a mismatch
                // then tells image from medium by hashing the image range again); without one,
                // the image's bytes are hashed here.
                let known = r.sha256.as_deref().and_then(decode_sha256);
                let mut h = known.is_none().then(Sha256::new);
                let end = r.offset + r.len;
                let mut pos = r.offset;
                while pos < end {
                    let Ok(mut buf) = free_rx.recv() else {
                        return Ok(sums); // the writer stopped: its error is reported
                    };
                    let len = ((end - pos) as usize).min(CHUNK);
                    reader.read_at(buf.get(len), pos).map_err(io_at(image))?;
                    if let Some(h) = &mut h {
                        h.update(&*buf.get(len));
                    }
                    if full_tx.send(Chunk { buf, len, pos }).is_err() {
                        return Ok(sums);
                    }
                    pos += len as u64;
                }
                sums.push(match (known, h) {
                    (Some(sum), _) => sum,
                    (None, Some(h)) => h.finalize().into(),
                    (None, None) => unreachable!("a hasher when no checksum is known"),
                });
            }
            Ok(sums)
        });
        let mut done = 0;
        let written = (|| -> Result<(), FlashError> {
            for mut c in full_rx.iter() {
                let chunk = c.buf.get(c.len);
                let aligned = c.len.is_multiple_of(ALIGN) && c.pos.is_multiple_of(ALIGN as u64);
                if aligned && *chunk == ZEROS[..c.len] && zero_range(out, c.pos, c.len) {
                    // Zeros (the ESP's free space, unused GPT entries): told to the device
                    // or the filesystem instead of written; read back like the rest.
                } else if direct == Direct::Yes && !aligned {
                    // The image's last partial block: through the page cache.
                    let plain = OpenOptions::new()
                        .write(true)
                        .open(same_file(out))
                        .map_err(io_at(target))?;
                    plain.write_all_at(chunk, c.pos).map_err(io_at(target))?;
                    plain.sync_all().map_err(io_at(target))?;
                } else {
                    out.write_all_at(chunk, c.pos).map_err(io_at(target))?;
                }
                done += c.len as u64;
                progress.meter("writing", done, total);
                let _ = free_tx.send(c.buf);
            }
            Ok(())
        })();
        drop(full_rx);
        drop(free_tx);
        let sums = read.join().expect("the reading thread does not panic")?;
        written?;
        out.sync_all().map_err(io_at(target))?;
        Ok(sums)
    })
}

/// Reads every written range back from the medium (caches dropped, O_DIRECT where it works)
/// and compares it with what was written. One thread reads while this one hashes.
fn verify_ranges(
    image: &Path,
    (target, out): (&Path, &File),
    plan: &Plan,
    sums: &[[u8; 32]],
    progress: &Progress,
) -> Result<(), FlashError> {
    let plain = File::open(same_file(out)).map_err(io_at(target))?;
    drop_caches(&plain);
    let direct = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(same_file(out))
        .ok();
    let total = plan.mapped_bytes();
    // `None` marks the end of a range.
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Option<Chunk>>(IN_FLIGHT);
    let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<Aligned>(IN_FLIGHT);
    for _ in 0..IN_FLIGHT {
        free_tx
            .send(Aligned::new(CHUNK))
            .expect("room for every buffer");
    }
    std::thread::scope(|scope| {
        let plain = &plain;
        let direct = &direct;
        let read = scope.spawn(move || -> Result<(), FlashError> {
            for r in &plan.ranges {
                let end = r.offset + r.len;
                let mut pos = r.offset;
                while pos < end {
                    let Ok(mut buf) = free_rx.recv() else {
                        return Ok(());
                    };
                    let len = ((end - pos) as usize).min(CHUNK);
                    let aligned = len.is_multiple_of(ALIGN) && pos.is_multiple_of(ALIGN as u64);
                    match (direct, aligned) {
                        (Some(d), true) => d.read_exact_at(buf.get(len), pos),
                        _ => plain.read_exact_at(buf.get(len), pos),
                    }
                    .map_err(io_at(target))?;
                    if full_tx.send(Some(Chunk { buf, len, pos })).is_err() {
                        return Ok(());
                    }
                    pos += len as u64;
                }
                if full_tx.send(None).is_err() {
                    return Ok(());
                }
            }
            Ok(())
        });
        let mut done = 0;
        let checked = (|| -> Result<(), FlashError> {
            let mut h = Sha256::new();
            let mut ranges = plan.ranges.iter().zip(sums);
            for item in full_rx.iter() {
                match item {
                    Some(mut c) => {
                        h.update(&*c.buf.get(c.len));
                        done += c.len as u64;
                        progress.meter("verifying", done, total);
                        let _ = free_tx.send(c.buf);
                    }
                    None => {
                        let (r, want) = ranges.next().expect("one end per range");
                        let got: [u8; 32] = std::mem::take(&mut h).finalize().into();
                        if got != *want {
                            let end = r.offset + r.len;
                            let image_ok = image_range_sha256(image, r)? == *want;
                            return Err(if image_ok {
                                FlashError::Verify {
                                    target: target.to_path_buf(),
                                    offset: r.offset,
                                    end,
                                }
                            } else {
                                FlashError::ImageDamaged {
                                    image: image.to_path_buf(),
                                    offset: r.offset,
                                    end,
                                }
                            });
                        }
                    }
                }
            }
            Ok(())
        })();
        drop(full_rx);
        drop(free_tx);
        read.join().expect("the reading thread does not panic")?;
        checked
    })
}

fn decode_sha256(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// The sha256 of an image range, read again (to tell a damaged image from a bad medium).
fn image_range_sha256(image: &Path, r: &Range) -> Result<[u8; 32], FlashError> {
    let mut reader = ImageReader::open(image).map_err(io_at(image))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = r.offset;
    while pos < r.offset + r.len {
        let len = ((r.offset + r.len - pos) as usize).min(CHUNK);
        reader.read_at(&mut buf[..len], pos).map_err(io_at(image))?;
        h.update(&buf[..len]);
        pos += len as u64;
    }
    Ok(h.finalize().into())
}

/// Zeroes `len` bytes at `pos` without sending them: `BLKZEROOUT` on a block device (the
/// device's write-zeroes, or the kernel writing them), `FALLOC_FL_ZERO_RANGE` on a file.
/// `false` when neither works (then the zeros are written like any data).
pub(crate) fn zero_range(f: &File, pos: u64, len: usize) -> bool {
    use std::os::fd::AsRawFd;
    const BLKZEROOUT: libc::c_ulong = 0x127f;
    let fd = f.as_raw_fd();
    let is_block = f.metadata().is_ok_and(|m| m.file_type().is_block_device());
    if is_block {
        let range: [u64; 2] = [pos, len as u64];
        // SAFETY: BLKZEROOUT reads two u64s from the pointer, which points at `range`.
        unsafe { libc::ioctl(fd, BLKZEROOUT, range.as_ptr()) == 0 }
    } else {
        let (Ok(off), Ok(n)) = (libc::off_t::try_from(pos), libc::off_t::try_from(len)) else {
            return false;
        };
        // SAFETY: fallocate on a descriptor we own; no memory is passed.
        unsafe { libc::fallocate(fd, libc::FALLOC_FL_ZERO_RANGE, off, n) == 0 }
    }
}

/// Asks the kernel to forget cached pages of `f` (and a block device's buffer cache), so that
/// reads come from the medium.
pub(crate) fn drop_caches(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: advisory calls on a descriptor we own; no memory is passed.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        // BLKFLSBUF: flush and drop a block device's buffers (ENOTTY on files: ignored).
        libc::ioctl(f.as_raw_fd(), 0x1261);
    }
}

/// On a target larger than the image: the backup GPT goes to the target's last sectors and
/// the old backup header is cleared. Returns whether anything moved.
fn move_backup_gpt((target, out): (&Path, &File), image_size: u64) -> Result<bool, FlashError> {
    let mut dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(same_file(out))
        .map_err(io_at(target))?;
    let size = io::Seek::seek(&mut dev, io::SeekFrom::End(0)).map_err(io_at(target))?;
    if size <= image_size {
        return Ok(false);
    }
    let Ok(gpt) = crate::gpt::read(&mut dev) else {
        // Not a GPT disk image: nothing to move.
        return Ok(false);
    };
    crate::gpt::write(&gpt, &mut dev).map_err(io_at(target))?;
    dev.write_all_at(&[0u8; 512], image_size - 512)
        .map_err(io_at(target))?;
    dev.sync_all().map_err(io_at(target))?;
    Ok(true)
}

/// Writes `image` to `target` (checks already done by the caller), then verifies, moves the
/// backup GPT, and writes the configuration. `confirmed` is the identity of the target that was
/// checked and confirmed: the target is opened once, and nothing is written unless the opened
/// descriptor is that same file or disk; every later access goes through that descriptor.
pub fn write_image(
    image: &Path,
    target: &Path,
    confirmed: &Identity,
    bmap: Option<&Path>,
    config: Option<&Path>,
    progress: &Progress,
) -> Result<Report, FlashError> {
    if let Some(c) = config {
        let text = fs::read_to_string(c).map_err(io_at(c))?;
        p6os_config::unattended::load(c, &text).map_err(FlashError::Config)?;
    }
    let (plan, bmap) = plan_for(image, bmap)?;
    progress.say(&format!(
        "writing {} MiB in {} ranges of {} ({} MiB image{})",
        plan.mapped_bytes() >> 20,
        plan.ranges.len(),
        image.display(),
        plan.image_size >> 20,
        bmap.as_ref()
            .map(|b| format!(", map from {}", b.display()))
            .unwrap_or_default()
    ));
    let (out, direct) = open_target(target, plan.image_size, confirmed)?;
    let start = Instant::now();
    let sums = write_ranges(image, (target, &out, direct), &plan, progress)?;
    let write_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    verify_ranges(image, (target, &out), &plan, &sums, progress)?;
    let verify_secs = start.elapsed().as_secs_f64();
    progress.say(&format!(
        "wrote and verified {} MiB ({:.0} MiB/s write, {:.0} MiB/s read back)",
        plan.mapped_bytes() >> 20,
        (plan.mapped_bytes() >> 20) as f64 / write_secs.max(1e-3),
        (plan.mapped_bytes() >> 20) as f64 / verify_secs.max(1e-3),
    ));
    let gpt_moved = move_backup_gpt((target, &out), plan.image_size)?;
    if gpt_moved {
        progress.say("moved the backup GPT to the end of the target");
    }
    if let Some(c) = config {
        crate::inject::inject(&same_file(&out), c)?;
        progress.say(&format!(
            "wrote {} to the target's ESP",
            crate::inject::ESP_CONFIG_PATH
        ));
    }
    Ok(Report {
        image_size: plan.image_size,
        written: plan.mapped_bytes(),
        ranges: plan.ranges.len(),
        bmap,
        write_secs,
        verify_secs,
        gpt_moved,
        config_written: config.is_some(),
    })
}
