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
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InitError::Io { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))?;
    let mut out = Vec::new();
    for name in ["admin.token", "pairing.token"] {
        let path = dir.join(name);
        let created = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut f) => {
                let token = new_token().map_err(InitError::Random)?;
                writeln!(f, "{token}")
                    .and_then(|()| f.sync_all())
                    .map_err(io_err(&path))?;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(io_err(&path)(e)),
        };
        out.push(TokenFile { path, created });
    }
    Ok(out)
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
}
