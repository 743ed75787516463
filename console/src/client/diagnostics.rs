//! `p6os-console diagnostics request|list|get`: ask an appliance for a diagnostics bundle,
//! follow the requests, download a bundle (checked against the sha256 the console recorded,
//! written only when it matches).

use std::io::Write as _;
use std::path::Path;

use p6os_protocol::diagnostics::{
    content_path, Diagnostics, DiagnosticsCreate, DiagnosticsPage, MAX_BYTES,
};
use p6os_protocol::API;
use sha2::{Digest, Sha256};

use super::{all_pages, format, print_json, Client, Failure};
use crate::auth::hex;
use crate::cli::DiagnosticsCommand;

impl Client {
    /// The body of a 2xx at `path` as bytes (at most `limit`); anything else is the console's
    /// error message.
    fn download(&self, path: &str, limit: u64) -> Result<Vec<u8>, Failure> {
        let result = self
            .agent
            .get(self.url(path))
            .header("Authorization", self.auth())
            .call();
        let mut response =
            result.map_err(|e| Failure::Other(format!("cannot reach {}: {e}", self.base)))?;
        if !response.status().is_success() {
            // The error body, through the JSON path.
            return self
                .finish::<serde_json::Value>(Ok(response))
                .map(|_| Vec::new());
        }
        response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| Failure::Other(format!("cannot read the bundle: {e}")))
    }
}

/// Whether `bytes` have the sha256 `recorded`; the error names both.
pub fn check_sha256(bytes: &[u8], recorded: &str) -> Result<(), Failure> {
    let actual = hex(&Sha256::digest(bytes));
    if actual == recorded {
        Ok(())
    } else {
        Err(Failure::Other(format!(
            "the download's sha256 is {actual}, the console recorded {recorded}: not written"
        )))
    }
}

/// Writes `bytes` to `out` through a temporary file beside it (renamed when complete).
fn write_file(out: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let fail = |e: std::io::Error| Failure::Other(format!("cannot write {}: {e}", out.display()));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    tmp.write_all(bytes).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(out).map_err(|e| fail(e.error))?;
    Ok(())
}

pub fn diagnostics(client: &Client, command: DiagnosticsCommand) -> Result<(), Failure> {
    let now = crate::api::now();
    match command {
        DiagnosticsCommand::Request {
            id,
            max_bytes,
            json,
        } => {
            let d: Diagnostics = client.post(
                &format!("{API}/appliances/{id}/diagnostics"),
                &DiagnosticsCreate { max_bytes },
            )?;
            if json {
                print_json(&d);
            } else {
                println!(
                    "diagnostics request {} for {} ({}): the device sends its bundle after its \
                     next heartbeat; then `diagnostics get {} --out FILE`",
                    d.id,
                    d.appliance_id,
                    d.status.as_str(),
                    d.id
                );
            }
        }
        DiagnosticsCommand::List { id, limit, json } => {
            let all = all_pages(
                client,
                &format!("{API}/appliances/{id}/diagnostics"),
                &[],
                limit,
                |p: DiagnosticsPage| (p.items, p.next),
            )?;
            if json {
                print_json(&all);
            } else {
                print!("{}", table(&all, now));
            }
        }
        DiagnosticsCommand::Get { n, out, json } => {
            let d: Diagnostics = client.get(&format!("{API}/diagnostics/{n}"))?;
            let Some(recorded) = d.sha256.clone() else {
                return Err(Failure::Api(format!(
                    "diagnostics request {n} has no bundle yet ({})",
                    d.status.as_str()
                )));
            };
            let bytes = client.download(&content_path(n), MAX_BYTES)?;
            check_sha256(&bytes, &recorded)?;
            write_file(&out, &bytes)?;
            if json {
                print_json(&d);
            } else {
                println!(
                    "{}: diagnostics of {} ({}, sha256 {recorded} checked); read it with \
                     `tar --zstd -xf {}`",
                    out.display(),
                    d.appliance_id,
                    format::bytes(bytes.len() as u64),
                    out.display()
                );
            }
        }
    }
    Ok(())
}

/// The requests as a table.
pub fn table(all: &[Diagnostics], now: u64) -> String {
    let mut rows = vec![vec![
        "ID".to_string(),
        "STATUS".to_string(),
        "REQUESTED".to_string(),
        "UPLOADED".to_string(),
        "SIZE".to_string(),
    ]];
    for d in all {
        rows.push(vec![
            d.id.to_string(),
            d.status.as_str().to_string(),
            format::ago(Some(d.requested_at), now),
            format::ago(d.uploaded_at, now),
            d.size.map_or("-".into(), format::bytes),
        ]);
    }
    format::table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p6os_protocol::diagnostics::DiagnosticsStatus;

    #[test]
    fn downloads_are_checked() {
        let sha = hex(&Sha256::digest(b"bundle"));
        check_sha256(b"bundle", &sha).unwrap();
        let e = check_sha256(b"bundlE", &sha).unwrap_err();
        assert!(e.to_string().contains("not written"), "{e}");
    }

    #[test]
    fn tables_show_status_and_size() {
        let d = Diagnostics {
            id: 4,
            appliance_id: "a".into(),
            status: DiagnosticsStatus::Uploaded,
            max_bytes: MAX_BYTES,
            requested_at: 100,
            delivered_at: Some(110),
            uploaded_at: Some(120),
            size: Some(2048),
            sha256: Some("ab".into()),
        };
        let t = table(&[d], 180);
        assert!(t.contains("4  ") && t.contains("uploaded"), "{t}");
        assert!(t.contains("2.0 KiB") && t.contains("1m ago"), "{t}");
    }
}
