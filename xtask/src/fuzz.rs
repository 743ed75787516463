//! `cargo xtask fuzz [--seconds N] [TARGET...]`: the parsers' fuzz targets (`fuzz/`), each for a
//! bounded time, with cargo-fuzz on stable Rust (`-s none`: coverage-guided, no sanitizer).
//!
//! Everything generated stays under `target/fuzz/`: the build (a target directory of its own, as
//! the flags differ), the seeds (copied from the repository's own YAML files on every run), the
//! corpus each run grows, scratch files. Crashing
//! inputs land where cargo fuzz puts them, `fuzz/artifacts/<target>/` (git-ignored).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// The fuzz targets, in the order they run.
pub const TARGETS: &[&str] = &[
    "unattended",
    "recipe",
    "bundle",
    "gpt",
    "boot_text",
    "boot_bytes",
    "bmap",
    "fat_repair",
    "console_bodies",
    "pe",
    "site_keys",
];
/// Seconds per target for `cargo xtask fuzz`.
pub const DEFAULT_SECONDS: u64 = 20;
/// Seconds per target in `cargo xtask test` (10 x 12 s).
pub const TEST_SECONDS: u64 = 12;
/// Installed when `cargo fuzz` is missing; builds on stable Rust.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const FUZZ_DIR: &str = "fuzz";
const OUT: &str = "target/fuzz";

/// Parses `[--seconds N] [TARGET...]`.
pub fn cli(args: &[&str]) -> Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(&arg) = args.next() {
        match arg {
            "--seconds" => {
                let n = args.next().context("--seconds needs a number")?;
                seconds = n
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .with_context(|| format!("--seconds: `{n}` is not a positive number"))?;
            }
            t if TARGETS.contains(&t) => targets.push(t),
            other => bail!(
                "unknown fuzz target or option `{other}`; targets: {}",
                TARGETS.join(", ")
            ),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    run(seconds, &targets)
}

/// Builds the fuzz targets, then runs each for `seconds`. A crash is an error naming the input.
pub fn run(seconds: u64, targets: &[&str]) -> Result<()> {
    ensure_cargo_fuzz()?;
    if !has_cxx() {
        bail!(
            "libfuzzer-sys builds libFuzzer with a C++ compiler and `c++` is missing; \
             run as root: apt-get install -y --no-install-recommends g++ (or `cargo xtask deps`)"
        );
    }
    let sh = Shell::new()?;
    // The same options for build and run, else `cargo fuzz run` builds again.
    let opts = ["-s", "none", "--fuzz-dir", FUZZ_DIR, "--target-dir", OUT];

    let started = Instant::now();
    eprintln!("xtask: building fuzz targets (cargo fuzz build -s none, stable Rust)");
    for t in targets {
        cmd!(sh, "cargo fuzz build {opts...} {t}")
            .run()
            .with_context(|| format!("building fuzz target `{t}`"))?;
    }
    eprintln!(
        "xtask: fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    for &t in targets {
        let seeds = seeds(t)?;
        let corpus = PathBuf::from(OUT).join("corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        let scratch = crate::root().join(OUT).join("scratch").join(t);
        let mut corpora = vec![corpus.clone(), seeds];
        let committed = Path::new(FUZZ_DIR).join("seeds").join(t);
        if committed.is_dir() {
            corpora.push(committed);
        }
        let libfuzzer = [
            format!("-max_total_time={seconds}"),
            // An input that takes this long is a finding too, and the run stays bounded.
            "-timeout=30".to_string(),
            "-print_final_stats=1".to_string(),
        ];
        eprintln!(
            "xtask: fuzzing `{t}` for {seconds} s (new inputs go to {})",
            corpus.display()
        );
        let since = SystemTime::now();
        let started = Instant::now();
        let result = cmd!(
            sh,
            "cargo fuzz run {opts...} {t} {corpora...} -- {libfuzzer...}"
        )
        .env("P6OS_FUZZ_SCRATCH", &scratch)
        .run();
        let _ = std::fs::remove_dir_all(&scratch);
        if let Err(e) = result {
            report_artifacts(t, since);
            return Err(e).with_context(|| format!("fuzz target `{t}` failed"));
        }
        eprintln!(
            "xtask: fuzz target `{t}`: no crash in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `cargo fuzz`, installed with `cargo install` when missing.
fn ensure_cargo_fuzz() -> Result<()> {
    let works = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Ok(());
    }
    eprintln!("xtask: cargo fuzz is missing; cargo install cargo-fuzz --version {CARGO_FUZZ_VERSION} --locked");
    let started = Instant::now();
    let sh = Shell::new()?;
    cmd!(
        sh,
        "cargo install cargo-fuzz --version {CARGO_FUZZ_VERSION} --locked"
    )
    .run()
    .context("installing cargo-fuzz")?;
    eprintln!(
        "xtask: cargo-fuzz installed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn has_cxx() -> bool {
    Command::new("sh")
        .args(["-c", "command -v c++"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Seeds from the repository's own files, copied afresh into `target/fuzz/seeds/<target>`:
/// the YAML examples in `docs/unattended.md`; recipes and layer files; a small signed bundle;
/// the builder's golden bmap.
fn seeds(target: &str) -> Result<PathBuf> {
    let dir = PathBuf::from(OUT).join("seeds").join(target);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let mut n = 0;
    let mut put = |name: String, text: &str| -> Result<()> {
        n += 1;
        std::fs::write(dir.join(name), text)?;
        Ok(())
    };
    match target {
        "unattended" => {
            let doc = std::fs::read_to_string("docs/unattended.md")?;
            for (i, block) in yaml_blocks(&doc).into_iter().enumerate() {
                put(format!("docs-unattended-{i}.yaml"), block)?;
            }
        }
        "recipe" => {
            let mut files = Vec::new();
            yaml_files(Path::new("recipes"), &mut files)?;
            yaml_files(Path::new("images"), &mut files)?;
            for f in files {
                let name = f.to_string_lossy().replace('/', "-");
                put(name, &std::fs::read_to_string(&f)?)?;
            }
        }
        "bundle" => {
            // A small valid bundle signed with the key the target trusts.
            use p6os_bundle::testing::{trusted_key, TestBundle};
            let mut bundle = TestBundle::new("tiny", "2.0.0").rootfs_len(256);
            bundle.kernel.truncate(256);
            bundle.initrd.truncate(10);
            bundle.level = 3;
            let out = bundle.sign(&trusted_key());
            n += 1;
            std::fs::write(dir.join("small.p6b"), out)?;
        }
        "pe" => {
            // A small stub, and the image made from it.
            use p6os_efi::{testing::tiny_pe, uki};
            let stub = tiny_pe(&[(".text", 0x300), (".sbat", 0x20)], 0x1000, 0x200);
            let image = uki::assemble(
                &stub,
                &uki::Parts {
                    os_release: "ID=p6os\n",
                    cmdline: "ro",
                    kernel: b"kernel",
                    initrd: b"initrd",
                },
            )?;
            n += 2;
            std::fs::write(dir.join("stub.efi"), stub)?;
            std::fs::write(dir.join("uki.efi"), image)?;
        }
        "gpt" => {
            // The table of a real layout, as the builder writes it.
            use p6os_layout::{gpt, partition};
            let g = |n: u128| gpt::Guid::from_u128(n);
            let table = gpt::Gpt::layout(
                g(1),
                &[
                    (partition::ESP_LABEL, partition::TYPE_ESP, g(2), 1 << 20),
                    (
                        partition::ROOT_A_LABEL,
                        partition::TYPE_ROOT_X86_64,
                        g(3),
                        1 << 20,
                    ),
                    (partition::STATE_LABEL, partition::TYPE_VAR, g(4), 1 << 20),
                ],
            );
            let [(_, head), _] = table.encode();
            n += 1;
            std::fs::write(dir.join("layout.bin"), head)?;
        }
        "boot_text" => {
            put(
                "cmdline".into(),
                "BOOT_IMAGE=/p6os/a/vmlinuz p6os.slot=a root=PARTLABEL=p6os-root-a \
                 rootfstype=squashfs ro console=ttyS0 p6os.config=LABEL=CIDATA:/user-data \
                 p6os.rootwait=5 \"quoted value\" p6os.verity=3205:d178fc348aeb3b96207c54b66eaddc0\
                 2e66db0ffaf0302b36b5b5e5bebd431fd:f5e60522f35092afcd00c55bb0830f058fd402aaa4195b82\
                 4b99303dbd12e8ec",
            )?;
            put(
                "uevent".into(),
                "MAJOR=259\nMINOR=1\nDEVNAME=nvme0n1p2\nDEVTYPE=partition\nPARTN=2\n\
                 PARTNAME=p6os-root-a\n",
            )?;
            put(
                "modules.load".into(),
                "# virtio\nkernel/drivers/virtio/virtio.ko\nkernel/fs/erofs/erofs.ko.xz\n",
            )?;
            put(
                "mountinfo".into(),
                "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                 30 1 259:2 / / ro,relatime - squashfs /dev/nvme0n1p2 ro\n",
            )?;
            put(
                "entries".into(),
                &std::fs::read_to_string("layout/tests/entry-names.txt")?,
            )?;
        }
        "boot_bytes" => {
            // A FAT32 boot sector labelled CIDATA, an ext4 superblock labelled P6OS-CONFIG,
            // and a UTF-16 EFI variable with its 4 attribute bytes.
            let mut fat = vec![0u8; 512];
            fat[11..13].copy_from_slice(&512u16.to_le_bytes());
            fat[13] = 1;
            fat[66] = 0x29;
            fat[71..82].copy_from_slice(b"CIDATA     ");
            fat[82..87].copy_from_slice(b"FAT32");
            fat[510..512].copy_from_slice(&[0x55, 0xaa]);
            let mut ext4 = vec![0u8; 2048];
            ext4[1024 + 56..1024 + 58].copy_from_slice(&[0x53, 0xef]);
            ext4[1024 + 120..1024 + 131].copy_from_slice(b"P6OS-CONFIG");
            let mut var = vec![7, 0, 0, 0];
            for u in "0e4b0f6c-1111-4a2b-8c3d-aaaaaaaaaaaa\0".encode_utf16() {
                var.extend_from_slice(&u.to_le_bytes());
            }
            for (name, bytes) in [("fat", fat), ("ext4", ext4), ("efivar", var)] {
                n += 1;
                std::fs::write(dir.join(name), bytes)?;
            }
        }
        "bmap" => {
            let snap = std::fs::read_to_string(GOLDEN_BMAP)
                .with_context(|| format!("reading {GOLDEN_BMAP}"))?;
            put("golden.bmap".into(), &insta_body(&snap))?;
        }
        "fat_repair" => {
            n += 1;
            std::fs::write(dir.join("esp.img"), small_damaged_esp()?)?;
        }
        "console_bodies" => {
            // The first byte picks the body (pair, heartbeat, register, desired, selector,
            // list query), the rest is the body.
            let bodies: [(u8, &str); 6] = [
                (
                    0,
                    r#"{"pairing_token":"t","facts":{"hostname":"nuc","cpu_model":"x","cpu_count":2,"memory_bytes":1,"disks":[],"nics":[],"arch":"x86_64","base_os":"d","kernel":"6","image_name":"tiny","image_version":"1.0.0","agent_version":"0.1.0","slot":"a"}}"#,
                ),
                (
                    1,
                    r#"{"slot":"a","version":"1.0.0","health":"good","last_upgrade":{"kind":"success","from":"1.0.0","to":"2.0.0","at":1}}"#,
                ),
                (
                    2,
                    r#"{"id":"nuc-1","name":"Store 1","labels":{"site":"north"}}"#,
                ),
                (3, r#"{"version":"2.0.0"}"#),
                (4, r#"{"selector":{"site":"north"},"version":null}"#),
                (
                    5,
                    "status=ready&label=site%3Dnorth&version=1.0.0&limit=100&after=nuc-1",
                ),
            ];
            for (kind, body) in bodies {
                n += 1;
                let mut bytes = vec![kind];
                bytes.extend_from_slice(body.as_bytes());
                std::fs::write(dir.join(format!("body-{kind}")), bytes)?;
            }
        }
        "site_keys" => {
            // Byte 0: the document opened (odd: a whole site), bytes 1-2: the screen size,
            // then (key kind, value) pairs: a walk through every page, typing on each.
            let mut walk = vec![1u8, 70, 21];
            for _ in 0..12 {
                walk.extend_from_slice(&[14, 13]); // Ctrl-N: the next page
                walk.extend_from_slice(&[20, 33, 20, 40, 1, 0, 20, 50]); // text, Tab, text
            }
            walk.extend_from_slice(&[14, 18, 14, 18]); // Ctrl-S twice: review, save
            n += 1;
            std::fs::write(dir.join("walk"), walk)?;
            n += 1;
            std::fs::write(dir.join("new"), [0u8, 70, 21, 14, 13, 14, 0, 20, 40])?;
        }
        _ => bail!("no seeds for fuzz target `{target}`"),
    }
    if n == 0 {
        bail!("no seeds found for fuzz target `{target}`");
    }
    Ok(dir)
}

/// A 24 KiB volume with FAT32's layout (too few clusters to be FAT32 by count, which the
/// reader does not require), holding what a power cut leaves: a file, a leftover `.new`,
/// a lost chain and the dirty flag. Small, so libFuzzer's mutations reach every structure.
fn small_damaged_esp() -> Result<Vec<u8>> {
    use p6os_builder::fat::FatVolume;
    const SECTORS: u32 = 48;
    let mut img = vec![0u8; SECTORS as usize * 512];
    let put16 = |b: &mut [u8], at: usize, v: u16| b[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 = |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    img[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
    put16(&mut img, 11, 512);
    img[13] = 1; // sectors per cluster
    put16(&mut img, 14, 4); // reserved: boot sector, FSInfo, backup boot sector at 2
    img[16] = 2; // FATs
    img[21] = 0xF8;
    put32(&mut img, 32, SECTORS);
    put32(&mut img, 36, 1); // sectors per FAT: 128 entries
    put32(&mut img, 44, 2); // root cluster
    put16(&mut img, 48, 1);
    put16(&mut img, 50, 2);
    img[66] = 0x29;
    img[82..90].copy_from_slice(b"FAT32   ");
    img[510] = 0x55;
    img[511] = 0xAA;
    let backup = img[..512].to_vec();
    img[1024..1536].copy_from_slice(&backup);
    let fsinfo = 512;
    put32(&mut img, fsinfo, 0x4161_5252);
    put32(&mut img, fsinfo + 484, 0x6141_7272);
    put32(&mut img, fsinfo + 488, 0xFFFF_FFFF);
    put32(&mut img, fsinfo + 492, 0xFFFF_FFFF);
    put32(&mut img, fsinfo + 508, 0xAA55_0000);
    for fat in [4usize, 5] {
        let at = fat * 512;
        put32(&mut img, at, 0x0FFF_FFF8);
        put32(&mut img, at + 4, 0x0FFF_FFFF);
        put32(&mut img, at + 8, 0x0FFF_FFFF); // the root directory
    }
    let len = img.len() as u64;
    let mut vol = FatVolume::open(std::io::Cursor::new(img), 0, len)?;
    vol.write_file("/loader/entries/p6os-1-a.conf", b"title P6OS\nversion 1\n")?;
    vol.write_file("/p6os/a/vmlinuz", &[0x4d; 1500])?;
    vol.write_file("/p6os/a/vmlinuz.new", &[0x5a; 700])?;
    let mut img = vol.into_inner().into_inner();
    // A lost chain of two clusters near the end, in both FATs, and the dirty flag.
    for fat in [4usize, 5] {
        let at = fat * 512;
        put32(&mut img, at + 40 * 4, 41);
        put32(&mut img, at + 41 * 4, 0x0FFF_FFFF);
    }
    img[0x41] |= 1;
    Ok(img)
}

/// The builder's golden bmap (an insta snapshot): a bmap that `bmaptool copy` accepts.
const GOLDEN_BMAP: &str =
    "builder/src/outputs/snapshots/p6os_builder__outputs__bmap_tests__golden_bmap_of_a_tiny_image.snap";

/// The text an insta snapshot holds, as the code produced it: after the `---` header, with the
/// final newline insta trims (the bmap's own checksum covers it).
fn insta_body(snap: &str) -> String {
    let body = snap.splitn(3, "---\n").nth(2).unwrap_or(snap);
    format!("{}\n", body.trim_end())
}

/// The bodies of the ```yaml blocks of a Markdown document.
fn yaml_blocks(doc: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find("```yaml\n") {
        let body = &rest[start + "```yaml\n".len()..];
        let Some(end) = body.find("```") else { break };
        blocks.push(&body[..end]);
        rest = &body[end + 3..];
    }
    blocks
}

/// `*.yaml` under `dir`, recursively, sorted.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "yaml") {
            out.push(p);
        }
    }
    Ok(())
}

/// Prints the inputs cargo fuzz saved since `since`, in hex too, and how to replay them.
fn report_artifacts(target: &str, since: SystemTime) {
    let dir = Path::new(FUZZ_DIR).join("artifacts").join(target);
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    if found.is_empty() {
        eprintln!(
            "xtask: fuzz target `{target}` failed without saving an input (build or setup error?)"
        );
        return;
    }
    for f in found {
        let bytes = std::fs::read(&f).unwrap_or_default();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        eprintln!(
            "xtask: fuzz target `{target}` failed on input {}",
            f.display()
        );
        eprintln!("xtask:   {} bytes, hex: {hex}", bytes.len());
        eprintln!(
            "xtask:   replay: cargo fuzz run -s none --fuzz-dir {FUZZ_DIR} --target-dir {OUT} {target} {}",
            f.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed is a bmap the flash accepts, its own checksum included.
    #[test]
    fn the_golden_bmap_seed_is_a_valid_bmap() {
        let snap = std::fs::read_to_string(crate::root().join(GOLDEN_BMAP)).unwrap();
        let plan = p6os_builder::flash::plan::parse_bmap(&insta_body(&snap)).unwrap();
        assert_eq!(plan.ranges.len(), 3);
    }

    /// The FAT seed opens and needs every kind of repair the agent makes.
    #[test]
    fn the_fat_seed_needs_a_repair() {
        use p6os_builder::fat::FatVolume;
        let img = small_damaged_esp().unwrap();
        let len = img.len() as u64;
        let mut vol = FatVolume::open(std::io::Cursor::new(img), 0, len).unwrap();
        let plan = vol.plan_repair(&p6os_layout::esp::is_leftover).unwrap();
        assert!(plan.problems.is_empty(), "{plan:?}");
        assert_eq!(plan.remove.len(), 1, "{plan:?}");
        assert_eq!(plan.lost_clusters(), 2 + 2, "{plan:?}");
        assert!(plan.dirty && plan.free_count.is_some());
        vol.repair(&plan).unwrap();
        let mut vol = FatVolume::open(vol.into_inner(), 0, len).unwrap();
        assert!(vol
            .plan_repair(&p6os_layout::esp::is_leftover)
            .unwrap()
            .is_clean());
    }
}
