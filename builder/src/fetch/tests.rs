//! Tests of the source kinds against temporary files (no network: URLs are file:// or a
//! closed loopback port).
use super::*;

fn ctx<'a>(
    cache: &'a Cache,
    apt: &'a AptIndex,
    local: &'a BTreeMap<String, PathBuf>,
) -> SourceContext<'a> {
    SourceContext {
        cache,
        apt,
        local,
        say: &|_| {},
        meter: &|_, _, _| {},
    }
}

#[test]
fn file_sources_take_local_copies_and_name_the_flag_when_unreachable() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache {
        root: d.path().join("cache"),
    };
    fs::write(d.path().join("k3s"), b"#!/bin/sh\n").unwrap();
    let sha = sha256_bytes(b"#!/bin/sh\n");
    let source = Source::File {
        name: "k3s".into(),
        // Nothing listens on port 9 of loopback: the download fails at once.
        url: "http://127.0.0.1:9/k3s".into(),
        sha256: sha.clone(),
        dest: "/usr/local/bin/k3s".into(),
        mode: Some("0755".into()),
    };
    let apt = AptIndex::default();
    let none = BTreeMap::new();
    let err = load_source(&ctx(&cache, &apt, &none), d.path(), &source, None).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("http://127.0.0.1:9/k3s"), "{text}");
    assert!(text.contains("--layer-source k3s=PATH"), "{text}");
    let local = BTreeMap::from([("k3s".to_string(), d.path().join("k3s"))]);
    let (tree, resolved) =
        load_source(&ctx(&cache, &apt, &local), d.path(), &source, None).unwrap();
    assert_eq!(tree.get("usr/local/bin/k3s").unwrap().mode, 0o755);
    assert_eq!(
        resolved,
        Resolved::File {
            name: "k3s".into(),
            sha256: sha
        }
    );
    // A local copy with other bytes is refused.
    fs::write(d.path().join("k3s"), b"other").unwrap();
    let err = load_source(&ctx(&cache, &apt, &local), d.path(), &source, None).unwrap_err();
    assert!(matches!(err, FetchError::Sha256Mismatch { .. }), "{err}");
}

#[test]
fn dir_sources_ignore_umask_and_mtimes() {
    use std::os::unix::fs::PermissionsExt;
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    // World-readable either way: only the umask differs.
    for (d, mode) in [(&a, 0o644), (&b, 0o664)] {
        fs::create_dir(d.path().join("etc")).unwrap();
        fs::write(d.path().join("etc/motd"), "hi\n").unwrap();
        fs::set_permissions(d.path().join("etc/motd"), fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::symlink("motd", d.path().join("etc/issue")).unwrap();
    }
    let src = |p: &Path| Source::Dir {
        path: p.display().to_string(),
        target: Some("/opt".into()),
    };
    let cache = Cache {
        root: a.path().join("cache-unused"),
    };
    let (apt, local) = (AptIndex::default(), BTreeMap::new());
    let ctx = ctx(&cache, &apt, &local);
    let (ta, ra) = load_source(&ctx, Path::new("/"), &src(a.path()), None).unwrap();
    let (tb, rb) = load_source(&ctx, Path::new("/"), &src(b.path()), None).unwrap();
    assert_eq!(ta, tb);
    assert_eq!(ra, rb);
    assert_eq!(ta.get("opt/etc/motd").unwrap().mode, 0o644);
    assert!(matches!(
        ta.get("opt/etc/issue").unwrap().kind,
        Kind::Symlink(_)
    ));
}

#[test]
fn dir_sources_keep_private_modes_of_files_and_dirs() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let set = |p: &str, mode| {
        fs::set_permissions(d.path().join(p), fs::Permissions::from_mode(mode)).unwrap()
    };
    fs::create_dir_all(d.path().join("etc/ssl/private")).unwrap();
    fs::create_dir_all(d.path().join("etc/app")).unwrap();
    fs::write(d.path().join("etc/ssl/private/key.pem"), "KEY\n").unwrap();
    fs::write(d.path().join("etc/app/secret"), "s\n").unwrap();
    fs::write(d.path().join("etc/app/run"), "#!/bin/sh\n").unwrap();
    fs::write(d.path().join("etc/app/readme"), "r\n").unwrap();
    set("etc/ssl/private/key.pem", 0o600);
    set("etc/ssl/private", 0o700);
    set("etc/app/secret", 0o640);
    set("etc/app/run", 0o750);
    set("etc/app/readme", 0o664);
    set("etc/app", 0o775);
    let source = Source::Dir {
        path: d.path().display().to_string(),
        target: None,
    };
    let cache = Cache {
        root: d.path().join("cache-unused"),
    };
    let (apt, local) = (AptIndex::default(), BTreeMap::new());
    let (tree, _) = load_source(&ctx(&cache, &apt, &local), Path::new("/"), &source, None).unwrap();
    let mode = |p: &str| tree.get(p).unwrap().mode;
    assert_eq!(
        mode("etc/ssl/private/key.pem"),
        0o600,
        "a private key stays private"
    );
    assert_eq!(
        mode("etc/ssl/private"),
        0o700,
        "a private directory stays private"
    );
    assert_eq!(mode("etc/app/secret"), 0o640);
    assert_eq!(mode("etc/app/run"), 0o750);
    // World-readable ones are normalised as before (the builder's umask does not matter).
    assert_eq!(mode("etc/app/readme"), 0o644);
    assert_eq!(mode("etc/app"), 0o755);
}

#[test]
fn dir_sources_drop_group_and_world_write_from_private_modes() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("var/spool/drop")).unwrap();
    fs::write(d.path().join("etc-note"), "n\n").unwrap();
    fs::write(d.path().join("shared"), "s\n").unwrap();
    let set = |p: &str, mode| {
        fs::set_permissions(d.path().join(p), fs::Permissions::from_mode(mode)).unwrap()
    };
    set("etc-note", 0o602);
    set("shared", 0o660);
    set("var/spool/drop", 0o1733);
    let source = Source::Dir {
        path: d.path().display().to_string(),
        target: None,
    };
    let cache = Cache {
        root: d.path().join("cache-unused"),
    };
    let (apt, local) = (AptIndex::default(), BTreeMap::new());
    let (tree, _) = load_source(&ctx(&cache, &apt, &local), Path::new("/"), &source, None).unwrap();
    let mode = |p: &str| tree.get(p).unwrap().mode;
    assert_eq!(mode("etc-note"), 0o600, "0602: no world write in the image");
    assert_eq!(mode("shared"), 0o640, "0660: no group write either");
    let spool = mode("var/spool/drop");
    assert_eq!(
        spool & 0o022,
        0,
        "1733 became {spool:o}: writable by others"
    );
    assert_eq!(spool, 0o711);
}

#[test]
fn tarball_sha256_is_checked() {
    let d = tempfile::tempdir().unwrap();
    let mut t = Tree::new();
    t.insert("etc/x", Entry::file(b"x".to_vec(), 0o644));
    let mut tar = Vec::new();
    t.write_tar(&mut tar).unwrap();
    fs::write(d.path().join("l.tar"), &tar).unwrap();
    let cache = Cache {
        root: d.path().join("cache"),
    };
    let (apt, local) = (AptIndex::default(), BTreeMap::new());
    let ctx = ctx(&cache, &apt, &local);
    let good = Source::Tarball {
        path: Some("l.tar".into()),
        url: None,
        sha256: Some(sha256_bytes(&tar)),
    };
    assert_eq!(load_source(&ctx, d.path(), &good, None).unwrap().0, t);
    let bad = Source::Tarball {
        path: Some("l.tar".into()),
        url: None,
        sha256: Some("0".repeat(64)),
    };
    let err = load_source(&ctx, d.path(), &bad, None).unwrap_err();
    assert!(matches!(err, FetchError::Sha256Mismatch { .. }), "{err}");
    // By URL (file://), the download lands in the cache under its digest.
    let url = Source::Tarball {
        path: None,
        url: Some(format!("file://{}", d.path().join("l.tar").display())),
        sha256: Some(sha256_bytes(&tar)),
    };
    assert_eq!(load_source(&ctx, d.path(), &url, None).unwrap().0, t);
    assert!(cache.get(&sha256_bytes(&tar)).is_some());
}

#[test]
fn compressed_tarballs_are_detected() {
    let mut t = Tree::new();
    t.insert("a", Entry::file(b"abc".to_vec(), 0o644));
    let mut tar = Vec::new();
    t.write_tar(&mut tar).unwrap();
    let zst = zstd::encode_all(tar.as_slice(), 3).unwrap();
    assert_eq!(Tree::from_tar(decompressor(&zst).unwrap()).unwrap(), t);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::Write::write_all(&mut gz, &tar).unwrap();
    assert_eq!(
        Tree::from_tar(decompressor(&gz.finish().unwrap()).unwrap()).unwrap(),
        t
    );
}
