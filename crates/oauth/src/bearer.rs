//! Access tokens at a resource server: bearer tokens (RFC 6750) and DPoP-bound tokens with
//! their proofs (RFC 9449 §7).

use crate::OAuth;
use crate::dpop::{DpopError, ProofContext};
use crate::response::Response;
use crate::sender::At;
use tokendb::{Confirmation, Scope, TokenClaims, TokenKind};

/// An access token a request proved, for the resource server's handler.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Bearer {
    /// The subject it was issued for.
    pub sub: String,
    /// The client it was issued to.
    pub client_id: String,
    /// Its scope.
    pub scope: Scope,
    /// When it expires, Unix seconds.
    pub exp: u64,
    /// The key it is bound to, when it came with a DPoP proof of that key
    /// ([`OAuth::authorize_resource`]); `None` for a bearer token.
    pub cnf: Option<Confirmation>,
}

impl Bearer {
    fn from_claims(c: TokenClaims) -> Self {
        Self {
            sub: c.sub,
            client_id: c.client_id,
            scope: c.scope,
            exp: c.exp,
            cnf: c.cnf,
        }
    }
}

fn challenge(realm: &str, error: Option<(&str, &str)>, scope: Option<&Scope>) -> String {
    let mut v = format!("Bearer realm=\"{realm}\"");
    if let Some((code, description)) = error {
        v.push_str(&format!(
            ", error=\"{code}\", error_description=\"{description}\""
        ));
    }
    if let Some(s) = scope {
        v.push_str(&format!(", scope=\"{s}\""));
    }
    v
}

fn refuse(status: u16, www: String) -> Response {
    Response {
        status,
        headers: vec![
            ("WWW-Authenticate", www),
            ("Cache-Control", "no-store".to_owned()),
        ],
        body: Vec::new(),
    }
}

impl OAuth {
    /// Checks a request's `Authorization: Bearer` header (RFC 6750 §2.1) for an active access
    /// token holding every scope of `required` (if given). The refusals are RFC 6750 §3's:
    /// - no credentials: 401 with a bare `Bearer realm=…` challenge (no error code, §3.1);
    /// - a header that is not one bearer token: 400 `invalid_request`;
    /// - an unknown, expired, revoked or malformed token, a refresh token, or a
    ///   sender-constrained token (it is only good with its proof, RFC 9449 §7.2): 401
    ///   `invalid_token`;
    /// - a valid token without the scope: 403 `insufficient_scope`, naming the scope needed.
    ///
    /// # Errors
    /// The response to send instead of the resource.
    pub async fn authorize_bearer(
        &self,
        authorization: Option<&str>,
        required: Option<&Scope>,
    ) -> Result<Bearer, Response> {
        let realm = &self.realm;
        let Some(header) = authorization else {
            return Err(refuse(401, challenge(realm, None, None)));
        };
        let token = match header.trim().split_once(' ') {
            Some((scheme, token))
                if scheme.eq_ignore_ascii_case("bearer")
                    && !token.trim().is_empty()
                    && !token.trim().contains(' ') =>
            {
                token.trim()
            }
            _ => {
                return Err(refuse(
                    400,
                    challenge(
                        realm,
                        Some(("invalid_request", "expected one Bearer token")),
                        None,
                    ),
                ));
            }
        };
        let invalid = || {
            refuse(
                401,
                challenge(
                    realm,
                    Some((
                        "invalid_token",
                        "the access token is invalid, expired or revoked",
                    )),
                    None,
                ),
            )
        };
        let claims = match self.db.introspect(token).await {
            Ok(i) => i.claims,
            Err(tokendb::Error::Malformed(_)) => None,
            Err(e) => return Err(crate::token::engine_error(&e)),
        };
        let Some(c) = claims.filter(|c| c.token_type == TokenKind::Access && c.cnf.is_none())
        else {
            return Err(invalid());
        };
        if let Some(needed) = required
            && !needed.is_subset_of(&c.scope)
        {
            return Err(refuse(
                403,
                challenge(
                    realm,
                    Some((
                        "insufficient_scope",
                        "the access token lacks the scope needed",
                    )),
                    Some(needed),
                ),
            ));
        }
        Ok(Bearer::from_claims(c))
    }

    /// Checks a resource request's credentials, either scheme: `Authorization: DPoP` with the
    /// request's one `DPoP` proof (RFC 9449 §7), or `Authorization: Bearer` for a token that is
    /// not sender-constrained ([`OAuth::authorize_bearer`]). `method` and `uri` are the request's
    /// (the proof must name them); `dpop_headers` are the values of every `DPoP` header it had.
    /// Without [`OAuth::with_dpop`] this is [`OAuth::authorize_bearer`].
    ///
    /// The refusals, each with its `WWW-Authenticate` challenge:
    /// - no credentials: 401 with a `Bearer` and a `DPoP` challenge (with `algs`);
    /// - a proof that fails RFC 9449 §4.3 (including its `ath` and a replayed `jti`), no proof,
    ///   several: 401 `DPoP error="invalid_dpop_proof"`; a nonce needed: 401
    ///   `error="use_dpop_nonce"` with a `DPoP-Nonce` header;
    /// - an unknown, expired or revoked token, a refresh token, or one not bound to a key: 401
    ///   `error="invalid_token"`; one bound to another key than the proof's: 401
    ///   `invalid_dpop_proof`;
    /// - a valid token without the scope: 403 `insufficient_scope`.
    ///
    /// # Errors
    /// The response to send instead of the resource.
    pub async fn authorize_resource(
        &self,
        authorization: Option<&str>,
        dpop_headers: &[Option<&str>],
        (method, uri): (&str, &str),
        required: Option<&Scope>,
    ) -> Result<Bearer, Response> {
        let Some(setup) = self.dpop.clone() else {
            return self.authorize_bearer(authorization, required).await;
        };
        let Some(header) = authorization else {
            let mut r = self.dpop_challenge(401, None);
            r.headers
                .insert(0, ("WWW-Authenticate", challenge(&self.realm, None, None)));
            return Err(r);
        };
        let token = match header.trim().split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("dpop") => token.trim(),
            _ => return self.authorize_bearer(authorization, required).await,
        };
        let proof = match dpop_headers {
            [Some(p)] => *p,
            [] => return Err(self.refuse_proof(DpopError::Missing, At::Resource)),
            _ => return Err(self.refuse_proof(DpopError::Multiple, At::Resource)),
        };
        if token.is_empty() || token.contains(' ') {
            return Err(self.dpop_challenge(
                400,
                Some(("invalid_request", "expected one DPoP-bound access token")),
            ));
        }
        let context = ProofContext::new(method, uri)
            .with_access_token(token)
            .with_nonces(setup.nonces.as_ref());
        let verified = self.verify_only(proof, &context, At::Resource)?;
        let invalid = || {
            self.dpop_challenge(
                401,
                Some((
                    "invalid_token",
                    "the access token is invalid, expired or revoked",
                )),
            )
        };
        let claims = match self.db.introspect(token).await {
            Ok(i) => i.claims,
            Err(tokendb::Error::Malformed(_)) => None,
            Err(e) => return Err(crate::token::engine_error(&e)),
        };
        let Some(c) = claims.filter(|c| c.token_type == TokenKind::Access) else {
            return Err(invalid());
        };
        match c.cnf {
            Some(cnf) if cnf == verified.jkt => {}
            Some(_) => return Err(self.refuse_proof(DpopError::KeyMismatch, At::Resource)),
            None => return Err(invalid()),
        }
        if let Some(needed) = required
            && !needed.is_subset_of(&c.scope)
        {
            let mut r = self.dpop_challenge(
                403,
                Some((
                    "insufficient_scope",
                    "the access token lacks the scope needed",
                )),
            );
            if let Some((_, v)) = r.headers.first_mut() {
                v.push_str(&format!(", scope=\"{needed}\""));
            }
            return Err(r);
        }
        self.remember(verified, At::Resource).await?;
        Ok(Bearer::from_claims(c))
    }
}
