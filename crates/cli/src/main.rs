//! `tokendb`: the operator command for tokendb database files.

#![forbid(unsafe_code)]

mod demo;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Operate tokendb token databases.
#[derive(Debug, Parser)]
#[command(name = "tokendb", version, about)]
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { path, tokens } => demo::run(&path, tokens),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
