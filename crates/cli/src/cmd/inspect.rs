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
    let family = i.family().or(v.family).map(|f| f.to_string());
    let mut json = json!({
        "active": i.is_active(),
        "status": status,
        "token_type": i.token_type().unwrap_or(kind),
    });
    if let Some(obj) = json.as_object_mut() {
        if let Some(r) = reason {
            obj.insert("revoked_reason".into(), r.into());
        }
        if let Some(f) = &family {
            obj.insert("family".into(), f.clone().into());
        }
        // The sender constraint (RFC 7662 `cnf`), known from the header even when inactive.
        if let Some(c) = &v.confirmation {
            obj.insert("cnf".into(), json!({ c.member(): c.to_base64url() }));
        }
        if let Some(c) = &i.claims {
            obj.insert("scope".into(), i.scope().map(ToString::to_string).into());
            obj.insert("client_id".into(), c.client_id.clone().into());
            obj.insert("sub".into(), c.sub.clone().into());
            obj.insert("exp".into(), c.exp.into());
            obj.insert("iat".into(), c.iat.into());
            obj.insert("expires_in".into(), c.expires_in.into());
            obj.insert("absolute_exp".into(), exp(Some(c.absolute)));
            obj.insert("idle_exp".into(), exp(c.idle));
            obj.insert("claims".into(), claims_value(i.extra().unwrap_or_default()));
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
    if let Some(c) = &v.confirmation {
        let _ = writeln!(t, "  cnf         {} {}", c.member(), c.to_base64url());
    }
    if let Some(c) = &i.claims {
        let _ = writeln!(t, "  sub         {}", c.sub);
        let _ = writeln!(t, "  client_id   {}", i.client_id().unwrap_or("-"));
        let _ = writeln!(t, "  scope       {}", c.scope);
        let _ = writeln!(t, "  iat         {}", c.iat);
        let _ = writeln!(t, "  exp         {} (in {} s)", c.exp, c.expires_in);
        let _ = writeln!(t, "  absolute    {}", c.absolute.at_secs());
        if let Some(d) = c.idle {
            let _ = writeln!(t, "  idle        {}", d.at_secs());
        }
        let claims = claims_value(i.extra().unwrap_or_default());
        if !claims.is_null() {
            let _ = writeln!(t, "  claims      {claims}");
        }
    }
    Ok(Report::ok(json, t))
}
