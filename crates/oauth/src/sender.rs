//! Sender-constrained tokens at the endpoints: DPoP proofs checked against the request and the
//! replay cache (RFC 9449 §4.3, §11.1), the token endpoint's binding (§5) and the `DPoP`
//! authentication scheme of protected resources (§7), with its challenges and nonces (§8, §9).

use crate::OAuth;
use crate::dpop::{DpopConfig, DpopError, DpopNonces, ProofContext, VerifiedProof, verify_proof};
use crate::form::DpopHeader;
use crate::response::Response;
use serde_json::json;
use std::sync::Arc;

/// DPoP at the endpoints: how proofs are checked, where the token endpoint is, and the server's
/// nonces if it requires them. Made with [`DpopSetup::new`].
#[derive(Debug)]
#[non_exhaustive]
pub struct DpopSetup {
    /// How proofs are checked.
    pub config: DpopConfig,
    /// The token endpoint's URI as clients address it: a token request's proof must name it
    /// (`htu`).
    pub token_uri: String,
    /// Nonces the server requires in proofs (RFC 9449 §8), if any.
    pub nonces: Option<DpopNonces>,
}

impl DpopSetup {
    /// DPoP with `config`, the token endpoint at `token_uri`, and no nonces.
    #[must_use]
    pub fn new(config: DpopConfig, token_uri: &str) -> Self {
        Self {
            config,
            token_uri: token_uri.to_owned(),
            nonces: None,
        }
    }

    /// The same requiring server nonces from `nonces`.
    #[must_use]
    pub fn with_nonces(mut self, nonces: DpopNonces) -> Self {
        self.nonces = Some(nonces);
        self
    }
}

/// Where a proof was presented, which decides how a refusal is told.
#[derive(Clone, Copy)]
pub(crate) enum At {
    /// The token endpoint: a 400 with an error body (RFC 9449 §5, §8).
    TokenEndpoint,
    /// A protected resource: a 401 with a `DPoP` challenge (§7.1, §9).
    Resource,
}

impl OAuth {
    /// The same endpoints accepting DPoP proofs (RFC 9449): the token endpoint binds a
    /// sender-constrained family's refresh to the proof's key and answers `token_type` `DPoP`;
    /// [`OAuth::authorize_resource`] accepts the `DPoP` scheme. Without it, `DPoP` headers are
    /// ignored and every token is a bearer token.
    #[must_use]
    pub fn with_dpop(mut self, setup: DpopSetup) -> Self {
        self.dpop = Some(Arc::new(setup));
        self
    }

    /// A fresh nonce for a `DPoP-Nonce` header, if the server requires nonces: for the
    /// embedder's own endpoints (its authorization code grant, say).
    #[must_use]
    pub fn dpop_nonce(&self) -> Option<String> {
        let setup = self.dpop.as_ref()?;
        Some(setup.nonces.as_ref()?.issue(self.db.now_ms()))
    }

    /// Checks the `DPoP` header of a request made with `method` to `uri` (carrying
    /// `access_token` for a resource request), then remembers its `jti` so that it is accepted
    /// once: the whole of RFC 9449 §4.3, for the embedder's own endpoints (its authorization
    /// code grant binds the new family to the returned key with
    /// [`tokendb::Grant::with_confirmation`]). `Ok(None)`: DPoP is off, or the request has no
    /// proof.
    ///
    /// # Errors
    /// The token endpoint's RFC 9449 response for a refused proof: 400 `invalid_dpop_proof`,
    /// or `use_dpop_nonce` with a fresh `DPoP-Nonce`.
    pub async fn check_token_request_proof(
        &self,
        request: &crate::Request<'_>,
    ) -> Result<Option<VerifiedProof>, Response> {
        let Some(setup) = self.dpop.clone() else {
            return Ok(None);
        };
        match request.dpop() {
            DpopHeader::Absent => Ok(None),
            DpopHeader::Invalid => Err(self.refuse_proof(DpopError::Multiple, At::TokenEndpoint)),
            DpopHeader::One(proof) => {
                let context =
                    ProofContext::new("POST", &setup.token_uri).with_nonces(setup.nonces.as_ref());
                self.check_proof(proof, &context, At::TokenEndpoint)
                    .await
                    .map(Some)
            }
        }
    }

    /// One proof: verified against `context`, then its `jti` remembered.
    pub(crate) async fn check_proof(
        &self,
        proof: &str,
        context: &ProofContext<'_>,
        at: At,
    ) -> Result<VerifiedProof, Response> {
        let verified = self.verify_only(proof, context, at)?;
        self.remember(verified, at).await
    }

    /// A proof verified against `context` (RFC 9449 §4.3), its replay not checked yet.
    pub(crate) fn verify_only(
        &self,
        proof: &str,
        context: &ProofContext<'_>,
        at: At,
    ) -> Result<VerifiedProof, Response> {
        let config = match &self.dpop {
            Some(s) => &s.config,
            None => return Err(self.refuse_proof(DpopError::Missing, at)),
        };
        verify_proof(proof, context, config, self.db.now_ms()).map_err(|e| self.refuse_proof(e, at))
    }

    /// Remembers a verified proof's `jti`: refused if it was seen before (§11.1). One durable
    /// write, so it comes after every check that needs none.
    pub(crate) async fn remember(
        &self,
        verified: VerifiedProof,
        at: At,
    ) -> Result<VerifiedProof, Response> {
        let new = self
            .db
            .remember_proof(&verified.jkt, &verified.jti, verified.replay_until_ms)
            .await
            .map_err(|e| crate::token::engine_error(&e))?;
        if !new {
            return Err(self.refuse_proof(DpopError::Replayed, at));
        }
        Ok(verified)
    }

    /// The answer to a refused proof.
    pub(crate) fn refuse_proof(&self, e: DpopError, at: At) -> Response {
        let nonce = match e {
            DpopError::Nonce => self.dpop_nonce(),
            _ => None,
        };
        let r = match at {
            At::TokenEndpoint => Response::json(
                400,
                &json!({ "error": e.code(), "error_description": e.to_string() }),
            ),
            At::Resource => self.dpop_challenge(401, Some((e.code(), &e.to_string()))),
        };
        match nonce {
            Some(n) => r.with_header("DPoP-Nonce", n),
            None => r,
        }
    }

    /// A `WWW-Authenticate: DPoP` challenge (RFC 9449 §7.1): realm, the error if any, and the
    /// accepted algorithms.
    pub(crate) fn dpop_challenge(&self, status: u16, error: Option<(&str, &str)>) -> Response {
        let algs = self.dpop.as_ref().map_or_else(
            || DpopConfig::DEFAULT.algs_value(),
            |s| s.config.algs_value(),
        );
        let mut v = format!("DPoP realm=\"{}\"", self.realm);
        if let Some((code, description)) = error {
            v.push_str(&format!(
                ", error=\"{code}\", error_description=\"{description}\""
            ));
        }
        v.push_str(&format!(", algs=\"{algs}\""));
        Response {
            status,
            headers: vec![
                ("WWW-Authenticate", v),
                ("Cache-Control", "no-store".to_owned()),
            ],
            body: Vec::new(),
        }
    }
}
