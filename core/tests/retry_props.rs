//! Property tests of the retry rules and the retry budget: the retry and budget invariants of
//! docs/spec/invariants.md (`attempt-limits` to `directive-wins`), and the amplification
//! experiment of docs/spec/budget.md over virtual time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use breakwater_core::policy::budget::{RetryBudget, RetryBudgetConfig};
use breakwater_core::policy::outcome::BreakerEffect;
use breakwater_core::policy::outcome::{
    classify, AttemptOutcome, Classification, ClassifyContext, ConnectFailure, Evidence,
    LocalExhaustion, NoRetryReason, OutcomeRow, RetryEligibility,
};
use breakwater_core::policy::retry::{
    decide, schedule, AttemptLedger, GiveUpReason, RequestFacts, RetryKind, RetryVerdict, Schedule,
    ScheduleInput, ServerDirectives,
};
use breakwater_core::Instant;
use http::StatusCode;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Strategies

/// `cases` cases, without writing regression files (a failure prints its seed instead).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn status() -> impl Strategy<Value = StatusCode> {
    prop_oneof![
        prop::sample::select(vec![
            200u16, 204, 304, 400, 401, 404, 408, 409, 421, 422, 425, 429, 500, 501, 502, 503, 504,
            505, 507
        ]),
        100u16..600,
    ]
    .prop_map(|c| StatusCode::from_u16(c).unwrap())
}

fn outcome() -> impl Strategy<Value = AttemptOutcome> {
    let elapsed = (0u64..20_000).prop_map(Duration::from_millis);
    prop_oneof![
        prop::sample::select(vec![
            AttemptOutcome::ConnectFailed(ConnectFailure::Dns),
            AttemptOutcome::ConnectFailed(ConnectFailure::Refused),
            AttemptOutcome::ConnectFailed(ConnectFailure::Timeout),
            AttemptOutcome::ConnectFailed(ConnectFailure::TlsHandshake),
            AttemptOutcome::CertificateInvalid,
            AttemptOutcome::LocalExhaustion(LocalExhaustion::PoolTimeout),
            AttemptOutcome::LocalExhaustion(LocalExhaustion::QueueFull),
            AttemptOutcome::BreakerRejected,
            AttemptOutcome::ConnectionDeadBeforeWrite { reused: true },
            AttemptOutcome::ConnectionDeadBeforeWrite { reused: false },
            AttemptOutcome::RefusedStream,
            AttemptOutcome::ClosedBeforeResponse { reused: true },
            AttemptOutcome::ClosedBeforeResponse { reused: false },
            AttemptOutcome::ExchangeFailed,
            AttemptOutcome::BodyReadFailed,
            AttemptOutcome::Cancelled,
        ]),
        elapsed
            .clone()
            .prop_map(|elapsed| AttemptOutcome::AttemptTimedOut { elapsed }),
        (status(), elapsed)
            .prop_map(|(status, elapsed)| AttemptOutcome::Response { status, elapsed }),
        // Weight the transparent and one-shot rows so that their limits are reached often.
        Just(AttemptOutcome::ConnectionDeadBeforeWrite { reused: true }),
        Just(AttemptOutcome::ClosedBeforeResponse { reused: true }),
        Just(AttemptOutcome::RefusedStream),
    ]
}

fn any_classification() -> impl Strategy<Value = Classification> {
    let evidence = prop::sample::select(vec![
        Evidence::NotSent,
        Evidence::NotProcessed,
        Evidence::MaybeProcessed,
        Evidence::Processed,
    ]);
    let retry = prop::sample::select(vec![
        RetryEligibility::AnyMethod,
        RetryEligibility::Transparent,
        RetryEligibility::TransparentIfIdempotentOrKeyed,
        RetryEligibility::OneShot,
        RetryEligibility::AuthReplay,
        RetryEligibility::IdempotentOrKeyed,
        RetryEligibility::KeyedConflict,
        RetryEligibility::Never(NoRetryReason::Completed),
    ]);
    (evidence, retry).prop_map(|(evidence, retry)| Classification {
        row: OutcomeRow::ExchangeFailed,
        evidence,
        breaker: BreakerEffect::Ignore,
        retry,
        latency_sample: None,
    })
}

fn facts() -> impl Strategy<Value = RequestFacts> {
    (any::<bool>(), any::<bool>(), prop::bool::weighted(0.9)).prop_map(
        |(idempotent, keyed, body_replayable)| RequestFacts {
            idempotent,
            keyed,
            body_replayable,
        },
    )
}

/// One logical call driven through classify → decide → record over a sequence of outcomes
/// (each outcome is what the next dispatch ends in). Returns each step's classification and
/// verdict, up to and including the give-up.
fn run_call(
    outcomes: &[AttemptOutcome],
    request: RequestFacts,
    token_authenticated: bool,
    max_attempts: u32,
) -> Vec<(Classification, RetryVerdict)> {
    let ctx = ClassifyContext {
        keyed: request.keyed,
        token_authenticated,
        ..ClassifyContext::default()
    };
    let mut ledger = AttemptLedger::new(max_attempts);
    let mut trace = Vec::new();
    for outcome in outcomes {
        let c = classify(outcome, &ctx);
        let v = decide(&c, &request, &ServerDirectives::default(), &ledger);
        trace.push((c, v));
        match v {
            RetryVerdict::Retry(_) => ledger.record(&v),
            RetryVerdict::GiveUp(_) => break,
        }
    }
    trace
}

// ---------------------------------------------------------------------------------------------
// `attempt-limits`, `unsafe-never-resent`, `free-retries-never-pay`, `directive-wins`: the
// decision

proptest! {
    #![proptest_config(config(256))]

    /// `unsafe-never-resent`: a request that is neither idempotent nor keyed is re-dispatched only
    /// after a NotSent or NotProcessed outcome — over realistic outcome sequences.
    #[test]
    fn safety_rule_over_outcome_sequences(
        outcomes in prop::collection::vec(outcome(), 1..16),
        token in any::<bool>(),
        max_attempts in 1u32..=10,
    ) {
        let request = RequestFacts { idempotent: false, keyed: false, body_replayable: true };
        for (c, v) in run_call(&outcomes, request, token, max_attempts) {
            if let RetryVerdict::Retry(plan) = v {
                prop_assert!(
                    matches!(c.evidence, Evidence::NotSent | Evidence::NotProcessed),
                    "{:?} retried after {:?}", plan.kind, c
                );
            }
        }
    }

    /// `unsafe-never-resent`, absolute: whatever a classification says (even a nonsensical one), an
    /// unsafe request is never resent on MaybeProcessed or Processed evidence.
    #[test]
    fn safety_rule_holds_for_any_classification(
        c in any_classification(),
        attempts_used in 0u32..4,
        used in any::<(bool, bool)>(),
    ) {
        let mut ledger = AttemptLedger::new(10);
        for _ in 0..attempts_used {
            ledger.record(&RetryVerdict::Retry(RetryKind::Ordinary.plan()));
        }
        if used.0 { ledger.record(&RetryVerdict::Retry(RetryKind::Transparent.plan())); }
        if used.1 { ledger.record(&RetryVerdict::Retry(RetryKind::AuthReplay.plan())); }
        let request = RequestFacts { idempotent: false, keyed: false, body_replayable: true };
        let v = decide(&c, &request, &ServerDirectives::default(), &ledger);
        if !c.evidence.proves_not_applied() {
            prop_assert_eq!(v, RetryVerdict::GiveUp(GiveUpReason::UnsafeToResend));
        }
    }

    /// `attempt-limits`: counted attempts ≤ max_attempts; transparent retries ≤ 1 per counted
    /// attempt; auth replays ≤ 1; 408/421/425 extra attempts ≤ 1. Counted from the verdicts, not
    /// from the ledger under test.
    #[test]
    fn attempt_counts(
        outcomes in prop::collection::vec(outcome(), 1..40),
        request in facts(),
        token in any::<bool>(),
        max_attempts in 0u32..=14,
    ) {
        let trace = run_call(&outcomes, request, token, max_attempts);
        let limit = max_attempts.clamp(1, 10);
        let (mut counted, mut transparent_this_attempt, mut auth, mut one_shot) = (1u32, 0u32, 0u32, 0u32);
        for (_, v) in &trace {
            let RetryVerdict::Retry(plan) = v else { continue };
            match plan.kind {
                RetryKind::Transparent => transparent_this_attempt += 1,
                RetryKind::AuthReplay => auth += 1,
                RetryKind::OneShot => one_shot += 1,
                _ => {}
            }
            prop_assert!(transparent_this_attempt <= 1);
            if plan.counts_as_attempt {
                counted += 1;
                transparent_this_attempt = 0;
            }
            // Transparent retries and auth replays are free and uncounted; the rest are not.
            let free = matches!(plan.kind, RetryKind::Transparent | RetryKind::AuthReplay);
            prop_assert_eq!(plan.charge_budget, !free);
            prop_assert_eq!(plan.counts_as_attempt, !free);
        }
        prop_assert!(counted <= limit, "{} counted attempts, limit {}", counted, limit);
        prop_assert!(auth <= 1);
        prop_assert!(one_shot <= 1);
        // The call always ends: the last verdict is a give-up, or the outcomes ran out.
        if trace.len() < outcomes.len() {
            prop_assert!(matches!(trace.last(), Some((_, RetryVerdict::GiveUp(_)))));
        }
    }

    /// `directive-wins`: an explicit "do not retry" directive always ends the call.
    #[test]
    fn directive_always_ends_the_call(
        c in any_classification(),
        request in facts(),
        retry_after in prop::option::of(0u64..100),
    ) {
        let directives = ServerDirectives {
            retry_after: retry_after.map(Duration::from_secs),
            forbid: true,
        };
        prop_assert_eq!(
            decide(&c, &request, &directives, &AttemptLedger::new(10)),
            RetryVerdict::GiveUp(GiveUpReason::DirectiveForbids)
        );
    }

    /// `free-retries-never-pay`: breaker-rejected and pool-rejected attempts, transparent retries
    /// and auth replays never withdraw from the budget; only charged retries do, by exactly one
    /// cost.
    #[test]
    fn only_charged_retries_withdraw(
        outcomes in prop::collection::vec(outcome(), 1..20),
        request in facts(),
        deposits in 0u32..20,
        min_per_sec in 0u32..3,
    ) {
        let config = RetryBudgetConfig::default().with_min_retries_per_sec(min_per_sec);
        let mut budget = RetryBudget::new(config).unwrap();
        let now = Instant::ZERO + Duration::from_secs(1);
        for _ in 0..deposits { budget.deposit(now); }
        let ctx = ClassifyContext { keyed: request.keyed, token_authenticated: true, ..ClassifyContext::default() };
        let mut ledger = AttemptLedger::new(10);
        for outcome in &outcomes {
            let c = classify(outcome, &ctx);
            let v = decide(&c, &request, &ServerDirectives::default(), &ledger);
            let before = budget.balance(now);
            let paid = budget.charge(now, v);
            let after = budget.balance(now);
            match (v, paid) {
                (RetryVerdict::Retry(plan), RetryVerdict::Retry(_)) if plan.charge_budget => {
                    prop_assert_eq!(before - after, budget.withdrawal_cost());
                }
                (RetryVerdict::Retry(plan), RetryVerdict::GiveUp(GiveUpReason::BudgetExhausted)) => {
                    prop_assert!(plan.charge_budget);
                    prop_assert!(before < budget.withdrawal_cost());
                    prop_assert_eq!(before, after);
                }
                _ => prop_assert_eq!(before, after, "{:?} changed the balance", v),
            }
            if matches!(outcome, AttemptOutcome::BreakerRejected | AttemptOutcome::LocalExhaustion(_)) {
                prop_assert!(matches!(v, RetryVerdict::GiveUp(_)));
            }
            match paid {
                RetryVerdict::Retry(_) => ledger.record(&paid),
                RetryVerdict::GiveUp(_) => break,
            }
        }
    }

    /// `deadline-respected`: a retry is scheduled only if now + delay + attempt_floor ≤ deadline;
    /// never earlier than the Retry-After; clipping never goes below the floor; a Retry-After above
    /// the cap or past the deadline gives RateLimited carrying now + RA.
    #[test]
    fn schedule_respects_the_deadline(
        now_ms in 0u64..100_000,
        left_ms in 0u64..40_000,
        delay_ms in 0u64..40_000,
        min_ms in 0u64..5_000,
        ra_ms in prop::option::of(0u64..90_000),
        floor_ms in 0u64..3_000,
    ) {
        let ms = Duration::from_millis;
        let now = Instant::ZERO + ms(now_ms);
        let input = ScheduleInput {
            now,
            deadline: now + ms(left_ms),
            delay: ms(delay_ms),
            min_delay: ms(min_ms).min(ms(delay_ms)),
            retry_after: ra_ms.map(ms),
            retry_after_cap: Duration::from_secs(60),
            attempt_floor: ms(floor_ms),
        };
        match schedule(&input) {
            Schedule::Proceed { delay, at } => {
                prop_assert!(at + input.attempt_floor <= input.deadline);
                prop_assert_eq!(at, now + delay);
                prop_assert!(delay >= input.retry_after.unwrap_or_default());
                prop_assert!(delay >= input.min_delay);
                prop_assert!(delay <= input.delay.max(input.retry_after.unwrap_or_default()));
            }
            Schedule::RateLimited { until } => {
                let ra = input.retry_after.unwrap();
                prop_assert_eq!(until, now + ra);
                prop_assert!(ra > input.retry_after_cap || until + input.attempt_floor > input.deadline);
            }
            Schedule::DeadlineExceeded => {
                let ra = input.retry_after.unwrap_or_default();
                prop_assert!(now + input.min_delay.max(ra) + input.attempt_floor > input.deadline);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// `budget-bound`: the budget against an integer oracle

#[derive(Clone, Copy, Debug)]
enum Op {
    Deposit,
    Withdraw,
}

/// The Finagle formula recomputed from the log of successful operations.
struct Oracle {
    slot_nanos: u64,
    deposit: i64,
    cost: i64,
    reserve: i64,
    log: Vec<(u64, i64)>,
    latest: u64,
}

impl Oracle {
    fn new(config: RetryBudgetConfig) -> Oracle {
        let (deposit, cost) = if config.retry_percent == 0 {
            (0, 1)
        } else {
            (1000, 100_000 / i64::from(config.retry_percent))
        };
        Oracle {
            slot_nanos: config.ttl.as_nanos() as u64 / 10,
            deposit,
            cost,
            reserve: i64::from(config.min_retries_per_sec) * config.ttl.as_secs() as i64 * cost,
            log: Vec::new(),
            latest: 0,
        }
    }

    fn slot(&mut self, now: Instant) -> u64 {
        self.latest = self.latest.max(now.as_nanos() / self.slot_nanos);
        self.latest
    }

    fn live(&self, slot: u64, sign: i64) -> i64 {
        self.log
            .iter()
            .filter(|(s, units)| slot - s < 10 && units.signum() == sign)
            .map(|(_, units)| units)
            .sum()
    }

    fn balance(&mut self, now: Instant) -> i64 {
        let slot = self.slot(now);
        self.reserve + self.live(slot, 1) + self.live(slot, -1)
    }
}

fn budget_config() -> impl Strategy<Value = RetryBudgetConfig> {
    (
        1u64..=60,
        0u32..30,
        prop_oneof![Just(20u32), Just(0), 1u32..=1000],
    )
        .prop_map(|(ttl, min, percent)| {
            RetryBudgetConfig::default()
                .with_ttl(Duration::from_secs(ttl))
                .with_min_retries_per_sec(min)
                .with_retry_percent(percent)
        })
}

proptest! {
    #![proptest_config(config(128))]

    /// `budget-bound`: every withdrawal decision and balance equals the oracle's recomputation;
    /// after every successful withdrawal, the withdrawals of the live window (10 slots = one ttl)
    /// cost no more than the window's deposits plus the reserve, i.e. charged retries ≤ ratio ×
    /// originals + min_per_sec × ttl.
    #[test]
    fn budget_matches_the_finagle_oracle(
        config in budget_config(),
        ops in prop::collection::vec((0u64..4_000, prop::bool::weighted(0.6)), 1..400),
    ) {
        let mut budget = RetryBudget::new(config).unwrap();
        let mut oracle = Oracle::new(config);
        prop_assert_eq!(budget.withdrawal_cost(), oracle.cost);
        prop_assert_eq!(budget.reserve(), oracle.reserve);
        let mut now = Instant::ZERO;
        for (advance_ms, deposit) in ops {
            // Sometimes stand still, sometimes jump more than a whole ttl.
            now += Duration::from_millis(advance_ms * config.ttl.as_secs() / 10);
            let op = if deposit { Op::Deposit } else { Op::Withdraw };
            match op {
                Op::Deposit => {
                    budget.deposit(now);
                    let slot = oracle.slot(now);
                    oracle.log.push((slot, oracle.deposit));
                }
                Op::Withdraw => {
                    let expected = oracle.balance(now) >= oracle.cost;
                    prop_assert_eq!(budget.try_withdraw(now), expected);
                    if expected {
                        let slot = oracle.slot(now);
                        oracle.log.push((slot, -oracle.cost));
                        let withdrawn = -oracle.live(slot, -1);
                        let deposited = oracle.live(slot, 1);
                        prop_assert!(withdrawn <= deposited + oracle.reserve);
                    }
                }
            }
            prop_assert_eq!(budget.balance(now), oracle.balance(now));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// `amplification-bound` and the budget experiment: amplification under total failure, over
// virtual time

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Event {
    /// A new logical call arrives and dispatches its original attempt.
    Arrive(usize),
    /// The attempt in flight for a call ends (always with a 503: the upstream is down).
    AttemptEnds(usize),
    /// A scheduled retry is dispatched.
    RetryDue(usize),
}

struct Experiment {
    /// Calls offered.
    calls: u64,
    /// Attempts dispatched (originals + retries).
    attempts: u64,
    /// Charged retries dispatched.
    charged: u64,
    /// Seconds from the first arrival to the last event.
    span_secs: u64,
    /// Attempts dispatched per call, in arrival order.
    per_call: Vec<u32>,
}

impl Experiment {
    /// Attempts per call over the calls that arrived in `[from, to)` (as fractions of the
    /// offered calls), away from the warm-up and the tail.
    fn steady_ratio(&self, from: f64, to: f64) -> f64 {
        let n = self.per_call.len() as f64;
        let calls = &self.per_call[(n * from) as usize..(n * to) as usize];
        calls.iter().map(|&a| f64::from(a)).sum::<f64>() / calls.len() as f64
    }
}

/// `rate` idempotent calls per second for `secs` seconds against an upstream that answers
/// every attempt with 503 after 50 ms; 3 attempts per call, 30 s deadline, exponential
/// backoff with jitter from a seeded RNG; with or without the per-origin budget.
fn amplification(rate: u64, secs: u64, with_budget: bool, seed: u64) -> Experiment {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut budget = RetryBudget::default();
    let request = RequestFacts {
        idempotent: true,
        keyed: false,
        body_replayable: true,
    };
    let ctx = ClassifyContext::default();
    let latency = Duration::from_millis(50);
    let total = (rate * secs) as usize;
    let mut ledgers = vec![AttemptLedger::new(3); total];
    let mut deadlines = vec![Instant::ZERO; total];
    let mut queue = BinaryHeap::new();
    let interval_nanos = 1_000_000_000 / rate;
    for call in 0..total {
        let at = Instant::from_nanos(call as u64 * interval_nanos);
        queue.push(Reverse((at, Event::Arrive(call))));
    }
    let mut result = Experiment {
        calls: total as u64,
        attempts: 0,
        charged: 0,
        span_secs: 0,
        per_call: vec![0; total],
    };
    while let Some(Reverse((now, event))) = queue.pop() {
        result.span_secs = now.as_nanos() / 1_000_000_000 + 1;
        match event {
            Event::Arrive(call) => {
                deadlines[call] = now + Duration::from_secs(30);
                budget.deposit(now);
                result.attempts += 1;
                result.per_call[call] += 1;
                queue.push(Reverse((now + latency, Event::AttemptEnds(call))));
            }
            Event::RetryDue(call) => {
                result.attempts += 1;
                result.per_call[call] += 1;
                queue.push(Reverse((now + latency, Event::AttemptEnds(call))));
            }
            Event::AttemptEnds(call) => {
                let outcome = AttemptOutcome::Response {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    elapsed: latency,
                };
                let c = classify(&outcome, &ctx);
                let ledger = &mut ledgers[call];
                let verdict = decide(&c, &request, &ServerDirectives::default(), ledger);
                let RetryVerdict::Retry(plan) = verdict else {
                    continue;
                };
                // Stand-in for backoff.rs: floor 1 s, doubling, jitter U(0, floor).
                let n = ledger.counted_attempts() - 1;
                let delay = Duration::from_secs(1 << n) + Duration::from_millis(rng.u64(0..1000));
                let input = ScheduleInput {
                    now,
                    deadline: deadlines[call],
                    delay,
                    min_delay: Duration::from_secs(1),
                    retry_after: None,
                    retry_after_cap: Duration::from_secs(60),
                    attempt_floor: Duration::ZERO,
                };
                let Schedule::Proceed { at, .. } = schedule(&input) else {
                    continue;
                };
                let paid = if with_budget {
                    budget.charge(now, verdict)
                } else {
                    verdict
                };
                if let RetryVerdict::Retry(_) = paid {
                    if plan.charge_budget {
                        result.charged += 1;
                    }
                    ledger.record(&paid);
                    queue.push(Reverse((at, Event::RetryDue(call))));
                }
            }
        }
    }
    result
}

/// The budget experiment (docs/spec/budget.md#arithmetic): with the upstream fully down and steady
/// offered load (100 calls/s for 300 s of virtual time), attempts per offered call stay at or under
/// 1.2 plus the reserve term with the budget, and are 3.0 without it.
///
/// Over a finite run the reserve is available once more than in steady state (the first
/// window, and the tail after arrivals stop while deposits are still live), so the whole-run
/// bound carries one extra reserve's worth of retries (min_per_sec × ttl) over the offered
/// calls; calls in the middle of the run show the steady state.
#[test]
fn amplification_with_and_without_budget() {
    let (rate, secs) = (100, 300);
    let with = amplification(rate, secs, true, 7);
    let without = amplification(rate, secs, false, 7);
    let ratio_with = with.attempts as f64 / with.calls as f64;
    let ratio_without = without.attempts as f64 / without.calls as f64;
    let steady_with = with.steady_ratio(0.1, 0.9);
    // Reserve term: min_retries_per_sec / offered rate = 10 / 100.
    let reserve_term = 10.0 / rate as f64;
    let edge_term = (10 * 10) as f64 / with.calls as f64;
    println!(
        "upstream down, {rate} calls/s for {secs} s of virtual time, 3 attempts per call:\n  \
         attempts per offered call with the budget:    {ratio_with:.4} over the whole run, \
         {steady_with:.4} in steady state (bound 1.2 + {reserve_term:.2} = {:.2})\n  \
         attempts per offered call without the budget: {ratio_without:.4}",
        1.2 + reserve_term
    );
    assert!(steady_with <= 1.2 + reserve_term + 0.002, "{steady_with}");
    assert!(ratio_with <= 1.2 + reserve_term + edge_term, "{ratio_with}");
    assert!(
        steady_with > 1.2,
        "the budget should let its 20 % through: {steady_with}"
    );
    assert_eq!(without.attempts, 3 * without.calls);
}

proptest! {
    #![proptest_config(config(12))]

    /// `amplification-bound`: under 100 % failure, charged retries ≤ 0.2 × originals + min_per_sec
    /// × (span + ttl), hence attempts / originals → ≤ 1.2 + reserve / traffic.
    #[test]
    fn amplification_is_bounded(rate in 5u64..200, secs in 20u64..80, seed in any::<u64>()) {
        let run = amplification(rate, secs, true, seed);
        let bound = run.calls / 5 + 10 * (run.span_secs + 10);
        prop_assert!(run.charged <= bound, "{} charged > {}", run.charged, bound);
        prop_assert_eq!(run.attempts, run.calls + run.charged);
    }
}
