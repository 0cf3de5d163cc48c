//! OAuth scopes (RFC 6749 §3.3): a set of scope tokens, parsed strictly.

use crate::CoreError;
use core::fmt;

/// Longest scope string accepted, in bytes.
pub const MAX_SCOPE_LEN: usize = 4096;
/// Most scope tokens accepted in one scope.
pub const MAX_SCOPE_TOKENS: usize = 128;

/// A set of scope tokens. Order and duplicates in the input do not matter; the canonical form is
/// sorted, deduplicated and space-separated.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Scope(Vec<String>);

impl Scope {
    /// The empty scope.
    #[must_use]
    pub const fn empty() -> Self {
        Self(Vec::new())
    }

    /// Parses a space-delimited scope string. Each token must be 1+ characters from
    /// `%x21 / %x23-5B / %x5D-7E` (printable ASCII except space, `"` and `\`). Runs of spaces are
    /// tolerated; tabs, newlines and non-ASCII are refused.
    ///
    /// # Errors
    /// [`CoreError::TooLarge`] past [`MAX_SCOPE_LEN`] bytes or [`MAX_SCOPE_TOKENS`] tokens,
    /// [`CoreError::BadScope`] for a character outside the grammar.
    pub fn parse(text: &str) -> Result<Self, CoreError> {
        if text.len() > MAX_SCOPE_LEN {
            return Err(CoreError::TooLarge {
                what: "scope",
                len: text.len(),
                max: MAX_SCOPE_LEN,
            });
        }
        let mut tokens: Vec<String> = Vec::new();
        for tok in text.split(' ').filter(|t| !t.is_empty()) {
            if !tok
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
            {
                return Err(CoreError::BadScope(
                    "scope tokens use printable ASCII other than space, '\"' and '\\'",
                ));
            }
            tokens.push(tok.to_owned());
            if tokens.len() > MAX_SCOPE_TOKENS {
                return Err(CoreError::BadScope("more than 128 scope tokens"));
            }
        }
        tokens.sort_unstable();
        tokens.dedup();
        Ok(Self(tokens))
    }

    /// Builds a scope from individual tokens, with the same checks as [`Scope::parse`].
    ///
    /// # Errors
    /// As [`Scope::parse`]; a token containing a space is refused.
    pub fn from_tokens<I, S>(tokens: I) -> Result<Self, CoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut joined = String::new();
        for t in tokens {
            let t = t.as_ref();
            if t.is_empty() || t.contains(' ') {
                return Err(CoreError::BadScope(
                    "a scope token is empty or contains a space",
                ));
            }
            if !joined.is_empty() {
                joined.push(' ');
            }
            joined.push_str(t);
            if joined.len() > MAX_SCOPE_LEN {
                return Err(CoreError::TooLarge {
                    what: "scope",
                    len: joined.len(),
                    max: MAX_SCOPE_LEN,
                });
            }
        }
        Self::parse(&joined)
    }

    /// Whether every token of `self` is in `other`.
    #[must_use]
    pub fn is_subset_of(&self, other: &Self) -> bool {
        self.0.iter().all(|t| other.0.binary_search(t).is_ok())
    }

    /// Whether the token is in the set.
    #[must_use]
    pub fn contains(&self, token: &str) -> bool {
        self.0.binary_search_by(|t| t.as_str().cmp(token)).is_ok()
    }

    /// The tokens, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Number of tokens.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the scope has no tokens.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for t in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(t)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_sorts_and_dedups() {
        let s = Scope::parse("  openid profile  openid offline_access").unwrap();
        assert_eq!(s.to_string(), "offline_access openid profile");
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn subset() {
        let grant = Scope::parse("openid profile email").unwrap();
        assert!(Scope::parse("email openid").unwrap().is_subset_of(&grant));
        assert!(Scope::empty().is_subset_of(&grant));
        assert!(!Scope::parse("openid admin").unwrap().is_subset_of(&grant));
    }

    #[test]
    fn refuses_bad_characters_and_sizes() {
        for bad in ["a\tb", "a\"b", "a\\b", "café", "a\nb"] {
            assert!(
                matches!(Scope::parse(bad), Err(CoreError::BadScope(_))),
                "{bad:?}"
            );
        }
        let long = "a".repeat(MAX_SCOPE_LEN + 1);
        assert!(matches!(
            Scope::parse(&long),
            Err(CoreError::TooLarge { .. })
        ));
        let many: Vec<String> = (0..=MAX_SCOPE_TOKENS).map(|i| format!("s{i}")).collect();
        assert!(Scope::from_tokens(&many).is_err());
        assert!(Scope::from_tokens(["has space"]).is_err());
    }
}
