//! The console's request bodies from arbitrary bytes, through the path its handlers take
//! (strict JSON, device text cleaned, field checks): an answer or a 4xx, never a panic, and
//! the error renders. The first byte picks the body: pair, heartbeat, register, desired,
//! selector, the appliance list's query string, a rollout, a site configuration (with its
//! unattended.yaml document), a device's configuration report or a diagnostics request.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p6os_console::api::bodies::{check, Kind};

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let kind = Kind::ALL[usize::from(first) % Kind::ALL.len()];
    if let Err(e) = check(kind, body) {
        assert!(e.status.is_client_error(), "{kind:?}: {e:?}");
        let _ = serde_json::to_string(&p6os_protocol::ErrorBody {
            error: e.error,
            field: e.field,
        });
    }
});
