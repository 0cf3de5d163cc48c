//! `tokendb verify`: the full integrity scan. Exit code 1 if it finds anything.

use crate::cmd::{by_key_json, by_key_text};
use crate::error::{CliError, Exit};
use crate::open::{DbArgs, open};
use crate::output::{Report, num};
use serde_json::json;
use std::fmt::Write as _;

pub(crate) fn run(args: &DbArgs, max_problems: usize) -> Result<Report, CliError> {
    let opened = open(args, None)?;
    let r = opened.db.verify(max_problems)?;
    let keys = opened.db.sealing_keys();
    let held: Vec<u32> = keys.held.iter().map(|k| k.0).collect();
    let current = keys.current.0;
    opened.db.close()?;

    let problems: Vec<_> = r
        .problems
        .iter()
        .map(|p| json!({ "table": p.table, "subject": p.subject, "problem": p.what }))
        .collect();
    let json = json!({
        "ok": r.is_clean(),
        "families": r.families,
        "access_tokens": r.access_tokens,
        "index_entries": r.index_entries,
        "problem_count": r.problem_count,
        "problems": problems,
        "problems_truncated": r.problem_count > r.problems.len() as u64,
        "keys": { "current": current, "held": held, "records_by_key": by_key_json(&r.records_by_key) },
    });
    let mut t = format!(
        "verify {}: {} families, {} access tokens, {} index entries; records by key: {}\n",
        args.path.display(),
        num(r.families),
        num(r.access_tokens),
        num(r.index_entries),
        by_key_text(&r.records_by_key)
    );
    if r.is_clean() {
        t.push_str("no problems found: every record authenticates and opens, and every index entry matches its record\n");
    } else {
        let _ = writeln!(t, "{} problems found:", num(r.problem_count));
        for p in &r.problems {
            let _ = writeln!(t, "  [{}] {}: {}", p.table, p.subject, p.what);
        }
        if r.problem_count > r.problems.len() as u64 {
            let _ = writeln!(
                t,
                "  … and {} more (raise --max-problems to list them)",
                num(r.problem_count - r.problems.len() as u64)
            );
        }
        t.push_str("next: restore the file from a backup (see docs/operations.md); a damaged record answers `unknown` or an error to lookups, never altered data\n");
    }
    Ok(Report {
        json,
        text: t,
        exit: if r.is_clean() {
            Exit::Ok
        } else {
            Exit::Problems
        },
    })
}
