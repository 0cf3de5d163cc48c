//! # tokendb-core
//!
//! The security core of [tokendb](https://example.invalid/tokendb): everything that touches a
//! token secret or a key lives here and nowhere else.
//!
//! * [`token`]: the wire format `<prefix>_<kind>_<base64url(body ‖ checksum)>`, parsed with typed
//!   errors, bounded work and no panics;
//! * [`secret`]: [`TokenSecret`] and [`TokenString`], zeroized on drop, silent in `Debug`;
//! * [`keys`]: the envelope — a caller's [`MasterKey`] wraps random data keys ([`KeyRing`]);
//! * [`seal`]: XChaCha20-Poly1305 sealing and keyed-BLAKE3 record MACs;
//! * [`record`]: the versioned on-disk records, authenticated on every decode;
//! * [`scope`]: RFC 6749 scopes;
//! * [`confirm`]: sender constraints ([`Confirmation`]: a DPoP key's or a client certificate's
//!   thumbprint) that bound records carry.
//!
//! It does no I/O and never reads the clock. `tokendb-rotation` decides on its types,
//! `tokendb-store` stores them, and users normally depend on the `tokendb` crate instead.
//!
//! ```
//! use tokendb_core::{KeyRing, MasterKey, TokenFormat, ParsedToken, RefreshToken, FamilyId};
//!
//! let master = MasterKey::generate();
//! let keys = KeyRing::generate();
//! let stored = keys.wrap_all(&master); // only this reaches the disk
//!
//! let format = TokenFormat::new("tdb")?;
//! let token = RefreshToken::mint(&keys, FamilyId::generate(), 1);
//! let text = format.encode_refresh(&token);
//! assert!(text.expose().starts_with("tdb_rt_"));
//!
//! let ParsedToken::Refresh(back) = format.parse(text.expose())? else { unreachable!() };
//! assert!(back.tag_is_valid(&keys));
//! # let _ = stored;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod b64;
mod checksum;
mod codec;
pub mod confirm;
mod error;
pub mod ids;
pub mod keys;
pub mod record;
pub mod scope;
pub mod seal;
pub mod secret;
pub mod time;
pub mod token;

pub use confirm::{BadThumbprint, Confirmation};
pub use error::{CoreError, ParseError};
pub use ids::{AccessKey, FamilyId, IndexHash, ProofId, TokenId};
pub use keys::{KeyPurpose, KeyRing, MasterKey, WrappedKey};
pub use record::{AccessRecord, AccessStatus, FamilyRecord, RecordBody, RecordState, RevokeReason};
pub use scope::Scope;
pub use seal::{KeyId, SealingKey};
pub use secret::{TokenSecret, TokenString};
pub use time::{Clock, ManualClock};
pub use token::{AccessToken, ParsedToken, RefreshToken, TokenFormat, TokenKind};
