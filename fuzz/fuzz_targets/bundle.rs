//! Update bundles from arbitrary bytes, as the agent reads them: the header, the signature
//! check, the first pass and every payload's decompression. Errors, never a panic, and never
//! more output than the manifest allows.

#![no_main]

use std::io::{self, Cursor, Seek, SeekFrom};

use libfuzzer_sys::fuzz_target;
use p6os_bundle::format;

fuzz_target!(|data: &[u8]| {
    let mut r = Cursor::new(data);
    let Ok(header) = format::read_header(&mut r) else {
        return;
    };
    let trusted = [p6os_bundle::testing::trusted_key().public()];
    let _ = header.verify(&trusted);
    if format::verify_compressed(&mut r, &header.manifest).is_err() {
        return;
    }
    if r.seek(SeekFrom::Start(header.len)).is_err() {
        return;
    }
    for p in &header.manifest.payloads {
        // Bounded output: copy_payload refuses more than the manifest's size.
        if p.size > 64 << 20 {
            return;
        }
        if format::copy_payload(&mut r, p, &mut io::sink(), |_| {}).is_err() {
            return;
        }
    }
});
