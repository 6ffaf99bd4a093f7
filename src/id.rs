//! Identifiers: who a peer is, and which connection carried something.

use std::fmt;

/// The identity of a node, chosen by the application and unique in its network.
///
/// Every node announces its `PeerId` in the handshake, and every message and event
/// names the peer it concerns by it. A node refuses a peer that claims the node's own
/// id.
///
/// # Examples
///
/// ```
/// use wirelane::PeerId;
///
/// let id = PeerId(7);
/// assert_eq!(id.to_string(), "peer-7");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer-{}", self.0)
    }
}

impl From<u64> for PeerId {
    fn from(id: u64) -> Self {
        PeerId(id)
    }
}

/// Names one TCP connection of a node, unique for the node's lifetime.
///
/// A peer can be connected, disconnected and connected again; each time it gets a new
/// connection with a new `ConnId`. Events carry it so that the end of an old
/// connection is never mistaken for the end of its replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub(crate) u64);

impl ConnId {
    /// The raw number, for logs and metrics.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn-{}", self.0)
    }
}

/// The SHA-256 digest of a peer's TLS certificate (DER), as
/// [`Event::Connected`](crate::Event::Connected) reports it and
/// [`Node::probe`](crate::Node::probe) returns it. Displays as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}
