//! Issue 15, finding 6: a flood of 100,000 pairing requests for random ids (the pairing token
//! is public) from 250 loopback source addresses, while a paired device keeps reporting. The
//! console keeps answering its heartbeats, stores at most `max_pending` pending ids (the rest
//! get the same 202 as any pending id, without being stored), and refuses sources over their
//! rate (429).
//!
//! Before the fix every random id was stored as pending (3,000 in about 1.5 s in the
//! black-box report) and nothing was refused. Latency figures are printed, and only bounded
//! loosely (this machine is shared): the point is that heartbeats are answered, all of them.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use p6os_protocol::identity::DeviceSecret;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const REQUESTS: usize = 100_000;
const SOURCES: u8 = 250;
const CONNECTIONS: usize = 64;
const MAX_PENDING: usize = 1000;

/// One HTTP/1.1 exchange on a kept-alive connection: the status and the body.
async fn exchange(
    stream: &mut BufReader<tokio::net::TcpStream>,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    // One write: a head and a body in two small writes would wait for a delayed ACK.
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: console\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream.get_mut().write_all(&request).await?;
    let mut status_line = String::new();
    stream.read_line(&mut status_line).await?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut answer = vec![0; length];
    stream.read_exact(&mut answer).await?;
    Ok((status, answer))
}

async fn connect(
    console: SocketAddr,
    source: u8,
) -> std::io::Result<BufReader<tokio::net::TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, source)),
        0,
    ))?;
    let stream = socket.connect(console).await?;
    stream.set_nodelay(true)?;
    Ok(BufReader::new(stream))
}

/// Sends pairing attempts (challenge, then the signed proof) for random ids until `sent`
/// reaches [`REQUESTS`]; counts the answers by status.
async fn flood(
    console: SocketAddr,
    pairing: String,
    worker: usize,
    sent: Arc<AtomicUsize>,
    statuses: Arc<Mutex<BTreeMap<u16, usize>>>,
) {
    let keys: Vec<DeviceSecret> = (0..16)
        .map(|k| {
            DeviceSecret::from_seed([
                worker as u8,
                k,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
            ])
        })
        .collect();
    let mut source = 2 + (worker % SOURCES as usize) as u8;
    let mut stream = None;
    let mut n = 0usize;
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    while sent.load(Ordering::Relaxed) < REQUESTS {
        // Move to another source address now and then: all 250 take part.
        if n % 200 == 199 {
            stream = None;
        }
        if stream.is_none() {
            source = 2 + ((usize::from(source) - 2 + CONNECTIONS) % SOURCES as usize) as u8;
            stream = connect(console, source).await.ok();
            if stream.is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        }
        let s = stream.as_mut().expect("connected");
        n += 1;
        let id = format!("flood-{worker}-{n}-{:x}", n.wrapping_mul(0x9e37_79b9));
        let key = &keys[n % keys.len()];
        let mut req = serde_json::json!({
            "pairing_token": pairing,
            "facts": facts("flood"),
            "device_key": key.public().encode(),
        });
        let path = format!("{API}/appliances/{id}/pair");
        sent.fetch_add(1, Ordering::Relaxed);
        let Ok((status, body)) = exchange(s, &path, &serde_json::to_vec(&req).unwrap()).await
        else {
            stream = None;
            continue;
        };
        *counts.entry(status).or_default() += 1;
        if status != 200 {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let challenge = v["challenge"].as_str().unwrap().to_string();
        req["proof"] = serde_json::json!({
            "signature": key.sign_pair(&id, &challenge),
            "challenge": challenge,
        });
        sent.fetch_add(1, Ordering::Relaxed);
        match exchange(s, &path, &serde_json::to_vec(&req).unwrap()).await {
            Ok((status, _)) => *counts.entry(status + 1000).or_default() += 1,
            Err(_) => stream = None,
        }
    }
    let mut all = statuses.lock().unwrap();
    for (k, v) in counts {
        *all.entry(k).or_default() += v;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn a_pairing_flood_neither_fills_the_database_nor_stops_heartbeats() {
    // Two pairing requests a second per source (the default is 10): 250 sources may then send
    // 500 a second after their bursts, well below any flood this machine makes. At the default
    // they may send 2,500 a second, and a flood slowed to that rate (a loaded machine, a slow
    // database: 2,510/s was seen once) was hardly refused, which says nothing about the limit.
    let s = Server::start_with("warn", |c| {
        c.max_pending = MAX_PENDING;
        c.pairing_rate = 2;
    });
    let token = s.paired("real-device", &[]);
    let beat_once = || {
        let t = Instant::now();
        let r = s.heartbeat("real-device", &token, &beat("1.0.0"));
        (r.status, t.elapsed())
    };
    let mut before: Vec<Duration> = (0..30).map(|_| beat_once().1).collect();
    before.sort();

    let sent = Arc::new(AtomicUsize::new(0));
    let statuses = Arc::new(Mutex::new(BTreeMap::new()));
    let done = Arc::new(AtomicBool::new(false));
    let console = s.console.addr;
    let flood_thread = {
        let (sent, statuses, done, pairing) = (
            sent.clone(),
            statuses.clone(),
            done.clone(),
            s.pairing.clone(),
        );
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let start = Instant::now();
            rt.block_on(async {
                let tasks: Vec<_> = (0..CONNECTIONS)
                    .map(|w| {
                        tokio::spawn(flood(
                            console,
                            pairing.clone(),
                            w,
                            sent.clone(),
                            statuses.clone(),
                        ))
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            });
            done.store(true, Ordering::SeqCst);
            start.elapsed()
        })
    };
    let mut during = Vec::new();
    let mut failed = Vec::new();
    while !done.load(Ordering::SeqCst) {
        let (status, took) = beat_once();
        if status != 200 {
            failed.push(status);
        }
        during.push(took);
        std::thread::sleep(Duration::from_millis(50));
    }
    let flood_time = flood_thread.join().unwrap();
    during.sort();
    let statuses = statuses.lock().unwrap().clone();
    let pending: i64 = p6os_console::testing::pg::probe(&s.db)
        .auto(|c| {
            c.query_one(
                "SELECT CAST(count(*) AS BIGINT) FROM appliances WHERE status = 'pending'",
                &[],
            )?
            .get(0)
        })
        .unwrap();
    println!(
        "flood: {} requests in {:.1} s ({:.0}/s) from {SOURCES} sources; answers (first round; \
         1000+ = the proof round): {statuses:?}; pending stored: {pending}",
        sent.load(Ordering::Relaxed),
        flood_time.as_secs_f64(),
        sent.load(Ordering::Relaxed) as f64 / flood_time.as_secs_f64(),
    );
    println!(
        "heartbeat latency: before p50 {:?} p99 {:?}; during the flood ({} beats) p50 {:?} \
         p99 {:?} max {:?}",
        percentile(&before, 0.5),
        percentile(&before, 0.99),
        during.len(),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
        during.last().unwrap(),
    );
    assert!(
        failed.is_empty(),
        "heartbeats failed during the flood: {failed:?}"
    );
    assert!(
        during.len() >= 10,
        "the flood was too short to say anything"
    );
    assert!(
        pending as usize <= MAX_PENDING,
        "{pending} pending ids stored"
    );
    assert!(
        statuses.get(&429).copied().unwrap_or(0) + statuses.get(&1429).copied().unwrap_or(0)
            > REQUESTS / 10,
        "the flood was hardly refused: {statuses:?}"
    );
    // Loose on purpose (a shared 2-core machine): a stalled console would take seconds.
    assert!(
        percentile(&during, 0.99) < Duration::from_secs(2),
        "heartbeats stalled during the flood"
    );
}
