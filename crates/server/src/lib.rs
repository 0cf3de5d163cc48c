//! # tokendb-server
//!
//! A small reference OAuth 2.0 authorization server on tokendb, to read as an example of
//! embedding: one configured demo user (consent auto-approved) and its clients, the
//! authorization code grant with PKCE (S256 required), the refresh grant, revocation and
//! introspection (`tokendb-oauth`), RFC 8414 metadata, and a protected demo resource. Small,
//! not a product; what it does, it does as the RFCs say.
//!
//! DPoP (RFC 9449): a token request that carries a valid `DPoP` proof gets a sender-constrained
//! family (`token_type` `DPoP`): its refresh token rotates only with a proof of the same key (a
//! stolen one presented without it is refused, and its family revoked), and the demo resource
//! takes its access tokens only with such a proof. Requests without a proof get bearer tokens,
//! as before.
//!
//! Routes: `GET /.well-known/oauth-authorization-server`, `GET /authorize`, `POST /token`,
//! `POST /revoke`, `POST /introspect`, `GET /resource`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod pkce;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokendb::{Grant, Scope, TokenDb};
use tokendb_oauth::dpop::{DpopConfig, DpopNonces};
use tokendb_oauth::{Client, DpopSetup, OAuth, Request, StaticClients};

/// How long an authorization code may wait for its exchange (RFC 6749 §4.1.2: short).
const CODE_LIFETIME: Duration = Duration::from_secs(60);

/// A client of the demo.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DemoClient {
    /// Its `client_id`.
    pub id: String,
    /// Its secret, or `None` for a public client.
    pub secret: Option<String>,
    /// The one redirect URI it may use (compared exactly, RFC 9700 §2.1).
    pub redirect_uri: String,
}

impl DemoClient {
    /// A client.
    #[must_use]
    pub fn new(id: &str, secret: Option<&str>, redirect_uri: &str) -> Self {
        Self {
            id: id.to_owned(),
            secret: secret.map(str::to_owned),
            redirect_uri: redirect_uri.to_owned(),
        }
    }
}

/// The server's settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Settings {
    /// The issuer: the base URL clients reach the server at (RFC 8414 `issuer`).
    pub issuer: String,
    /// The demo user every authorization is approved for.
    pub user: String,
    /// The clients.
    pub clients: Vec<DemoClient>,
    /// The scope granted when a request names none.
    pub default_scope: String,
    /// Whether DPoP proofs must carry a server nonce (RFC 9449 §8). Default off.
    pub dpop_nonces: bool,
}

impl Settings {
    /// Settings for `issuer`, the demo user `demo-user` and `clients`.
    #[must_use]
    pub fn new(issuer: &str, clients: Vec<DemoClient>) -> Self {
        Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            user: "demo-user".to_owned(),
            clients,
            default_scope: "openid profile".to_owned(),
            dpop_nonces: false,
        }
    }

    /// The same requiring server nonces in DPoP proofs: a proof without a fresh one is answered
    /// `use_dpop_nonce` with a `DPoP-Nonce` header to retry with.
    #[must_use]
    pub fn with_dpop_nonces(mut self) -> Self {
        self.dpop_nonces = true;
        self
    }
}

/// An authorization code waiting for its exchange.
struct Code {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    scope: Scope,
    issued: Instant,
}

struct Inner {
    db: TokenDb,
    oauth: OAuth,
    settings: Settings,
    codes: Mutex<HashMap<String, Code>>,
}

/// The server's routes over `db`.
pub fn app(db: TokenDb, settings: Settings) -> Router {
    let mut clients = StaticClients::new();
    for c in &settings.clients {
        let client = match &c.secret {
            Some(s) => Client::confidential(s).introspector(),
            None => Client::public(),
        };
        clients = clients.with(&c.id, client);
    }
    let token_uri = format!("{}/token", settings.issuer);
    let mut dpop = DpopSetup::new(DpopConfig::DEFAULT, &token_uri);
    if settings.dpop_nonces {
        dpop = dpop.with_nonces(DpopNonces::generate(Duration::from_secs(300)));
    }
    let oauth = OAuth::new(db.asynchronous(), clients).with_dpop(dpop);
    let state = Arc::new(Inner {
        db,
        oauth,
        settings,
        codes: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .route("/revoke", post(revoke))
        .route("/introspect", post(introspect))
        .route("/resource", get(resource))
        .with_state(state)
}

fn form_request<'a>(headers: &'a HeaderMap, body: &'a Bytes) -> Request<'a> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
    };
    Request::new(
        text(header::AUTHORIZATION),
        text(header::CONTENT_TYPE),
        body,
    )
    .with_dpop(headers.get_all("dpop").iter().map(|v| v.to_str().ok()))
}

async fn revoke(State(s): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    tokendb_oauth::axum::into_axum(s.oauth.revoke(&form_request(&headers, &body)).await)
}

async fn introspect(State(s): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    tokendb_oauth::axum::into_axum(s.oauth.introspect(&form_request(&headers, &body)).await)
}

async fn metadata(State(s): State<Arc<Inner>>) -> Response {
    let i = &s.settings.issuer;
    axum::Json(serde_json::json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "revocation_endpoint": format!("{i}/revoke"),
        "introspection_endpoint": format!("{i}/introspect"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": s.settings.default_scope.split(' ').collect::<Vec<_>>(),
        "dpop_signing_alg_values_supported": DpopConfig::DEFAULT
            .accepted_algs()
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

fn random_code() -> String {
    let mut b = [0u8; 32];
    rand::fill(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// RFC 6749 §4.1.1-§4.1.2 with RFC 7636: errors about the client or its redirect URI are shown
/// to the user (never redirected to an unverified URI, §4.1.2.1); the others go back to the
/// client's redirect URI with `error` and `state`.
async fn authorize(State(s): State<Arc<Inner>>, Query(q): Query<AuthorizeQuery>) -> Response {
    let client = q
        .client_id
        .as_deref()
        .and_then(|id| s.settings.clients.iter().find(|c| c.id == id));
    let Some(client) = client else {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    };
    let redirect = q.redirect_uri.as_deref().unwrap_or(&client.redirect_uri);
    if redirect != client.redirect_uri {
        return (StatusCode::BAD_REQUEST, "redirect_uri is not the client's").into_response();
    }
    let back = |pairs: &[(&str, &str)]| {
        let mut all: Vec<(&str, &str)> = pairs.to_vec();
        if let Some(st) = q.state.as_deref() {
            all.push(("state", st));
        }
        let query = serde_urlencoded::to_string(&all).unwrap_or_default();
        let sep = if redirect.contains('?') { '&' } else { '?' };
        Redirect::to(&format!("{redirect}{sep}{query}")).into_response()
    };
    if q.response_type.as_deref() != Some("code") {
        return back(&[("error", "unsupported_response_type")]);
    }
    let challenge = match (
        q.code_challenge.as_deref(),
        q.code_challenge_method.as_deref(),
    ) {
        (Some(c), Some("S256")) if pkce::challenge_is_valid(c) => c.to_owned(),
        _ => {
            return back(&[
                ("error", "invalid_request"),
                (
                    "error_description",
                    "PKCE with code_challenge_method=S256 is required",
                ),
            ]);
        }
    };
    let granted = Scope::parse(&s.settings.default_scope).unwrap_or_else(|_| Scope::empty());
    let scope = match q.scope.as_deref().map(Scope::parse) {
        None => granted,
        Some(Ok(asked)) if asked.is_subset_of(&granted) => asked,
        Some(_) => return back(&[("error", "invalid_scope")]),
    };
    let code = random_code();
    if let Ok(mut codes) = s.codes.lock() {
        codes.retain(|_, c| c.issued.elapsed() < CODE_LIFETIME);
        codes.insert(
            code.clone(),
            Code {
                client_id: client.id.clone(),
                redirect_uri: redirect.to_owned(),
                challenge,
                scope,
                issued: Instant::now(),
            },
        );
    }
    back(&[("code", &code)])
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        axum::Json(serde_json::json!({"error": code, "error_description": description})),
    )
        .into_response()
}

async fn token(State(s): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let request = form_request(&headers, &body);
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return tokendb_oauth::axum::into_axum(s.oauth.token(&request).await);
    }
    let client = match s.oauth.authenticate(&request) {
        Ok(c) => c,
        Err(r) => return tokendb_oauth::axum::into_axum(r),
    };
    // RFC 9449 §5: a proof with the code exchange binds the new family to its key; a proof
    // that fails any check refuses the request before the code is used.
    let proof = match s.oauth.check_token_request_proof(&request).await {
        Ok(p) => p,
        Err(r) => return tokendb_oauth::axum::into_axum(r),
    };
    // RFC 6749 §4.1.3: the code is single-use, bound to its client and redirect URI, and
    // (RFC 7636 §4.6) to the verifier of its challenge.
    let code = form
        .get("code")
        .and_then(|c| s.codes.lock().ok().and_then(|mut codes| codes.remove(c)));
    let invalid = || {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the authorization code is invalid or expired",
        )
    };
    let Some(code) = code else {
        return invalid();
    };
    let verifier = form
        .get("code_verifier")
        .map(String::as_str)
        .unwrap_or_default();
    if code.issued.elapsed() >= CODE_LIFETIME
        || code.client_id != client.client_id
        || form.get("redirect_uri") != Some(&code.redirect_uri)
        || !pkce::verify(verifier, &code.challenge)
    {
        return invalid();
    }
    let mut grant = match Grant::new(s.settings.user.clone(), client.client_id.clone(), "") {
        Ok(g) => Grant::with_scope(g.subject, g.client_id, code.scope.clone()),
        Err(_) => return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "grant"),
    };
    if let Some(p) = &proof {
        grant = grant.with_confirmation(p.jkt);
    }
    let db = s.db.asynchronous();
    let issued = async {
        let refresh = db.issue_refresh(&grant).await?;
        let access = db.issue_access_for_family(refresh.family, None).await?;
        Ok::<_, tokendb::Error>((refresh, access))
    }
    .await;
    match issued {
        Ok((refresh, access)) => (
            StatusCode::OK,
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            axum::Json(serde_json::json!({
                "access_token": access.token.expose(),
                "token_type": if proof.is_some() { "DPoP" } else { "Bearer" },
                "expires_in": access.expires.expires_in,
                "refresh_token": refresh.token.expose(),
                "scope": access.scope.to_string(),
            })),
        )
            .into_response(),
        Err(_) => oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the token store failed; retry",
        ),
    }
}

/// The demo resource: a bearer token, or a DPoP-bound token with a proof of its key for
/// `GET {issuer}/resource` (a bound token presented as a bearer token is refused).
async fn resource(State(s): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let uri = format!("{}/resource", s.settings.issuer);
    match tokendb_oauth::axum::resource(&s.oauth, &headers, ("GET", &uri), None).await {
        Ok(b) => axum::Json(serde_json::json!({
            "message": "hello from the protected demo resource",
            "sub": b.sub,
            "scope": b.scope.to_string(),
        }))
        .into_response(),
        Err(r) => r,
    }
}
