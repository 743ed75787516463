//! Remote reconfiguration: the decisions (pure), the staging on disk, and the loop against
//! the real console on loopback.

use std::os::unix::fs::PermissionsExt;

use p6os_bundle::configsig::ConfigSignature;
use p6os_bundle::testing::trusted_key;
use p6os_console::testing::{Listen, TestConsole};
use p6os_console::Config;
use p6os_protocol::identity::DeviceSecret;
use p6os_protocol::siteconfig::ConfigShow;
use p6os_protocol::{Facts, Health};

use super::*;
use crate::firstboot::console::Staged;
use crate::firstboot::trust::SourceKind;
use crate::firstboot::txn::Layout;
use crate::register::state::{Phase, Registration};
use crate::register::{run, Running};

const DOC: &str = "appliance: {id: store-9}\nhostname: store-9\nusers:\n  - name: ops\n    \
                   sudo: true\nconsole: {endpoint: http://127.0.0.1:1, token: t}\n";

fn device() -> Device {
    Device {
        id: "store-9".into(),
        machine_id: "0123".into(),
    }
}

fn offer(doc: &str, config: u64) -> ConfigRef {
    ConfigRef {
        config,
        digest: sha256(doc.as_bytes()),
        size: doc.len() as u64,
        path: format!("/api/v1/appliances/a/config/{config}"),
    }
}

fn document(doc: &str, config: u64) -> ConfigDocument {
    ConfigDocument {
        config,
        document: doc.into(),
        signature: None,
    }
}

fn provisioned(digest: &str, serial: Option<u64>) -> Provisioning {
    Provisioning::Provisioned {
        digest: digest.into(),
        serial,
        from: SourceKind::Writable,
    }
}

#[test]
fn next_step_reports_what_is_known_and_fetches_the_rest() {
    let o = offer(DOC, 3);
    let mut known = Known {
        boot_id: "boot-1".into(),
        ..Known::default()
    };
    assert_eq!(next_step(&o, &known), Step::Fetch);
    // Already applied (same bytes): unchanged, no fetch.
    known.applied_digest = Some(o.digest.clone());
    let Step::Report(r) = next_step(&o, &known) else {
        panic!()
    };
    assert_eq!(r.outcome, ConfigOutcome::Unchanged);
    known.applied_digest = None;
    // Staged in this boot: reboot; staged at an earlier boot: abandoned, never again.
    known.staged = Some((3, "boot-1".into()));
    assert_eq!(next_step(&o, &known), Step::Reboot);
    known.staged = Some((3, "boot-0".into()));
    let Step::Abandon(r) = next_step(&o, &known) else {
        panic!()
    };
    assert_eq!(r.outcome, ConfigOutcome::Refused);
    // A staged older configuration does not stop a newer one.
    known.staged = Some((2, "boot-1".into()));
    assert_eq!(next_step(&o, &known), Step::Fetch);
    // The boot's result for this configuration is reported as it is.
    let result = ConfigReport {
        config: 3,
        outcome: ConfigOutcome::Applied,
        digest: o.digest.clone(),
        problems: vec![],
    };
    known.result = Some(result.clone());
    assert_eq!(next_step(&o, &known), Step::Report(result));
    // A result of another configuration is not this one's.
    known.result.as_mut().unwrap().config = 2;
    assert_eq!(next_step(&o, &known), Step::Fetch);
    // Too large to fetch.
    let mut big = o.clone();
    big.size = MAX_SITE_CONFIG as u64 + 1;
    let Step::Report(r) = next_step(&big, &known) else {
        panic!()
    };
    assert_eq!(r.outcome, ConfigOutcome::Refused);
}

#[test]
fn judge_fetched_refuses_the_wrong_document_the_untrusted_and_the_invalid() {
    let o = offer(DOC, 3);
    let p = provisioned("sha256:old", Some(2));
    assert_eq!(
        judge_fetched(&o, &document(DOC, 3), (&p, &[]), &device()),
        Judged::Stage
    );
    let refused = |j: Judged| match j {
        Judged::Report(r) if r.outcome == ConfigOutcome::Refused => r.problems,
        other => panic!("{other:?}"),
    };
    // Not the document announced.
    let ps = refused(judge_fetched(
        &o,
        &document("hostname: x\n", 3),
        (&p, &[]),
        &device(),
    ));
    assert!(ps[0].contains("not the one announced"), "{ps:?}");
    // Invalid: every problem with line:column, nothing staged.
    let bad = "hostname: -x-\nusers:\n  - nam: ops\n";
    let ps = refused(judge_fetched(
        &offer(bad, 4),
        &document(bad, 4),
        (&p, &[]),
        &device(),
    ));
    assert!(ps.len() >= 2, "{ps:?}");
    assert!(
        ps.iter().any(|l| l.contains("unattended.yaml:3:")),
        "{ps:?}"
    );
    // An image naming configuration keys: unsigned is refused, signed above the serial staged,
    // signed at or below it refused.
    let key = trusted_key();
    let keys = [key.public()];
    let ps = refused(judge_fetched(&o, &document(DOC, 3), (&p, &keys), &device()));
    assert!(ps[0].contains("not signed"), "{ps:?}");
    let mut signed = document(DOC, 3);
    signed.signature = Some(ConfigSignature::sign(&key, DOC.as_bytes(), 3).to_file());
    assert_eq!(
        judge_fetched(&o, &signed, (&p, &keys), &device()),
        Judged::Stage
    );
    signed.signature = Some(ConfigSignature::sign(&key, DOC.as_bytes(), 2).to_file());
    let ps = refused(judge_fetched(&o, &signed, (&p, &keys), &device()));
    assert!(ps[0].contains("serial 2"), "{ps:?}");
    // A document that would cut the device off from its console is refused.
    for (doc, words) in [
        (
            "appliance: {id: store-9}\nhostname: a\n",
            "no console section",
        ),
        (
            "hostname: a\nconsole: {endpoint: http://c, token: t}\n",
            "appliance \"0123\"",
        ),
        (
            "appliance: {id: other}\nconsole: {endpoint: http://c, token: t}\n",
            "appliance \"other\"",
        ),
    ] {
        let ps = refused(judge_fetched(
            &offer(doc, 6),
            &document(doc, 6),
            (&p, &[]),
            &device(),
        ));
        assert!(ps[0].contains(words), "{ps:?}");
    }
    // Leaving the id out is fine when the device's id is its machine id.
    let doc = "console: {endpoint: http://c, token: t}\n";
    let by_machine_id = Device {
        id: "0123".into(),
        machine_id: "0123".into(),
    };
    let j = judge_fetched(&offer(doc, 6), &document(doc, 6), (&p, &[]), &by_machine_id);
    assert_eq!(j, Judged::Stage);
    // The applied document again: unchanged.
    let same = provisioned(&o.digest, None);
    let Judged::Report(r) = judge_fetched(&o, &document(DOC, 3), (&same, &[]), &device()) else {
        panic!()
    };
    assert_eq!(r.outcome, ConfigOutcome::Unchanged);
}

/// The files as the boot step sees them: `Files.dir` is the upper directory of /var/lib/p6os.
fn files(state: &Path, keys: Vec<PublicKey>, boot: &str) -> Files {
    let layout = Layout { state, slot: state };
    let applied = layout.upper(APPLIED_PATH).unwrap();
    Files {
        dir: applied.parent().unwrap().to_path_buf(),
        keys,
        boot_id: boot.into(),
        machine_id: "0123".into(),
    }
}

#[test]
fn staging_is_one_private_file_the_boot_step_takes() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path(), vec![], "boot-1");
    f.stage(&document(DOC, 5)).unwrap();
    let path = f.path(STAGED_PATH);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let names: Vec<_> = fs::read_dir(&f.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
    assert_eq!(f.known().staged, Some((5, "boot-1".into())));
    let layout = Layout {
        state: dir.path(),
        slot: dir.path(),
    };
    let staged: Staged = staging::take(&layout).unwrap();
    assert_eq!((staged.config, staged.document.as_str()), (5, DOC));
}

// ----- against the real console -----

const ADMIN: &str = "admin-token-for-the-config-tests";
const PAIRING: &str = "pairing-token-for-the-config-tests";

struct TestHost {
    files: Files,
    health: Health,
    rounds: usize,
    sleeps: usize,
    reboots: usize,
}

impl Host for TestHost {
    fn diagnostics(&mut self) -> Option<crate::diagnostics::Origin> {
        None
    }
    fn facts(&mut self) -> Facts {
        Facts {
            hostname: "t".into(),
            cpu_count: 1,
            ..Facts::default()
        }
    }
    fn running(&mut self) -> Running {
        Running {
            slot: "a".into(),
            version: "1.0".into(),
            health: self.health,
            last_upgrade: None,
        }
    }
    fn save(&mut self, _: &Registration) {}
    fn install(
        &mut self,
        _: &str,
        _: &str,
        _: p6os_bundle::compat::Downgrade,
        _: &mut dyn FnMut(u64, u64),
    ) -> Result<(), crate::upgrade::Failure> {
        Ok(())
    }
    fn reboot(&mut self) -> Result<(), String> {
        self.reboots += 1;
        Ok(())
    }
    fn sleep(&mut self, _: std::time::Duration) -> bool {
        self.sleeps += 1;
        self.sleeps < self.rounds
    }
    fn random(&mut self) -> u64 {
        0
    }
    fn site_config(&mut self) -> Option<&mut Files> {
        Some(&mut self.files)
    }
}

fn operator(base: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Vec<u8>) {
    let url = format!("{base}{path}");
    http::call(
        method,
        &url,
        Some(ADMIN),
        body.map(str::as_bytes),
        http::RetryPolicy::default(),
    )
    .unwrap()
}

fn set(base: &str, doc: &str) -> u16 {
    let body = serde_json::json!({ "id": "store-9", "document": doc }).to_string();
    operator(base, "PUT", "/api/v1/config", Some(&body)).0
}

fn shown(base: &str) -> ConfigShow {
    let (status, body) = operator(base, "GET", "/api/v1/appliances/store-9/config", None);
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

/// Writes `applied.json` as the boot step would, with `doc`'s digest.
fn applied(f: &Files, doc: &str, source: &str) {
    let record = serde_json::json!({
        "digest": sha256(doc.as_bytes()), "rendered_digest": "sha256:r", "source": source,
        "applied_at": "2026-12-04T00:00:00Z", "files": [], "source_kind": "console"
    });
    fs::create_dir_all(&f.dir).unwrap();
    fs::write(f.path(APPLIED_PATH), record.to_string()).unwrap();
}

#[test]
fn the_loop_fetches_stages_reboots_and_reports_against_the_real_console() {
    let dir = tempfile::tempdir().unwrap();
    let console = TestConsole::start(
        Config {
            db: dir.path().join("console.db").into(),
            bundles: dir.path().join("bundles"),
            admin_token: ADMIN.into(),
            pairing_token: PAIRING.into(),
            trusted_keys: Vec::new(),
            heartbeat_secs: 7,
            pending_retry_secs: 3,
            max_pending: 1000,
            pairing_rate: p6os_console::limit::DEFAULT_PAIRING_RATE,
        },
        Listen::default(),
    );
    let base = console.url();
    let s = Settings {
        endpoint: base.clone(),
        pairing_token: PAIRING.into(),
        identity: DeviceSecret::from_seed([7; 32]),
        ca_files: Vec::new(),
        connect_timeout: std::time::Duration::from_millis(500),
        read_timeout: std::time::Duration::from_secs(5),
        clock_file: None,
    };
    let body = r#"{"id": "store-9", "pairing": "first-key"}"#;
    assert_eq!(
        operator(&base, "POST", "/api/v1/appliances", Some(body)).0,
        201
    );
    let state = dir.path().join("state");
    let mut host = TestHost {
        files: files(&state, vec![], "boot-1"),
        health: Health::Good,
        rounds: 2,
        sleeps: 0,
        reboots: 0,
    };
    applied(
        &host.files,
        "hostname: old\n",
        "the ESP (/p6os/unattended.yaml)",
    );
    let reg = run(&s, Registration::resume(None, "store-9", &base), &mut host);
    assert_eq!(reg.phase, Phase::Ready);

    // The operator sets a configuration. On an upgrade's trial the device waits.
    assert_eq!(set(&base, DOC), 200);
    host.health = Health::Assessing;
    host.sleeps = 0;
    let reg = run(&s, reg, &mut host);
    assert_eq!((host.reboots, host.files.known().staged), (0, None));
    // Then the next heartbeat fetches, stages, reboots.
    host.health = Health::Good;
    host.sleeps = 0;
    let reg = run(&s, reg, &mut host);
    assert_eq!(host.reboots, 1);
    assert_eq!(host.files.known().staged.map(|s| s.0), Some(1));
    assert_eq!(shown(&base).current.outcome, None);

    // The boot step takes it and leaves its outcome (here without the transaction, which
    // `firstboot` tests); the first heartbeat after the boot reports it.
    let layout = Layout {
        state: &state,
        slot: &state,
    };
    let staged = staging::take(&layout).unwrap();
    let origin = "the console (site configuration 1)";
    applied(&host.files, DOC, origin);
    let report = staging::report(
        &staged,
        &sha256(DOC.as_bytes()),
        ("applied", &[]),
        None,
        origin,
    );
    staging::finish(&layout, &report);
    host.files.boot_id = "boot-2".into();
    host.sleeps = 0;
    let reg = run(&s, reg, &mut host);
    let show = shown(&base);
    assert_eq!(show.current.outcome, Some(ConfigOutcome::Applied));
    assert_eq!(show.document["hostname"], "store-9");
    assert_eq!(
        host.files.known().result.map(|r| r.config),
        Some(1),
        "the result stays once reported (for diagnostics), until the next one"
    );
    assert_eq!(host.files.known().staged, None);

    // The same document again: unchanged, no reboot.
    assert_eq!(set(&base, DOC), 200);
    host.sleeps = 0;
    let reg = run(&s, reg, &mut host);
    assert_eq!(shown(&base).current.outcome, Some(ConfigOutcome::Unchanged));
    assert_eq!(host.reboots, 1);

    // The image now names a configuration key: an unsigned document is refused on the
    // device, nothing staged, no reboot.
    host.files.keys = vec![trusted_key().public()];
    let evil = "appliance: {id: store-9}\nusers: [{name: evil, sudo: true}]\n\
                console: {endpoint: http://127.0.0.1:1, token: t}\n";
    assert_eq!(set(&base, evil), 200);
    host.sleeps = 0;
    run(&s, reg, &mut host);
    let show = shown(&base);
    assert_eq!(show.current.outcome, Some(ConfigOutcome::Refused));
    assert!(show.current.problems[0].contains("not signed"), "{show:?}");
    assert_eq!(host.reboots, 1);
    assert_eq!(host.files.known().staged, None);
    console.stop();
}
