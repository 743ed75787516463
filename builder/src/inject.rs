//! `p6os config inject`: put a checked `unattended.yaml` on an image's ESP, without mounting.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use crate::diag::Diagnostics;
use crate::fat::FatVolume;
use crate::gpt::Gpt;

/// Where the agent looks for the site configuration on the ESP.
pub const ESP_CONFIG_PATH: &str = "/p6os/unattended.yaml";

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("{0}\nnothing was written")]
    Invalid(Diagnostics),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Gpt {
        path: PathBuf,
        source: crate::gpt::GptError,
    },
    #[error("{path}: no partition labelled p6os-esp: not a P6OS image")]
    NoEsp { path: PathBuf },
    #[error("{path}: ESP: {source}")]
    Fat {
        path: PathBuf,
        source: crate::fat::FatError,
    },
}

/// Checks `config` completely, then writes it to the image's ESP (replacing an earlier one).
/// An invalid file leaves the image untouched.
pub fn inject(image: &Path, config: &Path) -> Result<(), InjectError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InjectError::Io { path, source }
    };
    let text = std::fs::read_to_string(config).map_err(io(config))?;
    p6os_config::unattended::load(config, &text).map_err(InjectError::Invalid)?;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(io(image))?;
    let gpt = Gpt::read(&mut f).map_err(|source| InjectError::Gpt {
        path: image.into(),
        source,
    })?;
    let esp = gpt
        .by_label("p6os-esp")
        .ok_or_else(|| InjectError::NoEsp { path: image.into() })?;
    let fat_err = |source| InjectError::Fat {
        path: image.into(),
        source,
    };
    let mut vol = FatVolume::open(&mut f, esp.offset(), esp.size()).map_err(fat_err)?;
    // Write beside, then rename over: a crash leaves the old file or the new one, never a mix.
    let staged = format!("{ESP_CONFIG_PATH}.new");
    vol.write_file(&staged, text.as_bytes()).map_err(fat_err)?;
    vol.rename(&staged, ESP_CONFIG_PATH).map_err(fat_err)?;
    drop(vol);
    f.sync_all().map_err(io(image))
}
