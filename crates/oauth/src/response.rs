//! What the endpoints answer, framework-neutral: a status, headers and a body, ready to copy
//! into any HTTP framework's response (the `axum` feature does it for axum).

use serde::Serialize;

/// An HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names and values.
    pub headers: Vec<(&'static str, String)>,
    /// The body (JSON, or empty).
    pub body: Vec<u8>,
}

impl Response {
    /// The value of header `name` (ASCII case-insensitive), if set.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A JSON body that carries token material or token metadata: never cached
    /// (RFC 6749 §5.1, RFC 7662 §2.2).
    pub(crate) fn json(status: u16, body: &impl Serialize) -> Self {
        // Serializing our own maps and structs of strings and numbers cannot fail; an empty
        // object is the safe fallback all the same.
        let body = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
        Self {
            status,
            headers: vec![
                ("Content-Type", "application/json".to_owned()),
                ("Cache-Control", "no-store".to_owned()),
                ("Pragma", "no-cache".to_owned()),
            ],
            body,
        }
    }

    /// An empty 200 (RFC 7009 §2.2).
    pub(crate) fn ok_empty() -> Self {
        Self {
            status: 200,
            headers: vec![("Cache-Control", "no-store".to_owned())],
            body: Vec::new(),
        }
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// An RFC 6749 §5.2 error response: `error`, and a human-readable `error_description` that
/// says nothing an attacker could use (which token, which client, why exactly).
pub(crate) fn error(status: u16, code: &'static str, description: &'static str) -> Response {
    #[derive(Serialize)]
    struct Body {
        error: &'static str,
        error_description: &'static str,
    }
    Response::json(
        status,
        &Body {
            error: code,
            error_description: description,
        },
    )
}
