//! `wirelane-bench`: wirelane's benchmarks and load checks, one binary with
//! subcommands.
//!
//! One binary rather than one per job, so that every job shares the same argument
//! parsing, result records (a table, or JSON lines with `--json`), progress line and
//! thread helpers, and is run the same way:
//! `cargo run --release --bin wirelane-bench [subcommand] [options]`. With no
//! subcommand it runs the main job ([`mesh`]); `--help` lists the rest.

mod baseline;
mod cli;
mod deadlock;
mod latency;
mod load;
mod locked;
mod mesh;
mod naive;
mod peer;
mod procfs;
mod progress;
mod remote;
mod report;
mod scale;
mod serve;
mod soak;
mod streams;
mod table;
mod threads;
mod throughput;

use std::process::ExitCode;

use crate::cli::{Args, CliError};
use crate::report::Output;

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(e) => return usage_error(&e),
    };
    if args.flag("help") || args.command == "help" {
        print!("{}", cli::USAGE);
        return ExitCode::SUCCESS;
    }
    let out = Output {
        json: args.flag("json"),
    };
    let result = match args.command.as_str() {
        "" => mesh::main_job(&args, out),
        "mesh" => mesh::run(&args, out),
        "serve" => serve::run(&args, out),
        "load" => load::run(&args, out),
        "deadlock" => deadlock::run(&args, out),
        "throughput" => throughput::run(&args, out),
        "scale" => scale::run(&args, out),
        "soak" => soak::run(&args, out),
        "latency" => latency::run(&args, out),
        "baseline" => baseline::run(&args, out),
        "peer" => peer::run(&args, out),
        other => return usage_error(&CliError::UnknownCommand(other.to_owned())),
    };
    match result {
        Ok(code) => code,
        Err(e) => match e.downcast_ref::<CliError>() {
            Some(cli) => usage_error(cli),
            None => {
                eprintln!("wirelane-bench: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn usage_error(e: &CliError) -> ExitCode {
    eprintln!("wirelane-bench: {e}");
    eprintln!();
    eprint!("{}", cli::USAGE);
    ExitCode::from(cli::USAGE_EXIT)
}
