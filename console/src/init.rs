//! `p6os-console init`: the admin and pairing token files, and reading token files back.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::auth::new_token;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot create {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no randomness available: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A token file, and whether this run created it (an existing file is never overwritten).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFile {
    pub path: PathBuf,
    pub created: bool,
}

/// Creates `dir` (0700 when new) and `admin.token` and `pairing.token` in it (0600), each a
/// fresh random token, keeping files that already exist.
pub fn init(dir: &Path) -> Result<Vec<TokenFile>, InitError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| InitError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    let mut out = Vec::new();
    for name in ["admin.token", "pairing.token"] {
        let token = new_token().map_err(InitError::Random)?;
        out.push(create_new(&dir.join(name), &format!("{token}\n"), 0o600)?);
    }
    Ok(out)
}

/// [`init`], plus `ca.pem`, `tls.crt` (0644) and `tls.key` (0600): a private CA and a
/// certificate it signed for `names`. Existing TLS files are kept (all three, or an error if
/// only some exist: they belong together).
pub fn init_with_tls(dir: &Path, names: &[String]) -> Result<Vec<TokenFile>, InitError> {
    let mut out = init(dir)?;
    let files = ["ca.pem", "tls.crt", "tls.key"].map(|n| dir.join(n));
    let existing = files.iter().filter(|p| p.exists()).count();
    if existing == files.len() {
        out.extend(files.into_iter().map(|path| TokenFile {
            path,
            created: false,
        }));
        return Ok(out);
    }
    if existing > 0 {
        return Err(InitError::Io {
            path: dir.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "some of ca.pem, tls.crt and tls.key exist: remove them all to make new ones",
            ),
        });
    }
    let (ca, chain, key) = crate::tls::make_certificates(names)?;
    out.push(create_new(&files[0], &ca, 0o644)?);
    out.push(create_new(&files[1], &chain, 0o644)?);
    out.push(create_new(&files[2], &key, 0o600)?);
    Ok(out)
}

/// Writes `text` to a new file with `mode` (fsync'd); an existing file is kept untouched.
fn create_new(path: &Path, text: &str, mode: u32) -> Result<TokenFile, InitError> {
    let err = |source| InitError::Io {
        path: path.to_path_buf(),
        source,
    };
    let created = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(text.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(err)?;
            true
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(err(e)),
    };
    Ok(TokenFile {
        path: path.to_path_buf(),
        created,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("tokens");
        let first = init(&d).unwrap();
        assert!(first.iter().all(|f| f.created));
        let admin = std::fs::read_to_string(d.join("admin.token")).unwrap();
        assert_eq!(admin.trim().len(), 43);
        let mode = std::fs::metadata(d.join("admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = init(&d).unwrap();
        assert!(second.iter().all(|f| !f.created));
        assert_eq!(
            std::fs::read_to_string(d.join("admin.token")).unwrap(),
            admin
        );
    }

    #[test]
    fn tls_files_are_made_once_and_the_key_is_0600() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("console");
        let names = vec!["127.0.0.1".to_string()];
        let first = init_with_tls(&d, &names).unwrap();
        assert_eq!(first.len(), 5);
        assert!(first.iter().all(|f| f.created));
        let mode = std::fs::metadata(d.join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        crate::tls::server_config(&d.join("tls.crt"), &d.join("tls.key")).unwrap();
        let ca = std::fs::read_to_string(d.join("ca.pem")).unwrap();
        assert!(init_with_tls(&d, &names)
            .unwrap()
            .iter()
            .all(|f| !f.created));
        assert_eq!(std::fs::read_to_string(d.join("ca.pem")).unwrap(), ca);
        std::fs::remove_file(d.join("tls.crt")).unwrap();
        let e = init_with_tls(&d, &names).unwrap_err().to_string();
        assert!(e.contains("cannot create"), "{e}");
    }
}
