//! `throughput`: one-way messages from sender nodes into one receiver node, measured
//! beside the two limits in the same run: raw loopback TCP and an in-process
//! channel.

use std::process::ExitCode;
use std::sync::Arc;

use clap::ValueEnum;
use wirelane::{Config, Lane, Node, PeerId};

use crate::oneway::{self, default_count};
use crate::report::{progress, Output, Record};
use crate::{baseline, cli};

/// One-way messages from K sender nodes into one receiver in this process, every
/// payload freshly allocated, beside the raw loopback TCP and in-process channel
/// limits.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bytes per payload.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages in all (default: about a second's worth).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    #[arg(long, value_enum, default_value_t = LaneArg::Private)]
    lane: LaneArg,
    /// Sender nodes, each with its own connection and thread.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    conns: u64,
    /// Config::max_batch_bytes.
    #[arg(long)]
    batch: Option<usize>,
    /// Both lane capacities.
    #[arg(long)]
    capacity: Option<usize>,
    /// Runs of each contender, interleaved; the best is kept.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    repeat: u64,
    /// `wirelane` skips the limits.
    #[arg(long = "impl", value_enum, default_value_t = Contenders::All)]
    contenders: Contenders,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LaneArg {
    Private,
    Gossip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Contenders {
    All,
    Wirelane,
}

pub fn run(args: &Args, quiet: bool, out: Output) -> anyhow::Result<ExitCode> {
    let (size, conns, repeat) = (args.size, args.conns as usize, args.repeat);
    let count = args.count.unwrap_or_else(|| default_count(size));
    let lane = match args.lane {
        LaneArg::Gossip => Lane::Gossip,
        LaneArg::Private => Lane::Private,
    };
    let config = cli::set(Config::default(), args.batch, Config::max_batch_bytes);
    let both = |c: Config, n| c.gossip_capacity(n).private_capacity(n);
    let config = cli::set(config, args.capacity, both);
    let ours = || wirelane(&config, size, count, lane, conns);
    let title = format!("throughput: {size}-byte {lane} messages, {conns} connection(s)");

    // Each contender runs `repeat` times, interleaved, and keeps its best run.
    let bar = progress("throughput", Some(repeat), quiet);
    if args.contenders == Contenders::Wirelane {
        let mut runs = Vec::new();
        for _ in 0..repeat {
            runs.push(ours()?);
            bar.inc(1);
        }
        bar.finish_and_clear();
        out.records(&title, &runs);
        return Ok(ExitCode::SUCCESS);
    }
    let mut best: [Option<Record>; 3] = [None, None, None];
    for _ in 0..repeat {
        let runs = [
            baseline::channel(size, count)?,
            baseline::raw(size, count)?,
            ours()?,
        ];
        for (slot, run) in best.iter_mut().zip(runs) {
            oneway::keep_faster(slot, run);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let [Some(channel), Some(raw), Some(ours)] = best else {
        anyhow::bail!("--repeat is at least 1, so every contender ran");
    };
    let (vs_channel, vs_raw) = (ours.rate() / channel.rate(), ours.rate() / raw.rate());
    let ours = ours.set("vs_channel", vs_channel).set("vs_raw", vs_raw);
    out.records(&format!("{title}, best of {repeat}"), &[channel, raw, ours]);
    out.note(&format!(
        "wirelane reaches {:.0}% of the in-process channel limit and {:.0}% of raw loopback TCP",
        100.0 * vs_channel,
        100.0 * vs_raw
    ));
    Ok(ExitCode::SUCCESS)
}

/// `count` messages from `conns` sender nodes into one receiver node.
fn wirelane(
    config: &Config,
    size: usize,
    count: u64,
    lane: Lane,
    conns: usize,
) -> anyhow::Result<Record> {
    let receiver = Node::bind(PeerId(0), "127.0.0.1:0", config.clone())?;
    let mut senders = Vec::with_capacity(conns);
    for i in 0..conns {
        let node = Node::bind(PeerId(i as u64 + 1), "127.0.0.1:0", config.clone())?;
        node.connect(receiver.local_addr())?;
        senders.push(Arc::new(node));
    }
    let per_sender = count / conns as u64;
    let (received, elapsed) = oneway::wirelane(&receiver, &senders, size, per_sender, lane)?;
    let dropped = receiver.stats().gossip.recv_dropped
        + senders
            .iter()
            .map(|s| s.stats().gossip.dropped)
            .sum::<u64>();
    for node in &senders {
        node.shutdown();
    }
    receiver.shutdown();
    Ok(oneway::record("wirelane", size, received, elapsed)
        .set("lane", lane.to_string())
        .set("conns", conns as u64)
        .set("dropped", dropped))
}
