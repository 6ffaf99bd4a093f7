//! The accept loop: a mio poll over the listening socket and a waker.
//!
//! Shutdown wakes the loop through its `mio::Waker` — no self-connect, no polled
//! flag — and the loop returns. Each accepted socket gets its own connection thread,
//! which runs the handshake, so a slow or hostile client never holds up the next
//! accept.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;

use crate::error::Error;
use crate::node::session::Origin;
use crate::node::state::NodeShared;

const LISTENER: Token = Token(0);
const WAKE: Token = Token(1);

/// How long to wait before accepting again after an error such as running out of
/// file descriptors, which would otherwise repeat at once.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The running accept loop.
pub(crate) struct Acceptor {
    waker: Waker,
    handle: Mutex<Option<JoinHandle<()>>>,
}

/// Starts the accept loop on its own thread.
pub(crate) fn start(
    node: Arc<NodeShared>,
    listener: TcpListener,
    stack_size: usize,
) -> io::Result<Acceptor> {
    listener.set_nonblocking(true)?;
    let mut listener = mio::net::TcpListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Waker::new(poll.registry(), WAKE)?;
    let handle = thread::Builder::new()
        .name(format!("wl{}-accept", node.id.0))
        .stack_size(stack_size)
        .spawn(move || accept_loop(poll, listener, node))?;
    Ok(Acceptor {
        waker,
        handle: Mutex::new(Some(handle)),
    })
}

impl Acceptor {
    /// Stops the loop and joins its thread. Idempotent.
    pub(crate) fn stop(&self) {
        stop_poll_thread(&self.waker, &self.handle, "accept");
    }
}

/// Wakes a thread that runs a mio poll loop, and joins it once it has returned. The
/// handle is taken out of its lock before the join. Idempotent.
pub(crate) fn stop_poll_thread(waker: &Waker, handle: &Mutex<Option<JoinHandle<()>>>, what: &str) {
    if let Err(e) = waker.wake() {
        log::error!("cannot wake the {what} thread: {e}");
    }
    let handle = handle.lock().take();
    if let Some(handle) = handle {
        if handle.join().is_err() {
            log::error!("the {what} thread panicked");
        }
    }
}

fn accept_loop(mut poll: Poll, listener: mio::net::TcpListener, node: Arc<NodeShared>) {
    let mut events = Events::with_capacity(8);
    let mut retry_at: Option<Instant> = None;
    loop {
        let timeout = retry_at.map(|at| at.saturating_duration_since(Instant::now()));
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("{}: accept loop failed: {e}", node.id);
            return;
        }
        let mut ready = retry_at.is_some_and(|at| Instant::now() >= at);
        for event in events.iter() {
            match event.token() {
                WAKE => return,
                LISTENER => ready = true,
                _ => {}
            }
        }
        if !ready {
            continue;
        }
        retry_at = None;
        // Readiness is edge-triggered: accept until the backlog is empty.
        loop {
            match listener.accept() {
                Ok((stream, addr)) => match node.spawn_connection(stream.into(), Origin::Inbound) {
                    Ok(()) => {}
                    Err(Error::Shutdown) => return,
                    Err(e) => {
                        log::warn!("{}: cannot serve the connection from {addr}: {e}", node.id)
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("{}: accept failed: {e}; trying again shortly", node.id);
                    retry_at = Some(Instant::now() + ACCEPT_RETRY);
                    break;
                }
            }
        }
    }
}
