//! Unit tests of the breaker: trip rules, open intervals, probes, epochs and administrative states.

use super::*;

const SEC: Duration = Duration::from_secs(1);

fn at(secs: u64) -> Instant {
    Instant::ZERO + Duration::from_secs(secs)
}

fn breaker(config: BreakerConfig) -> Breaker {
    Breaker::new(config, fastrand::Rng::with_seed(1)).expect("valid config")
}

fn fail(b: &mut Breaker, now: Instant, times: usize) {
    for _ in 0..times {
        let permit = b.try_acquire(now).expect("admitted");
        b.record(now, permit, BreakerEffect::Failure);
    }
}

fn events(b: &mut Breaker) -> Vec<(BreakerStateKind, BreakerStateKind, TransitionCause)> {
    std::iter::from_fn(|| b.poll_event())
        .map(|e| (e.from.kind(), e.to.kind(), e.cause))
        .collect()
}

#[test]
fn defaults_match_the_issue() {
    let c = BreakerConfig::default();
    assert_eq!(c.consecutive_failures, Some(5));
    assert_eq!(c.failure_rate, None);
    assert_eq!(c.open_interval, 30 * SEC);
    assert!(!c.open_growth);
    assert_eq!(c.max_open_interval, 300 * SEC);
    assert_eq!(c.open_jitter_percent, 0);
    assert_eq!(c.open_streak_reset_after, 60 * SEC);
    assert_eq!(c.half_open_probes, 1);
    let r = FailureRateRule::default();
    assert_eq!(
        (r.window, r.buckets, r.min_calls, r.failure_rate_percent),
        (10 * SEC, 10, 20, 50)
    );
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn nonsense_configs_are_rejected() {
    use BreakerConfigError as E;
    let d = BreakerConfig::default;
    let cases = [
        (d().with_consecutive_failures(None), E::NoTripRule),
        (
            d().with_consecutive_failures(Some(0)),
            E::ZeroConsecutiveFailures,
        ),
        (d().with_open_interval(Duration::ZERO), E::ZeroOpenInterval),
        (
            d().with_open_growth(true).with_max_open_interval(SEC),
            E::MaxOpenIntervalBelowOpenInterval,
        ),
        (
            d().with_open_jitter_percent(100),
            E::JitterOutOfRange { percent: 100 },
        ),
        (d().with_half_open_probes(0), E::ZeroHalfOpenProbes),
        (
            d().with_probe_timeout(Some(Duration::ZERO)),
            E::ZeroProbeTimeout,
        ),
        (
            d().with_failure_rate(Some(FailureRateRule::default().with_min_calls(0))),
            E::ZeroMinCalls,
        ),
        (
            d().with_failure_rate(Some(
                FailureRateRule::default().with_failure_rate_percent(101),
            )),
            E::FailureRateOutOfRange { percent: 101 },
        ),
        (
            d().with_failure_rate(Some(FailureRateRule::default().with_buckets(0))),
            E::BucketsOutOfRange { buckets: 0 },
        ),
        (
            d().with_failure_rate(Some(
                FailureRateRule::default().with_window(Duration::from_nanos(3)),
            )),
            E::WindowTooShort,
        ),
    ];
    for (config, error) in cases {
        assert_eq!(
            Breaker::new(config, fastrand::Rng::with_seed(0)).err(),
            Some(error)
        );
    }
    // Without growth the cap is irrelevant, so a long fixed interval is fine.
    assert!(d().with_open_interval(600 * SEC).validate().is_ok());
}

#[test]
fn five_consecutive_failures_trip_and_a_success_resets_the_count() {
    let mut b = breaker(BreakerConfig::default());
    fail(&mut b, at(0), 4);
    let p = b.try_acquire(at(0)).unwrap();
    assert_eq!(
        b.record(at(0), p, BreakerEffect::Success),
        Recorded::Counted
    );
    fail(&mut b, at(1), 4);
    assert_eq!(
        b.state(),
        BreakerState::Closed {
            consecutive_failures: 4
        }
    );
    let p = b.try_acquire(at(1)).unwrap();
    assert_eq!(
        b.record(at(1), p, BreakerEffect::Ignore),
        Recorded::NotCounted
    );
    assert_eq!(
        b.state(),
        BreakerState::Closed {
            consecutive_failures: 4
        }
    );
    fail(&mut b, at(2), 1);
    assert_eq!(
        b.state(),
        BreakerState::Open {
            until: at(32),
            openings: 1
        }
    );
    assert_eq!(b.epoch(), 1);
    assert_eq!(
        events(&mut b),
        [(
            BreakerStateKind::Closed,
            BreakerStateKind::Open,
            TransitionCause::ConsecutiveFailures
        )]
    );
}

#[test]
fn open_rejects_with_the_instant_and_moves_lazily_to_half_open() {
    let mut b = breaker(BreakerConfig::default());
    fail(&mut b, at(0), 5);
    let rejected = b.try_acquire(at(10)).unwrap_err();
    assert_eq!(rejected.reason, RejectReason::Open);
    assert_eq!(rejected.retry_at, Some(at(30)));
    assert_eq!(rejected.retry_after, Some(20 * SEC));
    assert_eq!(b.poll_timeout(), Some(at(30)));
    // Still Open in the snapshot after `until`: the move is lazy.
    b.handle_timeout(at(29));
    assert!(matches!(b.state(), BreakerState::Open { .. }));
    let probe = b.try_acquire(at(30)).unwrap();
    assert!(probe.is_probe());
    assert_eq!(probe.epoch(), 2);
    assert_eq!(
        b.state(),
        BreakerState::HalfOpen {
            probes_admitted: 1,
            probes_succeeded: 0,
            probes_allowed: 1
        }
    );
    let busy = b.try_acquire(at(30)).unwrap_err();
    assert_eq!(busy.reason, RejectReason::HalfOpenProbesBusy);
    assert_eq!(busy.retry_at, None);
    b.record(at(31), probe, BreakerEffect::Success);
    assert_eq!(
        b.state(),
        BreakerState::Closed {
            consecutive_failures: 0
        }
    );
    assert_eq!(
        events(&mut b),
        [
            (
                BreakerStateKind::Closed,
                BreakerStateKind::Open,
                TransitionCause::ConsecutiveFailures
            ),
            (
                BreakerStateKind::Open,
                BreakerStateKind::HalfOpen,
                TransitionCause::OpenIntervalElapsed
            ),
            (
                BreakerStateKind::HalfOpen,
                BreakerStateKind::Closed,
                TransitionCause::ProbesSucceeded
            ),
        ]
    );
}

#[test]
fn handle_timeout_moves_to_half_open_so_a_driver_timer_does_not_spin() {
    let mut b = breaker(BreakerConfig::default());
    fail(&mut b, at(0), 5);
    b.handle_timeout(at(30));
    b.handle_timeout(at(30));
    assert!(matches!(
        b.state(),
        BreakerState::HalfOpen {
            probes_admitted: 0,
            ..
        }
    ));
    assert_eq!(b.poll_timeout(), None);
}

#[test]
fn a_failed_probe_reopens_with_the_next_opening() {
    let config = BreakerConfig::default().with_open_growth(true);
    let mut b = breaker(config);
    fail(&mut b, at(0), 5);
    let probe = b.try_acquire(at(30)).unwrap();
    b.record(at(31), probe, BreakerEffect::Failure);
    assert_eq!(
        b.state(),
        BreakerState::Open {
            until: at(91),
            openings: 2
        }
    );
    let probe = b.try_acquire(at(91)).unwrap();
    b.record(at(91), probe, BreakerEffect::Failure);
    assert_eq!(
        b.state(),
        BreakerState::Open {
            until: at(211),
            openings: 3
        }
    );
    let e: Vec<_> = events(&mut b).into_iter().map(|e| e.2).collect();
    assert_eq!(
        e,
        [
            TransitionCause::ConsecutiveFailures,
            TransitionCause::OpenIntervalElapsed,
            TransitionCause::ProbeFailed,
            TransitionCause::OpenIntervalElapsed,
            TransitionCause::ProbeFailed,
        ]
    );
}

#[test]
fn growth_is_capped_and_k_returns_to_zero_after_a_calm_minute() {
    let config = BreakerConfig::default()
        .with_open_growth(true)
        .with_open_interval(100 * SEC)
        .with_max_open_interval(250 * SEC);
    let mut b = breaker(config);
    fail(&mut b, at(0), 5);
    let mut now = 100;
    for (openings, length) in [(2, 200), (3, 250), (4, 250)] {
        let probe = b.try_acquire(at(now)).unwrap();
        b.record(at(now), probe, BreakerEffect::Failure);
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until: at(now + length),
                openings
            }
        );
        now += length;
    }
    // Close, fail again within 60 s: k keeps growing.
    let probe = b.try_acquire(at(now)).unwrap();
    b.record(at(now), probe, BreakerEffect::Success);
    fail(&mut b, at(now + 59), 5);
    assert!(matches!(b.state(), BreakerState::Open { openings: 5, .. }));
    // Close, stay closed 60 s: k starts over.
    now += 59 + 250;
    let probe = b.try_acquire(at(now)).unwrap();
    b.record(at(now), probe, BreakerEffect::Success);
    fail(&mut b, at(now + 60), 5);
    assert_eq!(
        b.state(),
        BreakerState::Open {
            until: at(now + 160),
            openings: 1
        }
    );
}

#[test]
fn jitter_stays_within_twenty_percent_and_comes_from_the_seed() {
    let config = BreakerConfig::default().with_open_jitter(true);
    let mut lengths = Vec::new();
    for seed in 0..200 {
        let mut b = Breaker::new(config.clone(), fastrand::Rng::with_seed(seed)).unwrap();
        fail(&mut b, at(0), 5);
        let BreakerState::Open { until, .. } = b.state() else {
            panic!("not open")
        };
        let length = until - at(0);
        assert!(length >= 24 * SEC && length <= 36 * SEC, "{length:?}");
        lengths.push(length);
    }
    assert!(lengths.iter().any(|l| *l < 27 * SEC) && lengths.iter().any(|l| *l > 33 * SEC));
    let mut again = Breaker::new(config, fastrand::Rng::with_seed(0)).unwrap();
    fail(&mut again, at(0), 5);
    assert!(
        matches!(again.state(), BreakerState::Open { until, .. } if until - at(0) == lengths[0])
    );
}

#[test]
fn n_probes_must_all_succeed_and_an_ignored_probe_gives_its_slot_back() {
    let mut b = breaker(BreakerConfig::default().with_half_open_probes(3));
    fail(&mut b, at(0), 5);
    let p1 = b.try_acquire(at(30)).unwrap();
    let p2 = b.try_acquire(at(30)).unwrap();
    let p3 = b.try_acquire(at(30)).unwrap();
    assert!(b.try_acquire(at(30)).is_err());
    assert_eq!(b.release(at(31), p3), Recorded::NotCounted);
    let p4 = b.try_acquire(at(31)).unwrap();
    assert_eq!(
        b.record(at(31), p1, BreakerEffect::Ignore),
        Recorded::NotCounted
    );
    let p5 = b.try_acquire(at(31)).unwrap();
    b.record(at(32), p2, BreakerEffect::Success);
    b.record(at(32), p4, BreakerEffect::Success);
    assert_eq!(
        b.state(),
        BreakerState::HalfOpen {
            probes_admitted: 3,
            probes_succeeded: 2,
            probes_allowed: 3
        }
    );
    b.record(at(33), p5, BreakerEffect::Success);
    assert_eq!(
        b.state(),
        BreakerState::Closed {
            consecutive_failures: 0
        }
    );
}

#[test]
fn stale_outcomes_never_move_the_breaker() {
    let mut b = breaker(BreakerConfig::default());
    let old_success = b.try_acquire(at(0)).unwrap();
    let old_failure = b.try_acquire(at(0)).unwrap();
    fail(&mut b, at(0), 5);
    let probe = b.try_acquire(at(30)).unwrap();
    // A success from the Closed epoch does not close the HalfOpen breaker...
    assert_eq!(
        b.record(at(31), old_success, BreakerEffect::Success),
        Recorded::Stale
    );
    assert!(matches!(b.state(), BreakerState::HalfOpen { .. }));
    b.record(at(31), probe, BreakerEffect::Success);
    // ... and a failure from before the trip does not count against the fresh window.
    assert_eq!(
        b.record(at(32), old_failure, BreakerEffect::Failure),
        Recorded::Stale
    );
    assert_eq!(
        b.state(),
        BreakerState::Closed {
            consecutive_failures: 0
        }
    );
    assert_eq!(b.epoch(), 3);
}

#[test]
fn an_unanswered_probe_times_out_as_a_failure() {
    let mut b = breaker(BreakerConfig::default().with_probe_timeout(Some(10 * SEC)));
    fail(&mut b, at(0), 5);
    let leaked = b.try_acquire(at(30)).unwrap();
    assert_eq!(b.poll_timeout(), Some(at(40)));
    b.handle_timeout(at(39));
    assert!(matches!(b.state(), BreakerState::HalfOpen { .. }));
    b.handle_timeout(at(40));
    assert_eq!(
        b.state(),
        BreakerState::Open {
            until: at(70),
            openings: 2
        }
    );
    assert_eq!(
        b.record(at(41), leaked, BreakerEffect::Success),
        Recorded::Stale
    );
    assert_eq!(
        events(&mut b).last().map(|e| e.2),
        Some(TransitionCause::ProbeTimedOut)
    );
}

#[test]
fn the_failure_rate_rule_trips_at_half_of_twenty_calls() {
    let config = BreakerConfig::default()
        .with_consecutive_failures(None)
        .with_failure_rate(Some(FailureRateRule::default()));
    let mut b = breaker(config);
    // 10 successes and 9 failures: 19 calls, below the minimum volume.
    for i in 0..19 {
        let p = b.try_acquire(at(0)).unwrap();
        let effect = if i % 2 == 0 {
            BreakerEffect::Success
        } else {
            BreakerEffect::Failure
        };
        b.record(at(0), p, effect);
    }
    assert!(matches!(b.state(), BreakerState::Closed { .. }));
    // A 20th call that fails makes 10 failures of 20 = 50 %.
    let p = b.try_acquire(at(1)).unwrap();
    b.record(at(1), p, BreakerEffect::Failure);
    assert!(matches!(b.state(), BreakerState::Open { .. }));
    assert_eq!(events(&mut b)[0].2, TransitionCause::FailureRate);
}

#[test]
fn old_buckets_leave_the_failure_rate_window() {
    let config = BreakerConfig::default()
        .with_consecutive_failures(None)
        .with_failure_rate(Some(FailureRateRule::default()));
    let mut b = breaker(config);
    fail(&mut b, at(0), 19);
    // Ten seconds later the 19 failures have left the window; a twentieth call cannot trip.
    fail(&mut b, at(10), 1);
    assert!(matches!(b.state(), BreakerState::Closed { .. }));
    // At 9 s they are still in it.
    let mut b = breaker(
        BreakerConfig::default()
            .with_consecutive_failures(None)
            .with_failure_rate(Some(FailureRateRule::default())),
    );
    fail(&mut b, at(0), 19);
    let p = b.try_acquire(at(9)).unwrap();
    b.record(at(9), p, BreakerEffect::Success);
    assert!(matches!(b.state(), BreakerState::Open { .. }));
}

#[test]
fn administrative_states() {
    let mut b = breaker(BreakerConfig::default());
    let before = b.try_acquire(at(0)).unwrap();
    b.force_open(at(1));
    b.force_open(at(1));
    let rejected = b.try_acquire(at(1000)).unwrap_err();
    assert_eq!(
        (rejected.reason, rejected.retry_at),
        (RejectReason::ForcedOpen, None)
    );
    assert_eq!(b.poll_timeout(), None);
    b.disable(at(2));
    fail(&mut b, at(2), 50);
    assert_eq!(b.state(), BreakerState::Disabled);
    assert_eq!(
        b.record(at(3), before, BreakerEffect::Failure),
        Recorded::Stale
    );
    b.reset(at(4));
    assert_eq!(
        b.state(),
        BreakerState::Closed {
            consecutive_failures: 0
        }
    );
    assert_eq!(
        events(&mut b),
        [
            (
                BreakerStateKind::Closed,
                BreakerStateKind::ForcedOpen,
                TransitionCause::ForcedOpen
            ),
            (
                BreakerStateKind::ForcedOpen,
                BreakerStateKind::Disabled,
                TransitionCause::Disabled
            ),
            (
                BreakerStateKind::Disabled,
                BreakerStateKind::Closed,
                TransitionCause::Reset
            ),
        ]
    );
    assert_eq!(b.epoch(), 3);
}

#[test]
fn events_carry_snapshots_epochs_and_instants() {
    let mut b = breaker(BreakerConfig::default());
    fail(&mut b, at(5), 5);
    let event = b.poll_event().expect("trip event");
    assert_eq!(event.at, at(5));
    assert_eq!(
        event.from,
        BreakerState::Closed {
            consecutive_failures: 5
        }
    );
    assert_eq!(
        event.to,
        BreakerState::Open {
            until: at(35),
            openings: 1
        }
    );
    assert_eq!(event.epoch, 1);
    assert_eq!(b.poll_event(), None);
}

#[test]
fn an_undrained_event_queue_stays_bounded() {
    let mut b = breaker(BreakerConfig::default());
    for i in 0..100 {
        b.force_open(at(i));
        b.reset(at(i));
    }
    assert_eq!(
        std::iter::from_fn(|| b.poll_event()).count(),
        EVENT_QUEUE_CAPACITY
    );
    assert_eq!(b.events_dropped(), 200 - EVENT_QUEUE_CAPACITY as u64);
}

#[test]
fn time_going_backwards_counts_as_the_latest_instant() {
    let mut b = breaker(BreakerConfig::default());
    fail(&mut b, at(100), 5);
    let rejected = b.try_acquire(at(0)).unwrap_err();
    assert_eq!(rejected.retry_after, Some(30 * SEC));
    assert!(b.try_acquire(at(129)).is_err());
    assert!(b.try_acquire(at(130)).is_ok());
}

#[test]
fn extreme_durations_saturate_instead_of_panicking() {
    let config = BreakerConfig::default()
        .with_open_interval(Duration::MAX)
        .with_open_growth(true)
        .with_max_open_interval(Duration::MAX)
        .with_open_jitter_percent(99);
    let mut b = breaker(config);
    fail(&mut b, Instant::MAX, 5);
    assert!(matches!(
        b.state(),
        BreakerState::Open {
            until: Instant::MAX,
            ..
        }
    ));
}
