//! `unattended.yaml` from arbitrary text: the loader returns diagnostics, it never panics, and
//! the diagnostics render.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The loader takes text; byte strings that are not UTF-8 never reach it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(diags) = p6os_config::unattended::load(Path::new("fuzz.yaml"), text) {
        let _ = diags.to_string();
    }
});
