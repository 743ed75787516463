//! The texts the agent reads at boot, from arbitrary bytes: the kernel command line
//! (`p6os.config=` and `p6os.verity=` included), uevent files, `modules.load`, `/proc/self/mountinfo`, and boot
//! entry file names. Errors or empty values, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p6os_agent::{cmdline, firstboot::source, modules, mountinfo, uevent::Uevent};
use p6os_layout::EntryName;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The first line stands for the loader's LoaderEntrySelected.
    if let Ok(c) = cmdline::Cmdline::parse(&text, text.lines().next()) {
        assert!(!c.init.is_empty());
        // Verity parameters that parse describe a slot whose tree follows its data.
        if let Some(v) = c.verity {
            assert!(v.data_blocks > 0 && v.total_size() > v.hash_offset());
            let value = v.value();
            assert_eq!(p6os_layout::verity::Params::parse(&value), Ok(v));
        }
    }
    let params = cmdline::Params::parse(&text);
    if let Some(Some(value)) = params.last("p6os.config") {
        let _ = source::parse_config_arg(value);
    }
    let u = Uevent::parse(&text);
    if let Some(name) = u.devname() {
        assert!(!name.is_empty() && !name.starts_with('/') && !name.split('/').any(|c| c == ".."));
    }
    let _ = u.partname();
    let _ = modules::parse(&text);
    let points = mountinfo::mount_points(&text);
    let _ = mountinfo::unmount_order(&points, &["/run"]);
    let _ = mountinfo::source_of(&text, "/");
    for line in text.lines() {
        if let Some(name) = EntryName::parse(line) {
            assert_eq!(EntryName::parse(&name.file_name()), Some(name));
        }
    }
});
