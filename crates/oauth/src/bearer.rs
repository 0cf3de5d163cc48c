//! Bearer tokens at a resource server (RFC 6750).

use crate::OAuth;
use crate::response::Response;
use tokendb::{Scope, TokenKind};

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
    /// - an unknown, expired, revoked or malformed token, or a refresh token: 401
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
        let Some(c) = claims.filter(|c| c.token_type == TokenKind::Access) else {
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
        Ok(Bearer {
            sub: c.sub,
            client_id: c.client_id,
            scope: c.scope,
            exp: c.exp,
        })
    }
}
