//! `cargo xtask run [IMAGE]`: boot an image on this terminal (serial console), on a copy so the
//! image itself stays pristine.

use anyhow::Result;

pub fn run(image: Option<&str>) -> Result<()> {
    let image = match image {
        Some(i) => i.into(),
        None => crate::image::run(crate::DEFAULT_RECIPE)?,
    };
    let vm = qemu_tests::vm::VmConfig::new(&image)?;
    vm.run_interactive()
}
