//! `tokendb sweep`: one sweep pass now, in bounded batches, with progress and a summary.

use crate::error::CliError;
use crate::open::{DbArgs, open_sweeping};
use crate::output::{Report, ms, num, progress};
use serde_json::json;
use std::time::Instant;
use tokendb::{Clock, PassReport, SystemClock};

pub(crate) fn run(args: &DbArgs, limit: Option<u64>, batch: u64) -> Result<Report, CliError> {
    let opened = open_sweeping(args, usize::try_from(batch.max(1)).unwrap_or(usize::MAX))?;
    let now = SystemClock.now_ms();
    let due = opened.db.due_entries(now)?;
    let target = limit.map_or(due, |l| l.min(due));
    let pb = progress(target, "sweeping");
    let started = Instant::now();
    // The same pass, batch after batch through the same writer, as the background sweeper's.
    let total = if due > 0 {
        opened.db.sweep_now(limit)?
    } else {
        PassReport::default()
    };
    let batches = total.batches;
    pb.inc(total.examined);
    pb.finish_and_clear();
    let elapsed = started.elapsed();
    let remaining = opened.db.due_entries(now)?;
    opened.db.close()?;

    let lag = (total.lag_ms > 0).then_some(total.lag_ms);
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
