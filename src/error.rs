//! Error types. Send errors hand the message back, as crossbeam's do.

use std::fmt;
use std::io;

use crate::id::PeerId;
use crate::wire::FrameError;

/// A specialised `Result` for node operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a node operation other than a send.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A socket operation failed: bind, dial, or a socket option.
    Io(io::Error),
    /// The configuration is invalid: which field, and the rule it breaks.
    Config(ConfigError),
    /// The peer did not complete the handshake.
    Handshake(HandshakeError),
    /// The node is shut down, or shutting down.
    Shutdown,
    /// The address resolved to nothing.
    NoAddress,
    /// A limit of this node refused a new connection.
    Limit(Limit),
}

/// A limit of a node that refuses new connections when reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// [`Config::max_connections`](crate::Config::max_connections) connections are
    /// open or shaking hands.
    Connections,
    /// [`Config::max_handshakes`](crate::Config::max_handshakes) handshakes are in
    /// progress, and none could make room (a dial of this node's own is never
    /// dropped for another; an inbound one may push out the oldest stranger).
    Handshakes,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Connections => "connection limit reached",
            Limit::Handshakes => "handshake limit reached",
        })
    }
}

/// A configuration value out of range, from [`Config::validate`](crate::Config::validate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    rule: &'static str,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, rule: &'static str) -> ConfigError {
        ConfigError { field, rule }
    }

    /// The field (or argument) that is out of range, as named in `Config`.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.rule)
    }
}

impl std::error::Error for ConfigError {}

/// The peer broke the wire protocol: a frame that cannot be, or may not come here.
///
/// Opaque: the frame format is the crate's business. [`ProtocolError::violation`]
/// says which rule was broken; `Display` says it in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub(crate) FrameError);

/// Which rule of the wire protocol a peer broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A frame of a kind that does not exist.
    UnknownFrame,
    /// A frame with reserved flag bits set.
    ReservedFlags,
    /// A frame longer than the receiver's limit.
    TooLarge,
    /// A control frame of the wrong length for its kind.
    BadLength,
    /// A frame that may not come at this point (data before the handshake ends, a
    /// hello after it), or a reply to no request in flight.
    Unexpected,
    /// More requests in flight at once than the protocol allows.
    TooManyRequests,
    /// Private data sent beyond the flow-control window the receiver gave.
    WindowExceeded,
}

impl ProtocolError {
    /// The rule that was broken.
    pub fn violation(&self) -> Violation {
        match self.0 {
            FrameError::UnknownKind(_) => Violation::UnknownFrame,
            FrameError::ReservedFlags(_) => Violation::ReservedFlags,
            FrameError::TooLarge { .. } => Violation::TooLarge,
            FrameError::BadLength { .. } => Violation::BadLength,
            FrameError::Unexpected(_) | FrameError::UnknownReply => Violation::Unexpected,
            FrameError::TooManyRequests => Violation::TooManyRequests,
            FrameError::WindowExceeded => Violation::WindowExceeded,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ProtocolError {}

impl From<FrameError> for ProtocolError {
    fn from(e: FrameError) -> Self {
        ProtocolError(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "i/o error: {e}"),
            Error::Config(why) => write!(f, "invalid configuration: {why}"),
            Error::Handshake(e) => write!(f, "handshake failed: {e}"),
            Error::Shutdown => f.write_str("node is shut down"),
            Error::NoAddress => f.write_str("address resolved to nothing"),
            Error::Limit(limit) => limit.fmt(f),
        }
    }
}

/// The message of an error that wraps another already includes the inner one's, so
/// `source` skips a level, as `io::Error` does for its inner error: a chain printed
/// by the application names each cause once.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => e.source(),
            Error::Handshake(e) => e.source(),
            Error::Config(e) => e.source(),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<HandshakeError> for Error {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::Shutdown => Error::Shutdown,
            other => Error::Handshake(other),
        }
    }
}

/// Why a connection was refused before it carried any message.
///
/// Returned by [`Node::connect`](crate::Node::connect) and carried by
/// [`Event::Refused`](crate::Event::Refused) for inbound connections.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer did not finish its part within the handshake timeout.
    Timeout,
    /// The peer closed the connection before finishing.
    Closed,
    /// The socket failed during the handshake.
    Io(io::ErrorKind),
    /// The peer sent bytes that are not a valid frame, or the wrong frame.
    Protocol(ProtocolError),
    /// The peer's hello does not start with the protocol's magic bytes.
    BadMagic,
    /// The peer speaks another protocol version.
    Version {
        /// The version this node speaks.
        ours: u16,
        /// The version the peer announced.
        theirs: u16,
    },
    /// The peer claims this node's own id (or this node dialled itself).
    SelfConnect,
    /// A live connection to this peer already exists and is kept; this one is refused.
    Duplicate(PeerId),
    /// One side authenticates its peers and the other does not (`ours`: whether this
    /// node does).
    AuthMismatch {
        /// Whether this node has an authenticator.
        ours: bool,
        /// Whether the peer announced one.
        theirs: bool,
    },
    /// The peer's proof of identity did not verify: it lacks the secret, or claims an
    /// id it may not use, or replays an old handshake.
    AuthFailed,
    /// The peer did not accept this node's proof of identity.
    PeerRejectedAuth,
    /// The peer is shutting down.
    PeerShuttingDown,
    /// The peer refused the connection (one of its limits, or a protocol error it saw).
    PeerRefused,
    /// This node is shutting down.
    Shutdown,
    /// A limit of this node refused the connection (for an inbound handshake pushed
    /// out by a newer one, [`Limit::Handshakes`]).
    Limit(Limit),
    /// One side speaks TLS and the other plaintext (`ours`: whether this node speaks
    /// TLS).
    TlsMismatch {
        /// Whether this node speaks TLS.
        ours: bool,
    },
    /// The TLS handshake failed, or the peer's certificate does not name it.
    Tls(TlsError),
}

/// Why a TLS handshake failed (feature `tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsError {
    /// The peer's certificate has expired.
    CertificateExpired,
    /// The peer's certificate is not signed by a CA this node trusts.
    UnknownIssuer,
    /// The peer's certificate was refused for another reason (rustls's words).
    BadCertificate(String),
    /// The peer presented no certificate, or one the identity rule maps to no id.
    NoIdentity,
    /// The peer's certificate names another id than the one it announced.
    WrongIdentity {
        /// The id the peer announced in its hello.
        claimed: PeerId,
        /// The id its certificate carries.
        certified: PeerId,
    },
    /// The peer ended the handshake with this alert (it refused our certificate,
    /// for example).
    Alert(String),
    /// Any other TLS failure: a corrupt or forged record, a protocol error.
    Failed(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::CertificateExpired => f.write_str("the peer's certificate has expired"),
            TlsError::UnknownIssuer => {
                f.write_str("the peer's certificate is not signed by a trusted CA")
            }
            TlsError::BadCertificate(why) => write!(f, "bad peer certificate: {why}"),
            TlsError::NoIdentity => f.write_str("the peer's certificate names no wirelane id"),
            TlsError::WrongIdentity { claimed, certified } => write!(
                f,
                "the peer claims to be {claimed} but its certificate is {certified}'s"
            ),
            TlsError::Alert(alert) => write!(f, "the peer sent the alert {alert}"),
            TlsError::Failed(why) => write!(f, "tls: {why}"),
        }
    }
}

impl std::error::Error for TlsError {}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Timeout => f.write_str("timed out"),
            HandshakeError::Closed => f.write_str("peer closed the connection"),
            HandshakeError::Io(kind) => write!(f, "i/o error: {kind}"),
            HandshakeError::Protocol(e) => write!(f, "bad frame: {e}"),
            HandshakeError::BadMagic => f.write_str("not a wirelane peer (bad magic)"),
            HandshakeError::Version { ours, theirs } => {
                write!(f, "protocol version {theirs} is not ours ({ours})")
            }
            HandshakeError::SelfConnect => f.write_str("peer claims this node's own id"),
            HandshakeError::Duplicate(peer) => write!(f, "already connected to {peer}"),
            HandshakeError::AuthMismatch { ours, theirs } => write!(
                f,
                "authentication mismatch: this node {}, the peer {}",
                if *ours {
                    "authenticates"
                } else {
                    "does not authenticate"
                },
                if *theirs { "does" } else { "does not" }
            ),
            HandshakeError::AuthFailed => f.write_str("peer failed to authenticate"),
            HandshakeError::PeerRejectedAuth => {
                f.write_str("peer rejected this node's authentication")
            }
            HandshakeError::PeerShuttingDown => f.write_str("peer is shutting down"),
            HandshakeError::PeerRefused => f.write_str("peer refused the connection"),
            HandshakeError::Shutdown => f.write_str("node is shutting down"),
            HandshakeError::Limit(limit) => write!(f, "refused: {limit}"),
            HandshakeError::TlsMismatch { ours: true } => {
                f.write_str("this node speaks TLS and the peer does not")
            }
            HandshakeError::TlsMismatch { ours: false } => {
                f.write_str("the peer speaks TLS and this node does not")
            }
            // It says "tls" itself.
            HandshakeError::Tls(e @ TlsError::Failed(_)) => e.fmt(f),
            HandshakeError::Tls(e) => write!(f, "tls: {e}"),
        }
    }
}

/// As for [`Error`]: the message includes the inner error's, so `source` skips it.
impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandshakeError::Protocol(e) => e.source(),
            HandshakeError::Tls(e) => e.source(),
            _ => None,
        }
    }
}

impl From<FrameError> for HandshakeError {
    fn from(e: FrameError) -> Self {
        HandshakeError::Protocol(ProtocolError(e))
    }
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        if let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<TlsError>()) {
            return HandshakeError::Tls(tls.clone());
        }
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HandshakeError::Timeout,
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => HandshakeError::Closed,
            kind => HandshakeError::Io(kind),
        }
    }
}

/// Implements the parts every send error shares: `into_inner`, a `Debug` that does
/// not need `T: Debug`, a lowercase `Display`, and `std::error::Error`.
macro_rules! send_error {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl<T> $name<T> {
            /// Takes the message back out of the error.
            pub fn into_inner(self) -> T {
                match self {
                    $($name::$variant(msg) => msg,)+
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$variant(_) => f.write_str(concat!(stringify!($variant), "(..)")),)+
                }
            }
        }

        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$variant(_) => f.write_str($text),)+
                }
            }
        }

        impl<T> std::error::Error for $name<T> {}
    };
}

/// Why [`Node::send`](crate::Node::send) did not queue a private message. The message
/// comes back inside.
#[derive(PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum SendError<T> {
    /// No connection to this peer is registered.
    NotConnected(T),
    /// The connection closed before the message could be queued.
    Disconnected(T),
    /// The node shut down before the message could be queued.
    Shutdown(T),
    /// The payload is longer than the peer accepts (its announced frame limit).
    TooLarge(T),
}

send_error!(SendError {
    NotConnected => "peer is not connected",
    Disconnected => "connection closed",
    Shutdown => "node is shut down",
    TooLarge => "payload is larger than the peer's frame limit",
});

/// Why [`Node::try_send`](crate::Node::try_send) did not queue a gossip message. The
/// message comes back inside.
#[derive(PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum TrySendError<T> {
    /// The gossip lane is full: the message was dropped and counted.
    Full(T),
    /// No connection to this peer is registered.
    NotConnected(T),
    /// The connection is closing or closed.
    Disconnected(T),
    /// The node is shut down.
    Shutdown(T),
    /// The payload is longer than the peer accepts (its announced frame limit).
    TooLarge(T),
}

send_error!(TrySendError {
    Full => "gossip lane is full; message dropped",
    NotConnected => "peer is not connected",
    Disconnected => "connection closed",
    Shutdown => "node is shut down",
    TooLarge => "payload is larger than the peer's frame limit",
});

impl<T> TrySendError<T> {
    /// Whether the lane was full (the message was dropped and counted).
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(_))
    }
}

/// Why [`Node::send_timeout`](crate::Node::send_timeout) did not queue a private
/// message. The message comes back inside.
#[derive(PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum SendTimeoutError<T> {
    /// The private lane stayed full until the deadline.
    Timeout(T),
    /// No connection to this peer is registered.
    NotConnected(T),
    /// The connection closed before the message could be queued.
    Disconnected(T),
    /// The node shut down before the message could be queued.
    Shutdown(T),
    /// The payload is longer than the peer accepts (its announced frame limit).
    TooLarge(T),
}

send_error!(SendTimeoutError {
    Timeout => "timed out waiting for room on the private lane",
    NotConnected => "peer is not connected",
    Disconnected => "connection closed",
    Shutdown => "node is shut down",
    TooLarge => "payload is larger than the peer's frame limit",
});

impl<T> SendTimeoutError<T> {
    /// Whether the deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, SendTimeoutError::Timeout(_))
    }
}

impl<T> From<SendError<T>> for SendTimeoutError<T> {
    fn from(e: SendError<T>) -> Self {
        match e {
            SendError::NotConnected(m) => SendTimeoutError::NotConnected(m),
            SendError::Disconnected(m) => SendTimeoutError::Disconnected(m),
            SendError::Shutdown(m) => SendTimeoutError::Shutdown(m),
            SendError::TooLarge(m) => SendTimeoutError::TooLarge(m),
        }
    }
}

impl<T> From<SendError<T>> for TrySendError<T> {
    fn from(e: SendError<T>) -> Self {
        match e {
            SendError::NotConnected(m) => TrySendError::NotConnected(m),
            SendError::Disconnected(m) => TrySendError::Disconnected(m),
            SendError::Shutdown(m) => TrySendError::Shutdown(m),
            SendError::TooLarge(m) => TrySendError::TooLarge(m),
        }
    }
}

/// Why [`Node::request`](crate::Node::request) got no reply. The request's payload
/// comes back inside; with [`Timeout`](RequestError::Timeout),
/// [`Disconnected`](RequestError::Disconnected) and
/// [`Shutdown`](RequestError::Shutdown) the request may have reached the peer.
#[derive(PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum RequestError<T> {
    /// No reply before the deadline, which covers waiting for room on the lane and
    /// for a request slot as well as for the reply.
    Timeout(T),
    /// No connection to this peer is registered.
    NotConnected(T),
    /// The connection ended before the reply arrived.
    Disconnected(T),
    /// The node shut down before the reply arrived.
    Shutdown(T),
    /// The payload is longer than the peer accepts (its announced frame limit).
    TooLarge(T),
    /// The peer's application dropped the request without answering it.
    Unanswered(T),
}

send_error!(RequestError {
    Timeout => "no reply before the deadline",
    NotConnected => "peer is not connected",
    Disconnected => "connection closed before the reply",
    Shutdown => "node is shut down",
    TooLarge => "payload is larger than the peer's frame limit",
    Unanswered => "the peer dropped the request without answering",
});

impl<T> RequestError<T> {
    /// Whether the deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, RequestError::Timeout(_))
    }

    /// The same error without its payload.
    pub fn without_payload(&self) -> RequestError<()> {
        match self {
            RequestError::Timeout(_) => RequestError::Timeout(()),
            RequestError::NotConnected(_) => RequestError::NotConnected(()),
            RequestError::Disconnected(_) => RequestError::Disconnected(()),
            RequestError::Shutdown(_) => RequestError::Shutdown(()),
            RequestError::TooLarge(_) => RequestError::TooLarge(()),
            RequestError::Unanswered(_) => RequestError::Unanswered(()),
        }
    }
}

/// Why [`Node::respond`](crate::Node::respond) did not queue a reply. The reply comes
/// back inside.
#[derive(PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum RespondError<T> {
    /// The message is not a request (its lane is not [`Lane::Request`](crate::Lane::Request)).
    NotARequest(T),
    /// The request was answered already (by this message or a clone of it).
    AlreadyAnswered(T),
    /// The connection the request came on has ended: the requester has been told.
    Disconnected(T),
    /// The node shut down.
    Shutdown(T),
    /// The reply is longer than the requester accepts (its announced frame limit).
    TooLarge(T),
}

send_error!(RespondError {
    NotARequest => "the message is not a request",
    AlreadyAnswered => "the request was answered already",
    Disconnected => "connection closed",
    Shutdown => "node is shut down",
    TooLarge => "reply is larger than the peer's frame limit",
});

#[cfg(test)]
mod tests {
    use super::*;

    struct NotDebug;

    /// Every message of an error's chain, outermost first.
    fn chain(e: &dyn std::error::Error) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut next = e.source();
        while let Some(inner) = next {
            out.push(inner.to_string());
            next = inner.source();
        }
        out
    }

    #[test]
    fn a_printed_chain_names_each_cause_once() {
        let e = Error::Handshake(HandshakeError::Tls(TlsError::UnknownIssuer));
        let messages = chain(&e);
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(
            messages[0].contains("handshake failed: tls:"),
            "{messages:?}"
        );

        // An I/O error carrying an error of its own: its cause follows, once.
        let inner = io::Error::other(Error::Handshake(HandshakeError::Timeout));
        let messages = chain(&Error::Io(inner));
        assert_eq!(messages.len(), 1, "{messages:?}");
    }

    #[test]
    fn send_errors_hand_the_message_back_and_debug_without_t_debug() {
        let e = SendError::Disconnected(NotDebug);
        assert_eq!(format!("{e:?}"), "Disconnected(..)");
        assert_eq!(e.to_string(), "connection closed");
        let _back: NotDebug = e.into_inner();

        let e = TrySendError::Full(vec![1u8]);
        assert!(e.is_full());
        assert_eq!(e.into_inner(), vec![1u8]);

        let e: SendTimeoutError<u8> = SendError::Shutdown(3).into();
        assert!(!e.is_timeout());
        assert_eq!(e.into_inner(), 3);
    }

    #[test]
    fn errors_box_as_send_sync() {
        fn boxed<E: std::error::Error + Send + Sync + 'static>(
            e: E,
        ) -> Box<dyn std::error::Error + Send + Sync> {
            Box::new(e)
        }
        let _ = boxed(SendError::NotConnected(bytes::Bytes::new()));
        let _ = boxed(Error::Shutdown);
        let _ = boxed(HandshakeError::Timeout);
    }
}
