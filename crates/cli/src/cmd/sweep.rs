//! `tokendb sweep`: one sweep pass now, in bounded batches, with progress and a summary.

use crate::error::CliError;
use crate::open::{DbArgs, open};
use crate::output::{Report, ms, num, progress};
use serde_json::json;
use std::time::Instant;
use tokendb::{Clock, SystemClock};
use tokendb_store::{Op, Outcome, SweepCounts};

pub(crate) fn run(args: &DbArgs, limit: Option<u64>, batch: u64) -> Result<Report, CliError> {
    let opened = open(args, None)?;
    let store = opened.db.store();
    let now = SystemClock.now_ms();
    let due = store.due_entries(now)?;
    let target = limit.map_or(due, |l| l.min(due));
    let pb = progress(target, "sweeping");
    let started = Instant::now();
    let mut total = SweepCounts::default();
    let mut batches = 0u64;
    let mut more = due > 0;
    while more {
        let room = limit.map_or(u64::MAX, |l| l.saturating_sub(total.examined));
        let n = usize::try_from(room.min(batch)).unwrap_or(usize::MAX);
        if n == 0 {
            break;
        }
        // The same operation, through the same writer, as the background sweeper's batches.
        let Outcome::Swept(c) = store.submit(Op::Sweep { limit: n }, now)? else {
            break;
        };
        batches += 1;
        total.examined += c.examined;
        total.families += c.families;
        total.tokens += c.tokens;
        total.refiled += c.refiled;
        total.grace_erased += c.grace_erased;
        total.corrupt += c.corrupt;
        if let Some(d) = c.oldest_deadline {
            total.oldest_deadline = Some(total.oldest_deadline.map_or(d, |o| o.min(d)));
        }
        more = c.more;
        pb.inc(c.examined);
    }
    pb.finish_and_clear();
    let elapsed = started.elapsed();
    let remaining = store.due_entries(now)?;
    opened.db.close()?;

    let lag = total.oldest_deadline.map(|d| now.saturating_sub(d));
    let json = json!({
        "now_ms": now,
        "due_before": due,
        "batches": batches,
        "examined": total.examined,
        "families_deleted": total.families,
        "access_tokens_deleted": total.tokens,
        "refiled": total.refiled,
        "grace_erased": total.grace_erased,
        "corrupt": total.corrupt,
        "lag_ms": lag,
        "remaining_due": remaining,
        "duration_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
    });
    let mut text = format!(
        "sweep: {} batches examined {} of {} due entries in {}: deleted {} families and {} access tokens, re-filed {}, erased {} grace slots",
        num(batches),
        num(total.examined),
        num(due),
        ms(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)),
        num(total.families),
        num(total.tokens),
        num(total.refiled),
        num(total.grace_erased),
    );
    if let Some(l) = lag {
        text.push_str(&format!("; the oldest was overdue by {}", ms(l)));
    }
    text.push('\n');
    if remaining > 0 {
        text.push_str(&format!(
            "  {} entries are still due (--limit reached); run sweep again to continue\n",
            num(remaining)
        ));
    }
    if total.corrupt > 0 {
        text.push_str(&format!(
            "  warning: {} entries pointed at records that fail authentication; their entries were dropped and the records kept: run `tokendb verify`\n",
            num(total.corrupt)
        ));
    }
    Ok(Report::ok(json, text))
}
