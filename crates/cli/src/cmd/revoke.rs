//! `tokendb revoke`: by token, family, subject (optionally with client), or client.

use crate::cmd::read_token;
use crate::error::CliError;
use crate::open::{DbArgs, open};
use crate::output::{Report, num};
use clap::Args;
use serde_json::json;
use tokendb::FamilyId;

/// What to revoke. Exactly one of `--token`, `--family`, `--subject` (optionally narrowed with
/// `--client`) or `--client`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(true)
    .args(["token", "family", "subject", "client"])))]
pub(crate) struct RevokeArgs {
    #[command(flatten)]
    pub(crate) db: DbArgs,
    /// A token (RFC 7009): a refresh token revokes its whole family with its access tokens.
    /// `-` reads it from stdin, keeping it out of shell history.
    #[arg(long, value_name = "TOKEN|-", conflicts_with_all = ["family", "subject", "client"])]
    pub(crate) token: Option<String>,
    /// A family id (32 hex digits, as `inspect` shows): the family and its access tokens.
    #[arg(long, value_name = "HEX", conflicts_with_all = ["subject", "client"])]
    pub(crate) family: Option<String>,
    /// Every family and standalone access token of this subject ("log out everywhere").
    #[arg(long)]
    pub(crate) subject: Option<String>,
    /// Every family and standalone access token of this client; with --subject, only that
    /// subject's grants to this client.
    #[arg(long)]
    pub(crate) client: Option<String>,
    /// The token prefix the server uses.
    #[arg(long, default_value = "tdb", value_name = "PREFIX")]
    pub(crate) token_prefix: String,
}

pub(crate) fn run(a: &RevokeArgs) -> Result<Report, CliError> {
    let family = match &a.family {
        Some(text) => Some(FamilyId::from_hex(text).ok_or_else(|| {
            CliError::usage(
                "bad_family_id",
                format!("{text:?} is not a family id"),
                "a family id is 32 hex digits, as `tokendb inspect` prints it",
            )
        })?),
        None => None,
    };
    let token = a.token.as_deref().map(read_token).transpose()?;
    let opened = open(&a.db, Some(&a.token_prefix))?;
    let db = &opened.db;
    let (what, r) = match (&token, family, &a.subject, &a.client) {
        (Some(t), ..) => ("token".to_owned(), db.revoke(t)?),
        (None, Some(f), ..) => (format!("family {f}"), db.revoke_family(f)?),
        (None, None, Some(s), c) => (
            match c {
                Some(c) => format!("subject {s:?} with client {c:?}"),
                None => format!("subject {s:?}"),
            },
            db.revoke_subject(s, c.as_deref())?,
        ),
        (None, None, None, Some(c)) => (format!("client {c:?}"), db.revoke_client(c)?),
        (None, None, None, None) => {
            return Err(CliError::usage(
                "no_target",
                "nothing to revoke",
                "pass --token, --family, --subject or --client",
            ));
        }
    };
    opened.db.close()?;
    let json = json!({ "revoked": { "families": r.families, "access_tokens": r.tokens } });
    let text = if r.families + r.tokens == 0 {
        format!(
            "revoke {what}: nothing newly revoked (unknown, already revoked, or already swept)\n"
        )
    } else {
        format!(
            "revoke {what}: revoked {} families and {} access tokens; every lookup from now on sees it\n",
            num(r.families),
            num(r.tokens)
        )
    };
    Ok(Report::ok(json, text))
}
