//! Connection-pool admission: who gets a connection, who opens one, who waits, who is refused.
//!
//! [`Pool`] is a pure state machine that cannot lose track of a connection. It holds no
//! sockets and reads no clock: it is generic over the driver's connection value `C`, keeps
//! idle connections *inside* itself (so the driver has no second table that could drift) and
//! names everything else by newtype ids ([`OriginId`], [`ConnId`], [`ReservationId`],
//! [`WaiterId`]).
//!
//! # What it decides
//! A request for an origin ([`Pool::acquire`]) gets, in order of preference:
//! 1. an idle connection of its origin, most recently used first (LIFO), skipping and
//!    closing any that are past their idle expiry or maximum lifetime;
//! 2. a [`Reservation`]: a slot to open a new connection, if both the total and the
//!    per-origin limit allow it (when only the total limit is in the way and another
//!    origin has an idle connection, that idle connection is closed to make room);
//! 3. a place in a FIFO queue with a deadline, `min(now + pool_timeout, caller deadline)`;
//! 4. a typed rejection ([`AcquireError::QueueFull`]) when the queue is full.
//!
//! The queue is *non-barging*: while an origin has waiters, a new request for it queues
//! behind them. It is *work-conserving*: no waiter waits while a connection or slot it could
//! use is free. A released reusable connection goes to the oldest waiter of its origin; a freed
//! slot (a connection closed, a connect failed, a reservation cancelled) goes to the oldest
//! waiter across all origins whose origin is under its own limit. When the total limit is
//! reached, an older waiter of origin B takes precedence over a younger waiter of origin A even
//! for a connection A just released: that connection is closed and its slot given to B, so a
//! busy origin cannot starve a quiet one by passing its connections among its own requests.
//!
//! # Accounting
//! Every slot is `connecting` (a reservation), `active` (checked out) or `idle` (in the
//! pool). `opened` counts slots taken and `closed` counts slots given back (a connection
//! closed, a connect failed or a reservation cancelled), so that at every moment
//! `opened - closed = active + idle + connecting` ([`PoolStats`]). The total and per-origin
//! limits bound `active + idle + connecting`, as httpx's `max_connections` does.
//!
//! # Defaults
//! From the production `ApiClient` of the httpx tutorial the design starts from: 50
//! connections in total, per-origin limit equal to the total, 20 idle connections kept per
//! origin, 30 s idle expiry; plus no maximum lifetime, 1024 waiting requests (Envoy's bound on
//! pending requests) and a 5 s pool timeout (docs/spec/pool.md#limits-and-defaults).
//! Per-origin profiles ([`PoolConfig::with_origin_limits`]) override any of these for one
//! origin and may forbid plain `http` (a pool-wide default can forbid it everywhere).
//!
//! A pool timeout or a full queue fails the attempt with `PoolExhausted`: not sent, no
//! retry, no breaker effect, no latency sample (rule `local-exhaustion` of
//! docs/spec/outcomes.md, invariant `exhaustion-is-neutral`); that is the orchestrator's
//! business, this module only reports [`PoolEvent::TimedOut`] and
//! [`AcquireError::QueueFull`].
//!
//! # Inputs and outputs
//! The pool follows the crate's [run loop](crate#the-run-loop) (inputs take `now`, events
//! are drained after every input, timers through [`Pool::poll_timeout`] and
//! [`Pool::handle_timeout`]). What is particular to it:
//! 1. Once per origin, [`Pool::origin_id`] turns an [`Origin`](crate::Origin) into an
//!    [`OriginId`].
//! 2. [`Pool::acquire`] answers at once with a [`Grant`] or a [`WaiterId`]; a waiter's answer
//!    comes later as a [`PoolEvent`].
//! 3. The driver reports what happened: [`Pool::handle_connected`],
//!    [`Pool::handle_connect_failed`], [`Pool::handle_released`] (with `reusable: false` for
//!    bad bytes, an unread body or a request cancelled mid-exchange —
//!    docs/spec/pool.md#when-a-connection-is-not-reused),
//!    [`Pool::handle_closed_by_peer`] for an idle connection, [`Pool::cancel_waiter`] and
//!    [`Pool::cancel_reservation`] for requests that were dropped.
//! 4. Its events are grants to waiters, pool timeouts, and connections the driver must close.
//!
//! A [`Reservation`] and a checked-out connection are owed back to the pool. The driver holds
//! each in a guard whose `Drop` calls [`Pool::cancel_reservation`] or
//! [`Pool::handle_released`] with `reusable: false`, so that a request dropped at any await
//! point (the httpcore bug where a request cancelled while its connection was being opened
//! kept the slot forever) cannot leak a slot.
//!
//! ```
//! use breakwater_core::pool::{Acquired, Grant, Pool, PoolConfig};
//! use breakwater_core::{Instant, Origin, Scheme};
//!
//! let mut pool: Pool<&'static str> = Pool::new(PoolConfig::default());
//! let api = pool.origin_id(&Origin::new(Scheme::Https, "api.example.com", 443));
//! let now = Instant::ZERO;
//!
//! // Nothing idle yet: the pool reserves a slot and the driver opens a connection.
//! let Ok(Acquired::Ready(Grant::Connect(reservation))) = pool.acquire(api, None, now) else {
//!     panic!("expected a reservation");
//! };
//! let conn = pool.handle_connected(reservation, "socket #1", now).unwrap();
//! pool.handle_released(conn, "socket #1", true, now).unwrap();
//!
//! // The next request reuses it.
//! let Ok(Acquired::Ready(Grant::Idle { value, .. })) = pool.acquire(api, None, now) else {
//!     panic!("expected the idle connection");
//! };
//! assert_eq!(value, "socket #1");
//! assert_eq!(pool.stats().active, 1);
//! ```

use std::fmt;

mod config;
mod machine;

pub use config::{EffectiveLimits, OriginLimits, PoolConfig};
pub use machine::Pool;

// ---------------------------------------------------------------------------------------------
// Ids, grants, events, errors
// ---------------------------------------------------------------------------------------------

/// An origin registered with a pool ([`Pool::origin_id`]); cheap to keep and reuse.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct OriginId(u32);

impl OriginId {
    /// The position of the origin in registration order (0 for the first).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A slot in the pool's table; the generation makes an id from an earlier use stale.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct SlotKey {
    index: u32,
    generation: u32,
}

/// One checkout of a connection. A fresh id is issued every time a connection is handed out,
/// so an id kept from an earlier checkout is refused instead of releasing someone else's.
/// After [`Pool::handle_released`] the same id names the connection while it is idle (for
/// [`Pool::handle_closed_by_peer`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ConnId(SlotKey);

/// The id of a [`Reservation`], for logs and for matching driver state.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ReservationId(SlotKey);

/// A queued request. Ordered by arrival.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct WaiterId {
    seq: u64,
    origin: OriginId,
}

impl WaiterId {
    /// The origin the request waits for.
    pub fn origin(self) -> OriginId {
        self.origin
    }
}

/// A slot reserved for a new connection: open it, then report [`Pool::handle_connected`] or
/// [`Pool::handle_connect_failed`]; if the request is dropped first, [`Pool::cancel_reservation`].
///
/// Not `Clone`: exactly one report consumes it. The driver keeps it in a guard whose `Drop`
/// cancels it, so a request cancelled mid-connect gives its slot back.
#[must_use = "a reservation holds a slot until it is reported connected, failed or cancelled"]
#[derive(Debug, PartialEq, Eq)]
pub struct Reservation {
    id: ReservationId,
    origin: OriginId,
}

impl Reservation {
    /// The reservation's id.
    pub fn id(&self) -> ReservationId {
        self.id
    }

    /// The origin to connect to.
    pub fn origin(&self) -> OriginId {
        self.origin
    }
}

/// What a request is given.
#[must_use = "a grant must be used and then released, or cancelled"]
#[derive(Debug, PartialEq, Eq)]
pub enum Grant<C> {
    /// A pooled connection, now checked out: release it with [`Pool::handle_released`].
    Idle {
        /// This checkout's id.
        conn: ConnId,
        /// The connection itself.
        value: C,
    },
    /// A slot to open a new connection.
    Connect(Reservation),
}

/// The immediate answer to [`Pool::acquire`].
#[must_use = "a grant must be used; a waiter must be answered or cancelled"]
#[derive(Debug, PartialEq, Eq)]
pub enum Acquired<C> {
    /// Served at once.
    Ready(Grant<C>),
    /// Queued: a [`PoolEvent`] naming this waiter will follow.
    Queued(WaiterId),
}

/// Why the pool hands a connection back to be closed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum CloseReason {
    /// It sat idle past the idle expiry.
    IdleExpired,
    /// It is older than the maximum lifetime.
    LifetimeExpired,
    /// More idle connections than the origin keeps.
    IdleLimit,
    /// Its slot went to a waiter of another origin.
    Evicted,
    /// It was released as not reusable.
    Unusable,
    /// The pool is closed.
    PoolClosed,
    /// It was reported with an id the pool does not know (caller misuse); closed so that it
    /// is not leaked.
    Unknown,
}

/// Something the driver must act on, drained with [`Pool::poll_event`].
#[derive(Debug, PartialEq, Eq)]
pub enum PoolEvent<C> {
    /// A queued request is served.
    Granted {
        /// The request.
        waiter: WaiterId,
        /// What it gets.
        grant: Grant<C>,
    },
    /// A queued request reached its deadline; the caller reports `PoolExhausted`.
    TimedOut {
        /// The request.
        waiter: WaiterId,
    },
    /// The pool was closed while the request waited.
    PoolClosed {
        /// The request.
        waiter: WaiterId,
    },
    /// The driver must close this connection.
    Close {
        /// The connection.
        value: C,
        /// Why.
        reason: CloseReason,
    },
}

/// Why a request is refused at once. Every refusal means the request was not sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum AcquireError {
    /// The pool is closed.
    Closed,
    /// The queue is full (per origin or in total); the caller reports `PoolExhausted`.
    QueueFull {
        /// The origin asked for.
        origin: OriginId,
    },
    /// The origin is plain `http` and its profile forbids that.
    PlainHttpForbidden {
        /// The origin asked for.
        origin: OriginId,
    },
    /// The id was not issued by this pool.
    UnknownOrigin(OriginId),
}

impl fmt::Display for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcquireError::Closed => f.write_str("connection pool is closed"),
            AcquireError::QueueFull { .. } => f.write_str("connection pool wait queue is full"),
            AcquireError::PlainHttpForbidden { .. } => {
                f.write_str("plain http is forbidden for this origin")
            }
            AcquireError::UnknownOrigin(id) => write!(f, "unknown origin id {}", id.0),
        }
    }
}

impl std::error::Error for AcquireError {}

/// Where a pool slot stands; named by [`PoolError::WrongState`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum SlotState {
    /// A reservation: a connection being opened.
    Connecting,
    /// A connection checked out.
    Active,
    /// A connection in the pool.
    Idle,
}

/// Caller misuse: a report that does not match the pool's state. The pool's accounting is
/// unchanged by a refused report.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum PoolError {
    /// The connection id is stale (from an earlier checkout) or from another pool.
    UnknownConnection(ConnId),
    /// The reservation is from another pool.
    UnknownReservation(ReservationId),
    /// The waiter was already answered and its answer drained, or is from another pool.
    UnknownWaiter(WaiterId),
    /// The id is current but the slot is in another state.
    WrongState {
        /// The state the report needs.
        expected: SlotState,
        /// The state the slot is in.
        found: SlotState,
    },
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::UnknownConnection(_) => f.write_str("unknown or stale connection id"),
            PoolError::UnknownReservation(_) => f.write_str("unknown reservation"),
            PoolError::UnknownWaiter(_) => f.write_str("unknown or already answered waiter"),
            PoolError::WrongState { expected, found } => {
                write!(f, "connection is {found:?}, expected {expected:?}")
            }
        }
    }
}

impl std::error::Error for PoolError {}

/// Gauges and counters, per origin ([`Pool::origin_stats`]) or in total ([`Pool::stats`]).
/// `opened - closed = active + idle + connecting` always holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub struct PoolStats {
    /// Connections checked out.
    pub active: usize,
    /// Connections in the pool.
    pub idle: usize,
    /// Reservations: connections being opened.
    pub connecting: usize,
    /// Requests in the queue.
    pub waiting: usize,
    /// Slots taken, ever.
    pub opened: u64,
    /// Slots given back, ever (connections closed, connects failed, reservations cancelled).
    pub closed: u64,
    /// Waiters that reached their deadline.
    pub timed_out: u64,
    /// Requests refused because the queue was full.
    pub rejected: u64,
}

#[cfg(test)]
mod tests;
