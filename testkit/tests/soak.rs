//! The soak: hundreds of seeds of the mixed-fault scenario, each checked
//! against every invariant; and the determinism check.
//!
//! `BREAKWATER_SEED=<n>` replays one seed; `BREAKWATER_TAPE=<file>` replays
//! a (shrunk) tape; `BREAKWATER_SOAK_SEEDS=<count>` runs a longer sweep (the
//! README's 10,000-seed soak).

use std::collections::BTreeMap;

use breakwater_testkit::swarm::{check_determinism, run_seed, run_tape, FaultMix};
use breakwater_testkit::{Choices, Tape, SEED_VAR, TAPE_VAR};

#[test]
fn soak_mixed_faults_across_seeds() {
    if let Some(path) = std::env::var_os(TAPE_VAR) {
        let tape = Tape::load(path.as_ref()).expect("a tape file");
        println!("soak: tape {}", path.to_string_lossy());
        let report = run_tape(&tape);
        println!("fault mix: {:?}", report.faults);
        report.assert_clean();
        return;
    }
    let seeds: Vec<u64> = match std::env::var(SEED_VAR).ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => {
            let count = std::env::var("BREAKWATER_SOAK_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(500);
            (1..=count).collect()
        }
    };
    let started = std::time::Instant::now();
    let mut reached: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut calls = 0;
    // A replayed seed is named before it runs, so that a hang or a crash (seen
    // with --nocapture) says which one; a failing seed of a sweep names itself.
    for &seed in &seeds {
        if seeds.len() == 1 {
            println!("soak: seed {seed}");
        }
        let report = run_seed(seed);
        report.assert_clean();
        calls += report.calls;
        for probe in report.probes {
            *reached.entry(probe).or_default() += 1;
        }
    }
    println!(
        "soak: seeds {}..={} ({} seeds), {calls} calls, clean, in {:?} of wall time",
        seeds.first().copied().unwrap_or_default(),
        seeds.last().copied().unwrap_or_default(),
        seeds.len(),
        started.elapsed()
    );
    for probe in breakwater_testkit::swarm::PROBES {
        let count = reached.get(probe).copied().unwrap_or(0);
        println!("  probe {probe:<32} reached by {count} seeds");
    }
    let unknown: Vec<_> = reached
        .keys()
        .filter(|p| !breakwater_testkit::swarm::PROBES.contains(p))
        .collect();
    assert!(
        unknown.is_empty(),
        "probes missing from PROBES: {unknown:?}"
    );
    if seeds.len() >= 100 {
        for probe in [
            "breaker opened",
            "request retried",
            "call cancelled",
            "circuit open error",
            "rate limited error",
            "retry budget exhausted",
            "pool exhausted error",
            "upload reset after its head",
            "long body read",
        ] {
            assert!(
                reached.contains_key(probe),
                "no seed reached `{probe}`: the sweep is blind there"
            );
        }
    }
    // Rarer: a handful of seeds in 500 reach it.
    if seeds.len() >= 500 {
        assert!(
            reached.contains_key("call cancelled while half-open"),
            "no seed reached `call cancelled while half-open`: the sweep is blind there"
        );
    }
}

#[test]
fn determinism_check_compares_every_event_of_two_runs() {
    for seed in [3, 31, 4242] {
        if let Err(divergence) = check_determinism(seed) {
            panic!("seed {seed} is not deterministic: {divergence:?}");
        }
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    for seed in [7, 99, 12345] {
        let first = run_seed(seed);
        let second = run_seed(seed);
        assert_eq!(
            first.trace_hash, second.trace_hash,
            "seed {seed}: traces differ"
        );
        assert_eq!(
            first.outcomes, second.outcomes,
            "seed {seed}: outcomes differ"
        );
        assert_eq!(first.faults, second.faults);
    }
    // And different seeds make different runs.
    assert_ne!(run_seed(1).trace_hash, run_seed(2).trace_hash);
}

#[test]
fn a_run_replayed_from_its_tape_is_the_same_run() {
    for seed in [5, 77, 2024] {
        let seeded = run_seed(seed);
        let replayed = run_tape(&seeded.tape);
        assert_eq!(seeded.trace_hash, replayed.trace_hash, "seed {seed}");
        assert_eq!(seeded.outcomes, replayed.outcomes, "seed {seed}");
        assert_eq!(seeded.faults, replayed.faults, "seed {seed}");
        assert_eq!(replayed.tape, seeded.tape, "seed {seed}");
        // Every component's choices are on it.
        let streams: Vec<&str> = seeded.tape.streams().map(|(name, _)| name).collect();
        assert_eq!(
            streams,
            [
                "client",
                "faults",
                "scheduler",
                "server api.test:443",
                "workload"
            ],
            "seed {seed}"
        );
    }
}

#[test]
fn an_empty_tape_is_the_calmest_run() {
    let calm = run_tape(&Tape::default());
    assert_eq!(
        calm.faults,
        FaultMix::draw(&mut Choices::replaying(Vec::new()))
    );
    assert_eq!(calm.faults.p_503, 0.0);
    assert_eq!(calm.faults.outage, None);
    assert!(calm.violations.is_empty(), "{:?}", calm.violations);
    assert!(
        calm.outcomes.iter().all(|o| o == "Get status 200"),
        "{:?}",
        calm.outcomes
    );
    // Every call drew "GET, at 0 ms, not cancelled": nothing was recorded but zeros.
    assert!(calm.tape.is_empty(), "{:?}", calm.tape.to_text());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Any byte string drives a run (every stream reads it), as a fuzzer's
    /// input would, and every invariant still holds.
    #[test]
    fn any_byte_string_drives_a_clean_run(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
    ) {
        let report = run_tape(&Tape::uniform(&bytes));
        proptest::prop_assert!(report.violations.is_empty(), "{:?}", report.violations);
        proptest::prop_assert_eq!(report.seed, None);
    }
}
