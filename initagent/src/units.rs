//! The jobs the agent's systemd units run on a systemd base (the builder ships the units):
//! `p6os-agent firstboot` (SSH host keys once per device, the configuration outcome in the
//! journal) and `p6os-agent import-images` (the slot's preloaded OCI archives into containerd,
//! once each). The minimal base has neither an SSH daemon nor a container runtime, so these
//! jobs exist only for systemd bases.
//!
//! The decision which archives still need importing is pure ([`pending`]); running `ctr` and
//! `ssh-keygen` is the thin shell around it.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// What the builder writes beside the archives (`/usr/lib/p6os/images/<sha256>.tar`).
pub const IMAGES_LIST: &str = p6os_layout::slot::IMAGES_LIST;
pub const IMAGES_DIR: &str = p6os_layout::slot::IMAGES_DIR;
/// The archives already imported on this device (on the state partition, through /var).
pub const IMPORTED: &str = "/var/lib/p6os/images-imported.json";
const APPLIED: &str = "/var/lib/p6os/applied.json";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ListedImage {
    pub file: String,
    pub sha256: String,
    #[serde(default)]
    pub source: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    /// sha256 of every archive imported so far.
    pub sha256: BTreeSet<String>,
}

/// The listed archives not imported yet, in list order.
pub fn pending<'a>(listed: &'a [ListedImage], done: &Imported) -> Vec<&'a ListedImage> {
    listed
        .iter()
        .filter(|i| !done.sha256.contains(&i.sha256))
        .collect()
}

/// `p6os-agent firstboot`: never fails the boot (exit 0), logs what it did.
pub fn firstboot() -> i32 {
    ssh_host_keys();
    match fs::read_to_string(APPLIED) {
        Ok(text) => {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            info!(
                "configuration from {} applied at {} ({} files)",
                v["source"].as_str().unwrap_or("?"),
                v["applied_at"].as_str().unwrap_or("?"),
                v["files"].as_array().map_or(0, Vec::len)
            );
        }
        Err(_) => info!("no unattended.yaml has been applied on this device"),
    }
    0
}

/// Makes the SSH host keys this device lacks (the image ships none: they are per device).
fn ssh_host_keys() {
    if !Path::new("/usr/sbin/sshd").exists() {
        return;
    }
    let have = fs::read_dir("/etc/ssh")
        .map(|rd| {
            rd.filter_map(Result::ok).any(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("ssh_host_") && n.ends_with("_key")
            })
        })
        .unwrap_or(false);
    if have {
        return;
    }
    // ed25519 and ECDSA only: an RSA key takes long on small CPUs and adds nothing here.
    for kind in ["ed25519", "ecdsa"] {
        let file = format!("/etc/ssh/ssh_host_{kind}_key");
        match Command::new("/usr/bin/ssh-keygen")
            .args(["-q", "-t", kind, "-N", "", "-C", "", "-f", &file])
            .status()
        {
            Ok(s) if s.success() => info!("made this device's SSH host key {file}"),
            Ok(s) => warn!("ssh-keygen -t {kind} failed ({s})"),
            Err(e) => warn!("cannot run ssh-keygen: {e}"),
        }
    }
}

/// `p6os-agent import-images`: imports the archives not imported yet; exit 1 if one failed
/// (the unit fails and the next boot tries again).
pub fn import_images() -> i32 {
    let listed: Vec<ListedImage> = match fs::read(IMAGES_LIST)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(l) => l,
        Err(e) => {
            warn!("cannot read {IMAGES_LIST}: {e}");
            return 1;
        }
    };
    let mut done: Imported = fs::read(IMPORTED)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let todo: Vec<ListedImage> = pending(&listed, &done).into_iter().cloned().collect();
    if todo.is_empty() {
        info!("all {} preloaded image archives are imported", listed.len());
        return 0;
    }
    let mut failed = 0;
    for image in todo {
        let path = Path::new(IMAGES_DIR).join(&image.file);
        let out = Command::new("ctr")
            .args(["--namespace", "k8s.io", "images", "import"])
            .arg(&path)
            .output();
        match out {
            Ok(o) if o.status.success() => {
                info!(
                    "imported {} ({}): {}",
                    image.source,
                    &image.sha256[..12.min(image.sha256.len())],
                    String::from_utf8_lossy(&o.stdout).trim()
                );
                done.sha256.insert(image.sha256.clone());
                if let Err(e) = save(&done) {
                    warn!("cannot record the import in {IMPORTED}: {e}");
                }
            }
            Ok(o) => {
                failed += 1;
                warn!(
                    "ctr images import {} failed ({}): {}",
                    path.display(),
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                );
            }
            Err(e) => {
                failed += 1;
                warn!("cannot run ctr: {e}");
            }
        }
    }
    i32::from(failed > 0)
}

fn save(done: &Imported) -> std::io::Result<()> {
    let path = Path::new(IMPORTED);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.new");
    fs::write(&tmp, serde_json::to_vec_pretty(done)?)?;
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(sha: &str) -> ListedImage {
        ListedImage {
            file: format!("{sha}.tar"),
            sha256: sha.into(),
            source: "x".into(),
        }
    }

    #[test]
    fn pending_skips_imported_archives_in_order() {
        let listed = [img("a"), img("b"), img("c")];
        let mut done = Imported::default();
        assert_eq!(pending(&listed, &done).len(), 3);
        done.sha256.insert("b".into());
        let left: Vec<&str> = pending(&listed, &done)
            .iter()
            .map(|i| i.sha256.as_str())
            .collect();
        assert_eq!(left, ["a", "c"]);
        done.sha256.extend(["a".to_string(), "c".to_string()]);
        assert!(pending(&listed, &done).is_empty());
        // The builder's list reads as it is written.
        let text = r#"[{"file":"a.tar","sha256":"a","source":"hello.tar"}]"#;
        let parsed: Vec<ListedImage> = serde_json::from_str(text).unwrap();
        assert_eq!(parsed[0].source, "hello.tar");
    }
}
