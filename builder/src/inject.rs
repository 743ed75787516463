//! `p6os config inject`: put a checked `unattended.yaml` on an image's ESP, without mounting
//! (and its signature `FILE.sig` beside it when there is one). `p6os config sign`: the
//! detached signature that lets a provisioned device accept a new document.

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
    #[error("{path}.sig does not sign this file: {source}\nnothing was written")]
    Signature {
        path: String,
        #[source]
        source: p6os_bundle::configsig::ConfigSigError,
    },
}

/// The detached signature's file name beside `config`: `unattended.yaml.sig`.
pub fn signature_path(config: &Path) -> std::path::PathBuf {
    let mut name = config.as_os_str().to_os_string();
    name.push(".sig");
    name.into()
}

/// Checks `config` completely, then signs its exact bytes with `key` under `serial`: the
/// text of `unattended.yaml.sig`.
pub fn sign(
    config: &Path,
    key: &p6os_bundle::keys::SecretKey,
    serial: u64,
) -> Result<String, InjectError> {
    let text = std::fs::read_to_string(config).map_err(|source| EspError::Io {
        path: config.to_path_buf(),
        source,
    })?;
    p6os_config::unattended::load(config, &text).map_err(InjectError::Invalid)?;
    Ok(p6os_bundle::configsig::ConfigSignature::sign(key, text.as_bytes(), serial).to_file())
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
    // A signature beside the file goes with it; one that does not parse stops here (whether
    // its key is trusted is the image's business, checked by the device).
    let sig_file = signature_path(config);
    let signature = match std::fs::read(&sig_file) {
        Ok(sig) => {
            p6os_bundle::configsig::ConfigSignature::parse(&sig).map_err(|source| {
                InjectError::Signature {
                    path: config.display().to_string(),
                    source,
                }
            })?;
            Some(sig)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&sig_file)(e).into()),
    };
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(io(image))?;
    let (_, mut vol) = esp::open(&mut f, image)?;
    // An older signature never stays beside a new document (absent is fine).
    let esp_sig = format!("{ESP_CONFIG_PATH}.sig");
    let _ = vol.remove_file(&esp_sig);
    // Write beside, then rename over: a crash leaves the old file or the new one, never a mix.
    let staged = format!("{ESP_CONFIG_PATH}.new");
    vol.write_file(&staged, text.as_bytes())
        .map_err(EspError::fat(image))?;
    vol.rename(&staged, ESP_CONFIG_PATH)
        .map_err(EspError::fat(image))?;
    if let Some(sig) = signature {
        let staged = format!("{esp_sig}.new");
        vol.write_file(&staged, &sig)
            .map_err(EspError::fat(image))?;
        vol.rename(&staged, &esp_sig)
            .map_err(EspError::fat(image))?;
    }
    drop(vol);
    Ok(f.sync_all().map_err(io(image))?)
}
