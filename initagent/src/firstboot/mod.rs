//! First boot (and every boot): find `unattended.yaml`, validate it with the same checker as
//! `p6os validate unattended`, render it, and apply it as one transaction on the state
//! partition, before the /etc and /var overlays are mounted.
//!
//! Nothing here stops the boot: an invalid document is printed (`config invalid` and each
//! problem) and changes nothing; any other failure is a warning.
//!
//! Pure parts: `source` (where to look, filesystem labels), `render` (document -> files),
//! `applied` (the record and the decision to apply). I/O: this module and `txn`.

pub mod applied;
mod beneath;
pub mod render;
pub mod source;
pub mod txn;

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use applied::{Applied, Decision, APPLIED_PATH};
use render::{Base, Flavor};
use source::{ConfigArg, FsType, Origin, Partition};

use crate::sys;
use crate::uevent::BlockDevice;

/// Where a configuration partition is mounted while it is read.
const PROBE_MOUNT: &str = "/run/p6os/config-source";
/// Largest document read (a generous bound for YAML with certificates).
const MAX_DOCUMENT: usize = 1 << 20;
pub const MACHINE_ID: &str = "/etc/machine-id";
/// This boot's configuration result for the health checks (`/run` moves into the slot):
/// `applied`, `unchanged`, `none`, `invalid` or `failed`.
pub const CONFIG_STATUS: &str = "/run/p6os/config-status";

/// What the boot stage knows when the state partition is mounted.
pub struct Context<'a> {
    pub state_dir: &'a str,
    pub sysroot: &'a str,
    /// Device of the boot disk's ESP, if found.
    pub esp_device: Option<&'a str>,
    /// Raw `p6os.config=` value.
    pub config_arg: Option<&'a str>,
}

/// Runs first-boot configuration. Never fails: problems are logged.
pub fn run(ctx: &Context) {
    let started = Instant::now();
    let status = run_steps(ctx);
    if let Err(e) = fs::write(CONFIG_STATUS, status) {
        warn!("cannot write {CONFIG_STATUS}: {e}");
    }
    info!(
        "configuration step took {} ms",
        started.elapsed().as_millis()
    );
}

fn run_steps(ctx: &Context) -> &'static str {
    let layout = txn::Layout {
        state: Path::new(ctx.state_dir),
        slot: Path::new(ctx.sysroot),
    };
    match txn::recover(&layout) {
        Ok(true) => info!("finished a configuration change interrupted at the last boot"),
        Ok(false) => {}
        Err(e) => warn!(
            "cannot finish an interrupted configuration change: {}",
            crate::log::error_chain(&e)
        ),
    }
    let machine_id = match ensure_machine_id(&layout) {
        Ok(id) => id,
        Err(e) => {
            warn!("cannot keep a machine id: {e}");
            String::new()
        }
    };
    let Some((origin, bytes)) = discover(ctx) else {
        info!(
            "no unattended.yaml found (kernel argument, configuration drive, ESP, image default)"
        );
        return "none";
    };
    info!("using unattended.yaml from {origin}");
    let digest = applied::sha256(&bytes);
    let doc = match std::str::from_utf8(&bytes) {
        Err(e) => {
            invalid(&origin, &[format!("not UTF-8 text ({e})")]);
            return "invalid";
        }
        Ok(text) => match p6os_config::unattended::load(Path::new(&origin_name(&origin)), text) {
            Ok(doc) => doc,
            Err(diags) => {
                let lines: Vec<String> = diags.0.iter().map(|d| d.to_string()).collect();
                invalid(&origin, &lines);
                return "invalid";
            }
        },
    };
    let base = read_base(&layout, machine_id);
    let rendered = match render::render(&doc, &base) {
        Ok(r) => r,
        Err(errors) => {
            invalid(&origin, &errors);
            return "invalid";
        }
    };
    let upper_applied = layout.upper(APPLIED_PATH).ok();
    let previous: Option<Applied> = upper_applied
        .as_ref()
        .and_then(|p| fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok());
    let stale = match applied::decide(previous.as_ref(), &digest, &rendered) {
        Decision::Unchanged => {
            info!("config unchanged ({digest}): nothing applied");
            return "unchanged";
        }
        Decision::Apply { stale } => stale,
    };
    for note in &rendered.notes {
        warn!("{note}");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut files = applied::managed_files(&rendered);
    files.push(APPLIED_PATH.to_string());
    let record = Applied {
        digest: digest.clone(),
        rendered_digest: applied::rendered_digest(&rendered),
        source: origin.to_string(),
        applied_at: applied::rfc3339(now),
        files,
        notes: rendered.notes.clone(),
    };
    let mut targets = rendered.targets.clone();
    targets.push(render::Target {
        path: APPLIED_PATH.to_string(),
        content: render::Content::File(
            (serde_json::to_string_pretty(&record).unwrap_or_default() + "\n").into_bytes(),
        ),
        mode: 0o644,
        uid: 0,
        gid: 0,
    });
    match txn::apply(&layout, &targets, &stale) {
        Ok(()) => {
            info!(
                "config applied ({digest}): {} files written, {} removed",
                record.files.len(),
                stale.len()
            );
            "applied"
        }
        Err(e) => {
            warn!(
                "config not applied, the previous configuration stays: {}",
                crate::log::error_chain(&e)
            );
            "failed"
        }
    }
}

fn invalid(origin: &Origin, problems: &[String]) {
    warn!(
        "config invalid: {origin} has {} problem{}; nothing applied",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        warn!("  {p}");
    }
}

/// The file name shown in diagnostics.
fn origin_name(origin: &Origin) -> String {
    match origin {
        Origin::KernelArg(arg) => arg.path.clone(),
        Origin::Drive { device, path } => format!("{device}:{path}"),
        Origin::Esp => format!("esp:{}", source::ESP_CONFIG_PATH),
        Origin::Baked => source::BAKED_CONFIG_PATH.to_string(),
    }
}

/// Looks in the contract's order; the first document found wins.
fn discover(ctx: &Context) -> Option<(Origin, Vec<u8>)> {
    let devices = sys::scan_block_devices();
    if let Some(raw) = ctx.config_arg {
        match source::parse_config_arg(raw) {
            Err(e) => warn!("ignoring p6os.config={raw}: {e}"),
            Ok(arg) => match read_from_arg(ctx, &devices, &arg) {
                Ok(bytes) => return Some((Origin::KernelArg(arg), bytes)),
                Err(e) => warn!("p6os.config={raw}: {e}; looking further"),
            },
        }
    }
    if let Some(found) = read_config_drive(&devices) {
        return Some(found);
    }
    if let Some(esp) = ctx.esp_device {
        match read_file_on(esp, FsType::Vfat, source::ESP_CONFIG_PATH) {
            Ok(Some(bytes)) => return Some((Origin::Esp, bytes)),
            Ok(None) => {}
            Err(e) => warn!("cannot read {} on the ESP: {e}", source::ESP_CONFIG_PATH),
        }
    }
    let baked = Path::new(ctx.sysroot).join(&source::BAKED_CONFIG_PATH[1..]);
    match read_capped(&baked) {
        Ok(bytes) => Some((Origin::Baked, bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            warn!("cannot read {}: {e}", baked.display());
            None
        }
    }
}

fn read_from_arg(
    ctx: &Context,
    devices: &[BlockDevice],
    arg: &ConfigArg,
) -> Result<Vec<u8>, String> {
    let device = match &arg.partition {
        Partition::Esp => ctx
            .esp_device
            .map(str::to_string)
            .ok_or("the ESP was not found")?,
        Partition::PartLabel(label) => devices
            .iter()
            .find(|d| d.uevent.partname() == Some(label))
            .and_then(|d| d.uevent.devname())
            .map(|n| format!("/dev/{n}"))
            .ok_or(format!("no partition named {label}"))?,
        Partition::PartUuid(uuid) => devices
            .iter()
            .find(|d| d.part_uuid.as_deref() == Some(uuid))
            .and_then(|d| d.uevent.devname())
            .map(|n| format!("/dev/{n}"))
            .ok_or(format!("no partition {uuid}"))?,
        Partition::Label(label) => labelled(devices)
            .into_iter()
            .find(|(_, p)| p.label.as_deref() == Some(label))
            .map(|(dev, _)| dev)
            .ok_or(format!("no filesystem labelled {label}"))?,
    };
    let fstype = probe_device(&device).map(|p| p.fstype).ok_or(format!(
        "{device} holds no FAT, ext4 or ISO 9660 filesystem"
    ))?;
    match read_file_on(&device, fstype, &arg.path) {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(format!("{} not found on {device}", arg.path)),
        Err(e) => Err(format!("cannot read {} on {device}: {e}", arg.path)),
    }
}

fn read_config_drive(devices: &[BlockDevice]) -> Option<(Origin, Vec<u8>)> {
    for (device, probed) in labelled(devices) {
        let Some(label) = probed
            .label
            .as_deref()
            .filter(|l| source::is_config_drive_label(l))
        else {
            continue;
        };
        for path in source::DRIVE_FILES {
            match read_file_on(&device, probed.fstype, path) {
                Ok(Some(bytes)) => {
                    return Some((
                        Origin::Drive {
                            device: device.clone(),
                            path: path.to_string(),
                        },
                        bytes,
                    ))
                }
                Ok(None) => {}
                Err(e) => {
                    warn!("cannot read {path} on {device} (label {label}): {e}");
                    break;
                }
            }
        }
        info!("{device} is labelled {label} but holds neither unattended.yaml nor user-data");
    }
    None
}

/// Every block device with a recognised filesystem, sorted by device name.
fn labelled(devices: &[BlockDevice]) -> Vec<(String, source::Probed)> {
    let mut names: Vec<String> = devices
        .iter()
        .filter_map(|d| d.uevent.devname())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
        .map(|n| format!("/dev/{n}"))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|dev| probe_device(&dev).map(|p| (dev, p)))
        .collect()
}

fn probe_device(device: &str) -> Option<source::Probed> {
    let mut head = Vec::with_capacity(source::LABEL_PROBE_BYTES);
    fs::File::open(device)
        .ok()?
        .take(source::LABEL_PROBE_BYTES as u64)
        .read_to_end(&mut head)
        .ok()?;
    source::probe(&head)
}

/// Mounts `device` read-only, reads `path`, unmounts. `Ok(None)` if the file is absent.
fn read_file_on(device: &str, fstype: FsType, path: &str) -> io::Result<Option<Vec<u8>>> {
    sys::mkdir_p(PROBE_MOUNT, 0o700)?;
    sys::mount_read_only(device, PROBE_MOUNT, fstype.as_str())?;
    let result = read_capped(&Path::new(PROBE_MOUNT).join(&path[1..]));
    if let Err(e) = sys::unmount(PROBE_MOUNT) {
        warn!("cannot unmount {device} from {PROBE_MOUNT}: {e}");
    }
    match result {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_capped(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(MAX_DOCUMENT as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_DOCUMENT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {} KiB", MAX_DOCUMENT / 1024),
        ));
    }
    Ok(bytes)
}

/// The slot's pristine account files, flavour and Kubernetes distro. The distro is k3s when
/// the slot has `/usr/local/bin/k3s` (k3s bundles its own containerd), else containerd alone
/// when it has `/usr/bin/containerd`, else none. A symlink counts even when it points outside
/// the slot's tree as mounted here (absolute targets resolve only once the slot is root).
fn read_base(layout: &txn::Layout, machine_id: String) -> Base {
    let slot = |p: &str| layout.slot.join(p);
    let text = |p: &str| fs::read_to_string(slot(p)).unwrap_or_default();
    let present = |p: &str| fs::symlink_metadata(slot(p)).is_ok();
    let flavor = if slot("usr/lib/systemd/systemd").exists() || slot("lib/systemd/systemd").exists()
    {
        Flavor::Systemd
    } else {
        Flavor::Minimal
    };
    let kubernetes = if present("usr/local/bin/k3s") {
        render::Distro::K3s
    } else if present("usr/bin/containerd") {
        render::Distro::Containerd
    } else {
        render::Distro::None
    };
    Base {
        flavor,
        passwd: text("etc/passwd"),
        group: text("etc/group"),
        shadow: text("etc/shadow"),
        shell: if slot("bin/bash").exists() {
            "/bin/bash".into()
        } else {
            "/bin/sh".into()
        },
        has_sshd: slot("usr/sbin/sshd").exists(),
        machine_id,
        kubernetes,
    }
}

/// The machine id in /etc/machine-id on the state partition, made once from /dev/urandom.
fn ensure_machine_id(layout: &txn::Layout) -> Result<String, String> {
    let upper = layout.upper(MACHINE_ID).map_err(|e| e.to_string())?;
    if let Ok(text) = fs::read_to_string(&upper) {
        let id = text.trim();
        if valid_machine_id(id) {
            return Ok(id.to_string());
        }
    }
    let mut raw = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let parent = upper.parent().unwrap_or(layout.state);
    let tmp = parent.join(".machine-id.new");
    let _ = fs::remove_file(&tmp);
    txn::write_synced(&tmp, format!("{id}\n").as_bytes(), 0o444).map_err(|e| e.to_string())?;
    fs::rename(&tmp, &upper).map_err(|e| format!("cannot write {}: {e}", upper.display()))?;
    info!("new machine id {id}");
    Ok(id)
}

fn valid_machine_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
