//! The boot step with a document staged by the console: taken before every other source,
//! applied by the real transaction into the overlays' upper directories, its outcome left for
//! the registration loop; an invalid one changes nothing. (Only documents the boot believes:
//! a refused one lets the search go on to the machine's block devices.)

use super::applied::Applied;
use super::console::{Staged, RESULT_PATH, STAGED_PATH};
use super::*;
use p6os_protocol::siteconfig::{ConfigOutcome, ConfigReport};

const DOC: &str = "hostname: store-9\nusers:\n  - name: ops\n    sudo: true\n";

struct Device {
    dir: tempfile::TempDir,
}

impl Device {
    fn new() -> Device {
        let dir = tempfile::tempdir().unwrap();
        for d in [
            "state/overlay/etc/upper",
            "state/overlay/var/upper",
            "slot/etc",
        ] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let etc = dir.path().join("slot/etc");
        fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        fs::write(etc.join("group"), "root:x:0:\n").unwrap();
        fs::write(etc.join("shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
        Device { dir }
    }

    fn paths(&self) -> (String, String) {
        let p = |s: &str| self.dir.path().join(s).to_str().unwrap().to_string();
        (p("state"), p("slot"))
    }

    fn upper(&self, path: &str) -> std::path::PathBuf {
        let (state, slot) = self.paths();
        txn::Layout {
            state: Path::new(&state),
            slot: Path::new(&slot),
        }
        .upper(path)
        .unwrap()
    }

    fn stage(&self, config: u64, document: &str) {
        let staged = Staged {
            config,
            document: document.into(),
            signature: None,
            boot_id: "b".into(),
        };
        console::write_atomic(
            &self.upper(STAGED_PATH),
            &serde_json::to_vec(&staged).unwrap(),
        )
        .unwrap();
    }

    fn boot(&self) -> &'static str {
        let (state, slot) = self.paths();
        run_steps(&Context {
            state_dir: &state,
            sysroot: &slot,
            esp_device: None,
            config_arg: None,
        })
    }

    fn result(&self) -> ConfigReport {
        serde_json::from_slice(&fs::read(self.upper(RESULT_PATH)).unwrap()).unwrap()
    }

    fn read(&self, path: &str) -> String {
        fs::read_to_string(self.upper(path)).unwrap_or_default()
    }
}

#[test]
fn a_staged_document_is_applied_reported_and_an_invalid_one_changes_nothing() {
    let d = Device::new();
    d.stage(1, DOC);
    assert_eq!(d.boot(), "applied");
    assert!(d.read("/etc/hostname").contains("store-9"));
    assert!(d.read("/etc/passwd").contains("ops:x:1000:"));
    let r = d.result();
    assert_eq!((r.config, r.outcome), (1, ConfigOutcome::Applied));
    assert_eq!(r.digest, applied::sha256(DOC.as_bytes()));
    assert!(!d.upper(STAGED_PATH).exists(), "taken once");
    let record: Applied = serde_json::from_str(&d.read(APPLIED_PATH)).unwrap();
    assert_eq!(record.source_kind(), SourceKind::Console);
    assert_eq!(record.source, "the console (site configuration 1)");

    // An invalid document: refused with every problem and its place; nothing written.
    let before = (
        d.read("/etc/hostname"),
        d.read("/etc/passwd"),
        d.read(APPLIED_PATH),
    );
    d.stage(2, "hostname: -bad-\nusers:\n  - nam: x\n");
    assert_eq!(d.boot(), "invalid");
    let r = d.result();
    assert_eq!((r.config, r.outcome), (2, ConfigOutcome::Refused));
    assert!(r.problems.iter().any(|p| p.contains(":1:")), "{r:?}");
    assert!(r.problems.iter().any(|p| p.contains(":3:")), "{r:?}");
    let after = (
        d.read("/etc/hostname"),
        d.read("/etc/passwd"),
        d.read(APPLIED_PATH),
    );
    assert_eq!(before, after);
    assert!(!d.upper(STAGED_PATH).exists());

    // The applied document again: unchanged.
    d.stage(3, DOC);
    assert_eq!(d.boot(), "unchanged");
    assert_eq!(d.result().outcome, ConfigOutcome::Unchanged);
}
