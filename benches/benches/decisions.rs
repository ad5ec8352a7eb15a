//! The core's decisions: each is on the path of every call, so each must be cheap.

use std::hint::black_box;
use std::time::Duration;

use breakwater_core::policy::backoff::BackoffPolicy;
use breakwater_core::policy::breaker::{Breaker, BreakerConfig};
use breakwater_core::policy::budget::{RetryBudget, RetryBudgetConfig};
use breakwater_core::policy::latency::{LatencyConfig, LatencyWindow};
use breakwater_core::policy::outcome::{classify, AttemptOutcome, BreakerEffect, OutcomePolicy};
use breakwater_core::policy::retry::{decide, RequestFacts, RetryPolicy};
use breakwater_core::pool::{Acquired, Grant, Pool, PoolConfig};
use breakwater_core::{Instant, Origin};
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, StatusCode};

fn breaker(c: &mut Criterion) {
    let mut breaker = Breaker::new(BreakerConfig::default(), fastrand::Rng::with_seed(1)).unwrap();
    let mut now = Instant::from_nanos(1);
    c.bench_function("breaker admit + record (closed)", |b| {
        b.iter(|| {
            now += Duration::from_micros(1);
            let permit = breaker.try_acquire(now).unwrap();
            black_box(breaker.record(now, permit, BreakerEffect::Success))
        })
    });
}

fn latency(c: &mut Criterion) {
    let mut window = LatencyWindow::new(LatencyConfig::default());
    let mut now = Instant::from_nanos(1);
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..50 {
        window.record(now, Duration::from_micros(rng.u64(1_000..200_000)));
    }
    c.bench_function("p95 update + query (full window of 50)", |b| {
        b.iter(|| {
            now += Duration::from_micros(10);
            window.record(now, Duration::from_micros(rng.u64(1_000..200_000)));
            black_box(window.p95(now))
        })
    });
}

fn backoff(c: &mut Criterion) {
    let policy = BackoffPolicy::default();
    let mut rng = fastrand::Rng::with_seed(3);
    let p95 = Some(Duration::from_millis(180));
    c.bench_function("backoff delay (p95 floor, retry 2)", |b| {
        b.iter(|| black_box(policy.delay(black_box(2), p95, None, &mut rng)))
    });
}

fn pool(c: &mut Criterion) {
    let mut pool: Pool<u32> = Pool::new(PoolConfig::default());
    let origin =
        pool.origin_id(&Origin::from_uri(&"https://api.example.com".parse().unwrap()).unwrap());
    let mut now = Instant::from_nanos(1);
    // One connection opened and returned, so every checkout below finds it idle.
    let Ok(Acquired::Ready(Grant::Connect(reservation))) = pool.acquire(origin, None, now) else {
        panic!("an empty pool hands out a reservation")
    };
    let conn = pool.handle_connected(reservation, 7, now).unwrap();
    pool.handle_released(conn, 7, true, now).unwrap();
    c.bench_function("pool checkout + release (idle connection)", |b| {
        b.iter(|| {
            now += Duration::from_micros(1);
            let Ok(Acquired::Ready(Grant::Idle { conn, value })) = pool.acquire(origin, None, now)
            else {
                panic!("the idle connection is handed out")
            };
            pool.handle_released(conn, value, true, now).unwrap();
        })
    });
}

/// One retry decision after a 503 on a GET: classify, read directives, decide, pay, draw the delay.
fn retry_decision(c: &mut Criterion) {
    let policy = RetryPolicy::default();
    let outcome_policy = OutcomePolicy::default();
    let backoff = BackoffPolicy::default();
    let mut budget = RetryBudget::new(RetryBudgetConfig::default()).unwrap();
    let mut rng = fastrand::Rng::with_seed(5);
    let headers = HeaderMap::new();
    let wall = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let request = RequestFacts {
        idempotent: true,
        keyed: false,
        body_replayable: true,
    };
    let outcome = AttemptOutcome::Response {
        status: StatusCode::SERVICE_UNAVAILABLE,
        elapsed: Duration::from_millis(40),
    };
    let mut now = Instant::from_nanos(1);
    c.bench_function(
        "retry decision (503 on GET: classify, decide, pay, delay)",
        |b| {
            b.iter(|| {
                now += Duration::from_micros(1);
                budget.deposit(now);
                let ledger = policy.ledger();
                let classification = classify(&outcome, &outcome_policy.context(false, false));
                let directives = policy.directives(&headers, wall);
                let verdict = decide(&classification, &request, &directives, &ledger);
                let verdict = budget.charge(now, verdict);
                black_box((verdict, backoff.delay(1, None, None, &mut rng)))
            })
        },
    );
}

/// Every decision of one successful GET on a warm connection: start the call, admit it
/// (breaker, concurrency, pool checkout), classify the 200 (latency and breaker record),
/// release the connection and the permit.
fn successful_call(c: &mut Criterion) {
    use breakwater_core::call::{BodyEnd, CallSpec, Engine, EngineConfig, Step};
    let mut engine: Engine<u32> =
        Engine::new(EngineConfig::default(), fastrand::Rng::with_seed(9)).unwrap();
    let origin =
        engine.origin_id(&Origin::from_uri(&"https://api.example.com".parse().unwrap()).unwrap());
    let headers = HeaderMap::new();
    let wall = std::time::SystemTime::UNIX_EPOCH;
    let mut now = Instant::from_nanos(1);
    let run = |now: Instant, engine: &mut Engine<u32>| {
        let mut call = engine
            .start_call(now, CallSpec::new(http::Method::GET, origin))
            .unwrap();
        loop {
            match call.poll_step(now, engine) {
                Step::Connect { .. } => call.handle_connected(now, engine, 1).unwrap(),
                Step::Send(_) => {
                    let outcome = AttemptOutcome::Response {
                        status: StatusCode::OK,
                        elapsed: Duration::from_millis(2),
                    };
                    call.handle_attempt_outcome(now, engine, outcome, &headers, wall)
                        .unwrap()
                }
                Step::Deliver => call
                    .handle_body_finished(now, engine, BodyEnd::Complete { reusable: true })
                    .unwrap(),
                Step::Done => break,
                other => panic!("unexpected step {other:?}"),
            }
        }
        while engine.poll_event().is_some() {}
    };
    run(now, &mut engine); // opens the one connection every later call reuses
    c.bench_function("whole successful call's decisions (warm connection)", |b| {
        b.iter(|| {
            now += Duration::from_micros(1);
            run(now, &mut engine);
        })
    });
}

criterion_group!(
    benches,
    breaker,
    latency,
    backoff,
    pool,
    retry_decision,
    successful_call
);
criterion_main!(benches);
