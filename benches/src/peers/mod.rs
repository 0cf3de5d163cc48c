//! The peer systems tokendb is compared with, one module each.
//!
//! Each module loads the [`crate::dataset::Dataset`] into its system and makes the
//! [`crate::harness::Op`] workers the harness drives: every worker owns its own connection,
//! transaction or handle, and picks keys with the generator the harness gives it. A lookup of a key
//! that should be there and is not is an error, so a broken load cannot pass for a fast one.

pub mod postgres;
pub mod redb_raw;
pub mod redis;
pub mod sqlite;
