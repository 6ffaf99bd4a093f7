//! One connection's TLS session, shared by its reader and writer threads.
//!
//! The rustls state sits behind a mutex that is held only while records are
//! decrypted or encrypted in memory: socket reads and writes happen with it
//! released. Only one thread writes to the socket at a time (the connection
//! thread during the handshake; after it the writer, or a sender it has lent its
//! turn to, `crate::conn::turn`), and only that thread takes records out of the
//! session, so records leave in the order they were made. Records a sender made
//! and the socket did not take stay in the session and go out first with the
//! writer's next write. Only the connection thread reads.

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

/// Most plaintext in one TLS record: the protocol's limit. Each record is encrypted
/// under a lock of its own, so that the reader never waits longer than one record's
/// encryption for the session.
const RECORD: usize = 16 * 1024;

/// Most plaintext one write encrypts and sends with one system call: a default
/// batch (`Config::max_batch_bytes`). One record per system call cost a 64 KiB
/// batch four sends instead of one.
const WRITE_MAX: usize = 64 * 1024;

/// Records one write may make: `WRITE_MAX` in whole records, and then some for
/// batches of many small slices, whose records a full slice array cuts short.
const WRITE_RECORDS: usize = 16;

/// Slices handed to the session per record.
const RECORD_SLICES: usize = 64;

/// The ciphertext buffer's sizes: the most read from the socket at once (a default
/// batch and its record headers), and the least, for an idle connection.
const READ_MAX: usize = WRITE_MAX + 4 * 1024;
const READ_MIN: usize = 4 * 1024;

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
    /// Ciphertext read from the socket and not yet handed to the session.
    inbox: Inbox,
    /// Records taken out of the session, reused between writes.
    out: Vec<u8>,
    /// Why a write failed after some of its records had gone out: the next write
    /// fails with it (the rest of those records is lost, so the stream cannot go on).
    broken: Option<io::ErrorKind>,
    /// Records a sender's `send_now` made but the socket did not take,
    /// `unsent[unsent_at..]`, and a copy of the plaintext they carry that no write
    /// has reported yet: the next bytes the writer must be given.
    unsent: Vec<u8>,
    unsent_at: usize,
    covered: Vec<u8>,
}

/// Records made by one write, not yet sent.
struct Sealed {
    out: Vec<u8>,
    /// Where each record ends in `out`, and the plaintext made into records up to
    /// its end.
    ends: [(usize, usize); WRITE_RECORDS],
    records: usize,
    plain: usize,
}

impl Sealed {
    /// The plaintext of the whole records among the first `sent` bytes of `out`.
    fn whole(&self, sent: usize) -> usize {
        self.ends[..self.records]
            .iter()
            .take_while(|(end, _)| *end <= sent)
            .last()
            .map_or(0, |&(_, plain)| plain)
    }

    /// Hands the buffer back to the session for the next write.
    fn give_back(self, state: &mut State) {
        let used = self.out.len();
        keep(&mut state.out, self.out, used);
    }
}

/// Ciphertext from the socket, `buf[start..end]` not yet handed to the session.
///
/// The reader reads the socket into this buffer, not the caller's: the caller may
/// ask for a few bytes (the next frame header), and TLS records are read whole
/// before anything in them can be decrypted, so reading the socket as little as the
/// caller asks for cost hundreds of system calls per 64 KiB record group.
#[derive(Default)]
struct Inbox {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// How much the next socket read asks for: doubled after a read that filled it,
    /// halved after one that used less than an eighth, between `READ_MIN` and
    /// `READ_MAX`; the buffer shrinks with it once drained, so that an idle
    /// connection keeps little.
    window: usize,
}

impl Inbox {
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads the socket once into the room after the unread bytes; 0 is the end of
    /// the stream. Called with the session's lock released.
    fn read_from(&mut self, tcp: &TcpStream) -> io::Result<usize> {
        let window = self.window.clamp(READ_MIN, READ_MAX);
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            if self.buf.len() > 2 * window {
                self.buf = Vec::new();
            }
        } else if self.buf.len() - self.end < window {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.buf.len() < self.end + window {
            self.buf.resize(self.end + window, 0);
        }
        let n = (&*tcp).read(&mut self.buf[self.end..self.end + window])?;
        self.end += n;
        self.window = if n == window {
            (window * 2).min(READ_MAX)
        } else if n < window / 8 {
            (window / 2).max(READ_MIN)
        } else {
            window
        };
        Ok(n)
    }
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
    pub(crate) fn new(mut conn: Connection, identify: Arc<Identify>) -> Session {
        // Every record is taken out as soon as it is made (`write`), so the session's
        // own limit on queued records would only cut a write short.
        conn.set_buffer_limit(None);
        Session {
            state: Mutex::new(State {
                conn,
                inbox: Inbox::default(),
                out: Vec::new(),
                broken: None,
                unsent: Vec::new(),
                unsent_at: 0,
                covered: Vec::new(),
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
        let mut first = true;
        loop {
            self.flush(tcp, Some(deadline))?;
            if !self.state.lock().conn.is_handshaking() {
                break;
            }
            let wait = until(deadline).ok_or(HandshakeError::Timeout)?;
            tcp.set_read_timeout(Some(wait))?;
            match self.receive(tcp) {
                Ok(0) => return Err(HandshakeError::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            let mut state = self.state.lock();
            if first
                && !state
                    .inbox
                    .data()
                    .first()
                    .copied()
                    .is_some_and(looks_like_tls)
            {
                drop(state);
                let _ = (&*tcp).write_all(&PLAINTEXT_REFUSAL);
                return Err(HandshakeError::TlsMismatch { ours: true });
            }
            first = false;
            let fed = state.feed();
            drop(state);
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

    /// Whether the session holds data a read would return without the socket:
    /// plaintext, or ciphertext read and not yet decrypted. A session that has
    /// failed says yes, so that the read reports it.
    pub(crate) fn holds_unread(&self) -> bool {
        let mut state = self.state.lock();
        !state.inbox.data().is_empty()
            || state
                .conn
                .process_new_packets()
                .map_or(true, |io| io.plaintext_bytes_to_read() > 0)
    }

    /// Reads plaintext: what the session holds, or else what the socket has.
    ///
    /// One lock before each socket read and one after: the reader's lock is what a
    /// sender writing its own frame (`send_now`) may find held, right after the
    /// reader has delivered the message it answers.
    pub(crate) fn read(&self, tcp: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // The inbox, while it is out of the session for a socket read.
        let mut read_into: Option<Inbox> = None;
        loop {
            let mut state = self.state.lock();
            if let Some(inbox) = read_into.take() {
                state.inbox = inbox;
            }
            loop {
                match state.conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The peer ended the stream without a close_notify: an end of
                    // stream, as on a plaintext connection.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                // No plaintext yet: decrypt what the inbox holds, if anything.
                if !state.feed().map_err(failure)? {
                    break;
                }
            }
            let mut inbox = std::mem::take(&mut state.inbox);
            drop(state);
            match inbox.read_from(tcp) {
                Ok(n) if n > 0 => read_into = Some(inbox),
                ended => {
                    self.state.lock().inbox = inbox;
                    return ended;
                }
            }
        }
    }

    /// Encrypts as much of `bufs` as one write takes (`WRITE_MAX`), a record at a
    /// time, and sends the records with as few system calls as the socket allows;
    /// returns the plaintext bytes sent. If the socket fails after some whole
    /// records went out, returns what they carried, and the next write fails: what
    /// this returns is always what reached the socket in whole records.
    ///
    /// If a sender's [`Session::send_now`] left records unsent, they go first, and
    /// this returns the plaintext they carry: the caller's next bytes, which are
    /// not encrypted again.
    pub(crate) fn write(&self, tcp: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if let Some(n) = self.finish_unsent(tcp, bufs)? {
            return Ok(n);
        }
        let Some(sealed) = self.seal(bufs, true)? else {
            return Ok(0);
        };
        let out = &sealed.out;
        let mut sent = 0;
        let written = loop {
            if sent == out.len() {
                break Ok(());
            }
            match (&*tcp).write(&out[sent..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        let (plain, whole) = (sealed.plain, sealed.whole(sent));
        let mut state = self.state.lock();
        sealed.give_back(&mut state);
        match written {
            Ok(()) => Ok(plain),
            Err(e) if whole == 0 => Err(e),
            Err(e) => {
                state.broken = Some(e.kind());
                Ok(whole)
            }
        }
    }

    /// A sender's write while the writer is parked: encrypts up to `WRITE_MAX` of
    /// `bufs` (one frame) and hands the records to `send`, a send that never waits
    /// (`Ok(0)`: the socket's buffer is full). Returns the plaintext of the whole
    /// records the socket took. Records it did not take stay in the session, and
    /// the writer's next [`Session::write`], given the rest of the frame, sends them
    /// first: records are never made twice, and leave in the order they were made.
    /// Returns `Ok(0)` without encrypting anything while such records wait.
    ///
    /// # Errors
    ///
    /// The session failed, or `send` failed before a whole record went out; then
    /// the next write fails too.
    pub(crate) fn send_now(
        &self,
        bufs: &[IoSlice<'_>],
        mut send: impl FnMut(&[u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        {
            // A sender holding the turn never waits, not even for the reader's
            // few microseconds: the writer takes the frame instead.
            let Some(state) = self.state.try_lock() else {
                return Ok(0);
            };
            if let Some(kind) = state.broken {
                return Err(kind.into());
            }
            if !state.covered.is_empty() {
                return Ok(0);
            }
        }
        let Some(sealed) = self.seal(bufs, false)? else {
            return Ok(0);
        };
        let out = &sealed.out;
        let (mut sent, mut failed) = (0, None);
        while sent < out.len() {
            match send(&out[sent..]) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let (plain, whole) = (sealed.plain, sealed.whole(sent));
        let mut state = self.state.lock();
        if let Some(e) = failed {
            state.broken = Some(e.kind());
            sealed.give_back(&mut state);
            return if whole == 0 { Err(e) } else { Ok(whole) };
        }
        if sent == out.len() {
            sealed.give_back(&mut state);
            return Ok(plain);
        }
        let mut covered = Slices::new(bufs);
        covered.advance(whole);
        state.covered = covered.copy(plain - whole);
        state.unsent_at = sent;
        state.unsent = sealed.out;
        Ok(whole)
    }

    /// Sends the records a sender left unsent, if any, and returns the plaintext
    /// they carry (at most what `bufs` holds). `bufs` must begin with that
    /// plaintext, the rest of the sender's frame; if it does not, the frame was
    /// abandoned in the middle of a record, the stream cannot go on, and this
    /// fails (and every write after it).
    fn finish_unsent(&self, tcp: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<Option<usize>> {
        let (unsent, at) = {
            let mut state = self.state.lock();
            if let Some(kind) = state.broken {
                return Err(kind.into());
            }
            if state.covered.is_empty() {
                return Ok(None);
            }
            let offered = Slices::new(bufs).copy(state.covered.len());
            if offered.is_empty() {
                return Ok(Some(0));
            }
            if !state.covered.starts_with(&offered) {
                state.broken = Some(io::ErrorKind::InvalidData);
                state.unsent = Vec::new();
                state.covered = Vec::new();
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a frame begun by a sender was not finished",
                ));
            }
            if state.unsent.is_empty() {
                // Sent with an earlier part of the same frame.
                state.covered.drain(..offered.len());
                return Ok(Some(offered.len()));
            }
            (std::mem::take(&mut state.unsent), state.unsent_at)
        };
        let written = (&*tcp).write_all(&unsent[at..]);
        let mut state = self.state.lock();
        let used = unsent.len();
        keep(&mut state.out, unsent, used);
        if let Err(e) = written {
            state.broken = Some(e.kind());
            return Err(e);
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let n = state.covered.len().min(total);
        state.covered.drain(..n);
        Ok(Some(n))
    }

    /// Encrypts up to `WRITE_MAX` of `bufs`, a record per lock, into a buffer of
    /// records taken out of the session; `None` if `bufs` is empty. Without `wait`
    /// it stops at the first record whose lock is taken.
    fn seal(&self, bufs: &[IoSlice<'_>], wait: bool) -> io::Result<Option<Sealed>> {
        let mut sealed = Sealed {
            out: Vec::new(),
            ends: [(0, 0); WRITE_RECORDS],
            records: 0,
            plain: 0,
        };
        let mut rest = Slices::new(bufs);
        while sealed.records < WRITE_RECORDS && sealed.plain < WRITE_MAX {
            let mut chunk = [IoSlice::new(&[]); RECORD_SLICES];
            let (count, len) = rest.take(&mut chunk, RECORD.min(WRITE_MAX - sealed.plain));
            if len == 0 {
                break;
            }
            let mut state = match wait {
                true => self.state.lock(),
                false => match self.state.try_lock() {
                    Some(state) => state,
                    None => break,
                },
            };
            if let Some(kind) = state.broken {
                return Err(kind.into());
            }
            if sealed.records == 0 {
                sealed.out = std::mem::take(&mut state.out);
                sealed.out.clear();
            }
            let n = state.conn.writer().write_vectored(&chunk[..count])?;
            // This record, and whatever the session queued before it (a key update
            // answered by the reader): every record leaves in the order it was made.
            while state.conn.wants_write() {
                state.conn.write_tls(&mut sealed.out)?;
            }
            drop(state);
            sealed.plain += n;
            sealed.ends[sealed.records] = (sealed.out.len(), sealed.plain);
            sealed.records += 1;
            rest.advance(n);
            if n < len {
                // The session's own buffer is full: send what it made.
                break;
            }
        }
        Ok((sealed.records > 0).then_some(sealed))
    }

    /// Reads the socket once into the inbox, with the lock released; 0 is the end
    /// of the stream. Only the reading thread calls it, so the inbox it takes out
    /// is the one it puts back.
    fn receive(&self, tcp: &TcpStream) -> io::Result<usize> {
        let mut inbox = std::mem::take(&mut self.state.lock().inbox);
        let read = inbox.read_from(tcp);
        self.state.lock().inbox = inbox;
        read
    }

    /// Sends a close_notify, best effort.
    pub(crate) fn close_notify(&self, tcp: &TcpStream) {
        {
            let mut state = self.state.lock();
            // After a failed write the peer could not decrypt it.
            if state.broken.is_some() {
                return;
            }
            state.conn.send_close_notify();
        }
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
                // Records a sender left unsent carry a frame that was handed back
                // when the writer gave it up: sending them now could deliver it as
                // well. Nothing after them would decrypt, so nothing more is sent.
                if !state.unsent.is_empty() {
                    state.unsent = Vec::new();
                    state.covered = Vec::new();
                    state.broken = Some(io::ErrorKind::InvalidData);
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
            let used = out.len();
            out.clear();
            keep(&mut self.state.lock().out, out, used);
            written?;
        }
    }
}

/// Keeps `out` for the next write if it was well used (a busy connection reuses
/// one buffer) and not oversized; a buffer left over from a burst goes once a small
/// write shows the connection has calmed down.
fn keep(slot: &mut Vec<u8>, mut out: Vec<u8>, used: usize) {
    out.clear();
    let cap = out.capacity();
    if cap <= 2 * READ_MAX && cap <= 8 * used.max(READ_MIN) && cap >= slot.capacity() {
        *slot = out;
    }
}

/// The slices of a vectored write not yet sent.
struct Slices<'a, 'b> {
    bufs: &'b [IoSlice<'a>],
    /// Bytes of `bufs[0]` already sent.
    offset: usize,
}

impl<'a, 'b> Slices<'a, 'b> {
    fn new(bufs: &'b [IoSlice<'a>]) -> Self {
        Slices { bufs, offset: 0 }
    }

    /// Fills `chunk` with up to `max` bytes from the front, without consuming them;
    /// returns the slices used and their bytes.
    fn take<'c>(&self, chunk: &mut [IoSlice<'c>], max: usize) -> (usize, usize)
    where
        'b: 'c,
        'a: 'c,
    {
        let (mut count, mut len, mut offset) = (0, 0, self.offset);
        for buf in self.bufs {
            if count == chunk.len() || len == max {
                break;
            }
            let rest = &buf[offset..];
            offset = 0;
            if rest.is_empty() {
                continue;
            }
            let take = rest.len().min(max - len);
            chunk[count] = IoSlice::new(&rest[..take]);
            count += 1;
            len += take;
        }
        (count, len)
    }

    /// A copy of up to `n` bytes from the front, without consuming them.
    fn copy(&self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        let mut offset = self.offset;
        for buf in self.bufs {
            let rest = &buf[offset..];
            offset = 0;
            let take = rest.len().min(n - out.len());
            out.extend_from_slice(&rest[..take]);
            if out.len() == n {
                break;
            }
        }
        out
    }

    /// Consumes `n` bytes from the front.
    fn advance(&mut self, mut n: usize) {
        while let Some(first) = self.bufs.first() {
            let left = first.len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.bufs = &self.bufs[1..];
            self.offset = 0;
        }
    }
}

impl State {
    /// Hands the inbox's ciphertext to the session and decrypts what it completes,
    /// until the inbox is empty or the session's plaintext buffer is full. Returns
    /// whether it handed anything over.
    fn feed(&mut self) -> Result<bool, rustls::Error> {
        let mut fed = false;
        while self.inbox.start < self.inbox.end {
            let mut raw = self.inbox.data();
            match self.conn.read_tls(&mut raw) {
                // A close_notify was received: nothing more is read.
                Ok(0) => break,
                Ok(n) => {
                    self.inbox.start += n;
                    fed = true;
                    self.conn.process_new_packets()?;
                }
                // Its plaintext buffer is full: the rest waits for the reader.
                Err(_) => break,
            }
        }
        Ok(fed)
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread;
    use std::time::Duration;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::*;
    use crate::tls::{peer_uri, TlsConfig};

    /// Settings for nodes 1 and 2, signed by one fresh CA.
    fn configs() -> (TlsConfig, TlsConfig) {
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).expect("a CA");
        let issuer = Issuer::new(params, ca_key);
        let node = |id| {
            let key = KeyPair::generate().expect("a key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.subject_alt_names = vec![SanType::URI(
                peer_uri(PeerId(id)).try_into().expect("a uri"),
            )];
            let cert = params.signed_by(&key, &issuer).expect("a cert");
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            TlsConfig::new(vec![cert.der().clone()], key, vec![ca.der().clone()])
                .expect("tls settings")
        };
        (node(1), node(2))
    }

    /// A TCP pair with a finished TLS handshake: (dialler, acceptor).
    fn pair() -> ((TcpStream, Session), (TcpStream, Session)) {
        let (client, server) = configs();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let dialled = TcpStream::connect(listener.local_addr().expect("addr")).expect("dial");
        let (accepted, _) = listener.accept().expect("accept");
        let deadline = Instant::now() + Duration::from_secs(30);
        let acceptor = thread::spawn(move || {
            let session = server.session(true);
            let certified = session.handshake(&accepted, deadline).expect("handshake");
            assert_eq!(certified.peer, Some(PeerId(1)));
            (accepted, session)
        });
        let session = client.session(false);
        let certified = session.handshake(&dialled, deadline).expect("handshake");
        assert_eq!(certified.peer, Some(PeerId(2)));
        let acceptor = acceptor.join().expect("the acceptor's handshake");
        for tcp in [&dialled, &acceptor.0] {
            tcp.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
        }
        ((dialled, session), acceptor)
    }

    /// Bytes that differ from one position to the next, so that a byte out of place
    /// shows.
    fn pattern(len: usize, seed: usize) -> Vec<u8> {
        (0..len)
            .map(|i| ((i * 31 + seed * 7) % 251) as u8)
            .collect()
    }

    #[test]
    fn slices_are_cut_into_records_without_losing_or_repeating_a_byte() {
        let parts: Vec<Vec<u8>> = [0, 5, 70_000, 1, 0, 16_384, 3]
            .iter()
            .map(|&n| pattern(n, n))
            .collect();
        let bufs: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut rest = Slices::new(&bufs);
        let mut seen = Vec::new();
        loop {
            let mut chunk = [IoSlice::new(&[]); 4];
            let (count, len) = rest.take(&mut chunk, RECORD);
            if len == 0 {
                break;
            }
            assert!(len <= RECORD && count <= 4);
            assert_eq!(chunk[..count].iter().map(|c| c.len()).sum::<usize>(), len);
            // Take a little less than offered, as a full session would.
            let n = if len > 10 { len - 3 } else { len };
            let mut left = n;
            for c in &chunk[..count] {
                let take = c.len().min(left);
                seen.extend_from_slice(&c[..take]);
                left -= take;
            }
            rest.advance(n);
        }
        assert_eq!(seen, parts.concat());
    }

    #[test]
    fn what_is_written_in_many_slices_is_read_back_whole_through_small_reads() {
        let ((dialled, writer), (accepted, reader)) = pair();
        let sizes = [1, 6, 64, 1024, 16_383, 16_384, 16_385, 65_536, 200_000, 7];
        let parts: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| pattern(n, i))
            .collect();
        let total: usize = sizes.iter().sum();
        let expected = parts.concat();
        let receiving = thread::spawn(move || {
            let mut got = Vec::with_capacity(total);
            // Reads of every size, the frame reader's few-byte header reads included.
            let mut small = [3usize, 6, 100, 70_000, 1].into_iter().cycle();
            while got.len() < total {
                let mut buf = vec![0; small.next().expect("a cycle never ends")];
                match reader.read(&accepted, &mut buf).expect("a read") {
                    0 => break,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
            got
        });
        let mut bufs: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut slices = &mut bufs[..];
        let mut sent = 0;
        while sent < total {
            let n = writer.write(&dialled, slices).expect("a write");
            assert!(
                n > 0 && n <= WRITE_MAX,
                "a write sends at most {WRITE_MAX}: {n}"
            );
            sent += n;
            IoSlice::advance_slices(&mut slices, n);
        }
        writer.close_notify(&dialled);
        let got = receiving.join().expect("the reader");
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the bytes came back altered");
    }

    /// Reads everything until the end of the stream or an error.
    fn read_to_end(tcp: TcpStream, session: Session) -> thread::JoinHandle<(Vec<u8>, bool)> {
        thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = vec![0; 100_000];
            loop {
                match session.read(&tcp, &mut buf) {
                    Ok(0) => return (got, true),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(_) => return (got, false),
                }
            }
        })
    }

    /// A `send_now` whose socket takes `budget` bytes, then no more.
    fn sending<'a>(
        tcp: &'a TcpStream,
        budget: &'a mut usize,
    ) -> impl FnMut(&[u8]) -> io::Result<usize> + 'a {
        move |records: &[u8]| {
            let n = records.len().min(*budget);
            (&*tcp).write_all(&records[..n])?;
            *budget -= n;
            Ok(n)
        }
    }

    #[test]
    fn records_a_sender_could_not_send_go_first_with_the_rest_of_its_frame() {
        let ((dialled, writer), (accepted, reader)) = pair();
        let receiving = read_to_end(accepted, reader);
        let mut expected = Vec::new();
        // What the socket takes of each frame's records: nothing, part of the
        // first record's header, part of a record, exactly one record, all of them.
        for (i, budget) in [0, 3, 20_000, RECORD + 22, usize::MAX]
            .into_iter()
            .enumerate()
        {
            let (head, payload) = (pattern(6, i), pattern(50_000 + i, i + 1));
            let frame = [head.clone(), payload.clone()].concat();
            let mut budget = budget;
            let bufs = [IoSlice::new(&head), IoSlice::new(&payload)];
            let n = writer
                .send_now(&bufs, sending(&dialled, &mut budget))
                .expect("a send that never waits");
            assert!(
                n == 0 || n == frame.len().min(WRITE_MAX) || n % RECORD == 0,
                "{n}"
            );
            // The writer finishes the frame, as the turn hands it over.
            let mut sent = n;
            while sent < frame.len() {
                let rest = [IoSlice::new(&frame[sent..])];
                sent += writer.write(&dialled, &rest).expect("a write");
            }
            expected.extend_from_slice(&frame);
        }
        writer.close_notify(&dialled);
        let _ = dialled.shutdown(std::net::Shutdown::Write);
        let (got, clean) = receiving.join().expect("the reader");
        assert!(clean, "the stream ended with a close_notify");
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "a record was sent twice, or out of order");
    }

    #[test]
    fn a_frame_given_up_after_a_sender_began_it_is_never_finished() {
        let ((dialled, writer), (accepted, reader)) = pair();
        let receiving = read_to_end(accepted, reader);
        let first = pattern(1000, 1);
        let sent = writer
            .write(&dialled, &[IoSlice::new(&first)])
            .expect("a write");
        assert_eq!(sent, first.len());
        // A sender's frame of which the socket takes a few bytes.
        let frame = pattern(30_000, 2);
        let mut budget = 10;
        let n = writer
            .send_now(&[IoSlice::new(&frame)], sending(&dialled, &mut budget))
            .expect("a send that never waits");
        assert_eq!(n, 0, "no whole record went out");
        // The writer gives the frame up and says goodbye instead.
        let goodbye = pattern(7, 3);
        let refused = writer.write(&dialled, &[IoSlice::new(&goodbye)]);
        assert_eq!(
            refused.map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::InvalidData)
        );
        assert!(writer.write(&dialled, &[IoSlice::new(&goodbye)]).is_err());
        writer.close_notify(&dialled);
        let _ = dialled.shutdown(std::net::Shutdown::Write);
        let (got, _) = receiving.join().expect("the reader");
        assert_eq!(
            got, first,
            "nothing of the frame given up, nor the goodbye, arrived"
        );
    }
}
