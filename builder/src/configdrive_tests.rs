use std::io::Cursor;

use super::*;
use p6os_bundle::configsig::ConfigSignature;
use p6os_bundle::keys::SecretKey;

const MIB: u64 = 1 << 20;
const DOCUMENT: &[u8] = b"#cloud-config\nhostname: store-0421\n";

fn signature(document: &[u8]) -> Vec<u8> {
    let key = SecretKey::from_seed([7; 32]);
    ConfigSignature::sign(&key, document, 3)
        .to_file()
        .into_bytes()
}

/// `plan` applied to `disk` as `write` applies it: the clears, then the writes.
fn apply(plan: &Plan, disk: &mut [u8]) {
    for &(offset, len) in &plan.clear {
        disk[offset as usize..(offset + len) as usize].fill(0);
    }
    apply_writes_only(plan, disk);
}

fn apply_writes_only(plan: &Plan, disk: &mut [u8]) {
    for (offset, bytes) in &plan.writes {
        disk[*offset as usize..*offset as usize + bytes.len()].copy_from_slice(bytes);
    }
}

/// A stick with a past: a FAT32 volume with other geometry (512-byte clusters over 40 MiB,
/// then every cluster allocated to files), the rest noise.
fn used_stick(size: u64) -> Vec<u8> {
    let mut disk: Vec<u8> = (0..size)
        .map(|i| ((i * 2_654_435_761) >> 13) as u8)
        .collect();
    let files: Vec<FatFile> = (0..40)
        .map(|i| FatFile {
            path: format!("/old/photo-{i}.jpg"),
            data: vec![i as u8 | 1; 900_000],
        })
        .collect();
    let mut dev = Cursor::new(&mut disk[..]);
    let opts = FormatOptions {
        volume_id: 1,
        label: None,
    };
    fat::format(&mut dev, 0, 40 * MIB, &opts, &files).unwrap();
    disk
}

/// The agent's probe (`initagent/src/firstboot/source.rs`, `probe`) on a FAT32 boot sector,
/// byte for byte: the builder cannot depend on the agent, so its reading is restated here.
fn agent_reads_label(head: &[u8]) -> Option<String> {
    let boot = &head[..512];
    let bytes_per_sector = u16::from_le_bytes([boot[11], boot[12]]);
    let fat_boot = boot[510..512] == [0x55, 0xaa]
        && matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        && boot[13].is_power_of_two();
    let ext4 = head[1024 + 56..1024 + 58] == [0x53, 0xef];
    let iso = head[32768] == 1 && &head[32769..32774] == b"CD001";
    if !fat_boot || ext4 || iso || &boot[82..87] != b"FAT32" || boot[66] != 0x29 {
        return None;
    }
    let label = String::from_utf8_lossy(&boot[71..82])
        .trim_end()
        .to_string();
    Some(label)
}

#[test]
fn the_plan_is_a_labelled_fat32_volume_over_the_whole_target() {
    let size = 64 * MIB;
    let plan = plan(size, DOCUMENT, None).unwrap();
    assert_eq!(plan.volume_size, size);
    assert!(plan
        .writes
        .windows(2)
        .all(|w| w[0].0 + w[0].1.len() as u64 <= w[1].0));
    let written_end = plan.writes.last().map(|(o, b)| o + b.len() as u64).unwrap();
    assert_eq!(plan.clear[0].0, 0);
    assert!(plan.clear[0].1 >= written_end, "{:?}", plan.clear);
    assert_eq!(plan.clear[1], (size - MIB, MIB));
    // Small: the tables' used part, the root directory, the file.
    assert!(plan.written_bytes() < 64 * 1024, "{}", plan.written_bytes());

    let mut disk = vec![0u8; size as usize];
    apply(&plan, &mut disk);
    assert_eq!(agent_reads_label(&disk).as_deref(), Some(LABEL));
    // Whole disk, no partition table: the MBR's partition entries are empty.
    assert!(disk[446..510].iter().all(|&b| b == 0));
    let mut volume = FatVolume::open(Cursor::new(disk), 0, size).unwrap();
    let names: Vec<String> = volume
        .read_dir("/")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["unattended.yaml"]);
    assert_eq!(volume.read_file(DOCUMENT_PATH).unwrap(), DOCUMENT);
}

#[test]
fn the_plan_is_deterministic_and_the_serial_follows_the_document() {
    let sig = signature(DOCUMENT);
    let a = plan(64 * MIB, DOCUMENT, Some(&sig)).unwrap();
    assert_eq!(a, plan(64 * MIB, DOCUMENT, Some(&sig)).unwrap());
    let b = plan(64 * MIB, b"hostname: other\n", None).unwrap();
    let serial = |p: &Plan| p.writes[0].1[67..71].to_vec();
    assert_ne!(serial(&a), serial(&b));
}

#[test]
fn a_used_stick_is_cleared_where_the_new_volume_needs_it() {
    let size = 64 * MIB;
    let sig = signature(DOCUMENT);
    let plan = plan(size, DOCUMENT, Some(&sig)).unwrap();

    let mut disk = used_stick(size);
    apply(&plan, &mut disk);
    assert_eq!(agent_reads_label(&disk).as_deref(), Some(LABEL));
    assert!(disk[(size - MIB) as usize..].iter().all(|&b| b == 0));
    let mut volume = FatVolume::open(Cursor::new(disk), 0, size).unwrap();
    assert_eq!(volume.read_file(DOCUMENT_PATH).unwrap(), DOCUMENT);
    assert_eq!(volume.read_file(SIGNATURE_PATH).unwrap(), sig);
    let repair = volume.plan_repair(&|_, _| false).unwrap();
    assert!(repair.is_clean(), "{}", repair.summary());

    // The clears are what makes it clean: the old tables would still allocate clusters.
    let mut disk = used_stick(size);
    apply_writes_only(&plan, &mut disk);
    let mut volume = FatVolume::open(Cursor::new(disk), 0, size).unwrap();
    let repair = volume.plan_repair(&|_, _| false).unwrap();
    assert!(!repair.is_clean(), "stale tables went unnoticed");
}

#[test]
fn targets_too_small_or_too_large_for_fat32() {
    let small = plan(min_size() - 512, DOCUMENT, None).unwrap_err();
    assert!(matches!(small, FatError::VolumeTooSmall { .. }), "{small}");
    assert_eq!(
        plan(min_size(), DOCUMENT, None).unwrap().volume_size,
        min_size()
    );
    // A 4 TiB disk gets the largest volume, and its last MiB cleared.
    let huge = 4u64 << 40;
    let plan = plan(huge, DOCUMENT, None).unwrap();
    assert_eq!(plan.volume_size, fat::max_volume_size());
    assert_eq!(plan.clear.last(), Some(&(huge - MIB, MIB)));
}

#[test]
fn documents_are_checked_as_validate_does() {
    let name = Path::new("site.yaml");
    assert!(check(name, DOCUMENT, None).is_ok());
    let bad = b"hostname: store-0421\nnetwork:\n  interfaces:\n    - name: eth0\n      adresses: [10.0.0.5/24]\n";
    let Err(DriveError::Invalid(diags)) = check(name, bad, None) else {
        panic!("an invalid document passed");
    };
    let text = diags.to_string();
    assert!(
        text.contains("site.yaml:5:7: network.interfaces[0].adresses: unknown field `adresses`"),
        "{text}"
    );
    let Err(DriveError::Invalid(diags)) = check(name, b"hostname: \xff\n", None) else {
        panic!("bytes that are not text passed");
    };
    assert!(diags.to_string().contains("not UTF-8"), "{diags}");
    let err = check(name, DOCUMENT, Some(b"not a signature")).unwrap_err();
    assert!(
        matches!(&err, DriveError::Signature { path, .. } if path == "site.yaml.sig"),
        "{err}"
    );
    assert!(err.to_string().contains("p6os config sign"), "{err}");
    assert!(check(name, DOCUMENT, Some(&signature(DOCUMENT))).is_ok());
}

#[test]
fn read_takes_the_signature_beside_the_file() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("site.yaml");
    std::fs::write(&file, DOCUMENT).unwrap();
    let unsigned = read(&file).unwrap();
    assert_eq!(unsigned.signature, None);
    std::fs::write(d.path().join("site.yaml.sig"), signature(DOCUMENT)).unwrap();
    let signed = read(&file).unwrap();
    assert_eq!(signed.document, DOCUMENT);
    assert_eq!(signed.signature, Some(signature(DOCUMENT)));
    let missing = read(&d.path().join("none.yaml")).unwrap_err();
    assert!(missing.to_string().contains("cannot read"), "{missing}");
}

#[test]
fn write_makes_an_empty_file_a_drive_and_reads_it_back() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("drive.img");
    std::fs::write(&target, b"").unwrap();
    let confirmed = Identity::of_path(&target).unwrap();
    let sig = signature(DOCUMENT);
    let report = write(&target, &confirmed, DOCUMENT, Some(&sig)).unwrap();
    assert_eq!(report.target_size, FILE_SIZE);
    assert_eq!(report.volume_size, FILE_SIZE);
    assert_eq!(report.files, [DOCUMENT_PATH, SIGNATURE_PATH]);
    let disk = std::fs::read(&target).unwrap();
    assert_eq!(disk.len() as u64, FILE_SIZE);
    assert_eq!(agent_reads_label(&disk).as_deref(), Some(LABEL));
    let mut volume = FatVolume::open(Cursor::new(disk), 0, FILE_SIZE).unwrap();
    assert_eq!(volume.read_file(SIGNATURE_PATH).unwrap(), sig);

    // Written again over itself, unsigned: the old signature is gone.
    let report = write(&target, &confirmed, DOCUMENT, None).unwrap();
    assert_eq!(report.files, [DOCUMENT_PATH]);
    let disk = std::fs::read(&target).unwrap();
    let mut volume = FatVolume::open(Cursor::new(disk), 0, FILE_SIZE).unwrap();
    assert!(!volume.exists(SIGNATURE_PATH).unwrap());
}

#[test]
fn write_keeps_a_larger_file_s_size() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("drive.img");
    let size = 100 * MIB + 4096;
    std::fs::File::create(&target)
        .unwrap()
        .set_len(size)
        .unwrap();
    let confirmed = Identity::of_path(&target).unwrap();
    let report = write(&target, &confirmed, DOCUMENT, None).unwrap();
    assert_eq!((report.target_size, report.volume_size), (size, size));
    assert_eq!(std::fs::metadata(&target).unwrap().len(), size);
}

#[test]
fn write_refuses_an_invalid_document_and_another_target() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("drive.img");
    std::fs::write(&target, b"old contents").unwrap();
    let confirmed = Identity::of_path(&target).unwrap();
    let err = write(&target, &confirmed, b"hostname: store_9!\n", None).unwrap_err();
    assert!(matches!(err, DriveError::Invalid(_)), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"old contents");

    // Swapped for another file after the confirmation.
    let other = d.path().join("other.img");
    std::fs::write(&other, b"other contents").unwrap();
    std::fs::rename(&other, &target).unwrap();
    let err = write(&target, &confirmed, DOCUMENT, None).unwrap_err();
    assert!(matches!(err, DriveError::TargetChanged { .. }), "{err}");
    assert!(err.to_string().contains("nothing was written"), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"other contents");
}
