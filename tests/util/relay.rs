//! A TCP relay in front of a node that a test can cut or make refuse, to lose a
//! connection without touching either node.

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
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
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
                    let pumps = [(&client, &server), (&server, &client)].map(|(from, to)| {
                        let (from, to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                        thread::spawn(move || pump(from, to))
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

/// Copies one direction until either side ends.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
