//! P6OS image builder: recipes to reproducible A/B disk images.

pub use p6os_config::{diag, size, yamlcheck};

pub mod bootentry;
pub mod bundle;
pub mod cache;
pub mod configdrive;
pub mod esp;
pub use p6os_fat as fat;
pub mod fetch;
pub mod flash;
pub mod gpt;
pub mod image;
pub mod initramfs;
pub mod inject;
pub mod inspect;
pub mod kmod;
pub mod lock;
pub mod manifest;
pub mod outputs;
pub mod progress;
pub mod recipe;
pub mod rootfs;
pub mod secureboot;
pub mod site;
pub mod statefs;
pub mod tree;
pub mod units;
pub mod verity;
