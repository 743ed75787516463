//! OVMF variable stores with our Secure Boot keys enrolled: `virt-fw-vars` (PyPI's
//! `virt-firmware`, which `cargo xtask` installs into `target/tools/virt-firmware`) writes the
//! PK, KEK and db certificates of a `p6os keygen --secure-boot` directory into a copy of Debian's
//! empty store and turns Secure Boot on, as a machine owner does in setup mode.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::vm::OVMF_VARS;

/// The owner GUID recorded with each enrolled certificate (any GUID; this one is ours).
const OWNER: &str = "5189f58b-b8ea-5cef-bfb8-d2df58115d97";

/// `virt-fw-vars`: `$P6OS_VIRT_FW_VARS`, else where `cargo xtask` installs it.
pub fn virt_fw_vars() -> PathBuf {
    match std::env::var_os("P6OS_VIRT_FW_VARS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/tools/virt-firmware/bin/virt-fw-vars"),
    }
}

/// Writes `out`: Debian's OVMF variable store with `keys`' PK, KEK and db enrolled and Secure
/// Boot on. The same keys give the same bytes.
pub fn enrolled_vars(keys: &Path, out: &Path) -> Result<PathBuf> {
    let tool = virt_fw_vars();
    if !tool.exists() {
        bail!(
            "{} is missing: `cargo xtask test` installs it (PyPI virt-firmware)",
            tool.display()
        );
    }
    let cert = |name: &str| keys.join(format!("{name}.crt"));
    let o = Command::new(&tool)
        .arg("-i")
        .arg(OVMF_VARS)
        .arg("-o")
        .arg(out)
        .arg("--set-pk")
        .arg(OWNER)
        .arg(cert("PK"))
        .arg("--add-kek")
        .arg(OWNER)
        .arg(cert("KEK"))
        .arg("--add-db")
        .arg(OWNER)
        .arg(cert("db"))
        .arg("--secure-boot")
        .output()
        .with_context(|| format!("running {}", tool.display()))?;
    if !o.status.success() {
        bail!(
            "virt-fw-vars failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(out.to_path_buf())
}
