//! First boot (and every boot): find `unattended.yaml`, validate it with the same checker as
//! `p6os validate unattended`, render it, and apply it as one transaction on the state
//! partition, before the /etc and /var overlays are mounted.
//!
//! Nothing here stops the boot: an invalid document is printed (`config invalid` and each
//! problem) and changes nothing; any other failure is a warning.
//!
//! Pure parts: `source` (where to look, filesystem labels), `trust` (which documents a
//! provisioned device believes), `render` (document -> files), `applied` (the record and the
//! decision to apply). I/O: this module and `txn`.

pub mod applied;
mod apply;
pub(crate) mod beneath;
pub mod console;
pub mod render;
pub mod setup;
pub mod source;
pub mod trust;
pub mod txn;

#[cfg(test)]
#[path = "console_boot_tests.rs"]
mod console_boot_tests;

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::time::Instant;

use applied::APPLIED_PATH;
use p6os_bundle::keys::PublicKey;
use render::{Base, Flavor};
use source::{ConfigArg, FsType, Origin, Partition};
use trust::{Candidate, Choice, Provisioning, Signature, SourceKind};

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
        Ok(Some(outcome)) => {
            info!("finished a configuration change interrupted at the last boot");
            log_outcome(&outcome);
        }
        Ok(None) => {}
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
    let upper_applied = layout.upper(APPLIED_PATH).ok();
    let previous_bytes = upper_applied.as_ref().and_then(|p| fs::read(p).ok());
    let (provisioning, previous) = console::provisioning(previous_bytes.as_deref());
    let gate = Gate {
        provisioning,
        keys: config_keys(Path::new(ctx.sysroot)),
    };
    // The console's document, staged by the agent, comes before every other source.
    let staged = console::take(&layout);
    let from_console = staged.as_ref().and_then(|s| gate.console(s, &layout));
    let (Chosen { origin, bytes }, serial, kind) = match from_console {
        Some(chosen) => chosen,
        None => match site_setup(
            discover(ctx, &gate),
            &gate.provisioning,
            &layout,
            &machine_id,
        ) {
            Choice::Apply { candidate, serial } => (candidate.item, serial, candidate.kind),
            Choice::KeepApplied => {
                info!(
                    "config unchanged: no document found is believed; the configuration applied from {} stays",
                    previous.as_ref().map_or("an unreadable record", |p| p.source.as_str())
                );
                return "unchanged";
            }
            Choice::Nothing => {
                info!(
                    "no unattended.yaml found (kernel argument, configuration drive, ESP, image default)"
                );
                return "none";
            }
        },
    };
    info!("using unattended.yaml from {origin}");
    let digest = applied::sha256(&bytes);
    let shown = origin.to_string();
    let (status, problems) = apply::apply(
        &layout,
        machine_id,
        previous.as_ref(),
        (origin, &bytes, &digest),
        (serial, kind),
    );
    if let (Some(s), SourceKind::Console) = (&staged, kind) {
        let source = previous.as_ref().map(|p| p.source.as_str());
        let report = console::report(s, &digest, (status, &problems), source, &shown);
        console::finish(&layout, &report);
    }
    status
}

/// The site setup screens at the console ([`setup`]), when this boot offers them: a document
/// saved there replaces what discovery chose (it is applied as one from a configuration drive:
/// the same checks, the same transaction, and a later change needs a signed document).
fn site_setup(
    choice: Choice<Chosen>,
    provisioning: &Provisioning,
    layout: &txn::Layout,
    machine_id: &str,
) -> Choice<Chosen> {
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let (setting, note) = setup::setting(&cmdline);
    if let Some(note) = note {
        warn!("site setup: {note}");
    }
    let pause = match setup::decide(setting, provisioning) {
        setup::Decision::Offer(pause) => pause,
        setup::Decision::NotOffered(why) => {
            info!("site setup at the console not offered: {why}");
            return choice;
        }
    };
    // The serial of a signed document found stays the floor: the stick it came from, left in,
    // is then a replay and does not undo what was typed over it.
    let (found, serial) = match &choice {
        Choice::Apply { candidate, serial } => (
            Some((
                candidate.item.origin.to_string(),
                candidate.item.bytes.clone(),
            )),
            *serial,
        ),
        _ => (None, None),
    };
    // The agent's own rendering against this slot (a file owner the slot lacks...): the screens
    // save nothing the apply step would refuse.
    let base = read_base(layout, machine_id.to_string());
    let check: p6os_site::ExtraCheck =
        Box::new(move |doc| render::render(doc, &base).err().unwrap_or_default());
    let found_ref = found.as_ref().map(|(o, b)| (o.as_str(), b.as_slice()));
    match setup::offer(pause, found_ref, check) {
        Some(bytes) => Choice::Apply {
            candidate: Candidate {
                kind: SourceKind::Writable,
                digest: applied::sha256(&bytes),
                signature: Signature::Absent,
                item: Chosen {
                    origin: Origin::Typed,
                    bytes,
                },
            },
            serial,
        },
        None => choice,
    }
}

/// What stood in the way of a change, and the steps left for the next boot.
fn log_outcome(outcome: &txn::Outcome) {
    for note in &outcome.notes {
        warn!("config: {note}");
    }
    for u in &outcome.unfinished {
        warn!(
            "config: {} not done (tried again at the next boot): {}",
            u.target,
            crate::log::error_chain(&u.error)
        );
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
        Origin::Console { config } => format!("console:config-{config}"),
        Origin::Typed => "typed at the console".to_string(),
    }
}

/// What decides whether a document found is believed (`trust`).
struct Gate {
    provisioning: Provisioning,
    /// The slot's configuration keys.
    keys: Vec<PublicKey>,
}

impl Gate {
    /// `doc` from `origin`, its signature checked, for [`trust::choose`].
    fn candidate(&self, origin: Origin, doc: Found) -> Candidate<Chosen> {
        let kind = match origin {
            Origin::Baked => SourceKind::Image,
            _ => SourceKind::Writable,
        };
        let signature = console::signature_of(&doc.bytes, doc.signature.as_deref(), &self.keys);
        Candidate {
            kind,
            digest: applied::sha256(&doc.bytes),
            signature,
            item: Chosen {
                origin,
                bytes: doc.bytes,
            },
        }
    }
}

impl Gate {
    /// The console's staged document if it is believed ([`trust::judge_console`]); when it is
    /// not, the refusal is the outcome reported and the search goes on.
    fn console(
        &self,
        staged: &console::Staged,
        layout: &txn::Layout,
    ) -> Option<(Chosen, Option<u64>, SourceKind)> {
        let bytes = staged.document.as_bytes().to_vec();
        let digest = applied::sha256(&bytes);
        let signature = console::signature_of(
            &bytes,
            staged.signature.as_deref().map(str::as_bytes),
            &self.keys,
        );
        let trust = console::console_trust(&self.keys);
        let origin = Origin::Console {
            config: staged.config,
        };
        match trust::judge_console(&self.provisioning, trust, &digest, &signature) {
            trust::Verdict::Believe { serial } => {
                Some((Chosen { origin, bytes }, serial, SourceKind::Console))
            }
            trust::Verdict::Ignore(why) => {
                warn!("ignoring unattended.yaml from {origin}: {why}; nothing from it is applied");
                let problems = [why.to_string()];
                let report = console::report(staged, &digest, ("refused", &problems), None, "");
                console::finish(layout, &report);
                None
            }
        }
    }
}

/// The public keys in the slot's [`p6os_layout::slot::CONFIG_KEYS_DIR`].
pub fn config_keys(sysroot: &Path) -> Vec<PublicKey> {
    let dir = sysroot.join(&p6os_layout::slot::CONFIG_KEYS_DIR[1..]);
    let mut keys = Vec::new();
    let Ok(list) = fs::read_dir(&dir) else {
        return keys;
    };
    let mut paths: Vec<_> = list.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        match fs::read_to_string(&p).map(|t| PublicKey::from_file(&t)) {
            Ok(Ok(k)) => keys.push(k),
            Ok(Err(e)) => warn!("ignoring configuration key {}: {e}", p.display()),
            Err(e) => warn!("cannot read configuration key {}: {e}", p.display()),
        }
    }
    keys
}

/// A document found: where from, its bytes.
struct Chosen {
    origin: Origin,
    bytes: Vec<u8>,
}

/// A document and its detached signature (`<path>.sig`), if one lies beside it.
struct Found {
    bytes: Vec<u8>,
    signature: Option<Vec<u8>>,
}

/// Looks in the contract's order; the first document found and believed wins (`trust`).
/// Sources are read lazily: none is mounted past the one chosen.
fn discover(ctx: &Context, gate: &Gate) -> Choice<Chosen> {
    let devices = sys::scan_block_devices();
    let from_arg = std::iter::once_with(|| {
        let raw = ctx.config_arg?;
        match source::parse_config_arg(raw) {
            Err(e) => warn!("ignoring p6os.config={raw}: {e}"),
            Ok(arg) => match read_from_arg(ctx, &devices, &arg) {
                Ok(doc) => return Some((Origin::KernelArg(arg), doc)),
                Err(e) => warn!("p6os.config={raw}: {e}; looking further"),
            },
        }
        None
    })
    .flatten();
    let drives = std::iter::once_with(|| labelled(&devices))
        .flatten()
        .filter_map(|(device, probed)| config_drive_document(device, probed));
    let esp = std::iter::once_with(|| {
        match read_file_on(ctx.esp_device?, FsType::Vfat, source::ESP_CONFIG_PATH) {
            Ok(doc) => doc.map(|doc| (Origin::Esp, doc)),
            Err(e) => {
                warn!("cannot read {} on the ESP: {e}", source::ESP_CONFIG_PATH);
                None
            }
        }
    })
    .flatten();
    let baked = std::iter::once_with(|| {
        let path = Path::new(ctx.sysroot).join(&source::BAKED_CONFIG_PATH[1..]);
        match read_capped(&path) {
            Ok(bytes) => Some((
                Origin::Baked,
                Found {
                    bytes,
                    signature: None,
                },
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                warn!("cannot read {}: {e}", path.display());
                None
            }
        }
    })
    .flatten();
    let candidates = from_arg
        .chain(drives)
        .chain(esp)
        .chain(baked)
        .map(|(origin, doc)| gate.candidate(origin, doc));
    let choice = trust::choose(&gate.provisioning, candidates, |c, why| {
        warn!(
            "ignoring unattended.yaml from {}: {why}; nothing from it is applied",
            c.item.origin
        )
    });
    if let Choice::Apply { candidate, .. } = &choice {
        if let Signature::Valid { key_id, serial } = &candidate.signature {
            info!(
                "{} is signed by configuration key {key_id}, serial {serial}",
                candidate.item.origin
            );
        }
    }
    choice
}

fn read_from_arg(ctx: &Context, devices: &[BlockDevice], arg: &ConfigArg) -> Result<Found, String> {
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
        Ok(Some(doc)) => Ok(doc),
        Ok(None) => Err(format!("{} not found on {device}", arg.path)),
        Err(e) => Err(format!("cannot read {} on {device}: {e}", arg.path)),
    }
}

/// The document on `device` if it is a configuration drive: its first file found of
/// [`source::DRIVE_FILES`] (one document a drive: when it is ignored, the next drive).
fn config_drive_document(device: String, probed: source::Probed) -> Option<(Origin, Found)> {
    let label = probed
        .label
        .as_deref()
        .filter(|l| source::is_config_drive_label(l))?;
    for path in source::DRIVE_FILES {
        match read_file_on(&device, probed.fstype, path) {
            Ok(Some(doc)) => {
                let origin = Origin::Drive {
                    device: device.clone(),
                    path: path.to_string(),
                };
                return Some((origin, doc));
            }
            Ok(None) => {}
            Err(e) => {
                warn!("cannot read {path} on {device} (label {label}): {e}");
                return None;
            }
        }
    }
    info!("{device} is labelled {label} but holds neither unattended.yaml nor user-data");
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

/// Mounts `device` read-only, reads `path` and `<path>.sig` beside it, unmounts. `Ok(None)`
/// if the document is absent.
fn read_file_on(device: &str, fstype: FsType, path: &str) -> io::Result<Option<Found>> {
    sys::mkdir_p(PROBE_MOUNT, 0o700)?;
    sys::mount_read_only(device, PROBE_MOUNT, fstype.as_str())?;
    let file = Path::new(PROBE_MOUNT).join(&path[1..]);
    let result = read_capped(&file);
    let mut sig_path = file.into_os_string();
    sig_path.push(source::SIGNATURE_SUFFIX);
    let signature = read_capped(Path::new(&sig_path));
    if let Err(e) = sys::unmount(PROBE_MOUNT) {
        warn!("cannot unmount {device} from {PROBE_MOUNT}: {e}");
    }
    let signature = match signature {
        Ok(sig) => Some(sig),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        // Present but unreadable: judged as a bad signature, never as an absent one.
        Err(e) => Some(format!("unreadable: {e}").into_bytes()),
    };
    match result {
        Ok(bytes) => Ok(Some(Found { bytes, signature })),
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
