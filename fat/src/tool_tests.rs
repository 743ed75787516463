//! Checks against the real tools: `fsck.vfat` (dosfstools) and mtools, on image files with the
//! volume 1 MiB in. A missing tool fails the test with the package to install.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::tests::{assert_contents, esp_files, file, noise, opts, MIB, OFFSET};
use super::*;

/// Finds a tool in PATH or the sbin directories; panics naming the package to install.
fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: install the `{package}` package"))
}

/// An image file with `size` bytes of volume at [`OFFSET`] and 1 MiB after it.
fn image_file(size: u64) -> tempfile::NamedTempFile {
    let img = tempfile::NamedTempFile::new().unwrap();
    img.as_file().set_len(OFFSET + size + MIB).unwrap();
    img
}

fn format_file(size: u64, files: &[FatFile]) -> tempfile::NamedTempFile {
    let img = image_file(size);
    let mut f = img.reopen().unwrap();
    format(&mut f, OFFSET, size, &opts(), files).unwrap();
    img
}

fn open_file(img: &Path, size: u64) -> FatVolume<File> {
    let f = File::options().read(true).write(true).open(img).unwrap();
    FatVolume::open(f, OFFSET, size).unwrap()
}

/// Runs `fsck.vfat -n` on the volume (copied out of the image, as fsck has no offset option)
/// and fails on a non-zero exit or any output besides the version and summary lines.
fn fsck(img: &Path, size: u64) -> String {
    let fsck = tool("fsck.vfat", "dosfstools");
    let part = tempfile::NamedTempFile::new().unwrap();
    {
        let mut src = File::open(img).unwrap();
        let mut dst = part.reopen().unwrap();
        src.seek(SeekFrom::Start(OFFSET)).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            src.read_exact(&mut buf[..n]).unwrap();
            if buf[..n].iter().any(|&b| b != 0) {
                dst.write_all(&buf[..n]).unwrap();
            } else {
                dst.seek(SeekFrom::Current(n as i64)).unwrap();
            }
            left -= n as u64;
        }
        dst.set_len(size).unwrap();
    }
    let out = Command::new(fsck)
        .arg("-n")
        .arg(part.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("fsck.fat ") && !l.contains(" files, "))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "fsck.vfat -n failed ({}):\n{text}",
        out.status
    );
    text
}

fn mtools(cmd: &str, img: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(tool(cmd, "mtools"))
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{OFFSET}", img.display()))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn mtype(img: &Path, path: &str) -> Vec<u8> {
    mtools("mtype", img, &[&format!("::{path}")])
}

fn mdir(img: &Path, path: &str) -> String {
    String::from_utf8(mtools("mdir", img, &[&format!("::{path}")])).unwrap()
}

#[test]
fn tools_accept_formatted_volume() {
    let size = 64 * MIB;
    let files = esp_files();
    let img = format_file(size, &files);
    let summary = fsck(img.path(), size);
    assert!(summary.contains("16 files"), "{summary}");
    for f in &files {
        assert!(mtype(img.path(), &f.path) == f.data, "mtype {}", f.path);
    }
    let listing = mdir(img.path(), "/loader/entries");
    assert!(listing.contains("p6os-1.0.0-a+3.conf"), "{listing}");
    assert!(listing.contains("p6os-2-b+2-1.conf"), "{listing}");
    assert!(listing.contains("P6OS-1~1 CON"), "{listing}");
    let listing = mdir(img.path(), "/p6os");
    assert!(listing.contains("manifest.json"), "{listing}");

    // A volume with 4 KiB clusters, too.
    let size = 300 * MIB;
    let img = format_file(size, &files);
    fsck(img.path(), size);
    assert!(mtype(img.path(), "/p6os/a/vmlinuz") == files[4].data);
}

#[test]
fn tools_accept_big_directory() {
    let size = 40 * MIB;
    let mut files: Vec<FatFile> = (0..200)
        .map(|i| {
            file(
                &format!("/many/file-with-a-long-name-{i:03}.txt"),
                noise(i * 37, i as u64),
            )
        })
        .collect();
    files.push(file("/many/SHORT.TXT", b"short".to_vec()));
    let img = format_file(size, &files);
    fsck(img.path(), size);

    let mut vol = open_file(img.path(), size);
    let listing = vol.read_dir("/many").unwrap();
    assert_eq!(listing.len(), 201);
    assert_contents(&mut vol, &files);
    // The directory spans many 512-byte clusters; adding entries grows it further.
    for i in 200..260 {
        vol.write_file(
            &format!("/many/file-with-a-long-name-{i:03}.txt"),
            &[i as u8; 700],
        )
        .unwrap();
    }
    drop(vol);
    fsck(img.path(), size);
    let listing = mdir(img.path(), "/many");
    assert!(
        listing.contains("file-with-a-long-name-259.txt"),
        "{listing}"
    );
    assert!(listing.contains("263 files"), "{listing}");
    assert_eq!(
        mtype(img.path(), "/many/file-with-a-long-name-123.txt"),
        noise(123 * 37, 123)
    );
    assert_eq!(
        mtype(img.path(), "/many/file-with-a-long-name-250.txt"),
        [250; 700]
    );
}

#[test]
fn tools_read_the_label() {
    let size = 40 * MIB;
    let img = image_file(size);
    let opts = FormatOptions {
        label: Some(VolumeLabel::new("P6OS-CONFIG").unwrap()),
        ..opts()
    };
    let files = [file("/unattended.yaml", b"hostname: a\n".to_vec())];
    format(&mut img.reopen().unwrap(), OFFSET, size, &opts, &files).unwrap();
    let summary = fsck(img.path(), size);
    // fsck.fat counts the label entry as a file, as on a volume from `mkfs.fat -n`.
    assert!(summary.contains("2 files"), "{summary}");
    let said = String::from_utf8(mtools("mlabel", img.path(), &["-s", "::"])).unwrap();
    assert_eq!(said.trim(), "Volume label is P6OS-CONFIG");
    assert_eq!(mtype(img.path(), "/unattended.yaml"), b"hostname: a\n");
    let listing = mdir(img.path(), "/");
    assert!(
        listing.contains("Volume in drive : is P6OS-CONFIG"),
        "{listing}"
    );
}

#[test]
fn tools_accept_modified_volume() {
    let size = 64 * MIB;
    let files = esp_files();
    let img = format_file(size, &files);
    let mut vol = open_file(img.path(), size);

    // New file in an existing directory, and in new nested directories.
    vol.write_file("/p6os/unattended.yaml", b"hostname: edge-1\n")
        .unwrap();
    vol.write_file("/new/dir/deep/Some File.TXT", &noise(9000, 9))
        .unwrap();
    vol.create_dir("/loader/empty").unwrap();
    // Longest allowed name, and non-ASCII ones (short alias gets '_', LFN keeps UTF-16).
    let longest = format!("/names/{}.txt", "n".repeat(251));
    vol.write_file(&longest, b"255").unwrap();
    vol.write_file("/names/ünïcode ✓.txt", b"utf").unwrap();
    vol.write_file("/names/emoji-\u{1F600}", b"surrogates")
        .unwrap();
    let names: Vec<String> = vol
        .read_dir("/names")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, [&longest[7..], "ünïcode ✓.txt", "emoji-\u{1F600}"]);
    assert_eq!(vol.read_file("/NAMES/ÜNÏCODE ✓.TXT").unwrap(), b"utf");
    drop(vol);
    fsck(img.path(), size);
    assert_eq!(
        mtype(img.path(), "/p6os/unattended.yaml"),
        b"hostname: edge-1\n"
    );
    assert_eq!(
        mtype(img.path(), "/new/dir/deep/Some File.TXT"),
        noise(9000, 9)
    );

    // Replace with smaller and larger contents.
    let mut vol = open_file(img.path(), size);
    vol.write_file("/p6os/a/vmlinuz", b"tiny").unwrap();
    vol.write_file("/p6os/b/vmlinuz", &noise(3 * MIB as usize, 5))
        .unwrap();
    vol.write_file("/p6os/empty", b"no longer empty").unwrap();
    vol.write_file("/p6os/manifest.json", b"").unwrap();
    drop(vol);
    fsck(img.path(), size);
    assert_eq!(mtype(img.path(), "/p6os/a/vmlinuz"), b"tiny");
    assert!(mtype(img.path(), "/p6os/b/vmlinuz") == noise(3 * MIB as usize, 5));
    assert_eq!(mtype(img.path(), "/p6os/empty"), b"no longer empty");
    assert_eq!(mtype(img.path(), "/p6os/manifest.json"), b"");

    // Renames: same directory, case only, over an existing file, across directories.
    let mut vol = open_file(img.path(), size);
    vol.rename(
        "/loader/entries/p6os-1.0.0-a+3.conf",
        "/loader/entries/p6os-1.0.0-a+2.conf",
    )
    .unwrap();
    vol.rename("/p6os/unattended.yaml", "/p6os/Unattended.yaml")
        .unwrap();
    vol.rename("/loader/loader.conf", "/loader/entries/p6os-2-b+2-1.conf")
        .unwrap();
    vol.rename("/new/dir", "/p6os/moved").unwrap();
    vol.rename("/EFI/BOOT/BOOTX64.EFI", "/EFI/BOOT/bootx64.efi")
        .unwrap();
    drop(vol);
    fsck(img.path(), size);
    let listing = mdir(img.path(), "/loader/entries");
    assert!(listing.contains("p6os-1.0.0-a+2.conf"), "{listing}");
    assert!(!listing.contains("a+3"), "{listing}");
    assert!(mdir(img.path(), "/p6os").contains("Unattended.yaml"));
    assert!(mdir(img.path(), "/EFI/BOOT").contains("bootx64.efi"));
    assert_eq!(
        mtype(img.path(), "/loader/entries/p6os-2-b+2-1.conf"),
        files[1].data
    );
    assert_eq!(
        mtype(img.path(), "/p6os/moved/deep/Some File.TXT"),
        noise(9000, 9)
    );
    assert!(mtype(img.path(), "/efi/boot/BOOTX64.EFI") == files[0].data);

    // Removals.
    let mut vol = open_file(img.path(), size);
    vol.remove_file("/p6os/a/initrd.img").unwrap();
    vol.remove_file("/p6os/Unattended.yaml").unwrap();
    vol.remove_file("/p6os/manifest.json").unwrap();
    assert!(matches!(
        vol.remove_file("/p6os/a/initrd.img"),
        Err(FatError::NotFound { .. })
    ));
    let entries = vol.read_dir("/p6os").unwrap();
    let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "empty", "moved"]);
    drop(vol);
    fsck(img.path(), size);
    assert!(!mdir(img.path(), "/p6os/a").contains("initrd"));
}

#[test]
fn reads_and_writes_volume_made_by_mkfs_and_mcopy() {
    let size = 64 * MIB;
    let img = image_file(size);
    let out = Command::new(tool("mkfs.vfat", "dosfstools"))
        .args(["-F", "32", "-s", "1", "-n", "ESP"])
        .arg(format!("--offset={}", OFFSET / 512))
        .arg(img.path())
        .arg((size / 1024).to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mkfs.vfat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let src = tempfile::tempdir().unwrap();
    let mut files = esp_files();
    files.retain(|f| !f.data.is_empty());
    files.push(file("/loader/entries/lower.cfg", b"x".to_vec()));
    files.push(file("/Mixed Case Name.Txt", noise(5000, 8)));
    for (i, f) in files.iter().enumerate() {
        let local = src.path().join(i.to_string());
        std::fs::write(&local, &f.data).unwrap();
        let parent = Path::new(&f.path).parent().unwrap().to_str().unwrap();
        let mut dir = String::new();
        for comp in parent.split('/').filter(|c| !c.is_empty()) {
            dir = format!("{dir}/{comp}");
            let exists = Command::new(tool("mdir", "mtools"))
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-i")
                .arg(format!("{}@@{OFFSET}", img.path().display()))
                .arg(format!("::{dir}"))
                .output()
                .unwrap()
                .status
                .success();
            if !exists {
                mtools("mmd", img.path(), &[&format!("::{dir}")]);
            }
        }
        mtools(
            "mcopy",
            img.path(),
            &[local.to_str().unwrap(), &format!("::{}", f.path)],
        );
    }

    let mut vol = open_file(img.path(), size);
    assert_contents(&mut vol, &files);
    let root: Vec<String> = vol
        .read_dir("/")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(
        root.contains(&"Mixed Case Name.Txt".to_string()),
        "{root:?}"
    );
    assert!(root.contains(&"loader".to_string()), "{root:?}");
    assert!(
        !root.iter().any(|n| n == "ESP"),
        "volume label listed: {root:?}"
    );
    // mcopy stores lower-case 8.3 names with the NT case flags instead of LFN entries.
    let entries = vol.read_dir("/loader/entries").unwrap();
    assert!(entries
        .iter()
        .any(|e| e.name == "lower.cfg" && e.short_name == "LOWER.CFG"));
    let a = vol.read_dir("/p6os/a").unwrap();
    assert!(a
        .iter()
        .any(|e| e.name == "vmlinuz" && e.size == files[4].data.len() as u32));

    // And our writer on their volume.
    vol.write_file("/p6os/unattended.yaml", b"a: b\n").unwrap();
    vol.rename("/p6os/manifest.json", "/p6os/manifest.old.json")
        .unwrap();
    vol.remove_file("/p6os/a/initrd.img").unwrap();
    drop(vol);
    fsck(img.path(), size);
    assert_eq!(mtype(img.path(), "/p6os/unattended.yaml"), b"a: b\n");
    assert_eq!(mtype(img.path(), "/p6os/manifest.old.json"), files[7].data);
}

#[test]
fn fsck_check_catches_problems() {
    // The fsck helper must not pass vacuously: a wrong FSInfo free count is a complaint.
    let size = 64 * MIB;
    let img = format_file(size, &esp_files());
    let mut f = File::options().write(true).open(img.path()).unwrap();
    f.seek(SeekFrom::Start(OFFSET + 512 + 488)).unwrap();
    f.write_all(&7u32.to_le_bytes()).unwrap();
    drop(f);
    let result = std::panic::catch_unwind(|| fsck(img.path(), size));
    let msg = *result.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("Free cluster summary wrong"), "{msg}");
}

/// What power cuts leave: a leftover temporary file, a chain no entry reaches, the dirty flag
/// and a stale free count. `fsck.vfat -n` complains before the repair and not after.
fn damage_and_repair(img: &Path, size: u64) {
    {
        let mut vol = open_file(img, size);
        vol.write_file("/p6os/b/vmlinuz.new", &noise(300_000, 7))
            .unwrap();
    }
    let mut bytes = std::fs::read(img).unwrap();
    let vol = open_file(img, size);
    let (fat0, fat1) = (vol.geo.fat_pos(0), vol.geo.fat_pos(1));
    let last = vol.geo.cluster_count + 1;
    drop(vol);
    for fat in [fat0, fat1] {
        for c in last - 9..=last {
            let at = (OFFSET + fat) as usize + c as usize * 4;
            let next = if c == last { FAT_EOC } else { c + 1 };
            bytes[at..at + 4].copy_from_slice(&next.to_le_bytes());
        }
    }
    bytes[OFFSET as usize + 0x41] |= 1;
    std::fs::write(img, &bytes).unwrap();
    let before = std::panic::catch_unwind(|| fsck(img, size));
    let msg = *before.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("Dirty bit"), "{msg}");

    let mut vol = open_file(img, size);
    let plan = vol.plan_repair(&super::repair_tests::dot_new).unwrap();
    assert!(plan.problems.is_empty(), "{plan:?}");
    assert_eq!(plan.remove.len(), 1);
    assert!(plan.lost_clusters() >= 10, "{plan:?}");
    assert!(plan.dirty);
    vol.repair(&plan).unwrap();
    drop(vol);
    fsck(img, size);
    let mut vol = open_file(img, size);
    assert!(vol
        .plan_repair(&super::repair_tests::dot_new)
        .unwrap()
        .is_clean());
}

#[test]
fn fsck_finds_nothing_after_a_repair_of_our_volume() {
    let size = 64 * MIB;
    let img = format_file(size, &esp_files());
    damage_and_repair(img.path(), size);
    let mut vol = open_file(img.path(), size);
    assert_contents(&mut vol, &esp_files());
}

#[test]
fn fsck_finds_nothing_after_a_repair_of_a_mkfs_volume() {
    let size = 64 * MIB;
    let img = image_file(size);
    let out = Command::new(tool("mkfs.vfat", "dosfstools"))
        .args(["-F", "32", "-s", "1", "-n", "ESP"])
        .arg(format!("--offset={}", OFFSET / 512))
        .arg(img.path())
        .arg((size / 1024).to_string())
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut vol = open_file(img.path(), size);
    vol.write_file("/p6os/a/vmlinuz", &noise(200_000, 1))
        .unwrap();
    drop(vol);
    damage_and_repair(img.path(), size);
    assert_eq!(mtype(img.path(), "/p6os/a/vmlinuz"), noise(200_000, 1));
}
