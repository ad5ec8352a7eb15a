//! Property tests of pool admission (the pool invariants of docs/spec/invariants.md): random
//! sequences of acquires, connects, failed connects, releases (reusable or not), peer closes,
//! cancelled waiters and reservations (also while their grant is still undrained), clock advances
//! and a pool close, over three origins with small limits. After every step the pool is checked
//! against a model of what the driver holds:
//!
//! - accounting: `opened - closed = active + idle + connecting`, and the gauges equal what the
//!   driver model holds;
//! - limits: `active + idle + connecting` within the total and every per-origin limit; waiting
//!   requests within `max_pending`;
//! - work conservation: no origin has waiters while it has an idle connection, or while it is
//!   under its own limit and the total has a free slot or an idle connection to close;
//! - deadlines: after `handle_timeout(now)`, no waiter is left whose deadline is `<= now`, and
//!   no waiter is timed out before its deadline;
//! - freshness: no connection is handed out at or after its idle expiry or lifetime;
//! - FIFO and non-barging: a waiter is granted only when no older waiter of its origin is
//!   still waiting, and `acquire` serves at once only when its origin has no waiters;
//! - nothing lost: every connection value is closed at most once, only from the pool's
//!   custody, and after closing the pool and returning everything all are closed.

use std::collections::BTreeMap;
use std::time::Duration;

use breakwater_core::pool::{
    AcquireError, Acquired, ConnId, Grant, OriginId, OriginLimits, Pool, PoolConfig, PoolEvent,
    Reservation, WaiterId,
};
use breakwater_core::{Instant, Origin, Scheme};
use proptest::prelude::*;

const ORIGINS: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Acquire {
        origin: usize,
        deadline_secs: Option<u64>,
    },
    Connect {
        pick: usize,
        ok: bool,
    },
    CancelReservation {
        pick: usize,
    },
    Release {
        pick: usize,
        reusable: bool,
    },
    CancelWaiter {
        pick: usize,
    },
    PeerClose {
        pick: usize,
    },
    Advance {
        secs: u64,
    },
    /// The clock moves but the driver's timer has not fired yet (a late timer).
    LateTimer {
        secs: u64,
    },
    /// Injected at most once per run (`close_at`): closing ends the interesting part.
    Close,
}

#[derive(Clone, Debug)]
struct Setup {
    max_connections: usize,
    a_max_connections: usize,
    max_idle: usize,
    max_pending: usize,
    c_max_pending: usize,
}

fn setup() -> impl Strategy<Value = Setup> {
    (1usize..=3, 1usize..=2, 0usize..=2, 2usize..=6, 1usize..=3).prop_map(|(t, a, i, p, c)| Setup {
        max_connections: t,
        a_max_connections: a,
        max_idle: i,
        max_pending: p,
        c_max_pending: c,
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..ORIGINS, prop::option::of(1u64..8))
            .prop_map(|(origin, deadline_secs)| Op::Acquire { origin, deadline_secs }),
        3 => (any::<usize>(), prop::bool::weighted(0.8)).prop_map(|(pick, ok)| Op::Connect { pick, ok }),
        1 => any::<usize>().prop_map(|pick| Op::CancelReservation { pick }),
        5 => (any::<usize>(), prop::bool::weighted(0.7))
            .prop_map(|(pick, reusable)| Op::Release { pick, reusable }),
        2 => any::<usize>().prop_map(|pick| Op::CancelWaiter { pick }),
        1 => any::<usize>().prop_map(|pick| Op::PeerClose { pick }),
        2 => (1u64..6).prop_map(|secs| Op::LateTimer { secs }),
        3 => prop_oneof![4 => Just(0u64), 4 => 1u64..3, 2 => 3u64..12, 1 => Just(30)].prop_map(|secs| Op::Advance { secs }),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Custody {
    /// Checked out by the driver.
    Held,
    /// Handed to the pool (released) at `since`; the pool may close it or pass it on.
    Pooled {
        since: Instant,
    },
    Closed,
}

#[derive(Debug)]
struct ConnModel {
    origin: OriginId,
    opened_at: Instant,
    custody: Custody,
    last_id: ConnId,
}

struct Harness {
    pool: Pool<u32>,
    origins: Vec<OriginId>,
    now: Instant,
    closed: bool,
    next_value: u32,
    reservations: Vec<Reservation>,
    held: Vec<(ConnId, u32)>,
    /// Waiters the driver has not seen answered, with their deadline.
    waiters: BTreeMap<WaiterId, Instant>,
    conns: BTreeMap<u32, ConnModel>,
    /// Every pending event was made by the current step (the previous one drained), so the
    /// pool's state at drain time is the state the events were decided in.
    fresh: bool,
}

fn at(secs: u64) -> Instant {
    Instant::ZERO + Duration::from_secs(secs)
}

fn origin(i: usize) -> Origin {
    Origin::new(
        Scheme::Https,
        ["a.example", "b.example", "c.example"][i],
        443,
    )
}

impl Harness {
    fn new(s: &Setup) -> Harness {
        let config = PoolConfig::default()
            .with_max_connections(s.max_connections)
            .with_max_idle_per_origin(s.max_idle)
            .with_idle_expiry(Duration::from_secs(10))
            .with_max_pending(s.max_pending)
            .with_pool_timeout(Duration::from_secs(5))
            .with_origin_limits(
                origin(0),
                OriginLimits::default().with_max_connections(s.a_max_connections),
            )
            .with_origin_limits(
                origin(1),
                OriginLimits::default().with_max_lifetime(Some(Duration::from_secs(8))),
            )
            .with_origin_limits(
                origin(2),
                OriginLimits::default()
                    .with_max_pending(s.c_max_pending)
                    .with_pool_timeout(Duration::from_secs(3))
                    .with_idle_expiry(Duration::from_secs(4)),
            );
        let mut pool = Pool::new(config);
        let origins = (0..ORIGINS).map(|i| pool.origin_id(&origin(i))).collect();
        Harness {
            pool,
            origins,
            now: at(0),
            closed: false,
            next_value: 0,
            reservations: Vec::new(),
            held: Vec::new(),
            waiters: BTreeMap::new(),
            conns: BTreeMap::new(),
            fresh: true,
        }
    }

    fn step(&mut self, op: Op, drain: bool) -> Result<(), TestCaseError> {
        let now = self.now;
        match op {
            Op::Acquire {
                origin,
                deadline_secs,
            } => {
                let o = self.origins[origin];
                let before = self.pool.origin_stats(o).unwrap();
                let total_before = self.pool.stats();
                let limits = *self.pool.limits(o).unwrap();
                let deadline = deadline_secs.map(|s| now + Duration::from_secs(s));
                match self.pool.acquire(o, deadline, now) {
                    Err(AcquireError::Closed) => prop_assert!(self.closed),
                    Err(AcquireError::QueueFull { origin }) => {
                        prop_assert_eq!(origin, o);
                        prop_assert!(
                            total_before.waiting >= self.pool.config().max_pending()
                                || before.waiting >= limits.max_pending
                        );
                    }
                    Err(e) => prop_assert!(false, "unexpected refusal {:?}", e),
                    Ok(Acquired::Ready(grant)) => {
                        prop_assert!(!self.closed);
                        prop_assert_eq!(before.waiting, 0, "served at once past waiters");
                        self.take_grant(o, grant)?;
                    }
                    Ok(Acquired::Queued(w)) => {
                        prop_assert!(!self.closed);
                        prop_assert_eq!(w.origin(), o);
                        let mut until = now + limits.pool_timeout;
                        if let Some(d) = deadline {
                            until = until.min(d);
                        }
                        self.waiters.insert(w, until);
                    }
                }
            }
            Op::Connect { pick, ok } => {
                if !self.reservations.is_empty() {
                    let r = self
                        .reservations
                        .swap_remove(pick % self.reservations.len());
                    if ok {
                        let origin = r.origin();
                        let value = self.next_value;
                        self.next_value += 1;
                        let id = self.pool.handle_connected(r, value, now).unwrap();
                        self.conns.insert(
                            value,
                            ConnModel {
                                origin,
                                opened_at: now,
                                custody: Custody::Held,
                                last_id: id,
                            },
                        );
                        self.held.push((id, value));
                    } else {
                        self.pool.handle_connect_failed(r, now).unwrap();
                    }
                }
            }
            Op::CancelReservation { pick } => {
                if !self.reservations.is_empty() {
                    let r = self
                        .reservations
                        .swap_remove(pick % self.reservations.len());
                    self.pool.cancel_reservation(r, now).unwrap();
                }
            }
            Op::Release { pick, reusable } => {
                if !self.held.is_empty() {
                    let (id, value) = self.held.swap_remove(pick % self.held.len());
                    self.pool.handle_released(id, value, reusable, now).unwrap();
                    self.conns.get_mut(&value).unwrap().custody = Custody::Pooled { since: now };
                    if drain {
                        // A connection past its lifetime is closed when it comes back.
                        self.drain()?;
                        let model = &self.conns[&value];
                        let limits = self.pool.limits(model.origin).unwrap();
                        if let Some(lifetime) = limits.max_lifetime {
                            if model.opened_at + lifetime <= now {
                                prop_assert_eq!(model.custody, Custody::Closed);
                            }
                        }
                    }
                }
            }
            Op::CancelWaiter { pick } => {
                if !self.waiters.is_empty() {
                    let w = *self.waiters.keys().nth(pick % self.waiters.len()).unwrap();
                    // Whether still queued or answered by an undrained event, cancelling works.
                    self.pool.cancel_waiter(w, now).unwrap();
                    self.waiters.remove(&w);
                }
            }
            Op::PeerClose { pick } => {
                self.drain()?;
                let idle: Vec<u32> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| matches!(c.custody, Custody::Pooled { .. }))
                    .map(|(v, _)| *v)
                    .collect();
                if !idle.is_empty() {
                    let value = idle[pick % idle.len()];
                    let conn = self.conns.get_mut(&value).unwrap();
                    prop_assert_eq!(
                        self.pool.handle_closed_by_peer(conn.last_id, now),
                        Ok(value)
                    );
                    conn.custody = Custody::Closed;
                }
            }
            Op::Advance { secs } => {
                // Events are drained at the instant they were made, as a driver does.
                self.drain()?;
                self.now = now + Duration::from_secs(secs);
                self.pool.handle_timeout(self.now);
                self.drain()?;
                for (w, deadline) in &self.waiters {
                    prop_assert!(
                        *deadline > self.now,
                        "{:?} still waits past {:?}",
                        w,
                        deadline
                    );
                }
                // Nothing stays idle past its expiry or lifetime once the timer is handled.
                for c in self.conns.values() {
                    if let Custody::Pooled { since } = c.custody {
                        let limits = self.pool.limits(c.origin).unwrap();
                        prop_assert!(since + limits.idle_expiry > self.now);
                        if let Some(lifetime) = limits.max_lifetime {
                            prop_assert!(c.opened_at + lifetime > self.now);
                        }
                    }
                }
                if let Some(next) = self.pool.poll_timeout() {
                    prop_assert!(next > self.now, "poll_timeout {:?} not in the future", next);
                }
            }
            Op::LateTimer { secs } => {
                self.drain()?;
                self.now = now + Duration::from_secs(secs);
            }
            Op::Close => {
                self.pool.close(now);
                self.closed = true;
            }
        }
        if drain {
            self.drain()?;
        }
        self.fresh = drain;
        self.check(drain)
    }

    /// A grant reaches the driver (at once, or through a drained event).
    fn take_grant(&mut self, origin: OriginId, grant: Grant<u32>) -> Result<(), TestCaseError> {
        match grant {
            Grant::Connect(r) => {
                prop_assert_eq!(r.origin(), origin);
                self.reservations.push(r);
            }
            Grant::Idle { conn, value } => {
                let limits = *self.pool.limits(origin).unwrap();
                let model = self.conns.get_mut(&value).unwrap();
                prop_assert_eq!(model.origin, origin);
                let Custody::Pooled { since } = model.custody else {
                    return Err(TestCaseError::fail(format!(
                        "{value} handed out from {model:?}"
                    )));
                };
                prop_assert!(
                    self.now < since + limits.idle_expiry,
                    "handed out after idle expiry"
                );
                if let Some(lifetime) = limits.max_lifetime {
                    prop_assert!(
                        self.now < model.opened_at + lifetime,
                        "handed out after lifetime"
                    );
                }
                model.custody = Custody::Held;
                model.last_id = conn;
                self.held.push((conn, value));
            }
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<(), TestCaseError> {
        while let Some(event) = self.pool.poll_event() {
            match event {
                PoolEvent::Granted { waiter, grant } => {
                    // Events are drained at the instant they were made: a waiter past its
                    // deadline is timed out, not served.
                    let deadline = self.waiters.get(&waiter).copied();
                    prop_assert!(
                        deadline.is_none_or(|d| d > self.now),
                        "granted after deadline"
                    );
                    prop_assert!(
                        self.waiters.remove(&waiter).is_some(),
                        "unknown {:?}",
                        waiter
                    );
                    let older = self
                        .waiters
                        .keys()
                        .find(|w| w.origin() == waiter.origin() && **w < waiter);
                    prop_assert!(
                        older.is_none(),
                        "{:?} granted before older {:?}",
                        waiter,
                        older
                    );
                    if self.fresh {
                        self.check_cross_origin_order(waiter)?;
                    }
                    self.take_grant(waiter.origin(), grant)?;
                }
                PoolEvent::TimedOut { waiter } => {
                    let deadline = self.waiters.remove(&waiter);
                    prop_assert!(deadline.is_some(), "unknown {:?}", waiter);
                    prop_assert!(deadline.unwrap() <= self.now, "timed out early");
                }
                PoolEvent::PoolClosed { waiter } => {
                    prop_assert!(self.closed);
                    prop_assert!(self.waiters.remove(&waiter).is_some());
                }
                PoolEvent::Close { value, .. } => {
                    let model = self.conns.get_mut(&value).unwrap();
                    prop_assert!(
                        matches!(model.custody, Custody::Pooled { .. }),
                        "closing {} from {:?}",
                        value,
                        model.custody
                    );
                    model.custody = Custody::Closed;
                }
            }
        }
        Ok(())
    }

    /// Across origins, oldest first: when `granted` is served, every older waiter of another
    /// origin still waiting must be unable to use a slot, its origin being at its own limit.
    fn check_cross_origin_order(&self, granted: WaiterId) -> Result<(), TestCaseError> {
        for older in self.waiters.keys().filter(|w| **w < granted) {
            let s = self.pool.origin_stats(older.origin()).unwrap();
            let limits = self.pool.limits(older.origin()).unwrap();
            prop_assert!(
                s.active + s.idle + s.connecting >= limits.max_connections,
                "{:?} served before older {:?} that could use a slot",
                granted,
                older
            );
        }
        Ok(())
    }

    /// `drained`: no event is pending, so the gauges must equal what the driver model holds.
    fn check(&self, drained: bool) -> Result<(), TestCaseError> {
        let total = self.pool.stats();
        prop_assert_eq!(
            total.opened - total.closed,
            (total.active + total.idle + total.connecting) as u64
        );
        let total_open = total.active + total.idle + total.connecting;
        let total_max = self.pool.config().max_connections();
        prop_assert!(
            total_open <= total_max,
            "{} open > {}",
            total_open,
            total_max
        );
        prop_assert!(total.waiting <= self.pool.config().max_pending());
        for &o in &self.origins {
            let s = self.pool.origin_stats(o).unwrap();
            let limits = self.pool.limits(o).unwrap();
            let open = s.active + s.idle + s.connecting;
            prop_assert_eq!(s.opened - s.closed, open as u64);
            prop_assert!(open <= limits.max_connections);
            prop_assert!(s.waiting <= limits.max_pending);
            prop_assert!(
                s.idle <= limits.max_idle,
                "{:?} keeps more idle than allowed",
                o
            );
            if s.waiting > 0 {
                prop_assert_eq!(s.idle, 0, "waiters beside an idle connection");
                let room = total_open < total_max || total.idle > 0;
                prop_assert!(
                    !(open < limits.max_connections && room),
                    "waiters of {:?} while a slot is free: {:?} {:?}",
                    o,
                    s,
                    total
                );
            }
        }
        if drained {
            let held = self
                .conns
                .values()
                .filter(|c| c.custody == Custody::Held)
                .count();
            let pooled = self
                .conns
                .values()
                .filter(|c| matches!(c.custody, Custody::Pooled { .. }))
                .count();
            prop_assert_eq!(total.active, held);
            prop_assert_eq!(total.active, self.held.len());
            prop_assert_eq!(total.idle, pooled);
            prop_assert_eq!(total.connecting, self.reservations.len());
            prop_assert_eq!(total.waiting, self.waiters.len());
        }
        Ok(())
    }

    /// Liveness at the end: close, return everything, and every value is closed.
    fn finish(mut self) -> Result<(), TestCaseError> {
        self.drain()?;
        self.pool.close(self.now);
        self.closed = true;
        self.drain()?;
        for r in std::mem::take(&mut self.reservations) {
            self.pool.cancel_reservation(r, self.now).unwrap();
        }
        for (id, value) in std::mem::take(&mut self.held) {
            self.pool
                .handle_released(id, value, true, self.now)
                .unwrap();
            self.conns.get_mut(&value).unwrap().custody = Custody::Pooled { since: self.now };
        }
        self.drain()?;
        let s = self.pool.stats();
        prop_assert_eq!((s.active, s.idle, s.connecting, s.waiting), (0, 0, 0, 0));
        prop_assert_eq!(s.opened, s.closed);
        prop_assert!(self.waiters.is_empty());
        for (value, c) in &self.conns {
            prop_assert_eq!(c.custody, Custody::Closed, "{} not closed", value);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pool_invariants_hold_under_random_operations(
        setup in setup(),
        ops in prop::collection::vec((op(), prop::bool::weighted(0.85)), 1..160),
        close_at in prop::option::weighted(0.2, 0usize..160),
    ) {
        let mut h = Harness::new(&setup);
        for (i, (op, drain)) in ops.into_iter().enumerate() {
            let op = if close_at == Some(i) { Op::Close } else { op };
            h.step(op, drain)?;
        }
        h.finish()?;
    }
}
