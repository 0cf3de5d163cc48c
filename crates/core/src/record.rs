//! The versioned on-disk record codec: family records (version 1, and 2 with a sender
//! constraint) and access records (version 2, and 3 with a sender constraint; version 1 is still
//! read).
//!
//! Every record is `version ‖ key id ‖ plaintext header ‖ MAC ‖ sealed parts`:
//!
//! * the fixed-size **header** holds what lookups decide on (state, deadlines, generation, the
//!   current token's hash) in plaintext, so validation needs no decryption;
//! * the **record MAC** is a keyed BLAKE3 (a key per table, derived from the sealing key named
//!   by the key id) over the record key, the version, the key id and the header: no header field
//!   can be edited and no record moved to another key or table without detection. It is checked
//!   on every full decode, before any field is believed;
//! * an access record's header also carries a **status MAC** over the access key and the fields
//!   a validation reads (state, family, issue time), sized to one BLAKE3 block: a status check
//!   ([`AccessRecord::decode_status`]) verifies that MAC alone, one compression instead of the
//!   record MAC's two (see [`AccessRecord`] for the layout);
//! * the **sealed parts** — the body (subject, client id, scope, caller claims) and, for a family
//!   in its grace window, the successor's secret — are XChaCha20-Poly1305 ciphertexts whose AAD
//!   binds them to their table, record key and key id (and generation, for the grace slot): they
//!   cannot be edited or moved between records, and are authenticated when opened.
//!
//! These types are the storage format, separate from the API types of `tokendb`.

use crate::seal::MacDomain;

mod access;
mod body;
mod family;
mod header;
mod state;

pub use access::{AccessRecord, AccessStatus};
pub use body::{MAX_CLAIMS_LEN, MAX_CLIENT_ID_LEN, MAX_SUBJECT_LEN, RecordBody, seal_body};
pub use family::FamilyRecord;
pub use state::{RecordState, RevokeReason};

/// The newest format version of family records: 2, a family with a sender constraint. An
/// unbound family is still written as version 1, the layout of every earlier build.
pub const FAMILY_RECORD_VERSION: u8 = 2;
/// The format version of the (unbound) access records this build writes. It reads versions 1
/// to 3; version 3 is an access record with a sender constraint
/// ([`BOUND_ACCESS_RECORD_VERSION`]).
pub const ACCESS_RECORD_VERSION: u8 = 2;
/// The format version of access records with a sender constraint: version 2 with the
/// confirmation after the client hash, under the record MAC.
pub const BOUND_ACCESS_RECORD_VERSION: u8 = 3;

/// Which table a record lives in; bound into its MAC and AAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordTable {
    /// `families`, keyed by family id.
    Families,
    /// `tokens`, keyed by token id.
    Tokens,
}

impl RecordTable {
    const fn mac_domain(self) -> MacDomain {
        match self {
            Self::Families => MacDomain::Families,
            Self::Tokens => MacDomain::Tokens,
        }
    }

    const fn to_byte(self) -> u8 {
        match self {
            Self::Families => 1,
            Self::Tokens => 2,
        }
    }
}

#[cfg(test)]
mod tests;
