//! Signed test bundles, shared by the tests of every crate that reads bundles (bundle, agent,
//! console) and by the fuzz seeds: one definition of a valid manifest and of payloads with
//! known bytes. Enabled by the `testing` feature (dev-dependencies only).

use crate::format::{write_bundle, Manifest, PayloadInput, PayloadKind, FORMAT};
use crate::keys::SecretKey;

/// The key most tests trust.
pub fn trusted_key() -> SecretKey {
    SecretKey::from_seed([7; 32])
}

/// A key nobody trusts.
pub fn other_key() -> SecretKey {
    SecretKey::from_seed([9; 32])
}

/// A valid manifest for image `name` at `version` (x86_64, squashfs, 3 tries, agent 0.1.0 or
/// newer); the payloads are filled in by [`write_bundle`].
pub fn manifest(name: &str, version: &str) -> Manifest {
    Manifest {
        format: FORMAT,
        name: name.into(),
        version: version.into(),
        arch: "x86_64".into(),
        compatible: vec![name.into()],
        min_agent_version: "0.1.0".into(),
        recipe_digest: "sha256:00".into(),
        rootfs_type: p6os_layout::RootFs::Squashfs,
        kernel_args: Vec::new(),
        tries: 3,
        slot_manifest: serde_json::json!({ "name": name, "version": version }),
        security_floor: None,
        key_id: String::new(),
        payloads: Vec::new(),
    }
}

/// Incompressible-looking bytes (xorshift), different for each `seed`.
pub fn noise(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A bundle to be: its manifest and payloads, all public so tests can change one thing.
#[derive(Debug, Clone)]
pub struct TestBundle {
    pub manifest: Manifest,
    pub kernel: Vec<u8>,
    pub initrd: Vec<u8>,
    pub rootfs: Vec<u8>,
    /// zstd level of the payloads.
    pub level: i32,
}

impl TestBundle {
    /// `name` at `version` with a 4 kB kernel, a 3 kB initramfs and a 200 kB root filesystem
    /// of noise (big enough for meaningful download ranges).
    pub fn new(name: &str, version: &str) -> TestBundle {
        TestBundle {
            manifest: manifest(name, version),
            kernel: (0..4000u32).map(|i| (i * 7 % 251) as u8).collect(),
            initrd: b"initrd".repeat(500),
            rootfs: noise(200_000, 0),
            level: 1,
        }
    }

    /// Different payload bytes for each `seed` (distinct bundles of the same version).
    pub fn seed(mut self, seed: u8) -> TestBundle {
        self.kernel.iter_mut().for_each(|b| *b ^= seed);
        self.rootfs = noise(self.rootfs.len(), seed);
        self
    }

    /// A root filesystem of `len` bytes of noise.
    pub fn rootfs_len(mut self, len: usize) -> TestBundle {
        self.rootfs = noise(len, 0);
        self
    }

    /// The bundle file, signed with `key`.
    pub fn sign(self, key: &SecretKey) -> Vec<u8> {
        let mut out = Vec::new();
        write_bundle(
            &mut out,
            self.manifest,
            &[
                PayloadInput {
                    kind: PayloadKind::Kernel,
                    data: &self.kernel,
                },
                PayloadInput {
                    kind: PayloadKind::Initrd,
                    data: &self.initrd,
                },
                PayloadInput {
                    kind: PayloadKind::Rootfs,
                    data: &self.rootfs,
                },
            ],
            key,
            self.level,
        )
        .expect("writing a bundle to memory");
        out
    }
}
