//! A ustar archive of in-memory files (regular files only, names under 100 bytes), as
//! GNU and BSD tar read it. Pure.

const BLOCK: usize = 512;

/// Appends one file to `out`.
pub fn append(out: &mut Vec<u8>, name: &str, data: &[u8], mtime: u64) {
    let mut h = [0u8; BLOCK];
    let name = name.as_bytes();
    let n = name.len().min(99);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], data.len() as u64);
    octal(&mut h[136..148], mtime);
    h[148..156].copy_from_slice(b"        ");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len() + padding(data.len()), 0);
}

/// The end of the archive: two zero blocks.
pub fn finish(out: &mut Vec<u8>) {
    out.resize(out.len() + 2 * BLOCK, 0);
}

fn padding(len: usize) -> usize {
    (BLOCK - len % BLOCK) % BLOCK
}

/// Zero-padded octal filling all but the last byte, which is NUL. Values too large for the
/// field are written as its largest value (sizes here are megabytes; times are 33-bit).
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let max = (1u64 << (3 * digits as u32)) - 1;
    let text = format!("{:0width$o}", value.min(max), width = digits);
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn the_tar_crate_reads_what_is_written() {
        let mut out = Vec::new();
        append(&mut out, "manifest.json", b"{}", 1_700_000_000);
        append(&mut out, "kernel/kmsg.txt", &[b'x'; 1000], 1);
        append(&mut out, "empty", b"", 1);
        finish(&mut out);
        assert_eq!(out.len() % BLOCK, 0);
        let mut archive = ::tar::Archive::new(&out[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut e = entry.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            seen.push((name, data.len(), e.header().mtime().unwrap()));
        }
        assert_eq!(
            seen,
            [
                ("manifest.json".to_string(), 2, 1_700_000_000),
                ("kernel/kmsg.txt".to_string(), 1000, 1),
                ("empty".to_string(), 0, 1),
            ]
        );
    }
}
