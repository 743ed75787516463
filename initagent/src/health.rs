//! Health checks of a trial boot: the built-in ones (state partition mounted, configuration
//! not refused) and the recipe's (`/usr/lib/p6os/health.json`: command, http, systemd-unit),
//! each retried until it passes or the shared deadline passes.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use p6os_config::health::{Check, Health, HEALTH_PATH};

use crate::firstboot::CONFIG_STATUS;
use crate::mountinfo;
use crate::plan::STATE_DIR;

const RETRY_PAUSE: Duration = Duration::from_millis(1000);

/// The recipe's checks; none (with the default timeout) when the slot has no file.
pub fn load() -> Result<Health, String> {
    match fs::read(HEALTH_PATH) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{HEALTH_PATH}: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Health::default()),
        Err(e) => Err(format!("cannot read {HEALTH_PATH}: {e}")),
    }
}

/// Runs every check until all pass (Ok) or one has not passed by the deadline (Err: which
/// and why).
pub fn run(health: &Health) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(u64::from(health.timeout_secs));
    builtin()?;
    for check in &health.checks {
        let what = check.describe();
        loop {
            match run_one(check, deadline) {
                Ok(()) => {
                    info!("health check passed: {what}");
                    break;
                }
                Err(why) if Instant::now() >= deadline => {
                    return Err(format!("health check `{what}` failed: {why}"))
                }
                Err(_) => thread::sleep(RETRY_PAUSE),
            }
        }
    }
    Ok(())
}

fn builtin() -> Result<(), String> {
    let mounted = fs::read_to_string("/proc/self/mountinfo")
        .map(|t| mountinfo::mount_points(&t).iter().any(|m| m == STATE_DIR))
        .unwrap_or(false);
    if !mounted {
        return Err(format!("built-in check failed: {STATE_DIR} is not mounted"));
    }
    match fs::read_to_string(CONFIG_STATUS) {
        Ok(s) if s.trim() == "invalid" || s.trim() == "failed" => Err(format!(
            "built-in check failed: the configuration was {} at this boot",
            s.trim()
        )),
        _ => {
            info!("health check passed: built-in (agent ready, state mounted, configuration)");
            Ok(())
        }
    }
}

fn run_one(check: &Check, deadline: Instant) -> Result<(), String> {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    match check {
        Check::Command { command } => run_command(command, left),
        Check::Http { url } => http_get(url, left.min(Duration::from_secs(10))),
        Check::SystemdUnit { unit } => run_command(
            &[
                "/usr/bin/systemctl".to_string(),
                "is-active".into(),
                "--quiet".into(),
                unit.clone(),
            ],
            left,
        ),
    }
}

fn run_command(argv: &[String], limit: Duration) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let until = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("{program} exited with {status}")),
            Ok(None) if Instant::now() >= until => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} did not finish in {} s", limit.as_secs()));
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    }
}

/// GET on a plain http URL; passes on a 2xx status.
fn http_get(url: &str, limit: Duration) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or("not an http:// URL")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let target = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&target, limit).map_err(|e| format!("{addr}: {e}"))?;
    let _ = stream.set_read_timeout(Some(limit));
    let _ = stream.set_write_timeout(Some(limit));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: p6os-agent\r\n\r\n"
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| format!("{addr}: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line.split(' ').nth(1).unwrap_or("");
    if status.starts_with('2') && status.len() == 3 {
        Ok(())
    } else {
        Err(format!(
            "HTTP status {}",
            if status.is_empty() { "missing" } else { status }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(response: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                // Read the whole request first: closing with unread bytes resets the
                // connection, and the client could lose the response.
                let mut request = Vec::new();
                let mut buf = [0u8; 512];
                while !request.ends_with(b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(response.as_bytes());
            }
        });
        format!("http://127.0.0.1:{port}/readyz")
    }

    #[test]
    fn http_checks_pass_on_2xx_only() {
        let ok = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(http_get(&ok, Duration::from_secs(5)), Ok(()));
        let bad = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n");
        assert_eq!(
            http_get(&bad, Duration::from_secs(5)),
            Err("HTTP status 503".into())
        );
    }

    #[test]
    fn commands_pass_on_exit_zero_and_time_out() {
        assert_eq!(
            run_command(&["/bin/true".into()], Duration::from_secs(5)),
            Ok(())
        );
        assert!(run_command(&["/bin/false".into()], Duration::from_secs(5))
            .unwrap_err()
            .contains("exited"));
        assert!(run_command(
            &["/bin/sleep".into(), "5".into()],
            Duration::from_millis(200)
        )
        .unwrap_err()
        .contains("did not finish"));
        assert!(
            run_command(&["/nonexistent".into()], Duration::from_secs(1))
                .unwrap_err()
                .contains("cannot start")
        );
    }
}
