//! Installing a verified bundle into one slot: the root filesystem streamed into the slot's
//! partition while it is hashed, then the kernel, initramfs and manifest on the ESP (temporary
//! file, fsync, rename). The boot entry is not written here: the caller writes it last.
//!
//! The caller has verified the signature and the compatibility (`check`) before this writes a
//! byte, and has removed the target slot's old entry, so no entry points at a half-written slot.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use p6os_bundle::compat::{self, Device, Downgrade};
use p6os_bundle::format::{self, BundleError, Header, PayloadKind};
use p6os_bundle::keys::PublicKey;
use p6os_layout::esp;

use crate::cmdline::Slot;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("the bundle cannot be installed here:\n  {}", .0.join("\n  "))]
    Incompatible(Vec<String>),
    /// The firmware would refuse to start the new slot, and a refused trial does not come
    /// back by itself (the loader returns to the firmware): nothing is installed.
    #[error("Secure Boot is on and {0}: the firmware would not start the new slot")]
    NotBootable(&'static str),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> InstallError + 'a {
    move |source| InstallError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the header and refuses the bundle unless a trusted key signed it and it suits this
/// device. Nothing is written.
pub fn check<R: Read>(
    r: &mut R,
    trusted: &[PublicKey],
    device: &Device,
    downgrade: Downgrade,
) -> Result<Header, InstallError> {
    let header = format::read_header(r)?;
    header.verify(trusted)?;
    let problems = compat::problems(&header.manifest, device, downgrade);
    if !problems.is_empty() {
        return Err(InstallError::Incompatible(problems));
    }
    Ok(header)
}

/// The cheap first pass over a seekable source: every payload's bytes against the signed
/// manifest (no decompression), then back to the first payload. A truncated or damaged bundle
/// is refused here, before the caller removes any entry or writes the slot.
pub fn verify_then_rewind<R: Read + Seek>(r: &mut R, header: &Header) -> Result<(), InstallError> {
    format::verify_compressed(r, &header.manifest)?;
    r.seek(SeekFrom::Start(header.len))
        .map_err(BundleError::Read)?;
    Ok(())
}

/// What the firmware checks before it starts a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// Secure Boot is on: only a signed unified kernel image can start.
    SecureBoot,
    /// Secure Boot is off (or not known: no UEFI variables).
    Unchecked,
}

impl Firmware {
    /// This machine's, from the `SecureBoot` variable.
    pub fn of_this_machine() -> Firmware {
        match crate::loader::secure_boot() {
            Some(true) => Firmware::SecureBoot,
            _ => Firmware::Unchecked,
        }
    }

    /// Why the firmware would refuse a bundle with these payloads, judged from its manifest
    /// alone (before anything is written).
    pub fn refuses_manifest(self, m: &format::Manifest) -> Option<&'static str> {
        match (self, m.payload(PayloadKind::Uki)) {
            (Firmware::SecureBoot, None) => {
                Some("the bundle has a kernel and an initramfs, not a signed kernel image")
            }
            _ => None,
        }
    }

    /// Why the firmware would refuse this kernel image (whether a key in its db signed it is
    /// the firmware's to check; that it is signed at all is checked here).
    pub fn refuses_image(self, image: &[u8]) -> Option<&'static str> {
        let signed = p6os_efi::pe::Layout::parse(image).is_ok_and(|l| l.is_signed());
        match (self, signed) {
            (Firmware::SecureBoot, false) => Some("the bundle's kernel image is not signed"),
            _ => None,
        }
    }
}

/// Where one slot's bits go.
pub struct Target<'a> {
    pub slot: Slot,
    /// The slot's partition (or, in tests and benchmarks, a file).
    pub device: &'a Path,
    /// The mounted ESP.
    pub esp: &'a Path,
    pub firmware: Firmware,
}

/// Streams the payloads after `header` from `r` into `target`, verifying each against the
/// signed manifest. `progress(kind, bytes done, bytes total)`.
pub fn install<R: Read>(
    r: &mut R,
    header: &Header,
    target: &Target,
    progress: &mut dyn FnMut(PayloadKind, u64, u64),
) -> Result<(), InstallError> {
    let m = &header.manifest;
    // What goes on the ESP, held until every payload has matched its signed size and hash.
    let mut esp_files: Vec<(&str, Vec<u8>)> = Vec::new();
    for p in &m.payloads {
        let total = p.size;
        let kind = p.kind;
        let esp_name = match kind {
            PayloadKind::Kernel => esp::KERNEL_FILE,
            PayloadKind::Initrd => esp::INITRD_FILE,
            PayloadKind::Uki => esp::UKI_FILE,
            PayloadKind::Rootfs => {
                write_rootfs(r, p, target.device, &mut |n| progress(kind, n, total))?;
                continue;
            }
        };
        let mut data = Vec::new();
        format::copy_payload(r, p, &mut data, |n| progress(kind, n, total))?;
        // The kernel image comes before the root filesystem: refused before the slot is written.
        if kind == PayloadKind::Uki {
            if let Some(why) = target.firmware.refuses_image(&data) {
                return Err(InstallError::NotBootable(why));
            }
        }
        esp_files.push((esp_name, data));
    }
    // Now the ESP. The slot's old files go first (its entry is already gone, so nothing
    // refers to them): a small ESP holds both slots' kernels plus one being written, not a
    // third copy or a cut upgrade's leftovers. The manifest is written last.
    let dir = target
        .esp
        .join(esp::slot_dir(target.slot).trim_start_matches('/'));
    fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
    info!("upgrade: esp: removing slot {}'s old files", target.slot);
    clear_dir(&dir)?;
    let slot_manifest = serde_json::to_vec_pretty(&m.slot_manifest).unwrap_or_default();
    esp_files.push((esp::MANIFEST_FILE, slot_manifest));
    for (name, data) in &esp_files {
        info!(
            "upgrade: esp: writing {}",
            esp::slot_file(target.slot, name)
        );
        replace_file(&dir.join(name), data)?;
    }
    sync_dir(&dir)
}

fn write_rootfs<R: Read>(
    r: &mut R,
    p: &format::Payload,
    device: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(), InstallError> {
    // No truncation: a partition keeps its size; a file target is cut to the payload below.
    // Payload chunks are 1 MiB: written as they come, no extra buffer.
    let mut file = OpenOptions::new()
        .write(true)
        .open(device)
        .map_err(io_err("cannot open", device))?;
    file.seek(SeekFrom::Start(0))
        .map_err(io_err("cannot seek", device))?;
    format::copy_payload(r, p, &mut file, progress)?;
    if file.metadata().map(|m| m.is_file()).unwrap_or(false) {
        file.set_len(p.size)
            .map_err(io_err("cannot truncate", device))?;
    }
    file.sync_all().map_err(io_err("cannot fsync", device))
}

/// `path.new`, fsync, rename over `path`, fsync the directory. A cut leaves either the old
/// file, or the new one, or a `.new` leftover beside one of them (which the ESP's repair
/// removes: `p6os_layout::esp::is_leftover`).
pub fn replace_file(path: &Path, data: &[u8]) -> Result<(), InstallError> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(esp::temp_name(&name));
    let mut f = File::create(&tmp).map_err(io_err("cannot create", &tmp))?;
    f.write_all(data).map_err(io_err("cannot write", &tmp))?;
    f.sync_all().map_err(io_err("cannot fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err("cannot rename into", path))?;
    sync_dir(path.parent().unwrap_or(Path::new("/")))
}

/// Removes the files in `dir` (not below it), then fsyncs it.
fn clear_dir(dir: &Path) -> Result<(), InstallError> {
    for entry in fs::read_dir(dir).map_err(io_err("cannot list", dir))? {
        let path = entry.map_err(io_err("cannot list", dir))?.path();
        if path.is_file() {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("cannot remove", &path)(e))
                }
                _ => {}
            }
        }
    }
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> Result<(), InstallError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot fsync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_secure_boot_only_a_signed_kernel_image_is_installed() {
        let with = |kinds: &[PayloadKind]| {
            let mut m = p6os_bundle::testing::manifest("tiny", "2.0.0");
            m.payloads = kinds
                .iter()
                .map(|&kind| format::Payload {
                    kind,
                    size: 1,
                    sha256: String::new(),
                    compressed_size: 1,
                    compressed_sha256: String::new(),
                })
                .collect();
            m
        };
        let split = with(&[
            PayloadKind::Kernel,
            PayloadKind::Initrd,
            PayloadKind::Rootfs,
        ]);
        let uki = with(&[PayloadKind::Uki, PayloadKind::Rootfs]);
        let unsigned = p6os_efi::testing::tiny_pe(&[(".text", 0x300)], 0x1000, 0x200);
        let mut signed = unsigned.clone();
        // A certificate table entry (offset, size) marks an image signed.
        let layout = p6os_efi::pe::Layout::parse(&signed).unwrap();
        let end = signed.len() as u32;
        signed[layout.cert_directory..layout.cert_directory + 4]
            .copy_from_slice(&end.to_le_bytes());
        signed.extend_from_slice(&[0; 8]);
        signed[layout.cert_directory + 4..layout.cert_directory + 8]
            .copy_from_slice(&8u32.to_le_bytes());

        let sb = Firmware::SecureBoot;
        assert!(sb.refuses_manifest(&split).is_some());
        assert_eq!(sb.refuses_manifest(&uki), None);
        assert!(sb.refuses_image(&unsigned).is_some());
        assert!(sb.refuses_image(b"not a PE image").is_some());
        assert_eq!(sb.refuses_image(&signed), None);
        let off = Firmware::Unchecked;
        assert_eq!(off.refuses_manifest(&split), None);
        assert_eq!(off.refuses_image(&unsigned), None);
    }
}
