//! `/proc/self/mountinfo`: which paths are mount points.
//!
//! Pure: parses the text.

/// The mount points listed in mountinfo text, octal escapes (`\040`) decoded.
pub fn mount_points(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape)
        .collect()
}

/// The source (device) of the newest mount at `point`: the field after the filesystem type,
/// past the ` - ` separator.
pub fn source_of(text: &str, point: &str) -> Option<String> {
    text.lines()
        .filter(|line| line.split(' ').nth(4).map(unescape).as_deref() == Some(point))
        .filter_map(|line| {
            let (_, tail) = line.split_once(" - ")?;
            tail.split(' ').nth(1).map(unescape)
        })
        .next_back()
}

/// The mount points whose source is `source` (a device path), oldest first.
pub fn mounts_of(text: &str, source: &str) -> Vec<String> {
    text.lines()
        .filter(|line| {
            line.split_once(" - ")
                .and_then(|(_, tail)| tail.split(' ').nth(1))
                .map(unescape)
                .as_deref()
                == Some(source)
        })
        .filter_map(|line| line.split(' ').nth(4).map(unescape))
        .collect()
}

/// The mounts at or below any of `roots`, in the order to unmount them: newest first
/// (mountinfo lists mounts oldest first), so submounts go before their parents.
pub fn unmount_order(mount_points: &[String], roots: &[&str]) -> Vec<String> {
    mount_points
        .iter()
        .rev()
        .filter(|point| {
            roots.iter().any(|root| {
                point.as_str() == *root
                    || point
                        .strip_prefix(root)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
        })
        .cloned()
        .collect()
}

/// Decodes the kernel's `\ooo` escapes (space, tab, newline, backslash).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_of_a_mount_point() {
        let text = "22 1 0:5 / /run rw - tmpfs tmpfs rw\n\
                    30 22 254:4 / /run/p6os/state rw,noatime - ext4 /dev/vda4 rw\n\
                    31 22 254:1 / /run/p6os/state rw shared:3 - vfat /dev/vdb1 rw\n";
        assert_eq!(
            source_of(text, "/run/p6os/state").as_deref(),
            Some("/dev/vdb1")
        );
        assert_eq!(source_of(text, "/run").as_deref(), Some("tmpfs"));
        assert_eq!(source_of(text, "/nope"), None);
    }

    #[test]
    fn mounts_of_a_device() {
        let text = "22 1 0:5 / /run rw - tmpfs tmpfs rw\n\
                    30 22 254:1 / /boot\\040efi rw - vfat /dev/vda1 rw\n\
                    31 22 254:1 / /run/p6os/esp rw shared:3 - vfat /dev/vda1 rw\n\
                    32 22 254:4 / /run/p6os/state rw - ext4 /dev/vda4 rw\n";
        assert_eq!(mounts_of(text, "/dev/vda1"), ["/boot efi", "/run/p6os/esp"]);
        assert!(mounts_of(text, "/dev/vda2").is_empty());
    }

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime - rootfs rootfs rw
23 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:2 - proc proc rw
24 22 0:5 / /dev rw,nosuid shared:3 - devtmpfs devtmpfs rw,size=4k,mode=755
30 22 0:30 / /mnt/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn lists_mount_points() {
        assert_eq!(
            mount_points(SAMPLE),
            vec!["/", "/proc", "/dev", "/mnt/with space"]
        );
    }

    #[test]
    fn unmount_order_puts_submounts_first() {
        let points: Vec<String> = [
            "/",
            "/etc",
            "/var",
            "/variable",
            "/var/lib/kubelet/pods/x/volumes/a",
            "/etc/hosts",
            "/run",
            "/var/lib/kubelet/pods/x/volumes/a",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            unmount_order(&points, &["/etc", "/var"]),
            vec![
                "/var/lib/kubelet/pods/x/volumes/a",
                "/etc/hosts",
                "/var/lib/kubelet/pods/x/volumes/a",
                "/var",
                "/etc",
            ]
        );
        assert!(unmount_order(&[], &["/etc"]).is_empty());
    }

    #[test]
    fn tolerates_junk() {
        assert!(mount_points("").is_empty());
        assert!(mount_points("short line\n").is_empty());
        assert_eq!(unescape("a\\"), "a\\");
        assert_eq!(unescape("a\\04"), "a\\04");
        assert_eq!(unescape("a\\999"), "a\\999");
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("\\777"), "\\777");
    }
}
