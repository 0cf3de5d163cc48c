//! `tokendb`: the operator command for tokendb database files.
//!
//! Every operator command opens the file (which takes redb's exclusive lock, so the server
//! that uses it must be stopped, or the work done from inside it through the same API), does
//! one thing, closes it, and prints text or, with `--json`, one JSON document. Exit codes are
//! in [`error::Exit`] and `docs/operations.md`.

#![forbid(unsafe_code)]

mod cmd;
mod demo;
mod error;
mod key;
mod open;
mod output;

use clap::{Parser, Subcommand, value_parser};
use error::{CliError, EXIT_CODES_HELP, Exit};
use open::DbArgs;
use output::Report;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Operate tokendb token databases.
#[derive(Debug, Parser)]
#[command(name = "tokendb", version, about, after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Walk through the token lifecycle on a demo database file (created if missing), then
    /// measure validations per second.
    Demo {
        /// Database file. Its master key is kept beside it in `<PATH>.key` (demo only!).
        #[arg(default_value = "./tokendb-demo.tdb")]
        path: PathBuf,
        /// How many tokens to issue for the throughput part.
        #[arg(long, default_value_t = 100_000)]
        tokens: u64,
        /// Run the demo on PostgreSQL instead of a file: a connection URL such as
        /// `postgres://user:password@host:5432/dbname`. tokendb's tables are created if
        /// missing; the demo's master key is kept in `./tokendb-demo-postgres.key` (demo only!).
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
    },
    /// Count families and tokens by kind and state, what expires in the next hour, day and
    /// week, file size and bytes per token, sealing keys in use, and the sweeper's backlog.
    #[command(after_help = EXIT_CODES_HELP)]
    Stats {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Show the introspection answer (RFC 7662) for one token. Reads nothing but that token.
    #[command(after_help = EXIT_CODES_HELP)]
    Inspect {
        #[command(flatten)]
        db: DbArgs,
        /// The token; `-` reads it from stdin, keeping it out of shell history and `ps`.
        #[arg(value_name = "TOKEN|-")]
        token: String,
        /// The token prefix the server uses.
        #[arg(long, default_value = "tdb", value_name = "PREFIX")]
        token_prefix: String,
    },
    /// Revoke by token, family, subject (optionally with one client), or client.
    #[command(after_help = EXIT_CODES_HELP)]
    Revoke(cmd::revoke::RevokeArgs),
    /// Run one sweep now: delete what has expired, in bounded batches.
    #[command(after_help = EXIT_CODES_HELP)]
    Sweep {
        #[command(flatten)]
        db: DbArgs,
        /// Examine at most N due entries (default: all that are due).
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// Entries per batch (one write transaction each).
        #[arg(long, default_value_t = 2000, value_parser = value_parser!(u64).range(1..))]
        batch: u64,
    },
    /// Full integrity scan: open every sealed record, check every index entry against its
    /// record and every record against its index entries. Exits 1 if anything is wrong.
    #[command(after_help = EXIT_CODES_HELP)]
    Verify {
        #[command(flatten)]
        db: DbArgs,
        /// List at most N problems (all are counted).
        #[arg(long, default_value_t = 1000, value_name = "N")]
        max_problems: usize,
    },
    /// Re-wrap the data keys under a new master key, or rotate the sealing key and re-seal
    /// every record (resumable).
    #[command(after_help = EXIT_CODES_HELP)]
    Rekey(cmd::rekey::RekeyArgs),
    /// Compact the file: return free pages to the file system.
    #[command(after_help = EXIT_CODES_HELP)]
    Compact {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Copy the database to a new file, consistently, and check that the copy opens.
    #[command(after_help = EXIT_CODES_HELP)]
    Backup {
        #[command(flatten)]
        db: DbArgs,
        /// The new file (must not exist).
        dest: PathBuf,
    },
}

impl Command {
    fn json(&self) -> bool {
        match self {
            Self::Demo { .. } => false,
            Self::Stats { db }
            | Self::Inspect { db, .. }
            | Self::Sweep { db, .. }
            | Self::Verify { db, .. }
            | Self::Compact { db }
            | Self::Backup { db, .. } => db.json,
            Self::Revoke(a) => a.db.json,
            Self::Rekey(a) => a.db.json,
        }
    }
}

fn run(command: &Command) -> Result<Report, CliError> {
    match command {
        Command::Demo {
            path,
            tokens,
            postgres,
        } => match postgres {
            Some(url) => demo::run(&demo::Target::Postgres(url), *tokens),
            None => demo::run(&demo::Target::File(path), *tokens),
        }
        .map(|()| Report::ok(serde_json::Value::Null, String::new()))
        .map_err(|e| {
            CliError::new(
                Exit::Failed,
                "demo",
                e.to_string(),
                "remove the demo files and run it again",
            )
        }),
        Command::Stats { db } => cmd::stats::run(db),
        Command::Inspect {
            db,
            token,
            token_prefix,
        } => cmd::inspect::run(db, token, token_prefix),
        Command::Revoke(a) => cmd::revoke::run(a),
        Command::Sweep { db, limit, batch } => cmd::sweep::run(db, *limit, *batch),
        Command::Verify { db, max_problems } => cmd::verify::run(db, *max_problems),
        Command::Rekey(a) => cmd::rekey::run(a),
        Command::Compact { db } => cmd::compact::run(db),
        Command::Backup { db, dest } => cmd::backup::run(db, dest),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.command.json();
    let exit = match run(&cli.command) {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            let _ = if json {
                writeln!(out, "{:#}", report.json)
            } else {
                write!(out, "{}", report.text)
            };
            report.exit
        }
        Err(e) => {
            if json {
                println!("{:#}", e.to_json());
            } else {
                eprintln!("error: {}\n  next: {}", e.message, e.hint);
            }
            e.exit
        }
    };
    ExitCode::from(exit.code())
}
