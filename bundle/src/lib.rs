//! P6OS update bundles, shared by the builder (which writes and signs them) and the agent
//! (which verifies and installs them): ed25519 keys (`keys`), the streaming file format with
//! its signed manifest (`format`), and the checks a device makes before it writes a byte
//! (`compat`). Also the detached signatures of site configuration documents (`configsig`),
//! made with the same keys under their own domain tag.
//!
//! Architecture invariant: no filesystem paths, devices or clocks here; readers and writers
//! are `Read`/`Write`.

pub mod compat;
pub mod configsig;
pub mod floor;
pub mod format;
pub mod keys;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;
