//! `cargo xtask run [IMAGE]`: boot an image on this terminal (serial console). The image itself
//! is booted, so what the machine writes to its state partition stays, as on real hardware.

use anyhow::Result;

pub fn run(image: Option<&str>) -> Result<()> {
    let image = match image {
        Some(i) => i.into(),
        None => crate::image::run(crate::DEFAULT_RECIPE)?,
    };
    let vm = p6os_qemu_tests::vm::VmConfig::new(&image)?;
    vm.run_interactive()
}
