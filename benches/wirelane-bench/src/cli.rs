//! The command line, declared with clap's derive: one struct of options per
//! subcommand, each beside the code that reads it, and the shared value parsers.
//!
//! clap refuses options a subcommand does not take and values that do not parse,
//! so a typo is an error (exit status 2, as usual for command-line tools, and
//! distinct from 1, which means a run found a problem), never a silently ignored
//! setting.

use std::time::Duration;

use clap::{Parser, Subcommand};
use wirelane::Config;

use crate::{
    baseline, certs, connect, deadlock, idle, latency, linkq, load, mesh, meshnode, netmesh, peer,
    rpc, scale, serve, soak, throughput,
};

/// wirelane's benchmarks and load checks.
///
/// With no subcommand, runs the main job: a short mixed run (about 5 s) over a
/// 4-node full mesh on loopback, gossip and private traffic between every pair,
/// then checks that every private message accepted by `send` arrived exactly once
/// and in order. Exit status: 0 success, 1 the run found a problem, 2 bad command
/// line.
#[derive(Debug, Parser)]
#[command(name = "wirelane-bench", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// One JSON object per result on stdout instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress on stderr (progress is also off when stderr is not a terminal).
    #[arg(long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Throughput(throughput::Args),
    Latency(latency::Args),
    Rpc(rpc::Args),
    Mesh(mesh::Args),
    Deadlock(deadlock::Args),
    Scale(scale::Args),
    Soak(soak::Args),
    Serve(serve::Args),
    Load(load::Args),
    Peer(peer::Args),
    Baseline(baseline::Args),
    Connect(connect::Args),
    Certs(certs::Args),
    Netmesh(netmesh::Args),
    /// The idle peers of `scale`, in a process of their own.
    #[command(hide = true)]
    IdlePeers(idle::Args),
    /// One node of `netmesh`, in a process and a network namespace of its own.
    #[command(hide = true)]
    MeshNode(meshnode::Args),
    /// The delay and loss of `netmesh`'s links where the kernel has no netem.
    #[command(hide = true)]
    LinkQueue(linkq::Args),
}

/// The node a long-running subcommand (`serve`, `peer`) stands up.
#[derive(Debug, clap::Args)]
pub struct Listen {
    /// Address to listen on.
    #[arg(long)]
    pub listen: String,
    /// This node's peer id.
    #[arg(long)]
    pub id: u64,
}

/// `config` with `value` set by `setter`, if the option was given.
pub fn set<T>(config: Config, value: Option<T>, setter: fn(Config, T) -> Config) -> Config {
    match value {
        Some(v) => setter(config, v),
        None => config,
    }
}

/// A duration given in (possibly fractional) seconds, above 0 and at most an hour.
pub fn seconds(value: &str) -> Result<Duration, String> {
    let secs: f64 = value.parse().map_err(|e| format!("{e}"))?;
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() && d <= Duration::from_secs(3600) => Ok(d),
        _ => Err("must be above 0 and at most 3600 seconds".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(line.split_whitespace())
    }

    #[test]
    fn no_argument_is_the_main_job_and_typos_are_errors() {
        assert!(parse("wirelane-bench")
            .expect("no arguments")
            .command
            .is_none());
        assert!(parse("wirelane-bench throughput --sise 64").is_err());
        assert!(parse("wirelane-bench latency --impl fast").is_err());
        assert!(parse("wirelane-bench soak --secs 0").is_err());
        let cli = parse("wirelane-bench baseline raw --size 64 --json").expect("a baseline");
        assert!(cli.json && matches!(cli.command, Some(Command::Baseline(_))));
        let cli = parse("wirelane-bench --json rpc --size 64 --count 20000 --threads 4")
            .expect("an rpc run");
        assert!(cli.json && matches!(cli.command, Some(Command::Rpc(_))));
        assert!(parse("wirelane-bench rpc --impl naive").is_err());
        let cli = parse("wirelane-bench deadlock --scenario storm-send --storm-messages 10")
            .expect("a storm");
        assert!(matches!(cli.command, Some(Command::Deadlock(_))));
        assert!(parse("wirelane-bench deadlock --scenario storm --storm-requests 0").is_err());
        assert!(parse("wirelane-bench deadlock --scenario storms").is_err());
    }

    #[test]
    fn parsers_refuse_zero() {
        assert!(parse("wirelane-bench latency --count 0").is_err());
        assert!(parse("wirelane-bench rpc --count 0").is_err());
        assert!(parse("wirelane-bench rpc --threads 0").is_err());
        assert!(seconds("0").is_err());
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
    }
}
