//! dm-verity over a slot: the hash tree the builder appends to the slot filesystem, the
//! parameters the kernel command line carries, and the device-mapper table the agent loads.
//!
//! The format is the one `veritysetup format --no-superblock` writes and the kernel's
//! dm-verity reads (hash format 1), with parameters fixed the way RAUC fixes them: sha256,
//! 4096-byte data and hash blocks, a 32-byte salt. A slot partition holds
//!
//! ```text
//! 0                      filesystem, zero-padded to a whole number of 4096-byte blocks
//! data_blocks * 4096     hash tree: the top level first, level 0 (hashes of data blocks) last
//! ```
//!
//! Each digest is `sha256(salt || block)`; a hash block holds 128 digests, zero-filled after
//! the last one. The root hash is the digest of the top level's single block. The salt is
//! derived from the build inputs ([`salt_for`]), so images stay byte-reproducible.
//!
//! Pure: the caller feeds the data ([`TreeBuilder::update`]); no I/O here.

use sha2::{Digest, Sha256};

/// Data and hash block size.
pub const BLOCK: u64 = 4096;
const DIGEST: usize = 32;
/// Digests per hash block.
const FANOUT: u64 = BLOCK / DIGEST as u64;
/// The kernel command line parameter: `p6os.verity=<data blocks>:<salt hex>:<root hash hex>`.
pub const CMDLINE_KEY: &str = "p6os.verity";

/// What the kernel needs to check a slot: the protected size, the salt and the root hash.
/// The tree starts right after the data ([`Params::hash_offset`]). In manifests it is the
/// string of the command line's value (`"<data blocks>:<salt>:<root hash>"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub data_blocks: u64,
    pub salt: [u8; 32],
    pub root_hash: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerityError {
    #[error("{CMDLINE_KEY}={0:?}: expected <data blocks>:<64 hex salt>:<64 hex root hash>")]
    BadCmdline(String),
    #[error("{CMDLINE_KEY}: the data is empty")]
    Empty,
}

/// The salt of an image's slots: a digest of its build inputs (the recipe digest), so that two
/// builds of one recipe write the same tree and two recipes never share a salt.
pub fn salt_for(recipe_digest: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"p6os-verity-salt-v1\n");
    h.update(recipe_digest.as_bytes());
    h.finalize().into()
}

/// Bytes of the hash tree over `data_blocks` blocks (what follows the data in the slot).
pub fn tree_size(data_blocks: u64) -> u64 {
    level_blocks(data_blocks).iter().sum::<u64>() * BLOCK
}

/// Blocks of each level, level 0 (hashes of the data) first; the last has one block. Empty
/// for a single data block: the kernel then checks that block against the root hash itself.
fn level_blocks(data_blocks: u64) -> Vec<u64> {
    let mut levels = Vec::new();
    let mut below = data_blocks;
    while below > 1 {
        below = below.div_ceil(FANOUT);
        levels.push(below);
    }
    levels
}

/// `data` rounded up to whole blocks: what the slot holds before the tree.
pub fn padded_len(data_len: u64) -> u64 {
    data_len.div_ceil(BLOCK) * BLOCK
}

impl Params {
    /// Byte offset of the tree in the slot partition.
    pub fn hash_offset(&self) -> u64 {
        self.data_blocks * BLOCK
    }

    /// Bytes the slot needs: the data and its tree.
    pub fn total_size(&self) -> u64 {
        self.hash_offset() + tree_size(self.data_blocks)
    }

    /// `p6os.verity=...` for the kernel command line.
    pub fn cmdline(&self) -> String {
        format!("{CMDLINE_KEY}={}", self.value())
    }

    /// Reads the value of `p6os.verity=`.
    pub fn parse(value: &str) -> Result<Params, VerityError> {
        let bad = || VerityError::BadCmdline(value.chars().take(200).collect());
        let mut parts = value.split(':');
        let (Some(blocks), Some(salt), Some(root), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if blocks.is_empty() || !blocks.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let data_blocks: u64 = blocks.parse().map_err(|_| bad())?;
        // Block counts past this overflow byte offsets (and no disk is that large).
        if data_blocks == 0 || data_blocks > u64::MAX / BLOCK / 2 {
            return Err(bad());
        }
        Ok(Params {
            data_blocks,
            salt: unhex(salt).ok_or_else(bad)?,
            root_hash: unhex(root).ok_or_else(bad)?,
        })
    }

    /// The device-mapper table of the verity target over one device holding data and tree:
    /// `(sectors, parameters)`. Corruption is an I/O error for the reader (the kernel's
    /// default): the agent's mount or the slot's init fails, and boot counting falls back.
    pub fn table(&self, device: &str) -> (u64, String) {
        let sectors = self.data_blocks * (BLOCK / 512);
        let params = format!(
            "1 {device} {device} {BLOCK} {BLOCK} {} {} sha256 {} {}",
            self.data_blocks,
            // The hash start in hash blocks from the start of the hash device.
            self.data_blocks,
            hex(&self.root_hash),
            hex(&self.salt)
        );
        (sectors, params)
    }
}

impl Params {
    /// `<data blocks>:<salt hex>:<root hash hex>`: the value of `p6os.verity=`.
    pub fn value(&self) -> String {
        format!(
            "{}:{}:{}",
            self.data_blocks,
            hex(&self.salt),
            hex(&self.root_hash)
        )
    }
}

impl serde::Serialize for Params {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.value())
    }
}

impl<'de> serde::Deserialize<'de> for Params {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Params, D::Error> {
        let text = String::deserialize(d)?;
        Params::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Computes the tree while the data streams by, in pieces of any size.
pub struct TreeBuilder {
    salt: [u8; 32],
    /// Level 0: one digest per data block.
    level0: Vec<u8>,
    /// The unfinished data block.
    partial: Vec<u8>,
    blocks: u64,
}

/// The finished tree: the bytes to write after the data, and the parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    pub bytes: Vec<u8>,
    pub params: Params,
}

impl TreeBuilder {
    pub fn new(salt: [u8; 32]) -> TreeBuilder {
        TreeBuilder {
            salt,
            level0: Vec::new(),
            partial: Vec::with_capacity(BLOCK as usize),
            blocks: 0,
        }
    }

    /// Feeds the next bytes of data.
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.partial.is_empty() && bytes.len() >= BLOCK as usize {
                let (block, rest) = bytes.split_at(BLOCK as usize);
                self.push_block(block);
                bytes = rest;
                continue;
            }
            let take = (BLOCK as usize - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() == BLOCK as usize {
                let block = std::mem::take(&mut self.partial);
                self.push_block(&block);
                self.partial = block;
                self.partial.clear();
            }
        }
    }

    /// Feeds the digests of whole blocks that the caller hashed with [`block_digests`] (on
    /// several cores, say). Only between whole blocks: refused (`false`, nothing taken) while
    /// a partial block is pending or when `digests` is not whole digests.
    pub fn push_digests(&mut self, digests: &[u8]) -> bool {
        if !self.partial.is_empty() || !digests.len().is_multiple_of(DIGEST) {
            return false;
        }
        self.level0.extend_from_slice(digests);
        self.blocks += (digests.len() / DIGEST) as u64;
        true
    }

    fn push_block(&mut self, block: &[u8]) {
        let digest = salted(&self.salt, block);
        self.level0.extend_from_slice(&digest);
        self.blocks += 1;
    }

    /// Ends the data (a last partial block is zero-padded, as the slot holds it) and builds
    /// the upper levels.
    pub fn finish(mut self) -> Result<Tree, VerityError> {
        if !self.partial.is_empty() {
            let mut block = std::mem::take(&mut self.partial);
            block.resize(BLOCK as usize, 0);
            self.push_block(&block);
        }
        if self.blocks == 0 {
            return Err(VerityError::Empty);
        }
        if self.blocks == 1 {
            let root_hash: [u8; 32] = self.level0[..DIGEST].try_into().expect("one digest");
            return Ok(Tree {
                bytes: Vec::new(),
                params: Params {
                    data_blocks: 1,
                    salt: self.salt,
                    root_hash,
                },
            });
        }
        // Each level as blocks, level 0 first.
        let mut levels: Vec<Vec<u8>> = Vec::new();
        let mut digests = std::mem::take(&mut self.level0);
        loop {
            let level = into_blocks(digests);
            let blocks = level.len() / BLOCK as usize;
            let next: Vec<u8> = level
                .chunks(BLOCK as usize)
                .flat_map(|b| salted(&self.salt, b))
                .collect();
            levels.push(level);
            if blocks == 1 {
                let root_hash: [u8; 32] = next[..DIGEST].try_into().expect("one digest");
                let bytes = levels.into_iter().rev().flatten().collect();
                return Ok(Tree {
                    bytes,
                    params: Params {
                        data_blocks: self.blocks,
                        salt: self.salt,
                        root_hash,
                    },
                });
            }
            digests = next;
        }
    }
}

/// The level-0 digests of `data`'s whole blocks (a trailing partial block is left out), for
/// [`TreeBuilder::push_digests`].
pub fn block_digests(salt: &[u8; 32], data: &[u8]) -> Vec<u8> {
    data.chunks_exact(BLOCK as usize)
        .flat_map(|b| salted(salt, b))
        .collect()
}

/// Digests packed into hash blocks, the last one zero-filled.
fn into_blocks(mut digests: Vec<u8>) -> Vec<u8> {
    let len = (digests.len() as u64).div_ceil(BLOCK) * BLOCK;
    digests.resize(len as usize, 0);
    digests
}

fn salted(salt: &[u8; 32], block: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16).filter(|_| !c.is_ascii_uppercase());
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_of(data: &[u8], salt: [u8; 32]) -> Tree {
        let mut b = TreeBuilder::new(salt);
        b.update(data);
        b.finish().unwrap()
    }

    #[test]
    fn level_sizes_follow_the_kernel() {
        assert_eq!(level_blocks(1), Vec::<u64>::new());
        assert_eq!(level_blocks(2), vec![1]);
        assert_eq!(level_blocks(128), vec![1]);
        assert_eq!(level_blocks(129), vec![2, 1]);
        assert_eq!(level_blocks(128 * 128 + 1), vec![129, 2, 1]);
        // A 768 MiB slot: 6 MiB of level 0.
        assert_eq!(tree_size(196_608), (1536 + 12 + 1) * BLOCK);
    }

    #[test]
    fn pieces_of_any_size_give_the_same_tree() {
        let data: Vec<u8> = (0..(BLOCK * 300 + 17))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let salt = salt_for("sha256:abc");
        let whole = tree_of(&data, salt);
        for piece in [1, 100, 4095, 4096, 4097, 65536] {
            let mut b = TreeBuilder::new(salt);
            for chunk in data.chunks(piece) {
                b.update(chunk);
            }
            assert_eq!(b.finish().unwrap(), whole, "{piece}");
        }
        assert_eq!(whole.params.data_blocks, 301);
        assert_eq!(whole.bytes.len() as u64, tree_size(301));
        // Zero padding is what the slot holds: padding explicitly changes nothing.
        let mut padded = data.clone();
        padded.resize(padded_len(data.len() as u64) as usize, 0);
        assert_eq!(tree_of(&padded, salt), whole);
    }

    #[test]
    fn digests_hashed_elsewhere_give_the_same_tree() {
        let data: Vec<u8> = (0..(BLOCK * 300)).map(|i| (i * 13 % 251) as u8).collect();
        let salt = salt_for("x");
        let mut b = TreeBuilder::new(salt);
        let (first, rest) = data.split_at(BLOCK as usize * 100);
        assert!(b.push_digests(&block_digests(&salt, first)));
        b.update(&rest[..10]);
        // Not while a partial block is pending, and only whole digests.
        assert!(!b.push_digests(&block_digests(&salt, &rest[10..])));
        b.update(&rest[10..]);
        assert!(!b.push_digests(&[0; 31]));
        assert_eq!(b.finish().unwrap(), tree_of(&data, salt));
    }

    #[test]
    fn the_root_covers_every_byte_and_the_salt() {
        let data = vec![0x5au8; (BLOCK * 200) as usize];
        let salt = salt_for("one");
        let base = tree_of(&data, salt).params.root_hash;
        for at in [0, 4095, 4096 * 150 + 3, data.len() - 1] {
            let mut changed = data.clone();
            changed[at] ^= 1;
            assert_ne!(tree_of(&changed, salt).params.root_hash, base, "{at}");
        }
        assert_ne!(tree_of(&data, salt_for("two")).params.root_hash, base);
        assert_ne!(salt_for("one"), salt_for("two"));
    }

    #[test]
    fn top_level_first_and_its_hash_is_the_root() {
        let data = vec![1u8; (BLOCK * 129) as usize];
        let salt = [7u8; 32];
        let tree = tree_of(&data, salt);
        // Level 1 (one block) then level 0 (two blocks).
        assert_eq!(tree.bytes.len() as u64, 3 * BLOCK);
        let top = &tree.bytes[..BLOCK as usize];
        assert_eq!(salted(&salt, top), tree.params.root_hash);
        let level0_first = &tree.bytes[BLOCK as usize..2 * BLOCK as usize];
        assert_eq!(&top[..32], &salted(&salt, level0_first));
        assert_eq!(&level0_first[..32], &salted(&salt, &data[..BLOCK as usize]));
        // The last level-0 block holds one digest, then zeros.
        assert!(tree.bytes[(2 * BLOCK + 32) as usize..]
            .iter()
            .all(|&b| b == 0));
    }

    #[test]
    fn one_block_has_no_tree_and_nothing_is_refused() {
        let tree = tree_of(b"x", [0; 32]);
        assert!(tree.bytes.is_empty());
        let mut block = vec![0u8; BLOCK as usize];
        block[0] = b'x';
        assert_eq!(tree.params.root_hash, salted(&[0; 32], &block));
        assert_eq!(TreeBuilder::new([0; 32]).finish(), Err(VerityError::Empty));
    }

    #[test]
    fn the_cmdline_round_trips_and_refuses_what_is_not_exact() {
        let p = tree_of(&vec![3u8; 9000], salt_for("r")).params;
        let text = p.cmdline();
        let value = text.strip_prefix("p6os.verity=").unwrap();
        assert_eq!(Params::parse(value), Ok(p));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, format!("\"{value}\""));
        assert_eq!(serde_json::from_str::<Params>(&json).unwrap(), p);
        assert!(serde_json::from_str::<Params>("\"1:2:3\"").is_err());
        let salt = hex(&p.salt);
        let root = hex(&p.root_hash);
        for bad in [
            String::new(),
            format!("3:{salt}"),
            format!("3:{salt}:{root}:x"),
            format!("0:{salt}:{root}"),
            format!("+3:{salt}:{root}"),
            format!("3:{}:{root}", salt.to_uppercase()),
            format!("3:{}:{root}", &salt[1..]),
            format!("3:{salt}:{}g", &root[1..]),
            format!("99999999999999999999:{salt}:{root}"),
        ] {
            assert!(Params::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_table_names_the_device_twice_and_starts_the_tree_after_the_data() {
        let p = Params {
            data_blocks: 10,
            salt: [1; 32],
            root_hash: [2; 32],
        };
        let (sectors, table) = p.table("259:3");
        assert_eq!(sectors, 80);
        assert_eq!(
            table,
            format!(
                "1 259:3 259:3 4096 4096 10 10 sha256 {} {}",
                "02".repeat(32),
                "01".repeat(32)
            )
        );
        assert_eq!(p.hash_offset(), 40960);
        assert_eq!(p.total_size(), 40960 + 4096);
    }
}
