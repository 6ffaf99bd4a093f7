//! A TCP relay in front of a node that a test can cut or make refuse, to lose a
//! connection without touching either node; and that can record what it relays, or
//! flip a byte of it, as someone on the path would.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

#[derive(Default)]
struct State {
    /// Close every new connection at once.
    refuse: bool,
    /// Both ends of every relayed connection, to cut them.
    open: Vec<TcpStream>,
    threads: Vec<JoinHandle<()>>,
    /// Whether to keep what is relayed.
    record: bool,
    /// Every byte relayed in each direction, in order (all connections), when
    /// recording.
    recorded: [Vec<u8>; 2],
    flip: Option<Flip>,
}

/// Which way bytes go through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the dialler to the relay's target.
    ToTarget = 0,
    /// From the target back to the dialler.
    FromTarget = 1,
}

/// A byte to flip: the one `at` bytes into what is relayed `direction` after the
/// flip was armed.
struct Flip {
    direction: Direction,
    at: u64,
    seen: u64,
    done: bool,
}

/// Relays every connection made to [`Relay::addr`] to the target.
pub struct Relay {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Relay {
    pub fn start(target: SocketAddr) -> Relay {
        Relay::start_with(target, false)
    }

    /// A relay that keeps every byte it relays, for [`Relay::recorded`].
    pub fn recording(target: SocketAddr) -> Relay {
        Relay::start_with(target, true)
    }

    fn start_with(target: SocketAddr, record: bool) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            record,
            ..State::default()
        }));
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (state, accepted, stop) = (state.clone(), accepted.clone(), stop.clone());
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    if state.lock().unwrap().refuse {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(target) else {
                        continue;
                    };
                    let pumps = [
                        (&client, &server, Direction::ToTarget),
                        (&server, &client, Direction::FromTarget),
                    ]
                    .map(|(from, to, direction)| {
                        let (from, to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                        let state = state.clone();
                        thread::spawn(move || pump(from, to, direction, &state))
                    });
                    let mut state = state.lock().unwrap();
                    state.threads.extend(pumps);
                    state.open.push(client);
                    state.open.push(server);
                }
            })
        };
        Relay {
            addr,
            state,
            accepted,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// Cuts every relayed connection: both nodes see their socket end, with no
    /// close frame.
    pub fn cut(&self) {
        for stream in self.state.lock().unwrap().open.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// From now on, closes new connections at once (or relays them again).
    pub fn refuse(&self, refuse: bool) {
        self.state.lock().unwrap().refuse = refuse;
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Everything relayed `direction` so far, on every connection, in order (a
    /// [`Relay::recording`] relay; nothing otherwise).
    pub fn recorded(&self, direction: Direction) -> Vec<u8> {
        self.state.lock().unwrap().recorded[direction as usize].clone()
    }

    /// Arms a flip: the byte `at` bytes into what is relayed `direction` from now
    /// on (0: the next byte) is inverted.
    pub fn flip(&self, direction: Direction, at: u64) {
        self.state.lock().unwrap().flip = Some(Flip {
            direction,
            at,
            seen: 0,
            done: false,
        });
    }

    /// Whether the armed flip has happened.
    pub fn flipped(&self) -> bool {
        self.state
            .lock()
            .unwrap()
            .flip
            .as_ref()
            .is_some_and(|f| f.done)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.cut();
        let threads = std::mem::take(&mut self.state.lock().unwrap().threads);
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// Copies one direction until either side ends, recording it, and flipping the
/// armed byte when it comes by.
fn pump(mut from: TcpStream, mut to: TcpStream, direction: Direction, state: &Mutex<State>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                {
                    let mut state = state.lock().unwrap();
                    let chunk = &mut buf[..n];
                    if let Some(flip) = state
                        .flip
                        .as_mut()
                        .filter(|f| f.direction == direction && !f.done)
                    {
                        if let Some(i) = flip.at.checked_sub(flip.seen) {
                            if let Some(byte) = chunk.get_mut(i as usize) {
                                *byte = !*byte;
                                flip.done = true;
                            }
                        }
                        flip.seen += n as u64;
                    }
                    if state.record {
                        state.recorded[direction as usize].extend_from_slice(chunk);
                    }
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
