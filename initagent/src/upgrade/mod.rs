//! `p6os-agent upgrade | status | rollback` (and the hidden `install-into` for tests and
//! benchmarks). The decisions are `slots`' (pure); this module gathers the facts, streams the
//! bundle (`install`) and carries out the actions (`machine::execute`).

pub mod assess;
pub mod esp;
pub mod http;
pub mod install;
pub mod machine;
pub mod tls;
mod verdict;

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::Path;
use std::time::Instant;

use p6os_bundle::compat::{Device, Downgrade};
use p6os_bundle::format::PayloadKind;
use p6os_bundle::keys::PublicKey;
use serde_json::json;

use crate::cli::{AfterChange, Format, InstallIntoArgs, Retry, UpgradeArgs, VERSION};
use crate::cmdline::Slot;
use crate::log::error_chain;
use crate::plan::STATE_PARTLABEL;
use crate::slots::{self, Counter, Outcome, UpgradeRequest};
use machine::{AfterActions, EntryFiles, EntryText, Machine};

const READ_BUFFER: usize = 4 << 20;

fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn fail(line: &str) -> i32 {
    let _ = writeln!(io::stderr(), "p6os-agent: {line}");
    1
}

/// Prints progress every 10% of a payload.
fn progress_printer() -> impl FnMut(PayloadKind, u64, u64) {
    let mut last = (PayloadKind::Kernel, u64::MAX);
    move |kind, done, total| {
        let tenth = (done * 10).checked_div(total).unwrap_or(10);
        if (kind, tenth) != last {
            last = (kind, tenth);
            say(&format!(
                "p6os-agent: upgrade: {} {}% ({} of {} bytes)",
                kind.as_str(),
                tenth * 10,
                done,
                total
            ));
        }
    }
}

pub fn upgrade(args: &UpgradeArgs) -> i32 {
    let mut r = match Source::open(&args.source, &args.ca_files) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    match install_from(&mut r, args.downgrade, args.retry, &mut progress_printer()) {
        Ok(after) => finish(after, args.after),
        Err(failure) => fail(&failure.to_string()),
    }
}

/// Why [`install_from`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The machine cannot upgrade (no ESP, no record, no other slot).
    Impossible(String),
    /// The bundle was refused before anything was changed (signature, compatibility, a version
    /// that already failed here, damage found in the first pass).
    Refused(String),
    /// Writing failed: the other slot has no boot entry; the running slot stays the default.
    Failed(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Impossible(why) => write!(f, "upgrade impossible: {why}"),
            Failure::Refused(why) => write!(f, "upgrade refused, nothing was changed: {why}"),
            Failure::Failed(why) => write!(f, "upgrade failed: {why}"),
        }
    }
}

/// Held while an upgrade runs.
const UPGRADE_LOCK: &str = "/run/p6os/upgrade.lock";

/// An exclusive `flock` on `path` (created), released when the file is dropped.
fn lock(path: &str) -> Result<File, String> {
    if let Some(dir) = Path::new(path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {path}: {e}"))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => {
            Err("another upgrade is running (it holds /run/p6os/upgrade.lock)".to_string())
        }
        Err(e) => Err(format!("cannot lock {path}: {e}")),
    }
}

/// The upgrade proper, from an opened source: check, write the other slot, its ESP files and
/// its entry, record. The caller reboots (or not). `progress(kind, done, total)` per payload.
pub fn install_from(
    r: &mut Source,
    downgrade: Downgrade,
    retry: Retry,
    progress: &mut dyn FnMut(PayloadKind, u64, u64),
) -> Result<AfterActions, Failure> {
    let impossible = |e: &dyn std::error::Error| Failure::Impossible(error_chain(e));
    // One upgrade at a time (the console's and an operator's `p6os-agent upgrade`, say).
    let _lock = lock(UPGRADE_LOCK).map_err(Failure::Impossible)?;
    // Read-only until the bundle is verified: nothing on the ESP changes before (not even its
    // repair).
    let machine = Machine::open_read_only().map_err(|e| impossible(&e))?;
    let view = machine.view().map_err(|e| impossible(&e))?;
    let target = machine.booted.other();
    let target_label = format!("p6os-root-{}", target.as_str());
    let (device_path, slot_bytes) = machine
        .device(&target_label)
        .map(str::to_string)
        .and_then(|d| Ok((d, machine.partition_bytes(&target_label)?)))
        .map_err(|e| impossible(&e))?;
    let floor = machine.floor();
    let device = Device {
        name: &machine.identity.name,
        arch: &machine.arch,
        version: &machine.identity.version,
        agent_version: VERSION,
        slot_bytes,
        floor: floor.as_ref(),
    };
    let keys = machine::trusted_keys();
    // Signature and compatibility before a byte is written. A source that breaks off is a
    // failure to try again, not a verdict on the bundle.
    let judge = |e: install::InstallError| verdict::judge(&e);
    let header = install::check(r, &keys, &device, downgrade).map_err(judge)?;
    let firmware = install::Firmware::of_this_machine();
    if let Some(why) = firmware.refuses_manifest(&header.manifest) {
        return Err(judge(install::InstallError::NotBootable(why)));
    }
    // A file or device is read twice: every payload's bytes are checked before anything is
    // changed. A download is read once: damage shows at the end, after the other slot's entry
    // was removed (the running slot and its entry are never touched).
    if let Source::File(f) = r {
        install::verify_then_rewind(f, &header).map_err(judge)?;
    }
    let m = &header.manifest;
    let request = UpgradeRequest {
        version: m.version.clone(),
        allow_downgrade: downgrade == Downgrade::Allow,
        allow_retry: retry == Retry::Allow,
        tries: m.tries,
    };
    let plan = slots::plan_upgrade(&view, &request).map_err(|refusal| match refusal {
        // The machine's state, not the bundle: another time it may work.
        slots::Refusal::NoBootedEntry { .. }
        | slots::Refusal::BootedNotBlessed { .. }
        | slots::Refusal::SortVersionExhausted { .. } => Failure::Impossible(refusal.to_string()),
        _ => Failure::Refused(refusal.to_string()),
    })?;
    // Verified: the ESP is repaired and mounted read-write for the writes.
    drop(machine);
    let machine = Machine::open().map_err(|e| impossible(&e))?;
    say(&format!(
        "p6os-agent: upgrade: {} {} signed by {}, into slot {} ({device_path})",
        m.name,
        m.version,
        m.key_id,
        plan.target.as_str()
    ));
    // A note about an earlier trial must not explain this one: gone before the new trial is
    // recorded.
    crate::bootfail::clear().map_err(|e| {
        Failure::Impossible(format!("cannot remove {}: {e}", crate::bootfail::PATH))
    })?;
    machine::execute(&machine.esp, &plan.before_write(), None)
        .map_err(|e| Failure::Failed(error_chain(&e)))?;
    let started = Instant::now();
    let result = install::install(
        r,
        &header,
        &install::Target {
            slot: plan.target,
            device: Path::new(&device_path),
            esp: &machine.esp,
            firmware,
        },
        progress,
    );
    if let Err(e) = result {
        let reason = error_chain(&e);
        let mut record = view.record.clone();
        record.last_upgrade = Some(Outcome::Failed {
            version: m.version.clone(),
            reason: reason.clone(),
        });
        let _ = machine::save_record(&record);
        return Err(Failure::Failed(format!(
            "slot {} keeps no boot entry and slot {} stays the default: {reason}",
            plan.target.as_str(),
            machine.booted.as_str()
        )));
    }
    let text = EntryText {
        name: &m.name,
        boot: match m.payload(PayloadKind::Uki) {
            Some(_) => EntryFiles::Uki,
            None => EntryFiles::Split {
                rootfs_type: m.rootfs_type,
                // Checked when the header was read.
                verity: m.verity().ok().flatten(),
                kernel_args: &m.kernel_args,
            },
        },
    };
    let after = machine::execute(&machine.esp, &plan.after_write(), Some(&text))
        .map_err(|e| Failure::Failed(error_chain(&e)))?;
    machine::check_invariant(&machine.esp);
    if let Source::Http(h) = r {
        say(&format!(
            "p6os-agent: upgrade: downloaded {} bytes ({} reconnections)",
            h.get_ref().received(),
            h.get_ref().resumes()
        ));
    }
    say(&format!(
        "p6os-agent: upgrade: installed {} into slot {} in {:.1} s; it gets {} boot tries",
        m.version,
        plan.target.as_str(),
        started.elapsed().as_secs_f64(),
        m.tries
    ));
    Ok(after)
}

pub fn finish(after: AfterActions, when: AfterChange) -> i32 {
    match (after, when) {
        (AfterActions::RebootRequested, AfterChange::Reboot) => {
            say("p6os-agent: rebooting");
            request_reboot()
        }
        (AfterActions::RebootRequested, AfterChange::Stay) => {
            say(
                "p6os-agent: not rebooting (--no-reboot); the change takes effect at the next boot",
            );
            0
        }
        (AfterActions::Done, _) => 0,
    }
}

/// Asks init to reboot: systemd through systemctl, the agent as PID 1 through SIGTERM (what
/// busybox `reboot` sends).
pub fn request_reboot() -> i32 {
    if Path::new("/run/systemd/system").exists() {
        return match std::process::Command::new("systemctl")
            .arg("reboot")
            .status()
        {
            Ok(s) if s.success() => 0,
            Ok(s) => fail(&format!("systemctl reboot: {s}")),
            Err(e) => fail(&format!("systemctl reboot: {e}")),
        };
    }
    match crate::sys::kill(1, libc::SIGTERM) {
        Ok(()) => 0,
        Err(e) => fail(&format!("cannot ask pid 1 to reboot: {e}")),
    }
}

pub fn rollback(after: AfterChange) -> i32 {
    let result = Machine::open().and_then(|m| Ok((m.view()?, m)));
    let (view, machine) = match result {
        Ok(x) => x,
        Err(e) => return fail(&format!("rollback impossible: {}", error_chain(&e))),
    };
    let actions = match slots::plan_rollback(&view, machine.floor().as_ref()) {
        Ok(a) => a,
        Err(refusal) => return fail(&format!("rollback refused: {refusal}")),
    };
    match machine::execute(&machine.esp, &actions, None) {
        Ok(a) => {
            say(&format!(
                "p6os-agent: slot {} is the default now",
                view.booted.other().as_str()
            ));
            finish(a, after)
        }
        Err(e) => fail(&format!("rollback failed: {}", error_chain(&e))),
    }
}

fn counter_json(c: Counter) -> serde_json::Value {
    match c {
        Counter::Blessed => json!({"state": "blessed"}),
        Counter::Trial { left: 0, done } => {
            json!({"state": "bad", "tries_left": 0, "tries_done": done})
        }
        Counter::Trial { left, done } => {
            json!({"state": "trial", "tries_left": left, "tries_done": done})
        }
    }
}

/// The booted slot, its version and standing, and the last upgrade's outcome (for heartbeats).
pub fn running() -> Result<crate::register::Running, String> {
    let machine = Machine::open_read_only().map_err(|e| error_chain(&e))?;
    let view = machine.view().map_err(|e| error_chain(&e))?;
    let health = match view.entry(view.booted).map(|e| e.counter) {
        Some(Counter::Blessed) => p6os_protocol::Health::Good,
        Some(Counter::Trial { .. }) => p6os_protocol::Health::Assessing,
        None => p6os_protocol::Health::Unknown,
    };
    Ok(crate::register::Running {
        slot: view.booted.as_str().to_string(),
        version: machine.identity.version.clone(),
        health,
        last_upgrade: view
            .record
            .last_upgrade
            .as_ref()
            .map(crate::register::outcome),
    })
}

/// What `status --json` prints (diagnostics bundles carry it).
pub fn status_value() -> Result<serde_json::Value, String> {
    let (view, machine) = Machine::open_read_only()
        .and_then(|m| Ok((m.view()?, m)))
        .map_err(|e| error_chain(&e))?;
    Ok(status_of(&view, &machine).0)
}

type Sizes = Result<crate::grow::rules::Sizes, String>;

/// The status document, the slots' lines and the state partition's sizes.
fn status_of(
    view: &slots::View,
    machine: &Machine,
) -> (serde_json::Value, Vec<serde_json::Value>, Sizes) {
    // The state partition, its filesystem and the disk (shown as unknown, never fatal).
    let sizes = machine
        .device(STATE_PARTLABEL)
        .map_err(|e| error_chain(&e))
        .and_then(|d| {
            crate::grow::sizes(d.trim_start_matches("/dev/")).map_err(|e| error_chain(&e))
        });
    let slots_json: Vec<serde_json::Value> = [Slot::A, Slot::B]
        .into_iter()
        .map(|s| match view.entry(s) {
            None => json!({"slot": s.as_str(), "state": "empty"}),
            Some(e) => {
                let mut v = counter_json(e.counter);
                v["slot"] = json!(s.as_str());
                v["version"] = json!(e.image_version);
                v["entry"] = json!(e.file_name);
                v["booted"] = json!(s == view.booted);
                v
            }
        })
        .collect();
    let value = json!({
        "booted": view.booted.as_str(),
        "slots": slots_json,
        "trial": view.record.trial,
        "last_upgrade": view.record.last_upgrade,
        "rolled_back": view.record.rolled_back,
        "registration": crate::register::status_json(),
        "storage": match &sizes {
            Ok(s) => json!(s),
            Err(e) => json!({"error": e}),
        },
    });
    (value, slots_json, sizes)
}

pub fn status(format: Format) -> i32 {
    let result = Machine::open_read_only().and_then(|m| Ok((m.view()?, m)));
    let (view, machine) = match result {
        Ok(x) => x,
        Err(e) => return fail(&format!("status unavailable: {}", error_chain(&e))),
    };
    let (value, slots_json, sizes) = status_of(&view, &machine);
    match format {
        Format::Json => say(&serde_json::to_string_pretty(&value).unwrap_or_default()),
        Format::Text => {
            for s in &slots_json {
                let mark = if s["booted"] == json!(true) { "*" } else { " " };
                let mut line = format!(
                    "{mark} slot {}: {}",
                    s["slot"].as_str().unwrap_or("?"),
                    s["state"].as_str().unwrap_or("?")
                );
                if let Some(v) = s["version"].as_str() {
                    line.push_str(&format!(" {v}"));
                }
                if let Some(left) = s["tries_left"].as_u64() {
                    line.push_str(&format!(" ({left} tries left)"));
                }
                say(&line);
            }
            if let Some(o) = &view.record.last_upgrade {
                say(&format!(
                    "last upgrade: {}",
                    serde_json::to_string(o).unwrap_or_default()
                ));
            }
            for rb in &view.record.rolled_back {
                say(&format!("rolled back: {} ({})", rb.version, rb.reason));
            }
            let reg = crate::register::status_json();
            let mut line = format!("console: {}", reg["phase"].as_str().unwrap_or("?"));
            if let (Some(id), Some(at)) = (reg["id"].as_str(), reg["endpoint"].as_str()) {
                line.push_str(&format!(" (id {id} at {at})"));
            }
            if let Some(e) = reg["last_error"].as_str() {
                line.push_str(&format!("; last error: {e}"));
            }
            say(&line);
            if let Some(fp) = reg["device_key"].as_str() {
                say(&format!("device key: {fp}"));
            }
            match &sizes {
                Ok(s) => say(&s.text()),
                Err(e) => say(&format!("state: sizes unknown ({e})")),
            }
        }
    }
    0
}

/// Installs a bundle into a file and an ESP directory, as the upgrade does (tests and
/// `cargo xtask bench upgrade`); no entry, no record.
pub fn install_into(args: &InstallIntoArgs) -> i32 {
    let mut keys: Vec<PublicKey> = Vec::new();
    for k in &args.keys {
        match std::fs::read_to_string(k).map(|t| PublicKey::from_file(&t)) {
            Ok(Ok(key)) => keys.push(key),
            Ok(Err(e)) => return fail(&format!("{k}: {e}")),
            Err(e) => return fail(&format!("{k}: {e}")),
        }
    }
    let file = match File::open(&args.bundle) {
        Ok(f) => f,
        Err(e) => return fail(&format!("cannot open {}: {e}", args.bundle)),
    };
    let mut r = BufReader::with_capacity(READ_BUFFER, file);
    // The target file's size stands for the partition's (an empty or new file: no limit).
    let slot_bytes = match std::fs::metadata(&args.slot_file).map_or(0, |m| m.len()) {
        0 => u64::MAX,
        n => n,
    };
    let floor = args.floor.as_ref().map(|v| p6os_bundle::floor::Floor {
        version: v.clone(),
        source: p6os_bundle::floor::Source::Recorded {
            file: "--floor".into(),
        },
    });
    let device = Device {
        name: &args.device_name,
        arch: std::env::consts::ARCH,
        version: &args.device_version,
        agent_version: VERSION,
        slot_bytes,
        floor: floor.as_ref(),
    };
    let started = Instant::now();
    let header = match install::check(&mut r, &keys, &device, args.downgrade) {
        Ok(h) => h,
        Err(e) => return fail(&format!("refused: {}", error_chain(&e))),
    };
    if let Err(e) = install::verify_then_rewind(&mut r, &header) {
        return fail(&format!("refused: {}", error_chain(&e)));
    }
    let target = install::Target {
        slot: Slot::B,
        device: Path::new(&args.slot_file),
        esp: Path::new(&args.esp_dir),
        firmware: install::Firmware::Unchecked,
    };
    match install::install(&mut r, &header, &target, &mut |_, _, _| {}) {
        Ok(()) => {
            say(&format!(
                "installed {} {} in {:.3} s",
                header.manifest.name,
                header.manifest.version,
                started.elapsed().as_secs_f64()
            ));
            0
        }
        Err(e) => fail(&format!("failed: {}", error_chain(&e))),
    }
}

/// Where a bundle comes from: a file or block device (seekable: checked in a first pass), or an
/// http(s) URL (streamed once, resumed with ranges when the connection drops).
pub enum Source {
    File(BufReader<File>),
    Http(Box<BufReader<http::HttpSource>>),
}

impl Source {
    /// A bundle on the management console, fetched with the device's token. Redirects stay on
    /// the console's origin; an error (reported back to the console) is in the agent's own
    /// words, the server's details only in the local log.
    pub fn console(
        url: &str,
        ca_files: &[std::path::PathBuf],
        token: &str,
    ) -> Result<Source, String> {
        let policy = http::RetryPolicy {
            ca_files: ca_files.to_vec(),
            ..Default::default()
        };
        Source::console_with(url, policy, token)
    }

    /// [`Source::console`] with the given timeouts and trust anchors (its orderer is set).
    pub fn console_with(
        url: &str,
        policy: http::RetryPolicy,
        token: &str,
    ) -> Result<Source, String> {
        let policy = http::RetryPolicy {
            orderer: http::Orderer::Console,
            ..policy
        };
        let h = http::HttpSource::open_with_bearer(url, policy, token).map_err(|e| {
            warn!("cannot download {url}: {}", http::for_log(&error_chain(&e)));
            format!(
                "cannot download the bundle from the console: {}",
                e.summary()
            )
        })?;
        Ok(Source::Http(Box::new(BufReader::with_capacity(
            READ_BUFFER,
            h,
        ))))
    }

    fn open(source: &str, ca_files: &[String]) -> Result<Source, String> {
        if source.starts_with("http://") || source.starts_with("https://") {
            let policy = http::RetryPolicy {
                ca_files: ca_files.iter().map(std::path::PathBuf::from).collect(),
                ..Default::default()
            };
            let h = http::HttpSource::open(source, policy)
                .map_err(|e| format!("cannot download {source}: {}", error_chain(&e)))?;
            return Ok(Source::Http(Box::new(BufReader::with_capacity(
                READ_BUFFER,
                h,
            ))));
        }
        let f = File::open(source).map_err(|e| format!("cannot open {source}: {e}"))?;
        Ok(Source::File(BufReader::with_capacity(READ_BUFFER, f)))
    }
}

impl io::Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::File(f) => f.read(buf),
            Source::Http(h) => h.read(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_second_upgrade_is_refused_while_one_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upgrade.lock");
        let path = path.to_str().unwrap();
        let held = super::lock(path).unwrap();
        let second = super::lock(path).unwrap_err();
        assert!(second.contains("another upgrade is running"), "{second}");
        drop(held);
        assert!(super::lock(path).is_ok());
    }
}
