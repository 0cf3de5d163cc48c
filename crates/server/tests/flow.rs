//! The whole flow, driven by the `oauth2` crate (a client library nobody here wrote) against
//! the reference server on a loopback port: code + PKCE → tokens, the resource, a refresh, the
//! old refresh token again (reuse: `invalid_grant`, and the new one is dead too), then on a
//! second login a revocation and an introspection that says inactive.
//!
//! The HTTP transport is a small HTTP/1.1 client over a `TcpStream` (below), handed to
//! `oauth2` as its synchronous client: `oauth2` builds every request and reads every response.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, HttpRequest, HttpResponse,
    IntrospectionUrl, PkceCodeChallenge, RedirectUrl, RequestTokenError, RevocationUrl, Scope,
    TokenIntrospectionResponse as _, TokenResponse as _, TokenUrl,
};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use tokendb::{Config, MasterKey, TokenDb};
use tokendb_server::{DemoClient, Settings, app};

const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// One HTTP/1.1 exchange over a fresh connection (`Connection: close`).
fn exchange(request: HttpRequest) -> Result<HttpResponse, std::io::Error> {
    let uri = request.uri();
    let authority = uri
        .authority()
        .expect("an absolute URI")
        .as_str()
        .to_owned();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let mut stream = TcpStream::connect(&authority)?;
    let mut head = format!(
        "{} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n",
        request.method()
    );
    for (name, value) in request.headers() {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", request.body().len()));
    stream.write_all(head.as_bytes())?;
    stream.write_all(request.body())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut response = oauth2::http::Response::builder().status(status);
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        response = response.header(name.trim(), value.trim());
    }
    Ok(response.body(body).unwrap())
}

fn get(url: &str, bearer: Option<&str>) -> HttpResponse {
    let mut r = oauth2::http::Request::builder().method("GET").uri(url);
    if let Some(t) = bearer {
        r = r.header("Authorization", format!("Bearer {t}"));
    }
    exchange(r.body(Vec::new()).unwrap()).unwrap()
}

/// Follows the authorization URL (consent is auto-approved) and returns the code, checking the
/// state came back.
fn authorize(url: &str, csrf: &CsrfToken) -> String {
    let r = get(url, None);
    assert_eq!(r.status(), 303, "{}", String::from_utf8_lossy(r.body()));
    let location = r.headers()["location"].to_str().unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    let query = location.split_once('?').unwrap().1;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
    let find = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(find("state").as_deref(), Some(csrf.secret().as_str()));
    find("code").expect("a code")
}

#[test]
fn the_oauth2_crate_drives_the_whole_flow() {
    let dir = tempfile::tempdir().unwrap();
    let db = TokenDb::create(
        dir.path().join("t.tdb"),
        &MasterKey::generate(),
        Config::default(),
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let settings = Settings::new(
        &base,
        vec![DemoClient::new(
            "demo-client",
            Some("demo-secret"),
            REDIRECT,
        )],
    );
    let router = app(db.clone(), settings);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, router).await.unwrap();
        });
    });

    let client = BasicClient::new(ClientId::new("demo-client".into()))
        .set_client_secret(ClientSecret::new("demo-secret".into()))
        .set_auth_uri(AuthUrl::new(format!("{base}/authorize")).unwrap())
        .set_token_uri(TokenUrl::new(format!("{base}/token")).unwrap())
        .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap())
        .set_revocation_url(RevocationUrl::new(format!("{base}/revoke")).unwrap())
        .set_introspection_url(IntrospectionUrl::new(format!("{base}/introspect")).unwrap());
    let http = exchange;

    let metadata = get(
        &format!("{base}/.well-known/oauth-authorization-server"),
        None,
    );
    let metadata: serde_json::Value = serde_json::from_slice(metadata.body()).unwrap();
    assert_eq!(metadata["issuer"], base.as_str());
    assert_eq!(
        metadata["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );

    // 1. Code + PKCE → tokens.
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf) = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("openid".into()))
        .set_pkce_challenge(challenge)
        .url();
    let code = authorize(url.as_str(), &csrf);
    let tokens = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .set_pkce_verifier(verifier)
        .request(&http)
        .unwrap();
    assert_eq!(tokens.scopes().unwrap()[0].as_str(), "openid");
    let first_refresh = tokens.refresh_token().unwrap().clone();
    // A code works once.
    let (_, verifier_again) = PkceCodeChallenge::new_random_sha256();
    assert!(
        client
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(verifier_again)
            .request(&http)
            .is_err()
    );

    // 2. The resource.
    let r = get(
        &format!("{base}/resource"),
        Some(tokens.access_token().secret()),
    );
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(body["sub"], "demo-user");
    assert_eq!(get(&format!("{base}/resource"), None).status(), 401);

    // 3. Refresh.
    let refreshed = client
        .exchange_refresh_token(&first_refresh)
        .request(&http)
        .unwrap();
    let new_refresh = refreshed.refresh_token().unwrap().clone();
    assert_ne!(new_refresh.secret(), first_refresh.secret());
    assert_eq!(
        get(
            &format!("{base}/resource"),
            Some(refreshed.access_token().secret())
        )
        .status(),
        200
    );

    // 4. The old refresh token again: reuse. invalid_grant, and the new one is dead too.
    let invalid_grant = |e: RequestTokenError<_, oauth2::basic::BasicErrorResponse>| match e {
        RequestTokenError::ServerResponse(r) => *r.error() == BasicErrorResponseType::InvalidGrant,
        _ => false,
    };
    let reuse = client
        .exchange_refresh_token(&first_refresh)
        .request(&http)
        .unwrap_err();
    assert!(invalid_grant(reuse));
    let dead = client
        .exchange_refresh_token(&new_refresh)
        .request(&http)
        .unwrap_err();
    assert!(invalid_grant(dead), "the new refresh token survived reuse");
    assert_eq!(
        get(
            &format!("{base}/resource"),
            Some(refreshed.access_token().secret())
        )
        .status(),
        401
    );

    // 5. A second login, revoked; 6. introspection says inactive.
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf) = client
        .authorize_url(CsrfToken::new_random)
        .set_pkce_challenge(challenge)
        .url();
    let second = client
        .exchange_code(AuthorizationCode::new(authorize(url.as_str(), &csrf)))
        .set_pkce_verifier(verifier)
        .request(&http)
        .unwrap();
    let active = client
        .introspect(second.access_token())
        .request(&http)
        .unwrap();
    assert!(active.active());
    // `oauth2` refuses to send a revocation to a URL without TLS (RFC 7009 §2 requires it), and
    // this server listens on plain loopback HTTP: the revocation request is written here, with
    // the client_secret_basic credentials `oauth2` sends everywhere else.
    let form = serde_urlencoded::to_string([
        ("token", second.refresh_token().unwrap().secret().as_str()),
        ("token_type_hint", "refresh_token"),
    ])
    .unwrap();
    let revoked = exchange(
        oauth2::http::Request::builder()
            .method("POST")
            .uri(format!("{base}/revoke"))
            .header("Authorization", "Basic ZGVtby1jbGllbnQ6ZGVtby1zZWNyZXQ=")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form.into_bytes())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(revoked.status(), 200);
    let inactive = client
        .introspect(second.access_token())
        .request(&http)
        .unwrap();
    assert!(
        !inactive.active(),
        "revoking the refresh token revokes its family's access tokens"
    );
    db.close().unwrap();
}
