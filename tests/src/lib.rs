//! Shared helpers for tokendb's integration tests and the helper processes they drive.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod integrity;
pub mod place;
pub mod proxy;
