//! The state partition: an empty ext4 made by mkfs.ext4 straight into the image file at the
//! partition's offset (no loop device), with fixed UUID, hash seed and time so it is reproducible.

use std::path::Path;
use std::process::Command;

use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StateFsError {
    #[error("cannot run mkfs.ext4: {0} (install package e2fsprogs)")]
    Spawn(std::io::Error),
    #[error("mkfs.ext4 failed: {0}")]
    Failed(String),
}

pub fn format(image: &Path, offset: u64, size: u64, uuid: Uuid) -> Result<(), StateFsError> {
    let out = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-L",
            "p6os-state",
            "-T",
            "default",
            "-I",
            "256",
            "-m",
            "0",
        ])
        .arg("-U")
        .arg(uuid.to_string())
        .arg("-E")
        .arg(format!(
            "offset={offset},hash_seed={uuid},root_owner=0:0,nodiscard,lazy_itable_init=0"
        ))
        .arg(image)
        .arg(format!("{}k", size / 1024))
        .env("E2FSPROGS_FAKE_TIME", "1")
        // A missing config file makes mke2fs use its compiled-in defaults: the host's
        // /etc/mke2fs.conf cannot change the features of the image.
        .env(
            "MKE2FS_CONFIG",
            "/nonexistent/p6os-uses-mke2fs-builtin-defaults",
        )
        .env("MKE2FS_DEVICE_SECTSIZE", "512")
        .output()
        .map_err(StateFsError::Spawn)?;
    if !out.status.success() {
        return Err(StateFsError::Failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}
