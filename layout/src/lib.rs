//! The P6OS on-disk contract (v1), in one place: what the builder writes, the agent reads and
//! rewrites, bundles carry and the console reports.
//!
//! - [`slot`]: the two root slots and their filesystems;
//! - [`partition`]: partition labels and type GUIDs (Discoverable Partitions Specification);
//! - [`gpt`]: the GUID partition table as a value, its encoding and a strict parser;
//! - [`esp`]: paths on the ESP, `loader.conf`, boot entry text and the kernel command line;
//! - [`entry`]: boot entry file names with boot counters (`p6os-<ver>-<slot>+L-D.conf`);
//! - [`version`]: the one rule for image versions, and their order;
//! - [`manifest`]: the slot manifest (in the slot and beside its kernel on the ESP);
//! - [`verity`]: the dm-verity hash tree after a slot's filesystem, its parameters on the
//!   kernel command line, the device-mapper table.
//!
//! Architecture invariant: no I/O, no clocks, no environment. Bytes and text in, values out;
//! every parser here may be fed untrusted bytes and never panics (fuzzed in `fuzz/`).

pub mod entry;
pub mod esp;
pub mod gpt;
pub mod manifest;
pub mod partition;
pub mod slot;
pub mod verity;
pub mod version;

pub use entry::{Counter, EntryName};
pub use slot::{RootFs, Slot};
