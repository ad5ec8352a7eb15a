//! Unit tests of the pool machine: admission order, the queue, expiry, accounting and misuse.

use std::time::Duration;

use super::*;
use crate::{Instant, Origin, Scheme};

const SEC: Duration = Duration::from_secs(1);

fn at(secs: u64) -> Instant {
    Instant::ZERO + Duration::from_secs(secs)
}

fn origin(host: &str) -> Origin {
    Origin::new(Scheme::Https, host, 443)
}

fn pool(config: PoolConfig) -> (Pool<u32>, OriginId, OriginId) {
    let mut pool = Pool::new(config);
    let a = pool.origin_id(&origin("a.example"));
    let b = pool.origin_id(&origin("b.example"));
    (pool, a, b)
}

fn reservation(answer: Result<Acquired<u32>, AcquireError>) -> Reservation {
    match answer {
        Ok(Acquired::Ready(Grant::Connect(r))) => r,
        other => panic!("expected a reservation, got {other:?}"),
    }
}

fn idle(answer: Result<Acquired<u32>, AcquireError>) -> (ConnId, u32) {
    match answer {
        Ok(Acquired::Ready(Grant::Idle { conn, value })) => (conn, value),
        other => panic!("expected an idle connection, got {other:?}"),
    }
}

fn queued(answer: Result<Acquired<u32>, AcquireError>) -> WaiterId {
    match answer {
        Ok(Acquired::Queued(w)) => w,
        other => panic!("expected to queue, got {other:?}"),
    }
}

fn events(pool: &mut Pool<u32>) -> Vec<PoolEvent<u32>> {
    std::iter::from_fn(|| pool.poll_event()).collect()
}

/// Opens a connection for `o` and returns it checked out.
fn open(pool: &mut Pool<u32>, o: OriginId, value: u32, now: Instant) -> ConnId {
    let r = reservation(pool.acquire(o, None, now));
    pool.handle_connected(r, value, now).unwrap()
}

fn assert_accounting(pool: &Pool<u32>) {
    let s = pool.stats();
    assert_eq!(
        s.opened - s.closed,
        (s.active + s.idle + s.connecting) as u64
    );
}

#[test]
fn defaults_follow_the_production_client() {
    let c = PoolConfig::default();
    let l = c.limits_for(&origin("x"));
    assert_eq!(c.max_connections(), 50);
    assert_eq!(c.max_pending(), 1024);
    assert_eq!(l.max_connections, 50);
    assert_eq!(l.max_idle, 20);
    assert_eq!(l.idle_expiry, 30 * SEC);
    assert_eq!(l.max_lifetime, None);
    assert_eq!(l.pool_timeout, 5 * SEC);
    assert!(!l.plain_http_forbidden);
    assert_eq!(
        PoolConfig::default()
            .with_max_connections(0)
            .max_connections(),
        1
    );
}

#[test]
fn idle_connections_are_reused_most_recent_first() {
    let (mut p, a, _) = pool(PoolConfig::default());
    let c1 = open(&mut p, a, 1, at(0));
    let c2 = open(&mut p, a, 2, at(0));
    p.handle_released(c1, 1, true, at(1)).unwrap();
    p.handle_released(c2, 2, true, at(2)).unwrap();
    assert_eq!(idle(p.acquire(a, None, at(3))).1, 2);
    assert_eq!(idle(p.acquire(a, None, at(3))).1, 1);
    assert_eq!(p.stats().active, 2);
    assert_eq!(p.stats().opened, 2);
    assert_accounting(&p);
}

#[test]
fn a_stale_conn_id_is_refused_and_its_value_closed() {
    let (mut p, a, _) = pool(PoolConfig::default());
    let c1 = open(&mut p, a, 1, at(0));
    p.handle_released(c1, 1, true, at(0)).unwrap();
    let (c1b, _) = idle(p.acquire(a, None, at(0)));
    assert_ne!(c1, c1b);
    assert_eq!(
        p.handle_released(c1, 9, true, at(0)),
        Err(PoolError::UnknownConnection(c1))
    );
    assert_eq!(
        events(&mut p),
        vec![PoolEvent::Close {
            value: 9,
            reason: CloseReason::Unknown
        }]
    );
    assert_eq!(p.stats().active, 1);
    assert_eq!(
        p.handle_closed_by_peer(c1b, at(0)),
        Err(PoolError::WrongState {
            expected: SlotState::Idle,
            found: SlotState::Active
        })
    );
}

#[test]
fn idle_expiry_closes_instead_of_handing_out() {
    let (mut p, a, _) = pool(PoolConfig::default());
    let c = open(&mut p, a, 1, at(0));
    p.handle_released(c, 1, true, at(10)).unwrap();
    assert_eq!(p.poll_timeout(), Some(at(40)));
    // Just before expiry it is still reused.
    let (c, v) = idle(p.acquire(a, None, at(39)));
    p.handle_released(c, v, true, at(40)).unwrap();
    // At expiry it is closed on checkout and a new slot is reserved instead.
    let _r = reservation(p.acquire(a, None, at(70)));
    assert_eq!(
        events(&mut p),
        vec![PoolEvent::Close {
            value: 1,
            reason: CloseReason::IdleExpired
        }]
    );
    assert_accounting(&p);
}

#[test]
fn handle_timeout_closes_expired_idle_and_is_idempotent() {
    let (mut p, a, _) = pool(PoolConfig::default());
    let c = open(&mut p, a, 1, at(0));
    p.handle_released(c, 1, true, at(0)).unwrap();
    p.handle_timeout(at(29));
    assert!(events(&mut p).is_empty());
    p.handle_timeout(at(30));
    p.handle_timeout(at(30));
    p.handle_timeout(at(5)); // time going backwards is treated as the latest instant
    assert_eq!(
        events(&mut p),
        vec![PoolEvent::Close {
            value: 1,
            reason: CloseReason::IdleExpired
        }]
    );
    assert_eq!(p.poll_timeout(), None);
    assert_eq!(p.stats().idle, 0);
    assert_accounting(&p);
}

#[test]
fn lifetime_rotates_connections() {
    let config = PoolConfig::default().with_max_lifetime(Some(60 * SEC));
    let (mut p, a, _) = pool(config);
    let c1 = open(&mut p, a, 1, at(0));
    let c2 = open(&mut p, a, 2, at(20));
    // Past its lifetime when it comes back: closed, not reused.
    p.handle_released(c1, 1, true, at(61)).unwrap();
    assert_eq!(
        events(&mut p),
        vec![PoolEvent::Close {
            value: 1,
            reason: CloseReason::LifetimeExpired
        }]
    );
    // An idle connection reaching its lifetime is never handed out.
    p.handle_released(c2, 2, true, at(62)).unwrap();
    assert_eq!(p.poll_timeout(), Some(at(80)));
    let _r = reservation(p.acquire(a, None, at(80)));
    assert_eq!(
        events(&mut p),
        vec![PoolEvent::Close {
            value: 2,
            reason: CloseReason::LifetimeExpired
        }]
    );
    assert_accounting(&p);
}

#[test]
fn idle_limit_closes_the_least_recently_used() {
    let config = PoolConfig::default().with_max_idle_per_origin(1);
    let (mut p, a, _) = pool(config);
    let c1 = open(&mut p, a, 1, at(0));
    let c2 = open(&mut p, a, 2, at(0));
    p.handle_released(c1, 1, true, at(1)).unwrap();
    p.handle_released(c2, 2, true, at(2)).unwrap();
    assert_eq!(
        events(&mut p),
        vec![PoolEvent::Close {
            value: 1,
            reason: CloseReason::IdleLimit
        }]
    );
    assert_eq!(p.stats().idle, 1);
}

#[test]
fn waiters_are_served_in_order_and_newcomers_do_not_barge() {
    let config = PoolConfig::default().with_max_connections(1);
    let (mut p, a, _) = pool(config);
    let c = open(&mut p, a, 1, at(0));
    let w1 = queued(p.acquire(a, None, at(0)));
    let w2 = queued(p.acquire(a, None, at(0)));
    p.handle_released(c, 1, true, at(1)).unwrap();
    let granted = events(&mut p);
    let [PoolEvent::Granted {
        waiter,
        grant: Grant::Idle { conn, value: 1 },
    }] = &granted[..]
    else {
        panic!("{granted:?}")
    };
    assert_eq!(*waiter, w1);
    // w2 still waits; a newcomer queues behind it even though nothing is idle to take.
    let w3 = queued(p.acquire(a, None, at(1)));
    p.handle_released(*conn, 1, true, at(2)).unwrap();
    let granted = events(&mut p);
    assert!(matches!(&granted[..], [PoolEvent::Granted { waiter, .. }] if *waiter == w2));
    assert_eq!(p.stats().waiting, 1);
    p.cancel_waiter(w3, at(2)).unwrap();
    assert_eq!(
        p.cancel_waiter(w3, at(2)),
        Err(PoolError::UnknownWaiter(w3))
    );
}

#[test]
fn a_freed_slot_goes_to_the_oldest_waiter_across_origins() {
    let config = PoolConfig::default().with_max_connections(2);
    let (mut p, a, b) = pool(config);
    let a1 = open(&mut p, a, 1, at(0));
    let a2 = open(&mut p, a, 2, at(0));
    let wb = queued(p.acquire(b, None, at(1)));
    let wa = queued(p.acquire(a, None, at(2)));
    // A releases a reusable connection, but B has waited longer: A's connection is
    // closed and its slot goes to B, so A cannot starve B by passing connections along.
    p.handle_released(a1, 1, true, at(3)).unwrap();
    let ev = events(&mut p);
    assert!(
        matches!(
            &ev[..],
            [
                PoolEvent::Close { value: 1, reason: CloseReason::Evicted },
                PoolEvent::Granted { waiter, grant: Grant::Connect(r) },
            ] if *waiter == wb && r.origin() == b
        ),
        "{ev:?}"
    );
    // The next release is A's to reuse.
    p.handle_released(a2, 2, true, at(4)).unwrap();
    let ev = events(&mut p);
    assert!(
        matches!(&ev[..], [PoolEvent::Granted { waiter, grant: Grant::Idle { value: 2, .. } }] if *waiter == wa),
        "{ev:?}"
    );
    assert_accounting(&p);
}

#[test]
fn an_idle_connection_of_another_origin_makes_room() {
    let config = PoolConfig::default().with_max_connections(1);
    let (mut p, a, b) = pool(config);
    let c = open(&mut p, a, 1, at(0));
    p.handle_released(c, 1, true, at(0)).unwrap();
    let _r = reservation(p.acquire(b, None, at(1)));
    assert_eq!(
        events(&mut p),
        vec![PoolEvent::Close {
            value: 1,
            reason: CloseReason::Evicted
        }]
    );
    assert_eq!(p.origin_stats(a).unwrap().idle, 0);
    assert_eq!(p.origin_stats(b).unwrap().connecting, 1);
}

#[test]
fn per_origin_limits_isolate_a_slow_partner() {
    let config = PoolConfig::default()
        .with_max_connections(3)
        .with_origin_limits(
            origin("a.example"),
            OriginLimits::default().with_max_connections(1),
        );
    let (mut p, a, b) = pool(config);
    let _a1 = open(&mut p, a, 1, at(0));
    let wa = queued(p.acquire(a, None, at(0)));
    // B still gets slots although A's request waits.
    let _b1 = reservation(p.acquire(b, None, at(0)));
    let _b2 = reservation(p.acquire(b, None, at(0)));
    let _wb = queued(p.acquire(b, None, at(0)));
    assert_eq!(p.origin_stats(a).unwrap().waiting, 1);
    assert_eq!(wa.origin(), a);
    assert_eq!(p.stats().connecting + p.stats().active, 3);
}

#[test]
fn plain_http_can_be_forbidden() {
    let plain = Origin::new(Scheme::Http, "legacy.example", 80);
    let local = Origin::new(Scheme::Http, "localhost", 8080);
    let config = PoolConfig::default()
        .with_plain_http_forbidden(true)
        .with_origin_limits(
            local.clone(),
            OriginLimits::default().with_plain_http_forbidden(false),
        );
    let mut p: Pool<u32> = Pool::new(config);
    let plain = p.origin_id(&plain);
    let local = p.origin_id(&local);
    let tls = p.origin_id(&origin("a.example"));
    assert_eq!(
        p.acquire(plain, None, at(0)),
        Err(AcquireError::PlainHttpForbidden { origin: plain })
    );
    let _ = reservation(p.acquire(local, None, at(0)));
    let _ = reservation(p.acquire(tls, None, at(0)));
}

#[test]
fn cancelling_a_reservation_frees_the_slot_for_a_waiter() {
    let config = PoolConfig::default().with_max_connections(1);
    let (mut p, a, b) = pool(config);
    let r = reservation(p.acquire(a, None, at(0)));
    let w = queued(p.acquire(b, None, at(0)));
    // The request that was opening a connection is dropped mid-connect.
    p.cancel_reservation(r, at(1)).unwrap();
    let ev = events(&mut p);
    let [PoolEvent::Granted {
        waiter,
        grant: Grant::Connect(r2),
    }] = &ev[..]
    else {
        panic!("{ev:?}")
    };
    assert_eq!(*waiter, w);
    assert_eq!(r2.origin(), b);
    assert_eq!(p.stats().connecting, 1);
    assert_accounting(&p);
}

#[test]
fn a_grant_to_a_cancelled_waiter_passes_to_the_next() {
    let config = PoolConfig::default().with_max_connections(1);
    let (mut p, a, _) = pool(config);
    let r = reservation(p.acquire(a, None, at(0)));
    let w1 = queued(p.acquire(a, None, at(0)));
    let w2 = queued(p.acquire(a, None, at(0)));
    p.handle_connect_failed(r, at(1)).unwrap();
    // w1 is granted a slot, but is cancelled before the driver drained the grant.
    p.cancel_waiter(w1, at(1)).unwrap();
    let ev = events(&mut p);
    assert!(
        matches!(&ev[..], [PoolEvent::Granted { waiter, grant: Grant::Connect(_) }] if *waiter == w2),
        "{ev:?}"
    );
    assert_eq!(p.stats().connecting, 1);
    assert_eq!(p.stats().waiting, 0);
    assert_accounting(&p);
}

#[test]
fn a_revoked_idle_grant_keeps_its_idle_age() {
    let config = PoolConfig::default().with_max_connections(1);
    let (mut p, a, _) = pool(config);
    let c = open(&mut p, a, 1, at(0));
    let w = queued(p.acquire(a, None, at(0)));
    p.handle_released(c, 1, true, at(1)).unwrap();
    p.cancel_waiter(w, at(2)).unwrap();
    assert_eq!(p.stats().idle, 1);
    assert_eq!(p.poll_timeout(), Some(at(31)));
}

#[test]
fn waiters_time_out_at_the_earlier_of_pool_timeout_and_their_deadline() {
    let config = PoolConfig::default().with_max_connections(1);
    let (mut p, a, _) = pool(config);
    let _c = open(&mut p, a, 1, at(0));
    let w1 = queued(p.acquire(a, None, at(0)));
    let w2 = queued(p.acquire(a, Some(at(2)), at(0)));
    assert_eq!(p.poll_timeout(), Some(at(2)));
    p.handle_timeout(at(2));
    assert_eq!(events(&mut p), vec![PoolEvent::TimedOut { waiter: w2 }]);
    assert_eq!(p.poll_timeout(), Some(at(5)));
    p.handle_timeout(at(5));
    assert_eq!(events(&mut p), vec![PoolEvent::TimedOut { waiter: w1 }]);
    assert_eq!(p.stats().timed_out, 2);
}

#[test]
fn a_full_queue_refuses() {
    let config = PoolConfig::default()
        .with_max_connections(1)
        .with_max_pending(1);
    let (mut p, a, b) = pool(config);
    let _c = open(&mut p, a, 1, at(0));
    let _w = queued(p.acquire(a, None, at(0)));
    assert_eq!(
        p.acquire(b, None, at(0)),
        Err(AcquireError::QueueFull { origin: b })
    );
    assert_eq!(p.stats().rejected, 1);
}

#[test]
fn closing_drains_idle_fails_waiters_and_closes_returns() {
    let config = PoolConfig::default().with_max_connections(2);
    let (mut p, a, b) = pool(config);
    let c1 = open(&mut p, a, 1, at(0));
    let c2 = open(&mut p, a, 2, at(0));
    p.handle_released(c1, 1, true, at(0)).unwrap();
    let _ = reservation(p.acquire(b, None, at(0))); // evicts 1
    let r = p.poll_event();
    assert_eq!(
        r,
        Some(PoolEvent::Close {
            value: 1,
            reason: CloseReason::Evicted
        })
    );
    let w = queued(p.acquire(b, None, at(0)));
    p.close(at(1));
    assert_eq!(events(&mut p), vec![PoolEvent::PoolClosed { waiter: w }]);
    assert_eq!(p.acquire(a, None, at(1)), Err(AcquireError::Closed));
    p.handle_released(c2, 2, true, at(1)).unwrap();
    assert_eq!(
        events(&mut p),
        vec![PoolEvent::Close {
            value: 2,
            reason: CloseReason::PoolClosed
        }]
    );
    assert!(p.is_closed());
}

#[test]
fn peer_closed_idle_connection_frees_its_slot() {
    let config = PoolConfig::default().with_max_connections(1);
    let (mut p, a, b) = pool(config);
    let c = open(&mut p, a, 1, at(0));
    p.handle_released(c, 1, true, at(0)).unwrap();
    assert_eq!(p.handle_closed_by_peer(c, at(1)), Ok(1));
    assert_eq!(p.stats().idle, 0);
    let _ = reservation(p.acquire(b, None, at(1)));
    assert!(events(&mut p).is_empty());
    assert_accounting(&p);
}

#[test]
fn unusable_release_closes_and_wakes_a_waiter() {
    let config = PoolConfig::default().with_max_connections(1);
    let (mut p, a, _) = pool(config);
    let c = open(&mut p, a, 1, at(0));
    let w = queued(p.acquire(a, None, at(0)));
    p.handle_released(c, 1, false, at(1)).unwrap();
    let ev = events(&mut p);
    assert!(
        matches!(
            &ev[..],
            [
                PoolEvent::Close { value: 1, reason: CloseReason::Unusable },
                PoolEvent::Granted { waiter, grant: Grant::Connect(_) },
            ] if *waiter == w
        ),
        "{ev:?}"
    );
}
