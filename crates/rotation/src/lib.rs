//! # tokendb-rotation
//!
//! The refresh-token family state machine and lifetime policy of tokendb, as pure functions:
//! given a family record, what was presented, the request, the [`Policy`] and `now`, it returns a
//! [`Decision`]. No I/O, no clock: `tokendb-store` reads the family, asks, and applies the answer
//! in the same write transaction, and a second storage backend can reuse this crate unchanged.
//!
//! ```
//! use tokendb_rotation::{decide, Decision, Policy, Presented, Request};
//! use tokendb_core::{FamilyRecord, RecordState, Scope, TokenId, IndexHash, KeyId};
//!
//! let policy = Policy::default();
//! let now = 1_000_000;
//! let (absolute, idle) = policy.deadlines_at_issue(now)?;
//! let family = FamilyRecord {
//!     key_id: KeyId(1), state: RecordState::Active, created_at: now,
//!     absolute_deadline: absolute, idle_deadline: idle, generation: 1, rotated_at: now,
//!     current: TokenId::from_bytes([0; 32]), subject: IndexHash::from_bytes([0; 16]),
//!     client: IndexHash::from_bytes([0; 16]), grace: vec![], body: vec![],
//! };
//! let granted = Scope::parse("openid offline_access")?;
//! let presented = Presented { generation: 1, tag_valid: true, matches_current: true };
//! let request = Request { client_matches: true, requested_scope: None, granted_scope: &granted };
//! match decide(&family, &presented, &request, &policy, now + 60_000) {
//!     Decision::Rotate { generation, absolute_deadline, .. } => {
//!         assert_eq!(generation, 2);
//!         assert_eq!(absolute_deadline, absolute); // rotation never extends it
//!     }
//!     other => panic!("{other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod cap;
mod decide;
mod policy;

pub use cap::{CapAction, FamilyCap, cap_decision};
pub use decide::{Decision, Presented, Refusal, Request, Status, decide, family_status};
pub use policy::{DAY_MS, HOUR_MS, LifetimeError, MAX_GRACE_MS, Policy, RotationMode};
