//! The QEMU tier of `cargo xtask test`: every scenario (one `#[test]` of `qemu-tests/tests/`)
//! as its own process, two at a time (each VM is one TCG thread; this machine has two cores),
//! the longest first. Each scenario's output goes to `target/qemu-logs/<file>-<test>.log` and
//! is printed when it fails.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// VMs at a time.
pub const PARALLEL: usize = 2;
/// A scenario still running after this long is killed and counts as failed.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const LOGS: &str = "target/qemu-logs";
/// Scenarios known to take longest (minutes under TCG) start first, so the two workers end
/// together; the rest follow in file order.
const LONGEST_FIRST: &[&str] = &[
    "power_cut",
    "default_image",
    "fleet_rollout",
    "console_default",
    "disk_growth",
    "default_buses",
    "upgrade",
    "console",
];

/// One test function in one test binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// The test file's name (`upgrade`).
    pub file: String,
    /// The test function (`upgrade_to_b_then_back_to_a_...`).
    pub test: String,
    pub exe: PathBuf,
}

/// How one scenario went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub scenario: Scenario,
    pub took: Duration,
    pub passed: bool,
    pub log: PathBuf,
}

/// Test executables from `cargo test --no-run --message-format=json` output: `(file, exe)`.
pub fn executables(json_lines: &str) -> Vec<(String, PathBuf)> {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["profile"]["test"] == true)
        .filter(|v| v["target"]["kind"][0] == "test")
        .filter_map(|v| {
            Some((
                v["target"]["name"].as_str()?.to_string(),
                PathBuf::from(v["executable"].as_str()?),
            ))
        })
        .collect()
}

/// Test names from libtest's `--list` output (`name: test` lines).
pub fn tests_in_list(list: &str) -> Vec<String> {
    list.lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect()
}

/// The order scenarios start in: [`LONGEST_FIRST`] files first, then the others by name.
pub fn order(mut scenarios: Vec<Scenario>) -> Vec<Scenario> {
    let rank = |s: &Scenario| {
        LONGEST_FIRST
            .iter()
            .position(|f| *f == s.file)
            .unwrap_or(LONGEST_FIRST.len())
    };
    scenarios.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then_with(|| a.file.cmp(&b.file))
            .then_with(|| a.test.cmp(&b.test))
    });
    scenarios
}

/// Builds the scenario binaries and lists their tests.
pub fn discover() -> Result<Vec<Scenario>> {
    let out = Command::new("cargo")
        .args([
            "test",
            "-p",
            "p6os-qemu-tests",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("building the QEMU scenarios")?;
    if !out.status.success() {
        bail!("building the QEMU scenarios failed");
    }
    let mut scenarios = Vec::new();
    for (file, exe) in executables(&String::from_utf8_lossy(&out.stdout)) {
        let list = Command::new(&exe)
            .args(["--list", "--format", "terse"])
            .output()
            .with_context(|| format!("listing {}", exe.display()))?;
        if !list.status.success() {
            bail!(
                "{} --list failed ({}): {}",
                exe.display(),
                list.status,
                String::from_utf8_lossy(&list.stderr)
            );
        }
        for test in tests_in_list(&String::from_utf8_lossy(&list.stdout)) {
            scenarios.push(Scenario {
                file: file.clone(),
                test,
                exe: exe.clone(),
            });
        }
    }
    if scenarios.is_empty() {
        bail!("no QEMU scenarios found");
    }
    Ok(order(scenarios))
}

fn run_one(s: &Scenario, env: &[(&str, PathBuf)]) -> Result<Outcome> {
    std::fs::create_dir_all(LOGS)?;
    let log = Path::new(LOGS).join(format!("{}-{}.log", s.file, s.test));
    let file = std::fs::File::create(&log)?;
    let started = Instant::now();
    let mut cmd = Command::new(&s.exe);
    cmd.args([
        s.test.as_str(),
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    // Scenario files find their data relative to their crate, as under `cargo test`.
    .current_dir(crate::root().join("qemu-tests"))
    .stdout(file.try_clone()?)
    .stderr(file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {}", s.exe.display()))?;
    // Each VM has its own hard timeout; this bounds what runs around them (builds, servers).
    let passed = loop {
        if let Some(status) = child.try_wait()? {
            break status.success();
        }
        if started.elapsed() > SCENARIO_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let mut f = std::fs::OpenOptions::new().append(true).open(&log)?;
            use std::io::Write as _;
            writeln!(
                f,
                "xtask: killed after {} s (SCENARIO_TIMEOUT)",
                SCENARIO_TIMEOUT.as_secs()
            )?;
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    Ok(Outcome {
        scenario: s.clone(),
        took: started.elapsed(),
        passed,
        log,
    })
}

/// Runs every scenario, [`PARALLEL`] at a time; all of them run even when one fails.
pub fn run_all(scenarios: Vec<Scenario>, env: Vec<(&'static str, PathBuf)>) -> Vec<Outcome> {
    let total = scenarios.len();
    let queue = Arc::new(Mutex::new(VecDeque::from(scenarios)));
    let results = Arc::new(Mutex::new(Vec::new()));
    let env = Arc::new(env);
    let workers: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let (queue, results, env) = (queue.clone(), results.clone(), env.clone());
            std::thread::spawn(move || loop {
                let Some(s) = queue.lock().expect("queue").pop_front() else {
                    break;
                };
                eprintln!("xtask: qemu: start {}::{}", s.file, s.test);
                let outcome = run_one(&s, &env).unwrap_or_else(|e| {
                    eprintln!("xtask: qemu: {}::{}: {e:#}", s.file, s.test);
                    Outcome {
                        scenario: s.clone(),
                        took: Duration::ZERO,
                        passed: false,
                        log: PathBuf::new(),
                    }
                });
                let mut r = results.lock().expect("results");
                r.push(outcome.clone());
                eprintln!(
                    "xtask: qemu: {} {}::{} in {:.0} s ({}/{total})",
                    if outcome.passed { "passed" } else { "FAILED" },
                    s.file,
                    s.test,
                    outcome.took.as_secs_f64(),
                    r.len()
                );
                if !outcome.passed {
                    print_tail(&outcome.log);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let mut r = results.lock().expect("results").clone();
    r.sort_by_key(|o| std::cmp::Reverse(o.took));
    r
}

fn print_tail(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(80);
    eprintln!(
        "---- {} (last {} lines) ----",
        log.display(),
        lines.len() - from
    );
    for l in &lines[from..] {
        eprintln!("{l}");
    }
    eprintln!("----");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_test_executables_and_tests() {
        let json = r#"{"reason":"compiler-artifact","profile":{"test":true},"target":{"kind":["test"],"name":"boot"},"executable":"/t/boot-1"}
{"reason":"compiler-artifact","profile":{"test":false},"target":{"kind":["lib"],"name":"p6os_qemu_tests"},"executable":null}
{"reason":"compiler-artifact","profile":{"test":true},"target":{"kind":["lib"],"name":"p6os_qemu_tests"},"executable":"/t/lib-2"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executables(json),
            vec![("boot".to_string(), PathBuf::from("/t/boot-1"))]
        );
        assert_eq!(
            tests_in_list("a_boots: test\nb: test\n\n2 tests, 0 benchmarks\n"),
            vec!["a_boots", "b"]
        );
    }

    #[test]
    fn longest_scenarios_start_first() {
        let s = |file: &str, test: &str| Scenario {
            file: file.into(),
            test: test.into(),
            exe: PathBuf::new(),
        };
        let ordered = order(vec![
            s("boot", "x"),
            s("upgrade", "b"),
            s("default_image", "d"),
            s("upgrade", "a"),
            s("flash", "f"),
        ]);
        let names: Vec<String> = ordered
            .iter()
            .map(|s| format!("{}::{}", s.file, s.test))
            .collect();
        assert_eq!(
            names,
            [
                "default_image::d",
                "upgrade::a",
                "upgrade::b",
                "boot::x",
                "flash::f"
            ]
        );
    }
}
