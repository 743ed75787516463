//! Boot payloads: the kernel from the kernel layer and an initramfs whose `/init` is the agent,
//! with the modules the slot's filesystem and the disks need.

use super::layers::LoadedLayer;
use super::{file_data, BuildError};
use crate::initramfs;
use crate::kmod::{self, KernelModules};
use crate::recipe::Recipe;
use crate::tree::Tree;

/// The kernel and initramfs of a slot.
pub(super) struct Payloads {
    pub vmlinuz: Vec<u8>,
    pub initrd: Vec<u8>,
    /// The kernel's release (`6.1.0-28-cloud-amd64`).
    pub release: String,
}

pub(super) fn payloads(
    recipe: &Recipe,
    loaded: &[LoadedLayer],
    root: &Tree,
    agent: &[u8],
    say: &dyn Fn(&str),
) -> Result<Payloads, BuildError> {
    let def = &recipe.def;
    let kernel_layer = loaded
        .iter()
        .find(|l| std::ptr::eq(l.layer, recipe.kernel()))
        .expect("checked recipes have a kernel");
    let release = kmod::kernel_release(&kernel_layer.tree)?;
    let vmlinuz = file_data(&kernel_layer.tree, &format!("boot/vmlinuz-{release}"))
        .ok_or(kmod::KmodError::NoKernel)?;
    let modules = KernelModules::index(&kernel_layer.tree)?;
    let filesystems = (
        kmod::FILESYSTEMS_CLASS.to_string(),
        kmod::filesystem_modules(def.rootfs),
    );
    let classes: Vec<(&String, &Vec<String>)> = std::iter::once((&filesystems.0, &filesystems.1))
        .chain(recipe.module_classes())
        .collect();
    let resolved = modules.resolve_classes(classes.iter().copied())?;
    let firmware = initramfs::firmware(root, &resolved.firmware);
    let mut initrd = Vec::new();
    initramfs::write_cpio(
        &initramfs::tree(
            agent,
            &kernel_layer.tree,
            &resolved.paths,
            root,
            &firmware.found,
        ),
        &mut initrd,
    )
    .expect("writing to memory");
    let names: Vec<&str> = classes.iter().skip(1).map(|(c, _)| c.as_str()).collect();
    say(&format!(
        "kernel {release}: initramfs with {} modules (classes: {}), {} firmware files, {} KiB",
        resolved.paths.len(),
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        },
        firmware.found.len(),
        initrd.len() / 1024
    ));
    for (module, count) in &firmware.missing {
        say(&format!(
            "note: {module} may ask for {count} firmware files that no layer provides \
             (a firmware package in a layer adds them; see docs/hardware.md)"
        ));
    }
    Ok(Payloads {
        vmlinuz,
        initrd,
        release,
    })
}
