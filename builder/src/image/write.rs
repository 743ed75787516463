//! Writing the image: the disk layout from the recipe digest, the ESP's files, slot A and the
//! state partition into a sparse file, then the output formats, the manifest and the checksum
//! list, each renamed into place (nothing is left in the output directory on error).

use std::fs;
use std::time::Instant;

use p6os_layout::partition;

use super::*;
use crate::bootentry::Slot;
use crate::fat::{self, FormatOptions};
use crate::manifest::{BuildManifest, ImageRecord, PartitionRecord};
use crate::outputs::{self, OutputFormat};
use crate::statefs;

pub(super) fn write(
    recipe: &Recipe,
    prepared: Prepared,
    opts: &BuildOptions,
    started: Instant,
) -> Result<Built, BuildError> {
    let say = |s: &str| opts.progress.say(s);
    let def = &recipe.def;
    let Prepared {
        new_lock,
        digest,
        identity,
        records,
        boot_record,
        root,
        efi,
        stub,
        signer,
        vmlinuz,
        initrd,
        release,
        agent_sha256,
        packages,
    } = prepared;

    let gpt = super::layout::disk(&digest, &def.partitions);

    fs::create_dir_all(&opts.out_dir).map_err(io_at(&opts.out_dir))?;
    let base = format!("{}-{}", def.name, def.version);
    let image_path = opts.out_dir.join(format!("{base}.img"));
    let manifest_path = opts.out_dir.join(format!("{base}.manifest.json"));
    remove_stale_work_dirs(&opts.out_dir, &base);
    let work = tempfile::Builder::new()
        .prefix(&format!(".{base}."))
        .tempdir_in(&opts.out_dir)
        .map_err(io_at(&opts.out_dir))?;

    let SlotFiles {
        rootfs_path,
        uki,
        manifest: slot_manifest,
    } = make_slot(
        def,
        &root,
        identity,
        &super::uki::BootParts {
            stub: &stub,
            vmlinuz: &vmlinuz,
            initrd: &initrd,
            signer: signer.as_ref(),
        },
        release,
        &agent_sha256,
        work.path(),
        &say,
    )?;
    let slot_json = serde_json::to_vec_pretty(&slot_manifest).expect("serializable");
    let esp_files = super::layout::esp_files(def, efi, uki, slot_json);

    // Write the image: sparse file, GPT, ESP, slot A, state.
    say(&format!(
        "writing {} ({} MiB)",
        image_path.display(),
        gpt.size_bytes() >> 20
    ));
    let tmp_image = work.path().join("image.img");
    let mut f = fs::File::create(&tmp_image).map_err(io_at(&tmp_image))?;
    f.set_len(gpt.size_bytes()).map_err(io_at(&tmp_image))?;
    crate::gpt::write(&gpt, &mut f).map_err(io_at(&tmp_image))?;
    let esp = gpt
        .by_label(partition::ESP_LABEL)
        .expect("layout has an ESP");
    let volume_id = u32::from_le_bytes(
        derived_guid(&digest, "esp-volume-id").as_bytes()[..4]
            .try_into()
            .expect("4 bytes"),
    );
    fat::format(
        &mut f,
        esp.offset(),
        esp.size(),
        &FormatOptions {
            volume_id,
            label: None,
        },
        &esp_files,
    )?;
    let slot_a = gpt
        .by_label(Slot::A.partlabel())
        .expect("layout has slot a");
    copy_sparse(&rootfs_path, &mut f, slot_a.offset(), &|done, total| {
        opts.progress.meter("writing slot a", done, total)
    })
    .map_err(io_at(&tmp_image))?;
    f.sync_all().map_err(io_at(&tmp_image))?;
    drop(f);
    let state = gpt
        .by_label(partition::STATE_LABEL)
        .expect("layout has state");
    statefs::format(
        &tmp_image,
        state.offset(),
        state.size(),
        derived_guid(&digest, "state-fs"),
    )?;

    // The other formats are made from the finished raw image, in the work directory. The raw
    // output's record carries its sha256; only when it is not kept is the image hashed here.
    let kept_raw = opts.formats.contains(&OutputFormat::Raw);
    let unkept_sha256 = match kept_raw {
        true => None,
        false => Some(fetch::sha256_file(&tmp_image).map_err(io_at(&tmp_image))?),
    };
    let work_image = work.path().join(format!("{base}.img"));
    fs::rename(&tmp_image, &work_image).map_err(io_at(&work_image))?;
    let outputs = outputs::write_outputs(&work_image, &base, &opts.formats, &say)?;
    let image_sha256 = unkept_sha256
        .or_else(|| {
            outputs
                .iter()
                .find(|o| o.format == OutputFormat::Raw)
                .map(|o| o.sha256.clone())
        })
        .expect("the raw output is listed when kept");
    let manifest = BuildManifest {
        name: def.name.clone(),
        version: def.version.clone(),
        arch: def.arch.as_str().into(),
        recipe_digest: digest.clone(),
        layers: records,
        bootloader: boot_record,
        disk_guid: gpt.disk_guid.to_string(),
        partitions: gpt.partitions.iter().map(PartitionRecord::from).collect(),
        slot_a: slot_manifest,
        image: ImageRecord {
            file: image_path
                .file_name()
                .expect("has a name")
                .to_string_lossy()
                .into_owned(),
            size: gpt.size_bytes(),
            sha256: image_sha256,
        },
        outputs: outputs.clone(),
        packages,
    };
    let mut json = serde_json::to_vec_pretty(&manifest).expect("serializable");
    json.push(b'\n');
    let tmp_manifest = work.path().join("manifest.json");
    fs::write(&tmp_manifest, json).map_err(io_at(&tmp_manifest))?;
    // Manifest first: an image never stands without the manifest that describes it; the
    // checksum list last, once everything it lists is in place.
    fs::rename(&tmp_manifest, &manifest_path).map_err(io_at(&manifest_path))?;
    for o in &outputs {
        let to = opts.out_dir.join(&o.file);
        fs::rename(work.path().join(&o.file), &to).map_err(io_at(&to))?;
    }
    let sums = opts.out_dir.join(format!("{base}.{}", outputs::SHA256SUMS));
    fs::rename(work.path().join(outputs::SHA256SUMS), &sums).map_err(io_at(&sums))?;
    // Outputs of formats not chosen this time would be older than the manifest: removed.
    for format in OutputFormat::ALL {
        if !opts.formats.contains(&format) {
            let stale = opts.out_dir.join(format!("{base}.{}", format.extension()));
            let _ = fs::remove_file(stale);
        }
    }
    save_lock(recipe, new_lock.as_ref(), &say);
    say(&format!(
        "done in {:.1} s: {} (sha256 {})",
        started.elapsed().as_secs_f64(),
        image_path.display(),
        manifest.image.sha256
    ));
    Ok(Built {
        image: image_path,
        manifest_file: manifest_path,
        manifest,
    })
}
