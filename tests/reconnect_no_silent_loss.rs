//! No private message vanishes across a chain of reconnections: each one `send`
//! accepted is delivered to the peer's application exactly once, or comes back to the
//! sender in `Event::Undelivered`, or is counted as dropped on the receiving side
//! (`recv_dropped`). Regression test: a replacement connection that outlived its
//! linger waiting for its predecessor threw away the frames it had just read, with
//! no count and no hand-back — 101–110 disappeared.

mod util;

use std::collections::BTreeMap;

#[test]
fn every_accepted_message_is_delivered_handed_back_or_counted_as_dropped() {
    let chain = util::chain::run();

    // Nothing arrives twice, and nothing the sender got back (or never queued)
    // arrives at all.
    let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
    for &seq in chain.delivered.iter().chain(&chain.undelivered) {
        *seen.entry(seq).or_default() += 1;
    }
    let twice: Vec<u32> = seen
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(&s, _)| s)
        .collect();
    assert!(
        twice.is_empty(),
        "delivered or handed back twice: {twice:?}"
    );
    let refused_yet_seen: Vec<u32> = chain
        .refused
        .iter()
        .copied()
        .filter(|s| seen.contains_key(s))
        .collect();
    assert!(
        refused_yet_seen.is_empty(),
        "refused by send, yet delivered or handed back: {refused_yet_seen:?}"
    );

    // The rest is accounted for by B's drop counter, and nothing else.
    let missing: Vec<u32> = chain
        .accepted
        .iter()
        .copied()
        .filter(|s| !seen.contains_key(s))
        .collect();
    assert_eq!(
        missing.len() as u64,
        chain.recv_dropped,
        "{} accepted messages were neither delivered nor handed back, and B counted {} \
         dropped; missing: {missing:?}",
        missing.len(),
        chain.recv_dropped
    );
    assert_eq!(
        chain.delivered.len() + chain.undelivered.len() + chain.recv_dropped as usize,
        chain.accepted.len()
    );
}
