//! P6OS image builder: recipes to reproducible A/B disk images.

pub mod diag;
pub mod yamlcheck;
