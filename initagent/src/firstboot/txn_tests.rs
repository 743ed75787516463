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
    fn apply(&self, targets: &[Target], stale: &[String]) -> Result<(), TxnError> {
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
    let err = recover(&Layout {
        state: &state,
        slot: &slot,
    })
    .unwrap_err();
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
