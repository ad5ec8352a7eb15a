//! Ten thousand calls, with backoffs of seconds, on the virtual clock: the
//! run covers minutes of simulated time in a fraction of a second of real
//! time. (Wall time is printed, never asserted.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use breakwater::core::policy::breaker::{BreakerConfig, FailureRateRule};
use breakwater_testkit::{Reply, Sim};

#[test]
fn ten_thousand_calls_with_backoffs_take_no_real_time() {
    let mut sim = Sim::new(10_000);
    sim.server("https://api.test", |_, ctx| {
        if ctx.choices.chance(0.2) {
            Reply::new(503, "busy")
        } else {
            Reply::json("{}")
        }
    });
    // At this volume, runs of five 503s in a row are certain; the default
    // consecutive-failures breaker would (rightly) open. A 20 % error rate
    // is below the failure-rate rule's 50 %, which is what such a service uses.
    let breaker = BreakerConfig::default()
        .with_consecutive_failures(None)
        .with_failure_rate(Some(FailureRateRule::default()));
    let client = breakwater::Client::builder(sim.runtime(), "https://api.test/")
        .max_concurrency(50)
        .configure(|c| c.with_breaker(breaker))
        .build()
        .unwrap();
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    for worker in 0..50 {
        let (client, ok, failed) = (client.clone(), ok.clone(), failed.clone());
        sim.spawn(async move {
            for n in 0..200 {
                match client.get(&format!("items/{worker}/{n}")).send().await {
                    Ok(response) if response.status() == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
    }
    let wall = std::time::Instant::now();
    let (ok_done, failed_done) = (ok.clone(), failed.clone());
    let runtime = sim.runtime();
    sim.run(async move {
        while ok_done.load(Ordering::SeqCst) + failed_done.load(Ordering::SeqCst) < 10_000 {
            runtime
                .sleep_until(runtime.now() + Duration::from_millis(100))
                .await;
        }
    });
    let virtual_time = sim
        .now()
        .saturating_duration_since(breakwater::core::Instant::ZERO);
    println!(
        "10,000 calls: {} ok, {} failed after retries; {virtual_time:?} of virtual time in {:?} of wall time",
        ok.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
        wall.elapsed()
    );
    assert_eq!(
        ok.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst),
        10_000
    );
    // 20 % 503s and 3 attempts: about 0.8 % of calls exhaust their attempts.
    assert!(
        failed.load(Ordering::SeqCst) < 300,
        "{} failed",
        failed.load(Ordering::SeqCst)
    );
    assert!(
        virtual_time > Duration::from_secs(10),
        "backoffs of seconds were simulated"
    );
    let stats = client.stats();
    assert_eq!((stats.pool.active, stats.in_flight), (0, 0));
}
