//! The call orchestrator, table-driven: scripted outcomes in, the exact sequence of steps and
//! instants out (docs/spec/call.md).

use std::time::{Duration, SystemTime};

use breakwater_core::call::{
    AttemptKind, BodyEnd, Call, CallErrorKind, CallSpec, Engine, EngineConfig, Step,
};
use breakwater_core::policy::auth::{AccessToken, TokenCacheConfig, TokenResponse};
use breakwater_core::policy::breaker::{BreakerConfig, BreakerStateKind};
use breakwater_core::policy::idempotency::IdempotencyKey;
use breakwater_core::policy::outcome::{AttemptOutcome, LocalExhaustion};
use breakwater_core::policy::retry::{GiveUpReason, RetryKind};
use breakwater_core::pool::{OriginId, PoolConfig};
use breakwater_core::{Instant, Origin, Scheme};
use http::{HeaderMap, Method, StatusCode};

const RTT: Duration = Duration::from_millis(10);

/// What the scripted server does with one send.
#[derive(Clone)]
enum Reply {
    Status(u16, &'static [(&'static str, &'static str)]),
    Outcome(AttemptOutcome),
}

fn status(code: u16) -> Reply {
    Reply::Status(code, &[])
}

/// What the driver saw, with the instant it saw it.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    FetchToken { background: bool },
    Wait(Instant),
    Connect(Instant),
    Send(Sent),
    Deliver(Instant),
    Done(Instant),
    Fail(Instant, CallErrorKind, Option<GiveUpReason>),
}

#[derive(Debug, Clone, PartialEq)]
struct Sent {
    at: Instant,
    number: u32,
    kind: AttemptKind,
    reused: bool,
    key: Option<String>,
    auth: Option<String>,
}

struct Harness {
    engine: Engine<u32>,
    origin: OriginId,
    now: Instant,
    sockets: u32,
    tokens: u32,
}

impl Harness {
    fn new(config: EngineConfig) -> Harness {
        let mut engine = Engine::new(config, fastrand::Rng::with_seed(42)).unwrap();
        let origin = engine.origin_id(&Origin::new(Scheme::Https, "api.example.com", 443));
        Harness {
            engine,
            origin,
            now: Instant::ZERO,
            sockets: 0,
            tokens: 0,
        }
    }

    fn spec(&self, method: Method) -> CallSpec {
        CallSpec::new(method, self.origin)
    }

    /// Runs one call to its end against `script`.
    fn run(&mut self, spec: CallSpec, script: &[Reply]) -> Vec<Seen> {
        let mut call = self.engine.start_call(self.now, spec).unwrap();
        self.drive(&mut call, script, usize::MAX)
    }

    /// Drives `call` until it ends or `max_steps` steps were taken.
    fn drive(&mut self, call: &mut Call<u32>, script: &[Reply], max_steps: usize) -> Vec<Seen> {
        let mut replies = script.iter().cloned();
        let mut seen = Vec::new();
        for _ in 0..max_steps {
            let step = call.poll_step(self.now, &mut self.engine);
            match step {
                Step::FetchToken { fetch, background } => {
                    seen.push(Seen::FetchToken { background });
                    self.tokens += 1;
                    let token = AccessToken::new(format!("t{}", self.tokens));
                    let response = TokenResponse::new(token, Some(Duration::from_secs(3600)));
                    self.engine
                        .handle_token_fetched(self.now, fetch, Ok(response))
                        .unwrap();
                }
                Step::Wait { until } => {
                    let until = until.expect("every wait here is bounded");
                    seen.push(Seen::Wait(until));
                    self.now = self.now.max(until);
                }
                Step::Connect { .. } => {
                    seen.push(Seen::Connect(self.now));
                    self.sockets += 1;
                    call.handle_connected(self.now, &mut self.engine, self.sockets)
                        .unwrap();
                }
                Step::Send(plan) => {
                    seen.push(Seen::Send(Sent {
                        at: self.now,
                        number: plan.number,
                        kind: plan.kind,
                        reused: plan.reused,
                        key: plan
                            .idempotency_key
                            .map(|(_, v)| v.to_str().unwrap().to_owned()),
                        auth: plan.authorization.map(|v| v.to_str().unwrap().to_owned()),
                    }));
                    assert!(call.connection_mut().is_some());
                    // No reply scripted: leave the call on the wire.
                    let Some(reply) = replies.next() else { break };
                    self.now += RTT;
                    let mut headers = HeaderMap::new();
                    let outcome = match reply {
                        Reply::Status(code, extra) => {
                            for (name, value) in extra {
                                headers.insert(*name, value.parse().unwrap());
                            }
                            AttemptOutcome::Response {
                                status: StatusCode::from_u16(code).unwrap(),
                                elapsed: RTT,
                            }
                        }
                        Reply::Outcome(outcome) => outcome,
                    };
                    call.handle_attempt_outcome(
                        self.now,
                        &mut self.engine,
                        outcome,
                        &headers,
                        SystemTime::UNIX_EPOCH,
                    )
                    .unwrap();
                }
                Step::Deliver => {
                    seen.push(Seen::Deliver(self.now));
                    call.handle_body_finished(
                        self.now,
                        &mut self.engine,
                        BodyEnd::Complete { reusable: true },
                    )
                    .unwrap();
                }
                Step::Done => {
                    seen.push(Seen::Done(self.now));
                    break;
                }
                Step::Fail(error) => {
                    seen.push(Seen::Fail(self.now, error.kind, error.give_up));
                    break;
                }
            }
            while self.engine.poll_event().is_some() {}
        }
        seen
    }

    fn assert_quiet(&self) {
        let stats = self.engine.pool().stats();
        assert_eq!(stats.active, 0, "no connection left checked out");
        assert_eq!(stats.connecting, 0);
        assert_eq!(stats.waiting, 0);
        assert_eq!(self.engine.concurrency_in_use(), 0);
        assert_eq!(self.engine.live_calls(), 0);
    }
}

fn t(ms: u64) -> Instant {
    Instant::from_nanos(ms * 1_000_000)
}

fn send(at: Instant, number: u32, kind: AttemptKind, reused: bool) -> Seen {
    Seen::Send(Sent {
        at,
        number,
        kind,
        reused,
        key: None,
        auth: None,
    })
}

fn sends(seen: &[Seen]) -> Vec<&Sent> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Send(sent) => Some(sent),
            _ => None,
        })
        .collect()
}

const ORIGINAL: AttemptKind = AttemptKind::Original;
const ORDINARY: AttemptKind = AttemptKind::Retry(RetryKind::Ordinary);

#[test]
fn get_200_on_a_fresh_connection() {
    let mut h = Harness::new(EngineConfig::default());
    let seen = h.run(h.spec(Method::GET), &[status(200)]);
    assert_eq!(
        seen,
        vec![
            Seen::Connect(t(0)),
            send(t(0), 1, ORIGINAL, false),
            Seen::Deliver(t(10)),
            Seen::Done(t(10)),
        ]
    );
    h.assert_quiet();
    assert_eq!(
        h.engine.pool().stats().idle,
        1,
        "the connection went back to the pool"
    );
}

#[test]
fn get_503_503_200_gives_three_sends_with_two_backoff_waits() {
    let mut h = Harness::new(EngineConfig::default());
    let seen = h.run(
        h.spec(Method::GET),
        &[status(503), status(503), status(200)],
    );
    let [Seen::Connect(c0), Seen::Send(s1), Seen::Wait(w1), Seen::Connect(c1), Seen::Send(s2), Seen::Wait(w2), Seen::Connect(c2), Seen::Send(s3), Seen::Deliver(_), Seen::Done(_)] =
        seen.as_slice()
    else {
        panic!("unexpected sequence {seen:#?}");
    };
    assert_eq!((*c0, s1.at, s1.number, s1.kind), (t(0), t(0), 1, ORIGINAL));
    // No latency estimate yet (2 samples < 10): floor 1 s; retry n waits floor·2^n + U(0, floor).
    let first_delay = *w1 - t(10);
    let second_delay = *w2 - (*w1 + RTT);
    assert!(first_delay >= Duration::from_secs(1) && first_delay <= Duration::from_secs(2));
    assert!(second_delay >= Duration::from_secs(2) && second_delay <= Duration::from_secs(3));
    // Each send happens exactly at its wait's instant, on a new connection (the 503's body
    // was unread, so its connection was not reused).
    assert_eq!(
        (*c1, s2.at, s2.number, s2.kind, s2.reused),
        (*w1, *w1, 2, ORDINARY, false)
    );
    assert_eq!(
        (*c2, s3.at, s3.number, s3.kind, s3.reused),
        (*w2, *w2, 3, ORDINARY, false)
    );
    h.assert_quiet();
}

#[test]
fn the_backoff_waits_replay_from_the_seed() {
    let run = || {
        let mut h = Harness::new(EngineConfig::default());
        h.run(
            h.spec(Method::GET),
            &[status(503), status(503), status(200)],
        )
    };
    assert_eq!(run(), run());
}

#[test]
fn post_without_key_reset_after_write_is_not_resent() {
    let mut h = Harness::new(EngineConfig::default());
    let seen = h.run(
        h.spec(Method::POST),
        &[Reply::Outcome(AttemptOutcome::ExchangeFailed)],
    );
    assert_eq!(
        seen,
        vec![
            Seen::Connect(t(0)),
            send(t(0), 1, ORIGINAL, false),
            Seen::Fail(
                t(10),
                CallErrorKind::Transport(
                    breakwater_core::policy::outcome::OutcomeRow::ExchangeFailed
                ),
                Some(GiveUpReason::UnsafeToResend)
            ),
        ]
    );
    h.assert_quiet();
    assert_eq!(
        h.engine.pool().stats().idle,
        0,
        "a broken connection is never pooled"
    );
}

#[test]
fn post_with_a_caller_key_sends_the_same_key_on_every_attempt() {
    let mut h = Harness::new(EngineConfig::default());
    let spec = h
        .spec(Method::POST)
        .with_key(IdempotencyKey::new("order-1234").unwrap());
    let seen = h.run(spec, &[status(503), status(200)]);
    let sent = sends(&seen);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].key.as_deref(), Some("order-1234"));
    assert_eq!(sent[1].key, sent[0].key);
    assert!(matches!(seen.last(), Some(Seen::Done(_))));
    h.assert_quiet();
}

#[test]
fn a_stale_reused_connection_is_replaced_once_for_free() {
    let mut h = Harness::new(EngineConfig::default());
    // Warm the pool: one idle connection.
    h.run(h.spec(Method::POST), &[status(200)]);
    let start = h.now;
    let seen = h.run(
        h.spec(Method::POST),
        &[
            Reply::Outcome(AttemptOutcome::ConnectionDeadBeforeWrite { reused: true }),
            status(200),
        ],
    );
    let transparent = AttemptKind::Retry(RetryKind::Transparent);
    assert_eq!(
        seen,
        vec![
            send(start, 1, ORIGINAL, true),
            // No wait: straight to a fresh connection, same attempt number.
            Seen::Connect(start + RTT),
            send(start + RTT, 1, transparent, false),
            Seen::Deliver(start + RTT * 2),
            Seen::Done(start + RTT * 2),
        ]
    );
    h.assert_quiet();
}

#[test]
fn a_transparent_retry_skips_other_idle_connections() {
    let mut h = Harness::new(EngineConfig::default());
    // Two idle connections: run two calls concurrently up to their sends, then finish both.
    let mut a = h.engine.start_call(h.now, h.spec(Method::GET)).unwrap();
    let mut b = h.engine.start_call(h.now, h.spec(Method::GET)).unwrap();
    h.drive(&mut a, &[], 3); // connect, then stop at send
    h.drive(&mut b, &[], 3);
    h.drive(&mut a, &[status(200)], 10);
    h.drive(&mut b, &[status(200)], 10);
    assert_eq!(h.engine.pool().stats().idle, 2);
    let seen = h.run(
        h.spec(Method::GET),
        &[
            Reply::Outcome(AttemptOutcome::ClosedBeforeResponse { reused: true }),
            status(200),
        ],
    );
    let sent = sends(&seen);
    assert_eq!(sent.len(), 2);
    assert!(sent[0].reused);
    assert!(
        !sent[1].reused,
        "the transparent retry used a fresh connection"
    );
    assert_eq!(sent[1].number, 1);
    h.assert_quiet();
}

#[test]
fn an_open_breaker_fails_the_call_without_connecting_or_sending() {
    let config = EngineConfig::default()
        .with_breaker(BreakerConfig::default().with_consecutive_failures(Some(1)));
    let mut h = Harness::new(config);
    // One attempt allowed: the 503 is delivered, and its failure trips the breaker.
    let first = h.run(h.spec(Method::GET).with_max_attempts(1), &[status(503)]);
    assert!(matches!(first.last(), Some(Seen::Done(_))));
    let health = h.engine.origin_health(h.origin).unwrap();
    assert_eq!(health.breaker().state().kind(), BreakerStateKind::Open);
    let seen = h.run(h.spec(Method::GET), &[]);
    let [Seen::Fail(at, CallErrorKind::CircuitOpen { retry_at, .. }, None)] = seen.as_slice()
    else {
        panic!("unexpected {seen:?}");
    };
    assert_eq!(*at, t(10));
    assert_eq!(*retry_at, Some(t(10) + Duration::from_secs(30)));
    h.assert_quiet();
}

#[test]
fn a_pool_timeout_fails_with_pool_exhausted_and_touches_neither_breaker_nor_budget() {
    let config = EngineConfig::default().with_pool(PoolConfig::default().with_max_connections(1));
    let mut h = Harness::new(config);
    // A first call holds the only connection (stopped right at its send).
    let mut holder = h.engine.start_call(h.now, h.spec(Method::GET)).unwrap();
    h.drive(&mut holder, &[], 3);
    let health = h.engine.origin_health(h.origin).unwrap();
    let breaker_before = health.breaker().state();
    let epoch_before = health.breaker().epoch();
    let budget_before = health.budget().balance(t(0));
    let seen = h.run(h.spec(Method::GET), &[]);
    assert_eq!(
        seen,
        vec![
            Seen::Wait(t(5_000)),
            Seen::Fail(
                t(5_000),
                CallErrorKind::PoolExhausted(LocalExhaustion::PoolTimeout),
                None
            ),
        ]
    );
    let health = h.engine.origin_health(h.origin).unwrap();
    assert_eq!(health.breaker().state(), breaker_before);
    assert_eq!(health.breaker().epoch(), epoch_before);
    assert_eq!(health.budget().balance(t(0)), budget_before);
    holder.cancel(h.now, &mut h.engine);
    h.assert_quiet();
}

#[test]
fn retry_after_2s_on_429_is_waited_for() {
    let mut h = Harness::new(EngineConfig::default());
    let seen = h.run(
        h.spec(Method::GET),
        &[Reply::Status(429, &[("retry-after", "2")]), status(200)],
    );
    let [Seen::Connect(_), Seen::Send(_), Seen::Wait(w), Seen::Connect(_), Seen::Send(s2), Seen::Deliver(_), Seen::Done(_)] =
        seen.as_slice()
    else {
        panic!("unexpected {seen:#?}");
    };
    let delay = *w - t(10);
    assert!(delay >= Duration::from_secs(2), "waited {delay:?}");
    assert!(
        delay <= Duration::from_secs(3),
        "RA band is [RA, 1.5 RA]: {delay:?}"
    );
    assert_eq!(s2.at, *w);
    // The gate stays for the origin until receipt + RA.
    let gate = h
        .engine
        .origin_health(h.origin)
        .unwrap()
        .gate()
        .not_before();
    assert_eq!(gate, t(10) + Duration::from_secs(2));
    h.assert_quiet();
}

#[test]
fn retry_after_above_the_cap_fails_rate_limited_with_the_instant() {
    let mut h = Harness::new(EngineConfig::default());
    let seen = h.run(
        h.spec(Method::GET),
        &[Reply::Status(503, &[("retry-after", "120")])],
    );
    assert_eq!(
        seen,
        vec![
            Seen::Connect(t(0)),
            send(t(0), 1, ORIGINAL, false),
            Seen::Fail(
                t(10),
                CallErrorKind::RateLimited {
                    until: t(10) + Duration::from_secs(120)
                },
                None
            ),
        ]
    );
    h.assert_quiet();
}

#[test]
fn a_backoff_that_would_end_past_the_deadline_is_not_waited_for() {
    let mut h = Harness::new(EngineConfig::default());
    let spec = h
        .spec(Method::GET)
        .with_total_timeout(Duration::from_millis(900));
    let seen = h.run(spec, &[status(503)]);
    assert_eq!(
        seen,
        vec![
            Seen::Connect(t(0)),
            send(t(0), 1, ORIGINAL, false),
            Seen::Fail(t(10), CallErrorKind::DeadlineExceeded, None),
        ]
    );
    h.assert_quiet();
}

#[test]
fn the_deadline_reached_while_waiting_fails_the_call() {
    let config = EngineConfig::default().with_pool(PoolConfig::default().with_max_connections(1));
    let mut h = Harness::new(config);
    let mut holder = h.engine.start_call(h.now, h.spec(Method::GET)).unwrap();
    h.drive(&mut holder, &[], 3);
    let spec = h
        .spec(Method::GET)
        .with_total_timeout(Duration::from_secs(2));
    let seen = h.run(spec, &[]);
    assert_eq!(
        seen,
        vec![
            Seen::Wait(t(2_000)),
            Seen::Fail(t(2_000), CallErrorKind::DeadlineExceeded, None),
        ]
    );
    holder.cancel(h.now, &mut h.engine);
    h.assert_quiet();
}

#[test]
fn a_401_refreshes_the_token_and_replays_once() {
    let config = EngineConfig::default().with_tokens(Some(TokenCacheConfig::default()));
    let mut h = Harness::new(config);
    let spec = h.spec(Method::GET).with_authenticated(true);
    let seen = h.run(spec, &[status(401), status(200)]);
    let replay = AttemptKind::Retry(RetryKind::AuthReplay);
    let expected = vec![
        Seen::FetchToken { background: false },
        Seen::Connect(t(0)),
        Seen::Send(Sent {
            at: t(0),
            number: 1,
            kind: ORIGINAL,
            reused: false,
            key: None,
            auth: Some("Bearer t1".into()),
        }),
        Seen::FetchToken { background: false },
        Seen::Connect(t(10)),
        Seen::Send(Sent {
            at: t(10),
            number: 1,
            kind: replay,
            reused: false,
            key: None,
            auth: Some("Bearer t2".into()),
        }),
        Seen::Deliver(t(20)),
        Seen::Done(t(20)),
    ];
    assert_eq!(seen, expected);
    // A second 401 is delivered: one replay only.
    let spec = h.spec(Method::GET).with_authenticated(true);
    let seen = h.run(spec, &[status(401), status(401)]);
    assert_eq!(sends(&seen).len(), 2);
    assert!(matches!(seen[seen.len() - 2], Seen::Deliver(_)));
    h.assert_quiet();
}

#[test]
fn a_404_is_delivered_without_retry() {
    let mut h = Harness::new(EngineConfig::default());
    let seen = h.run(h.spec(Method::GET), &[status(404)]);
    assert_eq!(
        seen,
        vec![
            Seen::Connect(t(0)),
            send(t(0), 1, ORIGINAL, false),
            Seen::Deliver(t(10)),
            Seen::Done(t(10)),
        ]
    );
    h.assert_quiet();
}

#[test]
fn exhausted_attempts_deliver_the_last_response() {
    let mut h = Harness::new(EngineConfig::default());
    let seen = h.run(
        h.spec(Method::GET),
        &[status(503), status(503), status(503)],
    );
    assert_eq!(sends(&seen).len(), 3);
    assert!(matches!(seen[seen.len() - 2], Seen::Deliver(_)));
    h.assert_quiet();
}
