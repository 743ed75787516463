//! Boot payloads: the kernel from the kernel layer and an initramfs whose `/init` is the agent,
//! with the modules the slot's filesystem and the disks need.

use super::layers::LoadedLayer;
use super::{file_data, BuildError};
use crate::initramfs;
use crate::kmod::{self, KernelModules};
use crate::recipe::Recipe;

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
    agent: &[u8],
    say: &dyn Fn(&str),
) -> Result<Payloads, BuildError> {
    let def = &recipe.def;
    // Kernel and initramfs.
    let kernel_layer = loaded
        .iter()
        .find(|l| std::ptr::eq(l.layer, recipe.kernel()))
        .expect("checked recipes have a kernel");
    let release = kmod::kernel_release(&kernel_layer.tree)?;
    let vmlinuz = file_data(&kernel_layer.tree, &format!("boot/vmlinuz-{release}"))
        .ok_or(kmod::KmodError::NoKernel)?;
    let modules = KernelModules::index(&kernel_layer.tree)?;
    let wanted = kmod::initramfs_modules(def.rootfs);
    let module_paths = modules.resolve(&wanted)?;
    let mut initrd = Vec::new();
    initramfs::write_cpio(
        &initramfs::tree(agent, &kernel_layer.tree, &module_paths),
        &mut initrd,
    )
    .expect("writing to memory");
    say(&format!(
        "kernel {release}: {} initramfs modules, initramfs {} KiB",
        module_paths.len(),
        initrd.len() / 1024
    ));
    Ok(Payloads {
        vmlinuz,
        initrd,
        release,
    })
}
