//! Requests and replies, from the application's side: [`Node::request`],
//! [`Node::respond`] and [`Node::request_many`]. The machinery is per connection, in
//! [`crate::conn::request`].

use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Select;

use super::Node;
use crate::conn::request::{Answer, Ticket};
use crate::error::{RequestError, RespondError};
use crate::event::Message;
use crate::id::PeerId;

impl Node {
    /// Sends a request to `peer` and waits for its reply.
    ///
    /// The request travels like a private message — in the private lane's order,
    /// never dropped — and arrives on the peer's [`incoming`](Node::incoming) with
    /// [`Lane::Request`](crate::Lane::Request), to be answered with
    /// [`respond`](Node::respond). `timeout` covers the whole call: waiting for room
    /// on the lane, for one of the connection's request slots (at most 128 requests
    /// are in flight per connection), and for the reply. No lock is held while it
    /// waits.
    ///
    /// # Errors
    ///
    /// Exactly one outcome per request: the reply, or a [`RequestError`] with the
    /// payload — the deadline passed, the connection ended (every request waiting
    /// on it fails at once), the peer dropped the request unanswered (told at once),
    /// the node shut down, the peer is not connected, or the payload is over the
    /// peer's frame limit. A reply that arrives after a timeout is dropped and
    /// counted in [`RequestStats::late_replies`](crate::RequestStats::late_replies).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use wirelane::{Config, Lane, Node, PeerId};
    ///
    /// let a = Node::bind(PeerId(1), "127.0.0.1:0", Config::default())?;
    /// let b = Node::bind(PeerId(2), "127.0.0.1:0", Config::default())?;
    /// let peer = a.connect(b.local_addr())?;
    ///
    /// std::thread::scope(|s| {
    ///     // The responder: answering never waits, so it may run on the receive loop.
    ///     s.spawn(|| {
    ///         let m = b.incoming().recv_timeout(Duration::from_secs(10)).unwrap();
    ///         assert_eq!(m.lane, Lane::Request);
    ///         b.respond(&m, b"x = 1".to_vec()).unwrap();
    ///     });
    ///     let reply = a.request(peer, b"get x".to_vec(), Duration::from_secs(10)).unwrap();
    ///     assert_eq!(&reply[..], b"x = 1");
    /// });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn request(
        &self,
        peer: PeerId,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Bytes, RequestError<Bytes>> {
        let payload = payload.into();
        let deadline = Instant::now().checked_add(timeout);
        let ticket = self.start_request(peer, payload, deadline)?;
        ticket.wait(deadline)
    }

    /// Answers a request received on [`incoming`](Node::incoming). Never waits for
    /// the peer: room for the reply was reserved when the request was delivered, so
    /// it is safe to call from the loop that reads `incoming`.
    ///
    /// A request is answered once: a clone of its message shares the answer. Drop
    /// every clone without answering and the requester is told
    /// ([`RequestError::Unanswered`]).
    ///
    /// # Errors
    ///
    /// Hands the reply back if the message is not a request, the request was
    /// answered already, its connection has ended (its requester has been told),
    /// the node shut down, or the reply is over the requester's frame limit.
    pub fn respond(
        &self,
        request: &Message,
        payload: impl Into<Bytes>,
    ) -> Result<(), RespondError<Bytes>> {
        let payload = payload.into();
        match &request.request {
            Some(inquiry) => inquiry.respond(payload),
            None => Err(RespondError::NotARequest(payload)),
        }
    }

    /// Sends the same request to every peer in `peers` and returns once
    /// `min_replies` of them have replied, or all have answered one way or another,
    /// or `timeout` has passed — like Fabric's `SendWithAck` with its minimum ack
    /// count. The payload buffer is shared, not copied.
    ///
    /// The requests are queued in turn; a peer whose private lane is full delays
    /// the requests to the peers after it (within the deadline). Requests still
    /// unanswered when it returns early are abandoned: their outcome is
    /// [`Outcome::Pending`] and a reply that comes later is dropped and counted
    /// late.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use wirelane::{Config, Node, PeerId};
    ///
    /// let a = Node::bind(PeerId(1), "127.0.0.1:0", Config::default())?;
    /// let b = Node::bind(PeerId(2), "127.0.0.1:0", Config::default())?;
    /// let peer = a.connect(b.local_addr())?;
    ///
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         let m = b.incoming().recv_timeout(Duration::from_secs(10)).unwrap();
    ///         b.respond(&m, b"ack".to_vec()).unwrap();
    ///     });
    ///     // PeerId(9) is not connected: its outcome is a failure, counted apart.
    ///     let replies = a.request_many(&[peer, PeerId(9)], b"block 7".to_vec(), 1, Duration::from_secs(10));
    ///     assert_eq!((replies.succeeded(), replies.failed()), (1, 1));
    /// });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn request_many(
        &self,
        peers: &[PeerId],
        payload: impl Into<Bytes>,
        min_replies: usize,
        timeout: Duration,
    ) -> Replies {
        let payload = payload.into();
        let deadline = Instant::now().checked_add(timeout);
        let mut outcomes: Vec<(PeerId, Outcome)> =
            peers.iter().map(|&p| (p, Outcome::Pending)).collect();
        let mut tickets = Vec::with_capacity(peers.len());
        for (i, &peer) in peers.iter().enumerate() {
            match self.start_request(peer, payload.clone(), deadline) {
                Ok(ticket) => tickets.push((i, ticket)),
                Err(e) => outcomes[i].1 = Outcome::Failed(e.without_payload()),
            }
        }
        let mut succeeded = 0;
        let mut timed_out = false;
        while !tickets.is_empty() && succeeded < min_replies {
            let Some((k, answer)) = next_answer(&tickets, deadline) else {
                timed_out = true;
                break;
            };
            let (i, ticket) = tickets.swap_remove(k);
            let result = match answer {
                Some(answer) => ticket.settle(answer),
                None => ticket.give_up(false),
            };
            succeeded += usize::from(result.is_ok());
            outcomes[i].1 = Outcome::from(result);
        }
        for (i, ticket) in tickets {
            if timed_out {
                outcomes[i].1 = Outcome::from(ticket.give_up(true));
            } else {
                ticket.abandon();
            }
        }
        Replies { outcomes }
    }

    /// Finds the peer's connection and queues a request on it.
    fn start_request(
        &self,
        peer: PeerId,
        payload: Bytes,
        deadline: Option<Instant>,
    ) -> Result<Ticket, RequestError<Bytes>> {
        match self.shared.table.get(peer) {
            // The link is dropped before the reply is waited for: a `Link` held
            // keeps the writer's final drain waiting.
            Some(link) => link.start_request(payload, deadline),
            None if self.shared.is_shut() => Err(RequestError::Shutdown(payload)),
            None => Err(RequestError::NotConnected(payload)),
        }
    }
}

/// Waits for the first of `tickets` to be answered or to lose its connection.
/// Returns its index and its answer (`None` for the close), or `None` at the
/// deadline.
fn next_answer(
    tickets: &[(usize, Ticket)],
    deadline: Option<Instant>,
) -> Option<(usize, Option<Option<Answer>>)> {
    let mut sel = Select::new();
    for (_, ticket) in tickets {
        sel.recv(ticket.answer());
        sel.recv(ticket.closed());
    }
    let oper = match deadline {
        None => sel.select(),
        Some(deadline) => sel.select_deadline(deadline).ok()?,
    };
    let index = oper.index();
    let ticket = &tickets[index / 2].1;
    if index % 2 == 0 {
        Some((index / 2, Some(oper.recv(ticket.answer()).ok())))
    } else {
        let _ = oper.recv(ticket.closed());
        Some((index / 2, None))
    }
}

/// What one peer of a [`Node::request_many`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The peer's reply.
    Replied(Bytes),
    /// No reply, and why.
    Failed(RequestError<()>),
    /// Still unanswered when enough others had replied; abandoned.
    Pending,
}

impl Outcome {
    /// Whether the peer replied.
    pub fn is_replied(&self) -> bool {
        matches!(self, Outcome::Replied(_))
    }
}

impl From<Result<Bytes, RequestError<Bytes>>> for Outcome {
    fn from(result: Result<Bytes, RequestError<Bytes>>) -> Outcome {
        match result {
            Ok(reply) => Outcome::Replied(reply),
            Err(e) => Outcome::Failed(e.without_payload()),
        }
    }
}

/// The outcomes of a [`Node::request_many`], one per peer asked, in the order the
/// peers were given: like Fabric's ack and nack counts, with the replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replies {
    outcomes: Vec<(PeerId, Outcome)>,
}

impl Replies {
    /// Peers that replied.
    pub fn succeeded(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Replied(_)))
    }

    /// Peers whose request failed (no connection, timeout, closed, unanswered...).
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }

    /// Peers still unanswered when enough others had replied.
    pub fn pending(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Pending))
    }

    /// The outcome for `peer`, if it was asked (the first, if it was asked twice).
    pub fn get(&self, peer: PeerId) -> Option<&Outcome> {
        self.outcomes
            .iter()
            .find(|(p, _)| *p == peer)
            .map(|(_, o)| o)
    }

    /// Every peer's outcome, in the order the peers were given.
    pub fn iter(&self) -> impl Iterator<Item = &(PeerId, Outcome)> {
        self.outcomes.iter()
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes.iter().filter(|(_, o)| f(o)).count()
    }
}

impl IntoIterator for Replies {
    type Item = (PeerId, Outcome);
    type IntoIter = std::vec::IntoIter<(PeerId, Outcome)>;

    fn into_iter(self) -> Self::IntoIter {
        self.outcomes.into_iter()
    }
}
