//! `p6os site` in a real terminal: tmux runs the binary in an 80x24 pane, the test types with
//! `send-keys` and reads the screen with `capture-pane`, through a whole document, then
//! compares the file saved. A private tmux server (`-L`), killed at the end.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const P6OS: &str = env!("CARGO_BIN_EXE_p6os");

struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, command: &str) -> Tmux {
        let t = Tmux {
            socket: format!("p6os-site-{name}-{}", std::process::id()),
        };
        let status = Command::new("tmux")
            .args([
                "-L",
                &t.socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "80",
                "-y",
                "24",
            ])
            .arg(format!("{command}; echo EXITED $?; sleep 60"))
            .env("TERM", "xterm-256color")
            .status()
            .expect("tmux is needed for this test (cargo xtask deps installs it)");
        assert!(status.success(), "tmux new-session failed");
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Keys by tmux name (`Tab`, `C-n`, `Enter`).
    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.tmux(&["send-keys", "-t", "0", k]);
        }
    }

    /// Text typed as it is.
    fn text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "0", "-l", "--", text]);
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "0"])
    }

    /// Waits until the screen shows `needle`; the screen.
    fn wait_for(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(needle) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the screen never showed `{needle}`:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

#[test]
fn a_whole_document_typed_in_a_terminal_is_saved_as_typed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("site.yaml");
    // Something the pages do not show, kept through the session.
    std::fs::write(
        &file,
        "#cloud-config\n# a comment\nhostname: old-name\nwrite_files:\n  - {path: /etc/motd, content: \"hello\\n\"}\n",
    )
    .unwrap();
    let t = Tmux::start("whole", &format!("{P6OS} site {}", shell_quote(&file)));
    t.wait_for("P6OS site setup");
    // Appliance.
    t.keys(&["C-n"]);
    t.wait_for("Appliance id");
    t.text("store-0042");
    t.keys(&["Tab"]);
    t.text("Store 42");
    t.keys(&["Tab"]);
    t.text("region=eu, store=42");
    // Host name: replace the old one (Ctrl-U clears the field).
    t.keys(&["C-n"]);
    t.wait_for("Host name");
    t.keys(&["C-u"]);
    t.text("store_0042");
    t.wait_for("is not a valid host name");
    t.keys(&["BSpace", "BSpace", "BSpace", "BSpace", "BSpace"]);
    t.text("-0042");
    t.keys(&["Tab"]);
    t.text("Europe/Paris");
    // A network port with a fixed address.
    t.keys(&["C-n"]);
    t.wait_for("No network port is set");
    t.keys(&["C-a"]);
    t.wait_for("Port name");
    t.text("enp1s0");
    t.keys(&["Tab", "Tab", "Space", "Tab"]);
    t.text("192.168.42.10/24");
    t.keys(&["Tab"]);
    t.text("192.168.42.1");
    // Name servers, proxy.
    t.keys(&["C-n"]);
    t.wait_for("Name servers");
    t.text("192.168.42.1");
    t.keys(&["C-n"]);
    t.wait_for("HTTP proxy");
    t.text("http://proxy.store.example:3128");
    t.keys(&["Tab", "Tab"]);
    t.text("localhost,127.0.0.1,.store.example");
    // Kubernetes and registries: left as they are.
    t.keys(&["C-n", "C-n", "C-n"]);
    t.wait_for("Console address");
    t.text("https://console.example.com");
    t.keys(&["Tab"]);
    t.text("pairing-token-42");
    // An account with a key and sudo.
    t.keys(&["C-n"]);
    t.wait_for("No account is set");
    t.keys(&["C-a"]);
    t.wait_for("Account name");
    t.text("ops");
    t.keys(&["Tab", "Tab"]);
    t.text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ7m2bS2l2GxDm2bV9Wm3fXU0wH7Z2mQ3y0V6p0s0s0 ops@laptop");
    t.keys(&["Tab"]);
    t.wait_for("SSH key 1");
    t.keys(&["Tab", "Tab", "Space"]);
    // Review: no problem, the token hidden; save; leave.
    t.keys(&["C-s"]);
    let review = t.wait_for("No problems. Ctrl-S saves to");
    assert!(!review.contains("pairing-token-42"), "{review}");
    t.keys(&["Tab"]);
    let changes = t.wait_for("+ hostname: store-0042");
    assert!(changes.contains("- hostname: old-name"), "{changes}");
    t.keys(&["C-s"]);
    t.wait_for("saved to");
    t.keys(&["C-q"]);
    t.wait_for("EXITED 0");
    let saved = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        saved,
        "#cloud-config
appliance:
  id: store-0042
  name: Store 42
  labels:
    region: eu
    store: '42'
hostname: store-0042
timezone: Europe/Paris
users:
- name: ops
  ssh_authorized_keys:
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ7m2bS2l2GxDm2bV9Wm3fXU0wH7Z2mQ3y0V6p0s0s0 ops@laptop
  sudo: true
network:
  interfaces:
  - name: enp1s0
    addresses:
    - 192.168.42.10/24
    gateway: 192.168.42.1
  dns:
    servers:
    - 192.168.42.1
proxy:
  http_proxy: http://proxy.store.example:3128
  no_proxy:
  - localhost
  - 127.0.0.1
  - .store.example
console:
  endpoint: https://console.example.com
  token: pairing-token-42
write_files:
- path: /etc/motd
  content: |
    hello
  encoding: plain
"
    );
    // The file saved is what `p6os validate unattended` accepts.
    let out = Command::new(P6OS)
        .args(["validate", "unattended"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "it holds the pairing token");
}

#[test]
fn leaving_without_saving_asks_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new.yaml");
    let t = Tmux::start("quit", &format!("{P6OS} site {}", shell_quote(&file)));
    t.wait_for("P6OS site setup");
    t.keys(&["C-n", "C-n"]);
    t.wait_for("Host name");
    t.text("a");
    t.keys(&["C-q"]);
    t.wait_for("Leave without saving the changes? (y/n)");
    t.keys(&["y"]);
    let s = t.wait_for("EXITED 0");
    assert!(s.contains("nothing saved"), "{s}");
    assert!(!file.exists());
}

#[test]
fn without_a_terminal_it_says_what_to_use_instead() {
    let out = Command::new(P6OS)
        .args(["site", "/nonexistent/x.yaml"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs a terminal") && err.contains("p6os validate unattended"),
        "{err}"
    );
}
