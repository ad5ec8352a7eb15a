//! Property tests of the call orchestrator: 1–3 concurrent calls sharing one engine, random
//! scripted outcomes, random cancellation at any step. After every call has ended the engine
//! holds nothing, and along the way the safety rule, key stability, deadlines and attempt
//! limits held.

use std::time::{Duration, SystemTime};

use breakwater_core::call::{BodyEnd, Call, CallSpec, ConnectError, Engine, EngineConfig, Step};
use breakwater_core::policy::idempotency::IdempotencyKey;
use breakwater_core::policy::outcome::{classify, AttemptOutcome, ConnectFailure, OutcomePolicy};
use breakwater_core::pool::PoolConfig;
use breakwater_core::{Instant, Origin, Scheme};
use http::{HeaderMap, Method, StatusCode};
use proptest::prelude::*;

const RTT: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, Debug)]
enum Reply {
    Status(u16),
    RetryAfter(u16, u64),
    DeadBeforeWrite,
    ClosedBeforeResponse,
    ExchangeFailed,
    TimedOut,
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        3 => prop_oneof![Just(200u16), Just(404), Just(503), Just(500), Just(429), Just(409), Just(408)]
            .prop_map(Reply::Status),
        1 => (prop_oneof![Just(429u16), Just(503)], 0u64..5).prop_map(|(s, ra)| Reply::RetryAfter(s, ra)),
        1 => Just(Reply::DeadBeforeWrite),
        1 => Just(Reply::ClosedBeforeResponse),
        1 => Just(Reply::ExchangeFailed),
        1 => Just(Reply::TimedOut),
    ]
}

#[derive(Clone, Debug)]
struct CallPlan {
    post: bool,
    keyed: bool,
    max_attempts: u32,
    total_timeout_ms: u64,
    replies: Vec<Reply>,
    connect_ok: Vec<bool>,
    cancel_at_step: Option<usize>,
}

fn call_plan() -> impl Strategy<Value = CallPlan> {
    (
        any::<bool>(),
        any::<bool>(),
        1u32..5,
        100u64..40_000,
        prop::collection::vec(reply(), 1..8),
        prop::collection::vec(prop::bool::weighted(0.8), 1..8),
        prop::option::weighted(0.4, 0usize..12),
    )
        .prop_map(
            |(post, keyed, max_attempts, total_timeout_ms, replies, connect_ok, cancel_at_step)| {
                CallPlan {
                    post,
                    keyed,
                    max_attempts,
                    total_timeout_ms,
                    replies,
                    connect_ok,
                    cancel_at_step,
                }
            },
        )
}

/// What the model remembers about one call.
struct Running {
    call: Call<u32>,
    plan: CallPlan,
    steps: usize,
    replies: usize,
    connects: usize,
    deadline: Instant,
    keys: Vec<Option<String>>,
    /// Set once a send of this call may have reached the server.
    maybe_applied: bool,
    ended: bool,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn calls_sharing_an_engine_leak_nothing_and_keep_the_rules(
        plans in prop::collection::vec(call_plan(), 1..4),
        max_concurrency in 1usize..4,
        max_connections in 1usize..4,
        seed in any::<u64>(),
        order_seed in any::<u64>(),
    ) {
        let config = EngineConfig::default()
            .with_max_concurrency(max_concurrency)
            .with_pool(PoolConfig::default().with_max_connections(max_connections));
        let mut engine: Engine<u32> = Engine::new(config, fastrand::Rng::with_seed(seed)).unwrap();
        let origin = engine.origin_id(&Origin::new(Scheme::Https, "api.example.com", 443));
        let mut now = Instant::ZERO;
        let mut order = fastrand::Rng::with_seed(order_seed);
        let mut sockets = 0u32;

        let mut calls: Vec<Running> = plans
            .into_iter()
            .enumerate()
            .map(|(i, plan)| {
                let method = if plan.post { Method::POST } else { Method::GET };
                let mut spec = CallSpec::new(method, origin)
                    .with_max_attempts(plan.max_attempts)
                    .with_total_timeout(Duration::from_millis(plan.total_timeout_ms));
                if plan.keyed {
                    spec = spec.with_key(IdempotencyKey::new(&format!("key-{i}")).unwrap());
                }
                let call = engine.start_call(now, spec).unwrap();
                let deadline = call.deadline();
                Running {
                    call,
                    plan,
                    steps: 0,
                    replies: 0,
                    connects: 0,
                    deadline,
                    keys: Vec::new(),
                    maybe_applied: false,
                    ended: false,
                }
            })
            .collect();

        for _round in 0..2_000 {
            if calls.iter().all(|c| c.ended) {
                break;
            }
            let mut next_wake: Option<Instant> = None;
            let mut progressed = false;
            let start = order.usize(..calls.len());
            for k in 0..calls.len() {
                let i = (start + k) % calls.len();
                let r = &mut calls[i];
                if r.ended {
                    continue;
                }
                r.steps += 1;
                if r.plan.cancel_at_step == Some(r.steps) {
                    r.call.cancel(now, &mut engine);
                    r.call.cancel(now, &mut engine); // idempotent
                    r.ended = true;
                    progressed = true;
                    continue;
                }
                match r.call.poll_step(now, &mut engine) {
                    Step::Wait { until } => {
                        let until = until.expect("bounded waits");
                        prop_assert!(until <= r.deadline, "a wait past the deadline");
                        if until > now {
                            next_wake = Some(next_wake.map_or(until, |w: Instant| w.min(until)));
                        } else {
                            progressed = true;
                        }
                    }
                    Step::Connect { connect_deadline, .. } => {
                        progressed = true;
                        prop_assert!(connect_deadline <= r.deadline);
                        let ok = r.plan.connect_ok.get(r.connects).copied().unwrap_or(true);
                        r.connects += 1;
                        if ok {
                            sockets += 1;
                            r.call.handle_connected(now, &mut engine, sockets).unwrap();
                        } else {
                            r.call
                                .handle_connect_failed(now, &mut engine, ConnectError::Failed(ConnectFailure::Refused))
                                .unwrap();
                        }
                    }
                    Step::Send(plan) => {
                        progressed = true;
                        prop_assert!(now < r.deadline, "sent at {now:?}, deadline {:?}", r.deadline);
                        prop_assert!(plan.number <= r.plan.max_attempts);
                        let unsafe_request = r.plan.post && !r.plan.keyed;
                        prop_assert!(
                            !(unsafe_request && r.maybe_applied),
                            "an unkeyed POST was resent after it may have been applied"
                        );
                        r.keys.push(plan.idempotency_key.map(|(_, v)| v.to_str().unwrap().to_owned()));
                        let reply = r.plan.replies.get(r.replies).copied().unwrap_or(Reply::Status(200));
                        r.replies += 1;
                        let mut headers = HeaderMap::new();
                        let arrives = now + RTT;
                        let (outcome, at) = if arrives > plan.attempt_deadline {
                            let elapsed = plan.attempt_deadline - now;
                            (AttemptOutcome::AttemptTimedOut { elapsed }, plan.attempt_deadline)
                        } else {
                            let outcome = match reply {
                                Reply::Status(code) => AttemptOutcome::Response {
                                    status: StatusCode::from_u16(code).unwrap(),
                                    elapsed: RTT,
                                },
                                Reply::RetryAfter(code, secs) => {
                                    headers.insert("retry-after", secs.to_string().parse().unwrap());
                                    AttemptOutcome::Response {
                                        status: StatusCode::from_u16(code).unwrap(),
                                        elapsed: RTT,
                                    }
                                }
                                Reply::DeadBeforeWrite => {
                                    AttemptOutcome::ConnectionDeadBeforeWrite { reused: plan.reused }
                                }
                                Reply::ClosedBeforeResponse => {
                                    AttemptOutcome::ClosedBeforeResponse { reused: plan.reused }
                                }
                                Reply::ExchangeFailed => AttemptOutcome::ExchangeFailed,
                                Reply::TimedOut => AttemptOutcome::AttemptTimedOut { elapsed: RTT },
                            };
                            (outcome, arrives)
                        };
                        // The oracle: the outcome's evidence, read from the classification
                        // table (docs/spec/outcomes.md#evidence).
                        let ctx = OutcomePolicy::default().context(r.plan.keyed, false);
                        if !classify(&outcome, &ctx).evidence.proves_not_applied() {
                            r.maybe_applied = true;
                        }
                        // Time passes for this call's exchange (others see it too).
                        now = now.max(at);
                        r.call
                            .handle_attempt_outcome(now, &mut engine, outcome, &headers, SystemTime::UNIX_EPOCH)
                            .unwrap();
                    }
                    Step::Deliver => {
                        progressed = true;
                        r.call
                            .handle_body_finished(now, &mut engine, BodyEnd::Complete { reusable: true })
                            .unwrap();
                    }
                    Step::Done | Step::Fail(_) => {
                        progressed = true;
                        prop_assert!(now <= r.deadline, "ended at {now:?} after its deadline {:?}", r.deadline);
                        r.ended = true;
                    }
                    other => prop_assert!(false, "unexpected step {other:?}"),
                }
                while engine.poll_event().is_some() {}
            }
            if !progressed {
                let shared = engine.poll_timeout();
                let target = match (next_wake, shared) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => a.or(b).expect("someone waits for an instant"),
                };
                now = now.max(target);
                engine.handle_timeout(now);
                while engine.poll_event().is_some() {}
            }
        }
        prop_assert!(calls.iter().all(|c| c.ended), "a call never ended");

        for r in &calls {
            // Every send of one call carries the same key; keyed calls carry theirs.
            if let Some(first) = r.keys.first() {
                prop_assert!(r.keys.iter().all(|k| k == first));
                prop_assert_eq!(first.is_some(), r.plan.keyed);
            }
            prop_assert!(r.call.counted_attempts() <= r.plan.max_attempts);
        }
        let stats = engine.pool().stats();
        prop_assert_eq!(stats.active, 0);
        prop_assert_eq!(stats.connecting, 0);
        prop_assert_eq!(stats.waiting, 0);
        prop_assert_eq!(stats.opened - stats.closed, stats.idle as u64);
        prop_assert_eq!(engine.concurrency_in_use(), 0);
        prop_assert_eq!(engine.concurrency_waiting(), 0);
        prop_assert_eq!(engine.live_calls(), 0);
    }
}
