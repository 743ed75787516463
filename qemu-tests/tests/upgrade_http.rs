//! An upgrade downloaded over plain HTTP from a server on the host's loopback (reached from the
//! guest as 10.0.2.2 through QEMU's user network; the guest has no default route), with the
//! connection dropped mid-way: the agent resumes with a range request and the new slot boots.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use p6os_qemu_tests::fixture::Fixture;
use p6os_qemu_tests::vm::{Network, VmConfig};

const BOOT: Duration = Duration::from_secs(240);
const CMD: Duration = Duration::from_secs(300);
/// The first response is cut after this many bytes of body.
const DROP_AFTER: usize = 8 << 20;

/// Serves `body` on 127.0.0.1 with ETag and Range support; the first connection is dropped
/// after DROP_AFTER bytes. Returns the port and the number of requests seen.
fn serve(body: Vec<u8>) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    let body = Arc::new(body);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut start = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        start = v.trim().trim_end_matches('-').parse().unwrap_or(0);
                    }
                }
                let mut out = stream;
                let total = body.len();
                let head = if start > 0 {
                    format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{total}\r\nETag: \"b1\"\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                        total - start,
                        total - 1
                    )
                } else {
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\nETag: \"b1\"\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n")
                };
                let _ = out.write_all(head.as_bytes());
                let end = if n == 0 {
                    (start + DROP_AFTER).min(total)
                } else {
                    total
                };
                let _ = out.write_all(&body[start..end]);
                // Dropping `out` closes the connection (early for the first request).
            });
        }
    });
    (port, requests)
}

#[test]
fn upgrade_over_http_resumes_after_a_dropped_connection() {
    let f = Fixture::new().unwrap();
    let image = f.image(&f.recipe("1.0.0", "", None).unwrap()).unwrap();
    let bundle = f
        .bundle_disk(&f.recipe("2.0.0", "", None).unwrap())
        .unwrap();
    let (port, requests) = serve(fs::read(&bundle).unwrap());
    f.inject(
        &image,
        "network:\n  interfaces:\n    - name: eth0\n      addresses: [10.0.2.15/24]\n",
    )
    .unwrap();
    let mut config = VmConfig::new(&image).unwrap();
    config.network = Network::UserHostLoopback;
    let mut vm = config.start("http").unwrap();
    vm.wait_for_line("network eth0: address 10.0.2.15/24", BOOT)
        .unwrap();
    vm.wait_for_line("p6os-agent: ready slot=a version=1.0.0", BOOT)
        .unwrap();
    vm.send_line(&format!(
        "/usr/lib/p6os/p6os-agent upgrade http://10.0.2.2:{port}/tiny-2.0.0.p6b"
    ))
    .unwrap();
    let downloaded = vm.wait_for_line("upgrade: downloaded", CMD).unwrap();
    assert!(downloaded.contains("(1 reconnections)"), "{downloaded}");
    vm.wait_for_line("upgrade: installed 2.0.0 into slot b", CMD)
        .unwrap();
    vm.wait_for_line("p6os-agent: ready slot=b version=2.0.0", BOOT)
        .unwrap();
    vm.wait_for_line("slot b is blessed", CMD).unwrap();
    assert_eq!(requests.load(Ordering::SeqCst), 2, "one drop, one resume");
}
