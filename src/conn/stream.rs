//! A connection's byte stream: the TCP socket, and with the `tls` feature the TLS
//! session on top of it.
//!
//! `&Stream` reads and writes like `&TcpStream`. Which thread does what is unchanged
//! by TLS: the connection thread reads (the handshake, then the reader loop), the
//! connection thread writes during the handshake and after it the writer thread, or
//! a sender the parked writer lent its turn to (`crate::conn::turn`), one at a
//! time, and any thread may cut the socket. With TLS the session's state is behind a
//! mutex that is held only while records are encrypted or decrypted in memory,
//! never across a socket read or write (see `crate::tls::session`).

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

pub(crate) struct Stream {
    tcp: TcpStream,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::session::Session>,
}

impl Stream {
    pub(crate) fn plain(tcp: TcpStream) -> Stream {
        Stream {
            tcp,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    #[cfg(feature = "tls")]
    pub(crate) fn with_tls(tcp: TcpStream, tls: Option<crate::tls::session::Session>) -> Stream {
        Stream { tcp, tls }
    }

    /// The TLS session, once the stream has one.
    #[cfg(feature = "tls")]
    pub(crate) fn tls(&self) -> Option<&crate::tls::session::Session> {
        self.tls.as_ref()
    }

    /// Whether this stream speaks TLS.
    pub(crate) fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return true;
        }
        false
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp.set_read_timeout(timeout)
    }

    pub(crate) fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp.set_write_timeout(timeout)
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    pub(crate) fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.peer_addr()
    }

    /// Reads and throws away, without waiting, what the peer sent that nobody will
    /// read any more: after its goodbye frame, a TLS peer's `close_notify`. Called
    /// once the reader has stopped, before the socket is closed: closing a socket
    /// with unread bytes makes the kernel reset the connection, and a reset makes
    /// the peer's kernel throw away what it had received from us and not yet
    /// handed to its reader — the frames before our own goodbye, which the peer's
    /// reader, lingering, would have read. At most 64 KiB: a peer that goes on
    /// sending after its goodbye gets its reset.
    pub(crate) fn discard_unread(&self) {
        if self.tcp.set_nonblocking(true).is_err() {
            return;
        }
        let mut buf = [0u8; 4096];
        for _ in 0..16 {
            match (&self.tcp).read(&mut buf) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }

    /// Cuts the socket; safe from any thread (it writes nothing).
    pub(crate) fn cut(&self) {
        let _ = self.tcp.shutdown(Shutdown::Both);
    }

    /// Whether a thread other than the writer may write a frame with
    /// [`Stream::send_now`]: on Unix, where the kernel can take part of a frame and
    /// the writer finish it. Over TLS the records the kernel did not take stay in
    /// the session, and the writer's next write sends them before anything else.
    pub(crate) fn can_send_now(&self) -> bool {
        cfg!(unix)
    }

    /// Writes what the kernel takes at once without waiting for room: the bytes
    /// written, `Ok(0)` if the socket's buffer is full. Over TLS, the plaintext of
    /// the whole records the kernel took (see `crate::tls::session`). Only the
    /// thread that has the connection's turn to write calls it (see
    /// `crate::conn::turn`).
    #[cfg(unix)]
    pub(crate) fn send_now(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.send_now(bufs, |records| self.send_raw(&[IoSlice::new(records)]));
        }
        self.send_raw(bufs)
    }

    /// A send that never waits: the bytes the kernel took, `Ok(0)` if none.
    #[cfg(unix)]
    fn send_raw(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // No SIGPIPE on a peer that has gone: the error comes back instead, as std's
        // own writes do.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        const FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        const FLAGS: libc::c_int = libc::MSG_DONTWAIT;
        loop {
            match socket2::SockRef::from(&self.tcp).send_vectored_with_flags(bufs, FLAGS) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                other => return other,
            }
        }
    }

    /// Whether a TLS session holds data that a read would return without the
    /// socket. Never for plaintext.
    pub(crate) fn holds_unread(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.holds_unread();
        }
        false
    }

    /// Whether the socket has bytes, the end of the stream or an error waiting:
    /// whether a read of it would return at once. Never waits. Off Unix always
    /// `true`: a read that never waits is a read there.
    pub(crate) fn readable_now(&self) -> bool {
        #[cfg(unix)]
        {
            let mut byte = [std::mem::MaybeUninit::uninit()];
            let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
            match socket2::SockRef::from(&self.tcp).recv_with_flags(&mut byte, flags) {
                Err(e) => !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ),
                Ok(_) => true,
            }
        }
        #[cfg(not(unix))]
        true
    }

    /// A reader of this stream that never waits: `WouldBlock` when nothing has
    /// arrived. Over TLS it reads only once bytes are in the socket, and then a
    /// record begun is read whole, as by [`Read`] on the stream.
    pub(crate) fn no_wait(&self) -> NoWait<'_> {
        NoWait(self)
    }

    /// Never called: [`Stream::can_send_now`] is `false` off Unix.
    #[cfg(not(unix))]
    pub(crate) fn send_now(&self, _bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(0)
    }

    /// Ends our direction after a goodbye: a TLS `close_notify`, then a TCP FIN. Only
    /// the thread that writes may call it.
    pub(crate) fn finish_writing(&self) {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            tls.close_notify(&self.tcp);
        }
        let _ = self.tcp.shutdown(Shutdown::Write);
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.read(&self.tcp, buf);
        }
        (&self.tcp).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return match bufs.iter_mut().find(|b| !b.is_empty()) {
                Some(buf) => tls.read(&self.tcp, buf),
                None => Ok(0),
            };
        }
        (&self.tcp).read_vectored(bufs)
    }
}

/// See [`Stream::no_wait`].
pub(crate) struct NoWait<'a>(&'a Stream);

impl Read for NoWait<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let stream = self.0;
        #[cfg(unix)]
        if !stream.is_tls() {
            let flags = rustix::net::RecvFlags::DONTWAIT;
            return match rustix::net::recv(&stream.tcp, buf, flags) {
                Ok((n, _)) => Ok(n),
                Err(e) => Err(e.into()),
            };
        }
        if !stream.readable_now() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut waiting = stream;
        waiting.read(buf)
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.write(&self.tcp, bufs);
        }
        (&self.tcp).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
