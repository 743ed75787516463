//! P6OS user-facing configuration, shared by the builder (`p6os validate`, `p6os config inject`)
//! and the agent (first boot): strict YAML loading with positions, and the checked types.

pub mod diag;
pub mod health;
pub mod size;
pub mod unattended;
pub mod yamlcheck;
