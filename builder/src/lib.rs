//! P6OS image builder: recipes to reproducible A/B disk images.

pub mod bootentry;
pub mod diag;
pub mod fat;
pub mod fetch;
pub mod gpt;
pub mod image;
pub mod initramfs;
pub mod inspect;
pub mod kmod;
pub mod manifest;
pub mod recipe;
pub mod rootfs;
pub mod size;
pub mod statefs;
pub mod tree;
pub mod yamlcheck;
