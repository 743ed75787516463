use std::io::Cursor;

use crate::compat::{problems, Device, Downgrade};
use crate::format::*;
use crate::keys::SecretKey;
use crate::testing::{self, TestBundle};

fn key() -> SecretKey {
    SecretKey::from_seed([42; 32])
}

fn manifest() -> Manifest {
    let mut m = testing::manifest("tiny", "2.0.0");
    m.kernel_args = vec!["quiet".into()];
    m.slot_manifest = serde_json::json!({"name": "tiny"});
    m
}

fn payloads() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let kernel: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let initrd = b"initrd".repeat(1000);
    let rootfs: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    (kernel, initrd, rootfs)
}

fn bundle() -> Vec<u8> {
    let (kernel, initrd, rootfs) = payloads();
    TestBundle {
        manifest: manifest(),
        kernel,
        initrd,
        rootfs,
        level: 3,
    }
    .sign(&key())
}

/// Reads a whole bundle the way the agent does: header, signature, then every payload.
fn read_all(bytes: &[u8]) -> Result<Vec<Vec<u8>>, BundleError> {
    let mut r = Cursor::new(bytes);
    let header = read_header(&mut r)?;
    header.verify(&[key().public()])?;
    let mut outs = Vec::new();
    for p in &header.manifest.payloads {
        let mut out = Vec::new();
        copy_payload(&mut r, p, &mut out, |_| {})?;
        outs.push(out);
    }
    Ok(outs)
}

#[test]
fn round_trip() {
    let b = bundle();
    let (kernel, initrd, rootfs) = payloads();
    assert_eq!(read_all(&b).unwrap(), vec![kernel, initrd, rootfs]);
    let header = read_header(&mut Cursor::new(&b)).unwrap();
    assert_eq!(
        header.len + header.manifest.compressed_total(),
        b.len() as u64
    );
    assert_eq!(header.manifest.key_id, key().id().to_string());
}

#[test]
fn the_first_pass_refuses_damage_and_truncation_without_decompressing() {
    let b = bundle();
    let header = read_header(&mut Cursor::new(&b)).unwrap();
    let mut r = Cursor::new(&b[header.len as usize..]);
    verify_compressed(&mut r, &header.manifest).unwrap();
    for at in (header.len as usize..b.len()).step_by(4099) {
        let mut bad = b.clone();
        bad[at] ^= 1;
        let mut r = Cursor::new(&bad[header.len as usize..]);
        assert!(
            verify_compressed(&mut r, &header.manifest).is_err(),
            "flipped byte {at} passed"
        );
    }
    let mut r = Cursor::new(&b[header.len as usize..b.len() - 1]);
    assert!(matches!(
        verify_compressed(&mut r, &header.manifest),
        Err(BundleError::Truncated("rootfs"))
    ));
}

#[test]
fn writing_is_deterministic() {
    assert_eq!(bundle(), bundle());
}

#[test]
fn every_truncation_is_refused() {
    let b = bundle();
    let header = read_header(&mut Cursor::new(&b)).unwrap();
    // Every cut inside the header, and a spread of cuts through the payloads.
    let mut cuts: Vec<usize> = (0..header.len as usize).collect();
    cuts.extend((header.len as usize..b.len()).step_by(997));
    cuts.push(b.len() - 1);
    for cut in cuts {
        assert!(
            read_all(&b[..cut]).is_err(),
            "a bundle cut at {cut} was accepted"
        );
    }
}

#[test]
fn every_flipped_byte_is_refused() {
    let b = bundle();
    let header = read_header(&mut Cursor::new(&b)).unwrap();
    let mut places: Vec<usize> = (0..header.len as usize).step_by(3).collect();
    places.extend((header.len as usize..b.len()).step_by(1009));
    places.push(b.len() - 1);
    for at in places {
        let mut bad = b.clone();
        bad[at] ^= 0x20;
        assert!(
            read_all(&bad).is_err(),
            "a bundle with byte {at} flipped was accepted"
        );
    }
}

#[test]
fn unsigned_and_foreign_bundles_are_refused() {
    let b = bundle();
    let header = read_header(&mut Cursor::new(&b)).unwrap();
    let other = SecretKey::from_seed([1; 32]);
    assert!(matches!(
        header.verify(&[other.public()]),
        Err(BundleError::UntrustedKey { .. })
    ));
    assert!(matches!(
        header.verify(&[]),
        Err(BundleError::UntrustedKey { .. })
    ));
    // Same key id claimed, different key: the signature does not verify.
    let mut unsigned = header.clone();
    unsigned.signature = None;
    assert!(matches!(
        unsigned.verify(&[key().public()]),
        Err(BundleError::Unsigned)
    ));
    let mut forged = header.clone();
    forged.signature = Some(other.sign_manifest(&header.manifest_bytes));
    assert!(matches!(
        forged.verify(&[key().public()]),
        Err(BundleError::BadSignature)
    ));
}

#[test]
fn a_resigned_manifest_cannot_swap_payloads() {
    // A signed manifest binds sizes and hashes: the payload bytes of another bundle fail.
    let b = bundle();
    let header = read_header(&mut Cursor::new(&b)).unwrap();
    let mut spliced = b[..header.len as usize].to_vec();
    let (kernel, _, _) = payloads();
    let mut enc = zstd::stream::encode_all(&kernel[..], 3).unwrap();
    enc.resize(header.manifest.payloads[0].compressed_size as usize, 0);
    spliced.extend_from_slice(&enc);
    spliced.extend_from_slice(&b[header.len as usize + enc.len()..]);
    assert!(read_all(&spliced).is_err());
}

fn device() -> Device<'static> {
    Device {
        name: "tiny",
        arch: "x86_64",
        version: "1.0.0",
        agent_version: "0.1.0",
        slot_bytes: 96 << 20,
        floor: None,
    }
}

#[test]
fn compatibility_problems_are_all_reported() {
    let mut m = manifest();
    m.payloads.push(Payload {
        kind: PayloadKind::Rootfs,
        size: 200 << 20,
        sha256: String::new(),
        compressed_size: 0,
        compressed_sha256: String::new(),
    });
    m.arch = "aarch64".into();
    m.compatible = vec!["other".into()];
    m.min_agent_version = "0.2.0".into();
    m.version = "0.9".into();
    let p = problems(&m, &device(), Downgrade::Refuse);
    assert_eq!(p.len(), 5, "{p:#?}");
    assert!(p[4].contains("--allow-downgrade"), "{p:#?}");
    assert_eq!(problems(&m, &device(), Downgrade::Allow).len(), 4);
    assert!(problems(&manifest(), &device(), Downgrade::Refuse).is_empty());
}

#[test]
fn a_version_below_the_devices_floor_is_refused_even_when_downgrades_are_allowed() {
    let mut m = manifest();
    m.version = "1.5.0".into();
    let floor = recorded_floor("2.0.0");
    let floored = Device {
        version: "3.0.0",
        floor: Some(&floor),
        ..device()
    };
    for downgrade in [Downgrade::Allow, Downgrade::Refuse] {
        let p = problems(&m, &floored, downgrade);
        assert!(
            p.iter()
                .any(|l| l.contains("below this device's security floor 2.0.0")),
            "{p:#?}"
        );
    }
    // At the floor, or above it: only the downgrade rule applies.
    m.version = "2.0.0".into();
    assert!(problems(&m, &floored, Downgrade::Allow).is_empty());
    let p = problems(&m, &floored, Downgrade::Refuse);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].contains("--allow-downgrade"), "{p:#?}");
    // No floor recorded: anything the downgrade rule allows.
    m.version = "0.1.0".into();
    let open = Device {
        version: "3.0.0",
        ..device()
    };
    assert!(problems(&m, &open, Downgrade::Allow).is_empty());
}

#[test]
fn a_bundle_below_its_own_floor_is_refused() {
    let mut m = manifest();
    m.security_floor = Some("3.0.0".into());
    let p = problems(&m, &device(), Downgrade::Refuse);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].contains("floor 3.0.0"), "{p:#?}");
}

#[test]
fn floors_only_ever_rise() {
    use crate::compat::raise_floor;
    assert_eq!(raise_floor(None, None), None);
    assert_eq!(raise_floor(None, Some("1.2")), Some("1.2".to_string()));
    assert_eq!(
        raise_floor(Some("1.2"), Some("1.10")),
        Some("1.10".to_string())
    );
    assert_eq!(raise_floor(Some("2.0"), Some("1.10")), None);
    assert_eq!(raise_floor(Some("2.0"), Some("2.0")), None);
    assert_eq!(raise_floor(Some("2.0"), None), None);
}

#[test]
fn manifests_without_a_floor_read_and_write_as_before() {
    let m = manifest();
    let text = serde_json::to_string(&m).unwrap();
    assert!(!text.contains("security_floor"), "{text}");
    let back: crate::format::Manifest = serde_json::from_str(&text).unwrap();
    assert_eq!(back.security_floor, None);
    let mut floored = manifest();
    floored.security_floor = Some("1.5.0".into());
    let text = serde_json::to_string(&floored).unwrap();
    assert!(text.contains("\"security_floor\":\"1.5.0\""), "{text}");
}

fn recorded_floor(version: &str) -> crate::floor::Floor {
    crate::floor::effective(
        &crate::floor::Recorded::At(version.into()),
        "/var/lib/p6os/security-floor",
        "9.9.9",
        None,
    )
    .unwrap()
}

#[test]
fn a_damaged_floor_file_refuses_every_downgrade_and_names_the_file() {
    let floor = crate::floor::effective(
        &crate::floor::Recorded::Damaged {
            file: "/var/lib/p6os/security-floor".into(),
            problem: "`x y` is not a version".into(),
        },
        "/var/lib/p6os/security-floor",
        "3.0.0",
        None,
    );
    let device = Device {
        version: "3.0.0",
        floor: floor.as_ref(),
        ..device()
    };
    let mut m = manifest();
    m.version = "2.0.0".into();
    let p = problems(&m, &device, Downgrade::Allow);
    assert!(
        p.iter()
            .any(|l| l.contains("/var/lib/p6os/security-floor") && l.contains("damaged")),
        "{p:#?}"
    );
    // Upgrades go on (and bless a slot whose floor is recorded again).
    m.version = "3.1.0".into();
    assert!(problems(&m, &device, Downgrade::Refuse).is_empty());
}

#[test]
fn verity_parameters_must_describe_the_rootfs_payload_exactly() {
    let (kernel, initrd, data) = payloads();
    let mut tree = p6os_layout::verity::TreeBuilder::new([9; 32]);
    tree.update(&data);
    let tree = tree.finish().unwrap();
    let mut rootfs = data.clone();
    rootfs.resize(tree.params.hash_offset() as usize, 0);
    rootfs.extend_from_slice(&tree.bytes);
    let with = |verity: serde_json::Value, rootfs: Vec<u8>| {
        let mut m = manifest();
        m.slot_manifest = serde_json::json!({"name": "tiny", "rootfs": {"verity": verity}});
        TestBundle {
            manifest: m,
            kernel: kernel.clone(),
            initrd: initrd.clone(),
            rootfs,
            level: 1,
        }
        .sign(&key())
    };
    let good = with(tree.params.value().into(), rootfs.clone());
    let header = read_header(&mut Cursor::new(&good)).unwrap();
    assert_eq!(header.manifest.verity().unwrap(), Some(tree.params));
    assert!(read_all(&good).is_ok());
    // The tree left out, a malformed value, a value of another type: the header is refused.
    for (verity, rootfs) in [
        (tree.params.value().into(), data.clone()),
        ("1:2:3".into(), rootfs.clone()),
        (serde_json::json!(7), rootfs.clone()),
    ] {
        let bad = with(verity, rootfs);
        let err = read_header(&mut Cursor::new(&bad)).unwrap_err();
        assert!(matches!(err, BundleError::Manifest(_)), "{err}");
    }
    // No verity: an unprotected slot.
    assert_eq!(manifest().verity().unwrap(), None);
}

#[test]
fn a_bundle_boots_its_slot_with_a_uki_or_a_kernel_and_initramfs_never_both() {
    let (kernel, initrd, rootfs) = payloads();
    let uki = b"MZ unified kernel image".repeat(100);
    let write = |kinds: &[(PayloadKind, &[u8])]| {
        let inputs: Vec<PayloadInput> = kinds
            .iter()
            .map(|(kind, data)| PayloadInput { kind: *kind, data })
            .collect();
        let mut out = Vec::new();
        write_bundle(&mut out, manifest(), &inputs, &key(), 1).unwrap();
        read_header(&mut Cursor::new(&out)).map(|h| h.manifest)
    };
    let m = write(&[(PayloadKind::Uki, &uki), (PayloadKind::Rootfs, &rootfs)]).unwrap();
    assert_eq!(m.payload(PayloadKind::Uki).unwrap().size, uki.len() as u64);
    assert!(write(&[
        (PayloadKind::Kernel, &kernel),
        (PayloadKind::Initrd, &initrd),
        (PayloadKind::Rootfs, &rootfs)
    ])
    .is_ok());
    for bad in [
        vec![
            (PayloadKind::Uki, &uki[..]),
            (PayloadKind::Kernel, &kernel[..]),
            (PayloadKind::Rootfs, &rootfs[..]),
        ],
        vec![(PayloadKind::Uki, &uki[..])],
        vec![
            (PayloadKind::Uki, &uki[..]),
            (PayloadKind::Uki, &uki[..]),
            (PayloadKind::Rootfs, &rootfs[..]),
        ],
        vec![
            (PayloadKind::Kernel, &kernel[..]),
            (PayloadKind::Rootfs, &rootfs[..]),
        ],
    ] {
        let err = write(&bad).unwrap_err();
        assert!(matches!(err, BundleError::Manifest(_)), "{err}");
    }
}
