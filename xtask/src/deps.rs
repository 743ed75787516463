//! Debian packages the workflows need: installed when running as root, else the exact command.
//!
//! The decision is pure ([`plan`]: probes and `apt-cache policy` in, an [`Action`] out) and the
//! shell around it is thin ([`ensure`]). Two rules come from fresh machines that broke the set-up:
//! - whenever anything is missing, the **whole list** is installed in one `apt-get install`, so
//!   apt resolves conflicts between the packages it installs and the ones already there;
//! - a listed package installed from outside the configured archive (e.g. a backports
//!   `qemu-utils` 10 that `Breaks` bookworm's `qemu-system-common`) is asked for from the
//!   archive's release (`qemu-utils/bookworm`, `--allow-downgrades`); otherwise apt either refuses
//!   the request or removes the package to make room, and the tool is gone after the probe saw it.
//!
//! After installing, every tool is probed again; what is still missing stops the workflow with
//! the missing tools, their packages and the command to run.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// Host tools: (command or file to probe, package).
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
    // The agent's HTTP tests go through a real proxy (they skip, saying so, without it).
    ("tinyproxy", "tinyproxy"),
    // The console's tests and benchmark start a throwaway PostgreSQL server
    // (`p6os_console::testing::pg`); the package also makes the `postgres` account it runs as.
    ("/usr/lib/postgresql/15/bin/initdb", "postgresql-15"),
    // The web console's browser tests drive a headless Chromium through WebDriver.
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
    // The builder's dm-verity trees are checked against veritysetup's.
    ("veritysetup", "cryptsetup-bin"),
    // Secure Boot: signatures checked against sbsign/sbverify; the stub the tests build on.
    ("sbverify", "sbsigntool"),
    (
        "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
        "systemd-boot-efi",
    ),
    // `p6os site` is driven in a real terminal: tmux send-keys and capture-pane.
    ("tmux", "tmux"),
    ("cc", "gcc"),
    // libfuzzer-sys compiles libFuzzer (C++) for `cargo xtask fuzz`.
    ("c++", "g++"),
    ("/usr/lib/x86_64-linux-gnu/libc.a", "libc6-dev"),
];

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub tool: &'static str,
    pub package: &'static str,
    pub present: bool,
}

/// One package as `apt-cache policy` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    pub package: String,
    /// `None` when not installed.
    pub installed: Option<String>,
    /// The release (`bookworm`, `bookworm-security`) of the highest version that a configured
    /// archive of default priority (500 or more) offers. A release, not a version: versions
    /// move with `apt-get update`.
    pub archive: Option<String>,
    /// The installed version comes from no archive of default priority: a local build, or
    /// one from backports (priority 100, whether or not backports is configured).
    pub installed_elsewhere: bool,
}

/// Whether the current user may run apt-get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    Root,
    User,
}

/// What [`ensure`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Every tool is there and the package lists are ready.
    Nothing,
    /// Run this shell command (as root).
    Run(String),
    /// Not root: stop and print this command for the user.
    AskUser {
        missing: Vec<Probe>,
        command: String,
    },
}

/// The decision: probes, package lists and policies in; what to do out.
pub fn plan(probes: &[Probe], lists_ready: bool, policies: &[Policy], who: Privilege) -> Action {
    let missing: Vec<Probe> = probes.iter().filter(|p| !p.present).cloned().collect();
    if missing.is_empty() && lists_ready {
        return Action::Nothing;
    }
    let command = install_command(probes, policies);
    match who {
        Privilege::Root => Action::Run(command),
        Privilege::User => Action::AskUser { missing, command },
    }
}

/// `apt-get update && apt-get install ...` for the whole list (each package once), pinning the
/// archive's version of packages installed from elsewhere.
pub fn install_command(probes: &[Probe], policies: &[Policy]) -> String {
    let mut packages: Vec<&str> = Vec::new();
    for p in probes {
        if !packages.contains(&p.package) {
            packages.push(p.package);
        }
    }
    let mut downgrade = false;
    let args: Vec<String> = packages
        .iter()
        .map(|pkg| match policies.iter().find(|p| p.package == *pkg) {
            Some(Policy {
                archive: Some(archive),
                installed_elsewhere: true,
                ..
            }) => {
                downgrade = true;
                format!("{pkg}/{archive}")
            }
            _ => pkg.to_string(),
        })
        .collect();
    format!(
        "apt-get update && apt-get install -y --no-install-recommends{} {}",
        if downgrade { " --allow-downgrades" } else { "" },
        args.join(" ")
    )
}

/// Reads `apt-cache policy PKG...`: for each package, its installed version and the release of
/// the highest version that a configured archive offers. A version whose only source is
/// `/var/lib/dpkg/status` was installed from elsewhere.
///
/// The version table lists versions highest first, each followed by its indented sources:
/// ```text
/// qemu-utils:
///   Installed: 1:10.0.2+ds-2~bpo12+1
///   Candidate: 1:10.0.2+ds-2~bpo12+1
///   Version table:
///  *** 1:10.0.2+ds-2~bpo12+1 100
///         100 /var/lib/dpkg/status
///      1:7.2+dfsg-7+deb12u18+b2 500
///         500 http://deb.debian.org/debian bookworm/main amd64 Packages
/// ```
pub fn parse_policy(text: &str) -> Vec<Policy> {
    let mut out: Vec<Policy> = Vec::new();
    let mut version: Option<String> = None;
    // Whether the installed version has been seen with a source of default priority.
    let mut installed_in_default = false;
    for line in text.lines() {
        if !line.starts_with(' ') {
            if let Some(name) = line.strip_suffix(':') {
                finish(out.last_mut(), installed_in_default);
                installed_in_default = false;
                out.push(Policy {
                    package: name.to_string(),
                    ..Policy::default()
                });
                version = None;
            }
            continue;
        }
        let Some(current) = out.last_mut() else {
            continue;
        };
        let trimmed = line.trim_start();
        if let Some(v) = trimmed.strip_prefix("Installed:") {
            let v = v.trim();
            current.installed = (v != "(none)" && !v.is_empty()).then(|| v.to_string());
            continue;
        }
        if trimmed.starts_with("Candidate:") || trimmed.starts_with("Version table:") {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        // Version lines are indented by 5 (or " *** "); their sources by 8.
        if indent <= 5 {
            version = match fields.as_slice() {
                ["***", v, _prio] | [v, _prio] => Some(v.to_string()),
                _ => None,
            };
        } else if let (Some(v), [prio, source, rest @ ..]) = (&version, fields.as_slice()) {
            let default_priority = prio.parse::<i32>().is_ok_and(|p| p >= DEFAULT_PRIORITY);
            if *source != "/var/lib/dpkg/status" && default_priority {
                if current.archive.is_none() {
                    // `500 http://deb.debian.org/debian bookworm/main amd64 Packages`
                    current.archive = rest
                        .first()
                        .and_then(|suite| suite.split('/').next())
                        .map(str::to_string);
                }
                if current.installed.as_ref() == Some(v) {
                    installed_in_default = true;
                }
            }
        }
    }
    finish(out.last_mut(), installed_in_default);
    out
}

/// apt's priority of the releases it installs from by default (backports get 100).
const DEFAULT_PRIORITY: i32 = 500;

fn finish(policy: Option<&mut Policy>, installed_in_default: bool) {
    if let Some(p) = policy {
        p.installed_elsewhere = p.installed.is_some() && !installed_in_default;
    }
}

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

fn probe_all() -> Vec<Probe> {
    TOOLS
        .iter()
        .map(|&(tool, package)| Probe {
            tool,
            package,
            present: present(tool),
        })
        .collect()
}

fn privilege() -> Privilege {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root {
        Privilege::Root
    } else {
        Privilege::User
    }
}

/// Package lists are needed too: recipes fetch packages with `apt-get download`.
fn apt_lists_ready() -> bool {
    Command::new("apt-cache")
        .args(["show", "--no-all-versions", "busybox-static"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

fn policies() -> Vec<Policy> {
    let mut packages: Vec<&str> = Vec::new();
    for (_, p) in TOOLS {
        if !packages.contains(p) {
            packages.push(p);
        }
    }
    Command::new("apt-cache")
        .arg("policy")
        .args(&packages)
        .env("LC_ALL", "C")
        .output()
        .map(|o| parse_policy(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_default()
}

fn describe(missing: &[Probe]) -> String {
    missing
        .iter()
        .map(|p| format!("  {} (package {})", p.tool, p.package))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn ensure() -> Result<()> {
    let probes = probe_all();
    let lists = apt_lists_ready();
    let action = if probes.iter().all(|p| p.present) && lists {
        Action::Nothing
    } else {
        plan(&probes, lists, &policies(), privilege())
    };
    match action {
        Action::Nothing => return Ok(()),
        Action::AskUser { missing, command } => bail!(
            "missing host tools or package lists:\n{}\nrun as root:\n  {command}",
            describe(&missing)
        ),
        Action::Run(_) => {}
    }
    // Fresh lists first: which archive offers what is only known after the update.
    eprintln!("xtask: apt-get update");
    let updated = Command::new("apt-get")
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get update")?;
    if !updated.success() {
        bail!("apt-get update failed ({updated})");
    }
    let command = plan(&probes, false, &policies(), Privilege::Root)
        .command()
        .to_string();
    let command = command
        .strip_prefix("apt-get update && ")
        .unwrap_or(&command)
        .to_string();
    eprintln!("xtask: {command}");
    let status = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?;
    // Probe again whatever apt said: installing one package can remove another.
    let missing: Vec<Probe> = probe_all().into_iter().filter(|p| !p.present).collect();
    if !missing.is_empty() || !status.success() {
        bail!(
            "apt-get {}; still missing:\n{}\nto retry:\n  {}",
            if status.success() {
                "succeeded"
            } else {
                "failed"
            },
            if missing.is_empty() {
                "  (nothing)".to_string()
            } else {
                describe(&missing)
            },
            plan(
                &probe_all(),
                apt_lists_ready(),
                &policies(),
                Privilege::Root
            )
            .command()
        );
    }
    if !apt_lists_ready() {
        bail!("apt package lists are still not usable after `apt-get update` (apt-cache show busybox-static fails)");
    }
    Ok(())
}

impl Action {
    fn command(&self) -> &str {
        match self {
            Action::Nothing => "(nothing to do)",
            Action::Run(c) | Action::AskUser { command: c, .. } => c,
        }
    }
}

/// virt-firmware from PyPI, pinned: `virt-fw-vars` enrolls the tests' Secure Boot keys into
/// OVMF variable stores. Not packaged in bookworm.
const VIRT_FIRMWARE: &str = "virt-firmware==26.10";

/// `target/tools/virt-firmware/bin/virt-fw-vars`, installed into its own venv when missing
/// (Debian's python3 and python3-venv; `ensure` installs those). Checked by running it, after
/// installing too.
pub fn ensure_virt_firmware() -> Result<std::path::PathBuf> {
    let venv = crate::root().join("target/tools/virt-firmware");
    let tool = venv.join("bin/virt-fw-vars");
    let works = |tool: &std::path::Path| {
        Command::new(tool)
            .arg("--help")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works(&tool) {
        return Ok(tool);
    }
    eprintln!(
        "xtask: installing {VIRT_FIRMWARE} (PyPI) into {}",
        venv.display()
    );
    let _ = std::fs::remove_dir_all(&venv);
    // Debian's interpreter, whatever a PATH shim (pyenv) points `python3` at.
    let made = Command::new("/usr/bin/python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .context("running /usr/bin/python3 -m venv")?;
    if !made.success() {
        bail!("python3 -m venv {} failed ({made})", venv.display());
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            VIRT_FIRMWARE,
        ])
        .status()
        .context("running pip")?;
    if !pip.success() || !works(&tool) {
        bail!(
            "{VIRT_FIRMWARE} did not install into {} (pip: {pip})",
            venv.display()
        );
    }
    Ok(tool)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKPORTS_QEMU_UTILS: &str = "\
qemu-utils:
  Installed: 1:10.0.2+ds-2+deb13u1~bpo12+1
  Candidate: 1:10.0.2+ds-2+deb13u1~bpo12+1
  Version table:
 *** 1:10.0.2+ds-2+deb13u1~bpo12+1 100
        100 /var/lib/dpkg/status
     1:7.2+dfsg-7+deb12u18+b2 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
     1:7.2+dfsg-7+deb12u15 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
qemu-system-x86:
  Installed: (none)
  Candidate: 1:7.2+dfsg-7+deb12u18+b2
  Version table:
     1:7.2+dfsg-7+deb12u18+b2 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
zstd:
  Installed: 1.5.4+dfsg2-5
  Candidate: 1.5.4+dfsg2-5
  Version table:
 *** 1.5.4+dfsg2-5 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
        100 /var/lib/dpkg/status
";

    fn probe(tool: &'static str, package: &'static str, present: bool) -> Probe {
        Probe {
            tool,
            package,
            present,
        }
    }

    #[test]
    fn policy_tells_local_builds_from_archive_versions() {
        let p = parse_policy(BACKPORTS_QEMU_UTILS);
        assert_eq!(
            p,
            vec![
                Policy {
                    package: "qemu-utils".into(),
                    installed: Some("1:10.0.2+ds-2+deb13u1~bpo12+1".into()),
                    archive: Some("bookworm".into()),
                    installed_elsewhere: true,
                },
                Policy {
                    package: "qemu-system-x86".into(),
                    installed: None,
                    archive: Some("bookworm".into()),
                    installed_elsewhere: false,
                },
                Policy {
                    package: "zstd".into(),
                    installed: Some("1.5.4+dfsg2-5".into()),
                    archive: Some("bookworm".into()),
                    installed_elsewhere: false,
                },
            ]
        );
    }

    #[test]
    fn nothing_to_do_when_everything_is_there() {
        let probes = [
            probe("zstd", "zstd", true),
            probe("qemu-img", "qemu-utils", true),
        ];
        assert_eq!(plan(&probes, true, &[], Privilege::User), Action::Nothing);
        assert_eq!(plan(&probes, true, &[], Privilege::Root), Action::Nothing);
    }

    /// The fresh machine that broke the README: qemu-img present (backports), QEMU missing.
    /// The whole list is installed, and qemu-utils at the archive's version, so apt can
    /// satisfy qemu-system-common instead of removing qemu-img.
    #[test]
    fn whole_list_with_foreign_builds_pinned_to_the_archive() {
        let probes = [
            probe("qemu-system-x86_64", "qemu-system-x86", false),
            probe("qemu-img", "qemu-utils", true),
            probe("zstd", "zstd", true),
        ];
        let policies = parse_policy(BACKPORTS_QEMU_UTILS);
        assert_eq!(
            plan(&probes, true, &policies, Privilege::Root),
            Action::Run(
                "apt-get update && apt-get install -y --no-install-recommends --allow-downgrades \
                 qemu-system-x86 qemu-utils/bookworm zstd"
                    .into()
            )
        );
    }

    #[test]
    fn a_user_gets_the_missing_tools_and_the_command() {
        let probes = [
            probe("mkfs.ext4", "e2fsprogs", false),
            probe("cc", "gcc", true),
            probe("c++", "g++", false),
        ];
        match plan(&probes, true, &[], Privilege::User) {
            Action::AskUser { missing, command } => {
                assert_eq!(
                    missing.iter().map(|p| p.tool).collect::<Vec<_>>(),
                    ["mkfs.ext4", "c++"]
                );
                assert_eq!(
                    command,
                    "apt-get update && apt-get install -y --no-install-recommends e2fsprogs gcc g++"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stale_lists_alone_still_install_the_whole_list() {
        let probes = [probe("zstd", "zstd", true), probe("cpio", "cpio", true)];
        assert_eq!(
            plan(&probes, false, &[], Privilege::Root),
            Action::Run(
                "apt-get update && apt-get install -y --no-install-recommends zstd cpio".into()
            )
        );
    }

    #[test]
    fn packages_listed_twice_are_asked_for_once() {
        let probes = [probe("a", "p", false), probe("b", "p", false)];
        assert_eq!(
            install_command(&probes, &[]),
            "apt-get update && apt-get install -y --no-install-recommends p"
        );
    }

    /// With bookworm-backports configured, its qemu-utils (priority 100) is still pinned to
    /// the default release: apt would not pick it for qemu-system-x86 either.
    #[test]
    fn configured_backports_are_still_foreign() {
        let policies = parse_policy(
            "qemu-utils:
  Installed: 1:10.0.2+ds-2~bpo12+1
  Candidate: 1:10.0.2+ds-2~bpo12+1
  Version table:
 *** 1:10.0.2+ds-2~bpo12+1 100
        100 http://deb.debian.org/debian bookworm-backports/main amd64 Packages
        100 /var/lib/dpkg/status
     1:7.2+dfsg-7+deb12u18+b2 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
",
        );
        assert!(policies[0].installed_elsewhere);
        assert_eq!(policies[0].archive.as_deref(), Some("bookworm"));
        assert_eq!(
            install_command(&[probe("qemu-img", "qemu-utils", true)], &policies),
            "apt-get update && apt-get install -y --no-install-recommends --allow-downgrades \
             qemu-utils/bookworm"
        );
    }

    /// An older archive version (security update pending) is not a foreign build: no pin.
    #[test]
    fn an_older_archive_version_is_left_to_apt() {
        let policies = parse_policy(
            "gdisk:
  Installed: 1.0.9-2
  Candidate: 1.0.9-2.1
  Version table:
     1.0.9-2.1 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
 *** 1.0.9-2 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
        100 /var/lib/dpkg/status
",
        );
        assert!(!policies[0].installed_elsewhere);
        assert_eq!(
            install_command(&[probe("sgdisk", "gdisk", false)], &policies),
            "apt-get update && apt-get install -y --no-install-recommends gdisk"
        );
    }

    #[test]
    fn unknown_package_policies_are_ignored() {
        assert_eq!(
            parse_policy("N: Unable to locate package nope\n"),
            Vec::<Policy>::new()
        );
    }
}
