//! DPoP proofs (RFC 9449): the checks of §4.3 on a `DPoP` header's JWT, pure and clock-free
//! ([`verify_proof`]), and server nonces (§8, [`DpopNonces`]). The replay check of the proof's
//! `jti` is the database's ([`tokendb::TokenDb::remember_proof`]); [`crate::OAuth`] runs both.
//!
//! The JWS framing (three base64url parts, a JSON header and payload) is parsed here, strictly;
//! every cryptographic step is RustCrypto's: ECDSA P-256 (`p256`), Ed25519 (`ed25519-dalek`,
//! strict verification) and SHA-256 (`sha2`) for the RFC 7638 thumbprint and `ath`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use core::fmt;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use std::time::Duration;
use tokendb::Confirmation;

mod nonce;
pub use nonce::DpopNonces;

/// The longest proof accepted, in bytes: a P-256 or Ed25519 proof is about 500.
pub const MAX_PROOF_LEN: usize = 4096;
/// The longest `jti` accepted, in bytes (RFC 9449 §4.2 asks for at least 96 bits of entropy).
pub const MAX_JTI_LEN: usize = 256;

/// A JWS algorithm DPoP proofs may be signed with (RFC 9449 §4.2: asymmetric only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DpopAlg {
    /// ECDSA with P-256 and SHA-256 (RFC 7518 §3.4).
    Es256,
    /// EdDSA with Ed25519 (RFC 8037).
    EdDsa,
    /// The same signatures under RFC 9864's fully-specified name `Ed25519` (which
    /// openid-client 6 and other current clients send).
    Ed25519,
}

impl DpopAlg {
    /// The JWS `alg` value.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Ed25519 => "Ed25519",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            "Ed25519" => Some(Self::Ed25519),
            _ => None,
        }
    }
}

/// How proofs are checked. Start from [`DpopConfig::DEFAULT`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DpopConfig {
    /// Algorithms accepted. Default ES256, EdDSA and Ed25519 (an empty list means these).
    pub algs: Vec<DpopAlg>,
    /// How old a proof's `iat` may be. Default 60 s. A proof's `jti` is remembered for as long.
    pub max_age: Duration,
    /// How far in the future a proof's `iat` may be (clock skew). Default 5 s.
    pub max_skew: Duration,
}

impl DpopConfig {
    /// The defaults: ES256, EdDSA and Ed25519, proofs at most 60 s old and 5 s ahead.
    pub const DEFAULT: Self = Self {
        algs: Vec::new(),
        max_age: Duration::from_secs(60),
        max_skew: Duration::from_secs(5),
    };

    /// The same with the `iat` window `max_age` back and `max_skew` ahead of now.
    #[must_use]
    pub const fn with_window(mut self, max_age: Duration, max_skew: Duration) -> Self {
        self.max_age = max_age;
        self.max_skew = max_skew;
        self
    }

    /// The same accepting only `algs` (an empty list means the defaults).
    #[must_use]
    pub fn with_algs(mut self, algs: &[DpopAlg]) -> Self {
        self.algs = algs.to_vec();
        self
    }

    /// The algorithms accepted.
    #[must_use]
    pub fn accepted_algs(&self) -> &[DpopAlg] {
        if self.algs.is_empty() {
            &[DpopAlg::Es256, DpopAlg::EdDsa, DpopAlg::Ed25519]
        } else {
            &self.algs
        }
    }

    /// The accepted algorithms as a `WWW-Authenticate` `algs` value (RFC 9449 §7.1).
    #[must_use]
    pub fn algs_value(&self) -> String {
        self.accepted_algs()
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Default for DpopConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a DPoP proof was refused: each RFC 9449 §4.3 check that can fail. The client is told
/// only the error code ([`DpopError::code`]); the variant is for the embedder's logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DpopError {
    /// No `DPoP` header where one is required.
    Missing,
    /// More than one `DPoP` header (§4.3 check 1).
    Multiple,
    /// Not a JWS in compact form with a JSON header and payload, or longer than
    /// [`MAX_PROOF_LEN`] (check 2).
    Malformed,
    /// A required header parameter or claim is missing or of the wrong type: `typ`, `alg`,
    /// `jwk`, `jti`, `htm`, `htu`, `iat` (check 3); names it.
    MissingClaim(&'static str),
    /// `typ` is not `dpop+jwt` (check 4).
    Typ,
    /// `alg` is `none`, symmetric, unknown or not accepted (check 5).
    Alg,
    /// The `jwk` is not a public key of the `alg`'s type, or does not parse (check 7 and the
    /// key's own checks); also a header with `crit`.
    Jwk,
    /// The `jwk` holds a private key (check 7).
    PrivateKey,
    /// The signature does not verify with the `jwk` (check 6).
    Signature,
    /// `htm` is not the request's method (check 8).
    Htm,
    /// `htu` is not the request's URI, query and fragment aside (check 9).
    Htu,
    /// The server requires a nonce and the proof has none, or an expired or unknown one (check
    /// 10): answered `use_dpop_nonce` with a fresh `DPoP-Nonce`.
    Nonce,
    /// `iat` is outside the accepted window (check 11).
    Iat,
    /// A resource request's proof lacks `ath`, or its `ath` is not the access token's hash
    /// (check 12).
    Ath,
    /// The access token is bound to another key than the proof's (check 12).
    KeyMismatch,
    /// The proof's `jti` was seen before within its window: a replay (§11.1).
    Replayed,
    /// The `jti` is empty or longer than [`MAX_JTI_LEN`].
    Jti,
}

impl DpopError {
    /// The error code for the client: `use_dpop_nonce` for a missing or stale nonce,
    /// `invalid_dpop_proof` for everything else (RFC 9449 §12.2).
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::Nonce => "use_dpop_nonce",
            _ => "invalid_dpop_proof",
        }
    }
}

impl fmt::Display for DpopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("a DPoP proof is required"),
            Self::Multiple => f.write_str("more than one DPoP header"),
            Self::Malformed => f.write_str("the DPoP proof is not a well-formed JWT"),
            Self::MissingClaim(what) => write!(f, "the DPoP proof lacks a valid `{what}`"),
            Self::Typ => f.write_str("the DPoP proof's typ is not dpop+jwt"),
            Self::Alg => f.write_str("the DPoP proof's alg is not accepted"),
            Self::Jwk => f.write_str("the DPoP proof's jwk is not an accepted public key"),
            Self::PrivateKey => f.write_str("the DPoP proof's jwk holds a private key"),
            Self::Signature => f.write_str("the DPoP proof's signature does not verify"),
            Self::Htm => f.write_str("the DPoP proof's htm is not the request's method"),
            Self::Htu => f.write_str("the DPoP proof's htu is not the request's URI"),
            Self::Nonce => f.write_str("a fresh DPoP nonce is required"),
            Self::Iat => f.write_str("the DPoP proof's iat is outside the accepted window"),
            Self::Ath => f.write_str("the DPoP proof's ath is not the access token's hash"),
            Self::KeyMismatch => f.write_str("the access token is bound to another key"),
            Self::Replayed => f.write_str("the DPoP proof was already used"),
            Self::Jti => f.write_str("the DPoP proof's jti is empty or too long"),
        }
    }
}

impl std::error::Error for DpopError {}

/// What the proof must match: the request it came with.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct ProofContext<'a> {
    /// The HTTP method (`htm`), e.g. `POST`.
    pub method: &'a str,
    /// The request's URI as the client addressed it (`htu`), e.g.
    /// `https://as.example/token`; its query and fragment are ignored.
    pub uri: &'a str,
    /// For a request to a protected resource, the access token it carries: the proof must
    /// hold its hash (`ath`).
    pub access_token: Option<&'a str>,
    /// A nonce check, if the server requires nonces: the proof's `nonce` must pass it.
    pub nonces: Option<&'a DpopNonces>,
}

impl<'a> ProofContext<'a> {
    /// A proof for a `method` request to `uri`, with no access token and no nonce.
    #[must_use]
    pub fn new(method: &'a str, uri: &'a str) -> Self {
        Self {
            method,
            uri,
            access_token: None,
            nonces: None,
        }
    }

    /// The same for a resource request carrying `access_token`.
    #[must_use]
    pub fn with_access_token(mut self, access_token: &'a str) -> Self {
        self.access_token = Some(access_token);
        self
    }

    /// The same requiring a nonce that `nonces` accepts.
    #[must_use]
    pub fn with_nonces(mut self, nonces: Option<&'a DpopNonces>) -> Self {
        self.nonces = nonces;
        self
    }
}

/// A proof that passed every check but the replay check.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedProof {
    /// The thumbprint of the key that signed it (RFC 7638): what tokens are bound to.
    pub jkt: Confirmation,
    /// Its unique identifier.
    pub jti: String,
    /// Its `iat`, Unix ms.
    pub iat_ms: u64,
    /// Until when its `jti` must be remembered, Unix ms: after that, its `iat` is out of the
    /// window and it is refused anyway.
    pub replay_until_ms: u64,
}

fn b64(part: &str) -> Result<Vec<u8>, DpopError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| DpopError::Malformed)
}

fn object(bytes: &[u8]) -> Result<Map<String, Value>, DpopError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(DpopError::Malformed),
    }
}

fn string<'m>(m: &'m Map<String, Value>, name: &'static str) -> Result<&'m str, DpopError> {
    m.get(name)
        .and_then(Value::as_str)
        .ok_or(DpopError::MissingClaim(name))
}

/// A public key from a proof's `jwk`, and its RFC 7638 thumbprint.
enum PublicKey {
    P256(Box<p256::ecdsa::VerifyingKey>),
    Ed25519(Box<ed25519_dalek::VerifyingKey>),
}

/// Decodes a base64url coordinate of exactly 32 bytes (canonical: the engine refuses padding
/// and non-zero trailing bits, so the re-encoded thumbprint input is the text given).
fn coordinate(jwk: &Map<String, Value>, name: &'static str) -> Result<[u8; 32], DpopError> {
    let text = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or(DpopError::Jwk)?;
    URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or(DpopError::Jwk)
}

fn public_key(
    jwk: &Map<String, Value>,
    alg: DpopAlg,
) -> Result<(PublicKey, Confirmation), DpopError> {
    // A private key in the header (RFC 9449 §4.3 check 7): EC and OKP keys carry it as `d`.
    if jwk.contains_key("d") {
        return Err(DpopError::PrivateKey);
    }
    let member = |name| jwk.get(name).and_then(Value::as_str);
    // The thumbprint input (RFC 7638 §3.2): the required members only, in lexicographic order,
    // no whitespace.
    let (key, input) = match (alg, member("kty"), member("crv")) {
        (DpopAlg::Es256, Some("EC"), Some("P-256")) => {
            let (x, y) = (coordinate(jwk, "x")?, coordinate(jwk, "y")?);
            let mut sec1 = [4u8; 65];
            if let Some((_, xy)) = sec1.split_first_mut() {
                let (xs, ys) = xy.split_at_mut(32);
                xs.copy_from_slice(&x);
                ys.copy_from_slice(&y);
            }
            let key =
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| DpopError::Jwk)?;
            let input = format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                URL_SAFE_NO_PAD.encode(x),
                URL_SAFE_NO_PAD.encode(y)
            );
            (PublicKey::P256(Box::new(key)), input)
        }
        (DpopAlg::EdDsa | DpopAlg::Ed25519, Some("OKP"), Some("Ed25519")) => {
            let x = coordinate(jwk, "x")?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| DpopError::Jwk)?;
            let input = format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                URL_SAFE_NO_PAD.encode(x)
            );
            (PublicKey::Ed25519(Box::new(key)), input)
        }
        _ => return Err(DpopError::Jwk),
    };
    let digest: [u8; 32] = Sha256::digest(input.as_bytes()).into();
    Ok((key, Confirmation::Jkt(digest)))
}

/// `ath` (RFC 9449 §4.2): the base64url SHA-256 of the access token's ASCII.
#[must_use]
pub fn access_token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// A URI reduced to what `htu` comparison looks at (RFC 9449 §4.3 check 9, RFC 3986 §6.2.2
/// and §6.2.3): scheme and host in lower case, the default port dropped, an empty path as `/`,
/// query and fragment removed. `None` if it is not an absolute `http(s)` URI.
fn normalized_uri(uri: &str) -> Option<String> {
    let uri = uri.split(['?', '#']).next()?;
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}{path}"))
}

/// Checks a DPoP proof against the request it came with, at `now_ms`, per RFC 9449 §4.3:
/// compact JWS with JSON parts, `typ` `dpop+jwt`, an accepted asymmetric `alg`, a public `jwk`
/// of that algorithm's type that verifies the signature, `htm` and `htu` of this request, `iat`
/// within the window, a `jti`, `ath` for a resource request and a valid `nonce` when required.
/// What it does not check: whether the `jti` was seen before (the caller asks
/// [`tokendb::TokenDb::remember_proof`] until [`VerifiedProof::replay_until_ms`]) and whether an
/// access token is bound to this key (compare [`VerifiedProof::jkt`] with its `cnf`).
///
/// # Errors
/// The first check that fails, as a [`DpopError`].
pub fn verify_proof(
    proof: &str,
    context: &ProofContext<'_>,
    config: &DpopConfig,
    now_ms: u64,
) -> Result<VerifiedProof, DpopError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(DpopError::Malformed);
    }
    let mut parts = proof.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DpopError::Malformed);
    };
    let header = object(&b64(h)?)?;
    let payload = object(&b64(p)?)?;
    let signature = b64(s)?;

    match header.get("typ").map(Value::as_str) {
        None | Some(None) => return Err(DpopError::MissingClaim("typ")),
        Some(Some("dpop+jwt")) => {}
        Some(Some(_)) => return Err(DpopError::Typ),
    }
    let alg = DpopAlg::from_name(string(&header, "alg")?)
        .filter(|a| config.accepted_algs().contains(a))
        .ok_or(DpopError::Alg)?;
    // No extension this checker understands may be critical (RFC 7515 §4.1.11).
    if header.contains_key("crit") {
        return Err(DpopError::Jwk);
    }
    let Some(Value::Object(jwk)) = header.get("jwk") else {
        return Err(DpopError::MissingClaim("jwk"));
    };
    let (key, jkt) = public_key(jwk, alg)?;
    let signed = proof
        .get(..h.len() + 1 + p.len())
        .ok_or(DpopError::Malformed)?
        .as_bytes();
    let verified = match key {
        PublicKey::P256(k) => p256::ecdsa::Signature::from_slice(&signature)
            .ok()
            .is_some_and(|sig| {
                use p256::ecdsa::signature::Verifier as _;
                k.verify(signed, &sig).is_ok()
            }),
        PublicKey::Ed25519(k) => <[u8; 64]>::try_from(signature.as_slice())
            .ok()
            .is_some_and(|b| {
                k.verify_strict(signed, &ed25519_dalek::Signature::from_bytes(&b))
                    .is_ok()
            }),
    };
    if !verified {
        return Err(DpopError::Signature);
    }

    let jti = string(&payload, "jti")?;
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(DpopError::Jti);
    }
    if string(&payload, "htm")? != context.method {
        return Err(DpopError::Htm);
    }
    let htu = string(&payload, "htu")?;
    match (normalized_uri(htu), normalized_uri(context.uri)) {
        (Some(a), Some(b)) if a == b => {}
        _ => return Err(DpopError::Htu),
    }
    let iat_ms = payload
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(DpopError::MissingClaim("iat"))?
        .saturating_mul(1000);
    let max_age = u64::try_from(config.max_age.as_millis()).unwrap_or(u64::MAX);
    let max_skew = u64::try_from(config.max_skew.as_millis()).unwrap_or(u64::MAX);
    // `iat` has second resolution: a proof made at any millisecond of its second is inside
    // the window for its whole length.
    if iat_ms.saturating_add(999).saturating_add(max_age) < now_ms
        || iat_ms > now_ms.saturating_add(max_skew)
    {
        return Err(DpopError::Iat);
    }
    if let Some(token) = context.access_token {
        let ath = payload.get("ath").and_then(Value::as_str);
        if ath != Some(access_token_hash(token).as_str()) {
            return Err(DpopError::Ath);
        }
    }
    if let Some(nonces) = context.nonces {
        let ok = payload
            .get("nonce")
            .and_then(Value::as_str)
            .is_some_and(|n| nonces.accepts(n, now_ms));
        if !ok {
            return Err(DpopError::Nonce);
        }
    }
    Ok(VerifiedProof {
        jkt,
        jti: jti.to_owned(),
        iat_ms,
        replay_until_ms: iat_ms
            .saturating_add(999)
            .saturating_add(max_age)
            .saturating_add(1),
    })
}

#[cfg(test)]
pub(crate) mod tests;
