//! `wirelane-bench`: wirelane's benchmarks and load checks, one binary with
//! subcommands, so that every job shares the same command line, result records (a
//! table, or JSON lines with `--json`), progress bar and thread helpers. With no
//! subcommand it runs the main job ([`mesh`]). A crate of its own, never published,
//! so that its tooling never reaches the library's users.

mod baseline;
mod certs;
mod child;
mod cli;
mod connect;
mod deadlock;
mod idle;
mod latency;
mod limits;
mod linkq;
mod load;
mod locked;
mod mesh;
mod meshnode;
mod naive;
mod netmesh;
mod netns;
mod oneway;
mod peer;
mod procfs;
mod remote;
mod report;
mod rpc;
mod scale;
mod serve;
mod soak;
mod stamp;
mod storm;
mod threads;
mod throughput;
mod tls;
mod traffic;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::report::Output;

fn main() -> ExitCode {
    // A bad command line exits with status 2 and the usage, as clap does.
    let cli = Cli::parse();
    let out = Output { json: cli.json };
    let quiet = cli.quiet;
    let result = match cli.command {
        None => mesh::main_job(quiet, out),
        Some(Command::Throughput(args)) => throughput::run(&args, quiet, out),
        Some(Command::Latency(args)) => latency::run(&args, quiet, out),
        Some(Command::Rpc(args)) => rpc::run(&args, quiet, out),
        Some(Command::Mesh(args)) => mesh::run(&args, quiet, out),
        Some(Command::Deadlock(args)) => deadlock::run(&args, quiet, out),
        Some(Command::Scale(args)) => scale::run(&args, quiet, out),
        Some(Command::Soak(args)) => soak::run(&args, quiet, out),
        Some(Command::Serve(args)) => serve::run(&args, out),
        Some(Command::Load(args)) => load::run(&args, quiet, out),
        Some(Command::Peer(args)) => peer::run(&args),
        Some(Command::Baseline(args)) => baseline::run(&args, out),
        Some(Command::Connect(args)) => connect::run(&args, quiet, out),
        Some(Command::Certs(args)) => certs::run(&args, out),
        Some(Command::Netmesh(args)) => netmesh::run(&args, quiet, out),
        Some(Command::IdlePeers(args)) => idle::run(&args),
        Some(Command::MeshNode(args)) => meshnode::run(&args),
        Some(Command::LinkQueue(args)) => linkq::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wirelane-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
