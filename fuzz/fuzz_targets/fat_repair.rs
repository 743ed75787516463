//! The ESP's repair from arbitrary bytes: the agent walks the FAT volume on its boot disk's ESP
//! before an upgrade writes to it, and anyone with the disk (or a USB stick that claims to be
//! it) chooses those bytes. Open, plan and repair return errors or problems, never panic; a
//! repaired volume plans clean.

#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use p6os_fat::FatVolume;
use p6os_layout::esp::is_leftover;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let Ok(mut vol) = FatVolume::open(Cursor::new(data.to_vec()), 0, len) else {
        return;
    };
    let Ok(plan) = vol.plan_repair(&is_leftover) else {
        return;
    };
    let _ = plan.summary();
    if !plan.problems.is_empty() || vol.repair(&plan).is_err() {
        return;
    }
    let mut again = FatVolume::open(vol.into_inner(), 0, len).expect("a repaired volume opens");
    let after = again
        .plan_repair(&is_leftover)
        .expect("a repaired volume plans");
    assert!(after.is_clean(), "{plan:?} left {after:?}");
});
