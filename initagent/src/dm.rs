//! Device-mapper, just enough for a read-only dm-verity device over a slot: create a device,
//! load its one-target table, resume it (what `veritysetup open` and `dmsetup create` do).
//!
//! Written here rather than taken from the `devicemapper` crate: three ioctls on
//! `/dev/mapper/control` with one fixed-size header (`struct dm_ioctl`, `<linux/dm-ioctl.h>`)
//! are less than that crate's dependencies would add to the static `/init`.
//! The buffers are built by pure functions (tested byte for byte); [`open_verity`] does the I/O.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// `/dev/mapper/control`: devtmpfs creates it when dm-mod loads.
pub const CONTROL: &str = "/dev/mapper/control";
/// `sizeof(struct dm_ioctl)`.
const HEADER: usize = 312;
/// `sizeof(struct dm_target_spec)`.
const TARGET_SPEC: usize = 40;
const NAME_LEN: usize = 128;
const UUID_LEN: usize = 129;
/// Interface version 4.0.0: any 4.x kernel accepts it.
const VERSION: [u32; 3] = [4, 0, 0];
const READONLY_FLAG: u32 = 1 << 0;
/// Buffer the kernel may write its answer to (status, names); ours are small.
const BUFFER: usize = 16 * 1024;

/// The ioctl commands used (`DM_*_CMD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    DevCreate = 3,
    DevRemove = 4,
    /// Without the suspend flag: resume, which makes a loaded table live.
    DevSuspend = 6,
    TableLoad = 9,
}

impl Command {
    /// `_IOWR(0xfd, cmd, struct dm_ioctl)`.
    pub fn request(self) -> u32 {
        (3 << 30) | ((HEADER as u32) << 16) | (0xfd << 8) | self as u32
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DmError {
    #[error("device-mapper name {0:?} is empty, too long or not plain ASCII")]
    BadName(String),
    #[error("cannot open {CONTROL} (is dm_mod loaded?)")]
    Control(#[source] io::Error),
    #[error("device-mapper {command:?} of {name}")]
    Ioctl {
        command: Command,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("the device node of {name} ({major}:{minor}) did not appear")]
    NoNode {
        name: String,
        major: u32,
        minor: u32,
    },
}

/// A dm_ioctl header for device `name`, followed by `payload` (data_start = header size).
pub fn header(name: &str, flags: u32, target_count: u32, payload: &[u8]) -> Vec<u8> {
    let size = HEADER + payload.len();
    let mut b = vec![0u8; size.max(BUFFER)];
    for (i, v) in VERSION.iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    let data_size = b.len() as u32;
    b[12..16].copy_from_slice(&data_size.to_ne_bytes());
    b[16..20].copy_from_slice(&(HEADER as u32).to_ne_bytes());
    b[20..24].copy_from_slice(&target_count.to_ne_bytes());
    b[28..32].copy_from_slice(&flags.to_ne_bytes());
    // name at 48 (after version, sizes, counts, flags, event_nr, padding and the u64 dev).
    b[48..48 + name.len()].copy_from_slice(name.as_bytes());
    b[HEADER..HEADER + payload.len()].copy_from_slice(payload);
    b
}

/// One `dm_target_spec` and its parameters (NUL-terminated, padded to 8 bytes).
pub fn target(sectors: u64, kind: &str, params: &str) -> Vec<u8> {
    let len = (TARGET_SPEC + params.len() + 1).div_ceil(8) * 8;
    let mut b = vec![0u8; len];
    b[8..16].copy_from_slice(&sectors.to_ne_bytes());
    // `next`: bytes from this spec to the next (none follows; the kernel reads it anyway).
    b[20..24].copy_from_slice(&(len as u32).to_ne_bytes());
    b[24..24 + kind.len()].copy_from_slice(kind.as_bytes());
    b[TARGET_SPEC..TARGET_SPEC + params.len()].copy_from_slice(params.as_bytes());
    b
}

/// `(major, minor)` of the device an answer describes (the `dev` field, `huge_encode_dev`).
pub fn answered_device(answer: &[u8]) -> (u32, u32) {
    let dev = u64::from_ne_bytes(answer[40..48].try_into().expect("8 bytes"));
    let major = ((dev >> 8) & 0xfff) as u32;
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
    (major, minor)
}

fn check_name(name: &str) -> Result<(), DmError> {
    let ok = !name.is_empty()
        && name.len() < NAME_LEN.min(UUID_LEN)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    ok.then_some(())
        .ok_or_else(|| DmError::BadName(name.to_string()))
}

fn control() -> Result<std::fs::File, DmError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(CONTROL)
        .map_err(DmError::Control)
}

fn ioctl(control: &std::fs::File, command: Command, buf: &mut [u8]) -> io::Result<()> {
    // SAFETY: `buf` is a dm_ioctl header with `data_size` equal to its length, so the kernel
    // reads and writes within it; the fd is open for the duration of the call.
    let r = unsafe {
        libc::ioctl(
            control.as_raw_fd(),
            command.request() as libc::Ioctl,
            buf.as_mut_ptr(),
        )
    };
    match r {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Creates the read-only device `name` with one `kind` target of `sectors` and `params`,
/// makes it live, and returns its device node (`/dev/dm-N`). On failure the half-made device
/// is removed.
pub fn create_read_only(
    name: &str,
    sectors: u64,
    kind: &str,
    params: &str,
) -> Result<String, DmError> {
    check_name(name)?;
    let control = control()?;
    let err = |command| {
        move |source| DmError::Ioctl {
            command,
            name: name.to_string(),
            source,
        }
    };
    let mut create = header(name, 0, 0, &[]);
    ioctl(&control, Command::DevCreate, &mut create).map_err(err(Command::DevCreate))?;
    let (major, minor) = answered_device(&create);
    let live = (|| {
        let mut load = header(name, READONLY_FLAG, 1, &target(sectors, kind, params));
        ioctl(&control, Command::TableLoad, &mut load).map_err(err(Command::TableLoad))?;
        let mut resume = header(name, 0, 0, &[]);
        ioctl(&control, Command::DevSuspend, &mut resume).map_err(err(Command::DevSuspend))
    })();
    if let Err(e) = live {
        let mut remove = header(name, 0, 0, &[]);
        let _ = ioctl(&control, Command::DevRemove, &mut remove);
        return Err(e);
    }
    let node = format!("/dev/dm-{minor}");
    let start = Instant::now();
    while !Path::new(&node).exists() {
        if start.elapsed() > Duration::from_secs(5) {
            let mut remove = header(name, 0, 0, &[]);
            let _ = ioctl(&control, Command::DevRemove, &mut remove);
            return Err(DmError::NoNode {
                name: name.to_string(),
                major,
                minor,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(node)
}

/// Removes device `name` (tests, and a failed set-up; a mounted device stays busy).
pub fn remove(name: &str) -> Result<(), DmError> {
    check_name(name)?;
    let control = control()?;
    let mut remove = header(name, 0, 0, &[]);
    ioctl(&control, Command::DevRemove, &mut remove).map_err(|source| DmError::Ioctl {
        command: Command::DevRemove,
        name: name.to_string(),
        source,
    })
}

/// `major:minor` of a block device node (what device-mapper tables name devices by: no path
/// lookup in the kernel).
pub fn device_number(path: &str) -> io::Result<String> {
    let st = rustix::fs::stat(path)?;
    Ok(format!(
        "{}:{}",
        rustix::fs::major(st.st_rdev),
        rustix::fs::minor(st.st_rdev)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_the_kernels() {
        // From <linux/dm-ioctl.h> on x86_64: DM_DEV_CREATE 0xc138fd03, DM_TABLE_LOAD 0xc138fd09.
        assert_eq!(Command::DevCreate.request(), 0xc138_fd03);
        assert_eq!(Command::DevRemove.request(), 0xc138_fd04);
        assert_eq!(Command::DevSuspend.request(), 0xc138_fd06);
        assert_eq!(Command::TableLoad.request(), 0xc138_fd09);
    }

    #[test]
    fn the_header_has_the_kernels_layout() {
        let t = target(80, "verity", "1 2 3");
        let b = header("p6os-root", READONLY_FLAG, 1, &t);
        assert_eq!(b.len(), BUFFER);
        let u32_at = |at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
        assert_eq!([u32_at(0), u32_at(4), u32_at(8)], [4, 0, 0]);
        assert_eq!(u32_at(12) as usize, BUFFER, "data_size");
        assert_eq!(u32_at(16) as usize, HEADER, "data_start");
        assert_eq!(u32_at(20), 1, "target_count");
        assert_eq!(u32_at(28), READONLY_FLAG, "flags");
        assert_eq!(&b[48..57], b"p6os-root");
        assert!(b[57..HEADER].iter().all(|&c| c == 0));
        assert_eq!(&b[HEADER..HEADER + t.len()], &t[..]);
    }

    #[test]
    fn a_target_spec_is_padded_and_terminated() {
        let t = target(80, "verity", "1 2 3");
        assert_eq!(t.len(), 48);
        assert_eq!(u64::from_ne_bytes(t[0..8].try_into().unwrap()), 0, "start");
        assert_eq!(
            u64::from_ne_bytes(t[8..16].try_into().unwrap()),
            80,
            "length"
        );
        assert_eq!(
            u32::from_ne_bytes(t[20..24].try_into().unwrap()),
            48,
            "next"
        );
        assert_eq!(&t[24..30], b"verity");
        assert_eq!(&t[40..46], b"1 2 3\0");
        assert_eq!(target(1, "verity", "1234567").len(), 48);
        assert_eq!(target(1, "verity", "12345678").len(), 56);
    }

    #[test]
    fn device_numbers_decode_like_the_kernel_encodes() {
        let mut answer = vec![0u8; HEADER];
        // huge_encode_dev(MKDEV(253, 0x12345)) = 0x45 | 253 << 8 | 0x123 << 20.
        let dev: u64 = 0x45 | (253 << 8) | (0x123 << 20);
        answer[40..48].copy_from_slice(&dev.to_ne_bytes());
        assert_eq!(answered_device(&answer), (253, 0x12345));
    }

    #[test]
    fn names_are_plain() {
        assert!(check_name("p6os-root-a").is_ok());
        for bad in ["", "a/b", "a b", "é", &"x".repeat(128)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
