//! The bundle file (`<name>-<version>.p6b`), readable as one stream:
//!
//! ```text
//! "P6OSBDL1"                       8 bytes
//! manifest length                  u32 little endian (at most 1 MiB)
//! manifest                         JSON (`Manifest`)
//! signature length                 u32 little endian (64; 0 = unsigned, always refused)
//! signature                        ed25519 over "p6os-bundle-v1\n" + manifest bytes
//! payloads                         in manifest order, each `compressed_size` bytes of zstd
//! ```
//!
//! The manifest carries every payload's size and sha256, so the signature covers the whole
//! bundle: a reader verifies the signature and the compatibility before it writes a byte, then
//! streams each payload while hashing it and refuses it at the end if anything differs.

use std::io::{self, Read, Write};
use std::sync::mpsc;
use std::thread;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keys::{KeyId, PublicKey, SecretKey};

pub const MAGIC: &[u8; 8] = b"P6OSBDL1";
pub const FORMAT: u32 = 1;
pub const MAX_MANIFEST: u32 = 1 << 20;
/// Read and write in pieces of this size.
pub const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    Kernel,
    Initrd,
    Rootfs,
    /// A unified kernel image (kernel, initramfs, command line; signed for Secure Boot): in
    /// place of `kernel` and `initrd`.
    Uki,
}

impl PayloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadKind::Kernel => "kernel",
            PayloadKind::Initrd => "initrd",
            PayloadKind::Rootfs => "rootfs",
            PayloadKind::Uki => "uki",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub kind: PayloadKind,
    /// Bytes once decompressed.
    pub size: u64,
    /// `sha256:<hex>` of the decompressed bytes.
    pub sha256: String,
    /// Bytes in the bundle.
    pub compressed_size: u64,
    /// `sha256:<hex>` of the bytes in the bundle: lets a reader refuse a damaged bundle in a
    /// cheap first pass, before it changes anything (`verify_compressed`).
    pub compressed_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Image names this bundle may replace (the recipe's name by default).
    pub compatible: Vec<String>,
    /// The oldest agent that can install it.
    pub min_agent_version: String,
    pub recipe_digest: String,
    /// Root filesystem type of the `rootfs` payload (`squashfs`).
    pub rootfs_type: p6os_layout::RootFs,
    /// Extra kernel arguments for the boot entry (the recipe's `boot.kernel_args`).
    pub kernel_args: Vec<String>,
    /// Boot tries of the new slot before the loader falls back.
    pub tries: u32,
    /// What the agent writes to the ESP as `p6os/<slot>/manifest.json` (the builder's slot
    /// manifest: identity, payload sizes and hashes, kernel release).
    pub slot_manifest: serde_json::Value,
    /// The recipe's `upgrades.security_floor`: a device that has blessed this version never
    /// installs one below the floor. Absent in bundles of older builders (no floor): the field
    /// is left out then, so such bundles stay byte-identical and older agents read them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_floor: Option<String>,
    /// Hex id of the key that signed it.
    pub key_id: String,
    pub payloads: Vec<Payload>,
}

impl Manifest {
    pub fn payload(&self, kind: PayloadKind) -> Option<&Payload> {
        self.payloads.iter().find(|p| p.kind == kind)
    }

    /// The dm-verity parameters of the root filesystem, from the slot manifest: its root hash
    /// goes on the new slot's command line. `None` for an unprotected slot.
    pub fn verity(&self) -> Result<Option<p6os_layout::verity::Params>, BundleError> {
        match self
            .slot_manifest
            .get("rootfs")
            .and_then(|r| r.get("verity"))
        {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(v)) => p6os_layout::verity::Params::parse(v)
                .map(Some)
                .map_err(|e| BundleError::Manifest(e.to_string())),
            Some(other) => Err(BundleError::Manifest(format!(
                "slot_manifest.rootfs.verity is {other}, not a string"
            ))),
        }
    }

    /// Bytes of all payloads, compressed: the header plus this is the file size.
    pub fn compressed_total(&self) -> u64 {
        self.payloads.iter().map(|p| p.compressed_size).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a P6OS bundle (bad magic)")]
    Magic,
    #[error("the bundle ends early ({0})")]
    Truncated(&'static str),
    #[error("manifest of {0} bytes is larger than the 1 MiB limit")]
    ManifestTooLarge(u32),
    #[error("the manifest is not valid: {0}")]
    Manifest(String),
    #[error("the bundle is not signed")]
    Unsigned,
    #[error("signature block of {0} bytes (expected 64)")]
    SignatureLength(u32),
    #[error("signed by key {key_id}, which this device does not trust (trusted: {trusted})")]
    UntrustedKey { key_id: String, trusted: String },
    #[error("the signature does not match the manifest (signed by someone else, or altered)")]
    BadSignature,
    #[error("{kind} payload: {problem}")]
    Payload { kind: &'static str, problem: String },
    #[error("cannot write the {kind} payload")]
    Write {
        kind: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the bundle")]
    Read(#[source] io::Error),
}

/// The header of a bundle: everything before the payloads.
#[derive(Debug, Clone)]
pub struct Header {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub signature: Option<[u8; 64]>,
    /// Bytes from the start of the file to the first payload.
    pub len: u64,
}

fn read_exact_or<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), BundleError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => BundleError::Truncated(what),
        _ => BundleError::Read(e),
    })
}

fn read_u32<R: Read>(r: &mut R, what: &'static str) -> Result<u32, BundleError> {
    let mut b = [0u8; 4];
    read_exact_or(r, &mut b, what)?;
    Ok(u32::from_le_bytes(b))
}

/// Reads and parses the header; checks the manifest's own consistency (not the signature).
pub fn read_header<R: Read>(r: &mut R) -> Result<Header, BundleError> {
    let mut magic = [0u8; 8];
    read_exact_or(r, &mut magic, "in the magic")?;
    if &magic != MAGIC {
        return Err(BundleError::Magic);
    }
    let len = read_u32(r, "in the manifest length")?;
    if len > MAX_MANIFEST {
        return Err(BundleError::ManifestTooLarge(len));
    }
    let mut manifest_bytes = vec![0u8; len as usize];
    read_exact_or(r, &mut manifest_bytes, "in the manifest")?;
    let sig_len = read_u32(r, "in the signature length")?;
    let signature = match sig_len {
        0 => None,
        64 => {
            let mut s = [0u8; 64];
            read_exact_or(r, &mut s, "in the signature")?;
            Some(s)
        }
        n => return Err(BundleError::SignatureLength(n)),
    };
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| BundleError::Manifest(e.to_string()))?;
    check_manifest(&manifest)?;
    Ok(Header {
        manifest,
        manifest_bytes,
        signature,
        len: 8 + 4 + u64::from(len) + 4 + u64::from(sig_len),
    })
}

fn check_manifest(m: &Manifest) -> Result<(), BundleError> {
    let bad = |s: String| Err(BundleError::Manifest(s));
    if m.format != FORMAT {
        return bad(format!("format {} (this reader knows {FORMAT})", m.format));
    }
    // A root filesystem and what boots it: a unified kernel image, or (older builders) a
    // kernel and an initramfs; each once.
    let count = |kind| m.payloads.iter().filter(|p| p.kind == kind).count();
    let expected: &[PayloadKind] = match count(PayloadKind::Uki) {
        0 => &[
            PayloadKind::Kernel,
            PayloadKind::Initrd,
            PayloadKind::Rootfs,
        ],
        _ => &[PayloadKind::Uki, PayloadKind::Rootfs],
    };
    for kind in [
        PayloadKind::Kernel,
        PayloadKind::Initrd,
        PayloadKind::Rootfs,
        PayloadKind::Uki,
    ] {
        let n = count(kind);
        let want = usize::from(expected.contains(&kind));
        if n != want {
            return bad(format!(
                "{n} {} payloads (expected {})",
                kind.as_str(),
                if want == 1 {
                    "one"
                } else {
                    "none beside a uki"
                }
            ));
        }
    }
    for p in &m.payloads {
        for digest in [&p.sha256, &p.compressed_sha256] {
            if parse_sha256(digest).is_none() {
                return bad(format!(
                    "{} digest `{digest}` is not sha256:<64 hex>",
                    p.kind.as_str()
                ));
            }
        }
    }
    if m.tries == 0 {
        return bad("tries is 0".into());
    }
    // A protected root filesystem carries its whole tree: nothing past it, nothing missing.
    if let Some(v) = m.verity()? {
        let size = m.payload(PayloadKind::Rootfs).map_or(0, |p| p.size);
        if size != v.total_size() {
            return bad(format!(
                "the rootfs payload has {size} bytes; its verity parameters say {}",
                v.total_size()
            ));
        }
    }
    Ok(())
}

fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

pub fn sha256_hex(digest: &[u8]) -> String {
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl Header {
    /// Verifies the signature with the trusted key the manifest names; returns that key.
    pub fn verify<'k>(&self, trusted: &'k [PublicKey]) -> Result<&'k PublicKey, BundleError> {
        let signature = self.signature.as_ref().ok_or(BundleError::Unsigned)?;
        let wanted = KeyId::parse(&self.manifest.key_id);
        let key = trusted
            .iter()
            .find(|k| Some(k.id()) == wanted)
            .ok_or_else(|| BundleError::UntrustedKey {
                key_id: self.manifest.key_id.clone(),
                trusted: if trusted.is_empty() {
                    "none".into()
                } else {
                    trusted
                        .iter()
                        .map(|k| k.id().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })?;
        if key.verify_manifest(&self.manifest_bytes, signature) {
            Ok(key)
        } else {
            Err(BundleError::BadSignature)
        }
    }
}

/// Reads every payload's bytes as they are in the bundle and checks their size and sha256
/// against the (verified) manifest, without decompressing: a first pass that refuses a
/// truncated or damaged bundle before anything is changed. `r` is positioned after the header.
pub fn verify_compressed<R: Read>(r: &mut R, m: &Manifest) -> Result<(), BundleError> {
    let mut buf = vec![0u8; CHUNK];
    for p in &m.payloads {
        let kind = p.kind.as_str();
        let mut hasher = Sha256::new();
        let mut left = p.compressed_size;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match r.read(&mut buf[..want]) {
                Ok(0) => return Err(BundleError::Truncated(kind)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BundleError::Read(e)),
            };
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        let actual = sha256_hex(&hasher.finalize());
        if actual != p.compressed_sha256 {
            return Err(BundleError::Payload {
                kind,
                problem: format!(
                    "damaged: sha256 {actual} of its bytes in the bundle, the manifest says {}",
                    p.compressed_sha256
                ),
            });
        }
    }
    Ok(())
}

/// Decompresses one payload from `r` (positioned at its start) into `out`, hashing as it
/// goes; fails unless exactly `compressed_size` bytes decode to `size` bytes with `sha256`.
/// `progress` gets the decompressed bytes written so far.
pub fn copy_payload<R: Read, W: Write>(
    r: &mut R,
    p: &Payload,
    out: &mut W,
    mut progress: impl FnMut(u64),
) -> Result<(), BundleError> {
    let kind = p.kind.as_str();
    let problem = |s: String| BundleError::Payload { kind, problem: s };
    let mut limited = CountingReader {
        inner: r.take(p.compressed_size),
        count: 0,
    };
    let mut decoder = zstd::stream::read::Decoder::new(&mut limited)
        .map_err(|e| problem(format!("cannot start decompressing: {e}")))?;
    // Hashing runs on a second thread, overlapped with decompressing and writing (as the
    // processes of a `zstd | dd` pipeline overlap); buffers go round between the two.
    let (to_hasher, hasher_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(HASH_QUEUE);
    let (to_reader, free_rx) = mpsc::sync_channel::<Vec<u8>>(HASH_QUEUE + 1);
    let (written, digest) = thread::scope(|scope| -> Result<(u64, String), BundleError> {
        let hasher = scope.spawn(move || {
            let mut h = Sha256::new();
            for (buf, n) in hasher_rx {
                h.update(&buf[..n]);
                // The reader may have stopped early; a closed channel is fine.
                let _ = to_reader.send(buf);
            }
            sha256_hex(&h.finalize())
        });
        let mut written: u64 = 0;
        let mut spare = (0..HASH_QUEUE + 1)
            .map(|_| vec![0u8; CHUNK])
            .collect::<Vec<_>>();
        let result = (|| loop {
            let mut buf = match spare.pop() {
                Some(b) => b,
                None => free_rx
                    .recv()
                    .map_err(|_| problem("the hashing thread stopped".into()))?,
            };
            let n = fill(&mut decoder, &mut buf)
                .map_err(|e| problem(format!("corrupt compressed data ({e})")))?;
            if n == 0 {
                return Ok(written);
            }
            written += n as u64;
            if written > p.size {
                return Err(problem(format!(
                    "decompresses to more than {} bytes",
                    p.size
                )));
            }
            out.write_all(&buf[..n])
                .map_err(|source| BundleError::Write { kind, source })?;
            progress(written);
            if to_hasher.send((buf, n)).is_err() {
                return Err(problem("the hashing thread stopped".into()));
            }
        })();
        drop(to_hasher);
        let digest = hasher
            .join()
            .map_err(|_| problem("the hashing thread panicked".into()))?;
        result.map(|w| (w, digest))
    })?;
    drop(decoder);
    if limited.count != p.compressed_size {
        return Err(BundleError::Truncated(kind));
    }
    if written != p.size {
        return Err(problem(format!(
            "{written} bytes, the manifest says {}",
            p.size
        )));
    }
    if digest != p.sha256 {
        return Err(problem(format!(
            "sha256 {digest}, the manifest says {}",
            p.sha256
        )));
    }
    Ok(())
}

/// Buffers in flight to the hashing thread.
const HASH_QUEUE: usize = 3;

/// Reads until `buf` is full or the end; the number of bytes read.
fn fill<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// One payload to put in a bundle.
pub struct PayloadInput<'a> {
    pub kind: PayloadKind,
    pub data: &'a [u8],
}

/// Writes a signed bundle. `manifest.payloads` and `key_id` are filled in here; payloads are
/// compressed with zstd `level` (multithreaded, deterministic).
pub fn write_bundle<W: Write>(
    out: &mut W,
    mut manifest: Manifest,
    inputs: &[PayloadInput],
    key: &SecretKey,
    level: i32,
) -> Result<Manifest, io::Error> {
    let mut compressed = Vec::new();
    manifest.payloads.clear();
    for input in inputs {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), level)?;
        enc.include_checksum(true)?;
        enc.multithread(std::thread::available_parallelism().map_or(1, |n| n.get() as u32))?;
        enc.write_all(input.data)?;
        let data = enc.finish()?;
        manifest.payloads.push(Payload {
            kind: input.kind,
            size: input.data.len() as u64,
            sha256: sha256_hex(&Sha256::digest(input.data)),
            compressed_size: data.len() as u64,
            compressed_sha256: sha256_hex(&Sha256::digest(&data)),
        });
        compressed.push(data);
    }
    manifest.key_id = key.id().to_string();
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?;
    let signature = key.sign_manifest(&manifest_bytes);
    out.write_all(MAGIC)?;
    out.write_all(&(manifest_bytes.len() as u32).to_le_bytes())?;
    out.write_all(&manifest_bytes)?;
    out.write_all(&64u32.to_le_bytes())?;
    out.write_all(&signature)?;
    for data in &compressed {
        out.write_all(data)?;
    }
    Ok(manifest)
}
