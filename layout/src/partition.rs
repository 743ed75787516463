//! Partition labels and type GUIDs of a P6OS disk (GPT, Discoverable Partitions Specification).
//!
//! | # | label         | type                      | content                               |
//! |---|---------------|---------------------------|---------------------------------------|
//! | 1 | `p6os-esp`    | EFI System                | FAT32: systemd-boot, entries, kernels |
//! | 2 | `p6os-root-a` | root x86-64               | read-only slot A                      |
//! | 3 | `p6os-root-b` | root x86-64               | read-only slot B                      |
//! | 4 | `p6os-state`  | variable data (`/var`)    | ext4: overlays, agent state           |

use uuid::Uuid as Guid;

pub const ESP_LABEL: &str = "p6os-esp";
pub const ROOT_A_LABEL: &str = "p6os-root-a";
pub const ROOT_B_LABEL: &str = "p6os-root-b";
pub const STATE_LABEL: &str = "p6os-state";

/// EFI System Partition.
pub const TYPE_ESP: Guid = Guid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B);
/// Discoverable Partitions Specification: root, x86-64.
pub const TYPE_ROOT_X86_64: Guid = Guid::from_u128(0x4F68BCE3_E8CD_4DB1_96E7_FBCAF984B709);
/// Discoverable Partitions Specification: variable data (`/var`).
pub const TYPE_VAR: Guid = Guid::from_u128(0x4D21B016_B534_45C2_A9FB_5C16E091FD2D);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_guids_print_as_the_specification_writes_them() {
        assert_eq!(TYPE_ESP.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_eq!(
            TYPE_ROOT_X86_64.to_string(),
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
        );
        assert_eq!(TYPE_VAR.to_string(), "4d21b016-b534-45c2-a9fb-5c16e091fd2d");
    }
}
