//! `p6os config inject`: put a checked `unattended.yaml` on an image's ESP, without mounting.

use std::fs::OpenOptions;
use std::path::Path;

use crate::diag::Diagnostics;
use crate::esp::{self, EspError};

/// Where the agent looks for the site configuration on the ESP.
pub const ESP_CONFIG_PATH: &str = p6os_layout::esp::UNATTENDED;

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("{0}\nnothing was written")]
    Invalid(Diagnostics),
    #[error(transparent)]
    Esp(#[from] EspError),
}

/// Checks `config` completely, then writes it to the image's ESP (replacing an earlier one).
/// An invalid file leaves the image untouched.
pub fn inject(image: &Path, config: &Path) -> Result<(), InjectError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EspError::Io { path, source }
    };
    let text = std::fs::read_to_string(config).map_err(io(config))?;
    p6os_config::unattended::load(config, &text).map_err(InjectError::Invalid)?;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(io(image))?;
    let (_, mut vol) = esp::open(&mut f, image)?;
    // Write beside, then rename over: a crash leaves the old file or the new one, never a mix.
    let staged = format!("{ESP_CONFIG_PATH}.new");
    vol.write_file(&staged, text.as_bytes())
        .map_err(EspError::fat(image))?;
    vol.rename(&staged, ESP_CONFIG_PATH)
        .map_err(EspError::fat(image))?;
    drop(vol);
    Ok(f.sync_all().map_err(io(image))?)
}
