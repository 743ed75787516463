//! `/etc/p6os/modules.load`: kernel modules to load, one path per line, in dependency order.
//!
//! Pure: parsing and the `finit_module` flags; loading is in `sys`.

/// `MODULE_INIT_COMPRESSED_FILE` (linux/module.h): let the kernel decompress.
pub const MODULE_INIT_COMPRESSED_FILE: i32 = 4;

/// A line of the list that cannot name a module; reported, then skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadLine {
    #[error("line {line}: {path:?} is not a kernel module (.ko, .ko.xz, .ko.zst, .ko.gz)")]
    NotAModule { line: usize, path: String },
    #[error("line {line}: {path:?} must not contain `..`")]
    ParentDir { line: usize, path: String },
}

/// The modules to load (absolute paths, in order) and the lines that were skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleList {
    pub paths: Vec<String>,
    pub bad_lines: Vec<BadLine>,
}

/// Parses the list. Paths are relative to `/` (a leading `/` is accepted too); blank lines
/// and lines starting with `#` are ignored; surrounding whitespace is trimmed.
pub fn parse(text: &str) -> ModuleList {
    let mut list = ModuleList::default();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let entry = raw.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let relative = entry.trim_start_matches('/');
        if relative.split('/').any(|c| c == "..") {
            list.bad_lines.push(BadLine::ParentDir {
                line,
                path: entry.to_string(),
            });
            continue;
        }
        let file_name = relative.rsplit('/').next().unwrap_or(relative);
        if !is_module_file_name(file_name) {
            list.bad_lines.push(BadLine::NotAModule {
                line,
                path: entry.to_string(),
            });
            continue;
        }
        list.paths.push(format!("/{relative}"));
    }
    list
}

fn is_module_file_name(name: &str) -> bool {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|ext| name.len() > ext.len() && name.ends_with(ext))
}

/// Flags for `finit_module`: plain `.ko` files need none; compressed ones ask the kernel
/// to decompress (works only if it was built with CONFIG_MODULE_DECOMPRESS).
pub fn finit_flags(path: &str) -> i32 {
    if path.ends_with(".ko") {
        0
    } else {
        MODULE_INIT_COMPRESSED_FILE
    }
}

/// Module name for messages: file name without the extension.
pub fn module_name(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split_once(".ko").map_or(file, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "lib/modules/6.1.0-41-cloud-amd64/kernel";

    #[test]
    fn parses_list_in_order() {
        let text = format!(
            "# virtio disk\n{K}/drivers/virtio/virtio_ring.ko\n\n  {K}/drivers/virtio/virtio.ko  \n\
             \t# indented comment\n/{K}/fs/erofs/erofs.ko\n"
        );
        let list = parse(&text);
        assert_eq!(
            list.paths,
            vec![
                format!("/{K}/drivers/virtio/virtio_ring.ko"),
                format!("/{K}/drivers/virtio/virtio.ko"),
                format!("/{K}/fs/erofs/erofs.ko"),
            ]
        );
        assert!(list.bad_lines.is_empty());
    }

    #[test]
    fn empty_and_comment_only() {
        assert_eq!(parse(""), ModuleList::default());
        assert_eq!(parse("\n# nothing\n   \n"), ModuleList::default());
    }

    #[test]
    fn bad_lines_are_reported_and_skipped() {
        let list = parse("a/b.txt\n../etc/x.ko\nok.ko\n.ko\nlib/../x.ko\r\n");
        assert_eq!(list.paths, vec!["/ok.ko".to_string()]);
        assert_eq!(
            list.bad_lines,
            vec![
                BadLine::NotAModule {
                    line: 1,
                    path: "a/b.txt".into()
                },
                BadLine::ParentDir {
                    line: 2,
                    path: "../etc/x.ko".into()
                },
                BadLine::NotAModule {
                    line: 4,
                    path: ".ko".into()
                },
                BadLine::ParentDir {
                    line: 5,
                    path: "lib/../x.ko".into()
                },
            ]
        );
        assert_eq!(
            list.bad_lines[0].to_string(),
            "line 1: \"a/b.txt\" is not a kernel module (.ko, .ko.xz, .ko.zst, .ko.gz)"
        );
    }

    #[test]
    fn compressed_modules_get_the_flag() {
        let list = parse("m/a.ko\nm/b.ko.xz\nm/c.ko.zst\nm/d.ko.gz\n");
        assert_eq!(list.paths.len(), 4);
        let flags: Vec<i32> = list.paths.iter().map(|p| finit_flags(p)).collect();
        assert_eq!(flags, [0, 4, 4, 4]);
    }

    #[test]
    fn names() {
        assert_eq!(module_name("/lib/modules/x/virtio_blk.ko"), "virtio_blk");
        assert_eq!(module_name("/lib/modules/x/erofs.ko.xz"), "erofs");
        assert_eq!(module_name("plain"), "plain");
    }
}
