//! `wirelane-bench`: wirelane's benchmarks and load checks, one binary with
//! subcommands.
//!
//! One binary rather than one per job, so that every job shares the same thread,
//! table and argument helpers and is run the same way
//! (`cargo run --release --bin wirelane-bench [subcommand]`). `main` only dispatches
//! on the first argument:
//!
//! - no argument runs the main job, a short mixed run over a 4-node mesh
//!   ([`mesh`]) that fails (exit status 1) if a private message is lost, duplicated
//!   or reordered;
//! - `--help` prints the usage;
//! - anything else prints the usage to stderr and exits with status 2.

mod cli;
mod mesh;
mod table;
mod threads;

use std::process::ExitCode;

use crate::cli::Command;

fn main() -> ExitCode {
    match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Mesh) => mesh::run(),
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wirelane-bench: {e}");
            eprintln!();
            eprint!("{}", cli::USAGE);
            ExitCode::from(cli::USAGE_EXIT)
        }
    }
}
