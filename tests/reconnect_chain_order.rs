//! A peer's private messages keep their order across a chain of reconnections, not
//! only across one: while the first connection is still delivering its backlog, a
//! second and a third connection from the same peer must each wait for every
//! connection before them, however long that takes. Regression test: the third
//! connection waited only for the second, and that one only within its own linger,
//! so B received 111–120 in the middle of 38–47.

mod util;

#[test]
fn messages_from_a_chain_of_reconnections_arrive_in_the_order_they_were_sent() {
    let chain = util::chain::run();
    assert!(
        !chain.delivered.is_empty(),
        "B received nothing from A at all"
    );
    for pair in chain.delivered.windows(2) {
        assert!(
            pair[0] < pair[1],
            "B received {} after {}; everything B received: {:?}",
            pair[1],
            pair[0],
            chain.delivered
        );
    }
}
