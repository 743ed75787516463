//! `p6os site [FILE]`: the setup screens on a workstation's terminal (`p6os_site`), saving
//! `unattended.yaml`, and afterwards writing the saved document where the operator asked: into
//! an image's ESP (`config inject`) or onto a flash target with an image (`flash --config`).
//!
//! The document holds secrets (the pairing token, password hashes, registry passwords): it is
//! written 0600, through a temporary file renamed over the old one, so a crash leaves the old
//! file or the new one, never half of either.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use p6os_config::unattended::{to_yaml, Unattended};
use p6os_site::terminal::{self, AfterSave, Idle, Outcome};
use p6os_site::App;

/// What `p6os site` ends with.
pub struct Session {
    /// The file saved, when it was.
    pub saved: Option<PathBuf>,
}

/// Opens `file` (a new document when it does not exist) on the terminal's screens; every save
/// writes `file`. `also` names what else the saved document goes to, for the review page.
pub fn run(file: &Path, also: Option<String>) -> anyhow::Result<Session> {
    let text = match fs::read_to_string(file) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", file.display())),
    };
    let mut app = App::open(file, text.as_deref());
    app.destination = match &also {
        Some(more) => format!("{}, then {more} when you leave", file.display()),
        None => file.display().to_string(),
    };
    let outcome = terminal::run(&mut app, Idle::Wait, |doc: &Unattended| {
        let text = to_yaml(doc);
        let before = fs::read(file).ok();
        write_private(file, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        let mut said = format!("saved to {}", file.display());
        if before.as_deref() != Some(text.as_bytes()) {
            if let Some(old) = set_aside_signature(file) {
                said.push_str(&format!(
                    "; its signature no longer matches, moved to {} (sign it again: p6os config sign)",
                    old.display()
                ));
            }
        }
        Ok(AfterSave::Stay(said))
    })?;
    let Outcome::Done(saved) = outcome;
    Ok(Session {
        saved: saved.map(|_| file.to_path_buf()),
    })
}

/// A `FILE.sig` beside a file whose bytes changed signs nothing any more: a device would
/// ignore the new document for it. Moved to `FILE.sig.old`; its new name, if there was one.
fn set_aside_signature(file: &Path) -> Option<PathBuf> {
    let sig = crate::inject::signature_path(file);
    let mut old = sig.clone().into_os_string();
    old.push(".old");
    let old = PathBuf::from(old);
    fs::rename(&sig, &old).ok().map(|()| old)
}

/// Writes `bytes` to `path` with mode 0600, atomically: a temporary file of a random name made
/// with O_EXCL in the same directory (never a link someone placed), fsync, rename.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("not a file name"))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".p6os-site")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_documents_are_private_and_replace_the_old_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.yaml");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"hostname: a\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "hostname: a\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn a_signature_of_the_old_bytes_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("u.yaml");
        fs::write(dir.path().join("u.yaml.sig"), "sig").unwrap();
        let old = set_aside_signature(&file).unwrap();
        assert_eq!(old, dir.path().join("u.yaml.sig.old"));
        assert!(!dir.path().join("u.yaml.sig").exists());
        assert!(set_aside_signature(&file).is_none(), "nothing to move");
    }
}
