//! Token revocation (RFC 7009).

use crate::OAuth;
use crate::form::Request;
use crate::response::{Response, error};
use crate::token::engine_error;
use tokendb::Error;

impl OAuth {
    /// The revocation endpoint (RFC 7009 §2). The client authenticates; the token, if it is one
    /// of its own, is revoked — a refresh token with its whole family and every access token of
    /// it. An unknown, malformed or already revoked token answers 200 like a revoked one
    /// (§2.2); a token issued to another client is refused (§2.1), changing nothing.
    /// `token_type_hint` is accepted and not needed: tokendb's tokens say what they are.
    pub async fn revoke(&self, req: &Request<'_>) -> Response {
        match self.revoke_token(req).await {
            Ok(r) | Err(r) => r,
        }
    }

    async fn revoke_token(&self, req: &Request<'_>) -> Result<Response, Response> {
        let (form, client) = self.form_and_client(req)?;
        let token = form.require("token")?;
        // Whose token is it? Only an active one can say (introspection opens its sealed body);
        // an inactive one is revoked already, expired, or not a token: 200 (§2.2).
        let owner = match self.db.introspect(token).await {
            Ok(i) => i.client_id().map(str::to_owned),
            Err(Error::Malformed(_)) => return Ok(Response::ok_empty()),
            Err(e) => return Err(engine_error(&e)),
        };
        match owner {
            None => Ok(Response::ok_empty()),
            Some(owner) if owner != client.client_id => Err(error(
                400,
                "unauthorized_client",
                "the token was not issued to this client",
            )),
            Some(_) => match self.db.revoke(token).await {
                Ok(_) | Err(Error::Malformed(_)) => Ok(Response::ok_empty()),
                Err(e) => Err(engine_error(&e)),
            },
        }
    }
}
