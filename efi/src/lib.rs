//! EFI binaries for the builder's verified boot: PE32+ headers read strictly ([`pe`]), unified
//! kernel images on systemd-stub ([`uki`]), and Authenticode signatures for Secure Boot
//! ([`authenticode`]), all byte-reproducible.
//!
//! Architecture invariant: no I/O, no clock, no randomness in what is written; bytes in,
//! bytes out. Parsers never panic on untrusted input (the `pe` fuzz target).

#[cfg(feature = "sign")]
pub mod authenticode;
pub mod pe;
#[doc(hidden)]
pub mod testing;
pub mod uki;

#[derive(Debug, thiserror::Error)]
pub enum EfiError {
    #[error("not a PE32+ image: {0}")]
    NotPe(&'static str),
    #[error("the file ends before offset {0:#x}")]
    Truncated(usize),
    #[error("not a systemd-stub to build on: {0}")]
    NotStub(String),
    #[error("it is signed already")]
    AlreadySigned,
    #[error("{0} is too large for a PE image")]
    TooLarge(&'static str),
    #[error("the signing key cannot be used: {0}")]
    Key(String),
    #[error("the certificate cannot be used: {0}")]
    Certificate(String),
}
