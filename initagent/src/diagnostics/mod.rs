//! Remote diagnostics on the device: the console's heartbeat answer asks for a bundle
//! (`p6os_protocol::diagnostics`); the heartbeat loop hands it to [`Jobs`], which collects
//! (`collect`: bounded reads, secrets redacted, keys and tokens never read) and uploads on a
//! thread of its own, so the loop never waits for it. One collection at a time; a request is
//! collected again only when its upload failed for a reason worth another try.

mod collect;
pub mod read;
mod tar;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::thread::JoinHandle;

use p6os_protocol::diagnostics::DiagnosticsRequest;

pub use collect::{collect, Limits, Sources, EXCLUDED};

use crate::upgrade::http;

/// Where a collection reads from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// This machine: `/`, the ESP mounted read-only for the time of the collection, the
    /// status as `p6os-agent status --json` prints it.
    Machine,
    /// A prepared tree (tests).
    Tree(Sources),
}

/// Where and how to upload.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The console's base URL (no trailing slash).
    pub endpoint: String,
    pub token: String,
    pub policy: http::RetryPolicy,
}

/// How one job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// The console refused it (answered, expired, not ours, too large): not tried again.
    Refused(String),
    /// Collection or transport failed: tried again when the request comes again.
    Failed(String),
}

/// Whether to start collecting for `request`: not while a collection runs, not for a request
/// already done.
pub fn should_start(request: u64, running: Option<u64>, done: &VecDeque<u64>) -> bool {
    running.is_none() && !done.contains(&request)
}

/// The requests done (sent or refused), the newest few.
const DONE_KEPT: usize = 16;

/// The diagnostics collections of one heartbeat loop.
#[derive(Default)]
pub struct Jobs {
    running: Option<(u64, JoinHandle<Outcome>)>,
    done: VecDeque<u64>,
}

impl Jobs {
    /// Takes a finished job's outcome (never waits).
    pub fn reap(&mut self) -> Option<(u64, Outcome)> {
        if !self.running.as_ref().is_some_and(|(_, h)| h.is_finished()) {
            return None;
        }
        let (id, handle) = self.running.take()?;
        let outcome = handle
            .join()
            .unwrap_or_else(|_| Outcome::Failed("the collection stopped".into()));
        match &outcome {
            Outcome::Sent => info!("diagnostics: bundle {id} sent to the console"),
            Outcome::Refused(why) => warn!("diagnostics: bundle {id} refused: {why}"),
            Outcome::Failed(why) => warn!("diagnostics: bundle {id} not sent: {why}"),
        }
        if !matches!(outcome, Outcome::Failed(_)) {
            self.done.push_back(id);
            if self.done.len() > DONE_KEPT {
                self.done.pop_front();
            }
        }
        Some((id, outcome))
    }

    /// Starts collecting for `request` on a thread, unless [`should_start`] says no.
    pub fn offer(&mut self, request: &DiagnosticsRequest, upload: Upload, origin: Origin) {
        self.reap();
        let running = self.running.as_ref().map(|(id, _)| *id);
        if !should_start(request.id, running, &self.done) {
            return;
        }
        info!(
            "diagnostics: the console asks for bundle {} (at most {} bytes)",
            request.id, request.max_bytes
        );
        let id = request.id;
        let request = request.clone();
        let spawned = std::thread::Builder::new()
            .name("diagnostics".into())
            .spawn(move || run(&request, &upload, origin));
        match spawned {
            Ok(handle) => self.running = Some((id, handle)),
            Err(e) => warn!("diagnostics: cannot start the collection: {e}"),
        }
    }

    /// Waits for the running job (tests).
    pub fn wait(&mut self) -> Option<(u64, Outcome)> {
        let (id, handle) = self.running.take()?;
        let outcome = handle
            .join()
            .unwrap_or_else(|_| Outcome::Failed("the collection stopped".into()));
        Some((id, outcome))
    }
}

/// Collects and uploads (the job's thread).
fn run(request: &DiagnosticsRequest, upload: &Upload, origin: Origin) -> Outcome {
    let limits = Limits::for_size(request.max_bytes);
    let collected = match origin {
        Origin::Tree(sources) => collect(&sources, request.id, request.max_bytes, limits),
        Origin::Machine => {
            // The ESP stays mounted (read-only) while the machine is held.
            let machine = crate::upgrade::machine::Machine::open_read_only();
            let sources = Sources {
                root: PathBuf::from("/"),
                esp: machine.as_ref().ok().map(|m| m.esp.clone()),
                status: crate::upgrade::status_value(),
            };
            let collected = collect(&sources, request.id, request.max_bytes, limits);
            drop(machine);
            collected
        }
    };
    let (bytes, _manifest) = match collected {
        Ok(x) => x,
        Err(e) => return Outcome::Failed(e),
    };
    let url = format!("{}{}", upload.endpoint, request.upload_path);
    let body = Some(("application/octet-stream", bytes.as_slice()));
    match http::call_with(
        "PUT",
        &url,
        Some(&upload.token),
        body,
        upload.policy.clone(),
    ) {
        Ok((200..=299, _)) => Outcome::Sent,
        Ok((status @ (408 | 429), _)) => Outcome::Failed(format!("the console answered {status}")),
        Ok((status @ 400..=499, body)) => Outcome::Refused(format!(
            "the console answered {status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(200)
                .collect::<String>()
        )),
        Ok((status, _)) => Outcome::Failed(format!("the console answered {status}")),
        Err(e) => Outcome::Failed(crate::log::error_chain(&e)),
    }
}

#[cfg(test)]
pub(crate) mod tests;
