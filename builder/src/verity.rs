//! Appends the dm-verity hash tree to a slot's filesystem image ([`p6os_layout::verity`] owns
//! the format): the image is zero-padded to whole blocks, hashed as it is read, and the tree
//! written after it. The slot payload (in images and bundles) is then filesystem + tree.

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use p6os_layout::verity::{padded_len, Params, TreeBuilder};

/// Pads `path` to whole blocks, appends its hash tree under `salt`, and returns the
/// parameters (the root hash for the kernel command line).
pub fn append_tree(path: &Path, salt: [u8; 32]) -> io::Result<Params> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    file.set_len(padded_len(len))?;
    let mut builder = TreeBuilder::new(salt);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => builder.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let tree = builder
        .finish()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    file.seek(SeekFrom::Start(tree.params.hash_offset()))?;
    file.write_all(&tree.bytes)?;
    file.sync_all()?;
    Ok(tree.params)
}
