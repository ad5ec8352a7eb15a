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
//! # Calling contract
//! 1. Once per origin, [`Pool::origin_id`] turns an [`Origin`] into an [`OriginId`].
//! 2. [`Pool::acquire`] answers at once with a [`Grant`] or a [`WaiterId`].
//! 3. The driver reports what happened: [`Pool::handle_connected`],
//!    [`Pool::handle_connect_failed`], [`Pool::handle_released`] (with `reusable: false` for
//!    bad bytes, an unread body or a request cancelled mid-exchange —
//!    docs/spec/pool.md#when-a-connection-is-not-reused),
//!    [`Pool::handle_closed_by_peer`] for an idle connection, [`Pool::cancel_waiter`] and
//!    [`Pool::cancel_reservation`] for requests that were dropped.
//! 4. After every input, drain [`Pool::poll_event`] until it returns `None`: grants to
//!    waiters, pool timeouts, and connections the driver must close.
//! 5. Sleep until [`Pool::poll_timeout`] and call [`Pool::handle_timeout`]; an early or
//!    repeated tick is harmless. `now` never goes backwards: an earlier `now` is treated as
//!    the latest one seen.
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

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use crate::{Instant, Origin, Scheme};

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Limits and timeouts of a [`Pool`], with per-origin overrides.
///
/// Limits of zero connections are clamped to one (a pool that can open nothing would turn
/// every request into a pool timeout); every other value is taken as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    max_connections: usize,
    max_connections_per_origin: Option<usize>,
    max_idle_per_origin: usize,
    idle_expiry: Duration,
    max_lifetime: Option<Duration>,
    max_pending: usize,
    pool_timeout: Duration,
    plain_http_forbidden: bool,
    origin_limits: BTreeMap<Origin, OriginLimits>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: 50,
            max_connections_per_origin: None,
            max_idle_per_origin: 20,
            idle_expiry: Duration::from_secs(30),
            max_lifetime: None,
            max_pending: 1024,
            pool_timeout: Duration::from_secs(5),
            plain_http_forbidden: false,
            origin_limits: BTreeMap::new(),
        }
    }
}

impl PoolConfig {
    /// Connections (active, idle and being opened) across all origins. Default 50; at least 1.
    pub fn with_max_connections(mut self, max_connections: usize) -> Self {
        self.max_connections = max_connections.max(1);
        self
    }

    /// Connections per origin unless a profile says otherwise. Default: the total limit;
    /// at least 1.
    pub fn with_max_connections_per_origin(mut self, max_connections: usize) -> Self {
        self.max_connections_per_origin = Some(max_connections.max(1));
        self
    }

    /// Idle connections kept per origin; beyond it the least recently used is closed.
    /// Default 20; 0 disables keep-alive.
    pub fn with_max_idle_per_origin(mut self, max_idle: usize) -> Self {
        self.max_idle_per_origin = max_idle;
        self
    }

    /// How long a connection may sit idle before it is closed instead of reused. Default 30 s.
    pub fn with_idle_expiry(mut self, idle_expiry: Duration) -> Self {
        self.idle_expiry = idle_expiry;
        self
    }

    /// The age (since connected) past which a connection is closed when it next comes back
    /// instead of being reused, so that DNS and scale-out changes are picked up. Default none.
    pub fn with_max_lifetime(mut self, max_lifetime: Option<Duration>) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }

    /// Requests waiting for a connection, across all origins (and per origin unless a profile
    /// says otherwise). Default 1024; 0 refuses instead of queueing.
    pub fn with_max_pending(mut self, max_pending: usize) -> Self {
        self.max_pending = max_pending;
        self
    }

    /// How long a request may wait for a connection or a slot. Default 5 s.
    pub fn with_pool_timeout(mut self, pool_timeout: Duration) -> Self {
        self.pool_timeout = pool_timeout;
        self
    }

    /// Refuse plain `http` origins unless their profile allows it. Default false.
    pub fn with_plain_http_forbidden(mut self, forbidden: bool) -> Self {
        self.plain_http_forbidden = forbidden;
        self
    }

    /// A profile for one origin: its own limits and timeouts, so that a slow partner API
    /// cannot take the slots of a fast internal one. A later call for the same origin
    /// replaces the earlier profile.
    pub fn with_origin_limits(mut self, origin: Origin, limits: OriginLimits) -> Self {
        self.origin_limits.insert(origin, limits);
        self
    }

    /// The total connection limit.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// The total bound on waiting requests.
    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// The limits that apply to `origin`: its profile over the pool-wide defaults.
    pub fn limits_for(&self, origin: &Origin) -> EffectiveLimits {
        let profile = self.origin_limits.get(origin);
        let pick = |f: fn(&OriginLimits) -> Option<usize>, default: usize| {
            profile.and_then(f).unwrap_or(default)
        };
        EffectiveLimits {
            max_connections: pick(
                |p| p.max_connections,
                self.max_connections_per_origin
                    .unwrap_or(self.max_connections),
            )
            .max(1),
            max_idle: pick(|p| p.max_idle, self.max_idle_per_origin),
            max_pending: pick(|p| p.max_pending, self.max_pending),
            idle_expiry: profile
                .and_then(|p| p.idle_expiry)
                .unwrap_or(self.idle_expiry),
            max_lifetime: profile
                .and_then(|p| p.max_lifetime)
                .unwrap_or(self.max_lifetime),
            pool_timeout: profile
                .and_then(|p| p.pool_timeout)
                .unwrap_or(self.pool_timeout),
            plain_http_forbidden: profile
                .and_then(|p| p.plain_http_forbidden)
                .unwrap_or(self.plain_http_forbidden),
        }
    }
}

/// A per-origin profile: each setting left unset inherits the pool-wide value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginLimits {
    max_connections: Option<usize>,
    max_idle: Option<usize>,
    max_pending: Option<usize>,
    idle_expiry: Option<Duration>,
    max_lifetime: Option<Option<Duration>>,
    pool_timeout: Option<Duration>,
    plain_http_forbidden: Option<bool>,
}

impl OriginLimits {
    /// Connections (active, idle and being opened) to this origin; at least 1.
    pub fn with_max_connections(mut self, max_connections: usize) -> Self {
        self.max_connections = Some(max_connections.max(1));
        self
    }

    /// Idle connections kept for this origin.
    pub fn with_max_idle(mut self, max_idle: usize) -> Self {
        self.max_idle = Some(max_idle);
        self
    }

    /// Requests waiting for this origin (the pool-wide bound still applies).
    pub fn with_max_pending(mut self, max_pending: usize) -> Self {
        self.max_pending = Some(max_pending);
        self
    }

    /// Idle expiry for this origin.
    pub fn with_idle_expiry(mut self, idle_expiry: Duration) -> Self {
        self.idle_expiry = Some(idle_expiry);
        self
    }

    /// Maximum connection lifetime for this origin (`None`: connections never age out).
    pub fn with_max_lifetime(mut self, max_lifetime: Option<Duration>) -> Self {
        self.max_lifetime = Some(max_lifetime);
        self
    }

    /// Pool timeout for requests to this origin.
    pub fn with_pool_timeout(mut self, pool_timeout: Duration) -> Self {
        self.pool_timeout = Some(pool_timeout);
        self
    }

    /// Whether a plain `http` origin is refused ([`AcquireError::PlainHttpForbidden`]).
    pub fn with_plain_http_forbidden(mut self, forbidden: bool) -> Self {
        self.plain_http_forbidden = Some(forbidden);
        self
    }
}

/// The limits in force for one origin, after its profile is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EffectiveLimits {
    /// Connections (active, idle and being opened) to this origin.
    pub max_connections: usize,
    /// Idle connections kept.
    pub max_idle: usize,
    /// Requests waiting.
    pub max_pending: usize,
    /// Idle time after which a connection is closed.
    pub idle_expiry: Duration,
    /// Age after which a connection is closed instead of reused.
    pub max_lifetime: Option<Duration>,
    /// How long a request may wait.
    pub pool_timeout: Duration,
    /// Plain `http` is refused.
    pub plain_http_forbidden: bool,
}

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
#[non_exhaustive]
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

// ---------------------------------------------------------------------------------------------
// The pool
// ---------------------------------------------------------------------------------------------

/// The pool admission state machine; `C` is the driver's connection value. See the
/// [module documentation](self) for the rules and the calling contract.
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
        if self.total_waiting >= self.config.max_pending
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
        if self.total_open < self.config.max_connections {
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
                self.total_open < self.config.max_connections || self.total_idle > 0;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
