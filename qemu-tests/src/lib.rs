//! QEMU end-to-end tests for P6OS images. The `Vm` helper is in [`vm`]; scenarios are in `tests/`.

pub mod console;
pub mod esp;
pub mod fixture;
pub mod oci;
pub mod secure_boot;
pub mod ssh;
pub mod vm;

use std::path::PathBuf;

/// The image under test: `$P6OS_TEST_IMAGE` (set by `cargo xtask test`), else the tiny image
/// where `cargo xtask image` writes it.
pub fn test_image() -> PathBuf {
    match std::env::var_os("P6OS_TEST_IMAGE") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/images/tiny-1.0.0.img"),
    }
}

/// The `p6os` command: `$P6OS_CLI` (set by `cargo xtask test`), else the debug build.
pub fn p6os_cli() -> PathBuf {
    match std::env::var_os("P6OS_CLI") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/p6os"),
    }
}

/// The `p6os-console` command: `$P6OS_CONSOLE` (set by `cargo xtask test`), else the debug
/// build.
pub fn console_cli() -> PathBuf {
    match std::env::var_os("P6OS_CONSOLE") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/p6os-console"),
    }
}

/// The JSON object in the output of `p6os-agent status --json` (a console may echo more).
pub fn parse_status(out: &str) -> serde_json::Value {
    let start = out.find('{').unwrap_or_else(|| panic!("no JSON in {out}"));
    let end = out.rfind('}').unwrap_or(start);
    serde_json::from_str(&out[start..=end]).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// One slot (`a` or `b`) of a parsed status.
pub fn slot<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["slots"]
        .as_array()
        .and_then(|slots| slots.iter().find(|s| s["slot"] == name))
        .unwrap_or_else(|| panic!("no slot {name} in {status:#}"))
}
