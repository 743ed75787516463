//! The transaction's tests: what is written, recovered after a power cut, and refused.

use super::*;
use std::os::unix::fs::{symlink, MetadataExt};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        for d in [
            "state/overlay/etc/upper",
            "state/overlay/var/upper",
            "slot/etc/ssh",
        ] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        fs::set_permissions(
            dir.path().join("slot/etc/ssh"),
            fs::Permissions::from_mode(0o751),
        )
        .unwrap();
        Fixture { dir }
    }
    fn state(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }
    fn slot(&self) -> std::path::PathBuf {
        self.dir.path().join("slot")
    }
    fn upper(&self, path: &str) -> std::path::PathBuf {
        let (state, slot) = (self.state(), self.slot());
        Layout {
            state: &state,
            slot: &slot,
        }
        .upper(path)
        .unwrap()
    }
    fn apply(&self, targets: &[Target], stale: &[String]) -> Result<Outcome, TxnError> {
        let (state, slot) = (self.state(), self.slot());
        apply(
            &Layout {
                state: &state,
                slot: &slot,
            },
            targets,
            stale,
        )
    }
    fn recover(&self) -> bool {
        let (state, slot) = (self.state(), self.slot());
        recover(&Layout {
            state: &state,
            slot: &slot,
        })
        .unwrap()
        .is_some()
    }
}

fn file(path: &str, content: &str, mode: u32) -> Target {
    Target {
        path: path.into(),
        content: Content::File(content.as_bytes().to_vec()),
        mode,
        uid: 0,
        gid: 0,
    }
}

#[test]
fn upper_maps_only_etc_and_var() {
    let f = Fixture::new();
    assert!(f.upper("/etc/x").ends_with("state/overlay/etc/upper/x"));
    assert!(f
        .upper("/var/lib/p6os/a")
        .ends_with("state/overlay/var/upper/lib/p6os/a"));
    let (state, slot) = (f.state(), f.slot());
    let layout = Layout {
        state: &state,
        slot: &slot,
    };
    for bad in ["/usr/x", "/etc", "/etc/", "/etcx/y", "/varx"] {
        assert!(layout.upper(bad).is_err(), "{bad}");
    }
}

#[test]
fn applies_files_symlinks_dirs_with_modes_and_slot_parent_modes() {
    let f = Fixture::new();
    let targets = vec![
        file("/etc/hostname", "h\n", 0o644),
        file("/etc/ssh/sshd_config.d/p6os.conf", "Port 22\n", 0o644),
        file("/etc/shadow", "root:*:::::::\n", 0o600),
        Target {
            path: "/etc/localtime".into(),
            content: Content::Symlink("/usr/share/zoneinfo/UTC".into()),
            mode: 0o777,
            uid: 0,
            gid: 0,
        },
        Target {
            path: "/var/home/ops".into(),
            content: Content::Dir,
            mode: 0o700,
            uid: 0,
            gid: 0,
        },
    ];
    f.apply(&targets, &[]).unwrap();
    assert_eq!(fs::read_to_string(f.upper("/etc/hostname")).unwrap(), "h\n");
    let mode = |p: &str| fs::symlink_metadata(f.upper(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("/etc/shadow"), 0o600);
    assert_eq!(
        mode("/etc/ssh"),
        0o751,
        "the slot's mode for a parent it has"
    );
    assert_eq!(mode("/etc/ssh/sshd_config.d"), 0o755);
    assert_eq!(mode("/var/home/ops"), 0o700);
    assert_eq!(
        fs::read_link(f.upper("/etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/UTC")
    );
    assert!(!f.state().join(TXN).exists());
    assert!(!f.state().join(TXN_NEW).exists());
}

#[test]
fn a_second_apply_replaces_and_removes_stale_files() {
    let f = Fixture::new();
    f.apply(
        &[
            file("/etc/hostname", "a\n", 0o644),
            file("/etc/environment", "x=1\n", 0o644),
        ],
        &[],
    )
    .unwrap();
    f.apply(
        &[file("/etc/hostname", "b\n", 0o644)],
        &["/etc/environment".into(), "/etc/never-existed".into()],
    )
    .unwrap();
    assert_eq!(fs::read_to_string(f.upper("/etc/hostname")).unwrap(), "b\n");
    assert!(!f.upper("/etc/environment").exists());
}

#[test]
fn an_uncommitted_transaction_is_discarded() {
    let f = Fixture::new();
    f.apply(&[file("/etc/hostname", "old\n", 0o644)], &[])
        .unwrap();
    // A power cut while staging: config-txn.new with a staged file, no commit.
    let new_dir = f.state().join(TXN_NEW);
    fs::create_dir_all(&new_dir).unwrap();
    fs::write(new_dir.join("f00000"), "new\n").unwrap();
    assert!(!f.recover());
    assert!(!new_dir.exists());
    assert_eq!(
        fs::read_to_string(f.upper("/etc/hostname")).unwrap(),
        "old\n"
    );
}

#[test]
fn a_committed_transaction_is_finished_at_the_next_boot() {
    let f = Fixture::new();
    f.apply(
        &[
            file("/etc/hostname", "old\n", 0o644),
            file("/etc/stale", "s\n", 0o644),
        ],
        &[],
    )
    .unwrap();
    // Committed, then cut after the first rename: f00000 placed, f00001 still staged.
    let dir = f.state().join(TXN);
    fs::create_dir_all(&dir).unwrap();
    let ops = vec![
        Op::Place {
            staged: "f00000".into(),
            target: "/etc/hostname".into(),
        },
        Op::Place {
            staged: "f00001".into(),
            target: "/var/lib/p6os/applied.json".into(),
        },
        Op::Remove {
            target: "/etc/stale".into(),
        },
    ];
    fs::write(dir.join(JOURNAL), serde_json::to_vec(&ops).unwrap()).unwrap();
    fs::write(f.upper("/etc/hostname"), "new\n").unwrap();
    fs::write(dir.join("f00001"), "{}\n").unwrap();
    fs::create_dir_all(f.upper("/var/lib/p6os")).unwrap();
    assert!(f.recover());
    assert_eq!(
        fs::read_to_string(f.upper("/etc/hostname")).unwrap(),
        "new\n"
    );
    assert_eq!(
        fs::read_to_string(f.upper("/var/lib/p6os/applied.json")).unwrap(),
        "{}\n"
    );
    assert!(!f.upper("/etc/stale").exists());
    assert!(!dir.exists());
    // And a second recovery has nothing to do.
    assert!(!f.recover());
}

#[test]
fn targets_outside_the_overlays_are_refused_before_anything_is_written() {
    let f = Fixture::new();
    let err = f
        .apply(
            &[
                file("/usr/bin/x", "x", 0o755),
                file("/etc/hostname", "h\n", 0o644),
            ],
            &[],
        )
        .unwrap_err();
    assert!(matches!(err, TxnError::NotOverlaid(_)), "{err}");
    assert!(!f.upper("/etc/hostname").exists());
}

#[test]
fn plan_lists_places_then_removes_and_skips_dirs() {
    let targets = vec![
        file("/etc/a", "", 0o644),
        Target {
            path: "/var/home/x".into(),
            content: Content::Dir,
            mode: 0o700,
            uid: 0,
            gid: 0,
        },
        file("/etc/b", "", 0o644),
    ];
    assert_eq!(
        plan(&targets, &["/etc/c".into()]),
        vec![
            Op::Place {
                staged: "f00000".into(),
                target: "/etc/a".into()
            },
            Op::Place {
                staged: "f00001".into(),
                target: "/etc/b".into()
            },
            Op::Remove {
                target: "/etc/c".into()
            },
        ]
    );
}

/// A user's home from an earlier apply, owned by the user (uid 1000).
fn owned(path: &str, content: Content, mode: u32) -> Target {
    Target {
        path: path.into(),
        content,
        mode,
        uid: 1000,
        gid: 1000,
    }
}

fn owner_mode(path: &Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

/// The targets of a user with SSH keys, as `render` makes them, and one more file.
fn user_with_keys() -> Vec<Target> {
    vec![
        file("/etc/hostname", "h\n", 0o644),
        owned("/var/home/ops", Content::Dir, 0o700),
        owned("/var/home/ops/.ssh", Content::Dir, 0o700),
        owned(
            "/var/home/ops/.ssh/authorized_keys",
            Content::File(b"ssh-ed25519 AAAA ops\n".to_vec()),
            0o600,
        ),
    ]
}

/// Everything under the state partition's upper directories: (path, owner, group, mode, link).
fn snapshot(f: &Fixture) -> Vec<(String, u32, u32, u32, Option<std::path::PathBuf>)> {
    let mut out = Vec::new();
    let mut stack = vec![f.state().join("overlay")];
    while let Some(dir) = stack.pop() {
        let m = fs::symlink_metadata(&dir).unwrap();
        let link = fs::read_link(&dir).ok();
        out.push((
            dir.display().to_string(),
            m.uid(),
            m.gid(),
            m.mode() & 0o7777,
            link,
        ));
        if m.is_dir() {
            for e in fs::read_dir(&dir).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_users_ssh_dir_linked_to_the_etc_upper_dir_is_refused_and_nothing_changes() {
    let f = Fixture::new();
    f.apply(&user_with_keys(), &[]).unwrap();
    // At run time the user replaces ~/.ssh with a link that, seen from the state partition
    // at the next apply, is /etc's upper directory.
    let ssh = f.upper("/var/home/ops/.ssh");
    fs::remove_dir_all(&ssh).unwrap();
    symlink("../../../../etc/upper", &ssh).unwrap();
    let etc_upper = f.state().join("overlay/etc/upper");
    fs::set_permissions(&etc_upper, fs::Permissions::from_mode(0o755)).unwrap();
    let before = snapshot(&f);
    let mut targets = user_with_keys();
    targets[0] = file("/etc/hostname", "changed\n", 0o644);
    let err = f.apply(&targets, &[]).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, TxnError::Symlink { .. }), "{text}");
    assert!(
        text.contains("/var/home/ops/.ssh") && text.contains("symbolic link"),
        "{text}"
    );
    assert_eq!(owner_mode(&etc_upper), (0, 0, 0o755), "/etc's upper dir");
    assert!(!etc_upper.join("authorized_keys").exists());
    assert_eq!(snapshot(&f), before, "nothing changed");
    assert_eq!(fs::read_to_string(f.upper("/etc/hostname")).unwrap(), "h\n");
}

#[test]
fn write_files_through_a_linked_directory_are_refused() {
    let f = Fixture::new();
    f.apply(&user_with_keys(), &[]).unwrap();
    symlink("../../../../etc/upper", f.upper("/var/home/ops/.config")).unwrap();
    let before = snapshot(&f);
    let err = f
        .apply(
            &[file(
                "/var/home/ops/.config/shadow",
                "root::0:::::\n",
                0o644,
            )],
            &[],
        )
        .unwrap_err();
    assert!(err.to_string().contains("/var/home/ops/.config"), "{err}");
    assert!(!f.upper("/etc/shadow").exists());
    assert_eq!(snapshot(&f), before, "nothing changed");
}

#[test]
fn a_linked_directory_in_a_committed_journal_is_not_followed_at_recovery() {
    let f = Fixture::new();
    f.apply(&user_with_keys(), &[]).unwrap();
    let ssh = f.upper("/var/home/ops/.ssh");
    fs::remove_dir_all(&ssh).unwrap();
    symlink("../../../../etc/upper", &ssh).unwrap();
    let dir = f.state().join(TXN);
    fs::create_dir_all(&dir).unwrap();
    let ops = vec![
        Op::Place {
            staged: "f00000".into(),
            target: "/var/home/ops/.ssh/authorized_keys".into(),
        },
        Op::Remove {
            target: "/var/home/ops/.ssh/hostname".into(),
        },
    ];
    fs::write(dir.join(JOURNAL), serde_json::to_vec(&ops).unwrap()).unwrap();
    fs::write(dir.join("f00000"), "ssh-ed25519 AAAA evil\n").unwrap();
    fs::write(f.upper("/etc/hostname"), "h\n").unwrap();
    let (state, slot) = (f.state(), f.slot());
    let outcome = recover(&Layout {
        state: &state,
        slot: &slot,
    })
    .unwrap()
    .unwrap();
    let err = &outcome.unfinished[0].error;
    assert!(matches!(err, TxnError::Symlink { .. }), "{err}");
    assert!(!f.upper("/etc/authorized_keys").exists());
    assert!(f.upper("/etc/hostname").exists());
}

#[test]
fn a_file_target_that_is_a_link_is_replaced_not_followed() {
    let f = Fixture::new();
    f.apply(&user_with_keys(), &[]).unwrap();
    let keys = f.upper("/var/home/ops/.ssh/authorized_keys");
    fs::remove_file(&keys).unwrap();
    symlink("../../../../../etc/upper/hostname", &keys).unwrap();
    f.apply(&user_with_keys(), &[]).unwrap();
    assert_eq!(fs::read_to_string(f.upper("/etc/hostname")).unwrap(), "h\n");
    assert!(fs::symlink_metadata(&keys).unwrap().is_file());
    assert_eq!(owner_mode(&keys), (1000, 1000, 0o600));
}

/// The last sudoer's configuration: keys, a sudoers drop-in, the record.
fn sudoer_with_keys(record: &str) -> Vec<Target> {
    let mut t = user_with_keys();
    t.push(file("/etc/sudoers.d/p6os", "ops ALL=(ALL) ALL\n", 0o440));
    t.push(file("/var/lib/p6os/applied.json", record, 0o644));
    t
}

/// The operator's next configuration: `sudo: false` (the drop-in is stale), a new record.
fn without_sudo() -> (Vec<Target>, Vec<String>) {
    let mut t = user_with_keys();
    t.push(file("/var/lib/p6os/applied.json", "second\n", 0o644));
    (t, vec!["/etc/sudoers.d/p6os".into()])
}

#[test]
fn a_directory_where_authorized_keys_goes_is_moved_aside_and_sudo_is_still_removed() {
    let f = Fixture::new();
    f.apply(&sudoer_with_keys("first\n"), &[]).unwrap();
    // `ops` at run time: rm ~/.ssh/authorized_keys; mkdir -p ~/.ssh/authorized_keys/x
    let keys = f.upper("/var/home/ops/.ssh/authorized_keys");
    fs::remove_file(&keys).unwrap();
    fs::create_dir_all(keys.join("x")).unwrap();
    let (targets, stale) = without_sudo();
    let outcome = f.apply(&targets, &stale).unwrap();
    assert!(outcome.unfinished.is_empty(), "{outcome:?}");
    assert!(
        outcome.notes[0].contains(".authorized_keys.p6os-displaced-0"),
        "{outcome:?}"
    );
    assert!(!f.upper("/etc/sudoers.d/p6os").exists(), "sudo removed");
    assert_eq!(
        fs::read_to_string(f.upper("/var/lib/p6os/applied.json")).unwrap(),
        "second\n"
    );
    assert!(fs::symlink_metadata(&keys).unwrap().is_file());
    assert_eq!(owner_mode(&keys), (1000, 1000, 0o600));
    let aside = f.upper("/var/home/ops/.ssh/.authorized_keys.p6os-displaced-0");
    assert!(
        aside.join("x").is_dir(),
        "the user's directory is kept aside"
    );
    assert!(!f.state().join(TXN).exists());
}

#[test]
fn a_directory_where_a_stale_file_is_removed_is_left_and_sudo_is_still_removed() {
    let f = Fixture::new();
    let mut first = sudoer_with_keys("first\n");
    first.push(owned(
        "/var/home/ops/.profile",
        Content::File(b"x\n".to_vec()),
        0o644,
    ));
    f.apply(&first, &[]).unwrap();
    let profile = f.upper("/var/home/ops/.profile");
    fs::remove_file(&profile).unwrap();
    fs::create_dir_all(profile.join("x")).unwrap();
    let (targets, mut stale) = without_sudo();
    // The user's removal comes first: it must not stop the drop-in's.
    stale.insert(0, "/var/home/ops/.profile".into());
    let outcome = f.apply(&targets, &stale).unwrap();
    assert!(outcome.unfinished.is_empty(), "{outcome:?}");
    assert!(
        outcome.notes[0].contains("/var/home/ops/.profile is a directory"),
        "{outcome:?}"
    );
    assert!(!f.upper("/etc/sudoers.d/p6os").exists(), "sudo removed");
    assert_eq!(
        fs::read_to_string(f.upper("/var/lib/p6os/applied.json")).unwrap(),
        "second\n"
    );
    assert!(profile.join("x").is_dir(), "not the file: left as it is");
    assert!(!f.state().join(TXN).exists());
}

/// A transaction committed with these ops and staged files, not yet finished.
fn committed(f: &Fixture, ops: &[Op], staged: &[(&str, &str)]) {
    let dir = f.state().join(TXN);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(JOURNAL), serde_json::to_vec(ops).unwrap()).unwrap();
    for (name, text) in staged {
        fs::write(dir.join(name), text).unwrap();
    }
}

fn place(staged: &str, target: &str) -> Op {
    Op::Place {
        staged: staged.into(),
        target: target.into(),
    }
}

fn remove(target: &str) -> Op {
    Op::Remove {
        target: target.into(),
    }
}

#[test]
fn recovery_moves_a_users_directory_aside_removes_sudo_and_is_idempotent() {
    let f = Fixture::new();
    f.apply(&sudoer_with_keys("first\n"), &[]).unwrap();
    let keys = f.upper("/var/home/ops/.ssh/authorized_keys");
    fs::remove_file(&keys).unwrap();
    fs::create_dir_all(keys.join("x")).unwrap();
    let profile = f.upper("/var/home/ops/.profile");
    fs::create_dir_all(profile.join("y")).unwrap();
    committed(
        &f,
        &[
            place("f00000", "/var/home/ops/.ssh/authorized_keys"),
            place("f00001", "/var/lib/p6os/applied.json"),
            remove("/var/home/ops/.profile"),
            remove("/etc/sudoers.d/p6os"),
        ],
        &[("f00000", "ssh-ed25519 AAAA new\n"), ("f00001", "second\n")],
    );
    assert!(f.recover());
    assert!(!f.upper("/etc/sudoers.d/p6os").exists(), "sudo removed");
    assert_eq!(
        fs::read_to_string(f.upper("/var/lib/p6os/applied.json")).unwrap(),
        "second\n"
    );
    assert_eq!(fs::read_to_string(&keys).unwrap(), "ssh-ed25519 AAAA new\n");
    assert!(profile.join("y").is_dir());
    assert!(!f.state().join(TXN).exists());
    assert!(!f.recover(), "nothing left to do");
}

#[test]
fn a_step_that_fails_in_a_users_home_does_not_stop_the_rest_and_is_retried() {
    let f = Fixture::new();
    f.apply(&sudoer_with_keys("first\n"), &[]).unwrap();
    // ~/.ssh a link to /etc's upper directory, after the commit point.
    let ssh = f.upper("/var/home/ops/.ssh");
    fs::remove_dir_all(&ssh).unwrap();
    symlink("../../../../etc/upper", &ssh).unwrap();
    committed(
        &f,
        &[
            place("f00000", "/var/home/ops/.ssh/authorized_keys"),
            remove("/var/home/ops/.ssh/id_rsa"),
            remove("/etc/sudoers.d/p6os"),
            place("f00001", "/var/lib/p6os/applied.json"),
        ],
        &[
            ("f00000", "ssh-ed25519 AAAA evil\n"),
            ("f00001", "second\n"),
        ],
    );
    let (state, slot) = (f.state(), f.slot());
    let layout = Layout {
        state: &state,
        slot: &slot,
    };
    let outcome = recover(&layout).unwrap().unwrap();
    assert!(!f.upper("/etc/sudoers.d/p6os").exists(), "sudo removed");
    assert_eq!(
        fs::read_to_string(f.upper("/var/lib/p6os/applied.json")).unwrap(),
        "second\n"
    );
    assert!(!f.upper("/etc/authorized_keys").exists(), "never followed");
    let failed: Vec<&str> = outcome
        .unfinished
        .iter()
        .map(|u| u.target.as_str())
        .collect();
    assert_eq!(
        failed,
        [
            "/var/home/ops/.ssh/authorized_keys",
            "/var/home/ops/.ssh/id_rsa"
        ],
        "{outcome:?}"
    );
    assert!(!outcome.failed_outside_homes());
    // Kept for the next boot, which tries the failed step again and nothing else.
    assert!(f.state().join(TXN).join("f00000").exists());
    fs::remove_file(&ssh).unwrap();
    fs::create_dir(&ssh).unwrap();
    assert!(f.recover());
    assert_eq!(
        fs::read_to_string(ssh.join("authorized_keys")).unwrap(),
        "ssh-ed25519 AAAA evil\n"
    );
    assert!(!f.state().join(TXN).exists());
}
