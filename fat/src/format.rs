//! Creating a new volume: [`format`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, Write};

use super::names::{fold, lfn_entries, plain_short_name, short_name_for};
use super::{
    boot_sector, dot_entries, fsinfo_sector, short_entry, split_path, write_at, FatError, FatFile,
    FormatOptions, Geometry, ATTR_ARCHIVE, ATTR_DIRECTORY, ATTR_VOLUME_ID, DIR_ENTRY_SIZE, FAT_EOC,
    MAX_DIR_ENTRIES, MEDIA, SECTOR_SIZE,
};

/// A directory of the tree being built; children keyed by case-folded name (sorted, unique).
#[derive(Default)]
struct DirNode<'a> {
    children: BTreeMap<String, Node<'a>>,
}

enum Node<'a> {
    Dir { name: &'a str, dir: DirNode<'a> },
    File { name: &'a str, data: &'a [u8] },
}

impl Node<'_> {
    fn name(&self) -> &str {
        match self {
            Node::Dir { name, .. } | Node::File { name, .. } => name,
        }
    }
}

/// Where everything goes: cluster runs for the FAT, and the bytes to write.
struct Plan<'a> {
    geo: Geometry,
    /// Next free cluster.
    next: u64,
    /// (first cluster, cluster count) of every chain.
    chains: Vec<(u32, u32)>,
    /// (first cluster, bytes) of every directory and file, in allocation order.
    writes: Vec<(u32, Blob<'a>)>,
    /// The root directory's volume label entry, first in it.
    label: Option<[u8; 11]>,
}

enum Blob<'a> {
    Owned(Vec<u8>),
    Borrowed(&'a [u8]),
}

impl Plan<'_> {
    fn reserve(&mut self, clusters: u64) -> Result<u32, FatError> {
        let limit = u64::from(self.geo.cluster_count) + 2;
        if self.next + clusters > limit {
            return Err(FatError::NoSpace {
                needed: self.next + clusters - 2,
                free: u64::from(self.geo.cluster_count),
            });
        }
        let first = self.next as u32;
        self.next += clusters;
        self.chains.push((first, clusters as u32));
        Ok(first)
    }
}

/// Formats FAT32 over `size` bytes starting at byte `offset` of `dev` and writes `files`, creating
/// parent directories implicitly.
///
/// Deterministic: the same inputs give the same bytes. Only non-zero data is written (boot
/// sectors, FSInfo, the used part of both FATs, directories, file contents): the caller must
/// guarantee that the region reads as zeros, e.g. a freshly created sparse image file.
pub fn format(
    dev: &mut (impl Write + Seek),
    offset: u64,
    size: u64,
    opts: &FormatOptions,
    files: &[FatFile],
) -> Result<(), FatError> {
    if !offset.is_multiple_of(SECTOR_SIZE) {
        return Err(FatError::Misaligned { offset });
    }
    let geo = Geometry::for_new_volume(size)?;
    let tree = build_tree(files)?;

    let mut plan = Plan {
        geo,
        next: 2,
        chains: Vec::new(),
        writes: Vec::new(),
        label: opts.label.as_ref().map(|l| *l.as_bytes()),
    };
    let root = lay_out(&tree, "/", None, &mut plan)?;
    debug_assert_eq!(root, geo.root_cluster);

    // Hidden sectors is informational; saturate for offsets beyond 2 TiB.
    let hidden = u32::try_from(offset / SECTOR_SIZE).unwrap_or(u32::MAX);
    let boot = boot_sector(&geo, hidden, opts);
    let used = plan.next - 2;
    let free = u64::from(geo.cluster_count) - used;
    let next_free = if free == 0 {
        0xFFFF_FFFF
    } else {
        (plan.next - 1).max(2) as u32
    };
    let fsinfo = fsinfo_sector(free as u32, next_free);
    for base in [0, geo.backup_boot_sector] {
        write_at(dev, offset + geo.sector_pos(base), &boot, "boot sector")?;
        write_at(
            dev,
            offset + geo.sector_pos(base + 1),
            &fsinfo,
            "fsinfo sector",
        )?;
    }

    let mut fat = vec![0u32; plan.next as usize];
    fat[0] = 0x0FFF_FF00 | u32::from(MEDIA);
    fat[1] = FAT_EOC;
    for &(first, count) in &plan.chains {
        for c in first..first + count - 1 {
            fat[c as usize] = c + 1;
        }
        fat[(first + count - 1) as usize] = FAT_EOC;
    }
    let fat_bytes: Vec<u8> = fat.iter().flat_map(|v| v.to_le_bytes()).collect();
    for n in 0..geo.num_fats {
        write_at(
            dev,
            offset + geo.fat_pos(n),
            &fat_bytes,
            "file allocation table",
        )?;
    }

    plan.writes.sort_by_key(|(cluster, _)| *cluster);
    for (cluster, blob) in &plan.writes {
        let bytes = match blob {
            Blob::Owned(v) => v.as_slice(),
            Blob::Borrowed(s) => s,
        };
        write_at(
            dev,
            offset + geo.cluster_pos(*cluster),
            bytes,
            "cluster data",
        )?;
    }
    dev.flush()
        .map_err(super::io_err("flushing the formatted volume"))?;
    Ok(())
}

fn build_tree(files: &[FatFile]) -> Result<DirNode<'_>, FatError> {
    let mut root = DirNode::default();
    for file in files {
        let comps = split_path(&file.path)?;
        let Some((name, parents)) = comps.split_last() else {
            return Err(FatError::IsADirectory {
                path: file.path.clone(),
            });
        };
        if file.data.len() as u64 > u64::from(u32::MAX) {
            return Err(FatError::FileTooLarge {
                path: file.path.clone(),
                size: file.data.len() as u64,
            });
        }
        let mut dir = &mut root;
        for (i, comp) in parents.iter().enumerate() {
            let node = dir.children.entry(fold(comp)).or_insert_with(|| Node::Dir {
                name: comp,
                dir: DirNode::default(),
            });
            dir = match node {
                Node::Dir { dir, .. } => dir,
                Node::File { .. } => {
                    return Err(FatError::NotADirectory {
                        path: format!("/{}", parents[..=i].join("/")),
                    })
                }
            };
        }
        match dir.children.get(&fold(name)) {
            Some(Node::File { .. }) => {
                return Err(FatError::DuplicatePath {
                    path: file.path.clone(),
                })
            }
            Some(Node::Dir { .. }) => {
                return Err(FatError::IsADirectory {
                    path: file.path.clone(),
                })
            }
            None => {}
        }
        dir.children.insert(
            fold(name),
            Node::File {
                name,
                data: &file.data,
            },
        );
    }
    Ok(root)
}

/// Allocates clusters for `dir` (first) and then its children in sorted order, recursing into
/// subdirectories (pre-order), and queues the directory's bytes. Returns the directory's cluster.
fn lay_out<'a>(
    dir: &DirNode<'a>,
    path: &str,
    parent: Option<u32>,
    plan: &mut Plan<'a>,
) -> Result<u32, FatError> {
    let geo = plan.geo;
    // Short names: pure 8.3 names first, so generated aliases never collide with them.
    let mut taken: BTreeSet<[u8; 11]> = dir
        .children
        .values()
        .filter_map(|n| plain_short_name(n.name()))
        .collect();
    let mut named = Vec::with_capacity(dir.children.len());
    // `.` and `..` in a subdirectory; the volume label entry, if any, in the root.
    let label = plan.label.filter(|_| parent.is_none());
    let mut slots = if parent.is_some() {
        2
    } else {
        usize::from(label.is_some())
    };
    for node in dir.children.values() {
        let name = node.name();
        let (short, lfn) = match plain_short_name(name) {
            Some(short) => (short, Vec::new()),
            None => {
                let short = short_name_for(name, |c| taken.contains(c))?;
                taken.insert(short);
                (short, lfn_entries(name, &short))
            }
        };
        slots += lfn.len() + 1;
        named.push((node, short, lfn));
    }
    if slots > MAX_DIR_ENTRIES {
        return Err(FatError::DirectoryFull {
            path: path.to_string(),
        });
    }
    let bytes = (slots * DIR_ENTRY_SIZE) as u64;
    let clusters = geo.clusters_for(bytes).max(1);
    let own = plan.reserve(clusters)?;

    let mut data = Vec::with_capacity((clusters * geo.cluster_bytes()) as usize);
    if let Some(parent) = parent {
        for e in dot_entries(own, parent) {
            data.extend_from_slice(&e);
        }
    }
    if let Some(label) = label {
        data.extend_from_slice(&short_entry(&label, ATTR_VOLUME_ID, 0, 0));
    }
    for (node, short, lfn) in named {
        for e in &lfn {
            data.extend_from_slice(e);
        }
        let (attr, first, size) = match node {
            Node::File { data: content, .. } => {
                let first = if content.is_empty() {
                    0
                } else {
                    let first = plan.reserve(geo.clusters_for(content.len() as u64))?;
                    plan.writes.push((first, Blob::Borrowed(content)));
                    first
                };
                (ATTR_ARCHIVE, first, content.len() as u32)
            }
            Node::Dir { name, dir: sub } => {
                let child_path = if path == "/" {
                    format!("/{name}")
                } else {
                    format!("{path}/{name}")
                };
                // `..` of a directory in the root points to cluster 0.
                let dotdot = if parent.is_some() { own } else { 0 };
                let first = lay_out(sub, &child_path, Some(dotdot), plan)?;
                (ATTR_DIRECTORY, first, 0)
            }
        };
        data.extend_from_slice(&short_entry(&short, attr, first, size));
    }
    data.resize((clusters * geo.cluster_bytes()) as usize, 0);
    plan.writes.push((own, Blob::Owned(data)));
    Ok(own)
}
