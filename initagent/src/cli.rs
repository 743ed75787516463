//! Mode dispatch by argv[0] and the subcommand. Pure.

use std::ffi::OsString;
use std::path::Path;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub const USAGE: &str = "\
usage: p6os-agent <command>

The P6OS init agent. Run as /init (initramfs) it mounts the slot root and switches to
it; run as init (e.g. /sbin/init, PID 1 of the minimal base) it runs service mode.

commands:
  service    run service mode (what PID 1 does on the minimal base)
  upgrade SOURCE [--allow-downgrade] [--allow-retry] [--no-reboot] [--ca=PEM]...
             install a signed bundle (a file, a block device or an http(s) URL) into
             the other slot, then reboot into it for a trial
  register   pair with the management console of /etc/p6os/console.json, then report
             in and upgrade when it asks (service mode starts it, and restarts it if it
             stops with an error)
  status [--json]
             both slots (version, state, tries), the booted one, the last upgrade,
             and the registration with the console (unregistered, pending, ready)
  rollback [--no-reboot]
             make the other (blessed) slot the default and reboot into it
  firstboot  first-boot jobs on a systemd base: SSH host keys once per device, the
             configuration outcome (p6os-firstboot.service runs it)
  import-images
             import the slot's preloaded OCI archives into containerd, once each
             (p6os-images.service runs it)
  version    print the version
  --help     print this help
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `/init` of the initramfs.
    Initramfs,
    /// PID 1 of the minimal base, or `p6os-agent service`.
    Service,
    Upgrade(UpgradeArgs),
    Status(Format),
    Rollback(AfterChange),
    /// Hidden, for tests and benchmarks: install a bundle into a file and an ESP directory.
    InstallInto(InstallIntoArgs),
    /// Hidden: the boot assessment, started by service mode as a child process.
    AssessBoot,
    /// The registration loop (started by service mode as a child process).
    Register,
    /// First-boot jobs on a systemd base (`p6os-firstboot.service`).
    FirstBoot,
    /// Import the slot's preloaded OCI archives into containerd (`p6os-images.service`).
    ImportImages,
    Version,
    Help,
    /// Bad invocation: print this and the usage on stderr, exit 2.
    Usage(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// What to do once a change is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterChange {
    Reboot,
    Stay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A version that rolled back before is refused.
    Refuse,
    Allow,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeArgs {
    pub source: String,
    pub downgrade: p6os_bundle::compat::Downgrade,
    pub retry: Retry,
    pub after: AfterChange,
    /// Extra CA certificates (PEM files) for https sources.
    pub ca_files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallIntoArgs {
    pub bundle: String,
    pub slot_file: String,
    pub esp_dir: String,
    pub keys: Vec<String>,
    pub device_name: String,
    pub device_version: String,
    /// `--floor=V`: the security floor the device would have recorded.
    pub floor: Option<String>,
    /// `--allow-downgrade`.
    pub downgrade: p6os_bundle::compat::Downgrade,
}

fn flags_and_values(rest: &[String]) -> (Vec<&str>, Vec<(&str, &str)>, Vec<&str>) {
    let (mut flags, mut values, mut positional) = (Vec::new(), Vec::new(), Vec::new());
    let mut i = 0;
    while i < rest.len() {
        let a = rest[i].as_str();
        if let Some((k, v)) = a.split_once('=').filter(|(k, _)| k.starts_with("--")) {
            values.push((k, v));
        } else if a.starts_with("--") {
            flags.push(a);
        } else {
            positional.push(a);
        }
        i += 1;
    }
    (flags, values, positional)
}

fn subcommand(cmd: &str, rest: &[String]) -> Option<Mode> {
    let (flags, values, positional) = flags_and_values(rest);
    let unknown = |allowed: &[&str]| {
        flags
            .iter()
            .find(|f| !allowed.contains(f))
            .map(|f| Mode::Usage(format!("unknown option {f} for {cmd}")))
    };
    let after = |flags: &[&str]| {
        if flags.contains(&"--no-reboot") {
            AfterChange::Stay
        } else {
            AfterChange::Reboot
        }
    };
    Some(match cmd {
        "upgrade" => {
            if let Some(bad) = unknown(&["--allow-downgrade", "--allow-retry", "--no-reboot"]) {
                return Some(bad);
            }
            let [source] = positional.as_slice() else {
                return Some(Mode::Usage("upgrade needs one SOURCE".into()));
            };
            if let Some((k, _)) = values.iter().find(|(k, _)| *k != "--ca") {
                return Some(Mode::Usage(format!("unknown option {k}= for upgrade")));
            }
            Mode::Upgrade(UpgradeArgs {
                source: source.to_string(),
                downgrade: if flags.contains(&"--allow-downgrade") {
                    p6os_bundle::compat::Downgrade::Allow
                } else {
                    p6os_bundle::compat::Downgrade::Refuse
                },
                retry: if flags.contains(&"--allow-retry") {
                    Retry::Allow
                } else {
                    Retry::Refuse
                },
                after: after(&flags),
                ca_files: values
                    .iter()
                    .filter(|(k, _)| *k == "--ca")
                    .map(|(_, v)| v.to_string())
                    .collect(),
            })
        }
        "status" => {
            if let Some(bad) = unknown(&["--json"]) {
                return Some(bad);
            }
            if let Some(extra) = positional.first() {
                return Some(Mode::Usage(format!(
                    "unexpected argument {extra:?} after status"
                )));
            }
            Mode::Status(if flags.contains(&"--json") {
                Format::Json
            } else {
                Format::Text
            })
        }
        "rollback" => {
            if let Some(bad) = unknown(&["--no-reboot"]) {
                return Some(bad);
            }
            Mode::Rollback(after(&flags))
        }
        "install-into" => {
            let get = |k: &str| {
                values
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            };
            let args = (|| {
                Some(InstallIntoArgs {
                    bundle: get("--bundle")?,
                    slot_file: get("--slot-file")?,
                    esp_dir: get("--esp-dir")?,
                    keys: values
                        .iter()
                        .filter(|(n, _)| *n == "--key")
                        .map(|(_, v)| v.to_string())
                        .collect(),
                    device_name: get("--device-name")?,
                    device_version: get("--device-version")?,
                    floor: get("--floor"),
                    downgrade: if flags.contains(&"--allow-downgrade") {
                        p6os_bundle::compat::Downgrade::Allow
                    } else {
                        p6os_bundle::compat::Downgrade::Refuse
                    },
                })
            })();
            match args {
                Some(a) => Mode::InstallInto(a),
                None => Mode::Usage(
                    "install-into needs --bundle= --slot-file= --esp-dir= --key= --device-name= --device-version= [--floor=] [--allow-downgrade]"
                        .into(),
                ),
            }
        }
        _ => return None,
    })
}

pub fn mode_from_args(args: &[OsString]) -> Mode {
    let argv0 = args.first().map(Path::new);
    if argv0 == Some(Path::new("/init")) {
        return Mode::Initramfs;
    }
    if argv0.and_then(Path::file_name) == Some("init".as_ref()) {
        return Mode::Service;
    }
    let rest: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match rest
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["service"] => Mode::Service,
        ["assess-boot"] => Mode::AssessBoot,
        ["register"] => Mode::Register,
        ["firstboot"] => Mode::FirstBoot,
        ["import-images"] => Mode::ImportImages,
        [cmd, ..] if subcommand(cmd, &rest[1..]).is_some() => {
            subcommand(cmd, &rest[1..]).unwrap_or(Mode::Help)
        }
        ["version"] | ["--version"] => Mode::Version,
        ["--help"] | ["-h"] | ["help"] => Mode::Help,
        [] => Mode::Usage("missing command".to_string()),
        [cmd] => Mode::Usage(format!("unknown command {cmd:?}")),
        [cmd, extra, ..] => Mode::Usage(format!("unexpected argument {extra:?} after {cmd:?}")),
    }
}

/// As PID 1 the process must never exit: anything but the initramfs stage becomes
/// service mode (e.g. a kernel booted with `init=/usr/lib/p6os/p6os-agent`).
pub fn mode_as_pid1(mode: Mode) -> Mode {
    match mode {
        Mode::Initramfs => Mode::Initramfs,
        _ => Mode::Service,
    }
}

/// Arguments the kernel passed to `/init`, handed on to the slot's init.
pub fn init_args(args: &[OsString]) -> Vec<String> {
    args.iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(args: &[&str]) -> Mode {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        mode_from_args(&args)
    }

    #[test]
    fn by_argv0() {
        assert_eq!(mode(&["/init"]), Mode::Initramfs);
        assert_eq!(mode(&["/init", "single"]), Mode::Initramfs);
        assert_eq!(mode(&["/sbin/init"]), Mode::Service);
        assert_eq!(mode(&["init"]), Mode::Service);
        assert_eq!(mode(&["/usr/sbin/init", "version"]), Mode::Service);
        assert_eq!(
            mode(&["/sbin/init.real"]),
            Mode::Usage("missing command".into())
        );
    }

    #[test]
    fn subcommands() {
        assert_eq!(mode(&["p6os-agent", "service"]), Mode::Service);
        assert_eq!(
            mode(&["/usr/lib/p6os/p6os-agent", "version"]),
            Mode::Version
        );
        assert_eq!(mode(&["p6os-agent", "--version"]), Mode::Version);
        assert_eq!(mode(&["p6os-agent", "--help"]), Mode::Help);
        assert_eq!(mode(&["p6os-agent", "-h"]), Mode::Help);
    }

    #[test]
    fn bad_invocations() {
        assert_eq!(mode(&["p6os-agent"]), Mode::Usage("missing command".into()));
        assert_eq!(mode(&[]), Mode::Usage("missing command".into()));
        assert_eq!(
            mode(&["p6os-agent", "frobnicate"]),
            Mode::Usage("unknown command \"frobnicate\"".into())
        );
        assert_eq!(
            mode(&["p6os-agent", "service", "now"]),
            Mode::Usage("unexpected argument \"now\" after \"service\"".into())
        );
        // "/init" only as the exact path; a relative "init" is service mode.
        assert_eq!(mode(&["./init"]), Mode::Service);
    }

    #[test]
    fn upgrade_status_rollback() {
        assert_eq!(
            mode(&["p6os-agent", "upgrade", "/dev/vdb", "--no-reboot"]),
            Mode::Upgrade(UpgradeArgs {
                source: "/dev/vdb".into(),
                downgrade: p6os_bundle::compat::Downgrade::Refuse,
                retry: Retry::Refuse,
                after: AfterChange::Stay,
                ca_files: vec![],
            })
        );
        assert!(matches!(
            mode(&["p6os-agent", "upgrade", "https://h/b.p6b", "--ca=/etc/ca.pem"]),
            Mode::Upgrade(UpgradeArgs { ca_files, .. }) if ca_files == ["/etc/ca.pem"]
        ));
        assert!(matches!(
            mode(&["p6os-agent", "upgrade", "x", "--cafile=y"]),
            Mode::Usage(_)
        ));
        assert!(matches!(
            mode(&[
                "p6os-agent",
                "upgrade",
                "x",
                "--allow-retry",
                "--allow-downgrade"
            ]),
            Mode::Upgrade(UpgradeArgs {
                retry: Retry::Allow,
                downgrade: p6os_bundle::compat::Downgrade::Allow,
                after: AfterChange::Reboot,
                ..
            })
        ));
        assert!(matches!(mode(&["p6os-agent", "upgrade"]), Mode::Usage(_)));
        assert!(matches!(
            mode(&["p6os-agent", "upgrade", "x", "--force"]),
            Mode::Usage(m) if m.contains("--force")
        ));
        assert_eq!(
            mode(&["p6os-agent", "status", "--json"]),
            Mode::Status(Format::Json)
        );
        assert_eq!(mode(&["p6os-agent", "status"]), Mode::Status(Format::Text));
        assert_eq!(
            mode(&["p6os-agent", "rollback"]),
            Mode::Rollback(AfterChange::Reboot)
        );
        assert!(matches!(
            mode(&["p6os-agent", "install-into", "--bundle=b"]),
            Mode::Usage(_)
        ));
    }

    #[test]
    fn pid1_never_exits() {
        assert_eq!(mode_as_pid1(Mode::Initramfs), Mode::Initramfs);
        for m in [
            Mode::Service,
            Mode::Version,
            Mode::Help,
            Mode::Usage("x".into()),
        ] {
            assert_eq!(mode_as_pid1(m), Mode::Service);
        }
    }

    #[test]
    fn init_args_are_passed_on() {
        let args: Vec<OsString> = ["/init", "single", "x"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(init_args(&args), vec!["single", "x"]);
        assert!(init_args(&[]).is_empty());
    }
}
