//! `p6os-agent register`: pairs the appliance with its management console and then keeps
//! reporting in. Started by service mode after the first-boot configuration (systemd bases will
//! start it from a unit: not shipped yet); never blocks the boot: it runs beside everything else
//! and retries for ever.
//!
//! Decisions are `state`'s (pure); `facts` gathers what the device is; this module talks HTTP
//! (`upgrade::http::call`) and drives the upgrade machinery when the console wants another
//! version. Everything the loop needs from the machine goes through [`Host`], so tests run it
//! against a real console on loopback without a machine.

pub mod facts;
pub mod identity;
pub mod siteconfig;
pub mod state;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use p6os_protocol::identity::DeviceSecret;
use p6os_protocol::{
    BundleRef, ErrorBody, Facts, Health, Heartbeat, HeartbeatResponse, KeyProof, OutcomeKind,
    PairRequest, PairResponse, Phase as ProgressPhase, Progress, UpgradeOutcome, API,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::clock;
use crate::log::error_chain;
use crate::plan;
use crate::upgrade::{self, http, Failure};
use p6os_bundle::compat::Downgrade;
use state::{AfterHeartbeat, Answer, Attempts, Phase, Registration, Setback};

pub const CONSOLE_CONFIG: &str = "/etc/p6os/console.json";
pub const APPLIANCE_CONFIG: &str = "/etc/p6os/appliance.json";
/// The console's CA from unattended.yaml, as a file for the TLS setup.
const CA_FILE: &str = "/run/p6os/console-ca.pem";
/// Shortest time between two progress reports during a download.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Limits of a progress report: it is sent from inside the download and must not stall it.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(2);

/// `/etc/p6os/console.json`, written 0600 by the first-boot configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct ConsoleFile {
    pub endpoint: String,
    pub token: String,
    #[serde(default)]
    pub ca: Option<String>,
}

/// `/etc/p6os/appliance.json`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ApplianceFile {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// How to reach the console.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `https://console.example.com` (no trailing slash).
    pub endpoint: String,
    pub pairing_token: String,
    /// The device's identity key (see `identity`): what the console binds the id to.
    pub identity: DeviceSecret,
    pub ca_files: Vec<PathBuf>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Where the last trusted time is saved (the state partition's `clock::SAVED_FILE`); the
    /// clock is set from the console only when there is one (not in tests).
    pub clock_file: Option<PathBuf>,
}

impl Settings {
    fn policy(&self) -> http::RetryPolicy {
        http::RetryPolicy {
            ca_files: self.ca_files.clone(),
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            ..Default::default()
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint.trim_end_matches('/'))
    }
}

/// What the booted system is, for a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub slot: String,
    pub version: String,
    pub health: Health,
    pub last_upgrade: Option<UpgradeOutcome>,
}

/// The machine, as the loop sees it.
pub trait Host {
    fn facts(&mut self) -> Facts;
    fn running(&mut self) -> Running;
    fn save(&mut self, reg: &Registration);
    /// Installs the bundle at `url` into the other slot (no reboot); an older version than
    /// the running one only with [`Downgrade::Allow`] (the operator's flag), never one below
    /// the security floor.
    fn install(
        &mut self,
        url: &str,
        token: &str,
        downgrade: Downgrade,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), Failure>;
    /// Asks for a reboot into the new slot.
    fn reboot(&mut self) -> Result<(), String>;
    /// Waits; false stops the loop (tests).
    fn sleep(&mut self, wait: Duration) -> bool;
    fn random(&mut self) -> u64;
    /// Where remote site configurations are staged (`siteconfig`); `None`: not handled.
    fn site_config(&mut self) -> Option<&mut siteconfig::Files> {
        None
    }
    /// Where a diagnostics bundle is collected from (`None`: this host collects none).
    fn diagnostics(&mut self) -> Option<crate::diagnostics::Origin>;
}

/// Turns an HTTP exchange into an [`Answer`]: 2xx with a body that parses is an answer, 401 and
/// 403 are a refusal of our credentials, other 4xx (but 408 and 429) need an operator, and
/// everything else is worth another try soon.
fn answer<T: DeserializeOwned>(result: Result<(u16, Vec<u8>), http::HttpError>) -> Answer<T> {
    let (status, body) = match result {
        Ok(x) => x,
        Err(e) => return Answer::Unavailable(error_chain(&e)),
    };
    let message = || match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(e) => format!("the console answered {status}: {}", e.error),
        Err(_) => format!("the console answered {status}"),
    };
    match status {
        200..=299 => match serde_json::from_slice(&body) {
            Ok(v) => Answer::Ok(v),
            Err(e) => Answer::Unavailable(format!("the console's answer is not understood: {e}")),
        },
        401 | 403 => Answer::Denied(message()),
        408 | 429 => Answer::Unavailable(message()),
        400..=499 => Answer::Rejected(message()),
        _ => Answer::Unavailable(message()),
    }
}

/// Pairs in two rounds: the device key gets a challenge, the signed challenge gets an answer
/// (ready, or pending until an operator approves the key).
pub fn pair(settings: &Settings, id: &str, facts: Facts) -> Answer<PairResponse> {
    let mut request = PairRequest {
        pairing_token: settings.pairing_token.clone(),
        facts,
        device_key: Some(settings.identity.public().encode()),
        proof: None,
    };
    let url = settings.url(&format!("{API}/appliances/{id}/pair"));
    let body = serde_json::to_vec(&request).unwrap_or_default();
    let challenge = match answer(call_with_clock(settings, &url, None, &body)) {
        Answer::Ok(PairResponse::Challenge { challenge }) => challenge,
        other => return other,
    };
    request.proof = Some(KeyProof {
        signature: settings.identity.sign_pair(id, &challenge),
        challenge,
    });
    let body = serde_json::to_vec(&request).unwrap_or_default();
    match answer(call_with_clock(settings, &url, None, &body)) {
        Answer::Ok(PairResponse::Challenge { .. }) => {
            Answer::Unavailable("the console asked for a second challenge".into())
        }
        other => other,
    }
}

pub fn heartbeat(
    settings: &Settings,
    id: &str,
    token: &str,
    beat: &Heartbeat,
) -> Answer<HeartbeatResponse> {
    let body = serde_json::to_vec(beat).unwrap_or_default();
    let url = settings.url(&format!("{API}/appliances/{id}/heartbeat"));
    answer(call_with_clock(settings, &url, Some(token), &body))
}

/// `POST url` with a JSON body. When the console's certificate is not valid yet by this
/// machine's clock, the clock is set from the console's authenticated `Date` (only forward;
/// see `clock`) and the request is tried once more. After a successful exchange the time is
/// saved on the state partition (at most daily) as the next boot's floor.
fn call_with_clock(
    settings: &Settings,
    url: &str,
    bearer: Option<&str>,
    body: &[u8],
) -> Result<(u16, Vec<u8>), http::HttpError> {
    let post = || http::call("POST", url, bearer, Some(body), settings.policy());
    let Some(clock_file) = &settings.clock_file else {
        return post();
    };
    let result = match post() {
        Err(http::HttpError::Certificate {
            dates: http::CertificateDates::NotValidYet,
            ..
        }) if clock_from_console(settings) => post(),
        other => other,
    };
    if result.is_ok() {
        save_trusted_time(clock_file);
    }
    result
}

/// Sets the clock from the console's `Date`; true when it moved.
fn clock_from_console(settings: &Settings) -> bool {
    let now = SystemTime::now();
    match http::server_time(&settings.url("/"), settings.policy()) {
        Ok(told) => match clock::forward(now, told) {
            Some(time) => match clock::set(time) {
                Ok(()) => {
                    info!(
                        "clock: the console's certificate is not valid yet at {}: set to the \
                         console's time {}",
                        clock::show(now),
                        clock::show(time)
                    );
                    true
                }
                Err(e) => {
                    warn!("clock: cannot set it to the console's time: {e}");
                    false
                }
            },
            None => false,
        },
        Err(e) => {
            warn!("clock: cannot take the console's time: {}", error_chain(&e));
            false
        }
    }
}

/// Saves the time as the next boot's floor when the saved one is a day old (or missing).
fn save_trusted_time(path: &Path) {
    let now = SystemTime::now();
    let stale = clock::read(path).is_none_or(|saved| {
        now.duration_since(saved)
            .is_ok_and(|age| age >= clock::SAVE_EVERY)
    });
    if stale {
        if let Err(e) = clock::save(path, now) {
            warn!("clock: cannot save the time in {}: {e}", path.display());
        }
    }
}

fn beat(running: &Running, progress: Option<Progress>, facts: Option<Facts>) -> Heartbeat {
    Heartbeat {
        slot: running.slot.clone(),
        version: running.version.clone(),
        health: running.health,
        last_upgrade: running.last_upgrade.clone(),
        progress,
        facts,
    }
}

fn announce(before: &Registration, after: &Registration) {
    if before.phase != after.phase {
        info!(
            "registration: {} -> {} (id {} at {})",
            before.phase.as_str(),
            after.phase.as_str(),
            after.id,
            after.endpoint
        );
    }
    if after.last_error.is_some() && after.last_error != before.last_error {
        warn!(
            "registration: {}; retrying",
            after.last_error.as_deref().unwrap_or_default()
        );
    } else if after.last_error.is_none() && before.last_error.is_some() {
        info!("registration: the console answers again");
    }
}

/// The loop: pair until ready, then heartbeat at the console's interval and upgrade when it
/// asks for another version. Returns only when `host.sleep` says stop (or after a reboot was
/// requested).
pub fn run(settings: &Settings, mut reg: Registration, host: &mut dyn Host) -> Registration {
    let mut attempts = Attempts::default();
    // A failed upgrade, reported with the next heartbeat.
    let mut report: Option<Progress> = None;
    // Facts go with the first heartbeat after each start (they change across boots).
    let mut facts_sent = false;
    // Diagnostics bundles asked for by the console: collected and sent beside the loop.
    let mut diagnostics = crate::diagnostics::Jobs::default();
    loop {
        let wait = match (reg.phase, reg.device_token.clone()) {
            (Phase::Ready, Some(token)) => {
                let running = host.running();
                let facts = (!facts_sent).then(|| host.facts());
                let answer = heartbeat(
                    settings,
                    &reg.id,
                    &token,
                    &beat(&running, report.take(), facts),
                );
                facts_sent |= matches!(answer, Answer::Ok(_));
                let offer = match &answer {
                    Answer::Ok(r) => r.config.clone(),
                    _ => None,
                };
                diagnostics.reap();
                if let Answer::Ok(HeartbeatResponse {
                    diagnostics: Some(asked),
                    ..
                }) = &answer
                {
                    let upload = crate::diagnostics::Upload {
                        endpoint: settings.endpoint.trim_end_matches('/').to_string(),
                        token: token.clone(),
                        policy: settings.policy(),
                    };
                    match host.diagnostics() {
                        Some(origin) => diagnostics.offer(asked, upload, origin),
                        None => warn!("diagnostics: this host collects no bundle"),
                    }
                }
                let (next, after) = state::after_heartbeat(
                    &reg,
                    answer,
                    &running.version,
                    running.health,
                    &mut attempts,
                    host.random(),
                );
                announce(&reg, &next);
                if next != reg {
                    host.save(&next);
                }
                reg = next;
                // Not during an upgrade's trial: that reboot would count against the new slot.
                if let Some(offer) = offer.filter(|_| running.health != Health::Assessing) {
                    if siteconfig::handle(settings, &reg.id, &token, &offer, host)
                        == siteconfig::Handled::Reboot
                    {
                        match host.reboot() {
                            Ok(()) => return reg,
                            Err(why) => warn!("registration: the reboot failed: {why}"),
                        }
                    }
                }
                match after {
                    AfterHeartbeat::Wait(wait) => wait,
                    AfterHeartbeat::Upgrade(bundle, downgrade) => {
                        let order = (&bundle, downgrade);
                        match upgrade_from_console(settings, &reg, &token, order, host) {
                            Ok(()) => return reg,
                            Err((setback, progress)) => {
                                report = Some(progress);
                                let (next, wait) = state::after_setback(
                                    &reg,
                                    &bundle,
                                    downgrade,
                                    setback,
                                    host.random(),
                                );
                                host.save(&next);
                                reg = next;
                                wait
                            }
                        }
                    }
                }
            }
            _ => {
                let answer = pair(settings, &reg.id, host.facts());
                facts_sent |= matches!(answer, Answer::Ok(PairResponse::Ready { .. }));
                let (next, wait) = state::after_pair(&reg, answer, &mut attempts, host.random());
                announce(&reg, &next);
                if next != reg {
                    host.save(&next);
                }
                reg = next;
                wait
            }
        };
        if !host.sleep(wait) {
            return reg;
        }
    }
}

/// Downloads and installs `bundle`, reporting progress with heartbeats at most every 5 s
/// (short timeouts; after one failed report no more are tried), then asks for the reboot. On
/// failure returns the setback and the progress line to report.
fn upgrade_from_console(
    settings: &Settings,
    reg: &Registration,
    token: &str,
    (bundle, downgrade): (&BundleRef, Downgrade),
    host: &mut dyn Host,
) -> Result<(), (Setback, Progress)> {
    info!(
        "registration: the console wants version {}; downloading {} bytes",
        bundle.version, bundle.size
    );
    let running = host.running();
    let progress = |phase, done, total, message: Option<String>| Progress {
        version: bundle.version.clone(),
        phase,
        done_bytes: done,
        total_bytes: total,
        message,
    };
    let quick = Settings {
        connect_timeout: PROGRESS_TIMEOUT,
        read_timeout: PROGRESS_TIMEOUT,
        ..settings.clone()
    };
    let url = settings.url(&bundle.path);
    let mut last_report: Option<Instant> = None;
    let mut reports_work = true;
    let id = reg.id.clone();
    let mut on_progress = |done: u64, total: u64| {
        if !reports_work || last_report.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
            return;
        }
        let p = progress(ProgressPhase::Downloading, done, total, None);
        // Best effort: a missed progress report changes nothing.
        let answer = heartbeat(&quick, &id, token, &beat(&running, Some(p), None));
        reports_work = matches!(answer, Answer::Ok(_));
        last_report = Some(Instant::now());
    };
    let failed = |failure: &Failure| {
        let setback = match failure {
            Failure::Refused(_) => Setback::Refused,
            Failure::Impossible(_) | Failure::Failed(_) => Setback::Failed,
        };
        let message = Some(failure.to_string());
        (
            setback,
            progress(ProgressPhase::Failed, 0, bundle.size, message),
        )
    };
    if let Err(failure) = host.install(&url, token, downgrade, &mut on_progress) {
        warn!("registration: {failure}");
        return Err(failed(&failure));
    }
    info!(
        "registration: version {} installed; rebooting",
        bundle.version
    );
    let p = progress(ProgressPhase::Rebooting, bundle.size, bundle.size, None);
    let _ = heartbeat(&quick, &id, token, &beat(&host.running(), Some(p), None));
    host.reboot().map_err(|why| {
        let failure = Failure::Failed(format!("installed, but the reboot failed: {why}"));
        warn!("registration: {failure}");
        failed(&failure)
    })
}

// ----- the real machine -----

fn read_json<T: DeserializeOwned>(path: &str) -> Result<T, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))
}

/// Writes the record 0600 (temporary file, fsync, rename).
pub fn save_registration(path: &Path, reg: &Registration) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("new");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all(&serde_json::to_vec_pretty(reg).unwrap_or_default())?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)
}

pub fn load_registration(path: &Path) -> Option<Registration> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

struct Machine {
    appliance: ApplianceFile,
    ca_files: Vec<PathBuf>,
    site_config: siteconfig::Files,
}

impl Host for Machine {
    fn facts(&mut self) -> Facts {
        let running = self.running();
        let name = upgrade::machine::Machine::open_read_only()
            .map(|m| m.identity.name)
            .unwrap_or_default();
        facts::gather(&self.appliance, (&name, &running.version), &running.slot)
    }

    fn running(&mut self) -> Running {
        upgrade::running().unwrap_or_else(|why| {
            warn!("registration: cannot read the slot status: {why}");
            Running {
                slot: "unknown".into(),
                version: "unknown".into(),
                health: Health::Unknown,
                last_upgrade: None,
            }
        })
    }

    fn save(&mut self, reg: &Registration) {
        if let Err(e) = save_registration(Path::new(state::REGISTRATION_PATH), reg) {
            warn!(
                "registration: cannot save {}: {e}",
                state::REGISTRATION_PATH
            );
        }
    }

    fn install(
        &mut self,
        url: &str,
        token: &str,
        downgrade: Downgrade,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), Failure> {
        let mut source =
            upgrade::Source::console(url, &self.ca_files, token).map_err(Failure::Failed)?;
        // The root filesystem is nearly all of a bundle: its progress stands for the whole.
        let mut each = |kind, done: u64, total: u64| {
            if kind == p6os_bundle::format::PayloadKind::Rootfs {
                progress(done, total);
            }
        };
        upgrade::install_from(&mut source, downgrade, crate::cli::Retry::Refuse, &mut each)
            .map(|_| ())
    }

    fn reboot(&mut self) -> Result<(), String> {
        match upgrade::request_reboot() {
            0 => Ok(()),
            _ => Err("the reboot request failed (see above)".into()),
        }
    }

    fn sleep(&mut self, wait: Duration) -> bool {
        std::thread::sleep(wait);
        true
    }

    fn site_config(&mut self) -> Option<&mut siteconfig::Files> {
        Some(&mut self.site_config)
    }

    fn diagnostics(&mut self) -> Option<crate::diagnostics::Origin> {
        Some(crate::diagnostics::Origin::Machine)
    }

    fn random(&mut self) -> u64 {
        let mut b = [0u8; 8];
        match rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()) {
            Ok(_) => u64::from_le_bytes(b),
            // No entropy yet: the clock still spreads a fleet.
            Err(_) => Instant::now().elapsed().as_nanos() as u64 ^ u64::from(std::process::id()),
        }
    }
}

/// `p6os-agent register`: runs the loop for the configured console. Exits 0 at once when no
/// console is configured.
pub fn main() -> i32 {
    let console: ConsoleFile = match read_json(CONSOLE_CONFIG) {
        Ok(c) => c,
        Err(_) if !Path::new(CONSOLE_CONFIG).exists() => {
            info!("registration: no console configured ({CONSOLE_CONFIG} is absent)");
            return 0;
        }
        Err(e) => {
            warn!("registration: {e}");
            return 1;
        }
    };
    let appliance: ApplianceFile = match read_json(APPLIANCE_CONFIG) {
        Ok(a) => a,
        Err(e) => {
            warn!("registration: {e}");
            return 1;
        }
    };
    if let Err(why) = p6os_protocol::check_id(&appliance.id) {
        warn!("registration: appliance id {:?}: {why}", appliance.id);
        return 1;
    }
    let mut ca_files = Vec::new();
    if let Some(pem) = &console.ca {
        match fs::create_dir_all("/run/p6os").and_then(|()| fs::write(CA_FILE, pem)) {
            Ok(()) => ca_files.push(PathBuf::from(CA_FILE)),
            Err(e) => warn!("registration: cannot write {CA_FILE}: {e}"),
        }
    }
    let key_path = Path::new(identity::IDENTITY_PATH);
    let key = match identity::load_or_create(key_path, identity::kernel_random) {
        Ok(key) => key,
        Err(e) => {
            warn!("registration: {}", error_chain(&e));
            return 1;
        }
    };
    info!(
        "registration: device key {} (an operator approves it on the console)",
        key.public().fingerprint()
    );
    let settings = Settings {
        endpoint: console.endpoint.trim_end_matches('/').to_string(),
        pairing_token: console.token,
        identity: key,
        ca_files: ca_files.clone(),
        connect_timeout: Duration::from_secs(10),
        read_timeout: Duration::from_secs(30),
        clock_file: Some(Path::new(plan::STATE_DIR).join(clock::SAVED_FILE)),
    };
    let saved = load_registration(Path::new(state::REGISTRATION_PATH));
    let reg = Registration::resume(saved, &appliance.id, &settings.endpoint);
    info!(
        "registration: {} as {} with {}",
        reg.phase.as_str(),
        reg.id,
        settings.endpoint
    );
    let mut machine = Machine {
        appliance,
        ca_files,
        site_config: siteconfig::Files::machine(),
    };
    run(&settings, reg, &mut machine);
    0
}

/// For `p6os-agent status`: the registration record without its token, and the device key's
/// fingerprint (what the operator approves).
pub fn status_json() -> serde_json::Value {
    let fingerprint = match identity::load(Path::new(identity::IDENTITY_PATH)) {
        Ok(Some(key)) => Some(key.public().fingerprint()),
        Ok(None) => None,
        Err(e) => Some(format!("({e})")),
    };
    let mut status = match load_registration(Path::new(state::REGISTRATION_PATH)) {
        None if !Path::new(CONSOLE_CONFIG).exists() => serde_json::json!({"phase": "no console"}),
        None => serde_json::json!({"phase": "unregistered"}),
        Some(r) => serde_json::json!({
            "phase": r.phase.as_str(),
            "id": r.id,
            "endpoint": r.endpoint,
            "last_error": r.last_error,
        }),
    };
    status["device_key"] = fingerprint.into();
    status
}

/// [`UpgradeOutcome`] from the slot record's outcome.
pub fn outcome(o: &crate::slots::Outcome) -> UpgradeOutcome {
    use crate::slots::Outcome as O;
    let (version, outcome, slot, reason) = match o {
        O::Installed { version, slot } => (version, OutcomeKind::Installed, Some(slot), None),
        O::Blessed { version, slot } => (version, OutcomeKind::Blessed, Some(slot), None),
        O::RolledBack {
            version,
            slot,
            reason,
        } => (version, OutcomeKind::RolledBack, Some(slot), Some(reason)),
        O::Failed { version, reason } => (version, OutcomeKind::Failed, None, Some(reason)),
    };
    UpgradeOutcome {
        version: version.clone(),
        outcome,
        slot: slot.map(|s| s.as_str().to_string()),
        reason: reason.cloned(),
    }
}

#[cfg(test)]
mod console_tests;
#[cfg(test)]
mod tests;
