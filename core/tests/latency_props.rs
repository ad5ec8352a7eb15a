//! Property tests of the latency window (invariants `exact-quantiles` and
//! `old-samples-forgotten` of docs/spec/invariants.md).
//!
//! Oracle: a plain vector of every `(instant, sample)` ever recorded. At a query it keeps the
//! last `capacity` entries, drops those older than `max_age`, sorts the values and reads the
//! nearest rank. The window must agree exactly, and say `None` below `min_samples`.

use std::time::Duration;

use breakwater_core::policy::latency::{LatencyConfig, LatencyWindow};
use breakwater_core::Instant;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    /// Move the clock forward by this many milliseconds.
    Advance(u64),
    /// Record a sample of this many microseconds (small range so ties are common).
    Record(u64),
    /// Ask for this quantile, in per-mille.
    Query(u32),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => prop_oneof![0..50u64, 0..5_000u64, 0..70_000u64].prop_map(Step::Advance),
        5 => prop_oneof![0..20u64, 0..10_000_000u64].prop_map(Step::Record),
        2 => prop_oneof![Just(950u32), Just(500u32), 0..=1200u32].prop_map(Step::Query),
    ]
}

struct Oracle {
    recorded: Vec<(u64, u64)>,
    capacity: usize,
    max_age_nanos: u64,
    min_samples: usize,
}

impl Oracle {
    fn live(&self, now: u64) -> Vec<u64> {
        let start = self.recorded.len().saturating_sub(self.capacity);
        let mut live: Vec<u64> = self.recorded[start..]
            .iter()
            .filter(|&&(at, _)| now - at <= self.max_age_nanos)
            .map(|&(_, value)| value)
            .collect();
        live.sort_unstable();
        live
    }

    fn quantile(&self, now: u64, per_mille: u32) -> Option<Duration> {
        let live = self.live(now);
        if live.len() < self.min_samples {
            return None;
        }
        // Smallest s with at least ⌈q·n⌉ samples ≤ s, found by the definition itself.
        let needed = ((u64::from(per_mille.min(1000)) * live.len() as u64).div_ceil(1000)).max(1);
        live.iter()
            .copied()
            .find(|&s| live.iter().filter(|&&x| x <= s).count() as u64 >= needed)
            .map(Duration::from_nanos)
    }
}

fn config() -> impl Strategy<Value = LatencyConfig> {
    (1usize..80, 1u64..120, 1usize..30).prop_map(|(capacity, max_age_s, min_samples)| {
        LatencyConfig::default()
            .with_capacity(capacity)
            .with_max_age(Duration::from_secs(max_age_s))
            .with_min_samples(min_samples)
    })
}

fn run(config: LatencyConfig, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut window = LatencyWindow::new(config.clone());
    let mut oracle = Oracle {
        recorded: Vec::new(),
        capacity: config.capacity(),
        max_age_nanos: config.max_age().as_nanos() as u64,
        min_samples: config.min_samples(),
    };
    let mut now = Instant::ZERO;
    for step in steps {
        match step {
            Step::Advance(ms) => now += Duration::from_millis(ms),
            Step::Record(us) => {
                window.record(now, Duration::from_micros(us));
                oracle.recorded.push((now.as_nanos(), us * 1_000));
            }
            Step::Query(per_mille) => {
                let expected = oracle.quantile(now.as_nanos(), per_mille);
                prop_assert_eq!(window.quantile(now, per_mille), expected);
            }
        }
        // After every step, the conveniences and the live count agree with the oracle too.
        let n = now.as_nanos();
        prop_assert_eq!(window.len(now), oracle.live(n).len());
        prop_assert_eq!(window.p95(now), oracle.quantile(n, 950));
        prop_assert_eq!(window.p50(now), oracle.quantile(n, 500));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// `exact-quantiles` (exact, no bucket error) and `old-samples-forgotten` (age and
    /// minimum-sample rules).
    #[test]
    fn quantiles_equal_the_sorted_vector_oracle(
        config in config(),
        steps in prop::collection::vec(step(), 0..300),
    ) {
        run(config, steps)?;
    }

    /// The default configuration (50 samples, 60 s, 10 minimum) under the same oracle.
    #[test]
    fn default_window_equals_the_oracle(steps in prop::collection::vec(step(), 0..300)) {
        run(LatencyConfig::default(), steps)?;
    }

    /// `old-samples-forgotten`: once every sample is older than max_age there is no estimate at
    /// all, however large or numerous the old samples were.
    #[test]
    fn old_samples_never_influence(
        old in prop::collection::vec(0u64..u64::from(u32::MAX), 10..60),
        gap_ms in 60_001u64..200_000,
    ) {
        let mut window = LatencyWindow::default();
        for &us in &old {
            window.record(Instant::ZERO, Duration::from_micros(us));
        }
        let later = Instant::ZERO + Duration::from_millis(gap_ms);
        prop_assert_eq!(window.len(later), 0);
        prop_assert_eq!(window.p95(later), None);
        // Fresh samples after the gap are judged alone.
        for _ in 0..10 {
            window.record(later, Duration::from_millis(3));
        }
        prop_assert_eq!(window.p95(later), Some(Duration::from_millis(3)));
    }
}
