//! `link-queue` (hidden): delay and loss for the links of `netmesh` on a kernel
//! without `tc netem`. It runs in the bridge's namespace, where every IPv4 packet
//! that crosses the bridge is handed to an NFQUEUE ([`crate::netns::Mesh::queue_rules`]);
//! it drops each packet with the given probability and lets the others go after
//! the given delay, in the order they came. Between two nodes a packet crosses two
//! links, so `netmesh` asks for twice a link's delay and the loss of two links.
//!
//! It speaks nfnetlink_queue over a netlink socket (`socket2`, no `unsafe`): the
//! kernel sends each packet's id (`NFQNL_COPY_META`: no payload is copied), and
//! takes verdicts, one per dropped packet and one per batch of packets let go (a
//! batch verdict accepts every packet up to an id, which is right because the
//! delay is the same for all, so they leave in the order they came).
//!
//! Stdout: `ready` once bound to the queue; `stats passed=P dropped=D` when stdin
//! closes, then it exits.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use crate::traffic::chaos::Rng;

const AF_NETLINK: i32 = 16;
const SOCK_RAW: i32 = 3;
const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
/// Packets the kernel holds for this process before it drops new ones: far more
/// than a few milliseconds of traffic.
const QUEUE_MAXLEN: u32 = 1 << 16;
/// The longest the loop sleeps with nothing held, so that it notices stdin closing.
const IDLE: Duration = Duration::from_millis(100);
/// Waits shorter than this are slept with `nanosleep`, which is precise to
/// microseconds; `epoll_wait` rounds up to whole milliseconds.
const FINE: Duration = Duration::from_millis(1);
/// The netlink socket's token.
const READY: Token = Token(0);

/// Delays and drops the packets of an NFQUEUE (spawned by `netmesh`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The queue number.
    #[arg(long, default_value_t = 0)]
    pub queue: u16,
    /// Delay of every packet let go, in microseconds.
    #[arg(long)]
    pub delay_us: u64,
    /// Probability of dropping a packet, from 0 to 1.
    #[arg(long)]
    pub loss: f64,
    /// Seed of the drops.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.loss) {
        bail!("--loss must be between 0 and 1");
    }
    let mut q = Queue::bind(args.queue).context("binding to the NFQUEUE")?;
    println!("ready");
    let _ = io::stdout().flush();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // Never joined: it waits in a read of stdin, and its end is this loop's end.
        crate::threads::start("link-queue-stdin", move || {
            for line in io::stdin().lock().lines() {
                if line.is_err() {
                    break;
                }
            }
            stop.store(true, Relaxed);
        });
    }
    let delay = Duration::from_micros(args.delay_us);
    // The drop threshold out of 2^32.
    let threshold = (args.loss * f64::from(u32::MAX)) as u64;
    let mut rng = Rng::new(args.seed);
    let mut held: VecDeque<(Instant, u32)> = VecDeque::new();
    let (mut passed, mut dropped) = (0u64, 0u64);
    let mut buf = vec![0u8; 1 << 16];
    let mut ids = Vec::new();
    // Readiness through epoll (mio), not a socket timeout: the kernel counts socket
    // timeouts in scheduler ticks (4 ms at HZ=250), far coarser than the delay.
    q.sock.set_nonblocking(true)?;
    let mut poll = Poll::new().context("mio::Poll")?;
    let fd = q.sock.as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&fd), READY, Interest::READABLE)
        .context("registering the netlink socket")?;
    let mut events = Events::with_capacity(4);
    while !stop.load(Relaxed) {
        // Take every packet there is (the poll is edge-triggered).
        loop {
            let n = match (&q.sock).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The kernel had to drop messages for us (ENOBUFS): its queue keeps
                // the packets, and a later batch verdict lets them go.
                Err(e) if e.raw_os_error() == Some(105) => continue,
                Err(e) => return Err(e).context("reading the NFQUEUE"),
            };
            ids.clear();
            packet_ids(&buf[..n], &mut ids)?;
            let arrived = Instant::now();
            for &id in &ids {
                if (rng.next_u64() >> 32) < threshold {
                    q.verdict(NFQNL_MSG_VERDICT, NF_DROP, id)?;
                    dropped += 1;
                } else {
                    held.push_back((arrived + delay, id));
                }
            }
        }
        // Let go every packet whose time has come, with one verdict.
        let now = Instant::now();
        let mut last = None;
        while held.front().is_some_and(|&(due, _)| due <= now) {
            last = held.pop_front().map(|(_, id)| id);
            passed += 1;
        }
        if let Some(id) = last {
            q.verdict(NFQNL_MSG_VERDICT_BATCH, NF_ACCEPT, id)?;
        }
        match held.front() {
            // epoll counts whole milliseconds: the last one is slept precisely.
            Some(&(due, _)) if due.saturating_duration_since(now) <= FINE => {
                thread::sleep(due.saturating_duration_since(now));
            }
            next => {
                let wait = next.map_or(IDLE, |&(due, _)| due.saturating_duration_since(now) - FINE);
                if let Err(e) = poll.poll(&mut events, Some(wait)) {
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e).context("polling the netlink socket");
                    }
                }
            }
        }
    }
    // What is still held goes now, so that nothing waits on a queue no one serves.
    if let Some(&(_, id)) = held.back() {
        q.verdict(NFQNL_MSG_VERDICT_BATCH, NF_ACCEPT, id)?;
        passed += held.len() as u64;
    }
    println!("stats passed={passed} dropped={dropped}");
    let _ = io::stdout().flush();
    Ok(ExitCode::SUCCESS)
}

/// A netlink socket bound to one NFQUEUE.
struct Queue {
    sock: Socket,
    queue: u16,
    seq: u32,
}

impl Queue {
    fn bind(queue: u16) -> anyhow::Result<Queue> {
        let sock = Socket::new(
            Domain::from(AF_NETLINK),
            Type::from(SOCK_RAW),
            Some(Protocol::from(NETLINK_NETFILTER)),
        )
        .context("a netlink socket")?;
        // A large receive buffer, so that a burst of packets is not lost to ENOBUFS.
        let _ = sock.set_recv_buffer_size(8 << 20);
        let mut q = Queue {
            sock,
            queue,
            seq: 0,
        };
        let mut cmd = vec![NFQNL_CFG_CMD_BIND, 0];
        cmd.extend_from_slice(&0u16.to_be_bytes()); // any protocol family
        q.configure(NFQA_CFG_CMD, &cmd)?;
        let mut params = 0u32.to_be_bytes().to_vec(); // copy range: nothing
        params.push(NFQNL_COPY_META);
        q.configure(NFQA_CFG_PARAMS, &params)?;
        q.configure(NFQA_CFG_QUEUE_MAXLEN, &QUEUE_MAXLEN.to_be_bytes())?;
        Ok(q)
    }

    /// Sends one configuration attribute and waits for the kernel's answer.
    fn configure(&mut self, attr_type: u16, value: &[u8]) -> anyhow::Result<()> {
        let msg = self.message(NFQNL_MSG_CONFIG, NLM_F_ACK, &attribute(attr_type, value));
        self.sock.send(&msg).context("sending to netlink")?;
        self.sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 4096];
        let n = (&self.sock).read(&mut buf).context("netlink's answer")?;
        match acknowledgement(&buf[..n]) {
            Some(0) => Ok(()),
            Some(errno) => bail!(
                "the kernel refused NFQUEUE configuration {attr_type}: {}",
                io::Error::from_raw_os_error(-errno)
            ),
            None => bail!("no acknowledgement from netlink"),
        }
    }

    fn verdict(&mut self, kind: u16, verdict: u32, id: u32) -> anyhow::Result<()> {
        let mut hdr = verdict.to_be_bytes().to_vec();
        hdr.extend_from_slice(&id.to_be_bytes());
        let msg = self.message(kind, 0, &attribute(NFQA_VERDICT_HDR, &hdr));
        self.sock.send(&msg).context("sending a verdict")?;
        Ok(())
    }

    /// A netlink message of the queue subsystem: `nlmsghdr`, `nfgenmsg`, `attrs`.
    fn message(&mut self, kind: u16, flags: u16, attrs: &[u8]) -> Vec<u8> {
        self.seq = self.seq.wrapping_add(1);
        let len = 16 + 4 + attrs.len();
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
        m.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        m.extend_from_slice(&self.seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family AF_UNSPEC, version 0, the queue number (big-endian).
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&self.queue.to_be_bytes());
        m.extend_from_slice(attrs);
        m
    }
}

/// A netlink attribute, padded to four bytes.
fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut a = Vec::with_capacity(len.next_multiple_of(4));
    a.extend_from_slice(&(len as u16).to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(value);
    a.resize(len.next_multiple_of(4), 0);
    a
}

/// The netlink messages in `buf`: (type, payload after the 16-byte header).
fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = buf.get(at..at + 16)?;
        let len = u32::from_ne_bytes(header[0..4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(header[4..6].try_into().ok()?);
        let body = buf.get(at + 16..at + len.max(16))?;
        at += len.max(16).next_multiple_of(4);
        Some((kind, body))
    })
}

/// The error code of the first acknowledgement (`NLMSG_ERROR`) in `buf`: 0 for
/// success, a negative errno otherwise.
fn acknowledgement(buf: &[u8]) -> Option<i32> {
    messages(buf)
        .find(|(kind, _)| *kind == NLMSG_ERROR)
        .and_then(|(_, body)| Some(i32::from_ne_bytes(body.get(0..4)?.try_into().ok()?)))
}

/// Appends the id of every queued packet in `buf`.
fn packet_ids(buf: &[u8], ids: &mut Vec<u32>) -> anyhow::Result<()> {
    for (kind, body) in messages(buf) {
        if kind == NLMSG_ERROR {
            let errno = body
                .get(0..4)
                .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            if errno != 0 {
                bail!("netlink: {}", io::Error::from_raw_os_error(-errno));
            }
            continue;
        }
        if kind != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
            continue;
        }
        // After the 4-byte nfgenmsg, attributes; the packet header's first four
        // bytes are the id, big-endian.
        let mut at = 4;
        while let Some(head) = body.get(at..at + 4) {
            let len = u16::from_ne_bytes([head[0], head[1]]) as usize;
            let kind = u16::from_ne_bytes([head[2], head[3]]) & 0x7fff;
            if len < 4 {
                break;
            }
            if kind == NFQA_PACKET_HDR {
                if let Some(id) = body.get(at + 4..at + 8) {
                    ids.push(u32::from_be_bytes([id[0], id[1], id[2], id[3]]));
                }
            }
            at += len.next_multiple_of(4);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_are_read_from_queue_messages() {
        // Two packet messages in one buffer, each with a packet header attribute
        // after another attribute.
        let mut buf = Vec::new();
        for id in [7u32, 0x0102_0304] {
            let mut attrs = attribute(9, &[1, 2, 3]);
            let mut hdr = id.to_be_bytes().to_vec();
            hdr.extend_from_slice(&[8, 0, 1]);
            attrs.extend(attribute(NFQA_PACKET_HDR | 0x8000, &hdr));
            let len = 16 + 4 + attrs.len();
            buf.extend_from_slice(&(len as u32).to_ne_bytes());
            buf.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET).to_ne_bytes());
            buf.extend_from_slice(&[0; 10]); // flags, sequence, port
            buf.extend_from_slice(&[0, 0, 0, 0]); // nfgenmsg
            buf.extend_from_slice(&attrs);
        }
        let mut ids = Vec::new();
        packet_ids(&buf, &mut ids).unwrap();
        assert_eq!(ids, vec![7, 0x0102_0304]);
        // Truncated input is not a panic.
        packet_ids(&buf[..30], &mut Vec::new()).unwrap();
    }

    #[test]
    fn an_acknowledgement_carries_the_error() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&36u32.to_ne_bytes());
        buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        buf.extend_from_slice(&[0; 10]);
        buf.extend_from_slice(&(-16i32).to_ne_bytes());
        buf.extend_from_slice(&[0; 16]);
        assert_eq!(acknowledgement(&buf), Some(-16));
        assert_eq!(acknowledgement(&[]), None);
    }
}
