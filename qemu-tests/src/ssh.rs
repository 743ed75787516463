//! Logging in to a guest over SSH: QEMU forwards `127.0.0.1:<port>` on the host to the guest's
//! port 22 (the one way in that `restrict=on` keeps), with a key the test made.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::vm::Vm;

/// Where the agent is installed in every image.
pub const AGENT: &str = "/usr/lib/p6os/p6os-agent";

/// A free loopback port for the SSH forward.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An ed25519 key pair in `dir` (`id_ed25519`, `id_ed25519.pub`); returns the private key's
/// path and the public key's line.
pub fn keygen(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("id_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ops@test", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (package openssh-client)");
    assert!(status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

/// The site configuration of the SSH scenarios: a host name and the sudo user `ops` with
/// `public_key`, password logins off.
pub fn ops_config(hostname: &str, public_key: &str) -> String {
    format!(
        "hostname: {hostname}\nusers:\n  - name: ops\n    sudo: true\n    ssh_authorized_keys:\n      - {public_key}\nssh:\n  password_authentication: false\n"
    )
}

/// The user `ops` on the guest whose port 22 is forwarded from `127.0.0.1:port`.
pub struct Ssh<'a> {
    pub key: &'a Path,
    pub port: u16,
}

impl Ssh<'_> {
    /// The `ssh` command that runs `cmd` as the user (for commands whose exit the test reads).
    pub fn command(&self, cmd: &str) -> Command {
        self.command_as("ops", cmd)
    }

    /// The `ssh` command that runs `cmd` as `user` with this key.
    pub fn command_as(&self, user: &str, cmd: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
            "-i",
        ])
        .arg(self.key)
        .args([
            "-p",
            &self.port.to_string(),
            &format!("{user}@127.0.0.1"),
            cmd,
        ]);
        c
    }

    /// Runs `cmd` as the SSH user; panics with its output (and the console) if it fails.
    pub fn run(&self, vm: &Vm, cmd: &str) -> String {
        self.run_as(vm, "ops", cmd)
    }

    /// Runs `cmd` as `user`; panics with its output (and the console) if it fails.
    pub fn run_as(&self, vm: &Vm, user: &str, cmd: &str) -> String {
        let out = self.command_as(user, cmd).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            panic!(
                "ssh `{cmd}` failed ({}): {text}{}\n(console: {})",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                vm.log_path().display()
            );
        }
        text
    }

    /// Waits until a login works (sshd up, the key accepted).
    pub fn wait(&self, vm: &Vm, timeout: Duration) {
        self.wait_as(vm, "ops", timeout)
    }

    /// Waits until `user` can log in with this key.
    pub fn wait_as(&self, vm: &Vm, user: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(o) = self.command_as(user, "true").output() {
                if o.status.success() {
                    return;
                }
            }
            assert!(
                start.elapsed() < timeout,
                "no SSH login after {timeout:?} (console: {})",
                vm.log_path().display()
            );
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    /// `p6os-agent status --json`, parsed.
    pub fn status(&self, vm: &Vm) -> serde_json::Value {
        crate::parse_status(&self.run(vm, &format!("sudo {AGENT} status --json")))
    }
}
