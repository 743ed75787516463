//! A QEMU virtual machine for tests: q35 + OVMF (a per-VM copy of the variable store), TCG, one
//! vCPU, the image on virtio-blk, the serial console captured to a log, a hard timeout, killed on
//! drop, and the console log printed when the test thread panics.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF built with Secure Boot (and SMM, which protects its variables from the guest).
pub const OVMF_CODE_SECURE_BOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";

/// The firmware a VM boots with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// OVMF without Secure Boot.
    Plain,
    /// OVMF with Secure Boot on, starting from this variable store (keys enrolled:
    /// [`crate::secure_boot::enrolled_vars`]); each VM gets a copy.
    SecureBoot { vars: PathBuf },
}

/// How to start a VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub image: PathBuf,
    pub memory_mib: u32,
    /// The VM is killed after this long, whatever happens.
    pub hard_timeout: Duration,
    pub network: Network,
    /// More raw disks, attached as virtio-blk after the image (`/dev/vdb`, ...).
    pub extra_drives: Vec<PathBuf>,
    /// The bus the boot disk is on.
    pub boot_bus: Bus,
    /// The model of the guest's NIC (when `network` has one).
    pub nic: Nic,
    /// What the guest's hardware clock reads at start (`2001-01-01T00:00:00`: a dead CMOS
    /// battery); the host's time (UTC) when `None`.
    pub rtc_base: Option<String>,
    pub firmware: Firmware,
}

/// The guest's network card, as QEMU models them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nic {
    /// virtio-net: the paravirtual NIC of clouds.
    Virtio,
    /// An Intel 82574L (`e1000e`): the driver of most Intel NICs in small PCs.
    E1000e,
}

impl Nic {
    fn model(self) -> &'static str {
        match self {
            Nic::Virtio => "virtio-net-pci",
            Nic::E1000e => "e1000e",
        }
    }
}

/// The bus of the boot disk, as QEMU models the controllers of real machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// virtio-blk (`/dev/vda`): the paravirtual disk of clouds.
    Virtio,
    /// An NVMe controller (`/dev/nvme0n1`): an Intel NUC's M.2 disk.
    Nvme,
    /// SATA on q35's built-in AHCI controller (`/dev/sda`).
    Sata,
    /// A USB mass-storage stick on an xHCI controller (`/dev/sda`).
    Usb,
}

impl Bus {
    /// QEMU `-device` arguments for the drive `disk0`.
    fn devices(self) -> Vec<String> {
        match self {
            Bus::Virtio => vec!["virtio-blk-pci,drive=disk0".into()],
            Bus::Nvme => vec!["nvme,serial=P6OSTEST0001,drive=disk0".into()],
            Bus::Sata => vec!["ide-hd,drive=disk0,bus=ide.0".into()],
            Bus::Usb => vec![
                "qemu-xhci,id=xhci".into(),
                "usb-storage,bus=xhci.0,drive=disk0,removable=on".into(),
            ],
        }
    }
}

/// The guest's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    None,
    /// One virtio NIC on QEMU's user network with `restrict=on`: the guest sees the slirp
    /// addresses (10.0.2.2 gateway, 10.0.2.3 DNS) but no packet leaves QEMU.
    UserRestricted,
    /// QEMU's user network without IPv6, where 10.0.2.2 is the host's loopback (slirp's
    /// forwarding): for tests serving files on 127.0.0.1. The guest must be configured with
    /// no default route (a static 10.0.2.15/24 only), so it reaches nothing else.
    UserHostLoopback,
    /// Like `UserRestricted`, with the guest's SSH port forwarded from `127.0.0.1:<port>`
    /// on the host (forwarding rules are the one way in that `restrict=on` keeps).
    UserRestrictedSsh {
        port: u16,
    },
    /// Like `UserHostLoopback` (the guest configured with no default route), with the guest's
    /// SSH port forwarded from `127.0.0.1:<port>` on the host.
    UserHostLoopbackSsh {
        port: u16,
    },
}

impl VmConfig {
    pub fn new(image: impl AsRef<Path>) -> Result<VmConfig> {
        for f in [OVMF_CODE, OVMF_VARS] {
            if !Path::new(f).exists() {
                bail!("{f} is missing: install the Debian package ovmf");
            }
        }
        let image = image.as_ref().to_path_buf();
        let block_device = {
            use std::os::unix::fs::FileTypeExt;
            fs::metadata(&image).is_ok_and(|m| m.file_type().is_block_device())
        };
        if !image.is_file() && !block_device {
            bail!(
                "image {} not found (build it with `cargo xtask image`)",
                image.display()
            );
        }
        Ok(VmConfig {
            image,
            memory_mib: 512,
            hard_timeout: Duration::from_secs(600),
            network: Network::None,
            extra_drives: Vec::new(),
            boot_bus: Bus::Virtio,
            nic: Nic::Virtio,
            rtc_base: None,
            firmware: Firmware::Plain,
        })
    }

    /// The variable store each VM starts from.
    fn vars_template(&self) -> &Path {
        match &self.firmware {
            Firmware::Plain => Path::new(OVMF_VARS),
            Firmware::SecureBoot { vars } => vars,
        }
    }

    fn command(&self, disk: &Path, vars: &Path) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        let (machine, code) = match self.firmware {
            Firmware::Plain => ("q35", OVMF_CODE),
            Firmware::SecureBoot { .. } => ("q35,smm=on", OVMF_CODE_SECURE_BOOT),
        };
        c.args([
            "-machine", machine, "-accel", "tcg", "-cpu", "max", "-smp", "1",
        ]);
        if let Firmware::SecureBoot { .. } = self.firmware {
            // Only SMM code may write the variable store: the guest cannot change the keys.
            c.args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
        }
        c.args([
            "-m",
            &self.memory_mib.to_string(),
            "-nodefaults",
            "-display",
            "none",
            "-no-user-config",
        ]);
        c.arg("-drive").arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={code}"
        ));
        c.arg("-drive").arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ));
        c.arg("-drive").arg(format!(
            "if=none,id=disk0,format=raw,file={}",
            disk.display()
        ));
        for device in self.boot_bus.devices() {
            c.arg("-device").arg(device);
        }
        for (i, drive) in self.extra_drives.iter().enumerate() {
            c.arg("-drive").arg(format!(
                "if=none,id=extra{i},format=raw,file={}",
                drive.display()
            ));
            c.arg("-device")
                .arg(format!("virtio-blk-pci,drive=extra{i}"));
        }
        if let Some(base) = &self.rtc_base {
            c.arg("-rtc").arg(format!("base={base}"));
        }
        let model = self.nic.model();
        match self.network {
            Network::None => c.args(["-nic", "none"]),
            Network::UserRestricted => c.arg("-nic").arg(format!("user,model={model},restrict=on")),
            Network::UserHostLoopback => c.arg("-nic").arg(format!("user,model={model},ipv6=off")),
            Network::UserRestrictedSsh { port } => c.arg("-nic").arg(format!(
                "user,model={model},restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22"
            )),
            Network::UserHostLoopbackSsh { port } => c.arg("-nic").arg(format!(
                "user,model={model},ipv6=off,hostfwd=tcp:127.0.0.1:{port}-:22"
            )),
        };
        c
    }

    /// Boots a writable copy of the image; the console is captured.
    pub fn start(&self, name: &str) -> Result<Vm> {
        let dir = vm_dir(name)?;
        let disk = dir.path().join("disk.img");
        copy_image(&self.image, &disk)?;
        self.boot(name, dir, &disk)
    }

    /// Boots the image file itself, which the test owns (e.g. a copy made with
    /// [`copy_image`] to boot several times with different drives), or a block device the
    /// test flashed.
    pub fn start_in_place(&self, name: &str) -> Result<Vm> {
        let dir = vm_dir(name)?;
        self.boot(name, dir, &self.image)
    }

    fn boot(&self, name: &str, dir: tempfile::TempDir, disk: &Path) -> Result<Vm> {
        let vars = dir.path().join("OVMF_VARS.fd");
        fs::copy(self.vars_template(), &vars).context("copying the OVMF variable store")?;
        let log_path = dir.path().join("console.log");
        let mut child = self
            .command(disk, &vars)
            .args(["-serial", "stdio", "-monitor", "none"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting qemu-system-x86_64 (package qemu-system-x86)")?;
        let console = Arc::new(Console::default());
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let log = fs::File::create(&log_path)?;
        spawn_reader(stdout, console.clone(), Some(log));
        spawn_reader(stderr, console.clone(), None);
        let stdin = child.stdin.take();
        let child = Arc::new(Mutex::new(child));
        let watchdog = child.clone();
        let limit = self.hard_timeout;
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            if let Ok(mut c) = watchdog.lock() {
                let _ = c.kill();
            }
        });
        Ok(Vm {
            name: name.into(),
            child,
            stdin,
            console,
            cursor: 0,
            log_path,
            _dir: dir,
            started: Instant::now(),
        })
    }

    /// Boots the image itself (not a copy) with the serial console on this terminal.
    pub fn run_interactive(&self) -> Result<()> {
        let dir = tempfile::tempdir()?;
        let vars = dir.path().join("OVMF_VARS.fd");
        fs::copy(self.vars_template(), &vars)?;
        eprintln!("qemu: serial console on this terminal; Ctrl-A X quits");
        let status = self
            .command(&self.image, &vars)
            .args(["-serial", "mon:stdio"])
            .status()?;
        if !status.success() {
            bail!("qemu exited with {status}");
        }
        Ok(())
    }
}

fn vm_dir(name: &str) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(&format!("p6os-vm-{name}-"))
        .tempdir()?)
}

/// A sparse copy of an image.
pub fn copy_image(from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .status()?;
    if !status.success() {
        bail!("copying {} to {} failed", from.display(), to.display());
    }
    Ok(())
}

#[derive(Default)]
struct Console {
    text: Mutex<String>,
    changed: Condvar,
}

fn spawn_reader(
    stream: impl Read + Send + 'static,
    console: Arc<Console>,
    mut log: Option<fs::File>,
) {
    std::thread::spawn(move || {
        // Chunks as they come, not lines: a full-screen program on the serial console (the
        // site setup screens) draws without newlines. A character split between two reads
        // waits for its other bytes.
        let mut stream = stream;
        let mut buf = [0u8; 4096];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(l) = log.as_mut() {
                        let _ = l.write_all(&buf[..n]);
                    }
                    pending.extend_from_slice(&buf[..n]);
                    let complete = match std::str::from_utf8(&pending) {
                        Ok(_) => pending.len(),
                        Err(e) if e.error_len().is_none() => e.valid_up_to(),
                        Err(_) => pending.len(),
                    };
                    let text = String::from_utf8_lossy(&pending[..complete]).replace('\r', "");
                    pending.drain(..complete);
                    console.text.lock().expect("console lock").push_str(&text);
                    console.changed.notify_all();
                }
            }
        }
        console.changed.notify_all();
    });
}

/// How long a match waits for the end of its line.
const LINE_GRACE: Duration = Duration::from_millis(1500);

/// A running VM. Dropping it kills QEMU; if the test is failing, the console log is printed.
pub struct Vm {
    name: String,
    child: Arc<Mutex<Child>>,
    stdin: Option<ChildStdin>,
    console: Arc<Console>,
    /// Byte offset in the console text up to which lines have been consumed by waits.
    cursor: usize,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
    started: Instant,
}

impl Vm {
    /// Waits until a console line after the previous match contains `needle`; returns that line.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        self.wait_for_any(&[needle], timeout).map(|(_, line)| line)
    }

    /// Waits until a console line after the previous match contains one of `needles`; returns
    /// which (the earliest in the text) and that line.
    pub fn wait_for_any(&mut self, needles: &[&str], timeout: Duration) -> Result<(usize, String)> {
        let deadline = Instant::now() + timeout;
        let mut text = self.console.text.lock().expect("console lock");
        let find = |text: &str, cursor: usize| {
            needles
                .iter()
                .enumerate()
                .filter_map(|(i, n)| text[cursor..].find(n).map(|at| (at, i)))
                .min()
        };
        // A match whose line has not ended yet gets a moment for the rest of it (log lines
        // arrive in pieces now); a screen drawn without newlines is returned as it is after that.
        let mut line_grace: Option<Instant> = None;
        loop {
            if let Some((found, which)) = find(&text, self.cursor) {
                let start = self.cursor
                    + text[self.cursor..found + self.cursor]
                        .rfind('\n')
                        .map_or(0, |i| i + 1);
                let newline = text[self.cursor + found..].find('\n');
                let grace = *line_grace.get_or_insert_with(|| Instant::now() + LINE_GRACE);
                if newline.is_none() && Instant::now() < grace {
                    text = self
                        .console
                        .changed
                        .wait_timeout(text, Duration::from_millis(50))
                        .expect("console lock")
                        .0;
                    continue;
                }
                let end = newline.map_or(text.len(), |i| self.cursor + found + i);
                let line = text[start..end].to_string();
                self.cursor = end;
                return Ok((which, line));
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "vm {}: `{}` not seen within {:?} ({:.0?} since start)",
                    self.name,
                    needles.join("` or `"),
                    timeout,
                    self.started.elapsed()
                );
            }
            if self.child.lock().expect("child lock").try_wait()?.is_some() {
                // QEMU exited: give readers a moment to drain, then fail.
                drop(text);
                std::thread::sleep(Duration::from_millis(200));
                text = self.console.text.lock().expect("console lock");
                if find(&text, self.cursor).is_some() {
                    continue;
                }
                bail!(
                    "vm {}: qemu exited before `{}` appeared",
                    self.name,
                    needles.join("` or `")
                );
            }
            text = self
                .console
                .changed
                .wait_timeout(text, (deadline - now).min(Duration::from_millis(500)))
                .expect("console lock")
                .0;
        }
    }

    /// Types bytes on the serial console as they are (control keys: `\x0e` is Ctrl-N, `\t` Tab).
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let stdin = self.stdin.as_mut().context("vm stdin closed")?;
        stdin.write_all(bytes)?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits until the screen a full-screen program draws on the serial console (from its last
    /// switch to the alternate screen, as an 80x24 terminal shows it) contains `needle`;
    /// returns the screen. Such programs redraw only what changed, so their words are not in
    /// the byte stream as written: only a terminal emulator sees them.
    pub fn wait_for_screen(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return Ok(screen);
            }
            if Instant::now() >= deadline {
                bail!(
                    "vm {}: `{needle}` not on the screen within {timeout:?}; the screen:\n{screen}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The screen as an 80x24 terminal shows it, from the last switch to the alternate screen.
    pub fn screen(&self) -> String {
        let text = self.console.text.lock().expect("console lock").clone();
        let start = text.rfind("\x1b[?1049h").unwrap_or(0);
        let mut parser = vt100::Parser::new(24, 80, 0);
        parser.process(&text.as_bytes()[start..]);
        parser.screen().contents()
    }

    /// Types a line on the serial console.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("vm stdin closed")?;
        stdin.write_all(line.as_bytes())?;
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Everything the console printed so far.
    pub fn console_log(&self) -> String {
        self.console.text.lock().expect("console lock").clone()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits for QEMU to exit by itself (e.g. after poweroff).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.child.lock().expect("child lock").try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("vm {}: qemu still running after {timeout:?}", self.name)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(mut c) = self.child.lock() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "===== console of vm {} ({}) =====\n{}\n===== end of console =====",
                self.name,
                self.log_path.display(),
                self.console_log()
            );
        }
    }
}

impl Vm {
    /// Runs `command` in the guest shell and returns what it printed. The end is marked by
    /// `<tag>-END`, which the shell computes (`<tag>""-END`), so the echoed command line never
    /// matches it; `tag` must be unique within the test.
    pub fn run(&mut self, tag: &str, command: &str, timeout: Duration) -> Result<String> {
        self.send_line(&format!("{command}; echo {tag}\"\"-END"))?;
        self.wait_for_line(&format!("{tag}-END"), timeout)?;
        let log = self.console_log();
        let end = log
            .rfind(&format!("{tag}-END"))
            .context("end marker vanished")?;
        // Output starts after the echoed command line.
        let start = log[..end]
            .rfind(&format!("{tag}\"\"-END"))
            .map_or(0, |i| i + tag.len() + 6);
        Ok(log[start.min(end)..end].to_string())
    }

    /// Pulls the plug: QEMU is killed at once (what the guest had not written is lost).
    pub fn power_cut(self) {
        drop(self);
    }
}
