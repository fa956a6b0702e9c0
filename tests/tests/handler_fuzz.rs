//! The handler fuzzers' sequence drivers (`fuzz/fuzz_targets/*_sequence.rs`)
//! for a bounded number of random programs, so CI runs what the fuzzers
//! run: sequences of requests into the pager core (model runtime) and
//! mm-server's broker, with isolation, budgets, the model of the broker's
//! figures and the totals coming back checked by the drivers themselves.
//! Each property also has a wall-clock bound: a program that livelocks a
//! core fails here instead of hanging CI.

use std::time::{Duration, Instant};

use proptest::prelude::*;

/// The longest one program may run.
const PER_PROGRAM: Duration = Duration::from_secs(5);

fn bounded<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let out = f();
    assert!(
        t0.elapsed() < PER_PROGRAM,
        "{what} took {:?} (more than {PER_PROGRAM:?})",
        t0.elapsed()
    );
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn pager_core_sequences(program in proptest::collection::vec(any::<u8>(), 0..3000)) {
        bounded("a pager program", || pager::testing::sequence::run(&program));
    }

    #[test]
    fn broker_sequences(program in proptest::collection::vec(any::<u8>(), 0..1500)) {
        bounded("a broker program", || mm_server::sequence::run(&program));
    }
}

/// Random programs reach past the decoders: over many of them the pager
/// serves requests and refuses others, and the broker serves requests
/// (its refusals are in `mm_server::sequence`'s own test).
#[test]
fn random_programs_are_served_and_refused() {
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut program = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect()
    };
    let (mut pager, mut broker) = ((0, 0), (0, 0));
    for _ in 0..64 {
        let r = bounded("a pager program", || {
            pager::testing::sequence::run(&program(2000))
        });
        pager = (pager.0 + r.served, pager.1 + r.refused);
        let b = bounded("a broker program", || {
            mm_server::sequence::run(&program(600))
        });
        broker = (broker.0 + b.served, broker.1 + b.refused);
    }
    assert!(pager.0 > 0 && pager.1 > 0, "pager served/refused {pager:?}");
    assert!(broker.0 > 0, "broker served/refused {broker:?}");
}
