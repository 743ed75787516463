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
    #[error("kernel {kernel} has no module `{module}` (neither a .ko file nor built in)")]
    Missing { kernel: String, module: String },
    #[error("module `{0}` has a dependency cycle")]
    Cycle(String),
}

/// A kernel found in a tree: its release string and its module index.
#[derive(Debug, Clone)]
pub struct KernelModules {
    pub release: String,
    /// Module name (with `_`) to path in the tree and dependency names.
    modules: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
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

impl KernelModules {
    pub fn index(tree: &Tree) -> Result<KernelModules, KmodError> {
        let release = kernel_release(tree)?;
        let dir =
            modules_dir(tree, &release).ok_or_else(|| KmodError::NoModules(release.clone()))?;
        let mut modules = BTreeMap::new();
        let mut builtin = BTreeSet::new();
        for (path, entry) in tree.under(&dir) {
            let Kind::File(data) = &entry.kind else {
                continue;
            };
            let file = path.rsplit('/').next().unwrap_or(path);
            if let Some(stem) = file.strip_suffix(".ko") {
                let deps = modinfo(data, "depends")
                    .map(|d| {
                        d.split(',')
                            .filter(|s| !s.is_empty())
                            .map(canonical)
                            .collect()
                    })
                    .unwrap_or_default();
                modules.insert(canonical(stem), (path.clone(), deps));
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
            builtin,
        })
    }

    /// Paths (in the tree) of `wanted` and their dependencies, dependencies first.
    pub fn resolve(&self, wanted: &[&str]) -> Result<Vec<String>, KmodError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for w in wanted {
            self.visit(&canonical(w), &mut done, &mut Vec::new(), &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<(), KmodError> {
        if done.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            return Err(KmodError::Cycle(name.into()));
        }
        let Some((path, deps)) = self.modules.get(name) else {
            if self.builtin.contains(name) {
                done.insert(name.into());
                return Ok(());
            }
            return Err(KmodError::Missing {
                kernel: self.release.clone(),
                module: name.into(),
            });
        };
        stack.push(name.into());
        for d in deps {
            self.visit(d, done, stack, order)?;
        }
        stack.pop();
        done.insert(name.into());
        order.push(path.clone());
        Ok(())
    }
}

/// A `key=value` string from a module's `.modinfo` section (NUL-separated strings).
fn modinfo(data: &[u8], key: &str) -> Option<String> {
    let needle = format!("{key}=");
    data.split(|b| *b == 0)
        .find(|s| s.starts_with(needle.as_bytes()))
        .map(|s| String::from_utf8_lossy(&s[needle.len()..]).into_owned())
}

/// Modules the initramfs loads: virtio disk, the root filesystem, state (ext4), ESP (vfat with
/// its code pages), overlay, efivarfs, ISO 9660 for NoCloud-style configuration drives, and the virtio NIC
/// (the minimal base has no module loader after the initramfs).
pub fn initramfs_modules(rootfs: RootFsFormat) -> Vec<&'static str> {
    let fs = match rootfs {
        RootFsFormat::Erofs => "erofs",
        RootFsFormat::Squashfs => "squashfs",
    };
    vec![
        "virtio_pci",
        "virtio_blk",
        fs,
        "ext4",
        "vfat",
        "nls_cp437",
        "nls_ascii",
        "overlay",
        "efivarfs",
        "isofs",
        "virtio_net",
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Entry;

    fn ko(deps: &str) -> Entry {
        Entry::file(
            format!("\0license=GPL\0depends={deps}\0name=x\0").into_bytes(),
            0o644,
        )
    }

    #[test]
    fn orders_dependencies_first_and_skips_builtins() {
        let mut t = Tree::new();
        t.insert(
            "boot/vmlinuz-6.1.0-1-cloud-amd64",
            Entry::file(vec![1], 0o644),
        );
        let m = "lib/modules/6.1.0-1-cloud-amd64/kernel";
        t.insert(
            &format!("{m}/virtio_pci.ko"),
            ko("virtio,virtio_ring,virtio_pci_modern_dev"),
        );
        t.insert(&format!("{m}/virtio.ko"), ko("virtio_ring"));
        t.insert(&format!("{m}/virtio_ring.ko"), ko(""));
        t.insert(&format!("{m}/virtio-pci-modern-dev.ko"), ko(""));
        t.insert(
            "lib/modules/6.1.0-1-cloud-amd64/modules.builtin",
            Entry::file(b"kernel/fs/ext4/ext4.ko\n".to_vec(), 0o644),
        );
        let k = KernelModules::index(&t).unwrap();
        assert_eq!(k.release, "6.1.0-1-cloud-amd64");
        let order: Vec<String> = k
            .resolve(&["virtio_pci", "ext4"])
            .unwrap()
            .iter()
            .map(|p| p.rsplit('/').next().unwrap().to_string())
            .collect();
        assert_eq!(
            order,
            [
                "virtio_ring.ko",
                "virtio.ko",
                "virtio-pci-modern-dev.ko",
                "virtio_pci.ko"
            ]
        );
        assert_eq!(
            k.resolve(&["nope"]).unwrap_err(),
            KmodError::Missing {
                kernel: "6.1.0-1-cloud-amd64".into(),
                module: "nope".into()
            }
        );
    }

    #[test]
    fn reports_missing_kernel() {
        assert_eq!(
            KernelModules::index(&Tree::new()).unwrap_err(),
            KmodError::NoKernel
        );
    }
}
