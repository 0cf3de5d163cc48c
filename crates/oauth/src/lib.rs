//! # tokendb-oauth
//!
//! The OAuth 2.0 endpoints an authorization server builds on tokendb, written once, with the
//! RFCs' exact answers:
//!
//! - the token endpoint's `refresh_token` grant (RFC 6749 §6) on tokendb's one-write refresh:
//!   the §5.1 body (`access_token`, `token_type`, `expires_in`, `refresh_token`, `scope`), §5.2
//!   errors with their status codes, `Cache-Control: no-store`;
//! - revocation (RFC 7009): 200 for unknown or malformed tokens;
//! - introspection (RFC 7662), for authenticated introspectors only;
//! - bearer validation for resource servers (RFC 6750), with its `WWW-Authenticate` challenges;
//! - client authentication (RFC 6749 §2.3): `client_secret_basic`, `client_secret_post` and
//!   public clients, secrets compared in constant time; a token is bound to its client.
//!
//! Framework-neutral: each endpoint takes a [`Request`] (the `Authorization` and
//! `Content-Type` headers and the body) and returns a [`Response`] (status, headers, body). The
//! `axum` feature serves them as a `Router`.
//!
//! ```
//! use tokendb::{Config, Grant, MasterKey, TokenDb};
//! use tokendb_oauth::{Client, OAuth, Request, StaticClients};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let db = TokenDb::create(dir.path().join("t.tdb"), &MasterKey::generate(), Config::default())?;
//! let rt = db.issue_refresh(&Grant::new("alice", "web", "openid profile")?)?;
//! let oauth = OAuth::new(db.asynchronous(), StaticClients::new().with("web", Client::confidential("s3cret")));
//!
//! let body = format!("grant_type=refresh_token&refresh_token={}&client_id=web&client_secret=s3cret", rt.token.expose());
//! let response = oauth.token(&Request::new(None, Some("application/x-www-form-urlencoded"), body.as_bytes())).await;
//! assert_eq!(response.status, 200);
//! assert_eq!(response.header("Cache-Control"), Some("no-store"));
//! let json: serde_json::Value = serde_json::from_slice(&response.body)?;
//! assert_eq!(json["token_type"], "Bearer");
//! assert_eq!(json["scope"], "openid profile");
//! # Ok(())
//! # }
//! ```
//!
//! Its place: on top of the `tokendb` crate only; the reference server (issue 16) builds on it.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod bearer;
mod client;
pub mod dpop;
mod form;
mod introspect;
mod response;
mod revoke;
mod sender;
mod token;

#[cfg(feature = "axum")]
pub mod axum;

pub use bearer::Bearer;
pub use client::{Authenticated, Client, ClientSecret, ClientStore, StaticClients};
pub use form::Request;
pub use response::Response;
pub use sender::DpopSetup;

use std::sync::Arc;
use tokendb::AsyncTokenDb;

/// The endpoints over one database and one client registry. Cheap to clone.
#[derive(Clone)]
pub struct OAuth {
    db: AsyncTokenDb,
    clients: Arc<dyn ClientStore>,
    realm: String,
    dpop: Option<Arc<DpopSetup>>,
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

impl OAuth {
    /// The endpoints over `db`, authenticating clients against `clients`. The RFC 6750 realm is
    /// `tokendb` until [`OAuth::with_realm`].
    pub fn new(db: AsyncTokenDb, clients: impl ClientStore + 'static) -> Self {
        Self {
            db,
            clients: Arc::new(clients),
            realm: "tokendb".to_owned(),
            dpop: None,
        }
    }

    /// Authenticates the client of a form request (RFC 6749 §2.3: Basic header, body
    /// credentials, or a public client's `client_id`), for the embedder's own endpoints (the
    /// authorization code grant of its token endpoint, say).
    ///
    /// # Errors
    /// The RFC 6749 §5.2 response to send: `invalid_request` or `invalid_client`.
    pub fn authenticate(&self, request: &Request<'_>) -> Result<Authenticated, Response> {
        self.form_and_client(request).map(|(_, client)| client)
    }

    /// A form request's parameters and its authenticated client: how every endpoint starts.
    fn form_and_client(
        &self,
        request: &Request<'_>,
    ) -> Result<(form::Form, Authenticated), Response> {
        let form = form::Form::parse(request)?;
        let client = client::authenticate(
            &*self.clients,
            &client::Presented {
                authorization: request.authorization,
                client_id: form.get("client_id"),
                client_secret: form.get("client_secret"),
            },
        )?;
        Ok((form, client))
    }

    /// The same endpoints with another realm in their `WWW-Authenticate` challenges. Quotes
    /// and backslashes are dropped (the value is a quoted string).
    #[must_use]
    pub fn with_realm(mut self, realm: &str) -> Self {
        self.realm = realm.chars().filter(|c| *c != '"' && *c != '\\').collect();
        self
    }
}

#[cfg(test)]
mod sender_tests;
#[cfg(test)]
mod tests;
