//! A real `p6os-console` process for the scenarios: `init` (tokens, a private CA, a certificate
//! for 10.0.2.2 and 127.0.0.1), `serve` with https on 127.0.0.1, and the operator CLI.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::console_cli;

/// The pairing token every scenario's console accepts.
pub const PAIRING_TOKEN: &str = "pairing-secret-for-the-test";
/// The operator's token of every scenario's console.
pub const ADMIN_TOKEN: &str = "admin-secret-for-the-test";

pub struct Console {
    child: Child,
    pub url: String,
    pub admin_token: PathBuf,
    /// The CA `p6os-console init` made (its certificate names 10.0.2.2 and 127.0.0.1).
    pub ca: PathBuf,
}

impl Console {
    /// Tokens, CA and certificate made in `dir`; bundles signed by `trusted_key` accepted.
    pub fn start(dir: &Path, trusted_key: &Path) -> Console {
        let admin_token = dir.join("admin.token");
        let pairing_token = dir.join("pairing.token");
        fs::write(&admin_token, format!("{ADMIN_TOKEN}\n")).unwrap();
        fs::write(&pairing_token, format!("{PAIRING_TOKEN}\n")).unwrap();
        // Keeps the token files above, adds the CA and the certificate for the guest's view.
        let out = Command::new(console_cli())
            .args([
                "init",
                "--tls-name",
                "10.0.2.2",
                "--tls-name",
                "127.0.0.1",
                "--dir",
            ])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut child = Command::new(console_cli())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--db")
            .arg(dir.join("console.db"))
            .arg("--bundles")
            .arg(dir.join("bundles"))
            .arg("--admin-token-file")
            .arg(&admin_token)
            .arg("--pairing-token-file")
            .arg(&pairing_token)
            .arg("--trusted-key")
            .arg(trusted_key)
            .args(["--heartbeat-secs", "3", "--pending-retry-secs", "2"])
            .arg("--tls-cert")
            .arg(dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.join("tls.key"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("p6os-console (built by `cargo test --workspace`)");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("console: {line}");
                if let Some(addr) = line.strip_prefix("p6os-console: listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the console did not start");
        Console {
            child,
            url,
            admin_token,
            ca: dir.join("ca.pem"),
        }
    }

    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// The `console:` section of unattended.yaml for a device that reaches this console as
    /// `https://<host>:<port>`: endpoint, pairing token and the CA to trust.
    pub fn unattended_section(&self, host: &str) -> String {
        let ca: String = fs::read_to_string(&self.ca)
            .unwrap()
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect();
        format!(
            "console:\n  endpoint: https://{host}:{}\n  token: {PAIRING_TOKEN}\n  ca: |\n{ca}",
            self.port()
        )
    }

    /// Runs an operator command; panics with its output if it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(console_cli())
            .arg("--url")
            .arg(&self.url)
            .arg("--admin-token-file")
            .arg(&self.admin_token)
            .arg("--ca")
            .arg(&self.ca)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "p6os-console {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs an operator command that prints JSON (`--json` is added).
    pub fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.cli(&args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// Registers `id` with `labels` (`k=v`), its key trusted on first use (`--pairing
    /// first-key`: the scenarios' devices are the only ones that can reach this console).
    pub fn register_first_key(&self, id: &str, labels: &[&str]) {
        let mut args = vec!["appliances", "register", id, "--pairing", "first-key"];
        for l in labels {
            args.extend(["--label", l]);
        }
        self.cli(&args);
    }

    /// Polls `json(args)` until `done` holds.
    pub fn wait_json(
        &self,
        args: &[&str],
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let v = self.json(args);
            if done(&v) {
                return v;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {what}: {v:#}"
            );
            thread::sleep(Duration::from_secs(1));
        }
    }

    pub fn show(&self, id: &str) -> Value {
        serde_json::from_str(&self.cli(&["appliances", "show", id, "--json"])).unwrap()
    }

    /// Polls `show` until `done` holds.
    pub fn wait_for(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_json(&["appliances", "show", id], what, timeout, done)
    }

    /// Asks appliance `id` for a diagnostics bundle, waits until it is uploaded, downloads it
    /// with the CLI (which checks its sha256) into `dir` and returns its files by name (the
    /// tar, decompressed, for searching, and each file as text).
    pub fn diagnostics(
        &self,
        id: &str,
        dir: &Path,
        timeout: Duration,
    ) -> (Vec<u8>, BTreeMap<String, String>) {
        let asked = self.json(&["diagnostics", "request", id]);
        let id_value = asked["id"].clone();
        let n = id_value.to_string();
        self.wait_json(
            &["diagnostics", "list", id],
            &format!("{id}'s diagnostics bundle"),
            timeout,
            |v| v[0]["id"] == id_value && v[0]["status"] == "uploaded",
        );
        let file = dir.join(format!("{id}-diagnostics-{n}.tar.zst"));
        self.cli(&["diagnostics", "get", &n, "--out", file.to_str().unwrap()]);
        let tar = zstd::stream::decode_all(&fs::read(&file).unwrap()[..]).unwrap();
        let mut files = BTreeMap::new();
        for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
            let mut e = entry.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            files.insert(name, String::from_utf8_lossy(&data).into_owned());
        }
        eprintln!(
            "{id}'s diagnostics bundle: {:?}",
            files.keys().collect::<Vec<_>>()
        );
        (tar, files)
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
