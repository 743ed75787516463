//! Kernel module resolution: which `.ko` files the initramfs needs, in load order.
//!
//! Dependencies come from each module's `.modinfo` `depends=` string, the same data `depmod`
//! writes into `modules.dep`; built-in modules (`modules.builtin`) need no file.

use std::collections::{BTreeMap, BTreeSet};

use crate::recipe::RootFsFormat;
use crate::tree::{Kind, Tree};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KmodError {
    #[error("the kernel layer has no boot/vmlinuz-<version>")]
    NoKernel,
    #[error("the kernel layer has no lib/modules/{0}/")]
    NoModules(String),
    #[error(
        "initramfs class `{class}`: kernel {kernel} has no module `{module}` (neither a .ko \
         file nor built in)"
    )]
    Missing {
        kernel: String,
        class: String,
        module: String,
    },
    #[error("module `{0}` has a dependency cycle")]
    Cycle(String),
}

/// The class name under which the contract's filesystems are reported.
pub const FILESYSTEMS_CLASS: &str = "filesystems";

/// What one `.ko` file says about itself.
#[derive(Debug, Clone)]
struct ModuleInfo {
    /// Path in the tree.
    path: String,
    /// Hard dependencies (`depends=`), canonical names.
    depends: Vec<String>,
    /// `softdep=pre:` names (module names or aliases such as `crypto-crc32c`): loaded first
    /// when the kernel has them; the initramfs has no modprobe to ask for them later.
    soft_pre: Vec<String>,
    /// Firmware files the module may request (`firmware=`), relative to `lib/firmware`.
    firmware: Vec<String>,
}

/// A kernel found in a tree: its release string and its module index.
#[derive(Debug, Clone)]
pub struct KernelModules {
    pub release: String,
    /// Canonical module name (with `_`) to what it says about itself.
    modules: BTreeMap<String, ModuleInfo>,
    /// Exact (wildcard-free) aliases to the modules that declare them.
    aliases: BTreeMap<String, BTreeSet<String>>,
    builtin: BTreeSet<String>,
}

/// The modules to load, in order, and the firmware files they may request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Paths in the tree, dependencies first.
    pub paths: Vec<String>,
    /// Module name -> firmware files it names (relative to `lib/firmware`).
    pub firmware: BTreeMap<String, Vec<String>>,
}

fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// The kernel release of `boot/vmlinuz-<release>` in the tree (the highest, if several).
pub fn kernel_release(tree: &Tree) -> Result<String, KmodError> {
    tree.under("boot")
        .filter_map(|(p, _)| p.strip_prefix("boot/vmlinuz-").map(str::to_string))
        .filter(|r| !r.contains('/'))
        .max()
        .ok_or(KmodError::NoKernel)
}

/// Where the tree keeps modules (`lib/modules` or, usr-merged, `usr/lib/modules`).
fn modules_dir(tree: &Tree, release: &str) -> Option<String> {
    ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| format!("{d}/{release}"))
        .find(|d| tree.under(d).next().is_some())
}

/// The `pre:` names of a `softdep=` value (`pre: a b post: c`).
fn soft_pre(value: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_pre = false;
    for word in value.split_whitespace() {
        match word {
            "pre:" => in_pre = true,
            "post:" => in_pre = false,
            name if in_pre => names.push(canonical(name)),
            _ => {}
        }
    }
    names
}

impl KernelModules {
    pub fn index(tree: &Tree) -> Result<KernelModules, KmodError> {
        let release = kernel_release(tree)?;
        let dir =
            modules_dir(tree, &release).ok_or_else(|| KmodError::NoModules(release.clone()))?;
        let mut modules = BTreeMap::new();
        let mut aliases: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut builtin = BTreeSet::new();
        for (path, entry) in tree.under(&dir) {
            let Kind::File(data) = &entry.kind else {
                continue;
            };
            let file = path.rsplit('/').next().unwrap_or(path);
            if let Some(stem) = file.strip_suffix(".ko") {
                let name = canonical(stem);
                let info = modinfo(data);
                let field = |key: &'static str| {
                    info.iter()
                        .filter(move |(k, _)| *k == key)
                        .map(|(_, v)| v.as_str())
                };
                for alias in field("alias").filter(|a| !a.contains(['*', '?', '['])) {
                    aliases
                        .entry(canonical(alias))
                        .or_default()
                        .insert(name.clone());
                }
                let module = ModuleInfo {
                    path: path.clone(),
                    depends: field("depends")
                        .flat_map(|d| d.split(','))
                        .filter(|s| !s.is_empty())
                        .map(canonical)
                        .collect(),
                    soft_pre: field("softdep").flat_map(soft_pre).collect(),
                    firmware: field("firmware").map(str::to_string).collect(),
                };
                modules.insert(name, module);
            } else if file == "modules.builtin" {
                for line in String::from_utf8_lossy(data).lines() {
                    if let Some(stem) = line.rsplit('/').next().and_then(|f| f.strip_suffix(".ko"))
                    {
                        builtin.insert(canonical(stem));
                    }
                }
            }
        }
        Ok(KernelModules {
            release,
            modules,
            aliases,
            builtin,
        })
    }

    /// The modules of every class with their dependencies (hard ones, and soft `pre:` ones
    /// the kernel has), each once, dependencies first; and the firmware they name.
    pub fn resolve_classes<'a>(
        &self,
        classes: impl IntoIterator<Item = (&'a String, &'a Vec<String>)>,
    ) -> Result<Resolved, KmodError> {
        let mut walk = Walk::default();
        for (class, modules) in classes {
            for module in modules {
                let name = canonical(module);
                if !self.modules.contains_key(&name) && !self.builtin.contains(&name) {
                    return Err(KmodError::Missing {
                        kernel: self.release.clone(),
                        class: class.clone(),
                        module: module.clone(),
                    });
                }
                self.visit(&name, &mut walk)?;
            }
        }
        Ok(walk.resolved)
    }

    fn visit(&self, name: &str, walk: &mut Walk) -> Result<(), KmodError> {
        if walk.done.contains(name) {
            return Ok(());
        }
        if walk.stack.iter().any(|s| s == name) {
            return Err(KmodError::Cycle(name.into()));
        }
        let Some(info) = self.modules.get(name) else {
            // Built in, or a hard dependency the index lacks (depmod would have failed).
            walk.done.insert(name.into());
            return Ok(());
        };
        walk.stack.push(name.into());
        for soft in &info.soft_pre {
            for provider in self.providers(soft) {
                // A soft dependency that loops back is dropped, as modprobe does.
                if !walk.stack.contains(&provider) {
                    self.visit(&provider, walk)?;
                }
            }
        }
        for d in &info.depends {
            self.visit(d, walk)?;
        }
        walk.stack.pop();
        walk.done.insert(name.into());
        walk.resolved.paths.push(info.path.clone());
        if !info.firmware.is_empty() {
            walk.resolved
                .firmware
                .insert(name.to_string(), info.firmware.clone());
        }
        Ok(())
    }

    /// Modules that answer to `name`: the module of that name, else those with that alias
    /// (`crypto-crc32c` -> `crc32c_generic`, `crc32c_intel`); none when it is built in.
    fn providers(&self, name: &str) -> Vec<String> {
        if self.modules.contains_key(name) {
            return vec![name.to_string()];
        }
        if self.builtin.contains(name) {
            return Vec::new();
        }
        self.aliases
            .get(name)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Walk {
    done: BTreeSet<String>,
    stack: Vec<String>,
    resolved: Resolved,
}

/// The `key=value` strings of a module's `.modinfo` section (NUL-separated strings).
fn modinfo(data: &[u8]) -> Vec<(&str, String)> {
    const KEYS: [&str; 4] = ["depends", "softdep", "firmware", "alias"];
    data.split(|b| *b == 0)
        .filter_map(|s| {
            let key = KEYS
                .iter()
                .find(|k| s.len() > k.len() && s.starts_with(k.as_bytes()) && s[k.len()] == b'=')?;
            Some((
                *key,
                String::from_utf8_lossy(&s[key.len() + 1..]).into_owned(),
            ))
        })
        .collect()
}

/// The filesystems of the on-disk contract, loaded whatever the hardware: the slot's
/// filesystem, state (ext4), the ESP (vfat with its code pages), overlay, efivarfs and ISO 9660
/// for NoCloud-style configuration drives, and dm-verity for protected slots. Disks and NICs come
/// from the module classes.
pub fn filesystem_modules(rootfs: RootFsFormat) -> Vec<String> {
    let fs = match rootfs {
        RootFsFormat::Erofs => "erofs",
        RootFsFormat::Squashfs => "squashfs",
    };
    [
        fs,
        "ext4",
        "vfat",
        "nls_cp437",
        "nls_ascii",
        "overlay",
        "efivarfs",
        "isofs",
        "dm_verity",
    ]
    .map(str::to_string)
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Entry;

    const RELEASE: &str = "6.1.0-1-amd64";

    fn ko(info: &str) -> Entry {
        Entry::file(
            format!("\0license=GPL\0{info}\0name=x\0").into_bytes(),
            0o644,
        )
    }

    fn kernel(modules: &[(&str, &str)], builtin: &str) -> KernelModules {
        let mut t = Tree::new();
        t.insert(
            &format!("boot/vmlinuz-{RELEASE}"),
            Entry::file(vec![1], 0o644),
        );
        for (name, info) in modules {
            t.insert(&format!("lib/modules/{RELEASE}/kernel/{name}.ko"), ko(info));
        }
        t.insert(
            &format!("lib/modules/{RELEASE}/modules.builtin"),
            Entry::file(builtin.as_bytes().to_vec(), 0o644),
        );
        KernelModules::index(&t).unwrap()
    }

    fn resolve(k: &KernelModules, classes: &[(&str, &[&str])]) -> Result<Resolved, KmodError> {
        let owned: Vec<(String, Vec<String>)> = classes
            .iter()
            .map(|(c, m)| (c.to_string(), m.iter().map(|s| s.to_string()).collect()))
            .collect();
        k.resolve_classes(owned.iter().map(|(c, m)| (c, m)))
    }

    fn names(r: &Resolved) -> Vec<&str> {
        r.paths
            .iter()
            .map(|p| p.rsplit('/').next().unwrap().trim_end_matches(".ko"))
            .collect()
    }

    #[test]
    fn orders_dependencies_first_and_skips_builtins() {
        let k = kernel(
            &[
                (
                    "virtio_pci",
                    "depends=virtio,virtio_ring,virtio_pci_modern_dev",
                ),
                ("virtio", "depends=virtio_ring"),
                ("virtio_ring", "depends="),
                ("virtio-pci-modern-dev", "depends="),
            ],
            "kernel/fs/ext4/ext4.ko\n",
        );
        assert_eq!(k.release, RELEASE);
        let r = resolve(&k, &[("virtio", &["virtio_pci", "ext4"])]).unwrap();
        assert_eq!(
            names(&r),
            [
                "virtio_ring",
                "virtio",
                "virtio-pci-modern-dev",
                "virtio_pci"
            ]
        );
        assert!(r.firmware.is_empty());
    }

    #[test]
    fn a_missing_module_names_its_class() {
        let k = kernel(&[("ahci", "depends=libata"), ("libata", "depends=")], "");
        assert_eq!(
            resolve(
                &k,
                &[("sata", &["ahci"]), ("usb-storage", &["usb-storage"])]
            )
            .unwrap_err(),
            KmodError::Missing {
                kernel: RELEASE.into(),
                class: "usb-storage".into(),
                module: "usb-storage".into()
            }
        );
        let message = resolve(&k, &[("nic", &["e1000e"])])
            .unwrap_err()
            .to_string();
        assert!(
            message
                .starts_with("initramfs class `nic`: kernel 6.1.0-1-amd64 has no module `e1000e`"),
            "{message}"
        );
    }

    #[test]
    fn soft_dependencies_come_first_by_name_or_alias_when_the_kernel_has_them() {
        let k = kernel(
            &[
                ("ext4", "depends=jbd2\0softdep=pre: crypto-crc32c"),
                ("jbd2", "depends="),
                ("crc32c_generic", "depends=\0alias=crypto-crc32c\0alias=crc32c"),
                ("crc32c-intel", "depends=\0alias=crypto-crc32c\0alias=cpu:type:x86,*"),
                ("r8169", "depends=libphy\0softdep=pre: realtek post: nothing\0firmware=rtl_nic/a.fw\0firmware=rtl_nic/b.fw"),
                ("realtek", "depends=libphy"),
                ("libphy", "depends="),
                // A soft dependency that is built in or absent is no error.
                ("igb", "depends=\0softdep=pre: builtin_one absent_one"),
            ],
            "kernel/builtin_one.ko\n",
        );
        let r = resolve(&k, &[("fs", &["ext4"]), ("nic", &["r8169", "igb"])]).unwrap();
        assert_eq!(
            names(&r),
            [
                "crc32c_generic",
                "crc32c-intel",
                "jbd2",
                "ext4",
                "libphy",
                "realtek",
                "r8169",
                "igb"
            ]
        );
        assert_eq!(
            r.firmware,
            BTreeMap::from([(
                "r8169".to_string(),
                vec!["rtl_nic/a.fw".to_string(), "rtl_nic/b.fw".to_string()]
            )])
        );
    }

    #[test]
    fn cycles_of_hard_dependencies_are_errors_and_soft_loops_are_dropped() {
        let k = kernel(&[("a", "depends=b"), ("b", "depends=a")], "");
        assert_eq!(
            resolve(&k, &[("c", &["a"])]).unwrap_err(),
            KmodError::Cycle("a".into())
        );
        let k = kernel(
            &[
                ("a", "depends=\0softdep=pre: b"),
                ("b", "depends=\0softdep=pre: a"),
            ],
            "",
        );
        assert_eq!(names(&resolve(&k, &[("c", &["a"])]).unwrap()), ["b", "a"]);
    }

    #[test]
    fn soft_pre_reads_only_the_pre_names() {
        assert_eq!(soft_pre("pre: a b-c post: d pre: e"), ["a", "b_c", "e"]);
        assert!(soft_pre("post: x").is_empty());
    }

    #[test]
    fn reports_missing_kernel() {
        assert_eq!(
            KernelModules::index(&Tree::new()).unwrap_err(),
            KmodError::NoKernel
        );
    }
}
