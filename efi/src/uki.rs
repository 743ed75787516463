//! Unified kernel images on systemd-stub (Debian's `systemd-boot-efi`, 252): the stub with
//! `.osrel`, `.cmdline`, `.linux` and `.initrd` sections added after its own, the way
//! systemd's `ukify` adds them, in Rust (no objcopy), byte-reproducibly.
//!
//! The stub's COFF symbol table (after its last section) is cut off first: firmware hashes
//! the bytes after the sections as one block, so a table left between the stub's sections and
//! ours would make its Authenticode digest differ from the signer's.

use crate::pe::{put_u16, put_u32, u32_at, Layout, SECTION_HEADER};
use crate::EfiError;

/// `IMAGE_SCN_MEM_READ | IMAGE_SCN_CNT_INITIALIZED_DATA`.
const DATA: u32 = 0x4000_0040;
/// `IMAGE_SCN_MEM_READ | IMAGE_SCN_CNT_CODE` (ukify marks `.linux` so).
const CODE: u32 = 0x4000_0020;

/// What goes into the image, in the stub's section order.
pub struct Parts<'a> {
    /// os-release text (`ID=`, `VERSION_ID=`, `PRETTY_NAME=`...).
    pub os_release: &'a str,
    /// The kernel command line: under Secure Boot the stub ignores any other.
    pub cmdline: &'a str,
    pub kernel: &'a [u8],
    pub initrd: &'a [u8],
}

fn align(v: u64, to: u32) -> u64 {
    v.div_ceil(to as u64) * to as u64
}

/// The stub with `parts` appended as sections; unsigned, checksum zero.
pub fn assemble(stub: &[u8], parts: &Parts) -> Result<Vec<u8>, EfiError> {
    let layout = Layout::parse(stub)?;
    if layout.is_signed() {
        return Err(EfiError::AlreadySigned);
    }
    for name in [".osrel", ".cmdline", ".linux", ".initrd"] {
        if layout.section(name).is_some() {
            return Err(EfiError::NotStub(format!(
                "it has a {name} section already"
            )));
        }
    }
    let mut raw_end = layout.size_of_headers as u64;
    let mut virtual_end = 0u64;
    for s in &layout.sections {
        raw_end = raw_end.max(s.raw_offset as u64 + s.raw_size as u64);
        virtual_end =
            virtual_end.max(s.virtual_address as u64 + s.virtual_size.max(s.raw_size) as u64);
    }
    let mut out = stub[..raw_end as usize].to_vec();
    // No symbol table any more (PointerToSymbolTable, NumberOfSymbols).
    put_u32(&mut out, layout.coff + 8, 0);
    put_u32(&mut out, layout.coff + 12, 0);
    let mut count = layout.sections.len();
    let mut initialized = u32_at(&out, layout.optional + 8)? as u64;
    let sections: [(&str, &[u8], u32); 4] = [
        (".osrel", parts.os_release.as_bytes(), DATA),
        (".cmdline", parts.cmdline.as_bytes(), DATA),
        (".linux", parts.kernel, CODE),
        (".initrd", parts.initrd, DATA),
    ];
    for (name, data, characteristics) in sections {
        let header = layout.section_table + count * SECTION_HEADER;
        if header + SECTION_HEADER > layout.size_of_headers
            || out[header..header + SECTION_HEADER].iter().any(|&b| b != 0)
        {
            return Err(EfiError::NotStub(format!(
                "no free section header for {name} (headers end at {:#x})",
                layout.size_of_headers
            )));
        }
        let virtual_address = align(virtual_end, layout.section_alignment);
        let raw_offset = align(out.len() as u64, layout.file_alignment);
        let raw_size = align(data.len() as u64, layout.file_alignment);
        if virtual_address + raw_size > u32::MAX as u64 || raw_offset + raw_size > u32::MAX as u64 {
            return Err(EfiError::TooLarge(name));
        }
        out.resize(raw_offset as usize, 0);
        out.extend_from_slice(data);
        out.resize((raw_offset + raw_size) as usize, 0);
        let h = &mut out[header..header + SECTION_HEADER];
        h[..name.len()].copy_from_slice(name.as_bytes());
        // The stub reads exactly VirtualSize bytes.
        put_u32(h, 8, data.len() as u32);
        put_u32(h, 12, virtual_address as u32);
        put_u32(h, 16, raw_size as u32);
        put_u32(h, 20, raw_offset as u32);
        put_u32(h, 36, characteristics);
        virtual_end = virtual_address + data.len() as u64;
        initialized += data.len() as u64;
        count += 1;
    }
    put_u16(&mut out, layout.coff + 2, count as u16);
    put_u32(
        &mut out,
        layout.optional + 8,
        initialized.min(u32::MAX as u64) as u32,
    );
    // SizeOfImage.
    put_u32(
        &mut out,
        layout.optional + 56,
        align(virtual_end, layout.section_alignment) as u32,
    );
    // UEFI does not check the checksum, and Authenticode leaves it out.
    put_u32(&mut out, layout.checksum, 0);
    Ok(out)
}

/// os-release text for a slot's image: `ID`, `VERSION_ID`, `IMAGE_ID`, `IMAGE_VERSION`,
/// `PRETTY_NAME` (values from the checked recipe: versions and names of the contract's rules).
pub fn os_release(name: &str, version: &str) -> String {
    format!(
        "ID=p6os\nNAME=\"P6OS\"\nPRETTY_NAME=\"P6OS {name} {version}\"\nIMAGE_ID={name}\n\
         IMAGE_VERSION={version}\nVERSION_ID={version}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pe::section_data;
    use crate::testing::tiny_pe;

    #[test]
    fn sections_follow_the_stubs_aligned_and_exact() {
        let stub = tiny_pe(&[(".text", 0x300), (".sbat", 0x20)], 0x1000, 0x200);
        let parts = Parts {
            os_release: "ID=p6os\n",
            cmdline: "ro quiet",
            kernel: &[0xaa; 0x1234],
            initrd: &[0xbb; 7],
        };
        let uki = assemble(&stub, &parts).unwrap();
        let l = Layout::parse(&uki).unwrap();
        let names: Vec<&str> = l.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [".text", ".sbat", ".osrel", ".cmdline", ".linux", ".initrd"]
        );
        for pair in l.sections.windows(2) {
            assert!(pair[1].virtual_address >= pair[0].virtual_address + pair[0].virtual_size);
            assert!(pair[1].raw_offset >= pair[0].raw_offset + pair[0].raw_size);
        }
        for s in &l.sections[2..] {
            assert_eq!(s.virtual_address % 0x1000, 0);
            assert_eq!(s.raw_offset % 0x200, 0);
        }
        assert_eq!(
            section_data(&uki, ".cmdline").unwrap().unwrap(),
            b"ro quiet"
        );
        assert_eq!(section_data(&uki, ".initrd").unwrap().unwrap(), [0xbb; 7]);
        assert_eq!(l.section(".linux").unwrap().virtual_size, 0x1234);
        let last = l.sections.last().unwrap();
        let size_of_image = u32_at(&uki, l.optional + 56).unwrap();
        assert_eq!(
            size_of_image as u64,
            align((last.virtual_address + last.virtual_size) as u64, 0x1000)
        );
        // The same inputs, the same bytes.
        assert_eq!(assemble(&stub, &parts).unwrap(), uki);
    }

    #[test]
    fn a_uki_or_a_signed_file_is_not_a_stub() {
        let stub = tiny_pe(&[(".text", 0x300)], 0x1000, 0x200);
        let parts = Parts {
            os_release: "",
            cmdline: "",
            kernel: b"k",
            initrd: b"i",
        };
        let uki = assemble(&stub, &parts).unwrap();
        assert!(matches!(assemble(&uki, &parts), Err(EfiError::NotStub(_))));
        assert!(matches!(
            assemble(b"MZ not really", &parts),
            Err(EfiError::Truncated(_) | EfiError::NotPe(_))
        ));
    }
}
