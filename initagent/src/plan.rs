//! Boot steps as data. The plans are pure functions of what was read (command line,
//! module list, init arguments, current mounts); `boot` and `service` execute them.
//!
//! Architecture invariant: nothing here touches the system, and the executors make no
//! decisions a plan could make.

use std::fmt;
use std::time::Duration;

use crate::cmdline::Cmdline;
use crate::efivar::EFIVARS_DIR;

/// Where the slot root is mounted before switch_root.
pub const SYSROOT: &str = "/sysroot";
/// GPT label of the ESP (read for `/p6os/unattended.yaml`).
pub const ESP_PARTLABEL: &str = p6os_layout::partition::ESP_LABEL;
/// GPT label of the writable state partition.
pub const STATE_PARTLABEL: &str = p6os_layout::partition::STATE_LABEL;
/// Where the state partition is mounted (moves to the same path in the new root).
pub const STATE_DIR: &str = "/run/p6os/state";
/// Module list inside the initramfs.
pub const MODULES_LOAD: &str = "/etc/p6os/modules.load";
/// Directories of the slot root that get a writable overlay on the state partition.
pub const OVERLAID: [&str; 2] = ["/etc", "/var"];
/// Directories under /var that live straight on the state partition (`data/<dir>`), not in
/// the /var overlay, when the slot has them: container runtimes and Kubernetes keep
/// overlayfs snapshots there, which cannot sit on an overlay upper layer.
pub const DATA_DIRS: [&str; 3] = [
    "/var/lib/containerd",
    "/var/lib/rancher/k3s/agent/containerd",
    "/var/lib/kubelet",
];
/// API filesystems moved from the initramfs into the new root, in this order.
pub const MOVED_MOUNTS: [&str; 4] = ["/dev", "/proc", "/sys", "/run"];

/// What a mount is for; used in log lines (`mounted root /dev/vda2 ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Api,
    Root,
    State,
    Overlay,
}

/// Mount source: a fixed name (`proc`, `overlay`), a partition found by GPT label, or the
/// dm-verity device `OpenVerity` made over such a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Named(&'static str),
    Partition(String),
    Verity(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    ReadOnly,
    NoSuid,
    NoDev,
    NoExec,
    NoAtime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub role: Role,
    pub source: Source,
    pub target: String,
    pub fstype: &'static str,
    pub flags: Vec<Flag>,
    /// Filesystem-specific options (the `data` argument of mount(2)).
    pub data: String,
}

impl Mount {
    /// Short option summary for logs: `ro`, `rw,noatime`, `rw,nosuid,nodev,noexec`.
    pub fn options(&self) -> String {
        let mut parts = vec![if self.flags.contains(&Flag::ReadOnly) {
            "ro"
        } else {
            "rw"
        }];
        for flag in &self.flags {
            parts.push(match flag {
                Flag::ReadOnly => continue,
                Flag::NoSuid => "nosuid",
                Flag::NoDev => "nodev",
                Flag::NoExec => "noexec",
                Flag::NoAtime => "noatime",
            });
        }
        parts.join(",")
    }
}

/// The log line for a mount done from `source`:
/// `mounted root /dev/vda2 on /sysroot (squashfs, ro)`.
pub fn describe_mount(m: &Mount, source: &str) -> String {
    let what = match m.role {
        Role::Root => format!("root {source}"),
        Role::State => format!("state {source}"),
        Role::Api | Role::Overlay => source.to_string(),
    };
    format!(
        "mounted {what} on {} ({}, {})",
        m.target,
        m.fstype,
        m.options()
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `mkdir -p` each path with this mode.
    MakeDirs {
        paths: Vec<String>,
        mode: u32,
    },
    Mount(Mount),
    /// `finit_module` each file in order; failures are warnings.
    LoadModules {
        paths: Vec<String>,
    },
    /// Mount efivarfs if needed (`plan_efivarfs`; failures are warnings), log the boot
    /// entry the boot loader selected and keep its boot partition for `WaitForPartitions`.
    ReadLoaderVariables,
    /// Poll sysfs until one disk holds every label (`bootdisk::choose`, preferring the boot
    /// disk) and the partitions have device nodes, or fail after `timeout`.
    WaitForPartitions {
        labels: Vec<String>,
        timeout: Duration,
    },
    /// Grow partition `label` (the last on the boot disk) to the disk's end: its GPT entry,
    /// the backup table and the kernel's view (`grow`). Logs and continues on failure.
    GrowPartition {
        label: String,
    },
    /// Grow the filesystem of partition `label`, mounted at `target`, to the partition's size
    /// (`grow`). Logs and continues on failure.
    GrowFilesystem {
        label: String,
        target: String,
    },
    /// Set up the read-only dm-verity device `name` over partition `label` (data and hash tree
    /// on it, `params` from the command line); a `Source::Verity(label)` mount uses it. Reads
    /// of a changed block then fail: the boot fails and boot counting falls back.
    OpenVerity {
        label: String,
        name: String,
        params: p6os_layout::verity::Params,
    },
    /// Fail unless `path` exists (not following a final symlink).
    RequireFile {
        path: String,
        what: &'static str,
    },
    /// Move the clock up to the image's build epoch or the time saved in state when it is
    /// behind both (`clock::apply_floor`); never fails the boot.
    ClockFloor {
        root: String,
        state: String,
    },
    /// `mount --move` each path to the same path under `into`.
    MoveMounts {
        paths: Vec<String>,
        into: String,
    },
    /// Find, check and apply `unattended.yaml` (`firstboot`) while the state partition is
    /// mounted and the overlays are not; never fails the boot. `config_arg` is `p6os.config=`.
    ApplyConfig {
        config_arg: Option<String>,
    },
    /// Note which of `dirs` the slot itself has (before the overlays hide its /var).
    FindDataDirs {
        dirs: Vec<String>,
        root: String,
    },
    /// For each directory `FindDataDirs` found: `mkdir -p {state}/data{dir}` and bind it on
    /// `{root}{dir}` (after the overlays).
    BindDataDirs {
        dirs: Vec<String>,
        root: String,
        state: String,
    },
    /// Delete the initramfs contents without crossing mount points.
    DeleteInitramfs,
    /// chdir `new_root`; `mount --move . /`; chroot `.`; chdir `/`.
    SwitchRoot {
        new_root: String,
    },
    /// execv `path` with `argv`.
    Exec {
        path: String,
        argv: Vec<String>,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Named(name) => f.write_str(name),
            Source::Partition(label) => write!(f, "PARTLABEL={label}"),
            Source::Verity(label) => write!(f, "verity over PARTLABEL={label}"),
        }
    }
}

fn api_mount(fstype: &'static str, target: &str, flags: &[Flag], data: &str) -> Step {
    Step::Mount(Mount {
        role: Role::Api,
        source: Source::Named(fstype),
        target: target.to_string(),
        fstype,
        flags: flags.to_vec(),
        data: data.to_string(),
    })
}

fn proc_mount() -> Step {
    api_mount(
        "proc",
        "/proc",
        &[Flag::NoSuid, Flag::NoDev, Flag::NoExec],
        "",
    )
}

fn sys_mount() -> Step {
    api_mount(
        "sysfs",
        "/sys",
        &[Flag::NoSuid, Flag::NoDev, Flag::NoExec],
        "",
    )
}

fn dev_mount() -> Step {
    api_mount("devtmpfs", "/dev", &[Flag::NoSuid], "mode=0755")
}

fn run_mount() -> Step {
    api_mount("tmpfs", "/run", &[Flag::NoSuid, Flag::NoDev], "mode=0755")
}

fn tmp_mount() -> Step {
    api_mount("tmpfs", "/tmp", &[Flag::NoSuid, Flag::NoDev], "mode=1777")
}

/// efivarfs, read-only: the agent only reads the boot loader's variables (whatever
/// needs to write them can remount it read-write).
pub fn efivarfs_mount() -> Mount {
    Mount {
        role: Role::Api,
        source: Source::Named("efivarfs"),
        target: EFIVARS_DIR.to_string(),
        fstype: "efivarfs",
        flags: vec![Flag::ReadOnly, Flag::NoSuid, Flag::NoDev, Flag::NoExec],
        data: String::new(),
    }
}

/// What to do about efivarfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Efivarfs {
    /// No efivars directory in sysfs: not booted through UEFI (or no runtime services).
    NotUefi,
    AlreadyMounted,
    Mount(Mount),
}

/// Mount efivarfs unless it is mounted or the machine did not boot through UEFI.
pub fn plan_efivarfs(mount_points: &[String], efivars_dir_exists: bool) -> Efivarfs {
    if mount_points.iter().any(|m| m == EFIVARS_DIR) {
        Efivarfs::AlreadyMounted
    } else if !efivars_dir_exists {
        Efivarfs::NotUefi
    } else {
        Efivarfs::Mount(efivarfs_mount())
    }
}

/// The device-mapper name of a slot's verity device (`/dev/mapper/p6os-root-a` where udev runs).
pub fn verity_name(slot: crate::cmdline::Slot) -> String {
    format!("{}-verity", slot.partlabel())
}

/// First steps of the initramfs stage, before anything can be read or logged to kmsg.
pub fn plan_early() -> Vec<Step> {
    vec![
        Step::MakeDirs {
            paths: ["/proc", "/sys", "/dev", "/run", SYSROOT]
                .map(String::from)
                .to_vec(),
            mode: 0o755,
        },
        proc_mount(),
        sys_mount(),
        dev_mount(),
        run_mount(),
    ]
}

/// The rest of the initramfs stage: from loading modules to exec'ing the slot's init.
/// `init_args` are the arguments the kernel gave `/init`; they are passed on.
pub fn plan_boot(cmdline: &Cmdline, modules: &[String], init_args: &[String]) -> Vec<Step> {
    let mut steps = plan_devices(modules);
    steps.extend(plan_root(cmdline, init_args));
    steps
}

/// The modules, then the boot loader's variables (which entry started: the slot of a unified
/// kernel image). Before the command line is read.
pub fn plan_devices(modules: &[String]) -> Vec<Step> {
    let mut steps = Vec::new();
    if !modules.is_empty() {
        steps.push(Step::LoadModules {
            paths: modules.to_vec(),
        });
    }
    // After the modules: efivarfs may be one.
    steps.push(Step::ReadLoaderVariables);
    steps
}

/// From finding the slot's partitions to exec'ing its init.
pub fn plan_root(cmdline: &Cmdline, init_args: &[String]) -> Vec<Step> {
    let root_label = cmdline.slot.partlabel().to_string();
    let mut steps = Vec::new();
    steps.push(Step::WaitForPartitions {
        labels: vec![
            root_label.clone(),
            STATE_PARTLABEL.to_string(),
            ESP_PARTLABEL.to_string(),
        ],
        timeout: cmdline.rootwait,
    });
    let source = match cmdline.verity {
        Some(params) => {
            steps.push(Step::OpenVerity {
                label: root_label.clone(),
                name: verity_name(cmdline.slot),
                params,
            });
            Source::Verity(root_label)
        }
        None => Source::Partition(root_label),
    };
    steps.push(Step::Mount(Mount {
        role: Role::Root,
        source,
        target: SYSROOT.to_string(),
        fstype: cmdline.rootfstype.as_str(),
        flags: vec![Flag::ReadOnly],
        data: String::new(),
    }));
    steps.push(Step::RequireFile {
        path: format!("{SYSROOT}{}", cmdline.init),
        what: "init",
    });
    steps.push(Step::GrowPartition {
        label: STATE_PARTLABEL.to_string(),
    });
    steps.push(Step::MakeDirs {
        paths: vec![STATE_DIR.to_string()],
        mode: 0o755,
    });
    steps.push(Step::Mount(Mount {
        role: Role::State,
        source: Source::Partition(STATE_PARTLABEL.to_string()),
        target: STATE_DIR.to_string(),
        fstype: "ext4",
        flags: vec![Flag::NoAtime],
        data: String::new(),
    }));
    // Online: ext4 grows while mounted (the initramfs has no resize2fs).
    steps.push(Step::GrowFilesystem {
        label: STATE_PARTLABEL.to_string(),
        target: STATE_DIR.to_string(),
    });
    steps.push(Step::ClockFloor {
        root: SYSROOT.to_string(),
        state: STATE_DIR.to_string(),
    });
    steps.push(Step::MakeDirs {
        paths: OVERLAID
            .iter()
            .flat_map(|dir| ["upper", "work"].map(|sub| format!("{STATE_DIR}/overlay{dir}/{sub}")))
            .collect(),
        mode: 0o755,
    });
    steps.push(Step::ApplyConfig {
        config_arg: cmdline.config.clone(),
    });
    steps.push(Step::FindDataDirs {
        dirs: DATA_DIRS.map(String::from).to_vec(),
        root: SYSROOT.to_string(),
    });
    for dir in OVERLAID {
        let lower = format!("{SYSROOT}{dir}");
        let data = format!(
            "lowerdir={lower},upperdir={STATE_DIR}/overlay{dir}/upper,\
             workdir={STATE_DIR}/overlay{dir}/work"
        );
        steps.push(Step::Mount(Mount {
            role: Role::Overlay,
            source: Source::Named("overlay"),
            target: lower,
            fstype: "overlay",
            flags: Vec::new(),
            data,
        }));
    }
    steps.push(Step::BindDataDirs {
        dirs: DATA_DIRS.map(String::from).to_vec(),
        root: SYSROOT.to_string(),
        state: STATE_DIR.to_string(),
    });
    steps.push(Step::MoveMounts {
        paths: MOVED_MOUNTS.map(String::from).to_vec(),
        into: SYSROOT.to_string(),
    });
    steps.push(Step::DeleteInitramfs);
    steps.push(Step::SwitchRoot {
        new_root: SYSROOT.to_string(),
    });
    let mut argv = vec![cmdline.init.clone()];
    argv.extend(init_args.iter().cloned());
    steps.push(Step::Exec {
        path: cmdline.init.clone(),
        argv,
    });
    steps
}

/// Service mode (PID 1 of the minimal base): mount what is not mounted yet.
pub fn plan_service_mounts(mount_points: &[String]) -> Vec<Step> {
    let wanted = [
        ("/proc", proc_mount()),
        ("/sys", sys_mount()),
        ("/dev", dev_mount()),
        ("/run", run_mount()),
        ("/tmp", tmp_mount()),
    ];
    wanted
        .into_iter()
        .filter(|(path, _)| !mount_points.iter().any(|m| m == path))
        .map(|(_, step)| step)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::{RootFs, Slot};

    fn cmdline(slot: Slot, rootfstype: RootFs) -> Cmdline {
        Cmdline {
            slot,
            rootfstype,
            init: "/sbin/init".into(),
            rootwait: Duration::from_secs(30),
            config: None,
            verity: None,
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn expected_plan(slot: &str, fstype: &'static str, modules: &[&str]) -> Vec<Step> {
        let root = format!("p6os-root-{slot}");
        let mut steps = Vec::new();
        if !modules.is_empty() {
            steps.push(Step::LoadModules {
                paths: strings(modules),
            });
        }
        steps.extend([
            Step::ReadLoaderVariables,
            Step::WaitForPartitions {
                labels: vec![root.clone(), "p6os-state".into(), "p6os-esp".into()],
                timeout: Duration::from_secs(30),
            },
            Step::Mount(Mount {
                role: Role::Root,
                source: Source::Partition(root),
                target: "/sysroot".into(),
                fstype,
                flags: vec![Flag::ReadOnly],
                data: String::new(),
            }),
            Step::RequireFile {
                path: "/sysroot/sbin/init".into(),
                what: "init",
            },
            Step::GrowPartition {
                label: "p6os-state".into(),
            },
            Step::MakeDirs {
                paths: strings(&["/run/p6os/state"]),
                mode: 0o755,
            },
            Step::Mount(Mount {
                role: Role::State,
                source: Source::Partition("p6os-state".into()),
                target: "/run/p6os/state".into(),
                fstype: "ext4",
                flags: vec![Flag::NoAtime],
                data: String::new(),
            }),
            Step::GrowFilesystem {
                label: "p6os-state".into(),
                target: "/run/p6os/state".into(),
            },
            Step::ClockFloor {
                root: "/sysroot".into(),
                state: "/run/p6os/state".into(),
            },
            Step::MakeDirs {
                paths: strings(&[
                    "/run/p6os/state/overlay/etc/upper",
                    "/run/p6os/state/overlay/etc/work",
                    "/run/p6os/state/overlay/var/upper",
                    "/run/p6os/state/overlay/var/work",
                ]),
                mode: 0o755,
            },
            Step::ApplyConfig { config_arg: None },
            Step::FindDataDirs {
                dirs: strings(&[
                    "/var/lib/containerd",
                    "/var/lib/rancher/k3s/agent/containerd",
                    "/var/lib/kubelet",
                ]),
                root: "/sysroot".into(),
            },
            Step::Mount(Mount {
                role: Role::Overlay,
                source: Source::Named("overlay"),
                target: "/sysroot/etc".into(),
                fstype: "overlay",
                flags: vec![],
                data: "lowerdir=/sysroot/etc,upperdir=/run/p6os/state/overlay/etc/upper,\
                       workdir=/run/p6os/state/overlay/etc/work"
                    .into(),
            }),
            Step::Mount(Mount {
                role: Role::Overlay,
                source: Source::Named("overlay"),
                target: "/sysroot/var".into(),
                fstype: "overlay",
                flags: vec![],
                data: "lowerdir=/sysroot/var,upperdir=/run/p6os/state/overlay/var/upper,\
                       workdir=/run/p6os/state/overlay/var/work"
                    .into(),
            }),
            Step::BindDataDirs {
                dirs: strings(&[
                    "/var/lib/containerd",
                    "/var/lib/rancher/k3s/agent/containerd",
                    "/var/lib/kubelet",
                ]),
                root: "/sysroot".into(),
                state: "/run/p6os/state".into(),
            },
            Step::MoveMounts {
                paths: strings(&["/dev", "/proc", "/sys", "/run"]),
                into: "/sysroot".into(),
            },
            Step::DeleteInitramfs,
            Step::SwitchRoot {
                new_root: "/sysroot".into(),
            },
            Step::Exec {
                path: "/sbin/init".into(),
                argv: strings(&["/sbin/init"]),
            },
        ]);
        steps
    }

    #[test]
    fn plan_for_slot_a_squashfs() {
        let modules = ["/lib/modules/k/virtio.ko", "/lib/modules/k/squashfs.ko"];
        assert_eq!(
            plan_boot(&cmdline(Slot::A, RootFs::Squashfs), &strings(&modules), &[]),
            expected_plan("a", "squashfs", &modules)
        );
    }

    #[test]
    fn a_protected_slot_is_mounted_through_its_verity_device_only() {
        let params = p6os_layout::verity::Params {
            data_blocks: 9,
            salt: [1; 32],
            root_hash: [2; 32],
        };
        let mut c = cmdline(Slot::B, RootFs::Squashfs);
        c.verity = Some(params);
        let plan = plan_boot(&c, &[], &[]);
        let mut expected = expected_plan("b", "squashfs", &[]);
        let at = expected
            .iter()
            .position(|s| matches!(s, Step::Mount(m) if m.role == Role::Root))
            .unwrap();
        let Step::Mount(root) = &mut expected[at] else {
            unreachable!()
        };
        root.source = Source::Verity("p6os-root-b".into());
        expected.insert(
            at,
            Step::OpenVerity {
                label: "p6os-root-b".into(),
                name: "p6os-root-b-verity".into(),
                params,
            },
        );
        assert_eq!(plan, expected);
        // The raw partition is mounted nowhere.
        assert!(!plan.iter().any(|s| matches!(
            s,
            Step::Mount(m) if m.source == Source::Partition("p6os-root-b".into())
        )));
    }

    #[test]
    fn plan_for_slot_b_erofs_without_modules() {
        assert_eq!(
            plan_boot(&cmdline(Slot::B, RootFs::Erofs), &[], &[]),
            expected_plan("b", "erofs", &[])
        );
    }

    #[test]
    fn custom_init_rootwait_and_arguments() {
        let mut c = cmdline(Slot::A, RootFs::Erofs);
        c.init = "/usr/lib/p6os/p6os-agent".into();
        c.rootwait = Duration::from_secs(3);
        let plan = plan_boot(&c, &[], &strings(&["single"]));
        assert!(plan.contains(&Step::WaitForPartitions {
            labels: strings(&["p6os-root-a", "p6os-state", "p6os-esp"]),
            timeout: Duration::from_secs(3),
        }));
        assert!(plan.contains(&Step::RequireFile {
            path: "/sysroot/usr/lib/p6os/p6os-agent".into(),
            what: "init",
        }));
        assert_eq!(
            plan.last(),
            Some(&Step::Exec {
                path: "/usr/lib/p6os/p6os-agent".into(),
                argv: strings(&["/usr/lib/p6os/p6os-agent", "single"]),
            })
        );
    }

    #[test]
    fn early_plan_mounts_api_filesystems() {
        let plan = plan_early();
        let targets: Vec<(&str, &str, String)> = plan
            .iter()
            .filter_map(|s| match s {
                Step::Mount(m) => Some((m.target.as_str(), m.fstype, m.options())),
                _ => None,
            })
            .collect();
        assert_eq!(
            targets,
            vec![
                ("/proc", "proc", "rw,nosuid,nodev,noexec".to_string()),
                ("/sys", "sysfs", "rw,nosuid,nodev,noexec".to_string()),
                ("/dev", "devtmpfs", "rw,nosuid".to_string()),
                ("/run", "tmpfs", "rw,nosuid,nodev".to_string()),
            ]
        );
        assert!(
            matches!(&plan[0], Step::MakeDirs { paths, .. } if paths.contains(&"/sysroot".to_string()))
        );
    }

    #[test]
    fn service_mounts_only_what_is_missing() {
        let all = strings(&["/", "/proc", "/sys", "/dev", "/run", "/tmp"]);
        assert!(plan_service_mounts(&all).is_empty());
        let some = strings(&["/", "/proc", "/dev", "/run/p6os/state"]);
        let targets: Vec<String> = plan_service_mounts(&some)
            .into_iter()
            .filter_map(|s| match s {
                Step::Mount(m) => Some(format!("{} {} {}", m.target, m.fstype, m.data)),
                _ => None,
            })
            .collect();
        assert_eq!(
            targets,
            strings(&[
                "/sys sysfs ",
                "/run tmpfs mode=0755",
                "/tmp tmpfs mode=1777"
            ])
        );
        assert_eq!(plan_service_mounts(&[]).len(), 5);
    }

    #[test]
    fn efivarfs_only_where_needed() {
        let mounted = strings(&["/", "/sys", "/sys/firmware/efi/efivars"]);
        assert_eq!(plan_efivarfs(&mounted, true), Efivarfs::AlreadyMounted);
        assert_eq!(plan_efivarfs(&mounted, false), Efivarfs::AlreadyMounted);
        let bare = strings(&["/", "/sys"]);
        assert_eq!(plan_efivarfs(&bare, false), Efivarfs::NotUefi);
        assert_eq!(plan_efivarfs(&[], false), Efivarfs::NotUefi);
        let Efivarfs::Mount(m) = plan_efivarfs(&bare, true) else {
            panic!("expected a mount");
        };
        assert_eq!(
            describe_mount(&m, "efivarfs"),
            "mounted efivarfs on /sys/firmware/efi/efivars (efivarfs, ro,nosuid,nodev,noexec)"
        );
    }

    #[test]
    fn loader_variables_are_read_after_modules_and_before_partitions() {
        let plan = plan_boot(
            &cmdline(Slot::A, RootFs::Squashfs),
            &strings(&["/lib/modules/k/efivarfs.ko"]),
            &[],
        );
        let read = plan.iter().position(|s| *s == Step::ReadLoaderVariables);
        assert_eq!(read, Some(1));
        assert!(matches!(plan[0], Step::LoadModules { .. }));
        assert!(matches!(plan[2], Step::WaitForPartitions { .. }));
    }

    #[test]
    fn mount_log_lines() {
        let plan = plan_boot(&cmdline(Slot::A, RootFs::Squashfs), &[], &[]);
        let mut devices = vec!["/dev/vda2", "/dev/vda4"].into_iter();
        let lines: Vec<String> = plan_early()
            .iter()
            .chain(plan.iter())
            .filter_map(|s| match s {
                Step::Mount(m) => Some(match &m.source {
                    Source::Named(name) => describe_mount(m, name),
                    Source::Partition(_) | Source::Verity(_) => {
                        describe_mount(m, devices.next().unwrap())
                    }
                }),
                _ => None,
            })
            .collect();
        assert_eq!(
            lines,
            strings(&[
                "mounted proc on /proc (proc, rw,nosuid,nodev,noexec)",
                "mounted sysfs on /sys (sysfs, rw,nosuid,nodev,noexec)",
                "mounted devtmpfs on /dev (devtmpfs, rw,nosuid)",
                "mounted tmpfs on /run (tmpfs, rw,nosuid,nodev)",
                "mounted root /dev/vda2 on /sysroot (squashfs, ro)",
                "mounted state /dev/vda4 on /run/p6os/state (ext4, rw,noatime)",
                "mounted overlay on /sysroot/etc (overlay, rw)",
                "mounted overlay on /sysroot/var (overlay, rw)",
            ])
        );
    }

    #[test]
    fn option_summaries() {
        let plan = plan_boot(&cmdline(Slot::A, RootFs::Squashfs), &[], &[]);
        let summaries: Vec<String> = plan
            .iter()
            .filter_map(|s| match s {
                Step::Mount(m) => Some(format!("{} {}", m.source, m.options())),
                _ => None,
            })
            .collect();
        assert_eq!(
            summaries,
            strings(&[
                "PARTLABEL=p6os-root-a ro",
                "PARTLABEL=p6os-state rw,noatime",
                "overlay rw",
                "overlay rw",
            ])
        );
    }
}
