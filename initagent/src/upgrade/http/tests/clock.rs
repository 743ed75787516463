//! The clock probe against a loopback https server whose certificate is valid from 2040 to
//! 2050: by this machine's clock it is not valid yet, which is exactly the case of a device
//! whose clock reads 2001 talking to a console whose certificate is from this year.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, UNIX_EPOCH};

use rustls::{ServerConnection, StreamOwned};

use super::super::{call, server_time, CertificateDates, HttpError, RetryPolicy};
use crate::upgrade::tls::testpki::{self, Pki};

/// Serves `connections` requests over TLS, each answered 404 with `date` as its Date header
/// (none when empty).
fn serve(pki: &'static Pki, date: &'static str, connections: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(stream) = stream else { continue };
            let conn = ServerConnection::new(Arc::clone(&pki.server)).unwrap();
            let mut tls = StreamOwned::new(conn, stream);
            let mut reader = BufReader::new(&mut tls);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let date = match date {
                "" => String::new(),
                d => format!("Date: {d}\r\n"),
            };
            let _ = write!(
                tls,
                "HTTP/1.1 404 Not Found\r\n{date}Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = tls.flush();
        }
    });
    format!("https://127.0.0.1:{port}/")
}

fn future_pki() -> &'static Pki {
    Box::leak(Box::new(testpki::make_dated(
        "clock CA",
        &["127.0.0.1"],
        Some((2040, 2050)),
    )))
}

fn policy(pki: &Pki) -> (RetryPolicy, tempfile::NamedTempFile) {
    let mut ca = tempfile::NamedTempFile::new().unwrap();
    ca.write_all(pki.ca_pem.as_bytes()).unwrap();
    let policy = RetryPolicy {
        ca_files: vec![ca.path().to_path_buf()],
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        ..RetryPolicy::default()
    };
    (policy, ca)
}

#[test]
fn a_certificate_not_valid_yet_says_so_and_its_server_gives_the_time() {
    let pki = future_pki();
    let (policy, _ca) = policy(pki);
    let url = serve(pki, "Tue, 01 Jan 2041 00:00:00 GMT", 2);
    // The normal exchange refuses it, and says it is about the dates.
    let error = call("POST", &url, None, Some(b"{}"), policy.clone()).unwrap_err();
    assert!(
        matches!(
            error,
            HttpError::Certificate {
                dates: CertificateDates::NotValidYet,
                ..
            }
        ),
        "{error:?}"
    );
    // The probe authenticates the server at its certificate's start and takes its date.
    let told = server_time(&url, policy).unwrap();
    assert_eq!(
        told.duration_since(UNIX_EPOCH).unwrap().as_secs(),
        2_240_611_200 // 2041-01-01T00:00:00Z
    );
}

#[test]
fn a_date_outside_the_certificate_or_no_date_is_refused() {
    let pki = future_pki();
    let (policy, _ca) = policy(pki);
    let url = serve(pki, "Sat, 01 Jan 2061 00:00:00 GMT", 1);
    let error = server_time(&url, policy.clone()).unwrap_err();
    assert!(
        error.to_string().ends_with(
            "its certificate is not valid at the date it gives (Sat, 01 Jan 2061 00:00:00 GMT)"
        ),
        "{error}"
    );
    let url = serve(pki, "", 1);
    let error = server_time(&url, policy).unwrap_err();
    assert!(error.to_string().contains("no Date header"), "{error}");
}

#[test]
fn the_probe_still_refuses_an_untrusted_server_and_plain_http() {
    let pki = future_pki();
    let (other, _ca) = policy(testpki::shared());
    let url = serve(pki, "Tue, 01 Jan 2041 00:00:00 GMT", 1);
    let error = server_time(&url, other).unwrap_err();
    assert!(
        matches!(
            error,
            HttpError::Certificate {
                dates: CertificateDates::Fine,
                ..
            }
        ),
        "{error:?}"
    );
    let error = server_time("http://127.0.0.1:9/", RetryPolicy::default()).unwrap_err();
    assert!(
        error.to_string().contains("only from an https server"),
        "{error}"
    );
}
