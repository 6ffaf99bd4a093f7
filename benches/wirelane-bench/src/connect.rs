//! `connect`: how long a fresh connection takes to be usable, plaintext and mutual
//! TLS in the same run: from the dial to `Node::connect` returning, which covers
//! the TCP handshake, the TLS handshake (certificates checked both ways, the id in
//! the acceptor's certificate matched against its hello) and the hello exchange.
//!
//! One client and one server node per kind, the kinds taking turns connection by
//! connection, so that whatever else the machine is doing weighs on both alike.
//! Between two connections the client disconnects and waits until both nodes have
//! seen the connection end, so that no connection is timed against the previous
//! one's teardown.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use wirelane::{Config, Event, Node, PeerId};

use crate::report::{progress, Output, Record};
use crate::tls::{Compare, Security};

/// Longest wait for a connection's end to be reported.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Connections made before measuring, to warm caches and the allocator.
const WARMUP: u64 = 20;

/// Connect time of fresh connections (dial + TLS + hello): p50, p99. The client is
/// node 1, the server node 2 (for --cert with {id}). Without --cert, both plaintext
/// and TLS with fresh certificates.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Connections measured per kind (after a warm-up of 20).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    #[command(flatten)]
    security: Compare,
}

pub fn run(args: &Args, quiet: bool, out: Output) -> anyhow::Result<ExitCode> {
    let count = args.count;
    let (client, server) = (PeerId(1), PeerId(2));
    // Both kinds unless only files were given: then TLS with them alone.
    let compare = Compare {
        tls: args.security.tls || !args.security.files.given(),
        files: args.security.files.clone(),
    };
    let securities = compare.securities(&[client, server])?;
    let mut pairs = Vec::new();
    for security in &securities {
        let node = |id| -> anyhow::Result<Node> {
            Ok(Node::bind(
                id,
                "127.0.0.1:0",
                security.config(Config::default(), id)?,
            )?)
        };
        pairs.push(Pair {
            security,
            client: node(client)?,
            server: node(server)?,
            samples: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        });
    }
    let bar = progress("connect", Some(WARMUP + count), quiet);
    for i in 0..WARMUP + count {
        for pair in &mut pairs {
            let took = pair.once()?;
            if i >= WARMUP {
                pair.samples.saturating_record(took.as_micros() as u64);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut records: Vec<Record> = pairs
        .iter()
        .map(|p| {
            let at = |q: f64| p.samples.value_at_quantile(q) as f64;
            Record::new("connect", p.security.name())
                .set("count", p.samples.len())
                .set("p50_us", at(0.5))
                .set("p99_us", at(0.99))
                .set("p999_us", at(0.999))
                .set("max_us", p.samples.max() as f64)
        })
        .collect();
    for pair in &pairs {
        pair.client.shutdown();
        pair.server.shutdown();
    }
    let mut note = None;
    if let [plain, tls] = &mut records[..] {
        let at = |r: &Record, key| r.number(key).unwrap_or(f64::NAN);
        let ratio = at(tls, "p50_us") / at(plain, "p50_us");
        *tls = tls.clone().set("p50_vs_plain", ratio);
        note = Some(format!(
            "a TLS connection takes {:.0} us more than a plaintext one at p50 ({ratio:.1}x)",
            at(tls, "p50_us") - at(plain, "p50_us")
        ));
    }
    out.records(
        &format!("connect: {count} fresh connections per kind, dial + TLS + hello"),
        &records,
    );
    if let Some(note) = note {
        out.note(&note);
    }
    Ok(ExitCode::SUCCESS)
}

struct Pair<'a> {
    security: &'a Security,
    client: Node,
    server: Node,
    samples: Histogram<u64>,
}

impl Pair<'_> {
    /// Times one connection, then ends it and waits until both nodes have seen it
    /// end.
    fn once(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let peer = self
            .client
            .connect(self.server.local_addr())
            .context("connect")?;
        let took = started.elapsed();
        if peer != self.server.id() {
            bail!("dialled {} but reached {peer}", self.server.id());
        }
        self.client.disconnect(peer);
        for (node, peer) in [
            (&self.client, self.server.id()),
            (&self.server, self.client.id()),
        ] {
            let deadline = Instant::now() + TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match node.events().recv_timeout(left) {
                    Ok(Event::Disconnected { peer: p, .. }) if p == peer => break,
                    Ok(_) => {}
                    Err(_) => bail!("{} did not report its connection's end", node.id()),
                }
            }
        }
        Ok(took)
    }
}
