//! Property tests of the circuit breaker against the breaker invariants of
//! docs/spec/invariants.md.
//!
//! Random configurations are driven by random sequences of time steps (forwards, and calls that
//! carry an earlier `now`), admissions, outcomes for a random outstanding permit, releases,
//! timer ticks and administrative calls. A [`Harness`] checks after every step:
//!
//! - `probes-bounded`: HalfOpen never holds more than N probe slots (admitted and not given back)
//!   in an episode, never has more than N probes of its epoch in flight, and refuses only when all
//!   N slots are in use;
//! - `stale-epoch-inert`: every non-timer transition during `record` comes from a permit of the
//!   current epoch; a permit from another epoch is reported stale and moves nothing;
//! - `open-admits-nothing`: nothing is admitted while Open and `now < until`, nor while ForcedOpen;
//! - `trip-only-by-rule` (*oracle*): Closed → Open exactly when the consecutive rule or the
//!   failure-rate rule holds after a counted outcome, recomputed from a log of the episode's
//!   outcomes;
//! - `ignore-is-neutral`: an Ignore outcome never changes the consecutive count or the window (the
//!   oracle log leaves it out, so `trip-only-by-rule` would fail if the breaker counted it);
//! - `open-interval-band`: the k-th consecutive opening lasts within the configured band, with k
//!   recomputed independently (growth, cap, jitter, reset after a calm Closed period);
//! - `half-open-decides`: a half-open episode ends in a decision once its probes report (a failure
//!   re-opens, N successes close, a due probe timeout re-opens);
//! - `breaker-recovers`: at the end of every run the breaker can be driven back to Closed by
//!   healthy traffic;
//! - the event stream chains (each `from` is the previous `to`), epochs rise by one per event,
//!   and the last event's `to` is the current state.

use std::time::Duration;

use breakwater_core::policy::breaker::{
    Breaker, BreakerConfig, BreakerPermit, BreakerState, BreakerTransition, FailureRateRule,
    Recorded, RejectReason, TransitionCause,
};
use breakwater_core::policy::outcome::BreakerEffect;
use breakwater_core::Instant;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Move time forward by this many milliseconds.
    Advance(u64),
    /// Ask for admission, passing a `now` this many milliseconds behind the latest.
    Acquire {
        skew_ms: u64,
    },
    /// Record an outcome for outstanding permit `index % len`.
    Record {
        index: usize,
        effect: BreakerEffect,
        skew_ms: u64,
    },
    /// Release outstanding permit `index % len`.
    Release {
        index: usize,
    },
    /// `handle_timeout` at the current time.
    Tick,
    /// Jump to `poll_timeout()`, if any, and `handle_timeout` there.
    TickAtDeadline,
    ForceOpen,
    Disable,
    Reset,
}

fn effect() -> impl Strategy<Value = BreakerEffect> {
    prop_oneof![
        3 => Just(BreakerEffect::Failure),
        2 => Just(BreakerEffect::Success),
        1 => Just(BreakerEffect::Ignore),
    ]
}

fn skew() -> impl Strategy<Value = u64> {
    prop_oneof![5 => Just(0_u64), 1 => 0..5_000_u64]
}

fn op() -> impl Strategy<Value = Op> {
    // Administrative calls are rare so that most of a run exercises the automatic states.
    prop_oneof![
        30 => skew().prop_map(|skew_ms| Op::Acquire { skew_ms }),
        30 => (any::<usize>(), effect(), skew())
            .prop_map(|(index, effect, skew_ms)| Op::Record { index, effect, skew_ms }),
        5 => any::<usize>().prop_map(|index| Op::Release { index }),
        15 => prop_oneof![4 => 0..3_000_u64, 1 => 0..120_000_u64].prop_map(Op::Advance),
        5 => Just(Op::Tick),
        10 => Just(Op::TickAtDeadline),
        2 => prop_oneof![1 => Just(Op::ForceOpen), 1 => Just(Op::Disable), 2 => Just(Op::Reset)],
    ]
}

fn config() -> impl Strategy<Value = BreakerConfig> {
    // 50 % and 100 % often, so that a rate exactly at the threshold ("≥") comes up.
    let percent = prop_oneof![Just(50_u32), Just(100), 1..=100_u32];
    let rate = (1..=10_u64, 1..=10_u32, 1..=8_u32, percent).prop_map(
        |(window_s, buckets, min_calls, percent)| {
            FailureRateRule::default()
                .with_window(Duration::from_secs(window_s))
                .with_buckets(buckets)
                .with_min_calls(min_calls)
                .with_failure_rate_percent(percent)
        },
    );
    let rules = prop_oneof![
        (1..=6_u32).prop_map(|n| (Some(n), None)),
        rate.clone().prop_map(|r| (None, Some(r))),
        (1..=6_u32, rate).prop_map(|(n, r)| (Some(n), Some(r))),
    ];
    (
        rules,
        1..=30_u64,
        any::<bool>(),
        1..=4_u32,
        prop_oneof![Just(0_u32), Just(20), 0..=50_u32],
        1..=60_u64,
        1..=4_u32,
        prop::option::of(1..=60_u64),
    )
        .prop_map(
            |(
                (consecutive, rate),
                open_s,
                growth,
                max_factor,
                jitter,
                reset_s,
                probes,
                probe_timeout_s,
            )| {
                BreakerConfig::default()
                    .with_consecutive_failures(consecutive)
                    .with_failure_rate(rate)
                    .with_open_interval(Duration::from_secs(open_s))
                    .with_open_growth(growth)
                    .with_max_open_interval(Duration::from_secs(open_s * u64::from(max_factor)))
                    .with_open_jitter_percent(jitter)
                    .with_open_streak_reset_after(Duration::from_secs(reset_s))
                    .with_half_open_probes(probes)
                    .with_probe_timeout(probe_timeout_s.map(Duration::from_secs))
            },
        )
}

/// The breaker under test plus the harness's own, independent bookkeeping.
struct Harness {
    breaker: Breaker,
    config: BreakerConfig,
    /// The harness clock; calls may pass an earlier `now` than this.
    now: Instant,
    /// The latest instant handed to the breaker (its effective `now`).
    seen: Instant,
    outstanding: Vec<BreakerPermit>,
    /// The last state and epoch the event stream reported.
    last_to: BreakerState,
    last_epoch: u64,
    // Oracle for `trip-only-by-rule`: counted outcomes (nanos, failed) of the current Closed
    // episode.
    closed_log: Vec<(u64, bool)>,
    // Oracle for `open-interval-band`: k and when the breaker last entered Closed.
    openings: u32,
    closed_since: Instant,
    // Oracle for `probes-bounded` / `half-open-decides`: the current half-open episode.
    probe_slots: u32,
    probes_succeeded: u32,
}

impl Harness {
    fn new(config: BreakerConfig, seed: u64) -> Harness {
        let breaker = Breaker::new(config.clone(), fastrand::Rng::with_seed(seed))
            .expect("generated configs are valid");
        Harness {
            last_to: breaker.state(),
            breaker,
            config,
            now: Instant::ZERO,
            seen: Instant::ZERO,
            outstanding: Vec::new(),
            last_epoch: 0,
            closed_log: Vec::new(),
            openings: 0,
            closed_since: Instant::ZERO,
            probe_slots: 0,
            probes_succeeded: 0,
        }
    }

    fn probes(&self) -> u32 {
        self.config.half_open_probes
    }

    /// The `now` to pass for a call `skew_ms` behind the harness clock, and the instant the
    /// breaker will take it as (never earlier than one it has seen).
    fn call_time(&mut self, skew_ms: u64) -> (Instant, Instant) {
        let called_at = self.now - Duration::from_millis(skew_ms);
        self.seen = self.seen.max(called_at);
        (called_at, self.seen)
    }

    fn tick_now(&mut self) -> Instant {
        self.seen = self.now;
        self.now
    }

    fn timer_due(&self, at: Instant) -> bool {
        self.breaker.poll_timeout().is_some_and(|d| at >= d)
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Advance(ms) => self.now += Duration::from_millis(ms),
            Op::Acquire { skew_ms } => self.acquire(skew_ms),
            Op::Record {
                index,
                effect,
                skew_ms,
            } => {
                if !self.outstanding.is_empty() {
                    let permit = self.outstanding.swap_remove(index % self.outstanding.len());
                    self.record(permit, Some(effect), skew_ms);
                }
            }
            Op::Release { index } => {
                if !self.outstanding.is_empty() {
                    let permit = self.outstanding.swap_remove(index % self.outstanding.len());
                    self.record(permit, None, 0);
                }
            }
            Op::Tick => {
                let now = self.tick_now();
                self.breaker.handle_timeout(now);
                let events = self.drain();
                assert!(events.iter().all(|e| is_timer_cause(e.cause)));
            }
            Op::TickAtDeadline => self.tick_at_deadline(),
            Op::ForceOpen => {
                let now = self.tick_now();
                self.breaker.force_open(now);
                self.drain();
                assert_eq!(self.breaker.state(), BreakerState::ForcedOpen);
            }
            Op::Disable => {
                let now = self.tick_now();
                self.breaker.disable(now);
                self.drain();
                assert_eq!(self.breaker.state(), BreakerState::Disabled);
            }
            Op::Reset => {
                let now = self.tick_now();
                self.breaker.reset(now);
                let events = self.drain();
                assert_eq!(events.len(), 1);
                assert_eq!(
                    self.breaker.state(),
                    BreakerState::Closed {
                        consecutive_failures: 0
                    }
                );
            }
        }
    }

    fn acquire(&mut self, skew_ms: u64) {
        let before = self.breaker.state();
        let (called_at, at) = self.call_time(skew_ms);
        let timer_due = self.timer_due(at);
        let result = self.breaker.try_acquire(called_at);
        let events = self.drain();
        assert!(events.iter().all(|e| is_timer_cause(e.cause)));
        match (before, result) {
            // `open-admits-nothing`: nothing admitted while Open before `until`.
            (BreakerState::Open { until, .. }, result) if at < until => {
                let rejected = result.expect_err("open-admits-nothing: admitted while Open");
                assert_eq!(rejected.reason, RejectReason::Open);
                assert_eq!(rejected.retry_at, Some(until));
                assert_eq!(rejected.retry_after, Some(until - at));
            }
            (BreakerState::ForcedOpen, result) => {
                assert_eq!(
                    result.expect_err("admitted while ForcedOpen").reason,
                    RejectReason::ForcedOpen
                );
            }
            (BreakerState::Closed { .. } | BreakerState::Disabled, result) => {
                let permit = result.expect("Closed and Disabled admit");
                assert!(!permit.is_probe());
                self.outstanding.push(permit);
            }
            // Open at/after `until`, or HalfOpen (possibly timing out first).
            (_, result) => {
                let state = self.breaker.state();
                match result {
                    Ok(permit) => {
                        assert!(permit.is_probe(), "half-open admits only probes");
                        assert_eq!(permit.epoch(), self.breaker.epoch());
                        self.probe_slots += 1;
                        // `probes-bounded`: at most N slots per episode, at most N in flight.
                        assert!(
                            self.probe_slots <= self.probes(),
                            "probes-bounded: too many probes"
                        );
                        self.outstanding.push(permit);
                        let in_flight = self.in_flight_probes();
                        assert!(
                            in_flight <= self.probes(),
                            "probes-bounded: {in_flight} probes in flight"
                        );
                        assert_eq!(
                            state,
                            BreakerState::HalfOpen {
                                probes_admitted: self.probe_slots,
                                probes_succeeded: self.probes_succeeded,
                                probes_allowed: self.probes(),
                            }
                        );
                    }
                    Err(rejected) if timer_due => {
                        // A due probe timeout re-opened the breaker before admission.
                        assert_eq!(rejected.reason, RejectReason::Open);
                        assert!(matches!(state, BreakerState::Open { .. }));
                    }
                    Err(rejected) => {
                        // Refuse a probe only when every slot is in use.
                        assert_eq!(rejected.reason, RejectReason::HalfOpenProbesBusy);
                        assert_eq!(self.probe_slots, self.probes());
                    }
                }
            }
        }
    }

    /// Record `effect` for `permit`, or release it with `None`.
    fn record(&mut self, permit: BreakerPermit, effect: Option<BreakerEffect>, skew_ms: u64) {
        let before = self.breaker.state();
        let permit_epoch = permit.epoch();
        let is_probe = permit.is_probe();
        let (called_at, at) = self.call_time(skew_ms);
        let current = permit_epoch == self.breaker.epoch() && !self.timer_due(at);
        let recorded = match effect {
            Some(effect) => self.breaker.record(called_at, permit, effect),
            None => self.breaker.release(called_at, permit),
        };
        let effect = effect.unwrap_or(BreakerEffect::Ignore);
        let events = self.drain();

        // `stale-epoch-inert`: only a permit of the current epoch may cause a non-timer transition.
        for event in &events {
            if !is_timer_cause(event.cause) {
                assert!(current, "stale-epoch-inert: stale outcome caused {event:?}");
                assert_eq!(
                    event.epoch,
                    permit_epoch + 1,
                    "stale-epoch-inert: transition from another epoch"
                );
            }
        }
        if !current {
            assert_eq!(
                recorded,
                Recorded::Stale,
                "stale-epoch-inert: stale outcome not reported stale"
            );
            return;
        }
        let after = self.breaker.state();
        match before {
            BreakerState::Closed {
                consecutive_failures,
            } => {
                assert!(!is_probe);
                if effect == BreakerEffect::Ignore {
                    // `ignore-is-neutral`: Ignore changes nothing.
                    assert_eq!(recorded, Recorded::NotCounted);
                    assert!(events.is_empty());
                    assert_eq!(
                        after,
                        BreakerState::Closed {
                            consecutive_failures
                        }
                    );
                    return;
                }
                assert_eq!(recorded, Recorded::Counted);
                self.closed_log
                    .push((at.as_nanos(), effect == BreakerEffect::Failure));
                let (consecutive_trip, rate_trip, trailing) = self.oracle_trip();
                // `trip-only-by-rule`: trip exactly when a rule holds.
                if consecutive_trip || rate_trip {
                    assert!(
                        matches!(after, BreakerState::Open { .. }),
                        "trip-only-by-rule: did not trip"
                    );
                    let cause = events.first().map(|e| e.cause);
                    let expected = if consecutive_trip {
                        TransitionCause::ConsecutiveFailures
                    } else {
                        TransitionCause::FailureRate
                    };
                    assert_eq!(cause, Some(expected));
                } else {
                    assert_eq!(
                        after,
                        BreakerState::Closed {
                            consecutive_failures: trailing
                        },
                        "trip-only-by-rule/ignore-is-neutral: counts differ from the oracle"
                    );
                }
            }
            BreakerState::HalfOpen { .. } => {
                assert!(is_probe);
                // `half-open-decides`: a reporting probe decides, or counts towards N.
                match effect {
                    BreakerEffect::Failure => {
                        assert_eq!(events.len(), 1);
                        assert_eq!(events[0].cause, TransitionCause::ProbeFailed);
                    }
                    BreakerEffect::Success => {
                        self.probes_succeeded += 1;
                        if self.probes_succeeded == self.probes() {
                            assert_eq!(events.len(), 1);
                            assert_eq!(events[0].cause, TransitionCause::ProbesSucceeded);
                        } else {
                            assert!(events.is_empty());
                            assert!(
                                matches!(after, BreakerState::HalfOpen { probes_succeeded, .. }
                                if probes_succeeded == self.probes_succeeded)
                            );
                        }
                    }
                    BreakerEffect::Ignore => {
                        assert_eq!(recorded, Recorded::NotCounted);
                        assert!(events.is_empty());
                        self.probe_slots -= 1;
                    }
                }
            }
            BreakerState::Disabled => {
                assert_eq!(recorded, Recorded::NotCounted);
                assert!(events.is_empty());
            }
            other => panic!("a current permit while {other:?}"),
        }
    }

    fn tick_at_deadline(&mut self) {
        let Some(deadline) = self.breaker.poll_timeout() else {
            return;
        };
        self.now = self.now.max(deadline);
        let before = self.breaker.state();
        let now = self.tick_now();
        self.breaker.handle_timeout(now);
        let events = self.drain();
        // A timer at the reported deadline always makes progress (no spinning driver).
        assert_eq!(events.len(), 1);
        match before {
            BreakerState::Open { .. } => {
                assert_eq!(events[0].cause, TransitionCause::OpenIntervalElapsed);
            }
            // `half-open-decides`: unanswered probes end in a decision at the probe timeout.
            BreakerState::HalfOpen { .. } => {
                assert_eq!(events[0].cause, TransitionCause::ProbeTimedOut);
            }
            other => panic!("a deadline while {other:?}"),
        }
    }

    /// Drain the event stream, check that it chains, and update the oracles from it.
    fn drain(&mut self) -> Vec<BreakerTransition> {
        let events: Vec<_> = std::iter::from_fn(|| self.breaker.poll_event()).collect();
        for event in &events {
            assert_eq!(event.from.kind(), self.last_to.kind(), "events must chain");
            if let BreakerState::Open { .. } = event.from {
                assert_eq!(event.from, self.last_to);
            }
            assert_eq!(event.epoch, self.last_epoch + 1, "one epoch per transition");
            assert_eq!(event.at, self.seen);
            self.last_to = event.to;
            self.last_epoch = event.epoch;
            match event.cause {
                TransitionCause::ConsecutiveFailures | TransitionCause::FailureRate => {
                    if event.at - self.closed_since >= self.config.open_streak_reset_after {
                        self.openings = 0;
                    }
                    self.openings += 1;
                }
                TransitionCause::ProbeFailed | TransitionCause::ProbeTimedOut => {
                    self.openings += 1;
                }
                TransitionCause::Reset => self.openings = 0,
                _ => {}
            }
            match event.to {
                BreakerState::Closed { .. } => {
                    self.closed_log.clear();
                    self.closed_since = event.at;
                }
                BreakerState::HalfOpen { .. } => {
                    self.probe_slots = 0;
                    self.probes_succeeded = 0;
                }
                BreakerState::Open { until, openings } => {
                    assert_eq!(openings, self.openings, "k differs from the oracle");
                    let (low, high) = self.open_band(openings);
                    let length = until - event.at;
                    assert!(
                        low <= length && length <= high,
                        "open-interval-band: opening {openings}: {length:?} vs [{low:?}, {high:?}]"
                    );
                }
                _ => {}
            }
        }
        // Counters inside a state change without events; the state itself must not.
        let state = self.breaker.state();
        assert_eq!(
            state.kind(),
            self.last_to.kind(),
            "state differs from the last event"
        );
        if let BreakerState::Open { .. } = state {
            assert_eq!(state, self.last_to);
        }
        assert_eq!(self.breaker.epoch(), self.last_epoch);
        events
    }

    fn in_flight_probes(&self) -> u32 {
        let epoch = self.breaker.epoch();
        self.outstanding
            .iter()
            .filter(|p| p.is_probe() && p.epoch() == epoch)
            .count() as u32
    }

    /// `trip-only-by-rule` oracle: (consecutive rule holds, rate rule holds, trailing failures)
    /// from the log.
    fn oracle_trip(&self) -> (bool, bool, u32) {
        let trailing = self
            .closed_log
            .iter()
            .rev()
            .take_while(|(_, failed)| *failed)
            .count() as u32;
        let consecutive = self
            .config
            .consecutive_failures
            .is_some_and(|threshold| trailing >= threshold);
        let rate = self.config.failure_rate.as_ref().is_some_and(|rule| {
            let bucket_nanos = rule.window.as_nanos() as u64 / u64::from(rule.buckets);
            let newest = self.seen.as_nanos() / bucket_nanos;
            let in_window: Vec<bool> = self
                .closed_log
                .iter()
                .filter(|(t, _)| t / bucket_nanos + u64::from(rule.buckets) > newest)
                .map(|(_, failed)| *failed)
                .collect();
            let calls = in_window.len() as u64;
            let failures = in_window.iter().filter(|f| **f).count() as u64;
            calls >= u64::from(rule.min_calls)
                && failures * 100 >= u64::from(rule.failure_rate_percent) * calls
        });
        (consecutive, rate, trailing)
    }

    /// `open-interval-band`: the allowed length of the k-th consecutive opening.
    fn open_band(&self, openings: u32) -> (Duration, Duration) {
        let base = self.config.open_interval;
        let nominal = if self.config.open_growth {
            let factor = 2_u32.saturating_pow(openings.saturating_sub(1));
            base.saturating_mul(factor)
                .min(self.config.max_open_interval)
        } else {
            base
        };
        let percent = self.config.open_jitter_percent;
        let nanos = nominal.as_nanos();
        let spread = nanos * u128::from(percent) / 100;
        (
            Duration::from_nanos((nanos - spread) as u64),
            Duration::from_nanos((nanos + spread) as u64),
        )
    }

    /// Liveness at the end of a run (`breaker-recovers`): with every permit answered and healthy
    /// traffic, the breaker gets back to Closed within N + 2 admissions.
    fn drive_to_closed(&mut self) {
        while let Some(permit) = self.outstanding.pop() {
            self.record(permit, None, 0);
        }
        if matches!(
            self.breaker.state(),
            BreakerState::ForcedOpen | BreakerState::Disabled
        ) {
            self.step(&Op::Reset);
        }
        for _ in 0..self.probes() + 2 {
            if let BreakerState::Open { until, .. } = self.breaker.state() {
                self.now = self.now.max(until);
            }
            if matches!(self.breaker.state(), BreakerState::Closed { .. }) {
                return;
            }
            self.acquire(0);
            let permit = self.outstanding.pop().expect("healthy traffic is admitted");
            self.record(permit, Some(BreakerEffect::Success), 0);
        }
        assert!(
            matches!(self.breaker.state(), BreakerState::Closed { .. }),
            "breaker-recovers: not Closed after healthy probes: {:?}",
            self.breaker.state()
        );
    }
}

fn is_timer_cause(cause: TransitionCause) -> bool {
    matches!(
        cause,
        TransitionCause::OpenIntervalElapsed | TransitionCause::ProbeTimedOut
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn breaker_keeps_the_section_9_invariants(
        config in config(),
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let mut harness = Harness::new(config, seed);
        for op in &ops {
            harness.step(op);
        }
        harness.drive_to_closed();
    }

    /// `stale-epoch-inert`, the named case: a success from an attempt admitted while Closed never
    /// closes a HalfOpen breaker, however many such successes arrive.
    #[test]
    fn closed_era_successes_never_close_half_open(
        probes in 1..=4_u32,
        stale in 1..20_usize,
    ) {
        let config = BreakerConfig::default().with_half_open_probes(probes);
        let mut breaker = Breaker::new(config, fastrand::Rng::with_seed(0)).unwrap();
        let t0 = Instant::ZERO;
        let old: Vec<_> = (0..stale).map(|_| breaker.try_acquire(t0).unwrap()).collect();
        for _ in 0..5 {
            let p = breaker.try_acquire(t0).unwrap();
            breaker.record(t0, p, BreakerEffect::Failure);
        }
        let t1 = t0 + Duration::from_secs(30);
        let probe = breaker.try_acquire(t1).unwrap();
        for permit in old {
            prop_assert_eq!(breaker.record(t1, permit, BreakerEffect::Success), Recorded::Stale);
            let is_half_open = matches!(breaker.state(), BreakerState::HalfOpen { .. });
            prop_assert!(is_half_open);
        }
        breaker.release(t1, probe);
    }
}
