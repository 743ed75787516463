//! bmap files from arbitrary bytes, as `p6os flash` reads the `.bmap` that comes with a
//! downloaded image: a plan or an error that renders, never a panic; a plan's ranges are
//! non-empty, in order, apart, and inside the image.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p6os_builder::flash::plan::parse_bmap;

fuzz_target!(|data: &[u8]| {
    // `p6os flash` reads the file as UTF-8 text; other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_bmap(text) {
        Ok(plan) => {
            let mut end = 0;
            for r in &plan.ranges {
                assert!(r.len > 0, "empty range {r:?}");
                assert!(
                    r.offset >= end,
                    "ranges out of order or overlapping: {plan:?}"
                );
                end = r.offset + r.len;
                assert!(end <= plan.image_size, "range beyond the image: {plan:?}");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
