//! Driving a connection whose writer thread is idle, so that a send is written by
//! the sending thread itself (`PeerStats::written_by_senders`).

use wirelane::{Node, PeerId};

use super::wait_until;

/// Sends tiny gossip messages (tagged `b'g'`, numbered from 0), each once the one
/// before has been written, until one is written by the sending thread — which
/// shows that `to`'s writer is parked and lending its turn; returns how many were
/// sent. Nothing wakes that writer afterwards unless the caller or the peer does
/// something, so the next send finds the turn free. Fails after the guard
/// deadline.
#[track_caller]
pub fn until_written_by_sender(node: &Node, to: PeerId) -> u32 {
    let stats = || node.peer_stats(to).expect("connected");
    let before = stats().written_by_senders;
    let mut sent = 0;
    wait_until("a send is written by its own thread", || {
        let now = stats();
        if now.written_by_senders > before {
            return true;
        }
        // One at a time, so that a writer still starting up never finds the lane
        // full.
        if now.gossip.queued == 0 {
            node.try_send(to, super::tagged(b'g', sent, 8))
                .expect("gossip to an idle peer");
            sent += 1;
        }
        false
    });
    sent
}
