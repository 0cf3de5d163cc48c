//! Client authentication (RFC 6749 §2.3): `client_secret_basic`, `client_secret_post`, and
//! public clients that send only their `client_id`. The embedder says which clients exist
//! through [`ClientStore`]; this crate decides whether a request authenticates, comparing
//! secrets in constant time.

use crate::response::{Response, error};
use base64::Engine as _;
use subtle::ConstantTimeEq as _;

/// A registered client's secret. Compared in constant time (as keyed hashes of equal length, so
/// that not even the length leaks through timing); its `Debug` prints nothing of it.
#[derive(Clone)]
pub struct ClientSecret(blake3::Hash);

/// The key the secrets are hashed under before comparison: fixed, since it only makes the
/// comparison's inputs equal-length and uniform, not secret.
const COMPARE_KEY: [u8; 32] = *b"tokendb-oauth client secret cmp!";

impl ClientSecret {
    /// A secret given in clear (from the embedder's configuration).
    #[must_use]
    pub fn new(secret: &str) -> Self {
        Self(blake3::keyed_hash(&COMPARE_KEY, secret.as_bytes()))
    }

    fn matches(&self, presented: &str) -> bool {
        let presented = blake3::keyed_hash(&COMPARE_KEY, presented.as_bytes());
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecret").finish_non_exhaustive()
    }
}

/// A registered client.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Client {
    /// Its secret: `None` for a public client (a browser or native app), which cannot keep one.
    pub secret: Option<ClientSecret>,
    /// Whether it may call the introspection endpoint (a resource server).
    pub may_introspect: bool,
}

impl Client {
    /// A confidential client with this secret.
    #[must_use]
    pub fn confidential(secret: &str) -> Self {
        Self {
            secret: Some(ClientSecret::new(secret)),
            may_introspect: false,
        }
    }

    /// A public client: identified by its `client_id`, no secret.
    #[must_use]
    pub fn public() -> Self {
        Self {
            secret: None,
            may_introspect: false,
        }
    }

    /// The same client, allowed to introspect tokens (RFC 7662 §2.1: the endpoint requires
    /// authorization; only confidential clients can have it).
    #[must_use]
    pub fn introspector(mut self) -> Self {
        self.may_introspect = self.secret.is_some();
        self
    }
}

/// The clients the server knows: implemented by the embedder over its client registry.
pub trait ClientStore: Send + Sync {
    /// The client registered under `client_id`, if any.
    fn client(&self, client_id: &str) -> Option<Client>;
}

/// A fixed list of clients, for small servers and tests.
#[derive(Clone, Debug, Default)]
pub struct StaticClients(std::collections::HashMap<String, Client>);

impl StaticClients {
    /// No clients.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The same list with `client` registered as `client_id`.
    #[must_use]
    pub fn with(mut self, client_id: &str, client: Client) -> Self {
        self.0.insert(client_id.to_owned(), client);
        self
    }
}

impl ClientStore for StaticClients {
    fn client(&self, client_id: &str) -> Option<Client> {
        self.0.get(client_id).cloned()
    }
}

/// A client that authenticated (or, if public, identified itself).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Authenticated {
    /// Its `client_id`.
    pub client_id: String,
    /// Whether it proved a secret.
    pub confidential: bool,
    /// Whether it may introspect.
    pub may_introspect: bool,
}

/// The credentials a request carries, before checking.
pub(crate) struct Presented<'a> {
    pub(crate) authorization: Option<&'a str>,
    pub(crate) client_id: Option<&'a str>,
    pub(crate) client_secret: Option<&'a str>,
}

/// RFC 6749 §2.3.1: the `client_id` and secret of a Basic header are form-urlencoded first.
fn basic(header: &str) -> Option<(String, String)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| -> Option<String> {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}"))
            .ok()?
            .into_iter()
            .next()
            .map(|(_, v)| v)
    };
    Some((unescape(id)?, unescape(secret)?))
}

/// Authenticates the client of a request. A failure is the RFC 6749 §5.2 `invalid_client`
/// response (401; with `WWW-Authenticate` when the client tried the Authorization header), or
/// `invalid_request` for more than one method at once (§2.3).
pub(crate) fn authenticate(
    clients: &dyn ClientStore,
    presented: &Presented<'_>,
) -> Result<Authenticated, Response> {
    let invalid_client = |header_used: bool| {
        let r = error(401, "invalid_client", "client authentication failed");
        if header_used {
            r.with_header("WWW-Authenticate", "Basic realm=\"tokendb\"".to_owned())
        } else {
            r
        }
    };
    let (client_id, secret, header_used) = match (presented.authorization, presented.client_secret)
    {
        (Some(h), None) => match basic(h) {
            Some((id, secret)) => {
                if presented.client_id.is_some_and(|b| b != id) {
                    return Err(error(
                        400,
                        "invalid_request",
                        "client_id in the body differs from the authenticated one",
                    ));
                }
                (id, Some(secret), true)
            }
            None => return Err(invalid_client(true)),
        },
        (Some(_), Some(_)) => {
            return Err(error(
                400,
                "invalid_request",
                "more than one client authentication method",
            ));
        }
        (None, secret) => match presented.client_id {
            Some(id) => (id.to_owned(), secret.map(str::to_owned), false),
            None => return Err(invalid_client(false)),
        },
    };
    let Some(client) = clients.client(&client_id) else {
        return Err(invalid_client(header_used));
    };
    let confidential = match (&client.secret, &secret) {
        (Some(stored), Some(given)) if stored.matches(given) => true,
        (None, None) => false,
        _ => return Err(invalid_client(header_used)),
    };
    Ok(Authenticated {
        client_id,
        confidential,
        may_introspect: confidential && client.may_introspect,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients() -> StaticClients {
        StaticClients::new()
            .with("web", Client::confidential("s3cr:et+/"))
            .with("spa", Client::public())
    }

    fn header(id: &str, secret: &str) -> String {
        let enc = |s: &str| serde_urlencoded::to_string([("v", s)]).unwrap()[2..].to_owned();
        let raw = format!("{}:{}", enc(id), enc(secret));
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    fn auth(
        authorization: Option<&str>,
        id: Option<&str>,
        secret: Option<&str>,
    ) -> Result<Authenticated, Response> {
        authenticate(
            &clients(),
            &Presented {
                authorization,
                client_id: id,
                client_secret: secret,
            },
        )
    }

    #[test]
    fn basic_post_and_public_clients() {
        let h = header("web", "s3cr:et+/");
        assert!(auth(Some(&h), None, None).unwrap().confidential);
        assert!(
            auth(None, Some("web"), Some("s3cr:et+/"))
                .unwrap()
                .confidential
        );
        let spa = auth(None, Some("spa"), None).unwrap();
        assert!(!spa.confidential);
        // A confidential client must prove its secret; a public one has none to prove.
        assert_eq!(auth(None, Some("web"), None).unwrap_err().status, 401);
        assert_eq!(auth(None, Some("spa"), Some("x")).unwrap_err().status, 401);
        let wrong = auth(Some(&header("web", "nope")), None, None).unwrap_err();
        assert_eq!(wrong.status, 401);
        assert!(wrong.header("WWW-Authenticate").is_some());
        assert_eq!(auth(None, Some("nobody"), None).unwrap_err().status, 401);
        assert_eq!(
            auth(Some(&h), None, Some("s3cr:et+/")).unwrap_err().status,
            400,
            "two methods at once"
        );
        assert_eq!(auth(Some(&h), Some("spa"), None).unwrap_err().status, 400);
    }
}
