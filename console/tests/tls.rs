//! `init --tls-name` then `serve --tls-cert --tls-key` (the real binary): the operator CLI
//! reaches it with `--ca ca.pem` and is refused without it; plain http on the https port fails.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn console() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_p6os-console"));
    for v in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        c.env_remove(v);
    }
    c
}

#[test]
fn https_with_the_ca_made_by_init() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = console()
        .args(["init", "--dir"])
        .arg(d)
        .args(["--tls-name", "127.0.0.1", "--tls-name", "localhost"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    for f in [
        "admin.token",
        "pairing.token",
        "ca.pem",
        "tls.crt",
        "tls.key",
    ] {
        assert!(
            listed.contains(&format!("created {}", d.join(f).display())),
            "{listed}"
        );
    }
    let mut child = console()
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--db")
        .arg(d.join("c.db"))
        .arg("--bundles")
        .arg(d.join("b"))
        .arg("--admin-token-file")
        .arg(d.join("admin.token"))
        .arg("--pairing-token-file")
        .arg(d.join("pairing.token"))
        .arg("--tls-cert")
        .arg(d.join("tls.crt"))
        .arg("--tls-key")
        .arg(d.join("tls.key"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let served = Served(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("p6os-console: listening on ") {
                let _ = tx.send(a.to_string());
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let operator = |extra: &[&str], url: &str| {
        let out = console()
            .args(["--url", url])
            .arg("--admin-token-file")
            .arg(d.join("admin.token"))
            .args(extra)
            .args(["appliances", "list", "--json"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let ca = d.join("ca.pem");
    let (code, text) = operator(&["--ca", ca.to_str().unwrap()], &url);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(text.trim(), "[]");
    // Mozilla's roots do not know this CA.
    let (code, text) = operator(&[], &url);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    // Plain http to the https port gets no answer it could take for the API's.
    let (code, _) = operator(&[], &url.replace("https://", "http://"));
    assert_eq!(code, Some(1));
    drop(served);
}
