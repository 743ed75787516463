//! Opening the ESP of a P6OS image without mounting: GPT, the `p6os-esp` partition, its FAT volume.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use crate::fat::{FatError, FatVolume};
use crate::gpt::{Gpt, GptError};

pub use p6os_layout::partition::ESP_LABEL;

#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Gpt { path: PathBuf, source: GptError },
    #[error("{path}: no partition labelled {ESP_LABEL}: not a P6OS image")]
    NoEsp { path: PathBuf },
    #[error("{path}: ESP: {source}")]
    Fat { path: PathBuf, source: FatError },
}

impl EspError {
    /// Wraps a FAT error of the image at `path`.
    pub fn fat(path: &Path) -> impl Fn(FatError) -> EspError + '_ {
        move |source| EspError::Fat {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The image's partition table and its ESP as a FAT volume over `dev`.
pub fn open<D: Read + Seek>(mut dev: D, path: &Path) -> Result<(Gpt, FatVolume<D>), EspError> {
    let gpt = crate::gpt::read(&mut dev).map_err(|source| EspError::Gpt {
        path: path.to_path_buf(),
        source,
    })?;
    let esp = gpt.by_label(ESP_LABEL).ok_or_else(|| EspError::NoEsp {
        path: path.to_path_buf(),
    })?;
    let (offset, size) = (esp.offset(), esp.size());
    let vol = FatVolume::open(dev, offset, size).map_err(EspError::fat(path))?;
    Ok((gpt, vol))
}
