//! The device's identity key: made once, at the first registration, from the kernel's random
//! numbers, and kept on the state partition (`/var/lib/p6os/identity.key`, root-only 0600).
//! The console binds the appliance id to it; with it the device gets a new token whenever its
//! old one is refused, without an operator. Lost with the state partition (a wiped device is a
//! new device: an operator approves its new key).
//!
//! ```text
//! p6os-device-key v1 ed25519
//! <base64 of the 32-byte seed>
//! ```

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use p6os_protocol::identity::DeviceSecret;

pub const IDENTITY_PATH: &str = "/var/lib/p6os/identity.key";
const HEADER: &str = "p6os-device-key v1 ed25519";

#[derive(Debug, thiserror::Error)]
pub enum IdentityFileError {
    #[error("cannot read the device key {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the device key {path} is damaged (not `{HEADER}` and base64 of 32 bytes): move it \
         away and an operator approves the new key this device then makes"
    )]
    Damaged { path: String },
    #[error("cannot write the device key {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel gave no random numbers for the device key")]
    Random,
}

fn parse(text: &str) -> Option<DeviceSecret> {
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let seed: [u8; 32] = STANDARD
        .decode(lines.next()?.trim())
        .ok()?
        .try_into()
        .ok()?;
    Some(DeviceSecret::from_seed(seed))
}

fn render(key: &DeviceSecret) -> String {
    format!("{HEADER}\n{}\n", STANDARD.encode(key.seed()))
}

/// The key at `path` (never through a symbolic link), if there is one.
pub fn load(path: &Path) -> Result<Option<DeviceSecret>, IdentityFileError> {
    let shown = path.display().to_string();
    let mut f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(IdentityFileError::Read {
                path: shown,
                source,
            })
        }
    };
    let mut text = String::new();
    Read::by_ref(&mut f)
        .take(4096)
        .read_to_string(&mut text)
        .map_err(|source| IdentityFileError::Read {
            path: shown.clone(),
            source,
        })?;
    parse(&text)
        .map(Some)
        .ok_or(IdentityFileError::Damaged { path: shown })
}

/// The key at `path`, made (from `random`) and saved first when there is none: temporary file
/// 0600, fsync, rename, fsync of the directory.
pub fn load_or_create(
    path: &Path,
    random: impl FnOnce() -> Option<[u8; 32]>,
) -> Result<DeviceSecret, IdentityFileError> {
    if let Some(key) = load(path)? {
        return Ok(key);
    }
    let key = DeviceSecret::from_seed(random().ok_or(IdentityFileError::Random)?);
    let write_err = |source| IdentityFileError::Write {
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(write_err)?;
    let tmp = path.with_extension("new");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&tmp)
        .map_err(write_err)?;
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .and_then(|()| f.write_all(render(&key).as_bytes()))
        .and_then(|()| f.sync_all())
        .map_err(write_err)?;
    drop(f);
    fs::rename(&tmp, path).map_err(write_err)?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(key)
}

/// Random bytes for a new key from the kernel (waits for its pool at early boot).
pub fn kernel_random() -> Option<[u8; 32]> {
    let mut seed = [0u8; 32];
    match rustix::rand::getrandom(&mut seed, rustix::rand::GetRandomFlags::empty()) {
        Ok(32) => Some(seed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_kept_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p6os/identity.key");
        let a = load_or_create(&path, || Some([3; 32])).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create(&path, || panic!("made twice")).unwrap();
        assert_eq!(a.public(), b.public());
        assert!(!path.with_extension("new").exists());
    }

    #[test]
    fn damaged_links_and_no_randomness_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        fs::write(&path, "p6os-device-key v1 ed25519\nAAAA\n").unwrap();
        let e = load_or_create(&path, || Some([3; 32])).unwrap_err();
        assert!(matches!(e, IdentityFileError::Damaged { .. }), "{e}");
        fs::remove_file(&path).unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, render(&DeviceSecret::from_seed([4; 32]))).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(matches!(load(&path), Err(IdentityFileError::Read { .. })));
        fs::remove_file(&path).unwrap();
        let e = load_or_create(&path, || None).unwrap_err();
        assert!(matches!(e, IdentityFileError::Random), "{e}");
    }
}
