//! `idle-peers` (hidden): the idle connections of `scale`, opened from a process of
//! their own, so that the node's process holds only its own end of each and the
//! figures `scale` reads from it (memory, threads, CPU) are the node's alone.
//!
//! Each idle peer is a raw socket that completes wirelane's handshake by hand (with
//! the library's frames, `wirelane::__bench`) and then sends nothing but a `Pong`
//! for every `Ping`: a real client node would add two threads per connection to a
//! 2-core machine, drowning the figure. One thread answers the pings of all of them
//! through one `mio::Poll`, so that the node can keep its default ping interval and
//! silence timeout without declaring them dead. Their ids are above the node's, so
//! the node arbitrates every handshake.
//!
//! The parent talks to it through stdin and stdout, one line each:
//!
//! - out: `waiting` until told to start; `progress N` as connections open; `ready N MS` once all N are open (MS:
//!   from the first dial to the last handshake); `stats pongs=P closed=C` in answer
//!   to `stats`; on a failure, the reason on stderr and exit status 1;
//! - in: `go` to start; then `stats`; end of input closes every connection and
//!   exits.

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token, Waker};
use wirelane::__bench::{decode_header, encode, encode_header, hello_frame, FrameKind, HEADER_LEN};
use wirelane::PeerId;

use crate::procfs;
use crate::threads::{join_all, start};

/// Time allowed to dial the node, and for each step of a handshake.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest payload announced to the node, and accepted from it: an idle peer
/// only ever gets control frames.
const MAX_FRAME: u32 = 1024;
/// Longest the whole opening may take before the child gives up.
const OPEN_DEADLINE: Duration = Duration::from_secs(300);
/// `progress` lines come at most this often (in connections).
const PROGRESS_EVERY: usize = 250;
/// How often the opening's progress is looked at; no outcome depends on it.
const PROGRESS_POLL: Duration = Duration::from_millis(50);
/// The waker's token; connections are numbered from 0.
const WAKE: Token = Token(usize::MAX);

/// Opens idle connections into a node and answers its pings (spawned by `scale`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node's address.
    #[arg(long)]
    pub node: SocketAddr,
    /// Connections to open.
    #[arg(long)]
    pub conns: usize,
    /// The first peer id; the others follow.
    #[arg(long)]
    pub first_id: u64,
    /// Handshakes in progress at once (below the node's `max_handshakes`, which
    /// drops the oldest handshake to make room for a new one).
    #[arg(long)]
    pub dialers: usize,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    // The parent measures the node before the first dial, so it says when to start.
    println!("waiting");
    flush();
    let mut commands = io::stdin().lock().lines();
    match commands.next() {
        Some(Ok(line)) if line.trim() == "go" => {}
        _ => bail!("expected `go` on stdin"),
    }
    // The pong loop runs before the first dial and takes each connection as soon as
    // its handshake is done: a connection whose pings went unanswered until the
    // whole storm was over would be declared dead by a node whose storm outlasts its
    // silence timeout.
    let poll = Poll::new().context("mio::Poll")?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE).context("mio::Waker")?);
    let (opened_tx, opened_rx) = mpsc::channel::<(usize, TcpStream)>();
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let answering = {
        let (counts, stop, conns) = (counts.clone(), stop.clone(), args.conns);
        start("idle-pong", move || {
            answer(poll, conns, &opened_rx, &counts, &stop)
        })
    };
    let began = Instant::now();
    let opened = open_all(args, opened_tx, &waker, &counts);
    if let Ok(n) = opened {
        println!("ready {n} {}", began.elapsed().as_millis());
        flush();
        for line in commands {
            let Ok(line) = line else { break };
            if line.trim() == "stats" {
                println!(
                    "stats pongs={} closed={}",
                    counts.pongs.load(Relaxed),
                    counts.closed.load(Relaxed)
                );
                flush();
            }
        }
    }
    // Stdin closed (the parent is done, or gone), or the opening failed: the sockets
    // close with the loop.
    stop.store(true, Relaxed);
    waker.wake().context("waking the pong loop")?;
    let answered = join_all(vec![answering], Instant::now() + STEP_TIMEOUT);
    answered.into_iter().next().unwrap_or(Ok(()))?;
    opened?;
    Ok(ExitCode::SUCCESS)
}

fn flush() {
    let _ = io::stdout().flush();
}

/// Opens `args.conns` connections from `args.dialers` threads at once, handing each
/// to the pong loop as soon as it is open; returns how many were opened.
fn open_all(
    args: &Args,
    opened: mpsc::Sender<(usize, TcpStream)>,
    waker: &Arc<Waker>,
    counts: &Arc<Counts>,
) -> anyhow::Result<usize> {
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + OPEN_DEADLINE;
    let dialers: Vec<_> = (0..args.dialers.clamp(1, args.conns.max(1)))
        .map(|d| {
            let (next, failed, tx) = (next.clone(), failed.clone(), opened.clone());
            let (waker, counts) = (waker.clone(), counts.clone());
            let (node, conns, first) = (args.node, args.conns, args.first_id);
            start(format!("idle-dial-{d}"), move || -> anyhow::Result<()> {
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= conns || failed.load(Relaxed) {
                        return Ok(());
                    }
                    if Instant::now() >= deadline {
                        failed.store(true, Relaxed);
                        bail!("{conns} connections were not open within {OPEN_DEADLINE:?}");
                    }
                    let id = PeerId(first + i as u64);
                    match handshake(node, id) {
                        Ok(stream) => {
                            if tx.send((i, stream)).is_err() {
                                bail!("the pong loop ended");
                            }
                            waker.wake().context("waking the pong loop")?;
                            counts.opened.fetch_add(1, Relaxed);
                        }
                        Err(e) => {
                            failed.store(true, Relaxed);
                            return Err(explain(i, conns, &e));
                        }
                    }
                }
            })
        })
        .collect();
    drop(opened);
    // Progress while the dialers work; they return once every number is taken.
    let mut reported = 0;
    while !dialers.iter().all(|d| d.is_finished()) {
        let now = counts.opened.load(Relaxed) as usize;
        if now / PROGRESS_EVERY > reported / PROGRESS_EVERY {
            println!("progress {now}");
            flush();
            reported = now;
        }
        thread::sleep(PROGRESS_POLL);
    }
    for result in join_all(dialers, Instant::now() + STEP_TIMEOUT) {
        result?;
    }
    let n = counts.opened.load(Relaxed) as usize;
    if n != args.conns {
        bail!("opened {n} of {} connections", args.conns);
    }
    Ok(n)
}

/// Says why opening connection `i` failed, naming file descriptors when they ran
/// out (`connect` fails with "too many open files").
fn explain(i: usize, conns: usize, e: &io::Error) -> anyhow::Error {
    let what = format!("idle connection {} of {conns}: {e}", i + 1);
    if !procfs::is_out_of_fds(e) {
        return anyhow::anyhow!(what);
    }
    let limit = procfs::open_files_limit().map_or("unlimited".to_owned(), |l| l.to_string());
    anyhow::anyhow!(
        "{what}: this process may open {limit} files and needs one per connection; \
         raise the limit with `ulimit -n` or use fewer --conns"
    )
}

/// Connects to the node as peer `id` and completes wirelane's handshake by hand:
/// Hello out, the node's Hello in, Holds out, the node's Verdict in, Accept out,
/// the node's last Accept in. Each step may take [`STEP_TIMEOUT`].
fn handshake(node: SocketAddr, id: PeerId) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&node, STEP_TIMEOUT)?;
    stream.set_write_timeout(Some(STEP_TIMEOUT))?;
    stream.set_read_timeout(Some(STEP_TIMEOUT))?;
    // Any incarnation will do: each idle peer is a distinct peer and never returns.
    stream.write_all(&hello_frame(id, id.0 ^ 0x5CA1_E000, MAX_FRAME))?;
    let (kind, theirs) = read_frame(&mut stream)?;
    if kind != FrameKind::Hello || !wirelane::__fuzz::hello(&theirs) {
        return Err(io::Error::other(format!(
            "unexpected {kind:?} from the node: {theirs:02x?}"
        )));
    }
    let expect = |stream: &mut TcpStream, want: FrameKind| match read_frame(stream)? {
        (kind, _) if kind == want => Ok(()),
        (kind, payload) => Err(io::Error::other(format!(
            "the node refused the handshake: {kind:?} {payload:02x?}"
        ))),
    };
    let mut holds = Vec::with_capacity(HEADER_LEN + 16);
    encode(&mut holds, FrameKind::Holds, &[0; 16]); // no other connection to the node
    stream.write_all(&holds)?;
    expect(&mut stream, FrameKind::Verdict)?;
    let mut accept = Vec::with_capacity(HEADER_LEN);
    encode_header(&mut accept, FrameKind::Accept, 0);
    stream.write_all(&accept)?;
    expect(&mut stream, FrameKind::Accept)?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// Reads one frame of the handshake, naming a read that ran into the timeout as
/// such (the socket reports it as "would block").
fn read_frame(stream: &mut TcpStream) -> io::Result<(FrameKind, Vec<u8>)> {
    let timed_out = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            "the node did not answer the handshake in time",
        ),
        _ => e,
    };
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).map_err(timed_out)?;
    let header = decode_header(&header, MAX_FRAME)
        .map_err(|e| io::Error::other(format!("a bad frame header from the node: {e}")))?
        .ok_or_else(|| io::Error::other("a short frame header"))?;
    let mut payload = vec![0u8; header.len as usize];
    stream.read_exact(&mut payload).map_err(timed_out)?;
    Ok((header.kind, payload))
}

#[derive(Debug, Default)]
struct Counts {
    /// Connections open, handed to the pong loop.
    opened: AtomicU64,
    pongs: AtomicU64,
    /// Connections the node closed (or that failed).
    closed: AtomicU64,
}

/// One idle peer: its socket, the start of a frame not yet whole, and pongs not yet
/// written (a full send buffer is not expected, but is handled).
struct Idle {
    stream: MioStream,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// Whether the poll is also asked for writability (only while pongs are owed).
    writable: bool,
}

/// What reading an idle peer's socket asked for.
enum Next {
    Wait,
    /// The node closed the connection, or broke the protocol.
    Gone,
}

/// The pong loop: takes each connection the dialers open, reads whatever the node
/// sends each one, answers every `Ping`, ignores other control frames, and drops a
/// connection the node closes. Returns when `stop` is set and the waker fires; the
/// connections close with it.
fn answer(
    mut poll: Poll,
    conns: usize,
    opened: &mpsc::Receiver<(usize, TcpStream)>,
    counts: &Counts,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut peers: Vec<Option<Idle>> = (0..conns).map(|_| None).collect();
    let mut events = Events::with_capacity(1024);
    let mut scratch = [0u8; 4096];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("mio poll");
        }
        for event in &events {
            if event.token() == WAKE {
                // New connections: registered now, read at once if the node has
                // already written (a registration reports data that is waiting).
                for (i, stream) in opened.try_iter() {
                    let mut stream = MioStream::from_std(stream);
                    poll.registry()
                        .register(&mut stream, Token(i), Interest::READABLE)
                        .context("registering a connection with mio")?;
                    if let Some(slot) = peers.get_mut(i) {
                        *slot = Some(Idle {
                            stream,
                            buf: Vec::new(),
                            out: Vec::new(),
                            writable: false,
                        });
                    }
                }
                continue;
            }
            let Some(slot) = peers.get_mut(event.token().0) else {
                continue;
            };
            let Some(peer) = slot.as_mut() else { continue };
            let next = peer.serve(&mut scratch, counts);
            if let Next::Gone = next {
                if let Some(mut gone) = slot.take() {
                    let _ = poll.registry().deregister(&mut gone.stream);
                }
                counts.closed.fetch_add(1, Relaxed);
            } else if let Err(e) = peer.reregister(&poll, event.token()) {
                return Err(e).context("mio reregister");
            }
        }
        if stop.load(Relaxed) {
            return Ok(());
        }
    }
}

impl Idle {
    /// Reads until the socket is drained, answering pings; then writes what is owed.
    fn serve(&mut self, scratch: &mut [u8], counts: &Counts) -> Next {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return Next::Gone,
                Ok(n) => self.buf.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Next::Gone,
            }
            // Whole frames out of the buffer.
            let mut at = 0;
            loop {
                match decode_header(&self.buf[at..], MAX_FRAME) {
                    Ok(Some(h)) if self.buf.len() - at >= HEADER_LEN + h.len as usize => {
                        match h.kind {
                            FrameKind::Ping => {
                                encode_header(&mut self.out, FrameKind::Pong, 0);
                                counts.pongs.fetch_add(1, Relaxed);
                            }
                            FrameKind::Close => return Next::Gone,
                            _ => {}
                        }
                        at += HEADER_LEN + h.len as usize;
                    }
                    Ok(_) => break,
                    Err(_) => return Next::Gone,
                }
            }
            self.buf.drain(..at);
        }
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Next::Gone,
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Next::Gone,
            }
        }
        Next::Wait
    }

    /// Asks to hear when the socket can take the rest of what is owed, if anything
    /// is, and stops asking once nothing is (the poll is edge-triggered: a socket
    /// stays registered for reading).
    fn reregister(&mut self, poll: &Poll, token: Token) -> io::Result<()> {
        let writable = !self.out.is_empty();
        if writable == self.writable {
            return Ok(());
        }
        self.writable = writable;
        let interest = if writable {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        poll.registry()
            .reregister(&mut self.stream, token, interest)
    }
}
