//! Boot assessment, at every boot in service mode: what the loader did (`slots::assess`),
//! the health checks of a trial boot, then blessing, a reboot to count down the tries, or
//! recording a fallback; once the booted slot is blessed, its security floor is recorded.
//! Never fatal: the machine keeps running whatever happens here.

use crate::health;
use crate::log::error_chain;
use crate::slots::{self, Assessment, HealthResult};

use super::machine::{self, AfterActions, Machine};

pub fn at_boot() {
    let mut machine = match Machine::open() {
        Ok(m) => m,
        Err(e) => {
            warn!("no boot assessment: {}", error_chain(&e));
            return;
        }
    };
    let view = match machine.view() {
        Ok(v) => v,
        Err(e) => {
            warn!("no boot assessment: {}", error_chain(&e));
            return;
        }
    };
    let assessment = slots::assess(&view);
    let actions = match &assessment {
        Assessment::Unmanaged { slot } => {
            info!("slot {slot} has no p6os boot entry: no boot assessment");
            return;
        }
        Assessment::Good => Vec::new(),
        Assessment::FellBack {
            bad_slot,
            version,
            reason,
        } => {
            warn!(
                "fell back to slot {}: slot {bad_slot} (version {version}) failed its trial: {reason}; version {version} will not be retried unless asked",
                view.booted
            );
            slots::settle(&view, &assessment)
        }
        Assessment::StaleTrial { outcome } => {
            info!(
                "finishing an interrupted upgrade record: {}",
                serde_json::to_string(outcome).unwrap_or_default()
            );
            slots::settle(&view, &assessment)
        }
        Assessment::RunHealthChecks { slot, version, .. } => {
            info!("slot {slot} (version {version}) is on trial: running health checks");
            // The ESP is not held while the checks run (they may take minutes, and status
            // and heartbeats wait for it); it is opened again, repaired, for the blessing.
            drop(machine);
            let result = match health::load().and_then(|h| health::run(&h)) {
                Ok(()) => HealthResult::Passed,
                Err(reason) => HealthResult::Failed(reason),
            };
            match &result {
                HealthResult::Passed => info!("health checks passed: blessing slot {slot} (version {version})"),
                HealthResult::Failed(reason) => warn!(
                    "health checks failed on slot {slot} (version {version}): {reason}; rebooting so the boot loader counts the try"
                ),
            }
            let actions = slots::after_health(&view, &result);
            match Machine::open() {
                Ok(m) => machine = m,
                Err(e) => {
                    warn!("no boot assessment: {}", error_chain(&e));
                    return;
                }
            }
            actions
        }
    };
    match machine::execute(&machine.esp, &actions, None) {
        Ok(AfterActions::RebootRequested) => {
            // Unmounts the ESP before init is asked to reboot.
            drop(machine);
            super::request_reboot();
            return;
        }
        Ok(AfterActions::Done) => {}
        Err(e) => warn!("boot assessment: {}", error_chain(&e)),
    }
    machine::check_invariant(&machine.esp);
    // The line tests and operators wait for: this boot is settled on a known-good slot.
    let entries = machine.entries().unwrap_or_default();
    match slots::entry_of(&entries, view.booted) {
        Some(e) if e.counter.is_blessed() => {
            // A blessed slot's floor holds from now on (signed with the slot, so only the
            // release key sets it).
            machine::raise_floor(machine.identity.security_floor.as_deref());
            info!(
                "slot {} is blessed (version {})",
                view.booted, e.image_version
            )
        }
        _ => warn!("slot {} is not blessed after the assessment", view.booted),
    }
}
