//! Request parsing: an `application/x-www-form-urlencoded` body whose parameters appear at most
//! once each (RFC 6749 §3.1 and §3.2).

use crate::response::{Response, error};

/// A request as an HTTP framework hands it over.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Request<'a> {
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
    /// The `DPoP` header (RFC 9449 §4.1): none, one, or more than one (always refused).
    dpop: DpopHeader<'a>,
}

/// The `DPoP` headers of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DpopHeader<'a> {
    /// None.
    Absent,
    /// Exactly one.
    One(&'a str),
    /// More than one, or one that is not text (RFC 9449 §4.3 check 1).
    Invalid,
}

impl<'a> Request<'a> {
    /// A request with these headers and body.
    #[must_use]
    pub fn new(
        authorization: Option<&'a str>,
        content_type: Option<&'a str>,
        body: &'a [u8],
    ) -> Self {
        Self {
            authorization,
            content_type,
            body,
            dpop: DpopHeader::Absent,
        }
    }

    /// The same request with the values of its `DPoP` headers, as many as it had: a request
    /// with more than one is refused (RFC 9449 §4.3), so pass them all. A header whose value is
    /// not visible ASCII should be passed as `None`.
    #[must_use]
    pub fn with_dpop<I>(mut self, headers: I) -> Self
    where
        I: IntoIterator<Item = Option<&'a str>>,
    {
        let mut it = headers.into_iter();
        self.dpop = match (it.next(), it.next()) {
            (None, _) => DpopHeader::Absent,
            (Some(Some(v)), None) => DpopHeader::One(v),
            _ => DpopHeader::Invalid,
        };
        self
    }

    pub(crate) fn dpop(&self) -> DpopHeader<'a> {
        self.dpop
    }
}

/// The parameters of a form body.
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    pub(crate) fn parse(req: &Request<'_>) -> Result<Self, Response> {
        let form_type = req.content_type.is_some_and(|t| {
            t.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
        if !form_type {
            return Err(error(
                400,
                "invalid_request",
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(req.body)
            .map_err(|_| error(400, "invalid_request", "the body is not a valid form"))?;
        for (i, (k, _)) in pairs.iter().enumerate() {
            if pairs.iter().skip(i + 1).any(|(other, _)| other == k) {
                return Err(error(
                    400,
                    "invalid_request",
                    "a parameter appears more than once",
                ));
            }
        }
        Ok(Self(pairs))
    }

    /// A parameter; an empty value counts as absent (RFC 6749 §3.1).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn require(&self, name: &'static str) -> Result<&str, Response> {
        self.get(name)
            .ok_or_else(|| error(400, "invalid_request", "a required parameter is missing"))
    }
}
