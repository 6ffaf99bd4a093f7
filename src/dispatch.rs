//! Spreading [`Node::incoming`] over a pool of worker threads, one peer's messages
//! always on the same worker, so each peer's order holds.
//!
//! A feeder thread takes each message from the node's inbound queue and hands it to
//! the worker its sender's [`PeerId`] maps to, through a bounded queue of that
//! worker's own; the worker runs the handler on it. The feeder waits when that
//! queue is full (holding no lock), which stops the feeding of every worker for as
//! long — a slow handler slows the pool, it never makes it drop or reorder — and
//! the node's flow control then holds the senders back: nothing is lost.
//!
//! A handler that panics is logged and counted, and its worker goes on with the next
//! message. The pool ends when the node shuts down (its inbound queue drained) or
//! when the dispatcher is stopped or dropped; either way every thread is joined.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::Hasher;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{bounded, select, Receiver, Sender};

use crate::event::Message;
use crate::id::PeerId;
use crate::node::Node;

/// A pool of named worker threads running a handler on every message the node
/// receives, each peer's messages in order on one worker.
///
/// A handler may answer requests with [`Node::respond`], which never waits; it
/// should not block on a [`Node::send`] to the peer it is handling, for the reason
/// the receive loop should not (`docs/guarantees.md`, the cycle through the
/// application).
///
/// ```
/// use std::sync::Arc;
/// use wirelane::{Config, Dispatcher, Lane, Node, PeerId};
///
/// let server = Arc::new(Node::bind(PeerId(1), "127.0.0.1:0", Config::default())?);
/// let client = Node::bind(PeerId(2), "127.0.0.1:0", Config::default())?;
/// let pool = Dispatcher::builder().workers(4).spawn(&server, {
///     let server = server.clone();
///     move |m| {
///         if m.lane == Lane::Request {
///             let _ = server.respond(&m, m.payload.clone());
///         }
///     }
/// })?;
/// let peer = client.connect(server.local_addr())?;
/// let reply = client.request(peer, b"ping".to_vec(), std::time::Duration::from_secs(5))?;
/// assert_eq!(&reply[..], b"ping");
/// pool.stop();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Dispatcher {
    stop: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    counts: Arc<Counts>,
}

/// How to build a [`Dispatcher`]: from [`Dispatcher::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct DispatcherBuilder {
    workers: usize,
    queue: usize,
    name: String,
}

/// What a [`Dispatcher`] has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DispatchStats {
    /// Messages the handler has run on, panics included.
    pub handled: u64,
    /// Handler runs that panicked.
    pub panics: u64,
}

#[derive(Default)]
struct Counts {
    handled: AtomicU64,
    panics: AtomicU64,
}

impl Dispatcher {
    /// A builder: as many workers as the machine has cores, 256 messages queued per
    /// worker, threads named `dispatch-N`.
    pub fn builder() -> DispatcherBuilder {
        DispatcherBuilder {
            workers: thread::available_parallelism().map_or(1, |n| n.get()),
            queue: 256,
            name: "dispatch".to_owned(),
        }
    }

    /// What the pool has done so far.
    pub fn stats(&self) -> DispatchStats {
        DispatchStats {
            handled: self.counts.handled.load(Relaxed),
            panics: self.counts.panics.load(Relaxed),
        }
    }

    /// Stops taking messages from the node and joins every thread, once each worker
    /// has finished the messages already handed to it. Messages still in the node's
    /// inbound queue stay there.
    pub fn stop(mut self) {
        self.shut();
    }

    /// Waits until the pool ends by itself: the node has shut down and every message
    /// it had received has been handled. Joins every thread.
    pub fn join(mut self) {
        // Keep the stop signal: the feeder ends when the inbound queue does.
        let stop = self.stop.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        drop(stop);
    }

    fn shut(&mut self) {
        drop(self.stop.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Dispatcher {
    /// As [`Dispatcher::stop`].
    fn drop(&mut self) {
        self.shut();
    }
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("threads", &self.threads.len())
            .field("stats", &self.stats())
            .finish()
    }
}

impl DispatcherBuilder {
    /// Worker threads (at least 1).
    pub fn workers(mut self, workers: usize) -> DispatcherBuilder {
        self.workers = workers.max(1);
        self
    }

    /// Messages queued for each worker before the feeder waits (at least 1).
    pub fn queue(mut self, queue: usize) -> DispatcherBuilder {
        self.queue = queue.max(1);
        self
    }

    /// The prefix of the threads' names: `NAME-feed`, `NAME-0`, `NAME-1`, …
    pub fn name(mut self, name: impl Into<String>) -> DispatcherBuilder {
        self.name = name.into();
        self
    }

    /// Starts the pool on `node`'s inbound queue, running `handler` on each message.
    ///
    /// # Errors
    ///
    /// The error of a thread that could not be started; the threads already started
    /// are stopped and joined first.
    pub fn spawn<H>(self, node: &Node, handler: H) -> io::Result<Dispatcher>
    where
        H: Fn(Message) + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
        let counts = Arc::new(Counts::default());
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let mut dispatcher = Dispatcher {
            stop: Some(stop_tx),
            threads: Vec::with_capacity(self.workers + 1),
            counts: counts.clone(),
        };
        let mut queues = Vec::with_capacity(self.workers);
        for i in 0..self.workers {
            let (tx, rx) = bounded::<Message>(self.queue);
            let (handler, counts) = (handler.clone(), counts.clone());
            let worker = thread::Builder::new()
                .name(format!("{}-{i}", self.name))
                .spawn(move || work(&rx, &*handler, &counts))?;
            dispatcher.threads.push(worker);
            queues.push(tx);
        }
        let incoming = node.incoming().clone();
        let feeder = thread::Builder::new()
            .name(format!("{}-feed", self.name))
            .spawn(move || feed(&incoming, &queues, &stop_rx))?;
        dispatcher.threads.push(feeder);
        Ok(dispatcher)
    }
}

/// Which of `workers` handles `peer`: the same one for as long as the pool runs.
fn shard(peer: PeerId, workers: usize) -> usize {
    // SipHash with fixed keys: ids that follow each other spread over the workers.
    let mut h = DefaultHasher::new();
    h.write_u64(peer.0);
    (h.finish() % workers as u64) as usize
}

/// The feeder: each message to its peer's worker, until the inbound queue ends or
/// the dispatcher is stopped. Dropping `queues` on the way out ends the workers
/// once they have emptied theirs.
fn feed(incoming: &Receiver<Message>, queues: &[Sender<Message>], stop: &Receiver<()>) {
    loop {
        let m = select! {
            recv(incoming) -> m => match m {
                Ok(m) => m,
                Err(_) => return,
            },
            recv(stop) -> _ => return,
        };
        let queue = &queues[shard(m.from, queues.len())];
        select! {
            send(queue, m) -> sent => if sent.is_err() { return },
            recv(stop) -> _ => return,
        }
    }
}

/// A worker: the handler on each message, a panic caught, logged and counted.
fn work(rx: &Receiver<Message>, handler: &(dyn Fn(Message) + Send + Sync), counts: &Counts) {
    for m in rx {
        let from = m.from;
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| handler(m)));
        counts.handled.fetch_add(1, Relaxed);
        if outcome.is_err() {
            counts.panics.fetch_add(1, Relaxed);
            log::error!(
                "{}: the handler panicked on a message from {from}; going on with the next",
                thread::current().name().unwrap_or("dispatch worker")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_always_maps_to_the_same_worker_and_peers_spread() {
        let used: std::collections::BTreeSet<usize> =
            (0..64).map(|p| shard(PeerId(p), 4)).collect();
        assert_eq!(used.len(), 4);
        assert_eq!(shard(PeerId(7), 4), shard(PeerId(7), 4));
    }

    #[test]
    fn the_dispatcher_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Dispatcher>();
    }
}
