//! Service mode: PID 1 of the minimal base after switch_root (or `p6os-agent service`).
//! Mounts what is missing, announces `ready` (slot, version, boot entry), keeps a shell
//! on the serial console, reaps every child and shuts down on busybox's reboot/poweroff
//! signals.
//!
//! Not PID 1 (a test run): no mounts, no kill(-1), no reboot; a shutdown signal only
//! stops the shell and exits.

use std::fs;
use std::io;
use std::thread;
use std::time::{Duration, Instant};

use crate::cli::VERSION;
use crate::cmdline;
use crate::efivar::{self, Lookup};
use crate::fatal;
use crate::loader;
use crate::log;
use crate::mountinfo;
use crate::plan::{self, Source, Step};
use crate::policy::{self, Event, Respawn, Shutdown};
use crate::sys::{self, Reaped};
use crate::sysconfig;
use p6os_layout::manifest::SlotIdentity as Manifest;
use p6os_layout::slot::MANIFEST_PATH;

const SERIAL_TTY: &str = "/dev/ttyS0";
const FALLBACK_TTY: &str = "/dev/console";
/// How long processes get after SIGTERM at shutdown.
const TERM_GRACE: Duration = Duration::from_secs(2);
const KILL_GRACE: Duration = Duration::from_secs(1);
/// Wake-up period while the shell runs (reaping is also driven by SIGCHLD).
const IDLE_WAKEUP: Duration = Duration::from_secs(60);

/// Runs service mode. As PID 1 it never returns; otherwise returns the exit status.
pub fn run() -> i32 {
    let pid1 = sys::is_pid1();
    // Block first: PID 1 ignores unblocked signals it has no handler for.
    let signals = match sys::block_signals(&policy::HANDLED_SIGNALS) {
        Ok(set) => set,
        Err(e) => fatal::die(&format!("cannot block signals: {e}")),
    };
    if pid1 {
        ensure_mounts();
        sys::ensure_stdio();
    }
    if log::attach_kmsg().is_err() {
        log::forget_pending();
    }
    info!(
        "service mode, version {VERSION}{}",
        if pid1 {
            ""
        } else {
            " (not pid 1: no mounts, no reboot)"
        }
    );
    let mut environment = Vec::new();
    if pid1 {
        sysconfig::apply_hostname();
        sysconfig::apply_network();
        environment = sysconfig::environment();
    }
    let (slot, version) = (read_slot(), read_version());
    let entry = read_entry(pid1);
    info!("{}", policy::ready_line(&slot, &version, entry.value()));
    if pid1 {
        if let Err(e) = sys::disable_ctrl_alt_del() {
            warn!("cannot route ctrl-alt-del to pid 1: {e}");
        }
        // Boot assessment (health checks, blessing, fallback) in a child process beside the
        // shell: it may take the health timeout, it waits for its own check commands (pid 1
        // reaps only its children), and a reboot it asks for arrives here as a signal.
        match std::process::Command::new("/proc/self/exe")
            .arg("assess-boot")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .spawn()
        {
            Ok(child) => info!("boot assessment started (pid {})", child.id()),
            Err(e) => warn!("cannot start the boot assessment: {e}"),
        }
    }
    // The registration reaches the console through the site's proxy, when /etc/environment
    // names one (it gets no other variable from there).
    let proxies = crate::upgrade::http::proxy::variables_of(&environment);
    let mut shell = ShellState::new(environment);
    // Registration with the console beside the shell, restarted if it ever stops.
    let mut register = Registrar {
        pid: None,
        next_start: pid1.then(Instant::now),
        proxies,
    };
    loop {
        let now = Instant::now();
        if shell.pid.is_none() && now >= shell.next_spawn {
            shell.spawn();
        }
        register.start_if_due(now);
        let mut timeout = match shell.pid {
            Some(_) => IDLE_WAKEUP,
            None => shell
                .next_spawn
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10)),
        };
        if let Some(at) = register.next_start {
            timeout = timeout.min(
                at.saturating_duration_since(now)
                    .max(Duration::from_millis(10)),
            );
        }
        match sys::wait_signal(&signals, timeout).map(policy::event_for_signal) {
            None | Some(Event::ChildExited) => reap_children(&mut shell, &mut register),
            Some(Event::Shutdown(how)) => {
                if pid1 {
                    shutdown(how, shell.pid)
                }
                return stop_shell_and_exit(how, &mut shell);
            }
            Some(Event::Ignore) => {}
        }
    }
}

fn read_slot() -> String {
    let slot = fs::read_to_string("/proc/cmdline")
        .map_err(|e| format!("cannot read /proc/cmdline: {e}"))
        .and_then(|text| {
            cmdline::slot_from_cmdline(&text, crate::loader::selected_entry().as_deref())
                .map_err(|e| e.to_string())
        });
    match slot {
        Ok(slot) => slot.as_str().to_string(),
        Err(e) => {
            warn!("{e}");
            "unknown".to_string()
        }
    }
}

/// `LoaderEntrySelected` again (efivarfs moved here with /sys; as PID 1 it is mounted
/// if it is not). Absence is normal (direct kernel boot); other problems are warnings.
fn read_entry(pid1: bool) -> Lookup {
    if pid1 {
        loader::ensure_efivarfs();
    }
    let entry = loader::read_entry();
    if matches!(entry, Lookup::Invalid | Lookup::Unreadable(_)) {
        if let Some(problem) = entry.problem(efivar::LOADER_ENTRY_SELECTED) {
            warn!("{problem}");
        }
    }
    entry
}

fn read_version() -> String {
    let manifest = fs::read_to_string(MANIFEST_PATH)
        .map_err(|e| format!("cannot read {MANIFEST_PATH}: {e}"))
        .and_then(|text| {
            Manifest::parse(&text).map_err(|e| format!("{MANIFEST_PATH}: {}", log::error_chain(&e)))
        });
    match manifest {
        Ok(m) => m.version,
        Err(e) => {
            warn!("{e}");
            "unknown".to_string()
        }
    }
}

fn mount_points() -> Option<Vec<String>> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    Some(mountinfo::mount_points(&text))
}

/// Mounts /proc, /sys, /dev, /run and /tmp where nothing is mounted yet.
fn ensure_mounts() {
    let points = match mount_points() {
        Some(points) => points,
        None => {
            // No /proc: mount it first, then look again (never stack on a guess).
            if let Some(Step::Mount(m)) = plan::plan_service_mounts(&[]).first() {
                mount_tolerating_busy(m);
            }
            match mount_points() {
                Some(points) => points,
                None => {
                    warn!("cannot read /proc/self/mountinfo; not mounting /sys /dev /run /tmp");
                    return;
                }
            }
        }
    };
    for step in plan::plan_service_mounts(&points) {
        if let Step::Mount(m) = step {
            mount_tolerating_busy(&m);
        }
    }
}

fn mount_tolerating_busy(m: &plan::Mount) {
    let Source::Named(source) = m.source else {
        return;
    };
    match sys::mount(m, source) {
        Ok(()) => info!("{}", plan::describe_mount(m, source)),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
        Err(e) => warn!("cannot mount {source} on {}: {e}", m.target),
    }
}

struct ShellState {
    pid: Option<i32>,
    started: Instant,
    next_spawn: Instant,
    respawn: Respawn,
    /// From /etc/environment.
    environment: Vec<(String, String)>,
}

impl ShellState {
    fn new(environment: Vec<(String, String)>) -> ShellState {
        let now = Instant::now();
        ShellState {
            pid: None,
            started: now,
            next_spawn: now,
            respawn: Respawn::default(),
            environment,
        }
    }

    fn spawn(&mut self) {
        let tty = if sys::tty_usable(SERIAL_TTY) {
            SERIAL_TTY
        } else {
            FALLBACK_TTY
        };
        self.started = Instant::now();
        match sys::spawn_shell(tty, &self.environment) {
            Ok(pid) => {
                info!("started shell on {tty} (pid {pid})");
                self.pid = Some(pid);
            }
            Err(e) => {
                let delay = self.respawn.after_exit(Duration::ZERO);
                warn!(
                    "cannot start /bin/sh on {tty}: {e}; retrying in {} s",
                    delay.as_secs()
                );
                self.next_spawn = Instant::now() + delay;
            }
        }
    }

    fn exited(&mut self, status: i32) {
        self.pid = None;
        let delay = self.respawn.after_exit(self.started.elapsed());
        self.next_spawn = Instant::now() + delay;
        info!(
            "shell exited ({}); restarting in {} s",
            policy::describe_wait_status(status),
            delay.as_secs()
        );
    }
}

/// The `p6os-agent register` child: started when the console is configured, restarted
/// after a minute if it stops with an error.
struct Registrar {
    pid: Option<i32>,
    next_start: Option<Instant>,
    /// The proxy variables of /etc/environment, passed on.
    proxies: Vec<(String, String)>,
}

impl Registrar {
    const RESTART_DELAY: Duration = Duration::from_secs(60);

    fn start_if_due(&mut self, now: Instant) {
        if self.pid.is_some() || self.next_start.is_none_or(|at| now < at) {
            return;
        }
        self.next_start = None;
        if !std::path::Path::new(crate::register::CONSOLE_CONFIG).exists() {
            return;
        }
        match std::process::Command::new("/proc/self/exe")
            .arg("register")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(self.proxies.iter().map(|(k, v)| (k, v)))
            .spawn()
        {
            Ok(child) => {
                info!("registration started (pid {})", child.id());
                self.pid = Some(child.id() as i32);
            }
            Err(e) => {
                warn!("cannot start the registration: {e}");
                self.next_start = Some(now + Self::RESTART_DELAY);
            }
        }
    }

    fn exited(&mut self, status: i32) {
        self.pid = None;
        if status != 0 {
            warn!(
                "registration stopped ({}); restarting in {} s",
                policy::describe_wait_status(status),
                Self::RESTART_DELAY.as_secs()
            );
            self.next_start = Some(Instant::now() + Self::RESTART_DELAY);
        }
    }
}

/// waitpid(-1, WNOHANG) until nothing is left to reap.
fn reap_children(shell: &mut ShellState, register: &mut Registrar) {
    while let Reaped::Child { pid, status } = sys::reap_one() {
        if shell.pid == Some(pid) {
            shell.exited(status);
        } else if register.pid == Some(pid) {
            register.exited(status);
        }
    }
}

/// Reaps until no child is left or `grace` has passed; true if none is left.
fn reap_until_gone(grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    loop {
        loop {
            match sys::reap_one() {
                Reaped::Child { .. } => continue,
                Reaped::NoChildren => return true,
                Reaped::NoneExited => break,
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// PID 1 shutdown: stop everything, put the state partition to rest, reboot/power off.
fn shutdown(how: Shutdown, shell: Option<i32>) -> ! {
    info!("{}", how.announcement());
    // An interactive shell ignores SIGTERM; a hangup ends it (and its jobs).
    if let Some(pid) = shell {
        let _ = sys::kill(pid, libc::SIGHUP);
    }
    if let Err(e) = sys::kill_all(libc::SIGTERM) {
        warn!("cannot send SIGTERM to all processes: {e}");
    }
    // Stopped processes act on SIGTERM only once continued.
    let _ = sys::kill_all(libc::SIGCONT);
    if !reap_until_gone(TERM_GRACE) {
        info!("sending SIGKILL to remaining processes");
        if let Err(e) = sys::kill_all(libc::SIGKILL) {
            warn!("cannot send SIGKILL to all processes: {e}");
        }
        reap_until_gone(KILL_GRACE);
    }
    sys::sync();
    unmount_overlays();
    match sys::remount_read_only(plan::STATE_DIR) {
        Ok(()) => info!("state partition {} is read-only", plan::STATE_DIR),
        Err(e) => warn!("cannot remount {} read-only: {e}", plan::STATE_DIR),
    }
    sys::sync();
    let err = sys::reboot(how);
    fatal::die(&format!("{} failed: {err}", how.announcement()))
}

/// Unmounts /etc and /var and whatever is mounted below them (e.g. kubelet volumes).
fn unmount_overlays() {
    let mut order = mountinfo::unmount_order(&mount_points().unwrap_or_default(), &plan::OVERLAID);
    if order.is_empty() {
        order = plan::OVERLAID.map(String::from).to_vec();
    }
    let mut unmounted = Vec::new();
    for point in order {
        match sys::unmount(&point) {
            Ok(()) => unmounted.push(point),
            Err(e) => warn!("cannot unmount {point}: {e}"),
        }
    }
    if !unmounted.is_empty() {
        info!("unmounted {}", unmounted.join(", "));
    }
}

/// Not PID 1: stop our own shell and exit instead of touching the machine.
fn stop_shell_and_exit(how: Shutdown, shell: &mut ShellState) -> i32 {
    info!(
        "{} requested; not pid 1, so stopping the shell and exiting",
        how.announcement()
    );
    if let Some(pid) = shell.pid.take() {
        let _ = sys::kill(pid, libc::SIGHUP);
        let _ = sys::kill(pid, libc::SIGTERM);
        if !reap_until_gone(TERM_GRACE) {
            let _ = sys::kill(pid, libc::SIGKILL);
            reap_until_gone(KILL_GRACE);
        }
    }
    let _ = io::Write::flush(&mut io::stdout());
    0
}
