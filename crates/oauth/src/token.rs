//! The token endpoint's `refresh_token` grant (RFC 6749 §6), on tokendb's one-write refresh.

use crate::OAuth;
use crate::form::Request;
use crate::response::{Response, error};
use serde::Serialize;
use tokendb::{Confirmation, Error, Scope};

/// The RFC 6749 §5.1 body.
#[derive(Serialize)]
struct Issued<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    refresh_token: &'a str,
    scope: String,
}

/// The §5.2 response for an error of the engine. What the client learns is the code only.
pub(crate) fn engine_error(e: &Error) -> Response {
    match e.oauth_error() {
        "invalid_grant" => error(
            400,
            "invalid_grant",
            "the refresh token is invalid, expired or revoked",
        ),
        "invalid_scope" => error(
            400,
            "invalid_scope",
            "the requested scope exceeds the grant",
        ),
        "invalid_request" => error(400, "invalid_request", "the request is malformed"),
        _ => error(500, "server_error", "the token store failed; retry later"),
    }
}

impl OAuth {
    /// The token endpoint for `grant_type=refresh_token`: authenticates the client, rotates
    /// the refresh token and issues an access token with the granted scope (or the narrower one
    /// requested) in one durable write, and answers RFC 6749 §5.1 (or §5.2). Other grant types
    /// answer `unsupported_grant_type`: the embedder routes them elsewhere.
    pub async fn token(&self, req: &Request<'_>) -> Response {
        match self.refresh_grant(req).await {
            Ok(r) | Err(r) => r,
        }
    }

    async fn refresh_grant(&self, req: &Request<'_>) -> Result<Response, Response> {
        let (form, client) = self.form_and_client(req)?;
        match form.require("grant_type")? {
            "refresh_token" => {}
            _ => {
                return Err(error(
                    400,
                    "unsupported_grant_type",
                    "this endpoint serves the refresh_token grant",
                ));
            }
        }
        let token = form.require("refresh_token")?;
        let scope = match form.get("scope") {
            Some(s) => Some(
                Scope::parse(s)
                    .map_err(|_| error(400, "invalid_scope", "the scope parameter is not valid"))?,
            ),
            None => None,
        };
        // RFC 9449 §5: a proof, when there is one, must be valid before anything else; its key
        // is what a sender-constrained family's refresh must prove. Without a proof, a
        // sender-constrained family refuses (and, by default, is revoked).
        let proof = self.check_token_request_proof(req).await?;
        let proven = proof.as_ref().map(|p| p.jkt);
        let r = self
            .db
            .refresh_confirmed(token, &client.client_id, scope.as_ref(), proven.as_ref())
            .await
            .map_err(|e| engine_error(&e))?;
        let dpop_bound = matches!(r.access.confirmation, Some(Confirmation::Jkt(_)));
        let response = Response::json(
            200,
            &Issued {
                access_token: r.access.token.expose(),
                token_type: if dpop_bound { "DPoP" } else { "Bearer" },
                expires_in: r.access.expires.expires_in,
                refresh_token: r.refresh.token.expose(),
                scope: r.access.scope.to_string(),
            },
        );
        Ok(match self.dpop_nonce() {
            Some(n) => response.with_header("DPoP-Nonce", n),
            None => response,
        })
    }
}
