//! # tokendb
//!
//! An embedded token store for OAuth 2.0 / OpenID Connect authorization servers: refresh tokens
//! and opaque access tokens, kept encrypted at rest in a single [redb](https://docs.rs/redb) file.
//!
//! * tokens are stored only under a keyed BLAKE3 hash of their secret; subjects, client ids,
//!   scopes and claims are sealed with XChaCha20-Poly1305 under data keys wrapped by your master
//!   key;
//! * every refresh token belongs to a **family** (one login's grant lineage): rotation is one
//!   atomic step, presenting an already-rotated token revokes the whole family, and an optional
//!   grace period answers a retry with the same successor;
//! * lifetimes are indexed: an absolute deadline that rotation never extends and an idle
//!   deadline that each use moves; an expired token is refused even before the background
//!   sweeper deletes it;
//! * writes are batched by a group-commit writer: an `Ok` means durable.
//!
//! ```
//! use std::sync::Arc;
//! use tokendb::{Config, Grant, ManualClock, MasterKey, TokenDb, TokenStatus, RotateRefusal, Error};
//!
//! let dir = tempfile::tempdir()?;
//! let master = MasterKey::generate(); // in production: from your KMS, a key file or the environment
//! let db = TokenDb::create(dir.path().join("tokens.tdb"), &master, Config::default())?;
//!
//! let grant = Grant::new("alice@example.com", "demo-client", "openid offline_access")?;
//! let refresh = db.issue_refresh(&grant)?;
//! let access = db.issue_access_for_family(refresh.family, None)?;
//! assert!(db.validate(access.token.expose())?.is_active());
//!
//! // Rotate: the old refresh token is spent.
//! let next = db.rotate(refresh.token.expose(), "demo-client", None)?;
//! // Presenting it again is reuse: the whole family is revoked.
//! let err = db.rotate(refresh.token.expose(), "demo-client", None).unwrap_err();
//! assert!(matches!(err, Error::Refused(RotateRefusal::ReuseDetected { .. })));
//! assert_eq!(err.oauth_error(), "invalid_grant");
//! assert!(matches!(db.validate(next.token.expose())?.status, TokenStatus::Revoked(_)));
//! assert!(!db.introspect(access.token.expose())?.is_active());
//! db.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Crates underneath: `tokendb-core` (formats, keys, sealing), `tokendb-rotation` (the family
//! state machine and every other security decision), `tokendb-backend` (the storage
//! interface), `tokendb-store` (the redb backend: tables, group commit), `tokendb-sweeper`
//! (expiry). This crate is the only one an embedder or operator tool needs.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]
// The facade is what embedders name: every public type can grow without a breaking change.
#![warn(clippy::exhaustive_structs, clippy::exhaustive_enums)]

mod asynchronous;
mod clock;
mod config;
mod db;
mod error;
mod events;
mod telemetry;
mod types;

pub use asynchronous::AsyncTokenDb;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Config, ConfigBuilder};
pub use db::{SealingKeys, TokenDb};
pub use error::{ConfigProblem, Error, Result, RotateRefusal};
pub use events::{EventReceiver, RecvError};
pub use types::{
    Event, Expiry, Grant, Introspection, IssuedAccess, IssuedRefresh, Refreshed, Revoked, Rotated,
    TokenClaims, TokenStatus, Validation,
};

pub use tokendb_backend::{
    EngineError, Failure, MAX_ACCESS_BATCH, Pending, ResealBatch, ResealCursor, StoreError,
};
pub use tokendb_core::{
    BadThumbprint, Confirmation, CoreError, FamilyId, KeyId, MasterKey, ParseError, RevokeReason,
    Scope, TokenKind, TokenString,
};
#[cfg(feature = "postgres")]
pub use tokendb_postgres::{DatabaseClock, PgOptions};
pub use tokendb_rotation::{FamilyCap, LifetimeError, RotationMode};
pub use tokendb_store::{
    AccessStats, Expiring, FamilyStats, IndexCounts, Problem, StoreStats, VerifyReport,
    WriterOptions,
};
pub use tokendb_sweeper::{MetricsSnapshot, PassReport, SweeperConfig};

/// The README's example, compiled and run as a doc-test.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
