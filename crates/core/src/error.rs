//! Errors of the core layer.

use core::fmt;

/// Why a token string was refused before any storage was consulted.
///
/// Every variant means the same thing to the client presenting the token (OAuth
/// `invalid_grant` / `invalid_token`); the detail is for the embedder's logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The input is empty.
    Empty,
    /// The input is longer than any token this format produces.
    TooLong {
        /// Length of the input in bytes.
        len: usize,
        /// Largest length a token of this format can have.
        max: usize,
    },
    /// The input does not start with the configured prefix followed by `_`.
    WrongPrefix,
    /// The kind segment is neither `rt` nor `at`.
    WrongKind,
    /// The body has the wrong length for its kind.
    BadLength,
    /// The body is not unpadded base64url.
    BadEncoding,
    /// The public checksum does not match: a typo, truncation or garbage.
    BadChecksum,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("token is empty"),
            Self::TooLong { len, max } => {
                write!(
                    f,
                    "token is {len} bytes long, longer than the {max} bytes any token has"
                )
            }
            Self::WrongPrefix => f.write_str("token does not carry this database's prefix"),
            Self::WrongKind => f.write_str("token kind is neither refresh (rt) nor access (at)"),
            Self::BadLength => f.write_str("token body has the wrong length for its kind"),
            Self::BadEncoding => f.write_str("token body is not unpadded base64url"),
            Self::BadChecksum => {
                f.write_str("token checksum does not match: it was mistyped, truncated or forged")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// A failure of the cryptographic or codec layer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoreError {
    /// A wrapped data key did not open under the master key given: it is the wrong key. The
    /// storage layer and `tokendb` report it as their one `StoreError::WrongMasterKey`, so an
    /// embedder matches a single variant.
    WrongMasterKey,
    /// A master key text is not 64 hex digits nor base64 of 32 bytes.
    BadMasterKeyText,
    /// A sealed value failed authentication: it was altered, moved or sealed under another key.
    Unauthentic,
    /// A stored record is shorter than its format requires or its lengths are inconsistent.
    Truncated,
    /// A stored record carries a format version this build does not know.
    UnsupportedVersion(u8),
    /// A record names a sealing key id that the key ring does not hold.
    UnknownKeyId(u32),
    /// A record field holds a value outside its domain (an unknown state byte, say).
    BadField(&'static str),
    /// An input exceeds a documented limit.
    TooLarge {
        /// Which input.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A scope string breaks RFC 6749 §3.3 syntax.
    BadScope(&'static str),
    /// Text that must be UTF-8 (subject, client id) is empty or has control characters.
    BadText(&'static str),
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongMasterKey => f.write_str(
                "the master key does not open this database's data keys: supply the key the database was created (or last re-keyed) with",
            ),
            Self::BadMasterKeyText => f.write_str(
                "master key text must be 64 hex digits or base64 of exactly 32 bytes",
            ),
            Self::Unauthentic => f.write_str(
                "stored data failed authentication: it was altered or moved; run `tokendb verify`",
            ),
            Self::Truncated => f.write_str("stored record is truncated; run `tokendb verify`"),
            Self::UnsupportedVersion(v) => write!(
                f,
                "stored record has format version {v}, which this build does not know: upgrade tokendb"
            ),
            Self::UnknownKeyId(id) => write!(
                f,
                "record is sealed under key id {id}, which this database's key ring does not hold"
            ),
            Self::BadField(what) => write!(f, "stored record has an invalid {what}"),
            Self::TooLarge { what, len, max } => {
                write!(f, "{what} is {len} bytes; the limit is {max} bytes")
            }
            Self::BadScope(why) => write!(f, "invalid scope: {why}"),
            Self::BadText(what) => {
                write!(f, "{what} must be non-empty and free of control characters")
            }
        }
    }
}

impl std::error::Error for CoreError {}
