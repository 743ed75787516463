//! Appends the dm-verity hash tree to a slot's filesystem image ([`p6os_layout::verity`] owns
//! the format): the image is zero-padded to whole blocks, hashed as it is read, and the tree
//! written after it. The slot payload (in images and bundles) is then filesystem + tree.

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use p6os_layout::verity::{block_digests, padded_len, Params, TreeBuilder, BLOCK};

/// Pads `path` to whole blocks, appends its hash tree under `salt`, and returns the
/// parameters (the root hash for the kernel command line).
pub fn append_tree(path: &Path, salt: [u8; 32]) -> io::Result<Params> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    file.set_len(padded_len(len))?;
    let mut builder = TreeBuilder::new(salt);
    // Level 0 (every block of the filesystem: nearly all the work) hashed on every core, in
    // order: each piece read is split between the threads.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = read_full(&mut file, &mut buf)?;
        if n == 0 {
            break;
        }
        let piece = &buf[..n];
        let whole = n - n % BLOCK as usize;
        let per_thread = (whole / BLOCK as usize).div_ceil(threads) * BLOCK as usize;
        let digests: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let handles: Vec<_> = piece[..whole]
                .chunks(per_thread.max(BLOCK as usize))
                .map(|part| scope.spawn(move || block_digests(&salt, part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("hashing does not panic"))
                .collect()
        });
        for d in &digests {
            // Refused only after a partial block, which a padded file has only at its end.
            if !builder.push_digests(d) {
                return Err(io::Error::other("the file changed while its tree was made"));
            }
        }
        builder.update(&piece[whole..]);
    }
    let tree = builder
        .finish()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    file.seek(SeekFrom::Start(tree.params.hash_offset()))?;
    file.write_all(&tree.bytes)?;
    file.sync_all()?;
    Ok(tree.params)
}

/// Reads until `buf` is full or the input ends; the bytes read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashed on several threads, the tree is the one hashed in one stream.
    #[test]
    fn the_appended_tree_is_the_streamed_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs.img");
        // Not a whole number of blocks, and more than one read.
        let data: Vec<u8> = (0..(9 << 20) + 1234u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let salt = p6os_layout::verity::salt_for("t");
        let params = append_tree(&path, salt).unwrap();
        let mut expected = TreeBuilder::new(salt);
        expected.update(&data);
        let expected = expected.finish().unwrap();
        assert_eq!(params, expected.params);
        let written = std::fs::read(&path).unwrap();
        assert_eq!(
            &written[params.hash_offset() as usize..],
            &expected.bytes[..]
        );
        assert!(written[data.len()..params.hash_offset() as usize]
            .iter()
            .all(|&b| b == 0));
    }
}
