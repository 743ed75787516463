//! The slot's unified kernel image and the boot loader, signed for Secure Boot: the recipe's
//! signing choice resolved to a key, the image assembled on systemd-stub ([`p6os_efi::uki`])
//! with the slot's command line, then both EFI binaries signed ([`p6os_efi::authenticode`]).

use p6os_efi::authenticode::Signer;
use p6os_layout::esp;
use p6os_layout::verity::Params;

use super::BuildError;
use crate::recipe::{RecipeFile, Signing};
use crate::secureboot;

/// systemd-stub in the boot loader layer (Debian's systemd-boot-efi).
pub const STUB_EFI: &str = "usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// The signer the recipe names: its keys, the development keys (made on first use, with a
/// warning each build), or none.
pub fn signer(signing: &Signing, say: &dyn Fn(&str)) -> Result<Option<Signer>, BuildError> {
    let load = |dir: &std::path::Path| secureboot::load_signer(dir).map_err(BuildError::from);
    match signing {
        Signing::Unsigned => {
            say("secure boot: unsigned (boot.secure_boot: unsigned): boots only with Secure Boot off");
            Ok(None)
        }
        Signing::Keys(dir) => {
            say(&format!(
                "secure boot: signing with {}",
                dir.join("db.key").display()
            ));
            load(dir).map(Some)
        }
        Signing::Development => {
            let (dir, made) = secureboot::dev_keys()?;
            if made {
                say(&format!(
                    "secure boot: made development keys in {}",
                    dir.display()
                ));
            }
            say(&format!(
                "WARNING: signing with DEVELOPMENT Secure Boot keys ({}): for test machines \
                 only. Name your own in the recipe's boot.secure_boot.keys (p6os keygen \
                 --secure-boot) before enrolling keys on real machines.",
                dir.display()
            ));
            load(&dir).map(Some)
        }
    }
}

/// `data` signed, or as it is when there is no signer.
pub fn sign(signer: Option<&Signer>, what: &str, data: Vec<u8>) -> Result<Vec<u8>, BuildError> {
    match signer {
        None => Ok(data),
        Some(s) => s.sign(&data).map_err(|source| BuildError::Efi {
            what: what.to_string(),
            source,
        }),
    }
}

/// What a slot's unified kernel image is made of.
pub struct BootParts<'a> {
    pub stub: &'a [u8],
    pub vmlinuz: &'a [u8],
    pub initrd: &'a [u8],
    pub signer: Option<&'a Signer>,
}

/// The slot's unified kernel image: the kernel, the initramfs, the command line (root
/// filesystem type, verity parameters, the recipe's arguments; no slot: the same image fits
/// either) and os-release, signed when there is a signer.
pub fn make(
    def: &RecipeFile,
    parts: &BootParts,
    verity: Option<&Params>,
) -> Result<Vec<u8>, BuildError> {
    let cmdline = esp::uki_cmdline(def.rootfs.layout(), verity, &def.boot.kernel_args);
    let os_release = p6os_efi::uki::os_release(&def.name, &def.version);
    let image = p6os_efi::uki::assemble(
        parts.stub,
        &p6os_efi::uki::Parts {
            os_release: &os_release,
            cmdline: &cmdline,
            kernel: parts.vmlinuz,
            initrd: parts.initrd,
        },
    )
    .map_err(|source| BuildError::Efi {
        what: STUB_EFI.to_string(),
        source,
    })?;
    sign(parts.signer, esp::UKI_FILE, image)
}
