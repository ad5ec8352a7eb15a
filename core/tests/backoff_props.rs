//! Property tests of the backoff policy (invariants `delay-bounds` and `no-atom-at-floor` of
//! docs/spec/invariants.md).
//!
//! The bounds are recomputed here in 128-bit arithmetic from the formulas of
//! docs/spec/backoff.md, so a saturation or overflow mistake in the policy's 64-bit code shows
//! up as a disagreement.

use std::time::Duration;

use breakwater_core::policy::backoff::{clip_to_deadline, BackoffPolicy, BackoffStrategy};
use proptest::prelude::*;

const STRATEGIES: [BackoffStrategy; 5] = [
    BackoffStrategy::FlooredExponential,
    BackoffStrategy::FullJitter,
    BackoffStrategy::EqualJitter,
    BackoffStrategy::DecorrelatedJitter,
    BackoffStrategy::Envelope,
];

fn nanos(d: Duration) -> u128 {
    d.as_nanos()
}

/// Durations from zero to "absurdly long", biased toward the realistic range.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        4 => (0u64..120_000).prop_map(Duration::from_millis),
        1 => any::<u64>().prop_map(Duration::from_nanos),
        1 => Just(Duration::ZERO),
        1 => Just(Duration::MAX),
    ]
}

fn retry() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..12, 1 => 12u32..200, 1 => any::<u32>()]
}

fn strategy() -> impl Strategy<Value = BackoffStrategy> {
    prop::sample::select(STRATEGIES.to_vec())
}

fn policy() -> impl Strategy<Value = BackoffPolicy> {
    (
        strategy(),
        prop_oneof![3 => Just(Duration::from_secs(30)), 1 => duration()],
        any::<bool>(),
        prop_oneof![3 => Just(Duration::from_secs(1)), 1 => duration()],
        (duration(), duration()),
        (duration(), duration()),
    )
        .prop_map(
            |(strategy, cap, adaptive, base_floor, (min_floor, max_floor), (eb, emax))| {
                BackoffPolicy::default()
                    .with_strategy(strategy)
                    .with_cap(cap)
                    .with_adaptive_floor(adaptive)
                    .with_base_floor(base_floor)
                    .with_floor_bounds(min_floor, max_floor)
                    .with_envelope_base(eb)
                    .with_envelope_max_delay(emax)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The default strategy: delay ∈ [min(f·2^n, cap), min(f·2^n + f, cap)], with f the p95
    /// clamped to [0.5 s, 5 s] or 1 s without an estimate.
    #[test]
    fn default_delay_is_within_the_floored_exponential_band(
        retry in retry(),
        p95 in proptest::option::of(duration()),
        seed in any::<u64>(),
    ) {
        let policy = BackoffPolicy::default();
        let mut rng = fastrand::Rng::with_seed(seed);
        let floor = match p95 {
            Some(p95) => nanos(p95).clamp(500_000_000, 5_000_000_000),
            None => 1_000_000_000,
        };
        prop_assert_eq!(nanos(policy.floor(p95)), floor);
        let cap = 30_000_000_000u128;
        let scaled = if retry >= 64 { u128::MAX } else { floor << retry };
        let low = scaled.min(cap);
        let high = scaled.saturating_add(floor).min(cap);
        let delay = nanos(policy.delay(retry, p95, None, &mut rng));
        prop_assert!(low <= delay && delay <= high, "{} not in [{}, {}]", delay, low, high);
        prop_assert_eq!(nanos(policy.earliest_delay(retry, p95)), low);
    }

    /// `delay-bounds`: every strategy, under any configuration, stays in [earliest_delay, cap], and
    /// the floor never exceeds the cap. Nothing panics or overflows for any retry count.
    #[test]
    fn every_strategy_stays_between_its_earliest_delay_and_the_cap(
        policy in policy(),
        retry in retry(),
        p95 in proptest::option::of(duration()),
        previous in proptest::option::of(duration()),
        seed in any::<u64>(),
    ) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let delay = policy.delay(retry, p95, previous, &mut rng);
        prop_assert!(delay <= policy.cap());
        prop_assert!(policy.floor(p95) <= policy.cap());
        prop_assert!(delay >= policy.earliest_delay(retry, p95));
    }

    /// `delay-bounds` for the envelope with its own defaults: F ≤ d ≤ max_delay, with
    /// F = min(p95, max_delay / 2) or 0 without an estimate, and d ≤ F + E_n.
    #[test]
    fn envelope_delay_is_between_the_floor_and_max_delay(
        retry in retry(),
        p95 in proptest::option::of(duration()),
        seed in any::<u64>(),
    ) {
        let policy = BackoffPolicy::default().with_strategy(BackoffStrategy::Envelope);
        let mut rng = fastrand::Rng::with_seed(seed);
        let max_delay = 5_000_000_000u128;
        let floor = p95.map_or(0, |p| nanos(p).min(max_delay / 2));
        prop_assert_eq!(nanos(policy.floor(p95)), floor);
        let envelope = if retry >= 64 { u128::MAX } else { 100_000_000u128 << retry };
        let delay = nanos(policy.delay(retry, p95, None, &mut rng));
        prop_assert!(floor <= delay && delay <= max_delay);
        prop_assert!(delay <= floor.saturating_add(envelope));
    }

    /// `delay-bounds` with Retry-After: RA ≤ d and d ≤ max(1.5·RA, delay); the drawn delay is never
    /// shortened.
    #[test]
    fn retry_after_is_a_lower_bound_with_an_upward_band(
        delay in duration(),
        retry_after in duration(),
        seed in any::<u64>(),
    ) {
        let policy = BackoffPolicy::default();
        let mut rng = fastrand::Rng::with_seed(seed);
        let result = policy.apply_retry_after(delay, retry_after, &mut rng);
        // Retry-After beyond u64 nanoseconds saturates; compare against the saturated value.
        let ra = nanos(retry_after).min(u128::from(u64::MAX));
        let d = nanos(delay);
        let r = nanos(result);
        prop_assert!(r >= ra && r >= d);
        prop_assert!(r <= (ra + ra / 2).min(u128::from(u64::MAX)).max(d));
    }

    /// `delay-bounds`, deadline clipping: clipping returns a delay in [earliest, latest] that is
    /// never longer than the drawn one (unless the drawn one was below earliest), or `None` exactly
    /// when earliest > latest.
    #[test]
    fn clipping_never_goes_below_the_earliest_delay(
        delay in duration(),
        earliest in duration(),
        latest in duration(),
    ) {
        match clip_to_deadline(delay, earliest, latest) {
            None => prop_assert!(earliest > latest),
            Some(clipped) => {
                prop_assert!(earliest <= clipped && clipped <= latest);
                prop_assert!(clipped <= delay.max(earliest));
                if earliest <= delay && delay <= latest {
                    prop_assert_eq!(clipped, delay);
                }
            }
        }
    }

    /// Determinism: the same seed gives the same sequence of delays, for every strategy,
    /// including Retry-After banding and decorrelated jitter's chaining.
    #[test]
    fn same_seed_same_delays(
        policy in policy(),
        p95 in proptest::option::of(duration()),
        retry_after in duration(),
        seed in any::<u64>(),
    ) {
        let run = |rng: &mut fastrand::Rng| {
            let mut previous = None;
            let mut delays = Vec::new();
            for retry in 0..8 {
                let delay = policy.delay(retry, p95, previous, rng);
                delays.push(policy.apply_retry_after(delay, retry_after, rng));
                previous = Some(delay);
            }
            delays
        };
        let first = run(&mut fastrand::Rng::with_seed(seed));
        let second = run(&mut fastrand::Rng::with_seed(seed));
        prop_assert_eq!(first, second);
    }
}

/// `no-atom-at-floor`. With F = 200 ms and retry 3, the envelope's jitter range is
/// R = min(E_3, max_delay − F) = 800 ms; across 10⁵ seeded draws the fraction in [F, F + 1 ms]
/// must be near 1 ms / R = 0.125 % (expected 125 draws, standard deviation ≈ 11). A clamp-based
/// implementation, max(F, U(0, E)), would put F / E = 25 % there.
#[test]
fn envelope_has_no_atom_at_the_floor() {
    let policy = BackoffPolicy::default().with_strategy(BackoffStrategy::Envelope);
    let p95 = Some(Duration::from_millis(200));
    let floor = policy.floor(p95);
    assert_eq!(floor, Duration::from_millis(200));
    let mut rng = fastrand::Rng::with_seed(919);
    let draws = 100_000;
    let near_floor = (0..draws)
        .map(|_| policy.delay(3, p95, None, &mut rng))
        .filter(|&d| d >= floor && d <= floor + Duration::from_millis(1))
        .count();
    println!("envelope: {near_floor} of {draws} draws within 1 ms of the floor (expected ≈125)");
    assert!(
        (60..=250).contains(&near_floor),
        "{near_floor} of {draws} draws within 1 ms of the floor"
    );
}

/// The same check for the default strategy: F = 800 ms, retry 0, R = F.
#[test]
fn default_strategy_has_no_atom_at_the_floor() {
    let policy = BackoffPolicy::default();
    let p95 = Some(Duration::from_millis(800));
    let floor = policy.floor(p95);
    let mut rng = fastrand::Rng::with_seed(9192);
    let draws = 100_000;
    let near_floor = (0..draws)
        .map(|_| policy.delay(0, p95, None, &mut rng))
        .filter(|&d| d <= floor + Duration::from_millis(1))
        .count();
    // Expected 10⁵ / 800 = 125.
    assert!(
        (60..=250).contains(&near_floor),
        "{near_floor} of {draws} draws within 1 ms of the floor"
    );
}

/// `no-atom-at-floor`, synchronised failures, AWS-simulation style: 1000 clients fail at the same
/// instant and draw their first retry; no 1 ms bucket may receive more than 10 of them (a uniform
/// spread over 1000 buckets gives a maximum of about 5–7). Checked for every strategy with a p95 of
/// 1 s, so the spread is 1 s for the default and at least 100 ms for the rest.
#[test]
fn synchronised_clients_do_not_retry_together() {
    let p95 = Some(Duration::from_secs(1));
    for strategy in STRATEGIES {
        let policy = BackoffPolicy::default().with_strategy(strategy);
        let mut rng = fastrand::Rng::with_seed(1000);
        let mut buckets = std::collections::BTreeMap::<u128, u32>::new();
        for _ in 0..1000 {
            // Retry 3, so the envelope's range (E_3 = 800 ms) is not its narrow first step.
            let delay = policy.delay(3, p95, None, &mut rng);
            *buckets.entry(delay.as_millis()).or_default() += 1;
        }
        let busiest = buckets.values().copied().max().unwrap_or(0);
        assert!(
            busiest <= 10,
            "{strategy:?}: {busiest} retries in one 1 ms bucket"
        );
    }
}
