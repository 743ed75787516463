//! PE32+ images from arbitrary bytes, as the builder reads systemd's stub and boot loader:
//! errors, never a panic; what parses can be hashed, and a stub that takes our sections gives
//! an image that parses again with them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p6os_efi::{authenticode, pe, uki};

fuzz_target!(|data: &[u8]| {
    let Ok(layout) = pe::Layout::parse(data) else {
        return;
    };
    let _ = authenticode::image_digest(data);
    for s in &layout.sections {
        let _ = pe::section_data(data, &s.name);
    }
    let parts = uki::Parts {
        os_release: "ID=p6os\n",
        cmdline: "ro",
        kernel: b"kernel",
        initrd: b"initrd",
    };
    if let Ok(image) = uki::assemble(data, &parts) {
        assert_eq!(
            pe::section_data(&image, ".cmdline").ok().flatten(),
            Some(&b"ro"[..])
        );
    }
});
