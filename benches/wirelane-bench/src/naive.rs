//! The naive baseline: what a legacy thread-per-connection server writes by hand. A
//! reader thread per connection delivers into an unbounded channel; a send locks
//! the connection's `Mutex<TcpStream>` and writes the frame in one `write_all` with
//! `TCP_NODELAY` set, as a careful hand-written server would. The lock is held
//! across the socket write, exactly what wirelane exists to avoid.

use std::io::{self, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use wirelane::crossbeam_channel::{unbounded, Receiver};

pub struct NaiveConn {
    writer: Mutex<TcpStream>,
    pub incoming: Receiver<Vec<u8>>,
    reader: Option<JoinHandle<()>>,
    shutdown: TcpStream,
}

impl NaiveConn {
    fn new(stream: TcpStream, name: &str) -> io::Result<NaiveConn> {
        stream.set_nodelay(true)?;
        let (tx, incoming) = unbounded();
        let read_half = stream.try_clone()?;
        let shutdown = stream.try_clone()?;
        let reader = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut r = BufReader::with_capacity(64 * 1024, read_half);
                let mut header = [0u8; 6];
                while r.read_exact(&mut header).is_ok() {
                    let len =
                        u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
                    let mut payload = vec![0u8; len];
                    if r.read_exact(&mut payload).is_err() || tx.send(payload).is_err() {
                        break;
                    }
                }
            })?;
        Ok(NaiveConn {
            writer: Mutex::new(stream),
            incoming,
            reader: Some(reader),
            shutdown,
        })
    }

    /// Sends one frame: lock, one write, unlock.
    pub fn send(&self, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(6 + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&[7, 0]);
        frame.extend_from_slice(payload);
        let mut stream = self
            .writer
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        stream.write_all(&frame)
    }
}

impl Drop for NaiveConn {
    fn drop(&mut self) {
        let _ = self.shutdown.shutdown(std::net::Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// A connected pair over loopback: (client end, server end).
pub fn pair() -> io::Result<(Arc<NaiveConn>, Arc<NaiveConn>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    Ok((
        Arc::new(NaiveConn::new(client, "naive-client")?),
        Arc::new(NaiveConn::new(server, "naive-server")?),
    ))
}
