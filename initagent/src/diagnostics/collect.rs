//! What goes into a diagnostics bundle, read from a root directory (`/` on a device, a fake
//! tree in tests): each item bounded, the whole bounded, secrets redacted, keys and tokens
//! never read. The result is a `.tar.zst` whose first file is the manifest.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use p6os_protocol::diagnostics::{Excluded, Manifest, ManifestItem, MANIFEST_NAME};
use sha2::{Digest, Sha256};

use super::read::{self, Piece, Ran};
use super::tar;

/// Never read, and listed as excluded in every manifest.
pub const EXCLUDED: &[(&str, &str)] = &[
    (
        crate::register::identity::IDENTITY_PATH,
        "the device's private identity key",
    ),
    (
        crate::register::state::REGISTRATION_PATH,
        "holds the device token",
    ),
    (
        crate::register::CONSOLE_CONFIG,
        "holds the fleet's pairing token",
    ),
    (
        p6os_layout::esp::UNATTENDED,
        "the configuration document as written (secrets): included redacted only",
    ),
    (
        p6os_layout::slot::BAKED_UNATTENDED_PATH,
        "the image's configuration document (secrets): included redacted only",
    ),
    (
        crate::firstboot::console::STAGED_PATH,
        "a configuration from the console waiting for the next boot (secrets): `p6os-console config show` shows it redacted",
    ),
    ("/etc/shadow", "password hashes"),
    (
        "write_files targets",
        "files the configuration writes may hold credentials: their contents are not read",
    ),
];

/// Bounds of one collection.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Uncompressed bytes of all items together.
    pub total: usize,
    /// Bytes of one item (the kernel log and the journal have their own).
    pub item: usize,
    pub kmsg: usize,
    pub journal: usize,
    /// How long a command may run.
    pub command_timeout: Duration,
    /// The whole collection: items not reached by then are listed with an error.
    pub deadline: Duration,
}

impl Limits {
    /// For a bundle of at most `max_bytes` compressed: the items' sum stays under it (less
    /// room for the manifest and the archive's headers), so the compressed archive fits even
    /// when nothing compresses.
    pub fn for_size(max_bytes: u64) -> Limits {
        let total = (max_bytes as usize / 256 * 255).saturating_sub(48 << 10);
        Limits {
            total,
            item: 512 << 10,
            kmsg: 2 << 20,
            journal: 3 << 20,
            command_timeout: Duration::from_secs(15),
            deadline: Duration::from_secs(60),
        }
    }
}

/// Where things are: the root, and the mounted ESP (none when it could not be mounted).
#[derive(Debug, Clone)]
pub struct Sources {
    pub root: PathBuf,
    pub esp: Option<PathBuf>,
    /// What `p6os-agent status --json` prints, or why it could not be had.
    pub status: Result<serde_json::Value, String>,
}

/// The bundle being built: the items' bytes and their manifest lines.
struct Builder {
    limits: Limits,
    used: usize,
    started: Instant,
    files: Vec<(String, Vec<u8>)>,
    items: Vec<ManifestItem>,
}

impl Builder {
    fn room(&self, cap: usize) -> usize {
        cap.min(self.limits.total.saturating_sub(self.used))
    }

    fn late(&self) -> bool {
        self.started.elapsed() >= self.limits.deadline
    }

    /// Adds an item read with the bound `cap` it was given (`room`); `bounded` says whether
    /// the item's own bound or the bundle's cut it.
    fn add(&mut self, name: &str, source: &str, result: Result<Piece, String>) {
        let (piece, error) = match result {
            Ok(p) => (p, None),
            Err(e) => (Piece::default(), Some(e)),
        };
        self.used += piece.bytes.len();
        self.items.push(ManifestItem {
            name: name.to_string(),
            source: source.to_string(),
            size: piece.bytes.len() as u64,
            truncated: piece.truncated,
            error,
        });
        if !piece.bytes.is_empty() || self.items.last().is_some_and(|i| i.error.is_none()) {
            self.files.push((name.to_string(), piece.bytes));
        }
    }

    fn skipped(&mut self, name: &str, source: &str, why: &str) {
        self.add(name, source, Err(why.to_string()));
    }

    /// A file under the root (links refused).
    fn file(&mut self, name: &str, root: &Path, rel: &str) {
        if self.late() {
            return self.skipped(name, rel, "the collection ran out of time");
        }
        let cap = self.room(self.limits.item);
        let read = read::file_beneath(root, rel, cap).map_err(|e| e.to_string());
        self.add(name, rel, read);
    }

    /// A value as pretty JSON, cut at the bound.
    fn json(&mut self, name: &str, source: &str, value: Result<serde_json::Value, String>) {
        let cap = self.room(self.limits.item);
        let piece = value.map(|v| {
            let mut bytes = serde_json::to_vec_pretty(&v).unwrap_or_default();
            let truncated = bytes.len() > cap;
            bytes.truncate(cap);
            Piece { bytes, truncated }
        });
        self.add(name, source, piece);
    }
}

/// Collects the bundle of request `request` as a `.tar.zst` no larger than `max_bytes` (an
/// error only when even that could not be made).
pub fn collect(
    sources: &Sources,
    request: u64,
    max_bytes: u64,
    limits: Limits,
) -> Result<(Vec<u8>, Manifest), String> {
    let mut b = Builder {
        limits,
        used: 0,
        started: Instant::now(),
        files: Vec::new(),
        items: Vec::new(),
    };
    let root = sources.root.as_path();
    b.json(
        "agent/status.json",
        "p6os-agent status --json",
        sources.status.clone(),
    );
    boot(&mut b, sources);
    kernel_log(&mut b, root);
    journal(&mut b, root);
    network(&mut b, root);
    b.json("disk/usage.json", "statvfs of the mounts", disk_usage(root));
    configuration(&mut b, sources);

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let manifest = Manifest {
        request,
        created_at: now,
        agent_version: crate::cli::VERSION.to_string(),
        items: b.items,
        excluded: EXCLUDED
            .iter()
            .map(|(path, reason)| Excluded {
                path: path.to_string(),
                reason: reason.to_string(),
            })
            .collect(),
    };
    let mut archive = Vec::new();
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    tar::append(&mut archive, MANIFEST_NAME, &manifest_bytes, now);
    for (name, bytes) in &b.files {
        tar::append(&mut archive, name, bytes, now);
    }
    tar::finish(&mut archive);
    let compressed = zstd::bulk::compress(&archive, 3)
        .map_err(|e| format!("cannot compress the bundle: {e}"))?;
    if compressed.len() as u64 > max_bytes {
        return Err(format!(
            "the bundle is {} bytes compressed, over the {max_bytes} asked",
            compressed.len()
        ));
    }
    Ok((compressed, manifest))
}

/// Boot entries from the ESP (read-only), the slot record (trial, fallbacks, the last
/// upgrade: the boot-assessment history), the security floor.
fn boot(b: &mut Builder, sources: &Sources) {
    let root = sources.root.as_path();
    match &sources.esp {
        Some(esp) => {
            b.file("boot/loader.conf", esp, p6os_layout::esp::LOADER_CONF);
            let entries = p6os_layout::esp::ENTRIES_DIR.trim_start_matches('/');
            match read::dir_beneath(esp, entries).and_then(|d| d.names()) {
                Ok(names) => {
                    for n in names.iter().filter(|n| n.ends_with(".conf")).take(16) {
                        b.file(
                            &format!("boot/entries/{}", safe_name(n)),
                            esp,
                            &format!("{entries}/{n}"),
                        );
                    }
                }
                Err(e) => b.skipped("boot/entries", "the ESP's loader/entries", &e.to_string()),
            }
        }
        None => b.skipped("boot/entries", "the ESP", "the ESP could not be mounted"),
    }
    b.file(
        "boot/slots.json",
        root,
        crate::upgrade::machine::RECORD_PATH,
    );
    b.file(
        "boot/security-floor",
        root,
        crate::upgrade::machine::FLOOR_PATH,
    );
    b.file("config/status", root, crate::firstboot::CONFIG_STATUS);
}

/// File names from a directory listing, as archive names.
fn safe_name(n: &str) -> String {
    n.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

fn kernel_log(b: &mut Builder, root: &Path) {
    let cap = b.room(b.limits.kmsg);
    let deadline = b.started + b.limits.deadline;
    let read = read::kmsg(&root.join("dev/kmsg"), cap, deadline).map_err(|e| e.to_string());
    b.add("kernel/kmsg.txt", "/dev/kmsg (newest first kept)", read);
}

/// The system journal of this boot, when the base has `journalctl`.
fn journal(b: &mut Builder, root: &Path) {
    let Some(program) = ["usr/bin/journalctl", "bin/journalctl"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.is_file())
    else {
        return b.skipped(
            "journal/boot.txt",
            "journalctl",
            "this base has no journalctl",
        );
    };
    if b.late() {
        return b.skipped(
            "journal/boot.txt",
            "journalctl",
            "the collection ran out of time",
        );
    }
    let cap = b.room(b.limits.journal);
    let args = ["-b", "--no-pager", "-o", "short-iso", "-n", "20000"];
    let read = match read::command(&program, &args, cap, b.limits.command_timeout) {
        Ok(Ran::Done(p)) => Ok(p),
        Ok(Ran::TimedOut(mut p)) => {
            p.truncated = true;
            Ok(p)
        }
        Err(e) => Err(format!("cannot run {}: {e}", program.display())),
    };
    b.add("journal/boot.txt", "journalctl -b -n 20000", read);
}

/// Addresses, routes, neighbours, interface counters; the resolver configuration.
fn network(b: &mut Builder, root: &Path) {
    for f in ["dev", "route", "ipv6_route", "if_inet6", "arp"] {
        let cap = b.room(b.limits.item);
        let path = root.join("proc/net").join(f);
        let read = read::kernel_file(&path, cap).map_err(|e| e.to_string());
        b.add(&format!("net/{f}"), &format!("/proc/net/{f}"), read);
    }
    b.json("net/interfaces.json", "/sys/class/net", interfaces(root));
    b.file("net/resolv.conf", root, "etc/resolv.conf");
}

fn interfaces(root: &Path) -> Result<serde_json::Value, String> {
    let dir = root.join("sys/class/net");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut out = serde_json::Map::new();
    for name in names.into_iter().take(64) {
        let mut attrs = serde_json::Map::new();
        for attr in [
            "address",
            "operstate",
            "carrier",
            "mtu",
            "speed",
            "statistics/rx_bytes",
            "statistics/tx_bytes",
            "statistics/rx_errors",
            "statistics/tx_errors",
        ] {
            if let Ok(p) = read::kernel_file(&dir.join(&name).join(attr), 256) {
                let text = String::from_utf8_lossy(&p.bytes).trim().to_string();
                attrs.insert(attr.to_string(), text.into());
            }
        }
        out.insert(name, attrs.into());
    }
    Ok(out.into())
}

/// Filesystems that are not on this machine's disks (a hung server would hang `statvfs`) or
/// not disks at all.
fn skipped_fs(fstype: &str) -> bool {
    fstype.starts_with("nfs")
        || fstype.starts_with("fuse")
        || fstype.starts_with("cgroup")
        || matches!(
            fstype,
            "cifs"
                | "smb3"
                | "9p"
                | "proc"
                | "sysfs"
                | "devpts"
                | "mqueue"
                | "debugfs"
                | "tracefs"
                | "securityfs"
                | "pstore"
                | "bpf"
                | "configfs"
                | "hugetlbfs"
                | "autofs"
                | "binfmt_misc"
                | "efivarfs"
                | "rpc_pipefs"
                | "nsfs"
        )
}

fn disk_usage(root: &Path) -> Result<serde_json::Value, String> {
    let path = root.join("proc/self/mountinfo");
    let text = read::kernel_file(&path, 1 << 20)
        .map(|p| String::from_utf8_lossy(&p.bytes).into_owned())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for line in text.lines().take(256) {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(point), Some(fstype), Some(source)) =
            (fields.get(4), fields.get(dash + 1), fields.get(dash + 2))
        else {
            continue;
        };
        if skipped_fs(fstype) {
            continue;
        }
        let point = point.replace("\\040", " ");
        let at = root.join(point.trim_start_matches('/'));
        let entry = match rustix::fs::statvfs(&at) {
            Ok(s) => serde_json::json!({
                "mount": point, "fstype": fstype, "source": source,
                "size_bytes": s.f_blocks * s.f_frsize,
                "free_bytes": s.f_bfree * s.f_frsize,
                "available_bytes": s.f_bavail * s.f_frsize,
                "inodes": s.f_files, "inodes_free": s.f_ffree,
            }),
            Err(e) => serde_json::json!({"mount": point, "fstype": fstype, "error": e.to_string()}),
        };
        out.push(entry);
    }
    Ok(out.into())
}

/// The applied record as is (digests, source, times: no secrets), and the applied document
/// redacted: the copy on the ESP or in the image whose sha256 the record names.
fn configuration(b: &mut Builder, sources: &Sources) {
    let root = sources.root.as_path();
    let applied = crate::firstboot::applied::APPLIED_PATH;
    b.file("config/applied.json", root, applied);
    let console_result = crate::firstboot::console::RESULT_PATH;
    if read::file_beneath(root, console_result, 1 << 20).is_ok() {
        b.file("config/console-result.json", root, console_result);
    }
    let record = read::file_beneath(root, applied, 1 << 20)
        .ok()
        .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p.bytes).ok());
    let digest = record
        .as_ref()
        .and_then(|v| v["digest"].as_str().map(str::to_string));
    let from_console = record
        .as_ref()
        .is_some_and(|v| v["source_kind"].as_str() == Some("console"));
    let Some(digest) = digest else {
        return b.skipped(
            "config/document.redacted.json",
            "the applied document",
            "no applied configuration is recorded",
        );
    };
    let mut candidates: Vec<(PathBuf, &str)> =
        vec![(root.to_path_buf(), p6os_layout::slot::BAKED_UNATTENDED_PATH)];
    if let Some(esp) = &sources.esp {
        candidates.insert(0, (esp.clone(), p6os_layout::esp::UNATTENDED));
    }
    for (base, rel) in candidates {
        let Ok(p) = read::file_beneath(&base, rel, 1 << 20) else {
            continue;
        };
        let sha = Sha256::digest(&p.bytes);
        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
        if format!("sha256:{hex}") != digest {
            continue;
        }
        let text = String::from_utf8_lossy(&p.bytes);
        let value = p6os_config::unattended::load(Path::new(rel), &text)
            .map(|doc| serde_json::to_value(doc.redacted()).unwrap_or_default())
            .map_err(|_| {
                format!("{rel} does not load any more: not included (it may hold secrets)")
            });
        return b.json("config/document.redacted.json", rel, value);
    }
    let why = if from_console {
        format!(
            "the applied document ({digest}) came from the console, which keeps it: \
             `p6os-console config show ID` shows it redacted"
        )
    } else {
        format!("no copy of the applied document ({digest}) on the ESP or in the image")
    };
    b.skipped(
        "config/document.redacted.json",
        "the applied document",
        &why,
    );
}
