//! The operation-sequence harness as a property test, and a check that it reaches the
//! interesting paths.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Stats, operations, run};

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_operation_sequences_keep_the_invariants(data in prop::collection::vec(any::<u8>(), 0..600)) {
        operations(&data);
    }
}

#[test]
fn the_harness_reaches_every_outcome() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let mut total = Stats::new();
    for _ in 0..1500 {
        let len = (rng.next_u32() % 800) as usize;
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        for (kind, n) in run(&data) {
            *total.entry(kind).or_insert(0) += n;
        }
    }
    let expected = [
        "Dial",
        "Close Shutdown",
        "Close Duplicate",
        "Close Idle",
        "Close PingTimeout",
        "Close Unauthorized",
        "Close Replaced",
        "Close Removed",
        "Close UnexpectedPeer",
        "Drain",
        "SendPing",
        "PeerConnected",
        "PeerDisconnected",
        "ConnectionReplaced",
        "DialSucceeded",
        "DialFailed",
        "dial connected",
        "refused total",
        "refused inbound",
        "refused outbound",
        "refused pending",
        "refused per ip",
        "refused shutting down",
        "refused local peer",
    ];
    let missing: Vec<_> = expected.iter().filter(|k| !total.contains_key(*k)).collect();
    assert!(missing.is_empty(), "never reached: {missing:?}\n{total:#?}");
}

#[test]
fn empty_and_tiny_inputs_are_fine() {
    operations(&[]);
    operations(&[0]);
    operations(&[0xff, 0xff, 0xff]);
    operations(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
}
