//! The reference implementation for `deadlock`: two connected peers built the way
//! Hyperledger Fabric's gossip layer built a connection before FAB-10469, bug included.
//!
//! Each end has a reader and a writer thread moving length-prefixed frames over a
//! loopback socket, a bounded output buffer that senders fill and the writer
//! empties, and a bounded inbound queue. One mutex, the *connection lock*, guards
//! the stream, and three parties take it: the reader and the writer once per frame
//! (Fabric's `readFromStream` and `writeToStream` began each iteration with
//! `getStream()`), and the pair's `send`, which in Fabric was `conn.Lock(); defer
//! conn.Unlock(); … conn.outBuff <- m` — it **keeps the lock while it waits for
//! room** in a full output buffer. That is the bug: the writer needs the lock before
//! it can make room, and the reader needs it too, so the connection stops reading,
//! the other peer's writer blocks in turn, and both peers freeze for good.
//!
//! The buffer is a channel, not a `Condvar`: waiting on a condvar releases its
//! mutex, which is precisely the fix, while a crossbeam send under a held
//! `parking_lot::Mutex` keeps the lock as Go's channel send under `sync.Mutex` did.
//!
//! Fabric's connection had no way out of that wait; this one must, or the bench
//! could not end: an abort that every wait selects on, and that shuts the sockets
//! down. It never takes the connection lock, which a stuck sender may hold forever.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wirelane::crossbeam_channel::{bounded, select, Receiver, Sender, TryRecvError};
use wirelane::Bytes;

use crate::deadlock::{Got, Peers};
use crate::threads::{self, JoinError, Named};

/// The largest payload a reader accepts, checked before it allocates.
const MAX_FRAME: usize = 1 << 20;
/// How long setting up the loopback connection may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// A type with no values: a channel of `Never` is used only for its disconnection.
enum Never {}

/// What every wait that the abort path ended returns.
const ABORTED: &str = "the connection was aborted";

/// The way out that Fabric's pre-fix connection lacked; shared by both ends.
struct Abort {
    /// Dropped to abort: every `select!` on `wake` then returns.
    wake_tx: Mutex<Option<Sender<Never>>>,
    wake: Receiver<Never>,
    /// Shut down to abort, so that blocked reads and writes return.
    sockets: Mutex<Vec<Arc<TcpStream>>>,
}

impl Abort {
    fn is_set(&self) -> bool {
        matches!(self.wake.try_recv(), Err(TryRecvError::Disconnected))
    }
}

/// One end of the connection, as its senders see it.
struct Conn {
    /// The connection lock, guarding the stream as Fabric's did.
    stream: Mutex<Arc<TcpStream>>,
    /// Fabric's `outBuff`: the bounded output buffer the writer empties.
    out: Sender<Vec<u8>>,
    abort: Arc<Abort>,
}

impl Conn {
    /// Fabric's `getStream()`: the stream, fetched under the connection lock. The
    /// reader and the writer call it once per frame, so a sender parked with the lock
    /// held stops both of them here. `None` once aborted.
    fn get_stream(&self) -> Option<Arc<TcpStream>> {
        let stream = self.stream.lock();
        (!self.abort.is_set()).then(|| stream.clone())
    }
}

/// Two connected peers over loopback, indexed 0 and 1, with their four threads.
pub struct Pair {
    conns: Vec<Arc<Conn>>,
    inbound: Vec<Receiver<Vec<u8>>>,
    abort: Arc<Abort>,
    threads: Mutex<Vec<Named<()>>>,
}

impl Pair {
    /// Connects two ends over a fresh loopback socket and starts each end's reader
    /// and writer. `capacity` bounds every output buffer and inbound queue.
    ///
    /// # Errors
    ///
    /// Fails if the socket cannot be set up.
    pub fn start(capacity: usize) -> io::Result<Pair> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let dialled = TcpStream::connect_timeout(&listener.local_addr()?, DIAL_TIMEOUT)?;
        // The dial has completed, so `accept` returns at once.
        let (accepted, _) = listener.accept()?;
        let (wake_tx, wake) = bounded(0);
        let abort = Abort {
            wake_tx: Mutex::new(Some(wake_tx)),
            wake,
            sockets: Mutex::new(Vec::new()),
        };
        let mut pair = Pair {
            conns: Vec::new(),
            inbound: Vec::new(),
            abort: Arc::new(abort),
            threads: Mutex::new(Vec::new()),
        };
        for stream in [&dialled, &accepted] {
            stream.set_nodelay(true)?;
        }
        pair.add_end("p", dialled, capacity);
        pair.add_end("q", accepted, capacity);
        Ok(pair)
    }

    /// Sets up one end and starts its reader and writer.
    fn add_end(&mut self, name: &str, stream: TcpStream, capacity: usize) {
        let stream = Arc::new(stream);
        self.abort.sockets.lock().push(stream.clone());
        let (out, out_rx) = bounded(capacity);
        let (in_tx, inbound) = bounded(capacity);
        let abort = self.abort.clone();
        let conn = Arc::new(Conn {
            stream: Mutex::new(stream),
            out,
            abort,
        });
        self.conns.push(conn.clone());
        self.inbound.push(inbound);
        let c = conn.clone();
        let reader = threads::start(format!("locked-{name}-reader"), move || {
            read_loop(&c, &in_tx);
        });
        let writer = threads::start(format!("locked-{name}-writer"), move || {
            write_loop(&conn, &out_rx);
        });
        self.threads.lock().extend([reader, writer]);
    }
}

impl Peers for Pair {
    /// Waits for room in the output buffer — while holding the connection lock, as
    /// Fabric did.
    fn send(&self, from: usize, payload: Bytes) -> Result<(), String> {
        let conn = &self.conns[from];
        let len = u32::try_from(payload.len()).expect("bench payloads are far below 4 GiB");
        let frame = [&len.to_be_bytes()[..], &payload].concat();
        // Fabric: `conn.Lock(); defer conn.Unlock()`.
        let _held = conn.stream.lock();
        if conn.abort.is_set() {
            return Err(ABORTED.to_owned());
        }
        // THE BUG (FAB-10469): when the buffer is full this waits for the writer to
        // make room, still holding the lock the writer must take before it can.
        select! {
            send(conn.out, frame) -> sent => sent.map_err(|_| ABORTED.to_owned()),
            recv(conn.abort.wake) -> _ => Err(ABORTED.to_owned()),
        }
    }

    fn recv(&self, at: usize) -> Got {
        select! {
            recv(self.inbound[at]) -> got => got.map_or(Got::Closed, |p| Got::Message(p.into())),
            recv(self.abort.wake) -> _ => Got::Closed,
        }
    }

    fn stopped(&self) -> bool {
        self.abort.is_set()
    }

    /// Wakes every waiting sender, reader, writer and receiver of both ends and shuts
    /// the socket down. Idempotent; takes no connection lock.
    fn teardown(&self) {
        drop(self.abort.wake_tx.lock().take());
        for socket in self.abort.sockets.lock().iter() {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// Joins the readers and writers, which end once the pair is aborted: the first
    /// that did not finish by `deadline` or panicked is the error, and the others
    /// are still joined.
    fn join_by(&self, deadline: Instant) -> Result<(), JoinError> {
        let threads = std::mem::take(&mut *self.threads.lock());
        let joined: Vec<_> = threads.into_iter().map(|t| t.join_by(deadline)).collect();
        joined.into_iter().collect()
    }
}

impl Drop for Pair {
    /// Aborts, so that no thread is left waiting on a pair nobody can reach.
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The reader: one frame at a time from the socket into the inbound queue, until
/// the socket or the queue closes or the pair is aborted.
fn read_loop(conn: &Conn, inbound: &Sender<Vec<u8>>) -> Option<()> {
    loop {
        // Once per frame, under the connection lock; this is where a sender parked
        // with the lock held stops the reader.
        let stream = conn.get_stream()?;
        let payload = read_frame(&mut &*stream).ok()?;
        select! {
            send(inbound, payload) -> sent => sent.ok()?,
            recv(conn.abort.wake) -> _ => return None,
        }
    }
}

/// The writer: one frame at a time from the output buffer onto the socket.
fn write_loop(conn: &Conn, out: &Receiver<Vec<u8>>) -> Option<()> {
    loop {
        // Once per frame, under the connection lock; this is where a sender parked
        // with the lock held stops the writer, and with it the only way the buffer
        // that sender waits on could get room.
        let stream = conn.get_stream()?;
        let frame = select! {
            recv(out) -> frame => frame.ok()?,
            recv(conn.abort.wake) -> _ => return None,
        };
        (&*stream).write_all(&frame).ok()?;
    }
}

/// Reads one frame: a 4-byte big-endian length, then that many bytes.
fn read_frame(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header)?;
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a {len}-byte frame is over the {MAX_FRAME}-byte limit"),
        ));
    }
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload)?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_frees_a_sender_that_cannot_get_through() {
        let pair = Arc::new(Pair::start(1).expect("a loopback pair"));
        let sender = {
            let pair = pair.clone();
            threads::start("test-locked-sender", move || loop {
                // Nothing drains q, so this ends stuck: on the lock it holds itself,
                // or at the latest once the socket is full.
                pair.send(0, Bytes::from_static(b"flood"))?;
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        pair.teardown();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            sender.join_by(deadline),
            Ok(Err::<(), _>(ABORTED.to_owned()))
        );
        assert_eq!(pair.join_by(deadline), Ok(()));
        assert_eq!(pair.send(1, Bytes::new()), Err(ABORTED.to_owned()));
    }

    #[test]
    fn frames_read_back_and_oversized_ones_are_refused() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&3u32.to_be_bytes());
        wire.extend_from_slice(b"abc");
        wire.extend_from_slice(&(MAX_FRAME as u32 + 1).to_be_bytes());
        let mut wire = &wire[..];
        assert_eq!(read_frame(&mut wire).expect("a whole frame"), b"abc");
        let refused = read_frame(&mut wire).expect_err("over the limit");
        assert_eq!(refused.kind(), io::ErrorKind::InvalidData);
    }
}
