//! `cargo xtask bench console [--backend sqlite|postgres]... [--appliances N] [--clients C]`:
//! the console under a fleet's load, over loopback, on each storage backend in turn (default:
//! both, side by side). The release `p6os-console` serves a fresh database (a SQLite file, or a
//! database on a throwaway PostgreSQL server from Debian's postgresql-15 with
//! `synchronous_commit=off`, as durable as SQLite's `synchronous=NORMAL`); the operator
//! registers N appliances (default 10,000), then N devices pair and send two rounds of
//! heartbeats from C client threads (default 32); then a staged rollout of 2.0.0 to all of them
//! (waves 1, 10%, 100%) while the devices keep reporting (a device handed the version reports
//! downloading, then runs it blessed), until it completes. Prints, per phase, the throughput and
//! the p50/p99 latency of the requests (heartbeats without and during the rollout side by side),
//! and the console's peak resident memory (`VmHWM`).
//!
//! Clients keep their connections alive (one per thread), so this measures the console rather
//! than TCP handshakes; real devices open a connection per request every heartbeat interval,
//! which at 10,000 devices and 60 s is ~170 requests per second.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use p6os_protocol::identity::DeviceSecret;
use sha2::Digest as _;
use xshell::{cmd, Shell};

const PAIRING_TOKEN: &str = "bench-pairing-token";
const ADMIN_TOKEN: &str = "bench-admin-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

struct Options {
    appliances: usize,
    clients: usize,
    backends: Vec<Backend>,
    /// `--no-rollout`: pair and heartbeats only (the 100,000-device runs).
    rollout: bool,
}

fn options(args: &[&str]) -> Result<Options> {
    let mut o = Options {
        appliances: 10_000,
        clients: 32,
        backends: Vec::new(),
        rollout: true,
    };
    let args: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| {
            let flag = *a == "--no-rollout";
            if flag {
                o.rollout = false;
            }
            !flag
        })
        .collect();
    for pair in args.chunks(2) {
        let value = || -> Result<usize> {
            let v = pair
                .get(1)
                .with_context(|| format!("{} needs a number", pair[0]))?;
            v.parse().with_context(|| format!("{} {v:?}", pair[0]))
        };
        match pair[0] {
            "--appliances" => o.appliances = value()?,
            "--clients" => o.clients = value()?,
            "--backend" => o.backends.push(match pair.get(1).copied() {
                Some("sqlite") => Backend::Sqlite,
                Some("postgres") => Backend::Postgres,
                other => bail!("--backend {other:?}: expected sqlite or postgres"),
            }),
            a => bail!(
                "unknown argument {a:?}: expected --backend sqlite|postgres, --appliances N, \
                 --clients C, --no-rollout"
            ),
        }
    }
    if o.backends.is_empty() {
        o.backends = vec![Backend::Sqlite, Backend::Postgres];
    }
    ensure!(
        o.appliances > 0 && o.clients > 0,
        "N and C must be positive"
    );
    Ok(o)
}

/// The console process, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `VmHWM` of the process, in KiB.
    fn peak_kib(&self) -> Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmHWM in /proc/PID/status")
    }
}

fn start(dir: &std::path::Path, db: &str) -> Result<Server> {
    fs::write(dir.join("admin.token"), ADMIN_TOKEN)?;
    fs::write(dir.join("pairing.token"), PAIRING_TOKEN)?;
    fs::write(
        dir.join("release.pub"),
        p6os_bundle::testing::trusted_key().public().to_file(),
    )?;
    let mut child = Command::new("target/release/p6os-console")
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--db")
        .arg(db)
        .arg("--bundles")
        .arg(dir.join("bundles"))
        .arg("--admin-token-file")
        .arg(dir.join("admin.token"))
        .arg("--pairing-token-file")
        .arg(dir.join("pairing.token"))
        .arg("--trusted-key")
        .arg(dir.join("release.pub"))
        // Every simulated device comes from 127.0.0.1.
        .args(["--pairing-rate", "1000000"])
        // Each phase (and each rollout round) opens its client threads' connections anew,
        // before the server has seen all the previous ones close.
        .args(["--max-connections-per-address", "256"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting target/release/p6os-console")?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().context("no stdout")?;
    thread::spawn(move || {
        // Keep the address line; drain the rest.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("p6os-console: listening on ") {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .context("the console did not print its address")?;
    Ok(Server { child, url })
}

fn facts(i: usize) -> serde_json::Value {
    serde_json::json!({
        "hostname": format!("nuc-{i}"),
        "labels": {"site": format!("store-{}", i % 100)},
        "cpu_model": "Intel(R) Core(TM) i5-1135G7",
        "cpu_count": 8,
        "memory_bytes": 17_179_869_184u64,
        "disks": [{"name": "nvme0n1", "size_bytes": 512_110_190_592u64, "model": "Samsung SSD 980"}],
        "nics": [{"name": "enp2s0", "mac": format!("52:54:00:{:02x}:{:02x}:{:02x}", i >> 16 & 255, i >> 8 & 255, i & 255), "addresses": [format!("10.{}.{}.2/24", i >> 8 & 255, i & 255)]}],
        "arch": "x86_64",
        "base_os": "Debian GNU/Linux 12 (bookworm)",
        "kernel": "6.1.0-27-cloud-amd64",
        "image_name": "edge",
        "image_version": "1.0.0",
        "agent_version": "0.1.0",
        "slot": "a",
    })
}

fn heartbeat() -> serde_json::Value {
    serde_json::json!({"slot": "a", "version": "1.0.0", "health": "good"})
}

/// Latencies (µs) of one phase, and its wall time.
struct Phase {
    name: &'static str,
    latencies: Vec<u64>,
    wall: Duration,
}

impl Phase {
    /// Requests per second, p50 and p99 in ms.
    fn figures(&mut self) -> (f64, f64, f64) {
        self.latencies.sort_unstable();
        let n = self.latencies.len();
        let at = |q: f64| self.latencies[((n as f64 * q) as usize).min(n - 1)] as f64 / 1000.0;
        (n as f64 / self.wall.as_secs_f64(), at(0.50), at(0.99))
    }
}

/// Runs `request(agent, i)` for i in 0..n from `clients` threads; every request must succeed.
fn phase(
    name: &'static str,
    n: usize,
    clients: usize,
    request: impl Fn(&ureq::Agent, usize) -> Result<()> + Send + Sync + 'static,
) -> Result<Phase> {
    let next = Arc::new(AtomicUsize::new(0));
    let request = Arc::new(request);
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..clients {
        let (next, request) = (next.clone(), request.clone());
        handles.push(thread::spawn(move || -> Result<Vec<u64>> {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok(latencies);
                }
                let t = Instant::now();
                request(&agent, i)?;
                latencies.push(t.elapsed().as_micros() as u64);
            }
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    for h in handles {
        latencies.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("a client panicked"))??,
        );
    }
    Ok(Phase {
        name,
        latencies,
        wall: started.elapsed(),
    })
}

fn expect(status: u16, want: u16, what: &str, body: &str) -> Result<()> {
    ensure!(status == want, "{what}: {status} (wanted {want}): {body}");
    Ok(())
}

pub fn run(args: &[&str]) -> Result<()> {
    let o = options(args)?;
    let sh = Shell::new()?;
    eprintln!("bench: building the release p6os-console");
    cmd!(
        sh,
        "cargo build --release -p p6os-console --bin p6os-console"
    )
    .run()?;
    let mut runs = Vec::new();
    for &backend in &o.backends {
        runs.push(run_on(backend, &o)?);
    }
    println!(
        "console bench: {} appliances, {} client threads, loopback",
        o.appliances, o.clients
    );
    let mut header = format!("{:<12}", "phase");
    for r in &runs {
        let _ = write!(
            header,
            " | {:<8} {:>8} {:>9} {:>9}",
            r.backend.name(),
            "req/s",
            "p50 ms",
            "p99 ms"
        );
    }
    println!("{header}");
    for k in 0..runs[0].phases.len() {
        let mut line = format!("{:<12}", runs[0].phases[k].name);
        for r in &mut runs {
            let p = &mut r.phases[k];
            let (rate, p50, p99) = p.figures();
            let _ = write!(line, " | {:<8} {:>8.0} {:>9.2} {:>9.2}", "", rate, p50, p99);
        }
        println!("{line}");
    }
    for r in &runs {
        println!(
            "{:<8}: console peak memory (VmHWM) {:.1} MiB; database {}",
            r.backend.name(),
            r.console_peak_kib as f64 / 1024.0,
            r.database
        );
    }
    Ok(())
}

/// One backend's figures.
struct Run {
    backend: Backend,
    phases: Vec<Phase>,
    console_peak_kib: u64,
    /// How big the database got (file, or the server's memory and size).
    database: String,
}

/// The summed proportional set size (`Pss`, KiB) of the processes whose command line
/// mentions `needle` (the PostgreSQL server's processes: their shared memory counted once).
fn pss_kib(needle: &str) -> u64 {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for e in entries.flatten() {
        let pid = e.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmd).contains(needle) {
            continue;
        }
        let rollup = fs::read_to_string(e.path().join("smaps_rollup")).unwrap_or_default();
        total += rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

fn run_on(backend: Backend, o: &Options) -> Result<Run> {
    let work = tempfile::Builder::new()
        .prefix("p6os-bench-console-")
        .tempdir_in("target")?;
    let cluster = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(
            p6os_console::testing::pg::Cluster::start_with(
                p6os_console::testing::pg::Durability::LikeSqliteNormal,
            )
            .context("the PostgreSQL server for the bench")?,
        ),
    };
    let db = match &cluster {
        None => work.path().join("console.db").display().to_string(),
        Some(c) => c.create_database().context("the bench database")?,
    };
    // The server's memory, sampled while the bench runs; its peak.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let db_peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = cluster.as_ref().map(|c| {
        let needle = c.socket_dir().display().to_string();
        let (sampling, peak) = (sampling.clone(), db_peak.clone());
        thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(pss_kib(&needle), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(500));
            }
        })
    });
    eprintln!("bench: {} on {}", backend.name(), db_display(&db));
    let server = start(work.path(), &db)?;
    let base = Arc::new(server.url.clone());
    let url = base.clone();
    let register = phase("register", o.appliances, o.clients, move |agent, i| {
        let mut r = agent
            .post(&format!("{url}/api/v1/appliances"))
            .header("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
            .send_json(serde_json::json!({"id": format!("nuc-{i}"), "pairing": "first-key", "labels": {"site": format!("store-{}", i % 100)}}))?;
        let status = r.status().as_u16();
        expect(status, 201, "register", &r.body_mut().read_to_string()?)
    })?;
    let tokens: Arc<Vec<std::sync::OnceLock<String>>> = Arc::new(
        (0..o.appliances)
            .map(|_| std::sync::OnceLock::new())
            .collect(),
    );
    let (url, store) = (base.clone(), tokens.clone());
    // Each pairing is two requests: the device key gets a challenge, the signed challenge pairs.
    let pair = phase("pair", o.appliances, o.clients, move |agent, i| {
        let key = DeviceSecret::from_seed(sha2::Sha256::digest(i.to_le_bytes()).into());
        let path = format!("{url}/api/v1/appliances/nuc-{i}/pair");
        let mut req = serde_json::json!({
            "pairing_token": PAIRING_TOKEN, "facts": facts(i), "device_key": key.public().encode()
        });
        let mut r = agent.post(&path).send_json(&req)?;
        let body = r.body_mut().read_to_string()?;
        expect(r.status().as_u16(), 200, "pair (challenge)", &body)?;
        let v: serde_json::Value = serde_json::from_str(&body)?;
        let challenge = v["challenge"].as_str().context("no challenge")?;
        req["proof"] = serde_json::json!({
            "challenge": challenge,
            "signature": key.sign_pair(&format!("nuc-{i}"), challenge),
        });
        let mut r = agent.post(&path).send_json(&req)?;
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string()?;
        expect(status, 200, "pair", &body)?;
        let v: serde_json::Value = serde_json::from_str(&body)?;
        let token = v["device_token"].as_str().context("no device_token")?;
        let _ = store[i].set(token.to_string());
        Ok(())
    })?;
    let (url, store) = (base.clone(), tokens.clone());
    let beat = phase("heartbeat", 2 * o.appliances, o.clients, move |agent, k| {
        let i = k % store.len();
        let token = store[i].get().context("not paired")?;
        let mut r = agent
            .post(&format!("{url}/api/v1/appliances/nuc-{i}/heartbeat"))
            .header("Authorization", &format!("Bearer {token}"))
            .send_json(heartbeat())?;
        let status = r.status().as_u16();
        expect(status, 200, "heartbeat", &r.body_mut().read_to_string()?)
    })?;
    let mut phases = vec![register, pair, beat];
    if o.rollout {
        phases.push(rollout(&base, o.clients, &tokens)?);
    }
    let console_peak_kib = server.peak_kib()?;
    sampling.store(false, Ordering::Relaxed);
    if let Some(s) = sampler {
        let _ = s.join();
    }
    let database = match backend {
        Backend::Sqlite => format!(
            "in the console's process; file {:.1} MiB",
            fs::metadata(work.path().join("console.db"))?.len() as f64 / (1 << 20) as f64
        ),
        Backend::Postgres => format!(
            "server peak memory (summed Pss) {:.1} MiB; data directory {:.1} MiB",
            db_peak.load(Ordering::Relaxed) as f64 / 1024.0,
            dir_size(cluster.as_ref().map(|c| c.socket_dir().join("data"))) as f64
                / (1 << 20) as f64
        ),
    };
    drop(server);
    Ok(Run {
        backend,
        phases,
        console_peak_kib,
        database,
    })
}

fn db_display(db: &str) -> String {
    if db.starts_with("postgres") {
        "a throwaway PostgreSQL server".into()
    } else {
        db.to_string()
    }
}

/// Bytes of the files below `dir`.
fn dir_size(dir: Option<std::path::PathBuf>) -> u64 {
    let Some(dir) = dir else { return 0 };
    let mut total = 0;
    let mut todo = vec![dir];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => todo.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Uploads a bundle of edge 2.0.0, creates a rollout to every appliance (1, 10%, 100%) and
/// sends heartbeats round after round until it completes (at most 12 rounds): a device handed
/// the version reports downloading at its next heartbeat, then 2.0.0 blessed.
fn rollout(
    base: &Arc<String>,
    clients: usize,
    tokens: &Arc<Vec<std::sync::OnceLock<String>>>,
) -> Result<Phase> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let bundle = p6os_bundle::testing::TestBundle::new("edge", "2.0.0")
        .seed(1)
        .sign(&p6os_bundle::testing::trusted_key());
    let mut r = agent
        .post(&format!("{base}/api/v1/bundles"))
        .header("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .header("Content-Type", "application/octet-stream")
        .send(&bundle[..])?;
    let status = r.status().as_u16();
    expect(
        status,
        201,
        "bundle upload",
        &r.body_mut().read_to_string()?,
    )?;
    let mut r = agent
        .post(&format!("{base}/api/v1/rollouts"))
        .header("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .send_json(serde_json::json!({
            "version": "2.0.0", "failure_threshold": 100,
            "waves": [{"count": 1}, {"percent": 10}, {"percent": 100}]
        }))?;
    let status = r.status().as_u16();
    expect(status, 201, "rollout", &r.body_mut().read_to_string()?)?;
    let n = tokens.len();
    // 0: runs 1.0.0; 1: handed 2.0.0, downloading; 2: runs 2.0.0, blessed.
    let stage: Arc<Vec<std::sync::atomic::AtomicU8>> = Arc::new(
        (0..n)
            .map(|_| std::sync::atomic::AtomicU8::new(0))
            .collect(),
    );
    let mut all = Phase {
        name: "hb rollout",
        latencies: Vec::new(),
        wall: Duration::ZERO,
    };
    for round in 1..=12 {
        let (url, store, stage) = (base.clone(), tokens.clone(), stage.clone());
        let p = phase("hb rollout", n, clients, move |agent, i| {
            let token = store[i].get().context("not paired")?;
            let body = match stage[i].load(Ordering::Relaxed) {
                0 => heartbeat(),
                1 => serde_json::json!({"slot": "a", "version": "1.0.0", "health": "good",
                    "progress": {"version": "2.0.0", "phase": "downloading",
                                 "done_bytes": 1, "total_bytes": 2}}),
                _ => serde_json::json!({"slot": "b", "version": "2.0.0", "health": "good"}),
            };
            let mut r = agent
                .post(&format!("{url}/api/v1/appliances/nuc-{i}/heartbeat"))
                .header("Authorization", &format!("Bearer {token}"))
                .send_json(body)?;
            let status = r.status().as_u16();
            let text = r.body_mut().read_to_string()?;
            expect(status, 200, "heartbeat", &text)?;
            let answer: serde_json::Value = serde_json::from_str(&text)?;
            let handed = answer["desired_version"] == "2.0.0";
            let s = stage[i].load(Ordering::Relaxed);
            if handed && s < 2 {
                stage[i].store(s + 1, Ordering::Relaxed);
            }
            Ok(())
        })?;
        all.latencies.extend(p.latencies);
        all.wall += p.wall;
        let mut r = agent
            .get(&format!("{base}/api/v1/rollouts/1"))
            .header("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
            .call()?;
        let v: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string()?)?;
        let state = v["state"].as_str().unwrap_or("?").to_string();
        eprintln!(
            "bench: rollout round {round}: {state}, wave {}, {} of {n} blessed",
            v["wave"].as_u64().unwrap_or(0) + 1,
            v["totals"]["blessed"]
        );
        if state != "running" {
            ensure!(state == "completed", "the rollout stopped: {v}");
            return Ok(all);
        }
    }
    bail!("the rollout did not complete in 12 rounds")
}
