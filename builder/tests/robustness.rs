//! Parsers of untrusted input never panic: arbitrary bytes into the YAML loader, the GPT and FAT
//! readers, the tar reader and the boot entry name parser give values or errors, nothing else.

use std::io::Cursor;
use std::path::Path;

use p6os_builder::bootentry::EntryName;
use p6os_builder::fat::FatVolume;
use p6os_builder::recipe::{LayerFile, RecipeFile};
use p6os_builder::tree::Tree;
use p6os_builder::yamlcheck;
use proptest::prelude::*;

/// YAML-ish text: keys of the recipe format, punctuation and indentation mixed at random.
fn yamlish() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "name: ",
        "version: ",
        "partitions:\n",
        "  esp: ",
        "  slot: ",
        "64MiB",
        "rootfs: ",
        "squashfs",
        "boot:\n",
        "  tries: ",
        "300",
        "- ",
        "[",
        "]",
        "{",
        "}",
        ": ",
        "\n",
        "  ",
        "\"",
        "'",
        "#",
        "&a ",
        "*a",
        "sources:\n",
        "  - type: ",
        "inline",
        "tarball",
        "    entries:\n",
        "      - { path: /x, kind: char, major: ",
        "null",
        "~",
        "true",
        "!!str ",
        "é",
        "\t",
    ]);
    prop::collection::vec(atoms, 0..60).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn yaml_loader_never_panics(text in yamlish()) {
        let _ = yamlcheck::load::<RecipeFile>(Path::new("fuzz.yaml"), &text);
        let _ = yamlcheck::load::<LayerFile>(Path::new("fuzz.yaml"), &text);
    }

    #[test]
    fn entry_names_never_panic(name in "[a-z0-9.+\\-]{0,40}(\\.conf)?") {
        if let Some(n) = EntryName::parse(&name) {
            prop_assert_eq!(EntryName::parse(&n.file_name()), Some(n));
        }
    }

    #[test]
    fn tar_reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = Tree::from_tar(bytes.as_slice());
    }

    #[test]
    fn gpt_reader_never_panics(mut bytes in prop::collection::vec(any::<u8>(), 0..8192), sig in any::<bool>()) {
        if sig && bytes.len() >= 1024 {
            bytes[512..520].copy_from_slice(b"EFI PART");
        }
        let _ = p6os_builder::gpt::read(&mut Cursor::new(bytes));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A real FAT32 volume with random bytes flipped: reading must fail cleanly or succeed.
    #[test]
    fn fat_reader_survives_corruption(flips in prop::collection::vec((0usize..2_000_000, any::<u8>()), 1..40)) {
        let size = 34 * 1024 * 1024;
        let mut disk = Cursor::new(vec![0u8; size]);
        let files = vec![
            p6os_builder::fat::FatFile { path: "/loader/entries/p6os-1-a.conf".into(), data: b"title x\n".to_vec() },
            p6os_builder::fat::FatFile { path: "/p6os/a/manifest.json".into(), data: vec![b'{'; 3000] },
        ];
        p6os_builder::fat::format(&mut disk, 0, size as u64, &p6os_builder::fat::FormatOptions { volume_id: 7, label: None }, &files).unwrap();
        let mut bytes = disk.into_inner();
        for (pos, val) in flips {
            bytes[pos] ^= val;
        }
        if let Ok(mut vol) = FatVolume::open(Cursor::new(bytes), 0, size as u64) {
            for dir in ["/", "/loader", "/loader/entries", "/p6os/a"] {
                let _ = vol.read_dir(dir);
            }
            let _ = vol.read_file("/p6os/a/manifest.json");
        }
    }
}
