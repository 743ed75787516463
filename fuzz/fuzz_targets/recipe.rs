//! Recipes and layer files from arbitrary text: the loaders return diagnostics, they never panic,
//! and the diagnostics render.
//!
//! The builder's loaders take a path (layer references are relative to the file naming them), so
//! the text is written to a scratch file first: `$P6OS_FUZZ_SCRATCH/<pid>/recipes/fuzz.yaml`
//! (`cargo xtask fuzz` sets it under target/), else under the system's temporary directory.
//! The same text is loaded as a recipe (`yamlcheck::load::<RecipeFile>`, semantic checks, layer
//! references) and as a layer file (`yamlcheck::load::<LayerFile>`, per-source checks).

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use p6os_builder::recipe;

fn scratch_file() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let base = std::env::var_os("P6OS_FUZZ_SCRATCH")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("p6os-fuzz"));
        let dir = base.join(std::process::id().to_string()).join("recipes");
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create scratch directory {}: {e}", dir.display()));
        dir.join("fuzz.yaml")
    })
}

fuzz_target!(|data: &[u8]| {
    // The loaders take text; byte strings that are not UTF-8 never reach them.
    if std::str::from_utf8(data).is_err() {
        return;
    }
    let file = scratch_file();
    std::fs::write(file, data)
        .unwrap_or_else(|e| panic!("cannot write scratch file {}: {e}", file.display()));
    if let Err(diags) = recipe::load(file) {
        let _ = diags.to_string();
    }
    if let Err(diags) = recipe::load_layer(file) {
        let _ = diags.to_string();
    }
});
