//! Remote reconfiguration in the registration loop. A heartbeat's answer may announce a site
//! configuration set on the console ([`ConfigRef`]); the loop decides ([`next_step`], pure)
//! to report what it already knows, to fetch it, or to reboot into it. A fetched document is
//! judged at once ([`judge_fetched`], pure: the announced digest, the image's trust rule,
//! the validator of `p6os validate unattended`): refused or unchanged is reported and nothing
//! is stored; otherwise it is staged on the state partition (`firstboot::console`, one file
//! written atomically, 0600) and the device reboots: the first-boot step applies it with the
//! same transaction as every document (before the overlays are mounted), and the outcome is
//! reported at the first heartbeat after the boot.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use p6os_bundle::keys::PublicKey;
use p6os_protocol::siteconfig::{
    ConfigDocument, ConfigOutcome, ConfigRef, ConfigReport, MAX_SITE_CONFIG,
};
use p6os_protocol::API;

use super::{answer, Answer, Host, Settings};
use crate::firstboot::applied::{sha256, APPLIED_PATH};
use crate::firstboot::console::{self as staging, Staged, RESULT_PATH, STAGED_PATH};
use crate::firstboot::trust::{self, Provisioning, Verdict};
use crate::upgrade::http;

/// What the device knows of the configurations it was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// The outcome the last boot left (`firstboot::console::RESULT_PATH`).
    pub result: Option<ConfigReport>,
    /// The staged configuration's number and the boot it was staged in.
    pub staged: Option<(u64, String)>,
    /// `sha256:` of the applied document.
    pub applied_digest: Option<String>,
    /// This boot's id.
    pub boot_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Tell the console (nothing else to do).
    Report(ConfigReport),
    /// Staged at an earlier boot and still there: the boot did not take it. Removed and
    /// reported refused, never rebooted into again.
    Abandon(ConfigReport),
    /// Staged in this boot: the reboot it needs did not happen yet.
    Reboot,
    Fetch,
}

fn refused(offer: &ConfigRef, digest: &str, why: String) -> ConfigReport {
    ConfigReport {
        config: offer.config,
        outcome: ConfigOutcome::Refused,
        digest: digest.to_string(),
        problems: vec![why],
    }
}

/// What to do about `offer`.
pub fn next_step(offer: &ConfigRef, known: &Known) -> Step {
    if let Some(r) = known.result.as_ref().filter(|r| r.config == offer.config) {
        return Step::Report(r.clone());
    }
    if let Some((config, boot)) = &known.staged {
        if *config == offer.config {
            if *boot == known.boot_id {
                return Step::Reboot;
            }
            return Step::Abandon(refused(
                offer,
                &offer.digest,
                "staged, but the boot did not take it (see the device's log); not tried again"
                    .into(),
            ));
        }
    }
    if known.applied_digest.as_deref() == Some(offer.digest.as_str()) {
        return Step::Report(ConfigReport {
            config: offer.config,
            outcome: ConfigOutcome::Unchanged,
            digest: offer.digest.clone(),
            problems: Vec::new(),
        });
    }
    if offer.size > MAX_SITE_CONFIG as u64 {
        return Step::Report(refused(
            offer,
            &offer.digest,
            format!(
                "the document is {} bytes, more than {} KiB",
                offer.size,
                MAX_SITE_CONFIG / 1024
            ),
        ));
    }
    Step::Fetch
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judged {
    /// Refused or unchanged: report it; nothing is stored.
    Report(ConfigReport),
    /// Stage it and reboot.
    Stage,
}

/// A fetched document: is it the one announced, does this image believe it, is it valid, is
/// it new?
pub fn judge_fetched(
    offer: &ConfigRef,
    doc: &ConfigDocument,
    (provisioning, keys): (&Provisioning, &[PublicKey]),
    device: &Device,
) -> Judged {
    let bytes = doc.document.as_bytes();
    let digest = sha256(bytes);
    if doc.config != offer.config || digest != offer.digest || bytes.len() > MAX_SITE_CONFIG {
        return Judged::Report(refused(
            offer,
            &digest,
            format!(
                "the document fetched ({digest}, configuration {}) is not the one announced ({}, configuration {})",
                doc.config, offer.digest, offer.config
            ),
        ));
    }
    let signature = staging::signature_of(bytes, doc.signature.as_deref().map(str::as_bytes), keys);
    let trust = staging::console_trust(keys);
    if let Verdict::Ignore(why) = trust::judge_console(provisioning, trust, &digest, &signature) {
        return Judged::Report(refused(offer, &digest, why.to_string()));
    }
    let parsed = match p6os_config::unattended::load(Path::new("unattended.yaml"), &doc.document) {
        Ok(parsed) => parsed,
        Err(diags) => {
            return Judged::Report(ConfigReport {
                config: offer.config,
                outcome: ConfigOutcome::Refused,
                digest,
                problems: diags.iter().map(|d| d.to_string()).collect(),
            })
        }
    };
    if let Some(why) = cuts_off(&parsed, device) {
        return Judged::Report(refused(offer, &digest, why));
    }
    if let Provisioning::Provisioned {
        digest: applied, ..
    } = provisioning
    {
        if *applied == digest {
            return Judged::Report(ConfigReport {
                config: offer.config,
                outcome: ConfigOutcome::Unchanged,
                digest,
                problems: Vec::new(),
            });
        }
    }
    Judged::Stage
}

/// Who the device is to its console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The appliance id it registers as.
    pub id: String,
    /// `/etc/machine-id` (an `appliance.id` left out defaults to it).
    pub machine_id: String,
}

/// Why applying `doc` would cut the device off from the console that sent it: no `console`
/// section (the document owns `/etc/p6os/console.json`: it would be removed), or another
/// appliance id (the device would register as someone else).
pub fn cuts_off(doc: &p6os_config::unattended::Unattended, device: &Device) -> Option<String> {
    if doc.console.is_none() {
        return Some(
            "the document has no console section: applied, it would remove the device's \
             console settings and the device would stop reporting (keep endpoint and token)"
                .into(),
        );
    }
    let id = doc
        .appliance
        .as_ref()
        .and_then(|a| a.id.as_deref())
        .unwrap_or(&device.machine_id);
    (id != device.id).then(|| {
        format!(
            "the document would make this device appliance {id:?}, and it is {:?}: set \
             appliance.id: {}",
            device.id, device.id
        )
    })
}

/// Where the loop finds and keeps the configuration files: the directory of
/// `/var/lib/p6os` (through the mounted /var), the image's configuration keys, this boot.
#[derive(Debug, Clone)]
pub struct Files {
    pub dir: PathBuf,
    pub keys: Vec<PublicKey>,
    pub boot_id: String,
    pub machine_id: String,
}

fn name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Files {
    /// On the running device.
    pub fn machine() -> Files {
        Files {
            dir: PathBuf::from(&APPLIED_PATH[..APPLIED_PATH.rfind('/').unwrap_or(0)]),
            keys: crate::firstboot::config_keys(Path::new("/")),
            boot_id: fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            machine_id: fs::read_to_string(crate::firstboot::MACHINE_ID)
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        }
    }

    fn path(&self, of: &str) -> PathBuf {
        self.dir.join(name(of))
    }

    fn read(&self, of: &str) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        fs::File::open(self.path(of))
            .ok()?
            .take(staging::MAX_STAGED + 1)
            .read_to_end(&mut bytes)
            .ok()?;
        Some(bytes)
    }

    fn provisioning(&self) -> Provisioning {
        staging::provisioning(self.read(APPLIED_PATH).as_deref()).0
    }

    pub fn known(&self) -> Known {
        let staged: Option<Staged> = self
            .read(STAGED_PATH)
            .and_then(|b| serde_json::from_slice(&b).ok());
        Known {
            result: self
                .read(RESULT_PATH)
                .and_then(|b| serde_json::from_slice(&b).ok()),
            staged: staged.map(|s| (s.config, s.boot_id)),
            applied_digest: match self.provisioning() {
                Provisioning::Provisioned { digest, .. } if !digest.is_empty() => Some(digest),
                _ => None,
            },
            boot_id: self.boot_id.clone(),
        }
    }

    pub fn stage(&self, doc: &ConfigDocument) -> Result<(), String> {
        let staged = Staged {
            config: doc.config,
            document: doc.document.clone(),
            signature: doc.signature.clone(),
            boot_id: self.boot_id.clone(),
        };
        let bytes = serde_json::to_vec(&staged).map_err(|e| e.to_string())?;
        staging::write_atomic(&self.path(STAGED_PATH), &bytes)
    }

    fn remove(&self, of: &str) {
        match fs::remove_file(self.path(of)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(
                "registration: cannot remove {}: {e}",
                self.path(of).display()
            ),
        }
    }
}

/// What the loop does after handling an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Done,
    /// A configuration is staged: reboot to apply it.
    Reboot,
}

/// Handles the configuration announced in a heartbeat's answer.
pub fn handle(
    settings: &Settings,
    id: &str,
    token: &str,
    offer: &ConfigRef,
    host: &mut dyn Host,
) -> Handled {
    let Some(files) = host.site_config() else {
        return Handled::Done;
    };
    match next_step(offer, &files.known()) {
        Step::Report(r) => {
            // The result stays (replaced by the next one): diagnostics bundles show it, and
            // it only answers an offer of the same configuration.
            send_report(settings, id, token, &r);
            Handled::Done
        }
        Step::Abandon(r) => {
            warn!(
                "registration: site configuration {}: {}",
                r.config,
                r.problems.join("; ")
            );
            files.remove(STAGED_PATH);
            send_report(settings, id, token, &r);
            Handled::Done
        }
        Step::Reboot => Handled::Reboot,
        Step::Fetch => {
            // The agent's own path for its id and this number (the answer's `path` says the
            // same; a path from the answer could carry `@host` and leave the console's origin).
            let url = settings.url(&format!("{API}/appliances/{id}/config/{}", offer.config));
            let doc: ConfigDocument = match answer(http::call(
                "GET",
                &url,
                Some(token),
                None,
                settings.policy(),
            )) {
                Answer::Ok(doc) => doc,
                Answer::Denied(why) | Answer::Rejected(why) | Answer::Unavailable(why) => {
                    warn!(
                            "registration: cannot fetch site configuration {}: {why}; tried again at the next heartbeat",
                            offer.config
                        );
                    return Handled::Done;
                }
            };
            let device = Device {
                id: id.to_string(),
                machine_id: files.machine_id.clone(),
            };
            let provisioning = files.provisioning();
            match judge_fetched(offer, &doc, (&provisioning, &files.keys), &device) {
                Judged::Report(r) => {
                    info!(
                        "registration: site configuration {} {}{}",
                        r.config,
                        r.outcome.as_str(),
                        if r.problems.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", r.problems.join("; "))
                        }
                    );
                    send_report(settings, id, token, &r);
                    Handled::Done
                }
                Judged::Stage => match files.stage(&doc) {
                    Ok(()) => {
                        info!(
                            "registration: site configuration {} ({}) staged; rebooting to apply it",
                            offer.config, offer.digest
                        );
                        Handled::Reboot
                    }
                    Err(e) => {
                        warn!(
                            "registration: cannot stage site configuration {}: {e}",
                            offer.config
                        );
                        Handled::Done
                    }
                },
            }
        }
    }
}

/// Sends `report`; whether the console took it (or has a newer configuration: 409, the
/// report is dropped).
fn send_report(settings: &Settings, id: &str, token: &str, report: &ConfigReport) -> bool {
    let url = settings.url(&format!("{API}/appliances/{id}/config/report"));
    let body = serde_json::to_vec(report).unwrap_or_default();
    match http::call("POST", &url, Some(token), Some(&body), settings.policy()) {
        Ok((200..=299 | 409, _)) => true,
        Ok((status, _)) => {
            warn!("registration: the console answered {status} to the configuration report; sent again later");
            false
        }
        Err(e) => {
            warn!(
                "registration: cannot send the configuration report: {}",
                crate::log::error_chain(&e)
            );
            false
        }
    }
}

#[cfg(test)]
#[path = "siteconfig_tests.rs"]
mod tests;
