//! P6OS on-disk contract.
