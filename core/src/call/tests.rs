//! Unit tests of the call module's private parts: the attempt record, the concurrency limit,
//! and the engine's wakes.

use std::time::Duration;

use http::Method;

use super::step::{AttemptRecords, MAX_RECORDS};
use super::*;
use crate::{Instant, Origin};

#[test]
fn the_head_wait_starts_again_after_an_upload_that_outlasted_the_attempt() {
    let at = |secs| Instant::ZERO + Duration::from_secs(secs);
    let plan = AttemptPlan {
        number: 1,
        kind: AttemptKind::Original,
        reused: false,
        attempt_deadline: at(10),
        attempt_timeout: Duration::from_secs(10),
        call_deadline: at(30),
        idempotency_key: None,
        authorization: None,
    };
    assert_eq!(plan.head_deadline(at(4)), at(10), "written in time");
    assert_eq!(plan.head_deadline(at(15)), at(25), "a long upload");
    assert_eq!(plan.head_deadline(at(25)), at(30), "within the call");
}

#[test]
fn attempt_records_keep_order_past_the_inline_ones_and_stop_at_the_cap() {
    let record = |number| AttemptRecord {
        number,
        ..AttemptRecords::EMPTY
    };
    let mut records = AttemptRecords::new();
    assert!(records.is_empty());
    for n in 1..=2 {
        records.push(record(n));
    }
    assert!(matches!(records, AttemptRecords::Inline { .. }));
    for n in 3..=(MAX_RECORDS as u32 + 5) {
        records.push(record(n));
    }
    let numbers: Vec<u32> = records.as_slice().iter().map(|r| r.number).collect();
    assert_eq!(numbers, (1..=MAX_RECORDS as u32).collect::<Vec<_>>());
}

#[test]
fn limit_is_fifo_and_non_barging() {
    let mut limit = ConcurrencyLimit::new(2);
    assert!(limit.try_acquire(1));
    assert!(limit.try_acquire(2));
    assert!(!limit.try_acquire(3));
    assert!(!limit.try_acquire(4));
    assert_eq!(limit.release(), Some(3));
    assert_eq!(limit.in_use(), 2);
    // A newcomer queues behind the waiter even though... no permit is free anyway.
    assert!(!limit.try_acquire(5));
    assert_eq!(limit.release(), Some(4));
    assert_eq!(limit.release(), Some(5));
    assert_eq!(limit.release(), None);
    assert_eq!(limit.release(), None);
    assert_eq!(limit.in_use(), 0);
    assert_eq!(limit.release(), None, "an extra release never underflows");
    assert_eq!(limit.in_use(), 0);
}

#[test]
fn cancelling_a_waiter_frees_its_place_and_the_next_is_woken() {
    let mut limit = ConcurrencyLimit::new(1);
    assert!(limit.try_acquire('a'));
    assert!(!limit.try_acquire('b'));
    assert!(!limit.try_acquire('c'));
    assert!(limit.cancel(&'b'));
    assert!(!limit.cancel(&'b'), "cancel is idempotent");
    assert_eq!(limit.waiting(), 1);
    assert_eq!(limit.release(), Some('c'));
    assert_eq!(limit.release(), None);
    assert_eq!(limit.in_use(), 0);
    assert!(limit.try_acquire('d'));
}

#[test]
fn engine_wakes_the_next_call_when_a_permit_is_released() {
    let config = EngineConfig::default().with_max_concurrency(1);
    let mut engine: Engine<u32> = Engine::new(config, fastrand::Rng::with_seed(3)).unwrap();
    let origin = engine.origin_id(&Origin::new(crate::Scheme::Https, "a.example", 443));
    let now = Instant::ZERO;
    let mut first = engine
        .start_call(now, CallSpec::new(Method::GET, origin))
        .unwrap();
    let mut second = engine
        .start_call(now, CallSpec::new(Method::GET, origin))
        .unwrap();
    assert!(matches!(
        first.poll_step(now, &mut engine),
        Step::Connect { .. }
    ));
    assert!(matches!(
        second.poll_step(now, &mut engine),
        Step::Wait { .. }
    ));
    assert_eq!(second.phase(), CallPhase::WaitingForPermit);
    first.cancel(now, &mut engine);
    first.cancel(now, &mut engine);
    let woken: Vec<_> = std::iter::from_fn(|| engine.poll_event()).collect();
    assert!(woken
        .iter()
        .any(|e| matches!(e, EngineEvent::Wake(id) if *id == second.id())));
    assert!(matches!(
        second.poll_step(now, &mut engine),
        Step::Connect { .. }
    ));
    second.cancel(now, &mut engine);
    assert_eq!(engine.concurrency_in_use(), 0);
    assert_eq!(engine.pool().stats().connecting, 0);
    assert_eq!(engine.live_calls(), 0);
}
