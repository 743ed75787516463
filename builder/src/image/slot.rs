//! The slot's root filesystem (shared by images and bundles) and the image's disk writes.

use std::fs;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{io_at, payload, BuildError};
use crate::fetch;
use crate::manifest::{Payload, SlotIdentity, SlotManifest};
use crate::rootfs;
use crate::tree::Tree;
use crate::verity::read_full;

/// Removes `.<name>-<version>.*` work directories left by a build that was killed.
pub(super) fn remove_stale_work_dirs(out_dir: &Path, base: &str) {
    let prefix = format!(".{base}.");
    let Ok(entries) = fs::read_dir(out_dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) && e.path().is_dir() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Copies `src` into `dst` at `offset`, skipping all-zero blocks (the target is a fresh sparse file).
pub(super) fn copy_sparse(
    src: &Path,
    dst: &mut fs::File,
    offset: u64,
    meter: &dyn Fn(u64, u64),
) -> io::Result<()> {
    let mut input = fs::File::open(src)?;
    let total = input.metadata()?.len();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = offset;
    loop {
        let n = read_full(&mut input, &mut buf)?;
        meter(pos - offset + n as u64, total);
        if n == 0 {
            return Ok(());
        }
        for chunk in buf[..n].chunks(64 * 1024) {
            if chunk.iter().any(|b| *b != 0) {
                dst.seek(SeekFrom::Start(pos))?;
                dst.write_all(chunk)?;
            }
            pos += chunk.len() as u64;
        }
    }
}

/// A slot's root filesystem (in the work directory), its unified kernel image and the manifest
/// describing both.
pub struct SlotFiles {
    pub rootfs_path: PathBuf,
    pub uki: Vec<u8>,
    pub manifest: SlotManifest,
}

/// Makes a slot's root filesystem from the merged tree (checked to fit the slot, with its
/// verity tree) and its unified kernel image: shared by images (slot A) and update bundles.
#[allow(clippy::too_many_arguments)]
pub fn make_slot(
    def: &crate::recipe::RecipeFile,
    root: &Tree,
    identity: SlotIdentity,
    boot: &super::uki::BootParts,
    kernel_release: String,
    agent_sha256: &str,
    work: &Path,
    say: &dyn Fn(&str),
) -> Result<SlotFiles, BuildError> {
    say(&format!(
        "root filesystem: {} entries, {} MiB of files, {}",
        root.len(),
        root.content_bytes() >> 20,
        def.rootfs.as_str()
    ));
    let rootfs_path = work.join("rootfs.img");
    rootfs::build(root, def.rootfs, &rootfs_path)?;
    // The salt comes from the build inputs: the same recipe gives the same tree.
    let verity = match def.boot.verity {
        true => {
            let salt = p6os_layout::verity::salt_for(&identity.recipe_digest);
            let params =
                crate::verity::append_tree(&rootfs_path, salt).map_err(io_at(&rootfs_path))?;
            say(&format!(
                "dm-verity: {} data blocks, tree of {} KiB, root hash {}",
                params.data_blocks,
                p6os_layout::verity::tree_size(params.data_blocks) >> 10,
                params.value().rsplit(':').next().unwrap_or_default()
            ));
            Some(params)
        }
        false => None,
    };
    let rootfs_len = fs::metadata(&rootfs_path)
        .map_err(io_at(&rootfs_path))?
        .len();
    let slot_bytes = def.partitions.slot.bytes();
    if rootfs_len > slot_bytes {
        let need = rootfs_len.div_ceil(1 << 20);
        return Err(BuildError::SlotTooSmall {
            need,
            have: slot_bytes >> 20,
            suggest: need + need / 4 + 1,
        });
    }
    let rootfs_sha256 = fetch::sha256_file(&rootfs_path).map_err(io_at(&rootfs_path))?;
    let uki = super::uki::make(def, boot, verity.as_ref())?;
    let manifest = SlotManifest {
        identity,
        rootfs: Payload {
            format: def.rootfs.as_str().into(),
            size: rootfs_len,
            sha256: rootfs_sha256,
            verity,
        },
        kernel: payload("vmlinuz", boot.vmlinuz),
        initrd: payload("initrd.img", boot.initrd),
        uki: Some(payload(p6os_layout::esp::UKI_FILE, &uki)),
        kernel_release,
        agent_sha256: agent_sha256.to_string(),
    };
    Ok(SlotFiles {
        rootfs_path,
        uki,
        manifest,
    })
}
