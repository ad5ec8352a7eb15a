//! The core's decisions: each is on the path of every call, so each must be cheap.

use std::hint::black_box;
use std::time::Duration;

use breakwater_core::backoff::BackoffPolicy;
use breakwater_core::breaker::{Breaker, BreakerConfig};
use breakwater_core::latency::{LatencyConfig, LatencyWindow};
use breakwater_core::outcome::BreakerEffect;
use breakwater_core::Instant;
use criterion::{criterion_group, criterion_main, Criterion};

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

criterion_group!(benches, breaker, latency, backoff);
criterion_main!(benches);
