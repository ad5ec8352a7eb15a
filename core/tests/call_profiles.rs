//! Per-origin profiles: a slow partner API gets its own timeouts, breaker and
//! limits, and cannot change how calls to another origin are treated.

use std::time::{Duration, SystemTime};

use breakwater_core::call::{CallSpec, Engine, EngineConfig, OriginProfile, Step};
use breakwater_core::policy::breaker::{BreakerConfig, BreakerStateKind};
use breakwater_core::policy::outcome::AttemptOutcome;
use breakwater_core::pool::OriginLimits;
use breakwater_core::{Instant, Origin, Scheme};
use http::{HeaderMap, Method, StatusCode};

fn origin(host: &str) -> Origin {
    Origin::new(Scheme::Https, host, 443)
}

/// Drives a call to its first send and returns the plan's attempt deadline.
fn first_send(
    engine: &mut Engine<u32>,
    origin: &Origin,
    now: Instant,
) -> (breakwater_core::call::Call<u32>, Instant) {
    let id = engine.origin_id(origin);
    let mut call = engine
        .start_call(now, CallSpec::new(Method::GET, id))
        .unwrap();
    loop {
        match call.poll_step(now, engine) {
            Step::Connect { .. } => call.handle_connected(now, engine, 1).unwrap(),
            Step::Send(plan) => return (call, plan.attempt_deadline),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_profile_gives_its_origin_its_own_timeouts_breaker_and_limits() {
    let partner = origin("partner.example");
    let internal = origin("internal.example");
    let config = EngineConfig::default().with_profile(
        partner.clone(),
        OriginProfile::default()
            .with_attempt_timeout(Duration::from_secs(2))
            .with_total_timeout(Duration::from_secs(5))
            .with_breaker(BreakerConfig::default().with_consecutive_failures(Some(1)))
            .with_limits(OriginLimits::default().with_max_connections(2)),
    );
    let mut engine: Engine<u32> = Engine::new(config, fastrand::Rng::with_seed(1)).unwrap();
    let now = Instant::from_nanos(1_000);

    let (mut to_partner, partner_deadline) = first_send(&mut engine, &partner, now);
    let (mut to_internal, internal_deadline) = first_send(&mut engine, &internal, now);
    assert_eq!(partner_deadline, now + Duration::from_secs(2));
    assert_eq!(internal_deadline, now + Duration::from_secs(10));
    assert_eq!(to_partner.deadline(), now + Duration::from_secs(5));
    assert_eq!(to_internal.deadline(), now + Duration::from_secs(30));

    // One 503 opens the partner's breaker (threshold 1); the internal one stays closed.
    let failure = AttemptOutcome::Response {
        status: StatusCode::BAD_GATEWAY,
        elapsed: Duration::from_millis(5),
    };
    for call in [&mut to_partner, &mut to_internal] {
        call.handle_attempt_outcome(
            now,
            &mut engine,
            failure,
            &HeaderMap::new(),
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        call.cancel(now, &mut engine);
    }
    let state = |engine: &Engine<u32>, o: &Origin| {
        let id = engine
            .pool()
            .origin_ids()
            .find(|&id| engine.pool().origin(id) == Some(o))
            .unwrap();
        engine.origin_health(id).unwrap().breaker().state().kind()
    };
    assert_eq!(state(&engine, &partner), BreakerStateKind::Open);
    assert_eq!(state(&engine, &internal), BreakerStateKind::Closed);

    // The partner's pool limit is 2, the internal origin keeps the default.
    let partner_id = engine.origin_id(&partner);
    let internal_id = engine.origin_id(&internal);
    assert_eq!(engine.pool().limits(partner_id).unwrap().max_connections, 2);
    assert_eq!(
        engine.pool().limits(internal_id).unwrap().max_connections,
        50
    );
}
