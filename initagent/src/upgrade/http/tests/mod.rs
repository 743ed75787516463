//! The client against loopback servers: downloads with drops, stalls, servers without ranges,
//! files replaced mid-download, chunked bodies, redirects, TLS failures, bearer tokens; and
//! (in [`proxies`]) through a real proxy.

mod clock;
mod console_words;
mod proxies;
mod server;

use std::io::{self, Read};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::log::error_chain;
use crate::upgrade::tls::testpki;
use server::*;

fn drops() -> Vec<usize> {
    vec![100 * KIB, 1024 * KIB, 2560 * KIB]
}

#[test]
fn a_full_read_is_the_body() {
    for tls in schemes() {
        let server = serve(Behaviour {
            tls,
            ..Behaviour::default()
        });
        let url = format!("{}/bundle.p6b", server.base);
        let (data, source) = download(&url, server.quick(0));
        assert!(data.unwrap() == body(), "{url}");
        assert_eq!(source.resumes(), 0);
        let heads = server.heads.lock().unwrap();
        assert!(
            heads[0].starts_with("GET /bundle.p6b HTTP/1.1\r\n"),
            "{heads:?}"
        );
        let port = server.base.rsplit(':').next().unwrap();
        assert!(
            heads[0].contains(&format!("\r\nhost: 127.0.0.1:{port}\r\n")),
            "{heads:?}"
        );
        assert!(!heads[0].contains("range"), "{heads:?}");
        assert!(
            heads[0].contains("\r\naccept-encoding: identity\r\n"),
            "{heads:?}"
        );
        assert!(
            heads[0].contains("\r\nuser-agent: p6os-agent/"),
            "{heads:?}"
        );
        assert!(!heads[0].contains("authorization"), "{heads:?}");
        assert_eq!(source.file.len, Some(LEN as u64));
    }
}

#[test]
fn drops_are_resumed_with_range_and_if_range() {
    for tls in schemes() {
        let server = serve(Behaviour {
            drop_at: drops(),
            tls,
            ..Behaviour::default()
        });
        let url = format!("{}/bundle.p6b", server.base);
        let (data, source) = download(&url, server.quick(3));
        assert!(data.unwrap() == body(), "{url}");
        assert_eq!(source.resumes(), 3);
        assert_eq!(server.bodies.load(Ordering::SeqCst), 4);
        let heads = server.heads.lock().unwrap();
        for (head, offset) in heads[1..].iter().zip(drops()) {
            assert!(
                head.contains(&format!("range: bytes={offset}-\r\n")),
                "{head}"
            );
            assert!(head.contains("if-range: \"v1\"\r\n"), "{head}");
        }
    }
}

#[test]
fn a_stalled_connection_is_resumed_after_the_read_timeout() {
    for tls in schemes() {
        let server = serve(Behaviour {
            drop_at: vec![500 * KIB],
            stall: true,
            tls,
            ..Behaviour::default()
        });
        let policy = RetryPolicy {
            read_timeout: Duration::from_millis(300),
            ..server.quick(1)
        };
        let (data, source) = download(&format!("{}/bundle.p6b", server.base), policy);
        assert!(data.unwrap() == body());
        assert_eq!(source.resumes(), 1);
    }
}

#[test]
fn without_range_support_the_start_is_skipped() {
    for tls in schemes() {
        let server = serve(Behaviour {
            drop_at: drops(),
            no_ranges: true,
            tls,
            ..Behaviour::default()
        });
        let url = format!("{}/bundle.p6b", server.base);
        let (data, source) = download(&url, server.quick(3));
        assert!(data.unwrap() == body());
        assert_eq!(source.resumes(), 3);
    }
}

#[test]
fn a_file_replaced_on_the_server_is_not_spliced() {
    for tls in schemes() {
        for ignore_if_range in [false, true] {
            let server = serve(Behaviour {
                drop_at: vec![1024 * KIB],
                etag_changes: true,
                ignore_if_range,
                tls,
                ..Behaviour::default()
            });
            let url = format!("{}/bundle.p6b", server.base);
            let (data, mut source) = download(&url, server.quick(5));
            let error = data.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
            let message = error.to_string();
            assert!(
                message.contains("the file changed on the server while downloading")
                    && message.contains("etag went from \"v1\" to \"v2\""),
                "{message}"
            );
            let inner = error.get_ref().and_then(|e| e.downcast_ref::<HttpError>());
            assert!(
                matches!(inner, Some(HttpError::Changed { .. })),
                "{inner:?}"
            );
            assert_eq!(source.resumes(), 1);
            let again = source.read(&mut [0; 16]).unwrap_err().to_string();
            assert!(again.contains("the file changed"), "{again}");
        }
    }
}

#[test]
fn too_many_drops_give_up_saying_how_far_it_got() {
    for tls in schemes() {
        let server = serve(Behaviour {
            drop_at: vec![100 * KIB, 200 * KIB, 300 * KIB, 400 * KIB],
            tls,
            ..Behaviour::default()
        });
        let url = format!("{}/bundle.p6b", server.base);
        let (data, source) = download(&url, server.quick(2));
        let message = data.unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "{url}: download abandoned after 2 reconnections: received 307200 of \
                 3145728 bytes; last error: the connection closed at byte 307200 of 3145728"
            )
        );
        assert_eq!(source.resumes(), 2);
    }
}

#[test]
fn a_server_gone_for_good_gives_up_with_the_connect_error() {
    let server = serve(Behaviour {
        drop_at: vec![100 * KIB],
        connections: Some(1),
        ..Behaviour::default()
    });
    let (data, source) = download(&format!("{}/bundle.p6b", server.base), quick(3));
    let message = data.unwrap_err().to_string();
    assert!(
        message.contains("after 3 reconnections: received 102400 of 3145728 bytes; last error: "),
        "{message}"
    );
    assert_eq!(source.resumes(), 3);
}

#[test]
fn redirects_are_followed_up_to_five() {
    for tls in schemes() {
        let server = serve(Behaviour {
            tls,
            ..Behaviour::default()
        });
        let (data, _) = download(&format!("{}/redirect/5", server.base), server.quick(0));
        assert!(data.unwrap() == body());
        let url = format!("{}/redirect/6", server.base);
        let error = HttpSource::open(&url, server.quick(0)).unwrap_err();
        assert!(
            matches!(error, HttpError::TooManyRedirects { .. }),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .ends_with("/bundle.p6b: more than 5 redirects"),
            "{error}"
        );
    }
}

#[test]
fn resumption_starts_from_the_redirected_url() {
    for tls in schemes() {
        let server = serve(Behaviour {
            drop_at: vec![100 * KIB],
            tls,
            ..Behaviour::default()
        });
        let url = format!("{}/redirect/2", server.base);
        let (data, source) = download(&url, server.quick(1));
        assert!(data.unwrap() == body());
        assert_eq!(source.resumes(), 1);
        let heads = server.heads.lock().unwrap();
        assert_eq!(heads.len(), 4, "{heads:?}");
        assert!(heads[3].starts_with("GET /bundle.p6b "), "{heads:?}");
    }
}

#[test]
fn a_redirect_from_http_to_https_is_followed_and_resumed_over_tls() {
    let secure = serve(Behaviour {
        drop_at: vec![700 * KIB],
        tls: Some(testpki::shared()),
        ..Behaviour::default()
    });
    let plain = serve(Behaviour {
        moved_to: Some(format!("{}/bundle.p6b", secure.base)),
        ..Behaviour::default()
    });
    let (data, source) = download(&format!("{}/moved", plain.base), secure.quick(1));
    assert!(data.unwrap() == body());
    assert_eq!(source.resumes(), 1);
    assert_eq!(plain.heads.lock().unwrap().len(), 1);
    let heads = secure.heads.lock().unwrap();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(heads[1].contains("range: bytes=716800-\r\n"), "{heads:?}");
}

#[test]
fn a_redirect_from_https_to_http_is_refused() {
    let server = serve(Behaviour {
        tls: Some(testpki::shared()),
        ..Behaviour::default()
    });
    let url = format!("{}/downgrade", server.base);
    let error = HttpSource::open(&url, server.quick(0)).unwrap_err();
    assert!(matches!(error, HttpError::Downgrade { .. }), "{error:?}");
    let plain = server.base.replace("https://", "http://");
    assert_eq!(
        error.to_string(),
        format!(
            "{url}: redirected to {plain}/bundle.p6b: a redirect from https to plain http \
             is refused"
        )
    );
    // Only the https request was made.
    assert_eq!(server.heads.lock().unwrap().len(), 1);
    assert_eq!(server.bodies.load(Ordering::SeqCst), 0);
}

#[test]
fn a_certificate_from_an_untrusted_ca_is_refused_at_open() {
    let server = serve(Behaviour {
        tls: Some(testpki::shared()),
        ..Behaviour::default()
    });
    let url = format!("{}/bundle.p6b", server.base);
    // Without the CA file: Mozilla's roots and the system's bundle do not know this CA.
    let error = HttpSource::open(&url, quick(0)).unwrap_err();
    assert!(matches!(error, HttpError::Certificate { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "{url}: the server's certificate is refused: it is not issued by a trusted \
             certificate authority (trusted: Mozilla's roots, \
             /etc/ssl/certs/ca-certificates.crt and the CA files given)"
        )
    );
    // Another CA's file does not help either.
    let other = Box::leak(Box::new(testpki::make("another CA", &["127.0.0.1"])));
    let elsewhere = serve(Behaviour {
        tls: Some(other),
        ..Behaviour::default()
    });
    let policy = RetryPolicy {
        ca_files: elsewhere.quick(0).ca_files,
        ..quick(0)
    };
    let error = HttpSource::open(&url, policy).unwrap_err();
    assert!(error.to_string().contains("certificate"), "{error}");
    // No request went through.
    assert!(server.heads.lock().unwrap().is_empty());
    // With it, the same server is fine.
    let (data, _) = download(&url, server.quick(0));
    assert!(data.unwrap() == body());
}

#[test]
fn a_certificate_for_another_name_is_refused() {
    let pki = Box::leak(Box::new(testpki::make("names CA", &["localhost"])));
    let server = serve(Behaviour {
        tls: Some(pki),
        ..Behaviour::default()
    });
    let url = format!("{}/bundle.p6b", server.base);
    let error = HttpSource::open(&url, server.quick(0)).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{url}: the server's certificate is refused: certificate not valid for name \
             \"127.0.0.1\"; certificate is only valid for DnsName(\"localhost\")"
        )
    );
}

#[test]
fn a_plain_http_server_on_an_https_url_is_a_tls_error() {
    let server = serve(Behaviour::default());
    let url = format!("{}/bundle.p6b", server.base.replace("http://", "https://"));
    let error = HttpSource::open(&url, quick(0)).unwrap_err();
    assert!(matches!(error, HttpError::Tls { .. }), "{error:?}");
    let message = error_chain(&error);
    let addr = url.split('/').nth(2).unwrap();
    assert!(
        message.starts_with(&format!(
            "{url}: no TLS session with {addr}: the TLS handshake failed: "
        )),
        "{message}"
    );
}

#[test]
fn a_bad_ca_file_is_an_error_at_open() {
    let server = serve(Behaviour {
        tls: Some(testpki::shared()),
        ..Behaviour::default()
    });
    let url = format!("{}/bundle.p6b", server.base);
    let policy = RetryPolicy {
        ca_files: vec!["/nonexistent/ca.pem".into()],
        ..quick(0)
    };
    let error = HttpSource::open(&url, policy.clone()).unwrap_err();
    assert!(
        error_chain(&error).starts_with(&format!(
            "{url}: cannot load the trusted certificates: cannot read the CA file \
             /nonexistent/ca.pem: "
        )),
        "{}",
        error_chain(&error)
    );
    // Plain http does not need them.
    let plain = serve(Behaviour::default());
    let (data, _) = download(&format!("{}/bundle.p6b", plain.base), policy);
    assert!(data.unwrap() == body());
}

#[test]
fn bad_responses_are_clear_errors_at_open() {
    let server = serve(Behaviour::default());
    let error = HttpSource::open(&format!("{}/missing", server.base), quick(0)).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("{}/missing: the server answered 404 Not Found", server.base)
    );

    // A body that ends with the connection: its truncation could not be seen.
    let url = serve_once("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc");
    let error = HttpSource::open(&url, quick(0)).unwrap_err().to_string();
    assert_eq!(
        error,
        format!(
            "{url}: the response has neither a content-length nor chunked encoding: the end of \
             the file could not be told from a broken connection"
        )
    );

    let url = serve_once("SSH-2.0-OpenSSH_9.6\r\n\r\n");
    let error = HttpSource::open(&url, quick(0)).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("{url}: invalid http response: ")),
        "{error}"
    );

    let url = serve_once("HTTP/1.1 302 Found\r\nLocation: ftp://127.0.0.1/x\r\n\r\n");
    let error = HttpSource::open(&url, quick(0)).unwrap_err().to_string();
    assert_eq!(
        error,
        "invalid url \"ftp://127.0.0.1/x\": expected http(s)://host[:port]/path"
    );
}

#[test]
fn a_chunked_body_is_accepted_and_its_size_learnt_at_the_end() {
    for tls in schemes() {
        let server = serve(Behaviour {
            chunked: true,
            tls,
            ..Behaviour::default()
        });
        let url = format!("{}/bundle.p6b", server.base);
        let mut source = HttpSource::open(&url, server.quick(0)).unwrap();
        assert_eq!(source.file.len, None);
        let mut data = Vec::new();
        source.read_to_end(&mut data).unwrap();
        assert!(data == body(), "{url}");
        assert_eq!(source.file.len, Some(LEN as u64));
        assert_eq!(source.received(), LEN as u64);
        assert_eq!(source.read(&mut [0; 16]).unwrap(), 0);
    }
    // The smallest chunked answer, and its end mark split from the data.
    let url =
        serve_once("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    let (data, source) = download(&url, quick(0));
    assert_eq!(data.unwrap(), b"abc");
    assert_eq!(source.file.len, Some(3));
}

#[test]
fn a_broken_chunked_body_is_resumed_with_a_range() {
    for tls in schemes() {
        let server = serve(Behaviour {
            chunked: true,
            drop_at: vec![700 * KIB, 2000 * KIB],
            tls,
            ..Behaviour::default()
        });
        let url = format!("{}/bundle.p6b", server.base);
        let (data, source) = download(&url, server.quick(2));
        assert!(data.unwrap() == body(), "{url}");
        assert_eq!(source.resumes(), 2);
        // The first 206 told the size.
        assert_eq!(source.file.len, Some(LEN as u64));
        let heads = server.heads();
        assert!(heads[1].contains("range: bytes=716800-\r\n"), "{heads:?}");
        assert!(heads[1].contains("if-range: \"v1\"\r\n"), "{heads:?}");
        assert!(heads[2].contains("range: bytes=2048000-\r\n"), "{heads:?}");
    }
    // Without range support the chunked body comes again from the start and is skipped.
    let server = serve(Behaviour {
        chunked: true,
        no_ranges: true,
        drop_at: vec![700 * KIB],
        ..Behaviour::default()
    });
    let (data, source) = download(&format!("{}/bundle.p6b", server.base), quick(1));
    assert!(data.unwrap() == body());
    assert_eq!(source.resumes(), 1);
}

#[test]
fn a_broken_chunked_body_without_validators_fails_clearly() {
    let server = serve(Behaviour {
        chunked: true,
        no_validators: true,
        drop_at: vec![100 * KIB],
        ..Behaviour::default()
    });
    let url = format!("{}/bundle.p6b", server.base);
    let (data, mut source) = download(&url, quick(5));
    let message = data.unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "{url}: the connection closed at byte 102400, and the download cannot be resumed: \
             the server sent neither the file's size nor an etag or last-modified to recognise \
             it by"
        )
    );
    assert_eq!(source.resumes(), 0);
    assert_eq!(server.heads().len(), 1);
    let again = source.read(&mut [0; 16]).unwrap_err().to_string();
    assert!(again.contains("cannot be resumed"), "{again}");
}

#[test]
fn the_bearer_token_goes_only_to_its_origin() {
    for tls in schemes() {
        let elsewhere = serve(Behaviour {
            drop_at: vec![100 * KIB],
            tls: Some(testpki::shared()),
            ..Behaviour::default()
        });
        let console = serve(Behaviour {
            drop_at: vec![200 * KIB],
            moved_to: Some(format!("{}/bundle.p6b", elsewhere.base)),
            tls,
            ..Behaviour::default()
        });
        // The console's own bundle: the token goes along, resumptions included.
        let policy = RetryPolicy {
            ca_files: elsewhere.quick(1).ca_files,
            ..quick(1)
        };
        let url = format!("{}/bundle.p6b", console.base);
        let mut source =
            HttpSource::open_with_bearer(&url, policy.clone(), "device-token").unwrap();
        io::copy(&mut source, &mut io::sink()).unwrap();
        assert_eq!(source.resumes(), 1);
        assert_eq!(console.heads().len(), 2);
        for head in console.heads() {
            assert!(
                head.contains("\r\nauthorization: Bearer device-token\r\n"),
                "{head}"
            );
        }
        // Redirected to another origin (another port): no token there, nor on its resumption.
        let url = format!("{}/moved", console.base);
        let mut source = HttpSource::open_with_bearer(&url, policy, "device-token").unwrap();
        let mut data = Vec::new();
        source.read_to_end(&mut data).unwrap();
        assert!(data == body());
        assert_eq!(source.resumes(), 1);
        let heads = elsewhere.heads();
        assert_eq!(heads.len(), 2, "{heads:?}");
        for head in heads {
            assert!(!head.contains("authorization"), "{head}");
        }
        assert!(console
            .heads()
            .last()
            .unwrap()
            .contains("authorization: Bearer"));
    }
}

#[test]
fn api_calls_read_any_body_up_to_one_mib() {
    let url =
        serve_once("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n");
    let (status, body) = call("GET", &url, None, None, quick(0)).unwrap();
    assert_eq!((status, body.as_slice()), (200, b"{}".as_slice()));
    // Until the connection closes, as an API answer may.
    let url = serve_once("HTTP/1.1 503 Unavailable\r\nConnection: close\r\n\r\nlater");
    let (status, body) = call("POST", &url, Some("t"), Some(b"{}"), quick(0)).unwrap();
    assert_eq!((status, body.as_slice()), (503, b"later".as_slice()));

    let server = serve(Behaviour::default());
    let url = format!("{}/bundle.p6b", server.base);
    let error = call("GET", &url, None, None, quick(0)).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("{url}: invalid http response: the response body is larger than 1 MiB")
    );
    let url = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort");
    let error = call("GET", &url, None, None, quick(0)).unwrap_err();
    assert_eq!(
        error_chain(&error),
        format!(
            "{url}: the connection failed: the connection closed before the end of the \
             response body"
        )
    );
}

#[test]
fn backoff_doubles_up_to_its_maximum() {
    let policy = RetryPolicy::default();
    let waits: Vec<u128> = (0..7).map(|n| policy.backoff(n).as_millis()).collect();
    assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
    assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(8));
    assert!(policy.ca_files.is_empty());
}
