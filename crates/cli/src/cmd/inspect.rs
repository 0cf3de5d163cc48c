//! `tokendb inspect`: the introspection answer (RFC 7662) for one token.

use crate::cmd::read_token;
use crate::error::CliError;
use crate::open::{DbArgs, open};
use crate::output::Report;
use serde_json::{Value, json};
use std::fmt::Write as _;
use tokendb::{Expiry, TokenKind, TokenStatus};

/// A status as a stable name, and the revocation reason if any.
pub(crate) fn status_name(s: TokenStatus) -> (&'static str, Option<&'static str>) {
    match s {
        TokenStatus::Active => ("active", None),
        TokenStatus::Unknown => ("unknown", None),
        TokenStatus::ExpiredAbsolute => ("expired_absolute", None),
        TokenStatus::ExpiredIdle => ("expired_idle", None),
        TokenStatus::Revoked(r) => ("revoked", Some(r.name())),
        TokenStatus::Rotated => ("rotated", None),
        _ => ("other", None),
    }
}

/// Caller claims: as JSON if they are JSON, as a string if text, else as hex.
fn claims_value(c: &[u8]) -> Value {
    if c.is_empty() {
        return Value::Null;
    }
    if let Ok(v) = serde_json::from_slice::<Value>(c) {
        return v;
    }
    match std::str::from_utf8(c) {
        Ok(s) => Value::from(s),
        Err(_) => json!({ "hex": c.iter().map(|b| format!("{b:02x}")).collect::<String>() }),
    }
}

fn exp(e: Option<Expiry>) -> Value {
    e.map_or(Value::Null, |e| Value::from(e.at_secs()))
}

pub(crate) fn run(args: &DbArgs, token: &str, prefix: &str) -> Result<Report, CliError> {
    let token = read_token(token)?;
    let opened = open(args, Some(prefix))?;
    let i = opened.db.introspect(&token)?;
    let v = opened.db.validate(&token)?;
    opened.db.close()?;

    let (status, reason) = status_name(i.status);
    let kind = match v.kind {
        TokenKind::Refresh => "refresh_token",
        TokenKind::Access => "access_token",
    };
    let family = i.family.or(v.family).map(|f| f.to_string());
    let mut json = json!({
        "active": i.active,
        "status": status,
        "token_type": i.token_type.unwrap_or(kind),
    });
    if let Some(obj) = json.as_object_mut() {
        if let Some(r) = reason {
            obj.insert("revoked_reason".into(), r.into());
        }
        if let Some(f) = &family {
            obj.insert("family".into(), f.clone().into());
        }
        if i.active {
            obj.insert(
                "scope".into(),
                i.scope.as_ref().map(ToString::to_string).into(),
            );
            obj.insert("client_id".into(), i.client_id.clone().into());
            obj.insert("sub".into(), i.sub.clone().into());
            obj.insert("exp".into(), exp(i.exp));
            obj.insert("iat".into(), i.iat.into());
            obj.insert("expires_in".into(), i.exp.map(|e| e.expires_in).into());
            obj.insert("absolute_exp".into(), exp(i.absolute));
            obj.insert("idle_exp".into(), exp(i.idle));
            obj.insert(
                "claims".into(),
                claims_value(i.claims.as_deref().unwrap_or_default()),
            );
        }
    }

    let mut t = String::new();
    let _ = write!(t, "{kind}: {status}");
    if let Some(r) = reason {
        let _ = write!(t, " ({r})");
    }
    let _ = writeln!(t);
    if let Some(f) = &family {
        let _ = writeln!(t, "  family      {f}");
    }
    if i.active {
        let _ = writeln!(t, "  sub         {}", i.sub.as_deref().unwrap_or("-"));
        let _ = writeln!(t, "  client_id   {}", i.client_id.as_deref().unwrap_or("-"));
        let _ = writeln!(
            t,
            "  scope       {}",
            i.scope
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        if let Some(iat) = i.iat {
            let _ = writeln!(t, "  iat         {iat}");
        }
        if let Some(e) = i.exp {
            let _ = writeln!(t, "  exp         {} (in {} s)", e.at_secs(), e.expires_in);
        }
        if let Some(a) = i.absolute {
            let _ = writeln!(t, "  absolute    {}", a.at_secs());
        }
        if let Some(d) = i.idle {
            let _ = writeln!(t, "  idle        {}", d.at_secs());
        }
        let claims = claims_value(i.claims.as_deref().unwrap_or_default());
        if !claims.is_null() {
            let _ = writeln!(t, "  claims      {claims}");
        }
    }
    Ok(Report::ok(json, t))
}
