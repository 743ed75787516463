//! The initramfs stage (`/init`): runs `plan_early`, reads the command line and the
//! module list, then runs `plan_boot` up to the exec of the slot's init.
//!
//! Architecture invariant: the order of steps lives in `plan`; this module executes one
//! step at a time and knows only how to log it and what error to report.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs;
use std::io;
use std::thread;
use std::time::{Duration, Instant};

use crate::cli::VERSION;
use crate::cmdline::{Cmdline, CmdlineError};
use crate::log;
use crate::modules;
use crate::plan::{self, Source, Step};
use crate::sys::{self, ModuleLoad};
use crate::uevent;

const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("the initramfs stage must run as pid 1")]
    NotPid1,
    #[error("cannot create directory {path}")]
    MakeDir {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot mount {device} on {target} ({fstype}, {options})")]
    Mount {
        device: String,
        target: String,
        fstype: &'static str,
        options: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
    #[error("{missing} not found after {waited_secs} s (block devices: {seen})")]
    PartitionsNotFound {
        missing: String,
        waited_secs: u64,
        seen: String,
    },
    #[error("partition {0} is mounted before it was looked up")]
    Unresolved(String),
    #[error("{what} {path} not found in the slot root")]
    MissingFile { what: &'static str, path: String },
    #[error("cannot move mount {from} to {to}")]
    MoveMount {
        from: String,
        to: String,
        #[source]
        source: io::Error,
    },
    #[error("switch_root to {new_root} failed")]
    SwitchRoot {
        new_root: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot exec {path}")]
    Exec {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("boot plan ended without exec")]
    NoExec,
}

/// Runs the initramfs stage. Returns only on error (the caller logs it and reboots).
pub fn run(init_args: &[String]) -> Result<Infallible, BootError> {
    if !sys::is_pid1() {
        return Err(BootError::NotPid1);
    }
    info!(
        "initramfs stage, version {VERSION} (kernel uptime {} ms)",
        sys::uptime_ms()
    );
    let mut executor = Executor::default();
    for step in plan::plan_early() {
        executor.run(&step)?;
    }
    sys::ensure_stdio();
    if let Err(e) = log::attach_kmsg() {
        log::forget_pending();
        warn!("cannot open /dev/kmsg: {e}");
    }
    // kmsg drops user lines beyond 10 per 5 s unless told otherwise; restored before exec.
    match sys::set_printk_devkmsg("on") {
        Ok(old) => executor.saved_devkmsg = Some(old),
        Err(e) => warn!("cannot set printk_devkmsg: {e}"),
    }
    let text = fs::read_to_string("/proc/cmdline").map_err(|source| BootError::Read {
        path: "/proc/cmdline",
        source,
    })?;
    let cmdline = Cmdline::parse(&text)?;
    info!(
        "slot {}, rootfstype {}, init {}, rootwait {} s",
        cmdline.slot,
        cmdline.rootfstype.as_str(),
        cmdline.init,
        cmdline.rootwait.as_secs()
    );
    let modules = read_module_list();
    for step in plan::plan_boot(&cmdline, &modules, init_args) {
        executor.run(&step)?;
    }
    Err(BootError::NoExec)
}

fn read_module_list() -> Vec<String> {
    let text = match fs::read_to_string(plan::MODULES_LOAD) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            info!("no {}: loading no modules", plan::MODULES_LOAD);
            return Vec::new();
        }
        Err(e) => {
            warn!(
                "cannot read {}: {e}; loading no modules",
                plan::MODULES_LOAD
            );
            return Vec::new();
        }
    };
    let list = modules::parse(&text);
    for bad in &list.bad_lines {
        warn!("{}: {bad}; skipped", plan::MODULES_LOAD);
    }
    list.paths
}

#[derive(Default)]
struct Executor {
    /// Partition label -> device path, filled by WaitForPartitions.
    devices: HashMap<String, String>,
    saved_devkmsg: Option<String>,
}

impl Executor {
    fn run(&mut self, step: &Step) -> Result<(), BootError> {
        match step {
            Step::MakeDirs { paths, mode } => {
                for path in paths {
                    sys::mkdir_p(path, *mode).map_err(|source| BootError::MakeDir {
                        path: path.clone(),
                        source,
                    })?;
                }
            }
            Step::Mount(m) => {
                let device = match &m.source {
                    Source::Named(name) => name.to_string(),
                    Source::Partition(label) => self
                        .devices
                        .get(label)
                        .cloned()
                        .ok_or_else(|| BootError::Unresolved(label.clone()))?,
                };
                sys::mount(m, &device).map_err(|source| BootError::Mount {
                    device: device.clone(),
                    target: m.target.clone(),
                    fstype: m.fstype,
                    options: m.options(),
                    source,
                })?;
                info!("{}", plan::describe_mount(m, &device));
            }
            Step::LoadModules { paths } => load_modules(paths),
            Step::WaitForPartitions { labels, timeout } => {
                self.wait_for_partitions(labels, *timeout)?;
            }
            Step::RequireFile { path, what } => {
                if !sys::exists_no_follow(path) {
                    return Err(BootError::MissingFile {
                        what,
                        path: path.clone(),
                    });
                }
            }
            Step::MoveMounts { paths, into } => {
                for from in paths {
                    let to = format!("{into}{from}");
                    sys::mount_move(from, &to).map_err(|source| BootError::MoveMount {
                        from: from.clone(),
                        to,
                        source,
                    })?;
                }
                info!("moved {} to {into}", paths.join(", "));
            }
            Step::DeleteInitramfs => match sys::delete_initramfs() {
                Ok(freed) => info!(
                    "freed initramfs: {} files, {} KiB",
                    freed.files,
                    freed.bytes / 1024
                ),
                Err(e) => warn!("initramfs contents not deleted: {e}"),
            },
            Step::SwitchRoot { new_root } => {
                info!(
                    "switch_root to {new_root} after {} ms (kernel uptime {} ms)",
                    log::elapsed_ms(),
                    sys::uptime_ms()
                );
                sys::switch_root(new_root).map_err(|source| BootError::SwitchRoot {
                    new_root: new_root.clone(),
                    source,
                })?;
            }
            Step::Exec { path, argv } => {
                info!("exec {}", argv.join(" "));
                if let Some(old) = self.saved_devkmsg.take() {
                    let _ = sys::set_printk_devkmsg(&old);
                }
                let source = sys::exec(path, argv);
                return Err(BootError::Exec {
                    path: path.clone(),
                    source,
                });
            }
        }
        Ok(())
    }

    fn wait_for_partitions(
        &mut self,
        labels: &[String],
        timeout: Duration,
    ) -> Result<(), BootError> {
        let start = Instant::now();
        let mut announced = false;
        loop {
            let devices = sys::scan_block_devices();
            let mut found = Vec::new();
            let mut missing = Vec::new();
            for label in labels {
                let names = uevent::devnames_with_partname(&devices, label);
                // The sysfs entry appears just before devtmpfs creates the node.
                match names.first().map(|n| format!("/dev/{n}")) {
                    Some(path) if sys::exists_no_follow(&path) => {
                        found.push((label, path, names.len()))
                    }
                    _ => missing.push(label.as_str()),
                }
            }
            if missing.is_empty() {
                let mut summary = Vec::new();
                for (label, path, count) in found {
                    if count > 1 {
                        warn!("{count} partitions are labelled {label}; using {path}");
                    }
                    summary.push(format!("{label} at {path}"));
                    self.devices.insert(label.clone(), path);
                }
                info!(
                    "found {} after {} ms",
                    summary.join(", "),
                    start.elapsed().as_millis()
                );
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(BootError::PartitionsNotFound {
                    missing: uevent::describe_labels(&missing),
                    waited_secs: timeout.as_secs(),
                    seen: uevent::describe(&devices),
                });
            }
            if !announced {
                info!(
                    "waiting up to {} s for {}",
                    timeout.as_secs(),
                    missing.join(", ")
                );
                announced = true;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

fn load_modules(paths: &[String]) {
    let start = Instant::now();
    let (mut loaded, mut present, mut failed) = (0, 0, 0);
    for path in paths {
        match sys::load_module(path) {
            Ok(ModuleLoad::Loaded) => loaded += 1,
            Ok(ModuleLoad::AlreadyPresent) => present += 1,
            Err(e) => {
                failed += 1;
                warn!("module {} ({path}): {e}", modules::module_name(path));
            }
        }
    }
    info!(
        "loaded {loaded} modules ({present} already present, {failed} failed) in {} ms",
        start.elapsed().as_millis()
    );
}
