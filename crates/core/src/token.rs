//! The token wire format: `<prefix>_<kind>_<base64url(body ‖ checksum)>`.
//!
//! * kind `rt` (refresh): body = `family id (16) ‖ generation (u64 BE) ‖ secret (32) ‖ tag (16)`;
//! * kind `at` (access): body = `deadline (u64 BE, Unix ms) ‖ secret (32)`. The deadline is
//!   public (a client learns it as `expires_in` anyway); the store keys the token under it, so
//!   expired tokens are one contiguous run of keys for the sweeper;
//! * checksum: CRC-32 (IEEE, as in GitHub's token format; big-endian) of `<prefix>_<kind>_` and
//!   the body. It is public: secret scanners can recognise tokens and typos or truncation are
//!   refused before any disk access. It proves nothing about origin; the tag and the stored hash
//!   do.
//!
//! The body and checksum are base64url-encoded together without padding, so a refresh token is
//! `prefix_rt_` + 102 characters and an access token `prefix_at_` + 59.

use core::fmt;

use crate::ParseError;
use crate::checksum::Crc32;
use crate::ids::{FAMILY_ID_LEN, FamilyId};
use crate::keys::KeyRing;
use crate::secret::{SECRET_LEN, TokenSecret, TokenString};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Length of a refresh token's tag.
pub const TAG_LEN: usize = 16;
/// Length of the public checksum.
pub const CHECKSUM_LEN: usize = 4;
/// Longest prefix a [`TokenFormat`] accepts.
pub const MAX_PREFIX_LEN: usize = 16;

const REFRESH_BODY_LEN: usize = FAMILY_ID_LEN + 8 + SECRET_LEN + TAG_LEN;
const ACCESS_BODY_LEN: usize = 8 + SECRET_LEN;
const REFRESH_TAIL_CHARS: usize = b64_len(REFRESH_BODY_LEN + CHECKSUM_LEN);
const ACCESS_TAIL_CHARS: usize = b64_len(ACCESS_BODY_LEN + CHECKSUM_LEN);
const MAX_BODY_LEN: usize = REFRESH_BODY_LEN + CHECKSUM_LEN;

const fn b64_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

/// Kind of a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A refresh token (`rt`): belongs to a family, rotates.
    Refresh,
    /// An opaque access token (`at`): standalone or tied to a family.
    Access,
}

impl TokenKind {
    /// The two-letter kind segment of the wire format.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::Refresh => "rt",
            Self::Access => "at",
        }
    }

    /// Stable byte used in hashes and index keys.
    #[must_use]
    pub const fn to_byte(self) -> u8 {
        match self {
            Self::Refresh => 1,
            Self::Access => 2,
        }
    }

    /// RFC 7662 `token_type` hint name.
    #[must_use]
    pub const fn hint(self) -> &'static str {
        match self {
            Self::Refresh => "refresh_token",
            Self::Access => "access_token",
        }
    }
}

/// A decoded refresh token.
#[derive(Debug)]
pub struct RefreshToken {
    /// The family it belongs to.
    pub family: FamilyId,
    /// Its generation: 1 at issue, +1 per rotation.
    pub generation: u64,
    /// Its secret.
    pub secret: TokenSecret,
    /// MAC under the tag key over family, generation and secret.
    pub tag: [u8; TAG_LEN],
}

impl RefreshToken {
    /// Mints a refresh token with a fresh secret and its tag.
    #[must_use]
    pub fn mint(keys: &KeyRing, family: FamilyId, generation: u64) -> Self {
        Self::with_secret(keys, family, generation, TokenSecret::generate())
    }

    /// Rebuilds the token for a known secret (the grace replay of a kept successor).
    #[must_use]
    pub fn with_secret(
        keys: &KeyRing,
        family: FamilyId,
        generation: u64,
        secret: TokenSecret,
    ) -> Self {
        let tag = keys.refresh_tag(&family, generation, &secret);
        Self {
            family,
            generation,
            secret,
            tag,
        }
    }

    /// Whether the tag proves this database issued the token (constant time).
    #[must_use]
    pub fn tag_is_valid(&self, keys: &KeyRing) -> bool {
        keys.refresh_tag(&self.family, self.generation, &self.secret)
            .ct_eq(&self.tag)
            .into()
    }
}

/// A decoded access token.
#[derive(Debug)]
pub struct AccessToken {
    /// Its deadline, Unix ms (public: it is also the token's storage order).
    pub deadline: u64,
    /// Its secret.
    pub secret: TokenSecret,
}

impl AccessToken {
    /// Mints an access token expiring at `deadline` (Unix ms) with a fresh secret.
    #[must_use]
    pub fn mint(deadline: u64) -> Self {
        Self {
            deadline,
            secret: TokenSecret::generate(),
        }
    }
}

/// A token after parsing.
#[derive(Debug)]
pub enum ParsedToken {
    /// A refresh token.
    Refresh(RefreshToken),
    /// An access token.
    Access(AccessToken),
}

impl ParsedToken {
    /// Its kind.
    #[must_use]
    pub fn kind(&self) -> TokenKind {
        match self {
            Self::Refresh(_) => TokenKind::Refresh,
            Self::Access(_) => TokenKind::Access,
        }
    }
}

/// Encodes and parses tokens for one prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenFormat {
    prefix: String,
    /// The checksum state after `<prefix>_rt_` and after `<prefix>_at_`: that start of the
    /// checksummed text is fixed by the prefix, so it is folded in once here, not on every parse.
    refresh_crc: Crc32,
    access_crc: Crc32,
}

impl fmt::Debug for TokenFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The checksum states follow from the prefix and say nothing more.
        f.debug_struct("TokenFormat")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Default for TokenFormat {
    /// The default prefix, `tdb`.
    fn default() -> Self {
        Self::with_prefix("tdb".to_owned())
    }
}

impl TokenFormat {
    /// A format with the given prefix: 1 to 16 characters of `a-z`, `0-9`.
    ///
    /// # Errors
    /// [`crate::CoreError::BadText`] for any other prefix.
    pub fn new(prefix: &str) -> Result<Self, crate::CoreError> {
        let ok = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX_LEN
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Self::with_prefix(prefix.to_owned()))
        } else {
            Err(crate::CoreError::BadText("token prefix (1-16 of a-z, 0-9)"))
        }
    }

    fn with_prefix(prefix: String) -> Self {
        let start = |kind: TokenKind| {
            let mut crc = Crc32::new();
            for part in [prefix.as_bytes(), b"_", kind.code().as_bytes(), b"_"] {
                crc.update(part);
            }
            crc
        };
        Self {
            refresh_crc: start(TokenKind::Refresh),
            access_crc: start(TokenKind::Access),
            prefix,
        }
    }

    /// The prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Longest token string this format produces; parsing refuses longer input at once.
    #[must_use]
    pub fn max_len(&self) -> usize {
        self.prefix.len() + 4 + REFRESH_TAIL_CHARS
    }

    /// CRC-32 (big-endian) of `<prefix>_<kind>_` ‖ `body`.
    fn checksum(&self, kind: TokenKind, body: &[u8]) -> [u8; CHECKSUM_LEN] {
        let mut crc = match kind {
            TokenKind::Refresh => self.refresh_crc,
            TokenKind::Access => self.access_crc,
        };
        crc.update(body);
        crc.finish().to_be_bytes()
    }

    fn encode(&self, kind: TokenKind, body: &[u8]) -> TokenString {
        let mut buf = Zeroizing::new(Vec::with_capacity(body.len() + CHECKSUM_LEN));
        buf.extend_from_slice(body);
        buf.extend_from_slice(&self.checksum(kind, body));
        let mut s = String::with_capacity(self.max_len());
        s.push_str(&self.prefix);
        s.push('_');
        s.push_str(kind.code());
        s.push('_');
        crate::b64::encode(&buf[..], &mut s);
        TokenString::new(s)
    }

    /// The wire form of a refresh token.
    #[must_use]
    pub fn encode_refresh(&self, t: &RefreshToken) -> TokenString {
        let mut body = Zeroizing::new([0u8; REFRESH_BODY_LEN]);
        let mut w = &mut body[..];
        for part in [
            &t.family.as_bytes()[..],
            &t.generation.to_be_bytes(),
            t.secret.expose(),
            &t.tag,
        ] {
            let (head, rest) = w.split_at_mut(part.len());
            head.copy_from_slice(part);
            w = rest;
        }
        self.encode(TokenKind::Refresh, &body[..])
    }

    /// The wire form of an access token.
    #[must_use]
    pub fn encode_access(&self, t: &AccessToken) -> TokenString {
        let mut body = Zeroizing::new([0u8; ACCESS_BODY_LEN]);
        let (d, s) = body.split_at_mut(8);
        d.copy_from_slice(&t.deadline.to_be_bytes());
        s.copy_from_slice(t.secret.expose());
        self.encode(TokenKind::Access, &body[..])
    }

    /// Parses a token string. Pure and bounded: it never touches storage and does at most
    /// [`TokenFormat::max_len`] bytes of work whatever the input length.
    ///
    /// # Errors
    /// A [`ParseError`] saying which check failed.
    pub fn parse(&self, input: &str) -> Result<ParsedToken, ParseError> {
        if input.is_empty() {
            return Err(ParseError::Empty);
        }
        if input.len() > self.max_len() {
            return Err(ParseError::TooLong {
                len: input.len(),
                max: self.max_len(),
            });
        }
        let rest = input
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('_'))
            .ok_or(ParseError::WrongPrefix)?;
        let (kind, tail) = if let Some(t) = rest.strip_prefix("rt_") {
            (TokenKind::Refresh, t)
        } else if let Some(t) = rest.strip_prefix("at_") {
            (TokenKind::Access, t)
        } else {
            return Err(ParseError::WrongKind);
        };
        let (want_chars, body_len) = match kind {
            TokenKind::Refresh => (REFRESH_TAIL_CHARS, REFRESH_BODY_LEN),
            TokenKind::Access => (ACCESS_TAIL_CHARS, ACCESS_BODY_LEN),
        };
        if tail.len() != want_chars {
            return Err(ParseError::BadLength);
        }
        let mut buf = Zeroizing::new([0u8; MAX_BODY_LEN]);
        let decoded = buf
            .get_mut(..body_len + CHECKSUM_LEN)
            .ok_or(ParseError::BadLength)?;
        crate::b64::decode(tail.as_bytes(), decoded).map_err(|_| ParseError::BadEncoding)?;
        let (body, sum) = decoded.split_at(body_len);
        if self.checksum(kind, body) != sum {
            return Err(ParseError::BadChecksum);
        }
        // `b64::decode` refuses non-canonical trailing bits, so one token has one spelling.
        Ok(match kind {
            TokenKind::Access => {
                let (d, sec) = body.split_at_checked(8).ok_or(ParseError::BadLength)?;
                let secret: [u8; SECRET_LEN] = sec.try_into().map_err(|_| ParseError::BadLength)?;
                ParsedToken::Access(AccessToken {
                    deadline: u64::from_be_bytes(d.try_into().map_err(|_| ParseError::BadLength)?),
                    secret: TokenSecret::from_bytes(secret),
                })
            }
            TokenKind::Refresh => {
                let (fam, r) = body
                    .split_at_checked(FAMILY_ID_LEN)
                    .ok_or(ParseError::BadLength)?;
                let (gen_b, r) = r.split_at_checked(8).ok_or(ParseError::BadLength)?;
                let (sec, tag) = r
                    .split_at_checked(SECRET_LEN)
                    .ok_or(ParseError::BadLength)?;
                ParsedToken::Refresh(RefreshToken {
                    family: FamilyId::from_slice(fam).ok_or(ParseError::BadLength)?,
                    generation: u64::from_be_bytes(
                        gen_b.try_into().map_err(|_| ParseError::BadLength)?,
                    ),
                    secret: TokenSecret::from_bytes(
                        sec.try_into().map_err(|_| ParseError::BadLength)?,
                    ),
                    tag: tag.try_into().map_err(|_| ParseError::BadLength)?,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring() -> KeyRing {
        KeyRing::from_fixed_bytes_for_tests([1; 32], [2; 32], [3; 32], [4; 32])
    }

    /// Known answer: the wire form of fixed inputs is pinned, so the format never drifts.
    ///
    /// The expected strings were computed outside this crate (Python's `zlib.crc32` and
    /// `base64.urlsafe_b64encode` with the padding stripped): body ‖ CRC-32 big-endian of
    /// `tdb_<kind>_` ‖ body. The refresh body's tag is the keyed BLAKE3 tag under `ring()`'s tag
    /// key. They changed twice: when the checksum went from the first 4 bytes of an unkeyed BLAKE3
    /// to CRC-32 (only the last 6 characters of each token differ), and when access tokens
    /// gained their deadline (the 8 bytes 01..08 here).
    #[test]
    fn wire_format_known_answer() {
        let f = TokenFormat::new("tdb").unwrap();
        let at = AccessToken {
            deadline: 0x0102_0304_0506_0708,
            secret: TokenSecret::from_bytes([0xab; 32]),
        };
        let s = f.encode_access(&at);
        assert_eq!(
            s.expose(),
            "tdb_at_AQIDBAUGBwirq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urqxQL7nw"
        );
        assert_eq!(s.expose().len(), 7 + 59);

        let rt = RefreshToken::with_secret(
            &ring(),
            FamilyId::from_bytes([7; 16]),
            3,
            TokenSecret::from_bytes([9; 32]),
        );
        let s = f.encode_refresh(&rt);
        assert_eq!(
            s.expose(),
            "tdb_rt_BwcHBwcHBwcHBwcHBwcHBwAAAAAAAAADCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQmsJeEWVmn2I8vR9APjFNzS71nowA"
        );
        assert_eq!(s.expose().len(), 7 + 102);
        let ParsedToken::Refresh(back) = f.parse(s.expose()).unwrap() else {
            panic!("kind")
        };
        assert_eq!(back.family, rt.family);
        assert_eq!(back.generation, 3);
        assert!(back.secret.ct_eq(&rt.secret));
        assert!(back.tag_is_valid(&ring()));
    }

    #[test]
    fn typed_errors() {
        let f = TokenFormat::new("tdb").unwrap();
        let good = f.encode_access(&AccessToken::mint(1_700_000_000_000));
        let g = good.expose();
        assert_eq!(f.parse("").unwrap_err(), ParseError::Empty);
        assert!(matches!(
            f.parse(&"x".repeat(1 << 20)).unwrap_err(),
            ParseError::TooLong { .. }
        ));
        assert_eq!(
            f.parse(&g.replacen("tdb", "abc", 1)).unwrap_err(),
            ParseError::WrongPrefix
        );
        assert_eq!(
            f.parse(&g.replacen("_at_", "_xt_", 1)).unwrap_err(),
            ParseError::WrongKind
        );
        assert_eq!(
            f.parse(&g[..g.len() - 1]).unwrap_err(),
            ParseError::BadLength
        );
        assert_eq!(
            f.parse(&format!("{}!", &g[..g.len() - 1])).unwrap_err(),
            ParseError::BadEncoding
        );
        let mut flipped = g.to_owned().into_bytes();
        let i = 10;
        flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            f.parse(std::str::from_utf8(&flipped).unwrap()).unwrap_err(),
            ParseError::BadChecksum
        );
        // An access body presented under the refresh kind has the wrong length.
        assert_eq!(
            f.parse(&g.replacen("_at_", "_rt_", 1)).unwrap_err(),
            ParseError::BadLength
        );
    }

    #[test]
    fn forged_tag_is_detected() {
        let f = TokenFormat::new("tdb").unwrap();
        let mut rt = RefreshToken::mint(&ring(), FamilyId::generate(), 1);
        rt.tag[0] ^= 1;
        let ParsedToken::Refresh(back) = f.parse(f.encode_refresh(&rt).expose()).unwrap() else {
            panic!()
        };
        assert!(!back.tag_is_valid(&ring()));
    }

    /// The checksum starts from a state saved per prefix and kind; other prefixes must get their
    /// own start. Expected strings computed as in [`wire_format_known_answer`].
    #[test]
    fn checksum_start_follows_the_prefix() {
        let at = AccessToken {
            deadline: 0x0102_0304_0506_0708,
            secret: TokenSecret::from_bytes([0xab; 32]),
        };
        for (prefix, want) in [
            (
                "acme",
                "acme_at_AQIDBAUGBwirq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq4bMmg0",
            ),
            (
                "x0123456789abcde",
                "x0123456789abcde_at_AQIDBAUGBwirq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urqwBSik0",
            ),
        ] {
            let f = TokenFormat::new(prefix).unwrap();
            assert_eq!(f.encode_access(&at).expose(), want);
            assert!(f.parse(want).is_ok());
        }
        for prefix in ["tdb", "a", "acme2", "x0123456789abcde"] {
            let f = TokenFormat::new(prefix).unwrap();
            for kind in [TokenKind::Refresh, TokenKind::Access] {
                let body = [0x5a; REFRESH_BODY_LEN];
                let code = kind.code().as_bytes();
                let scratch =
                    crate::checksum::token_checksum([prefix.as_bytes(), b"_", code, b"_", &body]);
                assert_eq!(f.checksum(kind, &body), scratch, "{prefix} {kind:?}");
            }
        }
        assert_eq!(
            format!("{:?}", TokenFormat::new("acme").unwrap()),
            r#"TokenFormat { prefix: "acme" }"#
        );
    }

    #[test]
    fn prefix_rules() {
        assert!(TokenFormat::new("").is_err());
        assert!(TokenFormat::new("Tdb").is_err());
        assert!(TokenFormat::new("t_b").is_err());
        assert!(TokenFormat::new(&"a".repeat(17)).is_err());
        assert!(TokenFormat::new("acme2").is_ok());
    }

    proptest! {
        #[test]
        fn round_trip(prefix in "[a-z0-9]{1,16}", fam in any::<[u8; 16]>(), generation in any::<u64>(), secret in any::<[u8; 32]>()) {
            let f = TokenFormat::new(&prefix).unwrap();
            let rt = RefreshToken::with_secret(&ring(), FamilyId::from_bytes(fam), generation, TokenSecret::from_bytes(secret));
            let s = f.encode_refresh(&rt);
            prop_assert!(s.expose().len() <= f.max_len());
            let ParsedToken::Refresh(back) = f.parse(s.expose()).unwrap() else { panic!() };
            prop_assert_eq!(back.family, rt.family);
            prop_assert_eq!(back.generation, generation);
            prop_assert!(back.secret.ct_eq(&rt.secret));
            prop_assert_eq!(f.encode_refresh(&back), s);
            let at = AccessToken { deadline: generation, secret: TokenSecret::from_bytes(secret) };
            let s = f.encode_access(&at);
            let ParsedToken::Access(back) = f.parse(s.expose()).unwrap() else { panic!() };
            prop_assert_eq!(back.deadline, generation);
            prop_assert!(back.secret.ct_eq(&at.secret));
        }

        #[test]
        fn arbitrary_strings_never_panic(s in any::<String>()) {
            let f = TokenFormat::new("tdb").unwrap();
            let _ = f.parse(&s);
            let _ = f.parse(&format!("tdb_rt_{s}"));
            let _ = f.parse(&format!("tdb_at_{s}"));
        }

        #[test]
        fn any_single_char_change_is_refused(pos in 0usize..66, c in proptest::char::range('!', '~')) {
            let f = TokenFormat::new("tdb").unwrap();
            let good = f.encode_access(&AccessToken::mint(1_700_000_000_000));
            let mut chars: Vec<char> = good.expose().chars().collect();
            prop_assume!(chars[pos] != c);
            chars[pos] = c;
            let changed: String = chars.into_iter().collect();
            prop_assert!(f.parse(&changed).is_err());
        }
    }
}
