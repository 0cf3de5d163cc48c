// Test code: a panic is how a check fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use super::*;
use serde_json::Value;
use tokendb::{Config, Grant, MasterKey, Scope, TokenDb};

const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

struct Fx {
    _dir: tempfile::TempDir,
    db: TokenDb,
    oauth: OAuth,
}

fn fx() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let db = TokenDb::create(
        dir.path().join("t.tdb"),
        &MasterKey::generate(),
        Config::default(),
    )
    .unwrap();
    let clients = StaticClients::new()
        .with("web", Client::confidential("web-secret"))
        .with("other", Client::confidential("other-secret"))
        .with("spa", Client::public())
        .with("api", Client::confidential("api-secret").introspector());
    let oauth = OAuth::new(db.asynchronous(), clients);
    Fx {
        _dir: dir,
        db,
        oauth,
    }
}

fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    serde_urlencoded::to_string(pairs).unwrap().into_bytes()
}

fn json(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn refresh_grant_answers_rfc_6749_5_1_and_binds_the_token_to_its_client() {
    let f = fx();
    let rt =
        f.db.issue_refresh(
            &Grant::new("alice", "web", "openid profile")
                .unwrap()
                .with_claims(r#"{"acr":"2"}"#),
        )
        .unwrap();
    run(async {
        // Another client presenting alice's token: invalid_grant, nothing rotated.
        let other = f
            .oauth
            .token(&Request::new(
                None,
                FORM,
                &form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", rt.token.expose()),
                    ("client_id", "other"),
                    ("client_secret", "other-secret"),
                ]),
            ))
            .await;
        assert_eq!(
            (other.status, json(&other)["error"].as_str()),
            (400, Some("invalid_grant"))
        );

        let ok = f
            .oauth
            .token(&Request::new(
                None,
                FORM,
                &form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", rt.token.expose()),
                    ("scope", "openid"),
                    ("client_id", "web"),
                    ("client_secret", "web-secret"),
                ]),
            ))
            .await;
        assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
        assert_eq!(ok.header("Cache-Control"), Some("no-store"));
        assert_eq!(ok.header("Pragma"), Some("no-cache"));
        let body = json(&ok);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["scope"], "openid");
        assert!(body["expires_in"].as_u64().unwrap() > 3_000);
        let access = body["access_token"].as_str().unwrap();
        let next = body["refresh_token"].as_str().unwrap();
        assert!(f.db.validate(access).unwrap().is_active());
        assert!(f.db.validate(next).unwrap().is_active());

        // The old token again: reuse, and the new one is dead too.
        let reuse = f
            .oauth
            .token(&Request::new(
                None,
                FORM,
                &form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", rt.token.expose()),
                    ("client_id", "web"),
                    ("client_secret", "web-secret"),
                ]),
            ))
            .await;
        assert_eq!(json(&reuse)["error"], "invalid_grant");
        assert!(!f.db.validate(next).unwrap().is_active());
        assert!(!f.db.validate(access).unwrap().is_active());
    });
}

#[test]
fn token_endpoint_errors_have_their_status_codes() {
    let f = fx();
    run(async {
        let send = |auth: Option<&'static str>, ct: Option<&'static str>, body: Vec<u8>| {
            let o = f.oauth.clone();
            async move { o.token(&Request::new(auth, ct, &body)).await }
        };
        let r = send(
            None,
            FORM,
            form(&[("grant_type", "refresh_token"), ("refresh_token", "x")]),
        )
        .await;
        assert_eq!(
            (r.status, json(&r)["error"].clone()),
            (401, "invalid_client".into())
        );
        let r = send(
            Some("Basic bm9ib2R5Om5vcGU="),
            FORM,
            form(&[("grant_type", "refresh_token")]),
        )
        .await;
        assert_eq!(r.status, 401);
        assert_eq!(
            r.header("WWW-Authenticate"),
            Some("Basic realm=\"tokendb\"")
        );
        let r = send(
            None,
            FORM,
            form(&[("grant_type", "password"), ("client_id", "spa")]),
        )
        .await;
        assert_eq!(
            (r.status, json(&r)["error"].clone()),
            (400, "unsupported_grant_type".into())
        );
        let r = send(
            None,
            FORM,
            form(&[("grant_type", "refresh_token"), ("client_id", "spa")]),
        )
        .await;
        assert_eq!(
            json(&r)["error"],
            "invalid_request",
            "refresh_token missing"
        );
        let r = send(None, Some("application/json"), b"{}".to_vec()).await;
        assert_eq!(json(&r)["error"], "invalid_request");
        let r = send(
            None,
            FORM,
            b"grant_type=refresh_token&grant_type=refresh_token&client_id=spa".to_vec(),
        )
        .await;
        assert_eq!(json(&r)["error"], "invalid_request", "a repeated parameter");
        let r = send(
            None,
            FORM,
            form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "garbage"),
                ("client_id", "spa"),
            ]),
        )
        .await;
        assert_eq!(
            (r.status, json(&r)["error"].clone()),
            (400, "invalid_grant".into())
        );
    });
}

#[test]
fn revocation_answers_200_for_unknown_tokens_and_refuses_another_clients() {
    let f = fx();
    let rt =
        f.db.issue_refresh(&Grant::new("bob", "web", "openid").unwrap())
            .unwrap();
    let at = f.db.issue_access_for_family(rt.family, None).unwrap();
    run(async {
        let revoke = |token: &str, id: &str, secret: &str| {
            let body = form(&[
                ("token", token),
                ("token_type_hint", "refresh_token"),
                ("client_id", id),
                ("client_secret", secret),
            ]);
            let o = f.oauth.clone();
            async move { o.revoke(&Request::new(None, FORM, &body)).await }
        };
        assert_eq!(revoke("not-a-token", "web", "web-secret").await.status, 200);
        assert_eq!(revoke("tdb_rt_AAAA", "web", "web-secret").await.status, 200);
        let theirs = revoke(rt.token.expose(), "other", "other-secret").await;
        assert_eq!(theirs.status, 400);
        assert!(
            f.db.validate(rt.token.expose()).unwrap().is_active(),
            "refused: nothing revoked"
        );
        assert_eq!(revoke(rt.token.expose(), "web", "nope").await.status, 401);
        assert_eq!(
            revoke(rt.token.expose(), "web", "web-secret").await.status,
            200
        );
        assert!(!f.db.validate(rt.token.expose()).unwrap().is_active());
        assert!(
            !f.db.validate(at.token.expose()).unwrap().is_active(),
            "the family's access token too"
        );
        assert_eq!(
            revoke(rt.token.expose(), "web", "web-secret").await.status,
            200,
            "again"
        );
    });
}

#[test]
fn introspection_is_for_introspectors_and_says_only_active_false_when_inactive() {
    let f = fx();
    let rt =
        f.db.issue_refresh(
            &Grant::new("carol", "web", "openid email")
                .unwrap()
                .with_claims(r#"{"acr":"2","active":false}"#),
        )
        .unwrap();
    let at = f.db.issue_access_for_family(rt.family, None).unwrap();
    run(async {
        let ask = |token: &str, id: &str, secret: &str| {
            let body = form(&[
                ("token", token),
                ("client_id", id),
                ("client_secret", secret),
            ]);
            let o = f.oauth.clone();
            async move { o.introspect(&Request::new(None, FORM, &body)).await }
        };
        assert_eq!(
            ask(at.token.expose(), "web", "web-secret").await.status,
            403
        );
        assert_eq!(ask(at.token.expose(), "api", "wrong").await.status, 401);
        let r = ask(at.token.expose(), "api", "api-secret").await;
        assert_eq!(r.header("Cache-Control"), Some("no-store"));
        let body = json(&r);
        assert_eq!(
            body["active"], true,
            "a caller claim never overrides active"
        );
        assert_eq!(body["sub"], "carol");
        assert_eq!(body["client_id"], "web");
        assert_eq!(
            body["scope"], "email openid",
            "space-separated, in scope order"
        );
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["acr"], "2");
        assert!(body["exp"].as_u64().unwrap() > body["iat"].as_u64().unwrap());
        let refresh = json(&ask(rt.token.expose(), "api", "api-secret").await);
        assert_eq!(refresh["active"], true);
        assert!(refresh.get("token_type").is_none());
        f.db.revoke(rt.token.expose()).unwrap();
        for t in [at.token.expose(), rt.token.expose(), "garbage"] {
            let body = json(&ask(t, "api", "api-secret").await);
            assert_eq!(body, serde_json::json!({"active": false}));
        }
    });
}

#[test]
fn bearer_challenges_follow_rfc_6750() {
    let f = fx();
    let at =
        f.db.issue_access(&Grant::new("dave", "web", "read").unwrap())
            .unwrap();
    let rt =
        f.db.issue_refresh(&Grant::new("dave", "web", "read").unwrap())
            .unwrap();
    run(async {
        let o = &f.oauth;
        let none = o.authorize_bearer(None, None).await.unwrap_err();
        assert_eq!(
            (none.status, none.header("WWW-Authenticate")),
            (401, Some("Bearer realm=\"tokendb\""))
        );
        let bad = o
            .authorize_bearer(Some("Bearer a b"), None)
            .await
            .unwrap_err();
        assert_eq!(bad.status, 400);
        assert!(
            bad.header("WWW-Authenticate")
                .unwrap()
                .contains("error=\"invalid_request\"")
        );
        let header = format!("Bearer {}", at.token.expose());
        let ok = o.authorize_bearer(Some(&header), None).await.unwrap();
        assert_eq!((ok.sub.as_str(), ok.client_id.as_str()), ("dave", "web"));
        let write = Scope::parse("write").unwrap();
        let scope = o
            .authorize_bearer(Some(&header), Some(&write))
            .await
            .unwrap_err();
        assert_eq!(scope.status, 403);
        assert!(scope.header("WWW-Authenticate").unwrap().contains("error=\"insufficient_scope\", error_description=\"the access token lacks the scope needed\", scope=\"write\""));
        let refresh = format!("Bearer {}", rt.token.expose());
        let r = o.authorize_bearer(Some(&refresh), None).await.unwrap_err();
        assert_eq!(r.status, 401, "a refresh token is not an access token");
        f.db.revoke(at.token.expose()).unwrap();
        let revoked = o.authorize_bearer(Some(&header), None).await.unwrap_err();
        assert_eq!(revoked.status, 401);
        assert!(
            revoked
                .header("WWW-Authenticate")
                .unwrap()
                .contains("error=\"invalid_token\"")
        );
    });
}

/// The axum `Router` on a loopback port, driven with raw HTTP/1.1: what a client sees.
#[cfg(feature = "axum")]
#[test]
fn the_axum_router_serves_the_token_endpoint_over_http() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let f = fx();
    let rt =
        f.db.issue_refresh(&Grant::new("erin", "web", "openid").unwrap())
            .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(::axum::serve(listener, crate::axum::router(f.oauth.clone())).into_future());
        let body = form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.token.expose()),
        ]);
        // client_secret_basic: "web:web-secret".
        let request = format!(
            "POST /token HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic d2ViOndlYi1zZWNyZXQ=\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        stream.write_all(&body).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        let (head, json_body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let head = head.to_ascii_lowercase();
        assert!(head.contains("cache-control: no-store"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let body: Value = serde_json::from_str(json_body).unwrap();
        assert_eq!(body["token_type"], "Bearer");
        assert!(
            f.db.validate(body["refresh_token"].as_str().unwrap())
                .unwrap()
                .is_active()
        );
    });
}
