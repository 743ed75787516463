//! Bundles over real HTTP: uploads (trusted, untrusted, damaged, duplicate, conflicting) and
//! downloads (ranges, If-Range, never chunked on the wire).

mod common;

use common::*;
use p6os_protocol::{Bundle, ErrorBody};

#[test]
fn bundle_uploads() {
    let s = Server::start();
    let up = |bytes: Vec<u8>| {
        s.admin(
            "POST",
            &format!("{API}/bundles"),
            Body::Bytes("application/octet-stream", bytes),
        )
    };
    let good = bundle(&trusted_key(), "tiny", "2.0.0", 1);
    let r = up(good.clone());
    assert_eq!(r.status, 201, "{}", r.text());
    let b: Bundle = r.json();
    assert_eq!((b.name.as_str(), b.version.as_str()), ("tiny", "2.0.0"));
    assert_eq!(b.key_id, trusted_key().id().to_string());
    // Same bytes again: the one held.
    let r = up(good.clone());
    assert_eq!(r.status, 200);
    assert_eq!(r.json::<Bundle>().sha256, b.sha256);
    // Same name, version and arch, other bytes.
    let r = up(bundle(&trusted_key(), "tiny", "2.0.0", 2));
    assert_eq!(r.status, 409, "{}", r.text());
    // Untrusted key.
    let r = up(bundle(&other_key(), "tiny", "3.0.0", 1));
    assert_eq!(r.status, 422);
    assert!(
        r.json::<ErrorBody>().error.contains("trust"),
        "{}",
        r.text()
    );
    // A flipped byte in the last payload.
    let mut bad = bundle(&trusted_key(), "tiny", "3.0.0", 1);
    let n = bad.len() - 100;
    bad[n] ^= 0x40;
    let r = up(bad);
    assert_eq!(r.status, 422);
    assert!(
        r.json::<ErrorBody>().error.contains("damaged"),
        "{}",
        r.text()
    );
    // Not a bundle, trailing bytes, wrong type.
    assert_eq!(up(b"hello".to_vec()).status, 422);
    let mut long = bundle(&trusted_key(), "tiny", "3.0.0", 1);
    long.push(0);
    assert_eq!(up(long).status, 422);
    let r = s.admin(
        "POST",
        &format!("{API}/bundles"),
        Body::Bytes("application/json", good),
    );
    assert_eq!(r.status, 415);
    let r = s.call(
        "POST",
        &format!("{API}/bundles"),
        None,
        Body::Bytes(
            "application/octet-stream",
            bundle(&trusted_key(), "tiny", "4.0.0", 1),
        ),
    );
    assert_eq!(r.status, 401);

    // Only the kept bundle is left in the directory: refused uploads leave nothing.
    let names: Vec<String> = std::fs::read_dir(s.dir.path().join("bundles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [format!("{}.p6b", b.sha256)]);
    let listed: Vec<Bundle> = s
        .admin("GET", &format!("{API}/bundles"), Body::None)
        .json::<p6os_protocol::BundlePage>()
        .items;
    assert_eq!(listed, [b]);
}

#[test]
fn bundle_ranges() {
    let s = Server::start();
    let token = s.paired("dev", &[]);
    let file = bundle(&trusted_key(), "tiny", "2.0.0", 3);
    let len = file.len();
    let b: Bundle = s
        .admin(
            "POST",
            &format!("{API}/bundles"),
            Body::Bytes("application/octet-stream", file.clone()),
        )
        .json();
    let path = format!("{API}/bundles/{}/content", b.sha256);
    let etag = format!("\"{}\"", b.sha256);
    let get =
        |headers: &[(&str, &str)]| call(&s.url, "GET", &path, Some(&token), Body::None, headers);

    let r = get(&[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, file);
    assert_eq!(r.header("content-length"), Some(len.to_string().as_str()));
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("etag"), Some(etag.as_str()));

    let r = get(&[("Range", "bytes=1000-1999")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &file[1000..2000]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 1000-1999/{len}").as_str())
    );
    assert_eq!(r.header("content-length"), Some("1000"));

    let r = get(&[("Range", "bytes=5000-"), ("If-Range", &etag)]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &file[5000..]);
    let r = get(&[("Range", "bytes=-300")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &file[len - 300..]);
    let r = get(&[("Range", &format!("bytes={len}-"))]);
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    let r = get(&[("Range", "bytes=5000-"), ("If-Range", "\"other\"")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, file);

    // The admin may fetch too; nobody else; unknown and malformed ids.
    let r = s.admin("GET", &path, Body::None);
    assert_eq!(r.status, 200);
    assert_eq!(s.call("GET", &path, None, Body::None).status, 401);
    assert_eq!(s.call("GET", &path, Some("nope"), Body::None).status, 401);
    let r = s.admin(
        "GET",
        &format!("{API}/bundles/{}/content", "0".repeat(64)),
        Body::None,
    );
    assert_eq!(r.status, 404);
    let r = s.admin("GET", &format!("{API}/bundles/xyz/content"), Body::None);
    assert_eq!((r.status, r.field().as_deref()), (400, Some("sha256")));
}

/// The body over the wire: `Content-Length`, never chunked (the agent refuses chunked).
#[test]
fn download_is_never_chunked_on_the_wire() {
    use std::io::{Read, Write};
    let s = Server::start();
    let file = bundle(&trusted_key(), "tiny", "2.0.0", 4);
    let b: Bundle = s
        .admin(
            "POST",
            &format!("{API}/bundles"),
            Body::Bytes("application/octet-stream", file.clone()),
        )
        .json();
    let addr = s.url.trim_start_matches("http://");
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    write!(
        tcp,
        "GET {API}/bundles/{}/content HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        b.sha256, s.admin
    )
    .unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", file.len())),
        "{head}"
    );
    assert_eq!(&raw[split + 4..], &file[..]);
}
