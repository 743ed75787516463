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
  version    print the version
  --help     print this help
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `/init` of the initramfs.
    Initramfs,
    /// PID 1 of the minimal base, or `p6os-agent service`.
    Service,
    Version,
    Help,
    /// Bad invocation: print this and the usage on stderr, exit 2.
    Usage(String),
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
