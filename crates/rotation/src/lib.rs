//! # tokendb-rotation
//!
//! The refresh-token family state machine and lifetime policy of tokendb, as pure functions:
//! given a family record, what was presented, the request, the [`Policy`] and `now`, it returns what to
//! do. No I/O, no clock: `tokendb-store` reads the family, asks, and applies the answer
//! in the same write transaction, and a second storage backend can reuse this crate unchanged.
//!
//! The decisions are made in one place for every storage backend: a backend reads the family
//! inside its transaction, calls [`plan`], and applies the [`Plan`] it gets back; readers call
//! [`classify`]. A refresh token reaches either only as a [`Presentation`], whose constructor
//! checks the token's tag, so no backend trusts a flag computed by its caller.
//!
//! ```
//! use tokendb_core::{FamilyId, FamilyRecord, KeyRing, RecordState, RefreshToken, TokenKind};
//! use tokendb_rotation::{Plan, Policy, Presentation, RotateRequest, Rotation, plan};
//!
//! let keys = KeyRing::generate();
//! let policy = Policy::default();
//! let now = 1_000_000;
//! let (absolute, idle) = policy.deadlines_at_issue(now)?;
//! let id = FamilyId::generate();
//! let token = RefreshToken::mint(&keys, id, 1);
//! let family = FamilyRecord {
//!     key_id: keys.current_key_id(), state: RecordState::Active, created_at: now,
//!     absolute_deadline: absolute, idle_deadline: idle, generation: 1, rotated_at: now,
//!     current: keys.token_id(TokenKind::Refresh, &token.secret),
//!     subject: keys.subject_hash("alice"), client: keys.client_hash("web"),
//!     grace: vec![], body: vec![], confirmation: None,
//! };
//! let presented = Presentation::verify(&token, &keys).ok_or("forged")?;
//! let request = RotateRequest::new(presented, keys.client_hash("web"), None, policy, &keys);
//! match plan(&family, &request, &keys, now + 60_000)? {
//!     Plan::Write { record: Some(record), answer: Rotation::Rotated { generation, .. }, .. } => {
//!         assert_eq!(generation, 2);
//!         assert_eq!(record.absolute_deadline, absolute); // rotation never extends it
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
mod plan;
mod policy;
mod present;

pub use cap::{CapAction, FamilyCap, cap_decision};
pub use decide::{Refusal, Status, family_status};
pub use plan::{
    AccessIssued, Admission, Plan, RotateRequest, Rotation, admit_access, grace_end, plan,
};
pub use policy::{DAY_MS, HOUR_MS, LifetimeError, MAX_GRACE_MS, Policy, RotationMode};
pub use present::{Presentation, Standing, classify};
