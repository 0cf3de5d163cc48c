//! Sender constraints: what a bound token's holder must also prove to use it.
//!
//! A family (and every access token issued for it) may carry a [`Confirmation`], fixed at issue:
//! the SHA-256 thumbprint of a DPoP public key (RFC 9449 `jkt`, the RFC 7638 JWK thumbprint)
//! or of a client certificate (RFC 8705 `x5t#S256`). It is stored in the record's
//! authenticated header, and introspection returns it as RFC 7662's `cnf` member.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use core::fmt;

/// Length of a confirmation's thumbprint: a SHA-256 digest.
pub const THUMBPRINT_LEN: usize = 32;

/// What a sender-constrained token's holder must prove: a SHA-256 thumbprint of a key or a
/// certificate. The thumbprint is public (a resource server compares it with the proof it
/// receives), so `Debug` prints it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Confirmation {
    /// RFC 9449 (DPoP): the RFC 7638 SHA-256 thumbprint of the client's public JWK (`jkt`).
    Jkt([u8; THUMBPRINT_LEN]),
    /// RFC 8705 (mutual TLS): the SHA-256 of the client certificate's DER (`x5t#S256`).
    X5tS256([u8; THUMBPRINT_LEN]),
}

/// A confirmation that does not parse: not 43 base64url characters of a SHA-256 digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BadThumbprint;

impl fmt::Display for BadThumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a thumbprint is the unpadded base64url of a 32-byte SHA-256 digest")
    }
}

impl std::error::Error for BadThumbprint {}

fn decode32(text: &str) -> Result<[u8; THUMBPRINT_LEN], BadThumbprint> {
    if text.len() != 43 {
        return Err(BadThumbprint);
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| BadThumbprint)?;
    bytes.try_into().map_err(|_| BadThumbprint)
}

impl Confirmation {
    /// A DPoP key thumbprint from its `jkt` text (unpadded base64url, 43 characters).
    ///
    /// # Errors
    /// [`BadThumbprint`] if it is not one.
    pub fn jkt_from_base64url(text: &str) -> Result<Self, BadThumbprint> {
        decode32(text).map(Self::Jkt)
    }

    /// A certificate thumbprint from its `x5t#S256` text (unpadded base64url).
    ///
    /// # Errors
    /// [`BadThumbprint`] if it is not one.
    pub fn x5t_s256_from_base64url(text: &str) -> Result<Self, BadThumbprint> {
        decode32(text).map(Self::X5tS256)
    }

    /// The RFC 7662 / RFC 7800 `cnf` member's name: `jkt` or `x5t#S256`.
    #[must_use]
    pub const fn member(&self) -> &'static str {
        match self {
            Self::Jkt(_) => "jkt",
            Self::X5tS256(_) => "x5t#S256",
        }
    }

    /// The thumbprint's bytes.
    #[must_use]
    pub const fn thumbprint(&self) -> &[u8; THUMBPRINT_LEN] {
        match self {
            Self::Jkt(t) | Self::X5tS256(t) => t,
        }
    }

    /// The thumbprint as the `cnf` member's value: unpadded base64url.
    #[must_use]
    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.thumbprint())
    }

    /// Kind (1: `jkt`, 2: `x5t#S256`) ‖ thumbprint: the form records store, and a key that
    /// tells a key's thumbprint from a certificate's with the same bytes.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; STORED_LEN] {
        let mut out = [0u8; STORED_LEN];
        if let Some((kind, rest)) = out.split_first_mut() {
            *kind = self.kind_byte();
            rest.copy_from_slice(self.thumbprint());
        }
        out
    }

    /// The byte a record stores for this kind (0 means none).
    pub(crate) const fn kind_byte(&self) -> u8 {
        match self {
            Self::Jkt(_) => 1,
            Self::X5tS256(_) => 2,
        }
    }

    /// From a record's kind byte and thumbprint; `None` for a kind this build does not know.
    pub(crate) fn from_stored(kind: u8, thumbprint: [u8; THUMBPRINT_LEN]) -> Option<Self> {
        match kind {
            1 => Some(Self::Jkt(thumbprint)),
            2 => Some(Self::X5tS256(thumbprint)),
            _ => None,
        }
    }
}

impl fmt::Debug for Confirmation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Confirmation({}: {})",
            self.member(),
            self.to_base64url()
        )
    }
}

/// Bytes a confirmation takes in a record header: kind (1) ‖ thumbprint (32).
pub const STORED_LEN: usize = 1 + THUMBPRINT_LEN;

/// Appends a (present) confirmation in its stored form.
pub(crate) fn put(c: &Confirmation, out: &mut Vec<u8>) {
    out.extend_from_slice(&c.to_bytes());
}

/// Reads a confirmation in its stored form.
pub(crate) fn read(r: &mut crate::codec::Reader<'_>) -> Result<Confirmation, crate::CoreError> {
    let kind = r.u8()?;
    let thumbprint = r.array::<THUMBPRINT_LEN>()?;
    Confirmation::from_stored(kind, thumbprint).ok_or(crate::CoreError::BadField("confirmation"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_round_trip_as_cnf_members() {
        // RFC 7638 §3.1's example thumbprint.
        let text = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
        let c = Confirmation::jkt_from_base64url(text).unwrap();
        assert_eq!(c.member(), "jkt");
        assert_eq!(c.to_base64url(), text);
        let x = Confirmation::x5t_s256_from_base64url(text).unwrap();
        assert_eq!(x.member(), "x5t#S256");
        assert_ne!(c, x, "a key and a certificate never match each other");
        for bad in ["", "NzbL", &format!("{text}A"), &text.replace('N', "+")] {
            assert_eq!(Confirmation::jkt_from_base64url(bad), Err(BadThumbprint));
        }
    }
}
