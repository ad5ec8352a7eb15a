//! The [`Pool`] state machine: admission, the idle set, the wait queue and the accounting.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use crate::{Instant, Origin, Scheme};

use super::{
    AcquireError, Acquired, CloseReason, ConnId, EffectiveLimits, Grant, OriginId, PoolConfig,
    PoolError, PoolEvent, PoolStats, Reservation, ReservationId, SlotKey, SlotState, WaiterId,
};

/// The pool admission state machine; `C` is the driver's connection value. See the
/// [module documentation](crate::pool) for the rules and its inputs and outputs.
pub struct Pool<C> {
    config: PoolConfig,
    origins: Vec<OriginRecord<C>>,
    index: BTreeMap<Origin, OriginId>,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    events: VecDeque<PoolEvent<C>>,
    next_waiter_seq: u64,
    total_open: usize,
    total_idle: usize,
    total_waiting: usize,
    now: Instant,
    closed: bool,
}

struct OriginRecord<C> {
    origin: Origin,
    limits: EffectiveLimits,
    refused: bool,
    /// Oldest first; checkout pops the back (LIFO), expiry pops the front.
    idle: VecDeque<IdleConn<C>>,
    /// Arrival order (increasing `seq`).
    waiters: VecDeque<Waiter>,
    active: usize,
    connecting: usize,
    opened: u64,
    closed: u64,
    timed_out: u64,
    rejected: u64,
}

struct IdleConn<C> {
    key: SlotKey,
    value: C,
    idle_since: Instant,
    opened_at: Instant,
}

#[derive(Clone, Copy)]
struct Waiter {
    seq: u64,
    deadline: Instant,
}

#[derive(Clone, Copy)]
struct Slot {
    generation: u32,
    state: Option<SlotState>,
    origin: OriginId,
    opened_at: Instant,
    idle_since: Instant,
}

impl<C> OriginRecord<C> {
    fn open(&self) -> usize {
        self.active + self.connecting + self.idle.len()
    }

    fn stats(&self) -> PoolStats {
        PoolStats {
            active: self.active,
            idle: self.idle.len(),
            connecting: self.connecting,
            waiting: self.waiters.len(),
            opened: self.opened,
            closed: self.closed,
            timed_out: self.timed_out,
            rejected: self.rejected,
        }
    }

    fn idle_expired(&self, conn: &IdleConn<C>, now: Instant) -> Option<CloseReason> {
        if conn.idle_since + self.limits.idle_expiry <= now {
            Some(CloseReason::IdleExpired)
        } else {
            lifetime_expired(self.limits.max_lifetime, conn.opened_at, now)
        }
    }
}

fn lifetime_expired(
    max_lifetime: Option<Duration>,
    opened_at: Instant,
    now: Instant,
) -> Option<CloseReason> {
    match max_lifetime {
        Some(lifetime) if opened_at + lifetime <= now => Some(CloseReason::LifetimeExpired),
        _ => None,
    }
}

impl<C> fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("origins", &self.origins.len())
            .field("stats", &self.stats())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl<C> Pool<C> {
    /// An empty pool.
    pub fn new(config: PoolConfig) -> Self {
        Pool {
            config,
            origins: Vec::new(),
            index: BTreeMap::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            events: VecDeque::new(),
            next_waiter_seq: 0,
            total_open: 0,
            total_idle: 0,
            total_waiting: 0,
            now: Instant::ZERO,
            closed: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// The id of `origin`, registering it (with its profile's limits) on first use. Keep the
    /// id: every other call takes it.
    pub fn origin_id(&mut self, origin: &Origin) -> OriginId {
        if let Some(&id) = self.index.get(origin) {
            return id;
        }
        let id = OriginId(u32::try_from(self.origins.len()).unwrap_or(u32::MAX));
        let limits = self.config.limits_for(origin);
        self.origins.push(OriginRecord {
            origin: origin.clone(),
            refused: limits.plain_http_forbidden && origin.scheme() == Scheme::Http,
            limits,
            idle: VecDeque::new(),
            waiters: VecDeque::new(),
            active: 0,
            connecting: 0,
            opened: 0,
            closed: 0,
            timed_out: 0,
            rejected: 0,
        });
        self.index.insert(origin.clone(), id);
        id
    }

    /// The origin behind an id.
    pub fn origin(&self, id: OriginId) -> Option<&Origin> {
        self.origins.get(id.index()).map(|r| &r.origin)
    }

    /// Every registered origin, in registration order.
    pub fn origin_ids(&self) -> impl Iterator<Item = OriginId> + '_ {
        (0..self.origins.len()).map(|i| OriginId(i as u32))
    }

    /// The limits in force for an origin.
    pub fn limits(&self, id: OriginId) -> Option<&EffectiveLimits> {
        self.origins.get(id.index()).map(|r| &r.limits)
    }

    /// Ask for a connection to `origin`. The request may wait until
    /// `min(now + pool_timeout, deadline)`.
    pub fn acquire(
        &mut self,
        origin: OriginId,
        deadline: Option<Instant>,
        now: Instant,
    ) -> Result<Acquired<C>, AcquireError> {
        let now = self.advance(now);
        if self.closed {
            return Err(AcquireError::Closed);
        }
        let o = origin.index();
        let rec = self
            .origins
            .get(o)
            .ok_or(AcquireError::UnknownOrigin(origin))?;
        if rec.refused {
            return Err(AcquireError::PlainHttpForbidden { origin });
        }
        // Non-barging: while anyone of this origin waits, a newcomer queues behind them.
        if rec.waiters.is_empty() {
            let open_before = self.total_open;
            let idle = self.take_idle(o, now);
            if self.total_open < open_before && self.total_waiting > 0 {
                // Closing expired connections freed slots: older waiters come first.
                self.dispatch(now);
            }
            if let Some(conn) = idle {
                return Ok(Acquired::Ready(self.check_out(conn)));
            }
            if self.make_room(o) {
                return Ok(Acquired::Ready(Grant::Connect(self.reserve(o))));
            }
        }
        let limits = self.origins[o].limits;
        if self.total_waiting >= self.config.max_pending()
            || self.origins[o].waiters.len() >= limits.max_pending
        {
            self.origins[o].rejected += 1;
            return Err(AcquireError::QueueFull { origin });
        }
        let mut wait_until = now + limits.pool_timeout;
        if let Some(deadline) = deadline {
            wait_until = wait_until.min(deadline);
        }
        let seq = self.next_waiter_seq;
        self.next_waiter_seq += 1;
        self.origins[o].waiters.push_back(Waiter {
            seq,
            deadline: wait_until,
        });
        self.total_waiting += 1;
        Ok(Acquired::Queued(WaiterId { seq, origin }))
    }

    /// A reservation's connection is open; it is now checked out by the reservation's holder
    /// (who, by the non-barging rule, is older than every waiter of its origin).
    ///
    /// After [`Pool::close`] the connection is still handed to its request, and closed when
    /// released. An unknown reservation (from another pool) is refused and its connection
    /// comes back as a [`PoolEvent::Close`].
    pub fn handle_connected(
        &mut self,
        reservation: Reservation,
        conn: C,
        now: Instant,
    ) -> Result<ConnId, PoolError> {
        self.handle_opened(reservation, now).inspect_err(|_| {
            self.events.push_back(PoolEvent::Close {
                value: conn,
                reason: CloseReason::Unknown,
            });
        })
    }

    /// [`Pool::handle_connected`] for a driver that keeps the connection value itself while it
    /// is checked out (the call orchestrator does): the slot becomes active and nothing is
    /// taken. On an error the caller still holds its connection and closes it.
    pub fn handle_opened(
        &mut self,
        reservation: Reservation,
        now: Instant,
    ) -> Result<ConnId, PoolError> {
        let now = self.advance(now);
        let key = reservation.id.0;
        self.slot_in(key, SlotState::Connecting, || {
            PoolError::UnknownReservation(reservation.id)
        })?;
        let o = reservation.origin.index();
        let rec = &mut self.origins[o];
        rec.connecting -= 1;
        rec.active += 1;
        let slot = &mut self.slots[key.index as usize];
        slot.state = Some(SlotState::Active);
        slot.opened_at = now;
        slot.generation = slot.generation.wrapping_add(1);
        Ok(ConnId(SlotKey {
            index: key.index,
            generation: slot.generation,
        }))
    }

    /// Opening a reservation's connection failed: its slot goes to the oldest waiter that can
    /// use it.
    pub fn handle_connect_failed(
        &mut self,
        reservation: Reservation,
        now: Instant,
    ) -> Result<(), PoolError> {
        self.give_back_reservation(reservation, now)
    }

    /// The request holding a reservation was dropped: the slot is given back at once and goes
    /// to the oldest waiter that can use it. (A connection that finishes opening afterwards
    /// belongs to the driver, which closes it.)
    pub fn cancel_reservation(
        &mut self,
        reservation: Reservation,
        now: Instant,
    ) -> Result<(), PoolError> {
        self.give_back_reservation(reservation, now)
    }

    /// A checked-out connection comes back. With `reusable` it goes to the oldest waiter of its
    /// origin or into the pool; without (bad bytes, unread body, cancelled mid-exchange), or
    /// past its maximum lifetime, or after [`Pool::close`], it comes back as a
    /// [`PoolEvent::Close`] and its slot is given to the oldest waiter that can use it.
    ///
    /// A stale id is refused and the connection is closed (so that it is not leaked), leaving
    /// the accounting as it was.
    pub fn handle_released(
        &mut self,
        conn: ConnId,
        value: C,
        reusable: bool,
        now: Instant,
    ) -> Result<(), PoolError> {
        let now = self.advance(now);
        let key = conn.0;
        if let Err(e) = self.slot_in(key, SlotState::Active, || {
            PoolError::UnknownConnection(conn)
        }) {
            self.events.push_back(PoolEvent::Close {
                value,
                reason: CloseReason::Unknown,
            });
            return Err(e);
        }
        let slot = self.slots[key.index as usize];
        let o = slot.origin.index();
        self.origins[o].active -= 1;
        let reason = if self.closed {
            Some(CloseReason::PoolClosed)
        } else if !reusable {
            Some(CloseReason::Unusable)
        } else {
            lifetime_expired(self.origins[o].limits.max_lifetime, slot.opened_at, now)
        };
        match reason {
            Some(reason) => {
                self.free_slot(key);
                self.retire(o, value, reason);
                if self.total_waiting > 0 {
                    self.dispatch(now);
                }
            }
            None => self.return_idle(
                o,
                IdleConn {
                    key,
                    value,
                    idle_since: now,
                    opened_at: slot.opened_at,
                },
                now,
            ),
        }
        Ok(())
    }

    /// The peer closed an idle connection (the driver saw EOF on it): it leaves the pool and
    /// is returned for the driver to drop; its slot goes to the oldest waiter that can use it.
    pub fn handle_closed_by_peer(&mut self, conn: ConnId, now: Instant) -> Result<C, PoolError> {
        let now = self.advance(now);
        let key = conn.0;
        self.slot_in(key, SlotState::Idle, || PoolError::UnknownConnection(conn))?;
        let o = self.slots[key.index as usize].origin.index();
        let rec = &mut self.origins[o];
        let position = rec
            .idle
            .iter()
            .position(|c| c.key == key)
            .ok_or(PoolError::UnknownConnection(conn))?;
        let idle = rec
            .idle
            .remove(position)
            .ok_or(PoolError::UnknownConnection(conn))?;
        rec.closed += 1;
        self.total_idle -= 1;
        self.total_open -= 1;
        self.free_slot(key);
        if self.total_waiting > 0 {
            self.dispatch(now);
        }
        Ok(idle.value)
    }

    /// A queued request was dropped. If it was already granted but the grant not yet drained,
    /// the grant is taken back and passed on (the connection to the next waiter of its origin
    /// or into the pool, the slot to the oldest waiter that can use it); an undrained timeout
    /// or pool-closed answer is discarded.
    pub fn cancel_waiter(&mut self, waiter: WaiterId, now: Instant) -> Result<(), PoolError> {
        let now = self.advance(now);
        let rec = self
            .origins
            .get_mut(waiter.origin.index())
            .ok_or(PoolError::UnknownWaiter(waiter))?;
        if let Ok(position) = rec.waiters.binary_search_by_key(&waiter.seq, |w| w.seq) {
            rec.waiters.remove(position);
            self.total_waiting -= 1;
            return Ok(());
        }
        let position = self
            .events
            .iter()
            .position(|e| match e {
                PoolEvent::Granted { waiter: w, .. }
                | PoolEvent::TimedOut { waiter: w }
                | PoolEvent::PoolClosed { waiter: w } => *w == waiter,
                PoolEvent::Close { .. } => false,
            })
            .ok_or(PoolError::UnknownWaiter(waiter))?;
        match self.events.remove(position) {
            Some(PoolEvent::Granted { grant, .. }) => self.revoke(grant, now),
            _ => Ok(()),
        }
    }

    /// Close idle connections past their expiry or lifetime and time out waiters past their
    /// deadline. Harmless to call early or twice.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        for o in 0..self.origins.len() {
            // Idle connections expire by idle time (the oldest first) or by lifetime (anywhere).
            let mut i = 0;
            loop {
                let rec = &mut self.origins[o];
                let Some(conn) = rec.idle.get(i) else { break };
                let Some(reason) = rec.idle_expired(conn, now) else {
                    i += 1;
                    continue;
                };
                if let Some(conn) = rec.idle.remove(i) {
                    self.total_idle -= 1;
                    self.free_slot(conn.key);
                    self.retire(o, conn.value, reason);
                }
            }
            let rec = &mut self.origins[o];
            let mut i = 0;
            while let Some(w) = rec.waiters.get(i).copied() {
                if w.deadline <= now {
                    rec.waiters.remove(i);
                    rec.timed_out += 1;
                    self.total_waiting -= 1;
                    self.events.push_back(PoolEvent::TimedOut {
                        waiter: WaiterId {
                            seq: w.seq,
                            origin: OriginId(o as u32),
                        },
                    });
                } else {
                    i += 1;
                }
            }
        }
        if self.total_waiting > 0 {
            self.dispatch(now);
        }
    }

    /// The next instant at which an idle connection expires (idle expiry or lifetime) or a
    /// waiter's deadline passes; `None` when nothing is timed.
    ///
    /// Costs one pass over idle connections and waiters.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for rec in &self.origins {
            if let Some(oldest) = rec.idle.front() {
                consider(oldest.idle_since + rec.limits.idle_expiry);
            }
            if let Some(lifetime) = rec.limits.max_lifetime {
                for conn in &rec.idle {
                    consider(conn.opened_at + lifetime);
                }
            }
            for w in &rec.waiters {
                consider(w.deadline);
            }
        }
        next
    }

    /// The next thing the driver must act on.
    #[must_use = "events carry connections to close and answers owed to waiters"]
    pub fn poll_event(&mut self) -> Option<PoolEvent<C>> {
        self.events.pop_front()
    }

    /// Close the pool: idle connections come out to be closed, waiters are answered with
    /// [`PoolEvent::PoolClosed`], later acquires fail with [`AcquireError::Closed`], and
    /// connections released later are closed. Reservations and checked-out connections still
    /// have to be reported as usual.
    pub fn close(&mut self, now: Instant) {
        self.advance(now);
        self.closed = true;
        for o in 0..self.origins.len() {
            while let Some(conn) = self.origins[o].idle.pop_front() {
                self.total_idle -= 1;
                self.free_slot(conn.key);
                self.retire(o, conn.value, CloseReason::PoolClosed);
            }
            while let Some(w) = self.origins[o].waiters.pop_front() {
                self.total_waiting -= 1;
                self.events.push_back(PoolEvent::PoolClosed {
                    waiter: WaiterId {
                        seq: w.seq,
                        origin: OriginId(o as u32),
                    },
                });
            }
        }
    }

    /// Whether [`Pool::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Gauges and counters summed over all origins.
    pub fn stats(&self) -> PoolStats {
        self.origins
            .iter()
            .fold(PoolStats::default(), |mut sum, rec| {
                let s = rec.stats();
                sum.active += s.active;
                sum.idle += s.idle;
                sum.connecting += s.connecting;
                sum.waiting += s.waiting;
                sum.opened += s.opened;
                sum.closed += s.closed;
                sum.timed_out += s.timed_out;
                sum.rejected += s.rejected;
                sum
            })
    }

    /// Gauges and counters of one origin.
    pub fn origin_stats(&self, origin: OriginId) -> Option<PoolStats> {
        self.origins.get(origin.index()).map(OriginRecord::stats)
    }

    // ---- transitions' helpers ----------------------------------------------------------------

    fn advance(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }

    /// Checks that `key` names a current slot in `expected` state.
    fn slot_in(
        &self,
        key: SlotKey,
        expected: SlotState,
        unknown: impl FnOnce() -> PoolError,
    ) -> Result<(), PoolError> {
        match self.slots.get(key.index as usize) {
            Some(slot) if slot.generation == key.generation => match slot.state {
                Some(found) if found == expected => Ok(()),
                Some(found) => Err(PoolError::WrongState { expected, found }),
                None => Err(unknown()),
            },
            _ => Err(unknown()),
        }
    }

    fn give_back_reservation(
        &mut self,
        reservation: Reservation,
        now: Instant,
    ) -> Result<(), PoolError> {
        let now = self.advance(now);
        let key = reservation.id.0;
        self.slot_in(key, SlotState::Connecting, || {
            PoolError::UnknownReservation(reservation.id)
        })?;
        let rec = &mut self.origins[reservation.origin.index()];
        rec.connecting -= 1;
        rec.closed += 1;
        self.total_open -= 1;
        self.free_slot(key);
        if self.total_waiting > 0 {
            self.dispatch(now);
        }
        Ok(())
    }

    /// Takes back a grant whose waiter was cancelled before the grant was drained.
    fn revoke(&mut self, grant: Grant<C>, now: Instant) -> Result<(), PoolError> {
        match grant {
            Grant::Connect(reservation) => self.give_back_reservation(reservation, now),
            Grant::Idle { conn, value } => {
                // The driver never saw this grant: undo the checkout's new
                // generation, so that the id it last saw names the idle
                // connection again (a peer close reported under it must work).
                let mut key = conn.0;
                key.generation = key.generation.wrapping_sub(1);
                self.slots[key.index as usize].generation = key.generation;
                let slot = self.slots[key.index as usize];
                let o = slot.origin.index();
                self.origins[o].active -= 1;
                let idle = IdleConn {
                    key,
                    value,
                    idle_since: slot.idle_since,
                    opened_at: slot.opened_at,
                };
                if self.closed {
                    self.free_slot(key);
                    self.retire(o, idle.value, CloseReason::PoolClosed);
                } else if let Some(reason) = self.origins[o].idle_expired(&idle, now) {
                    self.free_slot(key);
                    self.retire(o, idle.value, reason);
                    if self.total_waiting > 0 {
                        self.dispatch(now);
                    }
                } else {
                    self.return_idle(o, idle, now);
                }
                Ok(())
            }
        }
    }

    /// Puts a reusable connection into its origin's idle list (kept ordered by idle time),
    /// lets waiters take it, then trims the list to the origin's idle limit.
    fn return_idle(&mut self, o: usize, conn: IdleConn<C>, now: Instant) {
        if let Some(slot) = self.slots.get_mut(conn.key.index as usize) {
            slot.state = Some(SlotState::Idle);
            slot.idle_since = conn.idle_since;
        }
        let idle = &mut self.origins[o].idle;
        if idle
            .back()
            .is_none_or(|last| last.idle_since <= conn.idle_since)
        {
            idle.push_back(conn);
        } else {
            let at = idle.partition_point(|c| c.idle_since <= conn.idle_since);
            idle.insert(at, conn);
        }
        self.total_idle += 1;
        if self.total_waiting > 0 {
            self.dispatch(now);
        }
        let max_idle = self.origins[o].limits.max_idle;
        while self.origins[o].idle.len() > max_idle {
            let Some(oldest) = self.origins[o].idle.pop_front() else {
                break;
            };
            self.total_idle -= 1;
            self.free_slot(oldest.key);
            self.retire(o, oldest.value, CloseReason::IdleLimit);
        }
    }

    /// The most recently used idle connection of origin `o` that is still fit to hand out;
    /// expired ones met on the way are closed. The returned connection is out of the idle list.
    fn take_idle(&mut self, o: usize, now: Instant) -> Option<IdleConn<C>> {
        while let Some(conn) = self.origins[o].idle.pop_back() {
            self.total_idle -= 1;
            match self.origins[o].idle_expired(&conn, now) {
                None => return Some(conn),
                Some(reason) => {
                    self.free_slot(conn.key);
                    self.retire(o, conn.value, reason);
                }
            }
        }
        None
    }

    /// Marks a connection taken from the idle list as checked out, under a fresh id.
    fn check_out(&mut self, conn: IdleConn<C>) -> Grant<C> {
        let o = self.slots[conn.key.index as usize].origin.index();
        self.origins[o].active += 1;
        let slot = &mut self.slots[conn.key.index as usize];
        slot.state = Some(SlotState::Active);
        slot.generation = slot.generation.wrapping_add(1);
        Grant::Idle {
            conn: ConnId(SlotKey {
                index: conn.key.index,
                generation: slot.generation,
            }),
            value: conn.value,
        }
    }

    /// Whether origin `o` may open one more connection, closing the least recently used idle
    /// connection of another origin if only the total limit is in the way. The caller has
    /// already taken any usable idle connection of `o`.
    fn make_room(&mut self, o: usize) -> bool {
        if self.origins[o].open() >= self.origins[o].limits.max_connections {
            return false;
        }
        if self.total_open < self.config.max_connections() {
            return true;
        }
        let victim = self
            .origins
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != o)
            .filter_map(|(i, rec)| rec.idle.front().map(|c| (c.idle_since, i)))
            .min();
        let Some((_, v)) = victim else {
            return false;
        };
        let Some(conn) = self.origins[v].idle.pop_front() else {
            return false;
        };
        self.total_idle -= 1;
        self.free_slot(conn.key);
        self.retire(v, conn.value, CloseReason::Evicted);
        true
    }

    fn reserve(&mut self, o: usize) -> Reservation {
        let origin = OriginId(o as u32);
        let key = self.alloc_slot(origin, SlotState::Connecting);
        let rec = &mut self.origins[o];
        rec.connecting += 1;
        rec.opened += 1;
        self.total_open += 1;
        Reservation {
            id: ReservationId(key),
            origin,
        }
    }

    /// Serves waiters, oldest first across origins, while some waiter can be served: by an
    /// idle connection of its origin, by a free slot, or by a slot freed by closing another
    /// origin's idle connection. Waiters found past their deadline at the head of a queue are
    /// timed out instead of served.
    fn dispatch(&mut self, now: Instant) {
        while self.total_waiting > 0 {
            let room_in_total =
                self.total_open < self.config.max_connections() || self.total_idle > 0;
            let mut best: Option<(u64, usize)> = None;
            for o in 0..self.origins.len() {
                self.expire_front_waiters(o, now);
                let rec = &self.origins[o];
                let Some(front) = rec.waiters.front() else {
                    continue;
                };
                let servable = !rec.idle.is_empty()
                    || (rec.open() < rec.limits.max_connections && room_in_total);
                if servable && best.is_none_or(|(seq, _)| front.seq < seq) {
                    best = Some((front.seq, o));
                }
            }
            let Some((_, o)) = best else {
                return;
            };
            let open_before = self.total_open;
            let grant = match self.take_idle(o, now) {
                Some(conn) => self.check_out(conn),
                None if self.make_room(o) => Grant::Connect(self.reserve(o)),
                // Expired idle connections were closed: re-evaluate who is oldest and servable.
                None if self.total_open < open_before => continue,
                // Unreachable while `servable` matches `make_room`; stop rather than spin.
                None => return,
            };
            let Some(w) = self.origins[o].waiters.pop_front() else {
                return;
            };
            self.total_waiting -= 1;
            self.events.push_back(PoolEvent::Granted {
                waiter: WaiterId {
                    seq: w.seq,
                    origin: OriginId(o as u32),
                },
                grant,
            });
        }
    }

    fn expire_front_waiters(&mut self, o: usize, now: Instant) {
        while let Some(w) = self.origins[o].waiters.front().copied() {
            if w.deadline > now {
                return;
            }
            self.origins[o].waiters.pop_front();
            self.origins[o].timed_out += 1;
            self.total_waiting -= 1;
            self.events.push_back(PoolEvent::TimedOut {
                waiter: WaiterId {
                    seq: w.seq,
                    origin: OriginId(o as u32),
                },
            });
        }
    }

    /// Accounts for a connection leaving the pool for good and hands it to the driver.
    fn retire(&mut self, o: usize, value: C, reason: CloseReason) {
        self.origins[o].closed += 1;
        self.total_open -= 1;
        self.events.push_back(PoolEvent::Close { value, reason });
    }

    fn alloc_slot(&mut self, origin: OriginId, state: SlotState) -> SlotKey {
        let now = self.now;
        if let Some(index) = self.free_slots.pop() {
            if let Some(slot) = self.slots.get_mut(index as usize) {
                slot.state = Some(state);
                slot.origin = origin;
                slot.opened_at = now;
                slot.idle_since = now;
                return SlotKey {
                    index,
                    generation: slot.generation,
                };
            }
        }
        let index = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.slots.push(Slot {
            generation: 0,
            state: Some(state),
            origin,
            opened_at: now,
            idle_since: now,
        });
        SlotKey {
            index,
            generation: 0,
        }
    }

    fn free_slot(&mut self, key: SlotKey) {
        if let Some(slot) = self.slots.get_mut(key.index as usize) {
            slot.state = None;
            slot.generation = slot.generation.wrapping_add(1);
            self.free_slots.push(key.index);
        }
    }
}
