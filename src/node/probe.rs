//! [`Node::probe`]: a handshake that only asks who is there.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;

use super::session::Origin;
use super::Node;
use crate::error::{Error, Result};
use crate::id::{Fingerprint, PeerId};
use crate::sync::until;

/// The furthest a probe's deadline is set: a timeout longer than this is as good as
/// none, and an `Instant` that far out may not exist.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

impl Node {
    /// Dials `addr` and runs the handshake — TLS and the authenticator included,
    /// when this node has them — and returns the peer's id and, over TLS, the
    /// fingerprint of its certificate; then hangs up. Like Fabric's `Probe`: it
    /// checks that a peer is there, is who it says, and would accept this node.
    ///
    /// Nothing is registered on either side: this node reports no
    /// [`Event::Connected`](crate::Event::Connected) and its peer table is
    /// unchanged, and the peer, which the hello tells that this is a probe, answers
    /// once it has checked this node, with no arbitration. A connection the two
    /// nodes already have is not touched, and the peer goes on serving everyone.
    ///
    /// The dial and the handshake together take at most `timeout`. While it runs,
    /// the probe counts as one of this node's handshakes and connections
    /// ([`Config::max_handshakes`](crate::Config::max_handshakes),
    /// [`Config::max_connections`](crate::Config::max_connections)); no lock is
    /// held while it waits.
    ///
    /// # Errors
    ///
    /// As [`connect`](Node::connect): the dial fails or times out, the handshake is
    /// refused (by either side: [`Error::Handshake`] says why) or times out, a limit
    /// of this node refuses it, or the node is shut down.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use wirelane::{Config, Node, PeerId};
    ///
    /// let a = Node::bind(PeerId(1), "127.0.0.1:0", Config::default())?;
    /// let b = Node::bind(PeerId(2), "127.0.0.1:0", Config::default())?;
    ///
    /// // No certificate on a plaintext connection, so no fingerprint.
    /// let (peer, fingerprint) = a.probe(b.local_addr(), Duration::from_secs(5))?;
    /// assert_eq!((peer, fingerprint), (PeerId(2), None));
    /// assert!(!a.is_connected(PeerId(2)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn probe(
        &self,
        addr: impl ToSocketAddrs,
        timeout: Duration,
    ) -> Result<(PeerId, Option<Fingerprint>)> {
        let deadline = Instant::now() + timeout.min(FOREVER);
        if self.shared.is_shut() {
            return Err(Error::Shutdown);
        }
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        let mut last = None;
        let mut dialled = None;
        for addr in addrs {
            let Some(left) = until(deadline) else {
                last = Some(io::Error::from(io::ErrorKind::TimedOut));
                break;
            };
            match std::net::TcpStream::connect_timeout(&addr, left) {
                Ok(stream) => {
                    dialled = Some(stream);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(stream) = dialled else {
            return Err(last.map_or(Error::NoAddress, Error::Io));
        };
        let (report, outcome) = bounded(1);
        self.shared
            .spawn_connection(stream, Origin::Probe(report, deadline))?;
        match outcome.recv() {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(e.into()),
            // The connection thread ended without a word: the node shut down.
            Err(_) => Err(Error::Shutdown),
        }
    }
}
