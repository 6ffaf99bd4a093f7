//! `throughput`: one-way messages from sender nodes into one receiver node, measured
//! beside the two limits in the same run: raw loopback TCP and an in-process
//! channel; with `--tls`, over mutual TLS too, against plaintext in the same run.

use std::process::ExitCode;
use std::sync::Arc;

use clap::ValueEnum;
use wirelane::{Config, Lane, Node, PeerId};

use crate::oneway::{self, default_count};
use crate::report::{progress, Output, Record};
use crate::tls::{Compare, Security};
use crate::{baseline, cli};

/// One-way messages from K sender nodes into one receiver in this process, every
/// payload freshly allocated, beside the raw loopback TCP and in-process channel
/// limits. The receiver is node 0, the senders 1 to K (for --cert with {id}).
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
    /// Config::lanes_grow: lanes whose memory follows what they hold.
    #[arg(long)]
    lanes_grow: bool,
    /// Runs of each contender, interleaved; the best is kept.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    repeat: u64,
    /// `wirelane` skips the limits.
    #[arg(long = "impl", value_enum, default_value_t = Contenders::All)]
    contenders: Contenders,
    #[command(flatten)]
    security: Compare,
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
    let config = cli::set(config, args.capacity, both).lanes_grow(args.lanes_grow);
    let ids: Vec<PeerId> = (0..=conns as u64).map(PeerId).collect();
    let securities = args.security.securities(&ids)?;
    let title = format!("throughput: {size}-byte {lane} messages, {conns} connection(s)");

    // Each contender runs `repeat` times, interleaved, and keeps its best run: the
    // machine may be shared, and the fastest run is the one least disturbed.
    let limits = args.contenders == Contenders::All;
    let mut contenders: Vec<Box<dyn Fn() -> anyhow::Result<Record>>> = Vec::new();
    if limits {
        contenders.push(Box::new(|| baseline::channel(size, count)));
        contenders.push(Box::new(|| baseline::raw(size, count)));
    }
    for security in &securities {
        let config = &config;
        contenders.push(Box::new(move || {
            wirelane(config, security, size, count, lane, conns)
        }));
    }
    let bar = progress("throughput", Some(repeat), quiet);
    let (mut best, mut all): (Vec<Option<Record>>, _) = (vec![None; contenders.len()], Vec::new());
    for _ in 0..repeat {
        for (slot, contender) in best.iter_mut().zip(&contenders) {
            let run = contender()?;
            all.push(run.clone());
            oneway::keep_faster(slot, run);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let Some(mut best) = best.into_iter().collect::<Option<Vec<Record>>>() else {
        anyhow::bail!("--repeat is at least 1, so every contender ran");
    };
    let mut notes = Vec::new();
    if limits {
        let (channel, raw) = (best[0].rate(), best[1].rate());
        for ours in &mut best[2..] {
            let (vs_channel, vs_raw) = (ours.rate() / channel, ours.rate() / raw);
            *ours = ours
                .clone()
                .set("vs_channel", vs_channel)
                .set("vs_raw", vs_raw);
            notes.push(format!(
                "{} reaches {:.0}% of the in-process channel limit and {:.0}% of raw loopback TCP",
                ours.get("impl")
                    .and_then(|v| v.as_str())
                    .unwrap_or("wirelane"),
                100.0 * vs_channel,
                100.0 * vs_raw
            ));
        }
    }
    if let ([.., plain, tls], 2) = (&mut best[..], securities.len()) {
        let ratio = tls.rate() / plain.rate();
        *tls = tls.clone().set("vs_plain", ratio);
        notes.push(format!(
            "over TLS wirelane moves {:.0}% of its plaintext throughput (best runs)",
            100.0 * ratio
        ));
    }
    // With the limits, the best run of each contender; without them, every run (as
    // scripts that take their own best or median read them).
    if limits {
        out.records(&format!("{title}, best of {repeat}"), &best);
    } else {
        out.records(&title, &all);
    }
    for note in notes {
        out.note(&note);
    }
    Ok(ExitCode::SUCCESS)
}

/// `count` messages from `conns` sender nodes into one receiver node.
fn wirelane(
    config: &Config,
    security: &Security,
    size: usize,
    count: u64,
    lane: Lane,
    conns: usize,
) -> anyhow::Result<Record> {
    let node = |id| -> anyhow::Result<Node> {
        let config = security.config(config.clone(), id)?;
        Ok(Node::bind(id, "127.0.0.1:0", config)?)
    };
    let receiver = node(PeerId(0))?;
    let mut senders = Vec::with_capacity(conns);
    for i in 0..conns {
        let node = node(PeerId(i as u64 + 1))?;
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
    Ok(oneway::record(security.name(), size, received, elapsed)
        .set("lane", lane.to_string())
        .set("conns", conns as u64)
        .set("dropped", dropped))
}
