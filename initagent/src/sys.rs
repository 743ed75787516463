//! Thin wrappers around the system calls the agent makes. No decisions here: the plans
//! (`plan`, `policy`) decide, `boot` and `service` sequence, this module only does.

use std::ffi::CString;
use std::fs::{self, DirBuilder};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rustix::mount::{MountFlags, UnmountFlags};
use rustix::system::RebootCommand;

use crate::modules;
use crate::plan::{Flag, Mount};
use crate::policy::Shutdown;
use crate::uevent::{BlockDevice, Uevent};
use p6os_layout::gpt;

pub fn is_pid1() -> bool {
    std::process::id() == 1
}

pub fn mkdir_p(path: &str, mode: u32) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(mode).create(path)
}

fn mount_flags(flags: &[Flag]) -> MountFlags {
    flags.iter().fold(MountFlags::empty(), |acc, flag| {
        acc | match flag {
            Flag::ReadOnly => MountFlags::RDONLY,
            Flag::NoSuid => MountFlags::NOSUID,
            Flag::NoDev => MountFlags::NODEV,
            Flag::NoExec => MountFlags::NOEXEC,
            Flag::NoAtime => MountFlags::NOATIME,
        }
    })
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul byte in string"))
}

/// mount(2) as described by `m`, from `source` (a device path or a name).
pub fn mount(m: &Mount, source: &str) -> io::Result<()> {
    let data = if m.data.is_empty() {
        None
    } else {
        Some(cstring(&m.data)?)
    };
    rustix::mount::mount(
        source,
        m.target.as_str(),
        m.fstype,
        mount_flags(&m.flags),
        data.as_deref(),
    )?;
    Ok(())
}

/// Bind-mounts directory `source` on `target`.
pub fn bind_mount(source: &str, target: &str) -> io::Result<()> {
    rustix::mount::mount_bind(source, target)?;
    Ok(())
}

/// Mounts a filesystem read-only, nosuid, nodev, noexec (a configuration source).
pub fn mount_read_only(device: &str, target: &str, fstype: &str) -> io::Result<()> {
    rustix::mount::mount(
        device,
        target,
        fstype,
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )?;
    Ok(())
}

/// The ESP's flags when the agent writes to it: directory changes (create, rename, remove)
/// reach the disk before the call returns, in the order they were made.
const ESP_READ_WRITE: MountFlags = MountFlags::NOSUID
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC)
    .union(MountFlags::DIRSYNC);

/// Mounts the ESP read-write (nosuid, nodev, noexec, dirsync).
pub fn mount_read_write_esp(device: &str, target: &str) -> io::Result<()> {
    rustix::mount::mount(device, target, "vfat", ESP_READ_WRITE, None)?;
    Ok(())
}

/// Makes the ESP mounted read-only at `target` read-write (as [`mount_read_write_esp`]).
pub fn remount_read_write_esp(target: &str) -> io::Result<()> {
    Ok(rustix::mount::mount_remount(target, ESP_READ_WRITE, "")?)
}

/// Mounts the state partition (ext4) read-write, nosuid, nodev, noexec: for the note of a boot
/// that fails before the plan mounts it.
pub fn mount_state(device: &str, target: &str) -> io::Result<()> {
    rustix::mount::mount(
        device,
        target,
        "ext4",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC | MountFlags::NOATIME,
        None,
    )?;
    Ok(())
}

pub fn mount_move(from: &str, to: &str) -> io::Result<()> {
    Ok(rustix::mount::mount_move(from, to)?)
}

pub fn unmount(path: &str) -> io::Result<()> {
    Ok(rustix::mount::unmount(path, UnmountFlags::empty())?)
}

pub fn remount_read_only(path: &str) -> io::Result<()> {
    Ok(rustix::mount::mount_remount(path, MountFlags::RDONLY, "")?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleLoad {
    Loaded,
    /// EEXIST: built in or loaded already.
    AlreadyPresent,
}

pub fn load_module(path: &str) -> io::Result<ModuleLoad> {
    let file = fs::File::open(path)?;
    match rustix::system::finit_module(&file, c"", modules::finit_flags(path)) {
        Ok(()) => Ok(ModuleLoad::Loaded),
        Err(rustix::io::Errno::EXIST) => Ok(ModuleLoad::AlreadyPresent),
        Err(e) => Err(e.into()),
    }
}

/// The block devices in /sys/class/block: uevent files (unreadable ones are skipped) and,
/// for partitions, the disk holding them.
pub fn scan_block_devices() -> Vec<BlockDevice> {
    let Ok(entries) = fs::read_dir("/sys/class/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let dir = e.path();
            let text = fs::read_to_string(dir.join("uevent")).ok()?;
            Some(BlockDevice::new(Uevent::parse(&text), parent_disk(&dir)))
        })
        .collect()
}

/// For a partition's /sys/class/block entry (it has a `partition` file), the name of
/// its parent directory in /sys/devices: the disk (`cciss!c0d0` becomes `cciss/c0d0`).
fn parent_disk(class_entry: &Path) -> Option<String> {
    if !class_entry.join("partition").exists() {
        return None;
    }
    let real = fs::canonicalize(class_entry).ok()?;
    let name = real.parent()?.file_name()?.to_str()?;
    Some(name.replace('!', "/"))
}

/// The PARTUUIDs in the primary GPT of /dev/`disk`: `(partition number, uuid)`.
pub fn read_gpt_part_uuids(disk: &str) -> io::Result<Vec<(u32, String)>> {
    read_gpt_part_uuids_from(&format!("/dev/{disk}"))
}

fn read_gpt_part_uuids_from(path: &str) -> io::Result<Vec<(u32, String)>> {
    let file = fs::File::open(path)?;
    let head = read_at_most(&file, 0, gpt::HEAD_LEN)?;
    let invalid = |e: gpt::GptError| io::Error::new(io::ErrorKind::InvalidData, e);
    let header = gpt::parse_header(&head).map_err(invalid)?;
    let len = usize::try_from(header.entries_len()).map_err(io::Error::other)?;
    let entries = read_at_most(&file, header.entries_offset, len)?;
    let partitions = gpt::parse_entries(&entries, &header).map_err(invalid)?;
    Ok(partitions
        .into_iter()
        .map(|p| (p.number, p.guid.to_string()))
        .collect())
}

/// Up to `len` bytes from `offset` (fewer at the end of the file).
fn read_at_most(file: &fs::File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let at = offset.saturating_add(u64::try_from(filled).unwrap_or(u64::MAX));
        match file.read_at(&mut bytes[filled..], at) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}

/// Reads at most `max` bytes of a file; a larger file is an error (InvalidData).
pub fn read_capped(path: &str, max: usize) -> io::Result<Vec<u8>> {
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let mut bytes = Vec::new();
    fs::File::open(path)?.take(limit).read_to_end(&mut bytes)?;
    if bytes.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

/// Whether `path` exists, not following a final symlink.
pub fn exists_no_follow(path: &str) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Makes sure fds 0, 1 and 2 are open, on /dev/console if they were not.
pub fn ensure_stdio() {
    let missing: Vec<i32> = (0..3)
        // SAFETY: F_GETFD only queries the descriptor table.
        .filter(|fd| unsafe { libc::fcntl(*fd, libc::F_GETFD) } == -1)
        .collect();
    if missing.is_empty() {
        return;
    }
    // SAFETY: plain open/dup2/close on descriptors this process owns.
    unsafe {
        let fd = libc::open(c"/dev/console".as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        if fd < 0 {
            return;
        }
        for target in missing {
            if target != fd {
                libc::dup2(fd, target);
            }
        }
        if fd > 2 {
            libc::close(fd);
        }
    }
}

/// Sets /proc/sys/kernel/printk_devkmsg, returning the previous value.
pub fn set_printk_devkmsg(value: &str) -> io::Result<String> {
    const PATH: &str = "/proc/sys/kernel/printk_devkmsg";
    let old = fs::read_to_string(PATH)?;
    // The kernel insists on exactly one trailing character.
    fs::write(PATH, format!("{value}\n"))?;
    Ok(old.trim().to_string())
}

/// Statistics of the initramfs deletion.
#[derive(Debug, Default, Clone, Copy)]
pub struct Freed {
    pub files: u64,
    pub bytes: u64,
}

const RAMFS_MAGIC: i64 = 0x8584_58f6;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Deletes everything on the filesystem of `/` without crossing mount points (like
/// busybox switch_root). Refuses unless `/` is a ramfs/tmpfs and this is PID 1.
pub fn delete_initramfs() -> io::Result<Freed> {
    let fs_type = rustix::fs::statfs("/")?.f_type as i64;
    if !is_pid1() || (fs_type != RAMFS_MAGIC && fs_type != TMPFS_MAGIC) {
        return Err(io::Error::other(format!(
            "refusing: / is not an initramfs (fs type {fs_type:#x}) or not pid 1"
        )));
    }
    let root_dev = fs::symlink_metadata("/")?.dev();
    let mut freed = Freed::default();
    delete_contents(Path::new("/"), root_dev, &mut freed);
    Ok(freed)
}

fn delete_contents(dir: &Path, root_dev: u64, freed: &mut Freed) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != root_dev {
            continue; // a mount point: leave it and everything below alone
        }
        if meta.is_dir() {
            delete_contents(&path, root_dev, freed);
            let _ = fs::remove_dir(&path);
        } else if fs::remove_file(&path).is_ok() {
            freed.files += 1;
            freed.bytes += meta.len();
        }
    }
}

/// chdir new_root; mount --move . /; chroot .; chdir /.
pub fn switch_root(new_root: &str) -> io::Result<()> {
    rustix::process::chdir(new_root)?;
    rustix::mount::mount_move(".", "/")?;
    rustix::process::chroot(".")?;
    rustix::process::chdir("/")?;
    Ok(())
}

/// In a child before exec: default signal mask and dispositions (std ignores SIGPIPE).
fn reset_signals() -> io::Result<()> {
    // SAFETY: async-signal-safe calls on local data.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    Ok(())
}

/// Replaces this process; returns only on failure.
pub fn exec(path: &str, argv: &[String]) -> io::Error {
    let mut cmd = Command::new(path);
    if let Some((arg0, rest)) = argv.split_first() {
        cmd.arg0(arg0).args(rest);
    }
    // SAFETY: reset_signals only makes async-signal-safe calls.
    unsafe { cmd.pre_exec(reset_signals) };
    cmd.exec()
}

/// Starts `/bin/sh` as a login shell in a new session with `tty` as its controlling
/// terminal and stdin/stdout/stderr, `environment` (from /etc/environment) added.
/// Returns the pid.
pub fn spawn_shell(tty: &str, environment: &[(String, String)]) -> io::Result<i32> {
    let tty_c = cstring(tty)?;
    let home = if Path::new("/root").is_dir() {
        "/root"
    } else {
        "/"
    };
    let mut cmd = Command::new("/bin/sh");
    cmd.arg0("-sh")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root")
        .env("TERM", "vt100")
        .envs(environment.iter().map(|(k, v)| (k, v)))
        .current_dir(home);
    let child_setup = move || -> io::Result<()> {
        reset_signals()?;
        // SAFETY: async-signal-safe calls between fork and exec; `tty_c` was
        // allocated before the fork.
        unsafe {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::open(tty_c.as_ptr(), libc::O_RDWR);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(fd, libc::TIOCSCTTY, 0) < 0 {
                // Still held by an old session: take it (we are root).
                libc::ioctl(fd, libc::TIOCSCTTY, 1);
            }
            for target in 0..3 {
                if fd != target && libc::dup2(fd, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
        Ok(())
    };
    // SAFETY: the closure only makes async-signal-safe calls.
    unsafe { cmd.pre_exec(child_setup) };
    let child = cmd.spawn()?;
    i32::try_from(child.id()).map_err(io::Error::other)
}

/// Whether a terminal can be opened (without becoming our controlling terminal).
pub fn tty_usable(path: &str) -> bool {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .is_ok()
}

pub struct SignalSet(libc::sigset_t);

/// Blocks `signals` so that they queue for `wait_signal` instead of being delivered.
pub fn block_signals(signals: &[i32]) -> io::Result<SignalSet> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signo in signals {
            libc::sigaddset(&mut set, signo);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SignalSet(set))
    }
}

/// sigtimedwait: the next pending signal of `set`, or None after `timeout`.
pub fn wait_signal(set: &SignalSet, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: valid pointers to local data.
    let signo = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::sigtimedwait(&set.0, &mut info, &ts)
    };
    (signo > 0).then_some(signo)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaped {
    Child { pid: i32, status: i32 },
    NoneExited,
    NoChildren,
}

/// waitpid(-1, WNOHANG).
pub fn reap_one() -> Reaped {
    let mut status = 0;
    // SAFETY: valid pointer to a local.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    match pid {
        0 => Reaped::NoneExited,
        p if p > 0 => Reaped::Child { pid: p, status },
        _ if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => Reaped::NoneExited,
        _ => Reaped::NoChildren,
    }
}

/// kill(-1, sig): every process except PID 1 and kernel threads.
pub fn kill_all(signo: i32) -> io::Result<()> {
    // SAFETY: plain syscall.
    if unsafe { libc::kill(-1, signo) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ESRCH) => Ok(()),
        _ => Err(err),
    }
}

pub fn kill(pid: i32, signo: i32) -> io::Result<()> {
    // SAFETY: plain syscall; pid > 0 checked so a bad pid never means "everyone".
    if pid > 0 && unsafe { libc::kill(pid, signo) } == 0 {
        return Ok(());
    }
    Err(io::Error::last_os_error())
}

/// Milliseconds since boot (CLOCK_BOOTTIME), for timing logs.
pub fn uptime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a local.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
}

pub fn sync() {
    rustix::fs::sync();
}

/// Ctrl-Alt-Del sends SIGINT to PID 1 instead of an immediate reboot.
pub fn disable_ctrl_alt_del() -> io::Result<()> {
    Ok(rustix::system::reboot(RebootCommand::CadOff)?)
}

/// reboot(RB_AUTOBOOT) or reboot(RB_POWER_OFF); returns only on failure.
pub fn reboot(how: Shutdown) -> io::Error {
    let cmd = match how {
        Shutdown::Reboot => RebootCommand::Restart,
        Shutdown::PowerOff => RebootCommand::PowerOff,
    };
    match rustix::system::reboot(cmd) {
        Ok(()) => io::Error::other("reboot returned"),
        Err(e) => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of a disk image (MBR, primary header, entry array) with two partitions, the
    /// second one's unique GUID c5515ccb-6404-502e-ad6a-4eb4e100bc58.
    fn tiny_gpt_image(path: &Path) {
        let g = |n: u128| gpt::Guid::from_u128(n);
        let table = gpt::Gpt::layout(
            g(1),
            &[
                ("p6os-esp", g(2), g(3), 1 << 20),
                (
                    "p6os-root-a",
                    g(2),
                    g(0xc5515ccb_6404_502e_ad6a_4eb4e100bc58),
                    1 << 20,
                ),
            ],
        );
        let [(_, head), _] = table.encode();
        fs::write(path, head).unwrap();
    }

    #[test]
    fn reads_partition_uuids_from_a_disk() {
        let path = std::env::temp_dir().join(format!("p6os-agent-gpt-{}", std::process::id()));
        tiny_gpt_image(&path);
        let uuids = read_gpt_part_uuids_from(path.to_str().unwrap());
        fs::write(&path, b"not a disk").unwrap();
        let not_gpt = read_gpt_part_uuids_from(path.to_str().unwrap());
        let _ = fs::remove_file(&path);
        assert_eq!(
            uuids.unwrap(),
            vec![
                (1, "00000000-0000-0000-0000-000000000003".to_string()),
                (2, "c5515ccb-6404-502e-ad6a-4eb4e100bc58".to_string())
            ]
        );
        assert_eq!(not_gpt.unwrap_err().kind(), io::ErrorKind::InvalidData);
        let missing = read_gpt_part_uuids("p6os-agent-test-no-such-disk");
        assert_eq!(missing.unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn capped_reads() {
        let path = std::env::temp_dir().join(format!("p6os-agent-cap-{}", std::process::id()));
        fs::write(&path, [7u8; 10]).unwrap();
        let p = path.to_str().unwrap();
        let (exact, over) = (read_capped(p, 10), read_capped(p, 9));
        let _ = fs::remove_file(&path);
        assert_eq!(exact.unwrap(), vec![7u8; 10]);
        assert_eq!(over.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
