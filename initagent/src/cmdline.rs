//! Kernel command line: tokenizing (kernel quoting rules) and the p6os parameters.
//!
//! Pure: takes the text of `/proc/cmdline`, never reads it.

use std::time::Duration;

/// Init to exec in the slot root when `p6os.init=` is absent.
pub const DEFAULT_INIT: &str = "/sbin/init";
/// Seconds to wait for the partitions when `p6os.rootwait=` is absent.
pub const DEFAULT_ROOTWAIT_SECS: u64 = 30;

pub use p6os_layout::{RootFs, Slot};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    #[error(
        "no p6os.slot= on the kernel command line, and the boot loader named no P6OS entry \
         (LoaderEntrySelected): the slot is unknown"
    )]
    MissingSlot,
    #[error("invalid p6os.slot={0:?} on the kernel command line: expected a or b")]
    BadSlot(String),
    #[error("missing rootfstype= on the kernel command line")]
    MissingRootFs,
    #[error("unsupported rootfstype={0:?} on the kernel command line: expected squashfs or erofs")]
    BadRootFs(String),
    #[error("invalid p6os.rootwait={0:?} on the kernel command line: expected whole seconds")]
    BadRootwait(String),
    #[error("invalid p6os.init={0:?} on the kernel command line: expected an absolute path")]
    BadInit(String),
    /// A protected slot whose parameters cannot be read must not be mounted unprotected.
    #[error("{0} (the slot is not mounted without its verity protection)")]
    BadVerity(#[from] p6os_layout::verity::VerityError),
}

/// Parameters in command-line order; a parameter without `=` has no value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, Option<String>)>);

impl Params {
    /// Splits a command line the way the kernel's `next_arg` does: whitespace separates
    /// arguments except inside double quotes; the first `=` splits name and value; quotes
    /// around a value (`a="b c"`) or a whole argument (`"a=b c"`) are removed.
    /// Parsing stops at `--` (what follows belongs to init).
    pub fn parse(line: &str) -> Params {
        let chars: Vec<char> = line.chars().collect();
        let mut params = Vec::new();
        let mut i = 0;
        loop {
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            if i >= chars.len() {
                break;
            }
            let (quoted, mut in_quote) = if chars[i] == '"' {
                i += 1;
                (true, true)
            } else {
                (false, false)
            };
            let start = i;
            let mut equals = None;
            while i < chars.len() {
                let c = chars[i];
                if c.is_whitespace() && !in_quote {
                    break;
                }
                if equals.is_none() && c == '=' {
                    equals = Some(i);
                }
                if c == '"' {
                    in_quote = !in_quote;
                }
                i += 1;
            }
            let end = i;
            let ends_with_quote = end > start && chars[end - 1] == '"';
            let collect = |from: usize, to: usize| chars[from..to.max(from)].iter().collect();
            let (name, value) = match equals {
                None => {
                    let to = if quoted && ends_with_quote {
                        end - 1
                    } else {
                        end
                    };
                    (collect(start, to), None)
                }
                Some(eq) => {
                    let mut from = eq + 1;
                    let mut to = end;
                    if from < end && chars[from] == '"' {
                        from += 1;
                        if ends_with_quote {
                            to = end - 1;
                        }
                    } else if quoted && ends_with_quote {
                        to = end - 1;
                    }
                    (collect(start, eq), Some(collect(from, to)))
                }
            };
            if name == "--" && value.is_none() {
                break;
            }
            params.push((name, value));
        }
        Params(params)
    }

    /// The value of the last occurrence of `name`: `None` if absent,
    /// `Some(None)` if present without `=`.
    pub fn last(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref())
    }
}

/// What the initramfs stage needs from the command line, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    pub slot: Slot,
    pub rootfstype: RootFs,
    /// Absolute path of the init to exec inside the slot root.
    pub init: String,
    pub rootwait: Duration,
    /// `p6os.config=` as given; checked by `firstboot::source` (a bad value must not stop
    /// the boot).
    pub config: Option<String>,
    /// `p6os.verity=`: the slot is mounted through dm-verity with these parameters.
    pub verity: Option<p6os_layout::verity::Params>,
}

impl Cmdline {
    /// `selected_entry` is the boot loader's `LoaderEntrySelected`: the slot comes from
    /// `p6os.slot=` or, for unified kernel images (whose command line names no slot), from it.
    pub fn parse(line: &str, selected_entry: Option<&str>) -> Result<Cmdline, CmdlineError> {
        let params = Params::parse(line);
        let slot = slot_from_params(&params, selected_entry)?;
        let rootfstype = match params.last("rootfstype") {
            None => return Err(CmdlineError::MissingRootFs),
            Some(v) => {
                let v = v.unwrap_or("");
                RootFs::parse(v).ok_or_else(|| CmdlineError::BadRootFs(v.to_string()))?
            }
        };
        let init = match params.last("p6os.init") {
            None => DEFAULT_INIT.to_string(),
            Some(Some(v)) if v.starts_with('/') && v.len() > 1 => v.to_string(),
            Some(v) => return Err(CmdlineError::BadInit(v.unwrap_or("").to_string())),
        };
        let rootwait = match params.last("p6os.rootwait") {
            None => Duration::from_secs(DEFAULT_ROOTWAIT_SECS),
            Some(v) => {
                let v = v.unwrap_or("");
                let secs = v
                    .parse::<u64>()
                    .map_err(|_| CmdlineError::BadRootwait(v.to_string()))?;
                Duration::from_secs(secs)
            }
        };
        let config = params
            .last("p6os.config")
            .map(|v| v.unwrap_or("").to_string());
        let verity = match params.last(p6os_layout::verity::CMDLINE_KEY) {
            None => None,
            Some(v) => Some(p6os_layout::verity::Params::parse(v.unwrap_or(""))?),
        };
        Ok(Cmdline {
            slot,
            rootfstype,
            init,
            rootwait,
            config,
            verity,
        })
    }
}

/// Only the slot (service mode needs nothing else), as [`Cmdline::parse`] finds it.
pub fn slot_from_cmdline(line: &str, selected_entry: Option<&str>) -> Result<Slot, CmdlineError> {
    slot_from_params(&Params::parse(line), selected_entry)
}

/// `p6os.slot=` when given, else the slot of the P6OS entry the loader started. Under Secure
/// Boot the entry's name is not signed: naming the other slot there only maps that slot's
/// partition under this image's verity root hash, which then fails to read.
fn slot_from_params(params: &Params, selected_entry: Option<&str>) -> Result<Slot, CmdlineError> {
    match params.last("p6os.slot") {
        Some(v) => {
            let v = v.unwrap_or("");
            Slot::parse(v).ok_or_else(|| CmdlineError::BadSlot(v.to_string()))
        }
        None => selected_entry
            .and_then(p6os_layout::EntryName::parse)
            .map(|e| e.slot)
            .ok_or(CmdlineError::MissingSlot),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(line: &str) -> Vec<(String, Option<String>)> {
        Params::parse(line).0
    }

    fn p(name: &str, value: Option<&str>) -> (String, Option<String>) {
        (name.to_string(), value.map(str::to_string))
    }

    const TYPICAL: &str = "BOOT_IMAGE=/p6os/a/vmlinuz console=ttyS0 p6os.slot=a \
        rootfstype=squashfs quiet\n";

    #[test]
    fn typical_line() {
        let c = Cmdline::parse(TYPICAL, None).unwrap();
        assert_eq!(
            c,
            Cmdline {
                slot: Slot::A,
                rootfstype: RootFs::Squashfs,
                init: "/sbin/init".into(),
                rootwait: Duration::from_secs(30),
                config: None,
                verity: None,
            }
        );
    }

    #[test]
    fn verity_parameters_are_read_and_a_bad_value_fails_the_boot() {
        let value = format!("12:{}:{}", "ab".repeat(32), "cd".repeat(32));
        let c = Cmdline::parse(&format!("{TYPICAL} p6os.verity={value}"), None).unwrap();
        let v = c.verity.unwrap();
        assert_eq!(v.data_blocks, 12);
        assert_eq!(v.root_hash, [0xcd; 32]);
        for bad in ["p6os.verity", "p6os.verity=", "p6os.verity=12:ab:cd"] {
            assert!(
                matches!(
                    Cmdline::parse(&format!("{TYPICAL} {bad}"), None),
                    Err(CmdlineError::BadVerity(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn slot_b_erofs_with_options() {
        let c = Cmdline::parse(
            "p6os.slot=b rootfstype=erofs p6os.init=/usr/lib/p6os/p6os-agent p6os.rootwait=5",
            None,
        )
        .unwrap();
        assert_eq!(c.slot, Slot::B);
        assert_eq!(c.rootfstype, RootFs::Erofs);
        assert_eq!(c.init, "/usr/lib/p6os/p6os-agent");
        assert_eq!(c.rootwait, Duration::from_secs(5));
        assert_eq!(c.slot.partlabel().to_string(), "p6os-root-b");
    }

    #[test]
    fn missing_slot() {
        assert_eq!(
            Cmdline::parse("rootfstype=erofs", None),
            Err(CmdlineError::MissingSlot)
        );
        assert_eq!(slot_from_cmdline("", None), Err(CmdlineError::MissingSlot));
    }

    #[test]
    fn without_p6os_slot_the_loaders_entry_names_the_slot() {
        let uki = "rootfstype=squashfs ro console=ttyS0";
        for (entry, slot) in [
            ("p6os-2.0.0-b+2-1.conf", Slot::B),
            ("p6os-1.0.0-a.conf", Slot::A),
        ] {
            assert_eq!(Cmdline::parse(uki, Some(entry)).unwrap().slot, slot);
            assert_eq!(slot_from_cmdline(uki, Some(entry)), Ok(slot));
        }
        for entry in [
            None,
            Some("auto-windows"),
            Some("p6os-1.0.0-c.conf"),
            Some(""),
        ] {
            assert_eq!(
                Cmdline::parse(uki, entry),
                Err(CmdlineError::MissingSlot),
                "{entry:?}"
            );
        }
        // An explicit p6os.slot= wins; a bad one is an error whatever the entry says.
        let line = format!("{uki} p6os.slot=a");
        assert_eq!(
            Cmdline::parse(&line, Some("p6os-1.0.0-b.conf"))
                .unwrap()
                .slot,
            Slot::A
        );
        assert!(Cmdline::parse(&format!("{uki} p6os.slot=x"), Some("p6os-1.0.0-b.conf")).is_err());
    }

    #[test]
    fn bad_slot_values() {
        for (line, value) in [
            ("p6os.slot=c rootfstype=erofs", "c"),
            ("p6os.slot=A rootfstype=erofs", "A"),
            ("p6os.slot= rootfstype=erofs", ""),
            ("p6os.slot rootfstype=erofs", ""),
            ("p6os.slot=ab rootfstype=erofs", "ab"),
        ] {
            assert_eq!(
                Cmdline::parse(line, None),
                Err(CmdlineError::BadSlot(value.into())),
                "{line}"
            );
        }
    }

    #[test]
    fn rootfstype_missing_or_unsupported() {
        assert_eq!(
            Cmdline::parse("p6os.slot=a", None),
            Err(CmdlineError::MissingRootFs)
        );
        assert_eq!(
            Cmdline::parse("p6os.slot=a rootfstype=ext4", None),
            Err(CmdlineError::BadRootFs("ext4".into()))
        );
    }

    #[test]
    fn bad_rootwait_and_init() {
        assert_eq!(
            Cmdline::parse("p6os.slot=a rootfstype=erofs p6os.rootwait=-1", None),
            Err(CmdlineError::BadRootwait("-1".into()))
        );
        assert_eq!(
            Cmdline::parse("p6os.slot=a rootfstype=erofs p6os.rootwait=2.5", None),
            Err(CmdlineError::BadRootwait("2.5".into()))
        );
        assert_eq!(
            Cmdline::parse("p6os.slot=a rootfstype=erofs p6os.init=sbin/init", None),
            Err(CmdlineError::BadInit("sbin/init".into()))
        );
        assert_eq!(
            Cmdline::parse("p6os.slot=a rootfstype=erofs p6os.init", None),
            Err(CmdlineError::BadInit("".into()))
        );
        assert_eq!(
            Cmdline::parse("p6os.slot=a rootfstype=erofs p6os.init=/", None),
            Err(CmdlineError::BadInit("/".into()))
        );
    }

    #[test]
    fn duplicates_last_wins() {
        let c = Cmdline::parse(
            "p6os.slot=a rootfstype=squashfs p6os.slot=b rootfstype=erofs p6os.rootwait=1 p6os.rootwait=0",
            None,
        )
        .unwrap();
        assert_eq!(c.slot, Slot::B);
        assert_eq!(c.rootfstype, RootFs::Erofs);
        assert_eq!(c.rootwait, Duration::ZERO);
        // A bad earlier value is overridden by a good later one, and vice versa.
        assert_eq!(
            slot_from_cmdline("p6os.slot=x p6os.slot=a", None),
            Ok(Slot::A)
        );
        assert_eq!(
            slot_from_cmdline("p6os.slot=a p6os.slot=x", None),
            Err(CmdlineError::BadSlot("x".into()))
        );
    }

    #[test]
    fn quoted_values() {
        assert_eq!(
            pairs(r#"a="b c" "d=e f" g=h"#),
            vec![p("a", Some("b c")), p("d", Some("e f")), p("g", Some("h"))]
        );
        let c = Cmdline::parse(
            r#"p6os.slot="b" rootfstype="erofs" p6os.init="/sbin/my init""#,
            None,
        )
        .unwrap();
        assert_eq!(c.slot, Slot::B);
        assert_eq!(c.init, "/sbin/my init");
        // A quoted flag without a value.
        assert_eq!(pairs(r#""quiet" x"#), vec![p("quiet", None), p("x", None)]);
    }

    #[test]
    fn odd_quoting_never_panics() {
        for line in [
            "\"",
            "\"\"",
            "a=\"",
            "a=\"\"",
            "=",
            "==",
            "\"=\"",
            "a=\"b",
            "x \"a=b",
            "é=ü \"ö",
            "\t\n",
        ] {
            let _ = Params::parse(line);
            let _ = Cmdline::parse(line, None);
        }
        assert_eq!(pairs("a=\"\""), vec![p("a", Some(""))]);
        assert_eq!(pairs("a=\""), vec![p("a", Some(""))]);
        assert_eq!(pairs("=x"), vec![p("", Some("x"))]);
    }

    #[test]
    fn value_may_contain_equals() {
        assert_eq!(
            pairs("root=PARTLABEL=p6os-root-a"),
            vec![p("root", Some("PARTLABEL=p6os-root-a"))]
        );
    }

    #[test]
    fn stops_at_double_dash() {
        assert_eq!(
            slot_from_cmdline("p6os.slot=a -- p6os.slot=b", None),
            Ok(Slot::A)
        );
        assert_eq!(pairs("x -- y"), vec![p("x", None)]);
    }

    #[test]
    fn whitespace_variants() {
        let c = Cmdline::parse("  p6os.slot=b\trootfstype=squashfs  \n", None).unwrap();
        assert_eq!(c.slot, Slot::B);
    }
}
