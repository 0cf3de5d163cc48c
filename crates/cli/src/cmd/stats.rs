//! `tokendb stats`: what the file holds, what expires soon, and which keys are in use.

use crate::cmd::{by_key_json, by_key_text};
use crate::error::CliError;
use crate::open::{DbArgs, file_size, open};
use crate::output::{Report, bytes, ms, num};
use serde_json::json;
use std::fmt::Write as _;
use tokendb::{Clock, SystemClock};

const HOUR: u64 = 3_600_000;
const HORIZONS: [(&str, u64); 3] = [("hour", HOUR), ("day", 24 * HOUR), ("week", 7 * 24 * HOUR)];

pub(crate) fn run(args: &DbArgs) -> Result<Report, CliError> {
    let opened = open(args, None)?;
    let now = SystemClock.now_ms();
    let s = opened.db.stats(now, &HORIZONS.map(|(_, h)| h))?;
    let keys = opened.db.sealing_keys();
    let current = keys.current.0;
    let held: Vec<u32> = keys.held.iter().map(|k| k.0).collect();
    let file = file_size(&args.path)?;
    opened.db.close()?;

    let f = &s.families;
    let (fb, sa) = (&s.family_access_tokens, &s.standalone_access_tokens);
    let records = f.total() + fb.total() + sa.total() + s.unreadable;
    let per_record = file.checked_div(records);
    let lag = s.oldest_due.map(|d| now.saturating_sub(d));
    let expiring: serde_json::Map<String, serde_json::Value> = HORIZONS
        .iter()
        .zip(&s.expiring)
        .map(|((name, _), e)| {
            (
                (*name).to_owned(),
                json!({ "families": e.families, "access_tokens": e.access_tokens }),
            )
        })
        .collect();
    let access = |a: &tokendb::AccessStats| json!({ "total": a.total(), "active": a.active, "revoked": a.revoked, "expired": a.expired });
    let json = json!({
        "path": args.path.display().to_string(),
        "now_ms": now,
        "file_bytes": file,
        "records": records,
        "bytes_per_token": per_record,
        "refresh_tokens": {
            "live": f.active,
            "rotated": f.rotations(),
            "revoked": f.revoked,
            "expired": f.expired_absolute + f.expired_idle,
        },
        "families": {
            "total": f.total(),
            "active": f.active,
            "in_grace": f.in_grace,
            "revoked": f.revoked,
            "revoked_by_reason": f.revoked_by_reason,
            "expired_absolute": f.expired_absolute,
            "expired_idle": f.expired_idle,
            "generations": f.generations,
            "rotations": f.rotations(),
        },
        "access_tokens": {
            "total": fb.total() + sa.total(),
            "family_bound": access(fb),
            "standalone": access(sa),
        },
        "expiring": expiring,
        "keys": {
            "current": current,
            "held": held,
            "records_by_key": by_key_json(&s.records_by_key),
        },
        "unreadable_records": s.unreadable,
        "dpop_proofs_remembered": s.proofs,
        "sweeper": {
            "due": s.due,
            "oldest_due_ms": s.oldest_due,
            "lag_ms": lag,
        },
        "index_entries": {
            "deadlines": s.index_entries.deadlines,
            "family_tokens": s.index_entries.family_tokens,
            "by_subject": s.index_entries.by_subject,
            "by_client": s.index_entries.by_client,
            "subject_tokens": s.index_entries.subject_tokens,
            "client_tokens": s.index_entries.client_tokens,
        },
    });

    let mut t = String::new();
    let _ = writeln!(t, "tokendb stats — {}", args.path.display());
    let _ = writeln!(
        t,
        "  file            {} for {} stored tokens{}",
        bytes(file),
        num(records),
        per_record.map_or(String::new(), |b| format!(" ({} bytes per token)", num(b)))
    );
    let _ = writeln!(
        t,
        "  refresh tokens  live {}, rotated {} (not stored: a family keeps only its current generation), revoked {}, expired {}",
        num(f.active),
        num(f.rotations()),
        num(f.revoked),
        num(f.expired_absolute + f.expired_idle)
    );
    let reasons = if f.revoked_by_reason.is_empty() {
        String::new()
    } else {
        format!(
            " ({})",
            f.revoked_by_reason
                .iter()
                .map(|(r, n)| format!("{r} {}", num(*n)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let _ = writeln!(
        t,
        "  families        {}: active {} ({} in a grace window), revoked {}{reasons}, expired {} (absolute {}, idle {}); {} generations in all",
        num(f.total()),
        num(f.active),
        num(f.in_grace),
        num(f.revoked),
        num(f.expired_absolute + f.expired_idle),
        num(f.expired_absolute),
        num(f.expired_idle),
        num(f.generations)
    );
    for (label, a) in [("family-bound", fb), ("standalone  ", sa)] {
        let _ = writeln!(
            t,
            "  access tokens   {label} active {}, revoked {}, expired {}",
            num(a.active),
            num(a.revoked),
            num(a.expired)
        );
    }
    let soon: Vec<String> = HORIZONS
        .iter()
        .zip(&s.expiring)
        .map(|((name, _), e)| {
            format!(
                "next {name}: {} families, {} access tokens",
                num(e.families),
                num(e.access_tokens)
            )
        })
        .collect();
    let _ = writeln!(t, "  expiring        {}", soon.join("; "));
    let _ = writeln!(
        t,
        "  keys            current sealing key {current}; held {}; records by key: {}",
        held.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        by_key_text(&s.records_by_key)
    );
    let _ = writeln!(
        t,
        "  sweeper         {} entries due{}",
        num(s.due),
        lag.map_or(String::new(), |l| format!(
            ", the oldest overdue by {}",
            ms(l)
        ))
    );
    let _ = writeln!(
        t,
        "  replay cache    {} DPoP proofs remembered",
        num(s.proofs)
    );
    let ix = &s.index_entries;
    let _ = writeln!(
        t,
        "  index entries   deadlines {}, family_tokens {}, by_subject {}, by_client {}, \
         subject_tokens {}, client_tokens {}",
        num(ix.deadlines),
        num(ix.family_tokens),
        num(ix.by_subject),
        num(ix.by_client),
        num(ix.subject_tokens),
        num(ix.client_tokens)
    );
    if s.unreadable > 0 {
        let _ = writeln!(
            t,
            "  warning: {} records fail authentication; run `tokendb verify` to list them",
            num(s.unreadable)
        );
    }
    Ok(Report::ok(json, t))
}
