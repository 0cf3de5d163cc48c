//! The endpoints as an axum `Router` (feature `axum`): `POST /token`, `POST /revoke`,
//! `POST /introspect`, and [`bearer`] and [`resource`] for resource handlers.

use crate::{Bearer, OAuth, Request};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;

/// The three endpoints, mounted at `/token`, `/revoke` and `/introspect`.
pub fn router(oauth: OAuth) -> axum::Router {
    axum::Router::new()
        .route("/token", post(token))
        .route("/revoke", post(revoke))
        .route("/introspect", post(introspect))
        .with_state(oauth)
}

fn request<'a>(headers: &'a HeaderMap, body: &'a Bytes) -> Request<'a> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    Request::new(
        text(header::AUTHORIZATION),
        text(header::CONTENT_TYPE),
        body,
    )
    .with_dpop(dpop_headers(headers))
}

/// The values of every `DPoP` header (`None` for one that is not visible ASCII).
fn dpop_headers(headers: &HeaderMap) -> Vec<Option<&str>> {
    headers
        .get_all("dpop")
        .iter()
        .map(|v| v.to_str().ok())
        .collect()
}

/// Converts a [`crate::Response`] into axum's.
#[must_use]
pub fn into_axum(r: crate::Response) -> axum::response::Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = (status, r.body).into_response();
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in &r.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            // The first value of a name replaces axum's default (its `Content-Type`); later
            // ones are appended: a resource's refusal may carry two challenges (Bearer, DPoP).
            if seen.contains(name) {
                out.headers_mut().append(n, v);
            } else {
                seen.push(name);
                out.headers_mut().insert(n, v);
            }
        }
    }
    out
}

async fn token(
    State(o): State<OAuth>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    into_axum(o.token(&request(&headers, &body)).await)
}

async fn revoke(
    State(o): State<OAuth>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    into_axum(o.revoke(&request(&headers, &body)).await)
}

async fn introspect(
    State(o): State<OAuth>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    into_axum(o.introspect(&request(&headers, &body)).await)
}

/// For a resource handler accepting DPoP-bound and bearer tokens: the token of `headers`,
/// with its proof checked against the request's `method` and `uri` (as the client addressed
/// it, scheme and host included), or the response to send ([`OAuth::authorize_resource`]).
///
/// # Errors
/// The 400/401/403 response with its challenges.
pub async fn resource(
    oauth: &OAuth,
    headers: &HeaderMap,
    (method, uri): (&str, &str),
    required: Option<&tokendb::Scope>,
) -> Result<Bearer, axum::response::Response> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    oauth
        .authorize_resource(auth, &dpop_headers(headers), (method, uri), required)
        .await
        .map_err(into_axum)
}

/// For a resource handler: the bearer token of `headers`, or the RFC 6750 response to send.
///
/// # Errors
/// The 400/401/403 response with its `WWW-Authenticate` challenge.
pub async fn bearer(
    oauth: &OAuth,
    headers: &HeaderMap,
    required: Option<&tokendb::Scope>,
) -> Result<Bearer, axum::response::Response> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    oauth
        .authorize_bearer(auth, required)
        .await
        .map_err(into_axum)
}
