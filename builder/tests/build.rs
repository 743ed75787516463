//! End-to-end builds of the tiny recipe with the real `p6os` binary: reproducibility, the on-disk
//! layout (golden), the standard tools' verdicts, and bad recipes that must leave nothing behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const P6OS: &str = env!("CARGO_BIN_EXE_p6os");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The static agent (`cargo xtask agent` or `cargo xtask test` build it).
fn agent() -> PathBuf {
    let p = std::env::var_os("P6OS_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/x86_64-unknown-linux-gnu/release-agent/p6os-agent"));
    assert!(
        p.is_file(),
        "agent {} missing: run `cargo xtask agent` first",
        p.display()
    );
    p
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("running p6os");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(e.path()).unwrap(), &dest).unwrap();
        } else if ft.is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Copies recipes/, images/ and the agent under `root`, adds a layer with a host directory and a
/// local tarball (modes from `perm`, so umask-like differences reach the build), and stamps every
/// input file with `mtime`. Returns the recipe and the agent.
fn copy_inputs(root: &Path, mtime: i64, perm: u32) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    copy_tree(&repo().join("recipes"), &root.join("recipes"));
    copy_tree(&repo().join("images"), &root.join("images"));
    let test = root.join("images/test");
    fs::create_dir_all(test.join("extra-dir/bin")).unwrap();
    fs::write(test.join("extra-dir/motd"), "hello from a dir layer\n").unwrap();
    fs::set_permissions(
        test.join("extra-dir/motd"),
        fs::Permissions::from_mode(perm & 0o666),
    )
    .unwrap();
    fs::write(test.join("extra-dir/bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(
        test.join("extra-dir/bin/tool"),
        fs::Permissions::from_mode(perm | 0o100),
    )
    .unwrap();
    std::os::unix::fs::symlink("../motd", test.join("extra-dir/bin/motd")).unwrap();
    let mut tarball = p6os_builder::tree::Tree::new();
    let mut owned = p6os_builder::tree::Entry::file(b"owned by uid 1000\n".to_vec(), 0o640);
    owned.uid = 1000;
    owned.gid = 100;
    owned.mtime = 1_600_000_000;
    tarball.insert("home/user/owned", owned);
    let mut tar = Vec::new();
    tarball.write_tar(&mut tar).unwrap();
    fs::write(test.join("extra.tar"), tar).unwrap();
    fs::write(
        test.join("extra.yaml"),
        "name: extra\nsources:\n  - type: dir\n    path: extra-dir\n    target: /opt/extra\n  - type: tarball\n    path: extra.tar\n",
    )
    .unwrap();
    let recipe = root.join("recipes/tiny.yaml");
    let text = fs::read_to_string(&recipe).unwrap().replace(
        "rootfs: squashfs",
        "layers: [../images/test/extra.yaml]\nrootfs: squashfs",
    );
    fs::write(&recipe, text).unwrap();
    let agent_copy = root.join("p6os-agent");
    fs::copy(agent(), &agent_copy).unwrap();
    let stamp = filetime::FileTime::from_unix_time(mtime, 0);
    for dir in ["recipes", "images"] {
        stamp_all(&root.join(dir), stamp);
    }
    filetime::set_file_mtime(&agent_copy, stamp).unwrap();
    (recipe, agent_copy)
}

fn stamp_all(dir: &Path, t: filetime::FileTime) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_symlink() {
            continue;
        }
        if p.is_dir() {
            stamp_all(&p, t);
        }
        filetime::set_file_mtime(&p, t).unwrap();
    }
}

struct Builds {
    _dir: tempfile::TempDir,
    images: Vec<PathBuf>,
}

/// Two builds of the tiny recipe from copies of the inputs in different directories, with
/// different umasks and input mtimes. Built once per test binary.
fn builds() -> &'static Builds {
    static B: OnceLock<Builds> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut images = Vec::new();
        let variants = [
            ("one", "022", 1_000_000_000, 0o644),
            // Group-writable but world-readable: normalised like 0644 (private modes, not
            // world-readable, are kept on purpose: see fetch's dir_sources_keep_private_modes).
            ("two/deeper", "077", 1_700_000_000, 0o664),
        ];
        for (i, (sub, umask, mtime, perm)) in variants.iter().enumerate() {
            let root = dir.path().join(sub);
            let (recipe, agent) = copy_inputs(&root, *mtime, *perm);
            let out = root.join("out");
            let script =
                format!("umask {umask} && exec \"$0\" build \"$1\" --out \"$2\" --agent \"$3\"");
            let o = run(Command::new("sh")
                .arg("-c")
                .arg(script)
                .arg(P6OS)
                .arg(&recipe)
                .arg(&out)
                .arg(&agent));
            assert!(o.status.success(), "build {i} failed");
            images.push(out.join("tiny-1.0.0.img"));
        }
        Builds { _dir: dir, images }
    })
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn two_builds_are_byte_identical() {
    let b = builds();
    assert_eq!(sha256(&b.images[0]), sha256(&b.images[1]));
    let manifest = |img: &Path| fs::read(img.with_file_name("tiny-1.0.0.manifest.json")).unwrap();
    assert_eq!(manifest(&b.images[0]), manifest(&b.images[1]));
    let m: serde_json::Value = serde_json::from_slice(&manifest(&b.images[0])).unwrap();
    assert_eq!(m["image"]["sha256"].as_str().unwrap(), sha256(&b.images[0]));
}

#[test]
fn layout_matches_golden_and_inspect_json() {
    let img = &builds().images[0];
    let out = run(Command::new(P6OS).arg("inspect").arg(img).arg("--json"));
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut gpt = String::new();
    for p in j["partitions"].as_array().unwrap() {
        gpt += &format!(
            "{} {} {} {}..{}\n",
            p["number"],
            p["label"].as_str().unwrap(),
            p["type_guid"].as_str().unwrap(),
            p["first_lba"],
            p["last_lba"]
        );
    }
    insta::assert_snapshot!("gpt", gpt);
    // GUIDs are UUID v5 of the recipe digest, not random.
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(img.with_file_name("tiny-1.0.0.manifest.json")).unwrap())
            .unwrap();
    let digest = manifest["recipe_digest"].as_str().unwrap();
    assert_eq!(
        j["disk_guid"],
        p6os_builder::image::derived_guid(digest, "disk").to_string()
    );
    for p in j["partitions"].as_array().unwrap() {
        let label = p["label"].as_str().unwrap();
        assert_eq!(
            p["guid"],
            p6os_builder::image::derived_guid(digest, label).to_string(),
            "{label}"
        );
    }
    insta::assert_snapshot!(
        "entries",
        serde_json::to_string_pretty(&j["entries"]).unwrap()
    );
    assert_eq!(j["slots"]["a"]["version"], "1.0.0");
    assert!(j["slots"]["b"]["version"].is_null());

    let mtools = |args: &[&str]| {
        let o = Command::new(args[0])
            .args(&args[1..])
            .env("MTOOLS_SKIP_CHECK", "1")
            .output()
            .expect("mtools (package mtools)");
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let esp = format!("{}@@{}", img.display(), partition(img, "p6os-esp").0 * 512);
    let mut listing: Vec<String> = mtools(&["mdir", "-/", "-b", "-i", &esp, "::/"])
        .lines()
        .map(str::to_string)
        .collect();
    listing.sort();
    insta::assert_snapshot!("esp-listing", listing.join("\n"));
    insta::assert_snapshot!(
        "loader.conf",
        mtools(&["mtype", "-i", &esp, "::/loader/loader.conf"])
    );
    insta::assert_snapshot!(
        "entry",
        mtools(&["mtype", "-i", &esp, "::/loader/entries/p6os-1.0.0-a.conf"])
    );
    // The unified kernel image: its command line carries the slot's verity root hash (which
    // changes with every input, the agent's build too: checked against the manifest), its
    // os-release the version, and it is signed with the development key.
    let dir = tempfile::tempdir().unwrap();
    let uki_path = dir.path().join("p6os.efi");
    mtools(&[
        "mcopy",
        "-i",
        &esp,
        "::/p6os/a/p6os.efi",
        uki_path.to_str().unwrap(),
    ]);
    let uki = fs::read(&uki_path).unwrap();
    let section = |name: &str| {
        String::from_utf8(
            p6os_efi::pe::section_data(&uki, name)
                .unwrap()
                .unwrap()
                .to_vec(),
        )
        .unwrap()
    };
    let verity = manifest["slot_a"]["rootfs"]["verity"].as_str().unwrap();
    assert_eq!(
        section(".cmdline"),
        format!("rootfstype=squashfs ro console=ttyS0 p6os.verity={verity} panic=10 quiet")
    );
    assert!(section(".osrel").contains("IMAGE_VERSION=1.0.0\n"));
    assert_eq!(
        manifest["slot_a"]["uki"]["sha256"].as_str().unwrap(),
        sha256(&uki_path)
    );
    let (dev_keys, _) = p6os_builder::secureboot::dev_keys().unwrap();
    let v = Command::new("sbverify")
        .arg("--cert")
        .arg(dev_keys.join("db.crt"))
        .arg(&uki_path)
        .output()
        .expect("sbverify (package sbsigntool)");
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

#[test]
fn standard_tools_find_no_problems() {
    let img = &builds().images[0];
    let v = Command::new("sgdisk")
        .arg("-v")
        .arg(img)
        .output()
        .expect("sgdisk (package gdisk)");
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(
        v.status.success() && text.contains("No problems found"),
        "sgdisk -v: {text}"
    );
    fsck_esp(img);
    let state_offset = partition(img, "p6os-state").0 * 512;
    let e = Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={state_offset}", img.display()))
        .output()
        .expect("e2fsck (package e2fsprogs)");
    assert!(
        e.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&e.stdout)
    );
}

/// First LBA and length in sectors of the partition labelled `label`, as `p6os inspect` reports it.
fn partition(img: &Path, label: &str) -> (u64, u64) {
    let out = run(Command::new(P6OS).arg("inspect").arg(img).arg("--json"));
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = j["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["label"] == label)
        .unwrap()
        .clone();
    let first = p["first_lba"].as_u64().unwrap();
    (first, p["last_lba"].as_u64().unwrap() - first + 1)
}

/// `fsck.vfat -n` on the image's ESP (it has no offset option: a copy of the partition is checked).
fn fsck_esp(img: &Path) {
    let (lba, sectors) = partition(img, "p6os-esp");
    let dir = tempfile::tempdir().unwrap();
    let esp = dir.path().join("esp.img");
    let dd = Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", esp.display()))
        .arg(format!("skip={lba}"))
        .arg(format!("count={sectors}"))
        .args(["bs=512", "status=none"])
        .status()
        .unwrap();
    assert!(dd.success());
    let f = Command::new("fsck.vfat")
        .arg("-n")
        .arg(&esp)
        .output()
        .expect("fsck.vfat (package dosfstools)");
    assert!(
        f.status.success(),
        "fsck.vfat -n: {}{}",
        String::from_utf8_lossy(&f.stdout),
        String::from_utf8_lossy(&f.stderr)
    );
}

/// Writes a recipe in `dir` from the tiny one with `edit` applied; layers point into the repository.
fn recipe_with(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let images = repo().join("images");
    let text = fs::read_to_string(repo().join("recipes/tiny.yaml"))
        .unwrap()
        .replace("../images", images.to_str().unwrap());
    let path = dir.join("bad.yaml");
    fs::write(&path, edit(text)).unwrap();
    path
}

fn build_fails(recipe: &Path, out: &Path) -> String {
    let o = run(Command::new(P6OS)
        .arg("build")
        .arg(recipe)
        .arg("--out")
        .arg(out)
        .arg("--agent")
        .arg(agent()));
    assert!(!o.status.success(), "build of a bad recipe succeeded");
    let leftovers: Vec<_> = fs::read_dir(out)
        .map(|r| r.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "a failed build left {leftovers:?} behind"
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unknown_keys_and_missing_layers_are_all_reported() {
    let dir = tempfile::tempdir().unwrap();
    let r = recipe_with(dir.path(), |t| {
        t.replace("  slot: 96MiB", "  slto: 96MiB")
            .replace("debian-generic.yaml", "no-such-kernel.yaml")
    });
    let o = run(Command::new(P6OS).arg("validate").arg("recipe").arg(&r));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "bad.yaml:13:3: partitions.slto: unknown field `slto`\n  hint: did you mean `slot`?"
        ),
        "{err}"
    );
    assert!(err.contains("partitions: missing field `slot`"), "{err}");
    assert!(
        err.contains("bad.yaml:8:9: kernel: layer file")
            && err.contains("no-such-kernel.yaml` not found"),
        "{err}"
    );
    assert!(err.contains("3 problems found"), "{err}");
    // Semantic problems are reported together too.
    let r = recipe_with(dir.path(), |t| {
        t.replace("debian-generic.yaml", "no-such-kernel.yaml")
            .replace("boot:\n  tries: 3", "boot:\n  tries: 0")
    });
    let o = run(Command::new(P6OS).arg("validate").arg("recipe").arg(&r));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.yaml:8:9: kernel: layer file"), "{err}");
    assert!(err.contains("boot.tries: must be at least 1"), "{err}");
    assert!(err.contains("2 problems found"), "{err}");
    assert!(build_fails(&r, &dir.path().join("out")).contains("no-such-kernel.yaml"));
}

#[test]
fn wrong_sha256_fails_and_leaves_no_image() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("extra.tar"), b"").unwrap();
    fs::write(
        dir.path().join("extra.yaml"),
        format!(
            "name: extra\nsources:\n  - type: tarball\n    path: extra.tar\n    sha256: {}\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let r = recipe_with(dir.path(), |t| {
        t.replace("rootfs: squashfs", "layers: [extra.yaml]\nrootfs: squashfs")
    });
    let err = build_fails(&r, &dir.path().join("out"));
    assert!(
        err.contains("layer `extra`") && err.contains("sha256 mismatch: expected abab"),
        "{err}"
    );
}

#[test]
fn slot_too_small_fails_and_leaves_no_image() {
    let dir = tempfile::tempdir().unwrap();
    let r = recipe_with(dir.path(), |t| t.replace("slot: 96MiB", "slot: 8MiB"));
    let err = build_fails(&r, &dir.path().join("out"));
    assert!(
        err.contains("slot too small: the root filesystem is")
            && err.contains("raise partitions.slot"),
        "{err}"
    );
}

#[test]
fn initramfs_classes_are_checked_and_a_missing_module_names_its_class() {
    let dir = tempfile::tempdir().unwrap();
    let r = recipe_with(dir.path(), |t| {
        t.replace(
            "boot:\n",
            "boot:\n  initramfs:\n    Bad_Class: [ahci]\n    sata: [ahci]\n    empty: []\n    odd: [\"x.ko\"]\n",
        )
    });
    let o = run(Command::new(P6OS).arg("validate").arg("recipe").arg(&r));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    for expected in [
        "boot.initramfs.Bad_Class: invalid class name `Bad_Class`",
        "debian-generic.yaml` already has class `sata`",
        "boot.initramfs.empty: names no module",
        "boot.initramfs.odd[0]: invalid module name `x.ko`",
        "4 problems found",
    ] {
        assert!(err.contains(expected), "{expected}\n{err}");
    }
    // A module the kernel does not have stops the build, naming the class.
    let r = recipe_with(dir.path(), |t| {
        t.replace(
            "boot:\n",
            "boot:\n  initramfs:\n    wifi: [no_such_driver]\n",
        )
    });
    let err = build_fails(&r, &dir.path().join("out"));
    assert!(
        err.contains("initramfs class `wifi`: kernel 6.1.0-")
            && err.contains("has no module `no_such_driver`"),
        "{err}"
    );
}

#[test]
fn schema_is_valid_json_with_every_field() {
    let o = run(Command::new(P6OS).args(["schema", "recipe"]));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let props = s["properties"].as_object().unwrap();
    for k in [
        "name",
        "version",
        "arch",
        "base",
        "kernel",
        "kernel_modules",
        "bootloader",
        "kubernetes",
        "layers",
        "partitions",
        "rootfs",
        "boot",
    ] {
        assert!(props.contains_key(k), "schema lacks {k}");
    }
    assert_eq!(s["additionalProperties"], false);
}

/// Assembly needs no root: when the suite runs as root, build again as `nobody` (with a copy of
/// the download cache, so this proves the assembly, not apt's download as a user).
#[test]
fn builds_as_an_ordinary_user() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!(
            "skipped: the suite already runs as an ordinary user, which the other builds prove"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (recipe, agent) = copy_inputs(root, 1_000_000_000, 0o664);
    let cache = root.join("cache");
    let home_cache = std::env::var_os("P6OS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/p6os"));
    if home_cache.join("blobs").is_dir() {
        copy_tree(&home_cache.join("blobs"), &cache.join("blobs"));
    }
    // The same development keys (a copy nobody can read), as the builds compared with.
    let (dev_keys, _) = p6os_builder::secureboot::dev_keys().unwrap();
    copy_tree(&dev_keys, &root.join("dev-keys"));
    // The checkout may sit in a directory nobody cannot enter (e.g. /root): run a copy.
    let p6os = root.join("p6os");
    fs::copy(P6OS, &p6os).unwrap();
    let chown = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(root)
        .status()
        .unwrap();
    assert!(chown.success());
    fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = root.join("out");
    let o = run(Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(&p6os)
        .arg("build")
        .arg(&recipe)
        .arg("--out")
        .arg(&out)
        .arg("--agent")
        .arg(&agent)
        .arg("--cache")
        .arg(&cache)
        .env("HOME", root)
        .env("P6OS_DEV_KEYS", root.join("dev-keys")));
    assert!(o.status.success(), "build as nobody failed");
    assert_eq!(
        sha256(&out.join("tiny-1.0.0.img")),
        sha256(&builds().images[0]),
        "the image built as nobody differs from the one built as root"
    );
}

/// `p6os config inject`: a valid file lands on the ESP (readable by mtools, fsck clean); an
/// invalid one is refused with its problems and the image keeps every byte.
#[test]
fn config_inject_writes_valid_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let cp = Command::new("cp")
        .arg("--sparse=always")
        .arg(&builds().images[0])
        .arg(&img)
        .status()
        .unwrap();
    assert!(cp.success());
    let good = dir.path().join("good.yaml");
    fs::write(&good, "#cloud-config\nhostname: store-0421\n").unwrap();
    let o = run(Command::new(P6OS)
        .args(["config", "inject"])
        .arg(&img)
        .arg(&good));
    assert!(o.status.success());
    let esp = format!("{}@@{}", img.display(), partition(&img, "p6os-esp").0 * 512);
    let t = Command::new("mtype")
        .args(["-i", &esp, "::/p6os/unattended.yaml"])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&t.stdout),
        "#cloud-config\nhostname: store-0421\n"
    );
    fsck_esp(&img);

    let before = sha256(&img);
    let bad = dir.path().join("bad.yaml");
    fs::write(&bad, "hostname: store-0421\nnetwork:\n  interfaces:\n    - name: eth0\n      adresses: [10.0.0.5/24]\n").unwrap();
    let o = run(Command::new(P6OS)
        .args(["config", "inject"])
        .arg(&img)
        .arg(&bad));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.yaml:5:7: network.interfaces[0].adresses: unknown field `adresses`"),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(sha256(&img), before, "a refused config changed the image");
}

/// `upgrades.config_keys` and `upgrades.security_floor` are checked with the recipe: a key
/// file that is not a public key, and a floor above the recipe's own version, are reported.
#[test]
fn config_keys_and_security_floor_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("not-a-key.pub"), "hello\n").unwrap();
    let r = recipe_with(dir.path(), |t| {
        format!(
            "{t}upgrades:\n  config_keys: [{}]\n  security_floor: 2.0.0\n",
            dir.path().join("not-a-key.pub").display()
        )
    });
    let o = run(Command::new(P6OS).arg("validate").arg("recipe").arg(&r));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("upgrades.config_keys[0]: cannot use") && err.contains("p6os keygen"),
        "{err}"
    );
    assert!(
        err.contains(
            "upgrades.security_floor: the floor 2.0.0 is above the recipe's version 1.0.0"
        ),
        "{err}"
    );
}

/// `p6os config sign`: a valid document gets `FILE.sig` naming the key and the serial; an
/// invalid one is refused and nothing is signed.
#[test]
fn config_sign_signs_valid_documents_only() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    assert!(
        run(Command::new(P6OS).arg("keygen").arg("--out").arg(&keys))
            .status
            .success()
    );
    let doc = dir.path().join("unattended.yaml");
    fs::write(&doc, "hostname: store-0421\n").unwrap();
    let o = run(Command::new(P6OS)
        .args(["config", "sign"])
        .arg(&doc)
        .arg("--key")
        .arg(keys.join("p6os.key"))
        .args(["--serial", "12"]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sig = fs::read(dir.path().join("unattended.yaml.sig")).unwrap();
    let public = p6os_bundle::keys::PublicKey::from_file(
        &fs::read_to_string(keys.join("p6os.pub")).unwrap(),
    )
    .unwrap();
    let signed = p6os_bundle::configsig::verify(&fs::read(&doc).unwrap(), &sig, &[public]).unwrap();
    assert_eq!(signed.serial, 12);

    let bad = dir.path().join("bad.yaml");
    fs::write(&bad, "hostname: store_9!\n").unwrap();
    let o = run(Command::new(P6OS)
        .args(["config", "sign"])
        .arg(&bad)
        .arg("--key")
        .arg(keys.join("p6os.key"))
        .args(["--serial", "13"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing was signed"));
    assert!(!dir.path().join("bad.yaml.sig").exists());
}

/// Not a P6OS image: inspect and inject say so and write nothing.
#[test]
fn inspect_and_inject_refuse_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank.img");
    fs::write(&blank, vec![0u8; 1 << 20]).unwrap();
    let o = run(Command::new(P6OS).arg("inspect").arg(&blank));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no GPT found"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let cfg = dir.path().join("u.yaml");
    fs::write(&cfg, "hostname: a\n").unwrap();
    let o = run(Command::new(P6OS)
        .args(["config", "inject"])
        .arg(&blank)
        .arg(&cfg));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no GPT found"));
    assert_eq!(
        fs::read(&blank).unwrap(),
        vec![0u8; 1 << 20],
        "the file was changed"
    );
}

#[test]
fn recipe_default_unattended_is_checked_and_baked_0600() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("site.yaml"),
        "hostname: ok\nhostnme: typo\n",
    )
    .unwrap();
    let r = recipe_with(dir.path(), |t| {
        t.replace(
            "rootfs: squashfs",
            "unattended: site.yaml\nrootfs: squashfs",
        )
    });
    let o = run(Command::new(P6OS).arg("validate").arg("recipe").arg(&r));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("site.yaml:2:1: hostnme: unknown field `hostnme`"),
        "{err}"
    );
    assert!(err.contains("did you mean `hostname`?"), "{err}");
    let r_dev = recipe_with(dir.path(), |t| {
        t.replace(
            "rootfs: squashfs",
            "unattended: /dev/zero\nrootfs: squashfs",
        )
    });
    let o = run(Command::new(P6OS).arg("validate").arg("recipe").arg(&r_dev));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unattended: cannot read `/dev/zero`: not a regular file"),
        "{err}"
    );

    fs::write(dir.path().join("site.yaml"), "hostname: baked\n").unwrap();
    let r = recipe_with(dir.path(), |t| {
        t.replace(
            "rootfs: squashfs",
            "unattended: site.yaml\nrootfs: squashfs",
        )
    });
    let out = dir.path().join("out");
    let o = run(Command::new(P6OS)
        .arg("build")
        .arg(&r)
        .arg("--out")
        .arg(&out)
        .arg("--agent")
        .arg(agent())
        .arg("-q"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = out.join("tiny-1.0.0.img");
    let (offset, _) = partition(&img, "p6os-root-a");
    let list = run(Command::new("unsquashfs")
        .arg("-o")
        .arg((offset * 512).to_string())
        .arg("-lln")
        .arg(&img)
        .arg("/usr/lib/p6os/unattended.yaml"));
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("-rw------- 0/0") && text.contains("usr/lib/p6os/unattended.yaml"),
        "{text}"
    );
}

#[test]
fn bundles_are_signed_inspected_and_verified() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let o = run(Command::new(P6OS).arg("keygen").arg("--out").arg(&keys));
    assert!(o.status.success());
    let mode = fs::metadata(keys.join("p6os.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the secret key must be private");
    let again = run(Command::new(P6OS).arg("keygen").arg("--out").arg(&keys));
    assert!(!again.status.success(), "keygen overwrote a key");
    let r = recipe_with(dir.path(), |t| t);
    let out = dir.path().join("bundles");
    let o = run(Command::new(P6OS)
        .arg("bundle")
        .arg(&r)
        .arg("--key")
        .arg(keys.join("p6os.key"))
        .arg("--out")
        .arg(&out)
        .arg("--agent")
        .arg(agent())
        .arg("-q"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bundle = out.join("tiny-1.0.0.p6b");
    let inspect = |key: Option<&Path>, file: &Path| {
        let mut c = Command::new(P6OS);
        c.args(["bundle", "inspect"]).arg(file).arg("--json");
        if let Some(k) = key {
            c.arg("--key").arg(k);
        }
        run(&mut c)
    };
    let o = inspect(Some(&keys.join("p6os.pub")), &bundle);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["manifest"]["name"], "tiny");
    assert_eq!(j["manifest"]["tries"], 3);
    assert_eq!(j["payloads_verified"], true);
    assert!(j["signature"]
        .as_str()
        .unwrap()
        .starts_with("verified with key"));
    // The bundle's root filesystem is the image's slot A, byte for byte (same recipe).
    let rootfs = j["manifest"]["payloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "rootfs")
        .unwrap()
        .clone();
    let images = dir.path().join("images");
    let o = run(Command::new(P6OS)
        .arg("build")
        .arg(&r)
        .arg("--out")
        .arg(&images)
        .arg("--agent")
        .arg(agent())
        .arg("-q"));
    assert!(o.status.success());
    let image_manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(images.join("tiny-1.0.0.manifest.json")).unwrap())
            .unwrap();
    let image_rootfs = image_manifest["slot_a"]["rootfs"]["sha256"]
        .as_str()
        .unwrap();
    assert_eq!(
        rootfs["sha256"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
        image_rootfs.trim_start_matches("sha256:"),
        "the bundle's root filesystem differs from the image's slot A"
    );
    // Another key, a flipped byte: refused with a non-zero exit.
    let other = dir.path().join("other");
    assert!(
        run(Command::new(P6OS).arg("keygen").arg("--out").arg(&other))
            .status
            .success()
    );
    let o = inspect(Some(&other.join("p6os.pub")), &bundle);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not trust"));
    let mut bytes = fs::read(&bundle).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    let damaged = dir.path().join("damaged.p6b");
    fs::write(&damaged, &bytes).unwrap();
    let o = inspect(Some(&keys.join("p6os.pub")), &damaged);
    assert!(!o.status.success(), "a damaged bundle verified");
    // Without a key: the manifest is shown, not verified.
    let o = inspect(None, &damaged);
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["signature"], serde_json::Value::Null);
}

#[test]
fn a_build_writes_the_lock_then_fetches_exactly_it_or_names_what_moved() {
    let dir = tempfile::tempdir().unwrap();
    let r = recipe_with(dir.path(), |t| t);
    let out = dir.path().join("out");
    let o = run(Command::new(P6OS)
        .args(["build", "--format", "raw", "-q"])
        .arg(&r)
        .arg("--out")
        .arg(&out)
        .arg("--agent")
        .arg(agent()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lock_path = r.with_extension("lock");
    let lock = fs::read_to_string(&lock_path).unwrap();
    assert!(lock.contains("\"name\": \"busybox-static\""), "{lock}");
    // `p6os lock` agrees with what the build wrote, and needs no agent (none is reachable).
    let o = run(Command::new(P6OS)
        .arg("lock")
        .arg(&r)
        .env("P6OS_AGENT", dir.path().join("no-agent-here")));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("up to date"));
    assert_eq!(fs::read_to_string(&lock_path).unwrap(), lock);
    // A locked version the archive no longer has: the build stops and names it.
    let start = lock
        .find("\"name\": \"busybox-static\", \"version\": \"")
        .unwrap();
    let version_at = start + "\"name\": \"busybox-static\", \"version\": \"".len();
    let end = version_at + lock[version_at..].find('"').unwrap();
    let moved = format!("{}0.0-gone{}", &lock[..version_at], &lock[end..]);
    fs::write(&lock_path, &moved).unwrap();
    fs::remove_dir_all(&out).unwrap();
    let err = build_fails(&r, &out);
    assert!(
        err.contains("the locked set moved: busybox-static 0.0-gone (locked) is no longer")
            && err.contains("p6os lock RECIPE --update"),
        "{err}"
    );
    // A layer whose definition differs from the one the lock was written for: out of date.
    let stale = lock.replacen("\"definition\": \"", "\"definition\": \"0", 1);
    fs::write(&lock_path, stale).unwrap();
    let err = build_fails(&r, &out);
    assert!(err.contains("the lock is out of date: layer"), "{err}");
    // --update resolves afresh and rewrites it.
    let o = run(Command::new(P6OS)
        .args(["lock", "--update"])
        .arg(&r)
        .env("P6OS_AGENT", dir.path().join("no-agent-here")));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read_to_string(&lock_path).unwrap(), lock);
}

#[test]
fn preloaded_images_need_a_container_runtime_and_their_pinned_digest() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("app.tar");
    fs::write(&archive, b"not really an oci archive").unwrap();
    let sha = sha256(&archive);
    let images = |digest: &str| {
        format!(
            "images:\n  - file: {}\n    sha256: {digest}\n",
            archive.display()
        )
    };
    // The tiny recipe has no runtime.
    let r = recipe_with(dir.path(), |t| t + &images(&sha));
    let err = build_fails(&r, &dir.path().join("out"));
    assert!(err.contains("no container runtime"), "{err}");
    // Another file under the pinned name is refused before anything else.
    let r = recipe_with(dir.path(), |t| t + &images(&"0".repeat(64)));
    let err = build_fails(&r, &dir.path().join("out"));
    assert!(err.contains("sha256 mismatch: the recipe pins"), "{err}");
}

/// Slot A's dm-verity tree is the one `veritysetup` (Debian's cryptsetup-bin) writes for the
/// same data and salt, byte for byte, and `veritysetup verify` accepts it with the manifest's
/// root hash; one byte changed in the filesystem and verify refuses.
#[test]
fn the_verity_tree_is_veritysetups() {
    let img = &builds().images[0];
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(img.with_file_name("tiny-1.0.0.manifest.json")).unwrap())
            .unwrap();
    let rootfs = &manifest["slot_a"]["rootfs"];
    let params = p6os_layout::verity::Params::parse(rootfs["verity"].as_str().unwrap()).unwrap();
    let size = rootfs["size"].as_u64().unwrap();
    assert_eq!(size, params.total_size());
    let (first, _) = partition(img, "p6os-root-a");
    let mut slot = vec![0u8; size as usize];
    fs::File::open(img)
        .and_then(|mut f| {
            use std::io::{Read, Seek, SeekFrom};
            f.seek(SeekFrom::Start(first * 512))?;
            f.read_exact(&mut slot)
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.img");
    fs::write(&ours, &slot).unwrap();
    let value = params.value();
    let fields: Vec<&str> = value.split(':').collect();
    let (salt, root) = (fields[1], fields[2]);
    let offset = format!("--hash-offset={}", params.hash_offset());
    let salt_arg = format!("--salt={salt}");
    let blocks = format!("--data-blocks={}", params.data_blocks);
    let veritysetup = |args: &[&str]| {
        Command::new("veritysetup")
            .args(args)
            .output()
            .expect("veritysetup (package cryptsetup-bin)")
    };
    let common = ["--no-superblock", &offset, &salt_arg, &blocks];
    let ours_arg = ours.to_str().unwrap();
    let mut verify = vec!["verify"];
    verify.extend(common);
    verify.extend([ours_arg, ours_arg, root]);
    let o = veritysetup(&verify);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // veritysetup's own tree over the same data, into a copy whose tree is zeroed.
    let theirs = dir.path().join("theirs.img");
    let mut data = slot[..params.hash_offset() as usize].to_vec();
    fs::write(&theirs, &data).unwrap();
    let theirs_arg = theirs.to_str().unwrap();
    let mut format = vec!["format"];
    format.extend(common);
    format.extend([theirs_arg, theirs_arg]);
    let o = veritysetup(&format);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains(&format!("Root hash:      \t{root}")),
        "{text}"
    );
    assert!(fs::read(&theirs).unwrap() == slot, "the trees differ");

    // One byte of the filesystem changed: refused.
    data[4096 * 3 + 7] ^= 0x10;
    let mut changed = data;
    changed.extend_from_slice(&slot[params.hash_offset() as usize..]);
    fs::write(&ours, &changed).unwrap();
    let o = veritysetup(&verify);
    assert!(!o.status.success(), "verify accepted a changed filesystem");
}

#[test]
fn secure_boot_keys_are_checked_and_unsigned_images_carry_no_signature() {
    let dir = tempfile::tempdir().unwrap();
    // Keys that are not there, and a value that is neither a mode nor a key directory.
    let r = recipe_with(dir.path(), |t| {
        t.replace("boot:\n", "boot:\n  secure_boot: {keys: no-such-keys}\n")
    });
    let o = run(Command::new(P6OS).arg("validate").arg("recipe").arg(&r));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.yaml:17:23: boot.secure_boot.keys: cannot sign with")
            && err.contains("no-such-keys/db.key")
            && err.contains("p6os keygen --secure-boot"),
        "{err}"
    );
    let r = recipe_with(dir.path(), |t| {
        t.replace("boot:\n", "boot:\n  secure_boot: sometimes\n")
    });
    let o = run(Command::new(P6OS).arg("validate").arg("recipe").arg(&r));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("boot.secure_boot"), "{err}");
    // A signed image without verity, and kernel arguments that would override the builder's.
    let r = recipe_with(dir.path(), |t| {
        t.replace(
            "boot:\n",
            "boot:\n  verity: false\n  kernel_args: [p6os.verity=1:2:3, p6os.slot=b]\n",
        )
        .replace("  kernel_args: [panic=10, quiet]\n", "")
    });
    let o = run(Command::new(P6OS).arg("validate").arg("recipe").arg(&r));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    for expected in [
        "boot.verity: a signed image needs verity",
        "boot.kernel_args[0]: `p6os.verity=` is set by the builder",
        "boot.kernel_args[1]: `p6os.slot=` is set by the builder",
        "3 problems found",
    ] {
        assert!(err.contains(expected), "{expected}: {err}");
    }
    // `unsigned`: the same image, without signatures.
    let r = recipe_with(dir.path(), |t| {
        t.replace("boot:\n", "boot:\n  secure_boot: unsigned\n")
    });
    let out = dir.path().join("out");
    let o = run(Command::new(P6OS)
        .arg("build")
        .arg(&r)
        .arg("--out")
        .arg(&out)
        .arg("--agent")
        .arg(agent())
        .args(["--format", "raw"]));
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("secure boot: unsigned"));
    let img = out.join("tiny-1.0.0.img");
    let esp = format!("{}@@{}", img.display(), partition(&img, "p6os-esp").0 * 512);
    for (file, what) in [
        ("::/p6os/a/p6os.efi", "uki"),
        ("::/EFI/BOOT/BOOTX64.EFI", "boot loader"),
    ] {
        let copy = dir.path().join(what);
        let c = Command::new("mcopy")
            .args(["-i", &esp, file])
            .arg(&copy)
            .env("MTOOLS_SKIP_CHECK", "1")
            .status()
            .unwrap();
        assert!(c.success());
        let bytes = fs::read(&copy).unwrap();
        let layout = p6os_efi::pe::Layout::parse(&bytes).unwrap();
        assert!(!layout.is_signed(), "{what} is signed");
    }
}
