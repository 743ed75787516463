//! `unattended.yaml` from arbitrary text: the loader returns diagnostics, it never panics, and
//! the diagnostics render. A document it accepts, written back (`to_yaml`, what the setup
//! screens save), reads back as the same document.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The loader takes text; byte strings that are not UTF-8 never reach it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match p6os_config::unattended::load(Path::new("fuzz.yaml"), text) {
        Err(diags) => {
            let _ = diags.to_string();
        }
        Ok(doc) => {
            let written = p6os_config::unattended::to_yaml(&doc);
            match p6os_config::unattended::load(Path::new("written.yaml"), &written) {
                Ok(again) => assert_eq!(again, doc, "written:\n{written}"),
                Err(d) => panic!("a document written back is refused:\n{d}\n{written}"),
            }
        }
    }
});
