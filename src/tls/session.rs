//! One connection's TLS session, shared by its reader and writer threads.
//!
//! The rustls state sits behind a mutex that is held only while records are
//! decrypted or encrypted in memory: socket reads and writes happen with it
//! released. Only one thread writes to the socket at a time (the connection
//! thread during the handshake, the writer after it), and only that thread takes
//! records out of the session, so records leave in the order they were made.
//! Only the connection thread reads.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use rustls::{CertificateError, Connection};
use sha2::{Digest, Sha256};

use super::Identify;
use crate::error::{HandshakeError, TlsError};
use crate::id::{Fingerprint, PeerId};
use crate::sync::until;

/// Most plaintext encrypted per write: one record, so that a write that fails has
/// sent no whole record of what it was given.
const RECORD: usize = 16 * 1024;

/// What the handshake learnt of the peer.
pub(crate) struct Certified {
    /// The id its certificate carries, if the identity rule found one.
    pub(crate) peer: Option<PeerId>,
    pub(crate) fingerprint: Fingerprint,
}

pub(crate) struct Session {
    state: Mutex<State>,
    identify: Arc<Identify>,
}

struct State {
    conn: Connection,
    /// Bytes read from the socket that the session had no room for yet.
    pending: Vec<u8>,
    /// Records taken out of the session, reused between writes.
    out: Vec<u8>,
}

/// The first byte of a TLS record: change_cipher_spec, alert, handshake, data.
fn looks_like_tls(first: u8) -> bool {
    (0x14..=0x17).contains(&first)
}

/// A TLS alert record (unexpected_message), sent raw to a peer that spoke
/// plaintext to us, so that its own handshake reads it as TLS and says so.
const PLAINTEXT_REFUSAL: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x0a];

pub(crate) fn tls_error(e: &rustls::Error) -> TlsError {
    match e {
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => TlsError::CertificateExpired,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            TlsError::UnknownIssuer
        }
        rustls::Error::InvalidCertificate(other) => TlsError::BadCertificate(format!("{other:?}")),
        rustls::Error::NoCertificatesPresented => TlsError::NoIdentity,
        rustls::Error::AlertReceived(alert) => TlsError::Alert(format!("{alert:?}")),
        other => TlsError::Failed(other.to_string()),
    }
}

fn failure(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, tls_error(&e))
}

impl Session {
    pub(crate) fn new(conn: Connection, identify: Arc<Identify>) -> Session {
        Session {
            state: Mutex::new(State {
                conn,
                pending: Vec::new(),
                out: Vec::new(),
            }),
            identify,
        }
    }

    /// Runs the TLS handshake to its end or to `deadline`, then names the peer from
    /// its certificate.
    pub(crate) fn handshake(
        &self,
        tcp: &TcpStream,
        deadline: Instant,
    ) -> Result<Certified, HandshakeError> {
        let mut buf = vec![0; 2 * RECORD];
        let mut first = true;
        loop {
            self.flush(tcp, Some(deadline))?;
            if !self.state.lock().conn.is_handshaking() {
                break;
            }
            let wait = until(deadline).ok_or(HandshakeError::Timeout)?;
            tcp.set_read_timeout(Some(wait))?;
            let n = match (&*tcp).read(&mut buf) {
                Ok(0) => return Err(HandshakeError::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if first && !looks_like_tls(buf[0]) {
                let _ = (&*tcp).write_all(&PLAINTEXT_REFUSAL);
                return Err(HandshakeError::TlsMismatch { ours: true });
            }
            first = false;
            let fed = self.state.lock().feed(&buf[..n]);
            if let Err(e) = fed {
                // Tell the peer why (the alert rustls queued), best effort.
                let _ = self.flush(tcp, Some(deadline));
                return Err(HandshakeError::Tls(tls_error(&e)));
            }
        }
        // A copy, so that the application's identity rule runs with the lock released.
        let cert = self
            .state
            .lock()
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| cert.to_vec())
            .ok_or(HandshakeError::Tls(TlsError::NoIdentity))?;
        let fingerprint = Fingerprint(Sha256::digest(&cert).into());
        let peer = (self.identify)(&cert);
        Ok(Certified { peer, fingerprint })
    }

    /// Reads plaintext: what the session holds, or else what the socket has.
    pub(crate) fn read(&self, tcp: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            {
                let mut state = self.state.lock();
                if !state.pending.is_empty() {
                    let pending = std::mem::take(&mut state.pending);
                    state.feed(&pending).map_err(failure)?;
                }
                match state.conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The peer ended the stream without a close_notify: an end of
                    // stream, as on a plaintext connection.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
            }
            let n = (&*tcp).read(buf)?;
            if n == 0 {
                return Ok(0);
            }
            self.state.lock().feed(&buf[..n]).map_err(failure)?;
        }
    }

    /// Encrypts up to one record of `bufs` and writes it out; returns the plaintext
    /// bytes sent.
    pub(crate) fn write(&self, tcp: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut clipped = [IoSlice::new(&[]); 64];
        let (mut count, mut total) = (0, 0);
        for buf in bufs.iter().filter(|b| !b.is_empty()) {
            if count == clipped.len() || total == RECORD {
                break;
            }
            let take = buf.len().min(RECORD - total);
            clipped[count] = IoSlice::new(&buf[..take]);
            count += 1;
            total += take;
        }
        if count == 0 {
            return Ok(0);
        }
        let n = self
            .state
            .lock()
            .conn
            .writer()
            .write_vectored(&clipped[..count])?;
        self.flush(tcp, None).map_err(|e| match e {
            HandshakeError::Io(kind) => io::Error::from(kind),
            other => io::Error::other(other.to_string()),
        })?;
        Ok(n)
    }

    /// Sends a close_notify, best effort.
    pub(crate) fn close_notify(&self, tcp: &TcpStream) {
        self.state.lock().conn.send_close_notify();
        let _ = self.flush(tcp, None);
    }

    /// Writes out every record the session holds, taking them out under the lock
    /// and writing with it released.
    fn flush(&self, tcp: &TcpStream, deadline: Option<Instant>) -> Result<(), HandshakeError> {
        loop {
            let mut out = {
                let mut state = self.state.lock();
                if !state.conn.wants_write() {
                    return Ok(());
                }
                let mut out = std::mem::take(&mut state.out);
                out.clear();
                while state.conn.wants_write() {
                    state.conn.write_tls(&mut out)?;
                }
                out
            };
            if let Some(deadline) = deadline {
                let wait = until(deadline).ok_or(HandshakeError::Timeout)?;
                tcp.set_write_timeout(Some(wait))?;
            }
            let written = (&*tcp).write_all(&out);
            out.clear();
            let mut state = self.state.lock();
            if state.out.capacity() < out.capacity() && out.capacity() <= 4 * RECORD {
                state.out = out;
            }
            drop(state);
            written?;
        }
    }
}

impl State {
    /// Hands bytes from the socket to the session and decrypts what they complete;
    /// what it has no room for waits in `pending`.
    fn feed(&mut self, mut raw: &[u8]) -> Result<(), rustls::Error> {
        while !raw.is_empty() {
            match self.conn.read_tls(&mut raw) {
                Ok(0) => break,
                Ok(_) => {
                    self.conn.process_new_packets()?;
                }
                // Its plaintext buffer is full: the rest waits for the reader.
                Err(_) => break,
            }
        }
        self.pending.extend_from_slice(raw);
        Ok(())
    }
}
