//! `write_files`: where a file may go (the writable overlays, not the agent's own files, once
//! each), its encoding, mode and owner.

use base64::Engine as _;

use super::{at, k, Check};
use crate::unattended::syntax::{
    in_writable_overlay, strip_whitespace, valid_octal_mode, valid_owner,
};
use crate::unattended::types::{Encoding, WriteFile};
use crate::yamlcheck::Seg;

impl Check<'_> {
    pub(super) fn write_files(&mut self, files: &[WriteFile]) {
        for (i, f) in files.iter().enumerate() {
            let base = vec![k("write_files"), Seg::Index(i)];
            if !in_writable_overlay(&f.path) {
                self.err(
                    at(&base, &[k("path")]),
                    format!("`{}` is outside the writable overlays", f.path),
                    Some("a file under /etc or /var (the rest of the system is read-only)"),
                );
            } else if f.path.starts_with("/var/lib/p6os/")
                || ["/etc/passwd", "/etc/shadow", "/etc/group"].contains(&f.path.as_str())
            {
                self.err(
                    at(&base, &[k("path")]),
                    format!("`{}` is managed by the agent", f.path),
                    Some("use the `users` section for accounts"),
                );
            } else if let Some(first) = files[..i].iter().position(|o| o.path == f.path) {
                self.err(
                    at(&base, &[k("path")]),
                    format!("`{}` is written twice (also write_files[{first}])", f.path),
                    None,
                );
            }
            if f.encoding == Encoding::Base64
                && base64::engine::general_purpose::STANDARD
                    .decode(strip_whitespace(&f.content))
                    .is_err()
            {
                self.err(at(&base, &[k("content")]), "not valid base64", None);
            }
            if let Some(p) = &f.permissions {
                if !valid_octal_mode(p) {
                    self.err(
                        at(&base, &[k("permissions")]),
                        format!("`{p}` is not an octal mode"),
                        Some("quote it, e.g. \"0644\""),
                    );
                }
            }
            if let Some(o) = &f.owner {
                if !valid_owner(o) {
                    self.err(
                        at(&base, &[k("owner")]),
                        format!("`{o}` is not user[:group]"),
                        None,
                    );
                }
            }
        }
    }
}
