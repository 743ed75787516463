//! Small PE32+ images for tests and fuzz seeds: headers with room for more sections, and the
//! given sections filled with their index.

use crate::pe::{put_u16, put_u32};

/// A PE32+ EFI application with `sections` (name, raw size), laid out like systemd's stubs.
pub fn tiny_pe(sections: &[(&str, u32)], section_alignment: u32, file_alignment: u32) -> Vec<u8> {
    let size_of_headers = 0x400u32;
    let mut d = vec![0u8; size_of_headers as usize];
    d[0..2].copy_from_slice(b"MZ");
    put_u32(&mut d, 0x3c, 0x40);
    d[0x40..0x44].copy_from_slice(b"PE\0\0");
    let coff = 0x44;
    put_u16(&mut d, coff, 0x8664);
    put_u16(&mut d, coff + 2, sections.len() as u16);
    put_u16(&mut d, coff + 16, 0xf0);
    let opt = coff + 20;
    put_u16(&mut d, opt, 0x20b);
    put_u32(&mut d, opt + 32, section_alignment);
    put_u32(&mut d, opt + 36, file_alignment);
    put_u32(&mut d, opt + 60, size_of_headers);
    put_u16(&mut d, opt + 68, 10);
    put_u32(&mut d, opt + 108, 16);
    let table = opt + 0xf0;
    let mut va = section_alignment;
    for (i, (name, size)) in sections.iter().enumerate() {
        let raw = d.len() as u32;
        let raw_size = size.div_ceil(file_alignment) * file_alignment;
        d.resize((raw + raw_size) as usize, i as u8 + 1);
        let h = table + 40 * i;
        d[h..h + name.len()].copy_from_slice(name.as_bytes());
        put_u32(&mut d, h + 8, *size);
        put_u32(&mut d, h + 12, va);
        put_u32(&mut d, h + 16, raw_size);
        put_u32(&mut d, h + 20, raw);
        put_u32(&mut d, h + 36, 0x4000_0040);
        va += size.div_ceil(section_alignment) * section_alignment;
    }
    put_u32(&mut d, opt + 56, va);
    d
}
