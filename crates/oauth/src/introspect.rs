//! Token introspection (RFC 7662).

use crate::OAuth;
use crate::form::Request;
use crate::response::{Response, error};
use crate::token::engine_error;
use serde_json::{Map, Value};
use tokendb::{Error, TokenKind};

impl OAuth {
    /// The introspection endpoint (RFC 7662 §2). Only an authenticated client registered as an
    /// introspector may call it (§2.1: the endpoint requires authorization, against token
    /// scanning). An inactive, unknown or malformed token answers `{"active": false}` and
    /// nothing else (§2.2); an active one `active`, `scope`, `client_id`, `sub`, `exp`, `iat`,
    /// `token_type` (`Bearer` for access tokens, RFC 6749 §5.1's type; absent for refresh
    /// tokens, which have none) and the members of the caller's claims given at issue when they
    /// are a JSON object (never overriding those above).
    pub async fn introspect(&self, req: &Request<'_>) -> Response {
        match self.introspect_token(req).await {
            Ok(r) | Err(r) => r,
        }
    }

    async fn introspect_token(&self, req: &Request<'_>) -> Result<Response, Response> {
        let (form, client) = self.form_and_client(req)?;
        if !client.may_introspect {
            return Err(error(
                403,
                "unauthorized_client",
                "this client may not introspect tokens",
            ));
        }
        let token = form.require("token")?;
        let mut body = Map::new();
        let claims = match self.db.introspect(token).await {
            Ok(i) => i.claims,
            Err(Error::Malformed(_)) => None,
            Err(e) => return Err(engine_error(&e)),
        };
        let Some(c) = claims else {
            body.insert("active".into(), Value::Bool(false));
            return Ok(Response::json(200, &body));
        };
        if let Ok(Value::Object(extra)) = serde_json::from_slice::<Value>(&c.extra) {
            body.extend(extra);
        }
        body.insert("active".into(), Value::Bool(true));
        body.insert("scope".into(), Value::String(c.scope.to_string()));
        body.insert("client_id".into(), Value::String(c.client_id));
        body.insert("sub".into(), Value::String(c.sub));
        body.insert("exp".into(), Value::from(c.exp));
        body.insert("iat".into(), Value::from(c.iat));
        // RFC 7662 §2.2 / RFC 7800 `cnf`: a resource server checks its request's proof
        // against it (RFC 9449 §6.2, RFC 8705 §3.2).
        match &c.cnf {
            Some(cnf) => {
                let mut m = Map::new();
                m.insert(cnf.member().into(), Value::String(cnf.to_base64url()));
                body.insert("cnf".into(), Value::Object(m));
            }
            None => {
                body.remove("cnf");
            }
        }
        let dpop = matches!(c.cnf, Some(tokendb::Confirmation::Jkt(_)));
        match c.token_type {
            TokenKind::Access => {
                let kind = if dpop { "DPoP" } else { "Bearer" };
                body.insert("token_type".into(), Value::String(kind.into()));
            }
            _ => {
                body.remove("token_type");
            }
        }
        Ok(Response::json(200, &body))
    }
}
