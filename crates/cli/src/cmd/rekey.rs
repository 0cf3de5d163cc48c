//! `tokendb rekey`: re-wrap the data keys under a new master key, or rotate the sealing key and
//! re-seal every record under it.

use crate::error::CliError;
use crate::key;
use crate::open::{DbArgs, open, open_with};
use crate::output::{Report, num, progress};
use clap::{ArgGroup, Args, value_parser};
use serde_json::json;
use std::path::PathBuf;
use tokendb::ResealCursor;

/// Exit code of a run stopped by `--stop-after-batches` (tests only).
const STOPPED: i32 = 99;

/// Which key to change.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("kind").required(true).args(["new_master_key_file", "data_key"])))]
pub(crate) struct RekeyArgs {
    #[command(flatten)]
    pub(crate) db: DbArgs,
    /// Re-wrap the data keys under the master key held in FILE. Takes a moment whatever the
    /// size of the file: no record is rewritten. Afterwards only the new key opens the file.
    #[arg(long, value_name = "FILE")]
    pub(crate) new_master_key_file: Option<PathBuf>,
    /// Draw a new sealing key, re-seal every record under it in batches, then retire the old
    /// key. Safe to interrupt: run it again and it resumes instead of drawing another key.
    #[arg(long)]
    pub(crate) data_key: bool,
    /// Records re-sealed per batch (one write transaction each).
    #[arg(long, default_value_t = 1000, value_parser = value_parser!(u64).range(1..))]
    pub(crate) batch: u64,
    /// Tests only: exit abruptly (no clean close) after N re-seal batches, as a kill would.
    #[arg(long, hide = true, value_name = "N")]
    pub(crate) stop_after_batches: Option<u64>,
}

pub(crate) fn run(a: &RekeyArgs) -> Result<Report, CliError> {
    match &a.new_master_key_file {
        Some(file) => master(a, file),
        None => data(a),
    }
}

fn master(a: &RekeyArgs, file: &std::path::Path) -> Result<Report, CliError> {
    let new = key::from_file(file, "--new-master-key-file")?;
    let opened = open(&a.db, None)?;
    if new.to_hex() == opened.master.to_hex() {
        opened.db.close()?;
        return Err(CliError::usage(
            "same_master_key",
            "the new master key is the key already in use",
            "generate a new key (e.g. `head -c 32 /dev/urandom | xxd -p -c 64`) into a 0600 file and pass that file",
        ));
    }
    opened.db.rotate_master_key(&opened.master, &new)?;
    opened.db.close()?;
    // Prove it before telling the operator to throw the old key away.
    open_with(&a.db.path, &new, None)?.close()?;
    let json = json!({ "rekeyed": "master_key", "records_rewritten": 0 });
    let text = format!(
        "rekey: the data keys of {} are now wrapped under the new master key (no record rewritten); only the key in {} opens it from now on — update the server's key source before restarting it\n",
        a.db.path.display(),
        file.display()
    );
    Ok(Report::ok(json, text))
}

fn data(a: &RekeyArgs) -> Result<Report, CliError> {
    let opened = open(&a.db, None)?;
    let db = &opened.db;
    let keys = db.sealing_keys();
    let before = keys.current;
    let pending: Vec<u32> = keys
        .held
        .into_iter()
        .filter(|k| *k != before)
        .map(|k| k.0)
        .collect();
    // Older sealing keys still held means an earlier run stopped half-way: finish it rather
    // than draw yet another key.
    let resumed = !pending.is_empty();
    let new = if resumed {
        before
    } else {
        db.add_sealing_key(&opened.master)?
    };
    let total: u64 = db
        .records_by_key()?
        .iter()
        .filter(|(k, _)| **k != new)
        .map(|(_, n)| *n)
        .sum();
    let pb = progress(total, "re-sealing");
    let limit = usize::try_from(a.batch).unwrap_or(usize::MAX);
    let (mut resealed, mut batches, mut skipped) = (0u64, 0u64, 0u64);
    let mut cursor = ResealCursor::default();
    loop {
        // Through the group-commit writer, like any write of a running server: lookups and
        // other writes carry on between batches.
        let batch = db.reseal_batch(limit, cursor)?;
        cursor = batch.cursor;
        skipped += batch.corrupt;
        resealed += batch.records;
        batches += 1;
        pb.inc(batch.records);
        let more = batch.more;
        if a.stop_after_batches == Some(batches) {
            pb.abandon();
            eprintln!(
                "rekey: stopping abruptly after {batches} batches ({resealed} records re-sealed), as asked"
            );
            std::process::exit(STOPPED);
        }
        if !more {
            break;
        }
    }
    pb.finish_and_clear();
    if skipped > 0 {
        return Err(CliError::new(
            crate::error::Exit::Failed,
            "damaged_records",
            format!("{skipped} record(s) could not be re-sealed: they fail authentication"),
            "run `tokendb verify` to find them; the old key stays until they are dealt with",
        ));
    }
    let retired: Vec<u32> = db
        .retire_old_sealing_keys(&opened.master)?
        .iter()
        .map(|k| k.0)
        .collect();
    let held: Vec<u32> = db.sealing_keys().held.iter().map(|k| k.0).collect();
    opened.db.close()?;

    let json = json!({
        "rekeyed": "data_key",
        "resumed": resumed,
        "sealing_key": new.0,
        "resealed": resealed,
        "batches": batches,
        "retired": retired,
        "held": held,
    });
    let text = format!(
        "rekey: {} sealing key {}; re-sealed {} records in {} batches; retired key(s) {}\n",
        if resumed {
            "resumed re-sealing under"
        } else {
            "drew"
        },
        new.0,
        num(resealed),
        num(batches),
        if retired.is_empty() {
            "none".to_owned()
        } else {
            retired
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    Ok(Report::ok(json, text))
}
