//! Thin wrappers around the system calls the agent makes. No decisions here: the plans
//! (`plan`, `policy`) decide, `boot` and `service` sequence, this module only does.

use std::ffi::CString;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rustix::mount::{MountFlags, UnmountFlags};
use rustix::system::RebootCommand;

use crate::modules;
use crate::plan::{Flag, Mount};
use crate::policy::Shutdown;
use crate::uevent::Uevent;

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

/// The uevent files of all block devices (unreadable ones are skipped).
pub fn scan_block_devices() -> Vec<Uevent> {
    let Ok(entries) = fs::read_dir("/sys/class/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("uevent")).ok())
        .map(|text| Uevent::parse(&text))
        .collect()
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
/// terminal and stdin/stdout/stderr. Returns the pid.
pub fn spawn_shell(tty: &str) -> io::Result<i32> {
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
