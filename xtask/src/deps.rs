//! Debian packages the workflows need: installed when running as root, else the exact command.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// Host tools: (command to probe, package).
pub const TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf"),
    ("sgdisk", "gdisk"),
    ("fsck.vfat", "dosfstools"),
    ("mtype", "mtools"),
    ("mksquashfs", "squashfs-tools"),
    ("mkfs.erofs", "erofs-utils"),
    ("mkfs.ext4", "e2fsprogs"),
    ("cpio", "cpio"),
    ("zstd", "zstd"),
    ("sfdisk", "fdisk"),
    // The Debian base layer (images/base/debian-bookworm.yaml).
    ("mmdebstrap", "mmdebstrap"),
    // Output formats: .qcow2, and `bmaptool copy` checks the .bmap in tests.
    ("qemu-img", "qemu-utils"),
    ("bmaptool", "bmap-tools"),
    // The default image's QEMU scenario logs in over SSH.
    ("ssh", "openssh-client"),
    ("cc", "gcc"),
    // libfuzzer-sys compiles libFuzzer (C++) for `cargo xtask fuzz`.
    ("c++", "g++"),
    ("/usr/lib/x86_64-linux-gnu/libc.a", "libc6-dev"),
    // The agent's HTTP tests go through a real proxy (they skip, saying so, without it).
    ("tinyproxy", "tinyproxy"),
];

fn present(probe: &str) -> bool {
    if probe.starts_with('/') {
        return std::path::Path::new(probe).exists();
    }
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {probe}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Package lists are needed too: recipes fetch packages with `apt-get download`.
fn apt_lists_ready() -> bool {
    Command::new("apt-cache")
        .args(["show", "--no-all-versions", "busybox-static"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

pub fn ensure() -> Result<()> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(probe, _)| !present(probe))
        .map(|(_, pkg)| *pkg)
        .collect();
    let lists = apt_lists_ready();
    if missing.is_empty() && lists {
        return Ok(());
    }
    let line = format!(
        "apt-get update && apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !is_root() {
        bail!("missing Debian packages or package lists; run as root:\n  {line}");
    }
    eprintln!("xtask: {line}");
    let status = Command::new("sh")
        .arg("-c")
        .arg(if missing.is_empty() {
            "apt-get update -q".to_string()
        } else {
            line
        })
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("apt-get failed");
    }
    Ok(())
}
