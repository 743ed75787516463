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

use crate::bootdisk::{self, Choice, Failure, Outcome, Request};
use crate::bootfail;
use crate::cli::VERSION;
use crate::cmdline::{Cmdline, CmdlineError};
use crate::efivar::{self, Lookup};
use crate::firstboot;
use crate::grow;
use crate::loader;
use crate::log;
use crate::modules;
use crate::plan::{self, Source, Step};
use crate::slots::BootFailure;
use crate::sys::{self, ModuleLoad};
use crate::uevent::{self, BlockDevice};
use p6os_layout::{EntryName, Slot};

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
    /// EIO from the verity device: what it returns for a block that does not match.
    #[error(
        "cannot mount {device} on {target} ({fstype}): a block of the slot does not match its \
         dm-verity root hash (the slot was changed or is damaged)"
    )]
    VerityMount {
        device: String,
        target: String,
        fstype: &'static str,
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
    #[error("{0}")]
    AmbiguousBootDisk(String),
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
    #[error("cannot set up the slot's dm-verity device")]
    Verity(#[from] crate::dm::DmError),
}

/// Runs the initramfs stage. Returns only on error (the caller logs it and reboots).
pub fn run(init_args: &[String]) -> Result<Infallible, BootError> {
    if !sys::is_pid1() {
        return Err(BootError::NotPid1);
    }
    // The initramfs may bring its own /dev/kmsg node: then even the lines before devtmpfs
    // is mounted reach the kernel log. If not, they are kept until it can be opened below.
    let _ = log::attach_kmsg();
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
    let modules = read_module_list();
    for step in plan::plan_devices(&modules) {
        executor.run(&step)?;
    }
    let cmdline = Cmdline::parse(&text, executor.selected_entry.as_deref())?;
    info!(
        "slot {}, rootfstype {}, init {}, rootwait {} s",
        cmdline.slot,
        cmdline.rootfstype.as_str(),
        cmdline.init,
        cmdline.rootwait.as_secs()
    );
    for step in plan::plan_root(&cmdline, init_args) {
        if let Err(e) = executor.run(&step) {
            executor.note_failure(cmdline.slot, &e);
            return Err(e);
        }
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
    /// PARTUUID of the partition the boot loader came from, filled by ReadLoaderVariables.
    boot_part_uuid: Option<String>,
    /// Disk -> `(partition number, PARTUUID)` from its GPT, read once per disk (empty if
    /// it could not be read).
    gpt_part_uuids: HashMap<String, Vec<(u32, String)>>,
    /// Data directories the slot has, filled by FindDataDirs.
    data_dirs: Vec<String>,
    /// Kernel name of the boot disk, filled by WaitForPartitions.
    boot_disk: Option<String>,
    /// Partition label -> its dm-verity device, filled by OpenVerity.
    verity_devices: HashMap<String, String>,
    /// The boot entry the loader started (`LoaderEntrySelected`), filled by
    /// ReadLoaderVariables.
    selected_entry: Option<String>,
    /// Whether the plan mounted the state partition.
    state_mounted: bool,
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
                    Source::Verity(label) => self
                        .verity_devices
                        .get(label)
                        .cloned()
                        .ok_or_else(|| BootError::Unresolved(label.clone()))?,
                };
                sys::mount(m, &device).map_err(|source| {
                    match (&m.source, source.raw_os_error()) {
                        (Source::Verity(_), Some(libc::EIO)) => BootError::VerityMount {
                            device: device.clone(),
                            target: m.target.clone(),
                            fstype: m.fstype,
                            source,
                        },
                        _ => BootError::Mount {
                            device: device.clone(),
                            target: m.target.clone(),
                            fstype: m.fstype,
                            options: m.options(),
                            source,
                        },
                    }
                })?;
                info!("{}", plan::describe_mount(m, &device));
                if m.role == plan::Role::State {
                    self.state_mounted = true;
                }
            }
            Step::LoadModules { paths } => load_modules(paths),
            Step::OpenVerity {
                label,
                name,
                params,
            } => {
                let partition = self
                    .devices
                    .get(label)
                    .cloned()
                    .ok_or_else(|| BootError::Unresolved(label.clone()))?;
                let number =
                    crate::dm::device_number(&partition).map_err(|source| BootError::Read {
                        path: "the slot's device node",
                        source,
                    })?;
                let (sectors, table) = params.table(&number);
                let node = crate::dm::create_read_only(name, sectors, "verity", &table)?;
                info!(
                    "dm-verity {name} ({node}) over {partition}: {} blocks, root hash {}",
                    params.data_blocks,
                    params.value().rsplit(':').next().unwrap_or_default()
                );
                self.verity_devices.insert(label.clone(), node);
            }
            Step::FindDataDirs { dirs, root } => {
                // The slot's own directories (not followed through symlinks).
                self.data_dirs = dirs
                    .iter()
                    .filter(|d| {
                        fs::symlink_metadata(format!("{root}{d}")).is_ok_and(|m| m.is_dir())
                    })
                    .cloned()
                    .collect();
            }
            Step::BindDataDirs { dirs, root, state } => {
                for dir in dirs.iter().filter(|d| self.data_dirs.contains(d)) {
                    let target = format!("{root}{dir}");
                    let source = format!("{state}/data{dir}");
                    sys::mkdir_p(&source, 0o711).map_err(|e| BootError::MakeDir {
                        path: source.clone(),
                        source: e,
                    })?;
                    sys::bind_mount(&source, &target).map_err(|e| BootError::Mount {
                        device: source.clone(),
                        target: target.clone(),
                        fstype: "bind",
                        options: "rw".into(),
                        source: e,
                    })?;
                    info!("bound {source} on {target}");
                }
            }
            Step::GrowPartition { label } => {
                let part = self
                    .devices
                    .get(label)
                    .map(|d| d.trim_start_matches("/dev/"));
                match (self.boot_disk.as_deref(), part) {
                    (Some(disk), Some(part)) => {
                        if let Err(e) = grow::grow_partition(disk, part, label) {
                            warn!("{label} not grown: {}", log::error_chain(&e));
                        }
                    }
                    _ => warn!("{label} not grown: no boot disk"),
                }
            }
            Step::GrowFilesystem { label, target } => {
                if let Some(part) = self.devices.get(label) {
                    let part = part.trim_start_matches("/dev/");
                    if let Err(e) = grow::grow_filesystem(part, target) {
                        warn!(
                            "the filesystem of {label} not grown: {}",
                            log::error_chain(&e)
                        );
                    }
                }
            }
            Step::ReadLoaderVariables => self.read_loader_variables(),
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
            Step::ClockFloor { root, state } => crate::clock::apply_floor(root, state),
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
            Step::ApplyConfig { config_arg } => firstboot::run(&firstboot::Context {
                state_dir: plan::STATE_DIR,
                sysroot: plan::SYSROOT,
                esp_device: self.devices.get(plan::ESP_PARTLABEL).map(String::as_str),
                config_arg: config_arg.as_deref(),
            }),
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

    /// Leaves a note on the state partition saying why `slot` did not start, for the slot
    /// that runs next (`bootfail`). Only for a trial entry of ours: a blessed slot that fails
    /// has no fallback to explain. Best effort: the reboot follows whatever happens here.
    fn note_failure(&mut self, slot: Slot, error: &BootError) {
        let Some(entry) = self.selected_entry.as_deref().and_then(EntryName::parse) else {
            return;
        };
        if entry.slot != slot || entry.counter.is_blessed() {
            return;
        }
        let Some(device) = self.devices.get(plan::STATE_PARTLABEL).cloned() else {
            return;
        };
        let failure = BootFailure {
            slot,
            version: entry.version.clone(),
            reason: format!("slot {slot} did not start: {}", log::error_chain(error)),
        };
        let mounted_here = !self.state_mounted;
        if mounted_here {
            let _ = sys::mkdir_p(plan::STATE_DIR, 0o755);
            if let Err(e) = sys::mount_state(&device, plan::STATE_DIR) {
                warn!("cannot mount {device} to note why slot {slot} failed: {e}");
                return;
            }
        }
        match bootfail::write_below(plan::STATE_DIR, &failure) {
            Ok(()) => info!("noted on the state partition why slot {slot} did not start"),
            Err(e) => warn!("cannot note why slot {slot} did not start: {e}"),
        }
        if mounted_here {
            let _ = sys::unmount(plan::STATE_DIR);
        }
    }

    fn read_loader_variables(&mut self) {
        loader::ensure_efivarfs();
        let vars = loader::read_all();
        info!("{}", efivar::describe_entry(&vars.entry));
        match loader::secure_boot() {
            Some(true) => {
                info!("secure boot: on (the firmware checked the boot loader and kernel image)")
            }
            Some(false) => info!("secure boot: off"),
            None => {}
        }
        if let Lookup::Found(entry) = &vars.entry {
            self.selected_entry = Some(entry.clone());
        }
        match &vars.device_part_uuid {
            Lookup::Found(uuid) => self.boot_part_uuid = Some(uuid.clone()),
            Lookup::Absent => {}
            other => warn!(
                "{}; choosing the boot disk without it",
                other
                    .problem(efivar::LOADER_DEVICE_PART_UUID)
                    .unwrap_or_default()
            ),
        }
    }

    /// Polls until `bootdisk::choose` settles on a disk whose partitions have device nodes.
    fn wait_for_partitions(
        &mut self,
        labels: &[String],
        timeout: Duration,
    ) -> Result<(), BootError> {
        let start = Instant::now();
        let mut announced = String::new();
        loop {
            let timed_out = start.elapsed() >= timeout;
            let mut devices = sys::scan_block_devices();
            if self.boot_part_uuid.is_some() {
                self.add_part_uuids_from_gpt(&mut devices, labels);
            }
            let request = Request {
                labels,
                boot_part_uuid: self.boot_part_uuid.as_deref(),
                timed_out,
            };
            let awaited = match bootdisk::choose(&devices, &request) {
                Outcome::Chosen(choice) => {
                    // The sysfs entry appears just before devtmpfs creates the node.
                    let absent: Vec<String> = choice
                        .partitions
                        .iter()
                        .map(|(_, name)| format!("/dev/{name}"))
                        .filter(|path| !sys::exists_no_follow(path))
                        .collect();
                    if absent.is_empty() {
                        self.use_disk(choice, start);
                        return Ok(());
                    }
                    let plural = if absent.len() == 1 { "" } else { "s" };
                    let nodes = format!("device node{plural} {}", uevent::join_and(&absent));
                    if timed_out {
                        return Err(BootError::PartitionsNotFound {
                            missing: nodes,
                            waited_secs: timeout.as_secs(),
                            seen: uevent::describe(&devices),
                        });
                    }
                    nodes
                }
                Outcome::Wait(wait) => wait.to_string(),
                Outcome::Failed(Failure::NotFound(missing)) => {
                    return Err(BootError::PartitionsNotFound {
                        missing,
                        waited_secs: timeout.as_secs(),
                        seen: uevent::describe(&devices),
                    })
                }
                Outcome::Failed(Failure::Ambiguous(message)) => {
                    return Err(BootError::AmbiguousBootDisk(message))
                }
            };
            if timed_out {
                // `choose` decides once timed out; this is only a safety net.
                return Err(BootError::PartitionsNotFound {
                    missing: awaited,
                    waited_secs: timeout.as_secs(),
                    seen: uevent::describe(&devices),
                });
            }
            if awaited != announced {
                info!("waiting up to {} s for {awaited}", timeout.as_secs());
                announced = awaited;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Kernels before 6.13 have no PARTUUID in uevent files: read it from the GPT of the
    /// disks that matter (those holding a wanted label).
    fn add_part_uuids_from_gpt(&mut self, devices: &mut [BlockDevice], labels: &[String]) {
        for disk in bootdisk::disks_without_part_uuids(devices, labels) {
            if !self.gpt_part_uuids.contains_key(&disk) {
                match sys::read_gpt_part_uuids(&disk) {
                    Ok(uuids) => {
                        self.gpt_part_uuids.insert(disk.clone(), uuids);
                    }
                    // No device node yet: next time.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    // Not again: a failing disk must not be read every poll.
                    Err(e) => {
                        warn!("cannot read the partition table of /dev/{disk}: {e}");
                        self.gpt_part_uuids.insert(disk.clone(), Vec::new());
                    }
                }
            }
            if let Some(uuids) = self.gpt_part_uuids.get(&disk) {
                bootdisk::apply_gpt(devices, &disk, uuids);
            }
        }
    }

    fn use_disk(&mut self, choice: Choice, start: Instant) {
        for warning in &choice.warnings {
            warn!("{warning}");
        }
        info!("{}", choice.describe());
        self.boot_disk = Some(choice.disk.clone());
        if !choice.ignored.is_empty() {
            let labels: Vec<&str> = choice.partitions.iter().map(|(l, _)| l.as_str()).collect();
            warn!(
                "not using {} on {}",
                uevent::join_and(&labels),
                uevent::join_and(&choice.ignored)
            );
        }
        let mut summary = Vec::new();
        for (label, name) in choice.partitions {
            let path = format!("/dev/{name}");
            summary.push(format!("{label} at {path}"));
            self.devices.insert(label, path);
        }
        info!(
            "found {} after {} ms",
            summary.join(", "),
            start.elapsed().as_millis()
        );
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
