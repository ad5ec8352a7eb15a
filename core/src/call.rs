//! The call orchestrator: one state machine per logical request that answers "what next?".
//!
//! Every decision the core makes about a call is taken here, in one place, by combining the
//! policies of the other modules: the token cache ([`crate::policy::auth`]), the circuit breaker
//! ([`crate::policy::breaker`]), the client's concurrency cap ([`ConcurrencyLimit`]), the connection
//! pool ([`crate::pool`]), the outcome table ([`crate::policy::outcome`]), the retry rules and budget
//! ([`crate::policy::retry`]), backoff ([`crate::policy::backoff`]), the latency window ([`crate::policy::latency`]) and
//! idempotency keys ([`crate::policy::idempotency`]). The driver (the `breakwater` client) only
//! executes the [`Step`]s it is given and reports what happened; it takes no retry, breaker or
//! pool decision of its own. The specification is docs/spec/call.md, over the policies of the
//! other pages of docs/spec/.
//!
//! # Two objects
//! - [`Engine`]: client-wide shared state. The pool, per-origin health (breaker, latency window,
//!   retry budget, Retry-After gate; created when the origin is registered), the concurrency
//!   cap, the optional token cache, the policies and a seeded RNG. A wait that another call
//!   ends (a concurrency permit, a pool slot, a token fetch) is answered into the waiting
//!   call's mailbox and announced by [`EngineEvent::Wake`].
//! - [`Call`]: one logical request, from [`Engine::start_call`] to [`Step::Done`] or
//!   [`Step::Fail`]. It holds, at most, one concurrency permit (for all its attempts and
//!   backoffs), one breaker permit, one pool reservation, waiter or checked-out connection,
//!   and one token lease. [`Call::cancel`] gives all of it back, in every state, idempotently.
//!
//! # The steps of one attempt
//! Admission for **every** attempt, in this order (docs/spec/call.md#admission): token (not an
//! attempt yet; waiting for one holds nothing), breaker, concurrency (once per call), pool. A
//! breaker rejection fails the call with [`CallErrorKind::CircuitOpen`]; a pool timeout or a
//! full queue, or no concurrency permit within the pool timeout, fails it with
//! [`CallErrorKind::PoolExhausted`]: not sent, no retry, no breaker effect, no budget
//! (invariant `exhaustion-is-neutral`). Then the connection: an idle one goes straight to
//! [`Step::Send`], a reservation gives [`Step::Connect`]. The attempt timeout starts when the
//! connection is obtained and is clipped to the call's total deadline, which bounds every
//! attempt and every wait (docs/spec/call.md#timeouts-and-the-deadline).
//!
//! Every outcome is classified once ([`crate::policy::outcome::classify`]); the latency window takes
//! the classification's sample, the breaker its effect, and the retry module its eligibility
//! (the order of `crate::policy::retry`'s "calling order": decide, backoff, schedule, charge,
//! record). A response that is not retried is delivered ([`Step::Deliver`]), whatever its
//! status: at this layer a 404 or a final 503 is a response, not an error; turning it into
//! an error with a body snippet is the client's presentation. Its breaker effect is recorded
//! when the body ends (rule `body-read-failed`: a body that fails is a breaker failure).
//!
//! # Choices worth knowing (docs/spec/call.md)
//! - **Stale connections** (rules `stale-connection` and `reused-connection-closed`,
//!   docs/spec/call.md#stale-connections): the transparent retry must use a *fresh*
//!   connection. The pool has no "skip idle" switch, so an idle connection handed to such a
//!   retry is closed ([`EngineEvent::Close`]) and the pool asked again until it offers a
//!   reservation or a queue place: idle connections of the same origin and age are most likely
//!   as dead as the one that just failed (the server's idle timeout closed them all).
//! - **Unread bodies**: a response that is retried, or that ends the call in a failure
//!   (rate limited, deadline), has an unread body, so its connection is released unusable
//!   (docs/spec/call.md#unread-bodies).
//! - **Budget deposit**: the original attempt deposits when it is granted a connection or a
//!   reservation (it is dispatched); breaker- or pool-refused originals deposit nothing.
//! - **Retry-After gate**: applies to ordinary, keyed-conflict and one-shot retries, not to
//!   transparent retries or the auth replay (which answer a broken connection or a token, not
//!   the server's load).
//! - **Concurrency wait**: bounded by the origin's pool timeout clipped to the deadline, like
//!   the pool queue, and reported like it (rule `local-exhaustion`,
//!   `PoolExhausted(ConcurrencyLimit)`).
//! - **Token fetches**: [`Step::FetchToken`] names a fetch; the engine keeps its ticket, so the
//!   driver reports with [`Engine::handle_token_fetched`]. A foreground fetch belongs to the
//!   call that was asked to run it and is cancelled with it; a background refresh
//!   (`background: true`) is independent of the call.
//! - **Breaker probe timeout** is raised, per origin, to at least pool timeout + connect
//!   timeout + attempt timeout, the longest an admitted attempt can take to report.
//! - [`Engine::poll_timeout`] covers the shared timers (pool, breakers); each call's own
//!   instants (backoff, deadline, wait bounds) come in its [`Step::Wait`].
//!
//! # Calling contract
//! 1. [`Engine::start_call`], then loop on [`Call::poll_step`] and act on the step; a
//!    [`Step::Wait`] ends at its instant or at a [`EngineEvent::Wake`] naming the call.
//! 2. Report with [`Call::handle_connected`] / [`Call::handle_connect_failed`] after
//!    [`Step::Connect`], [`Call::handle_attempt_outcome`] after [`Step::Send`] (the connection
//!    is [`Call::connection_mut`]), [`Call::handle_body_finished`] after [`Step::Deliver`].
//!    Polling again before reporting repeats the step.
//! 3. Hold the call in a guard whose `Drop` calls [`Call::cancel`].
//! 4. After every input, drain [`Engine::poll_event`]: wakes, connections to close, breaker
//!    transitions. Sleep until [`Engine::poll_timeout`] and call [`Engine::handle_timeout`].
//!
//! `now` never goes backwards; an earlier `now` counts as the latest seen.
//!
//! # Example: a driver loop with a fake connection
//!
//! ```
//! use breakwater_core::call::{CallSpec, Engine, EngineConfig, Step, BodyEnd};
//! use breakwater_core::policy::outcome::AttemptOutcome;
//! use breakwater_core::{Instant, Origin, Scheme};
//! use http::{HeaderMap, Method, StatusCode};
//! use std::time::{Duration, SystemTime};
//!
//! let mut engine: Engine<u32> = Engine::new(EngineConfig::default(), fastrand::Rng::with_seed(1))?;
//! let api = engine.origin_id(&Origin::new(Scheme::Https, "api.example.com", 443));
//! let mut now = Instant::ZERO;
//! // The server answers 503, then 200.
//! let mut statuses = vec![200u16, 503].into_iter().rev();
//! let mut call = engine.start_call(now, CallSpec::new(Method::GET, api))?;
//! let mut next_socket = 0;
//! let result = loop {
//!     match call.poll_step(now, &mut engine) {
//!         Step::Wait { until } => now = until.unwrap_or(now).max(now),
//!         Step::Connect { .. } => {
//!             next_socket += 1;
//!             call.handle_connected(now, &mut engine, next_socket)?;
//!         }
//!         Step::Send(plan) => {
//!             let _socket = call.connection_mut(); // write the request, read the head
//!             let status = StatusCode::from_u16(statuses.next().unwrap()).unwrap();
//!             now = now + Duration::from_millis(20);
//!             let outcome = AttemptOutcome::Response { status, elapsed: Duration::from_millis(20) };
//!             call.handle_attempt_outcome(now, &mut engine, outcome, &HeaderMap::new(), SystemTime::UNIX_EPOCH)?;
//!             assert!(plan.number <= 2);
//!         }
//!         Step::Deliver => call.handle_body_finished(now, &mut engine, BodyEnd::Complete { reusable: true })?,
//!         Step::Done => break Ok(call.attempts().len()),
//!         Step::Fail(error) => break Err(error),
//!         _ => unreachable!("no token source configured"),
//!     }
//!     while let Some(_event) = engine.poll_event() {} // wake tasks, close sockets, log
//! };
//! assert_eq!(result.unwrap(), 2);
//! assert_eq!(engine.concurrency_in_use(), 0);
//! assert_eq!(engine.pool().stats().idle, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use crate::policy::auth::{
    AuthError, FetchCompletion, FetchId, FetchTicket, TokenCache, TokenCacheConfig,
    TokenCacheError, TokenDecision, TokenFetchError, TokenGeneration, TokenLease, TokenResponse,
    WaitTicket,
};
use crate::policy::backoff::BackoffPolicy;
use crate::policy::breaker::{
    Breaker, BreakerConfig, BreakerConfigError, BreakerPermit, BreakerRejected, BreakerTransition,
};
use crate::policy::budget::{BudgetConfigError, RetryBudget, RetryBudgetConfig};
use crate::policy::idempotency::{
    key_for_call, CallKey, Idempotence, IdempotencyConfig, IdempotencyKey,
};
use crate::policy::latency::{LatencyConfig, LatencyWindow};
use crate::policy::outcome::{
    classify, AttemptOutcome, BreakerEffect, ConnectFailure, LocalExhaustion, OutcomeRow,
};
use crate::policy::retry::{
    decide, schedule, AttemptLedger, GiveUpReason, RequestFacts, RetryAfterGate, RetryKind,
    RetryPolicy, RetryVerdict, Schedule, ScheduleInput, ServerDirectives,
};
use crate::pool::{
    AcquireError, Acquired, CloseReason, ConnId, Grant, OriginId, OriginLimits, Pool, PoolConfig,
    PoolError, PoolEvent, Reservation, WaiterId,
};
use crate::{Instant, Origin};

/// Latency samples needed before the p50 is used as the least time an attempt takes
/// (docs/spec/retry.md#scheduling-against-the-deadline).
const ATTEMPT_FLOOR_MIN_SAMPLES: usize = 20;

/// Attempt records a call keeps: 10 counted attempts, a transparent retry for each, the auth
/// replay and a final admission refusal fit.
const MAX_RECORDS: usize = 24;

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Every policy of an [`Engine`], with their defaults (docs/spec/call.md#defaults).
///
/// | setting | default |
/// |---|---|
/// | `max_concurrency` | 20 calls in flight (below the pool's 50 connections) |
/// | `total_timeout` | 30 s per call, all attempts and waits included |
/// | `attempt_timeout` | 10 s from connection obtained to response headers |
/// | `connect_timeout` | 5 s |
/// | `retry`, `backoff`, `breaker`, `budget`, `latency`, `pool`, `idempotency` | their modules' defaults |
/// | `tokens` | none (no authenticated calls) |
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Pool limits and timeouts.
    pub pool: PoolConfig,
    /// Attempts, retried statuses, Retry-After cap, "do not retry" headers.
    pub retry: RetryPolicy,
    /// Backoff delays.
    pub backoff: BackoffPolicy,
    /// Idempotency-key header and automatic keys.
    pub idempotency: IdempotencyConfig,
    /// The per-origin breaker.
    pub breaker: BreakerConfig,
    /// The per-origin retry budget.
    pub budget: RetryBudgetConfig,
    /// The per-origin latency window.
    pub latency: LatencyConfig,
    /// The token cache, for calls marked authenticated.
    pub tokens: Option<TokenCacheConfig>,
    /// Calls in flight at once; at least 1.
    pub max_concurrency: usize,
    /// A call's total deadline, from its start.
    pub total_timeout: Duration,
    /// An attempt's timeout, from the connection obtained to the response headers.
    pub attempt_timeout: Duration,
    /// The time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Origins with settings of their own (see [`OriginProfile`]).
    pub profiles: Vec<(Origin, OriginProfile)>,
}

/// Settings one origin uses instead of the engine's: httpx's `mounts`, so
/// that a slow partner API gets its own limits, timeouts and breaker and
/// cannot take the capacity or the patience meant for a fast internal one.
///
/// Every field left `None` falls back to the engine's setting. Pool limits
/// (connections, idle, pending, pool timeout, forbidding plain `http`) are
/// the pool's [`OriginLimits`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct OriginProfile {
    /// Connection limits and the pool timeout for this origin.
    pub limits: Option<OriginLimits>,
    /// This origin's breaker settings.
    pub breaker: Option<BreakerConfig>,
    /// A call's total deadline.
    pub total_timeout: Option<Duration>,
    /// An attempt's timeout.
    pub attempt_timeout: Option<Duration>,
    /// The connect timeout.
    pub connect_timeout: Option<Duration>,
}

impl OriginProfile {
    /// Connection limits and the pool timeout for this origin.
    pub fn with_limits(mut self, limits: OriginLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// This origin's breaker settings.
    pub fn with_breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// A call's total deadline.
    pub fn with_total_timeout(mut self, timeout: Duration) -> Self {
        self.total_timeout = Some(timeout);
        self
    }

    /// An attempt's timeout.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// The connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }
}

/// The timeouts in force for one origin.
#[derive(Clone, Copy, Debug)]
struct Timeouts {
    total: Duration,
    attempt: Duration,
    connect: Duration,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            pool: PoolConfig::default(),
            retry: RetryPolicy::default(),
            backoff: BackoffPolicy::default(),
            idempotency: IdempotencyConfig::default(),
            breaker: BreakerConfig::default(),
            budget: RetryBudgetConfig::default(),
            latency: LatencyConfig::default(),
            tokens: None,
            max_concurrency: 20,
            total_timeout: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            profiles: Vec::new(),
        }
    }
}

impl EngineConfig {
    /// Gives `origin` settings of its own.
    pub fn with_profile(mut self, origin: Origin, profile: OriginProfile) -> Self {
        if let Some(limits) = profile.limits.clone() {
            self.pool = self.pool.with_origin_limits(origin.clone(), limits);
        }
        self.profiles.retain(|(o, _)| *o != origin);
        self.profiles.push((origin, profile));
        self
    }

    fn profile(&self, origin: &Origin) -> Option<&OriginProfile> {
        self.profiles
            .iter()
            .find(|(o, _)| o == origin)
            .map(|(_, p)| p)
    }

    /// The pool's configuration.
    pub fn with_pool(mut self, pool: PoolConfig) -> Self {
        self.pool = pool;
        self
    }
    /// The retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
    /// The backoff policy.
    pub fn with_backoff(mut self, backoff: BackoffPolicy) -> Self {
        self.backoff = backoff;
        self
    }
    /// The idempotency-key settings.
    pub fn with_idempotency(mut self, idempotency: IdempotencyConfig) -> Self {
        self.idempotency = idempotency;
        self
    }
    /// The breaker settings (one breaker per origin).
    pub fn with_breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }
    /// The retry budget settings (one budget per origin).
    pub fn with_budget(mut self, budget: RetryBudgetConfig) -> Self {
        self.budget = budget;
        self
    }
    /// The latency window settings (one window per origin).
    pub fn with_latency(mut self, latency: LatencyConfig) -> Self {
        self.latency = latency;
        self
    }
    /// A token cache for authenticated calls.
    pub fn with_tokens(mut self, tokens: Option<TokenCacheConfig>) -> Self {
        self.tokens = tokens;
        self
    }
    /// Calls in flight at once (clamped to at least 1).
    pub fn with_max_concurrency(mut self, max: usize) -> Self {
        self.max_concurrency = max.max(1);
        self
    }
    /// A call's total deadline.
    pub fn with_total_timeout(mut self, timeout: Duration) -> Self {
        self.total_timeout = timeout;
        self
    }
    /// An attempt's timeout.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }
    /// The connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

/// A setting of [`EngineConfig`] that its policy rejects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineConfigError {
    /// The breaker configuration is invalid.
    Breaker(BreakerConfigError),
    /// The retry budget configuration is invalid.
    Budget(BudgetConfigError),
}

impl fmt::Display for EngineConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineConfigError::Breaker(e) => write!(f, "invalid breaker configuration: {e}"),
            EngineConfigError::Budget(e) => write!(f, "invalid retry budget: {e}"),
        }
    }
}

impl std::error::Error for EngineConfigError {}

// ---------------------------------------------------------------------------------------------
// The concurrency limit
// ---------------------------------------------------------------------------------------------

/// The client's concurrency cap: at most `max` permits out, the rest wait in FIFO order.
///
/// Non-barging: while anyone waits, a newcomer queues behind them, and a released permit
/// passes straight to the oldest waiter ([`ConcurrencyLimit::release`] names it), so a waiter
/// is never overtaken. Pure and allocation-free once its queue has grown.
///
/// ```
/// use breakwater_core::call::ConcurrencyLimit;
///
/// let mut limit = ConcurrencyLimit::new(1);
/// assert!(limit.try_acquire('a'));
/// assert!(!limit.try_acquire('b')); // queued
/// assert!(!limit.try_acquire('c'));
/// assert!(limit.cancel(&'b'));      // b gives up its place
/// assert_eq!(limit.release(), Some('c')); // the permit passes to c
/// assert_eq!(limit.in_use(), 1);
/// ```
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit<K> {
    max: usize,
    in_use: usize,
    waiting: VecDeque<K>,
}

impl<K: PartialEq> ConcurrencyLimit<K> {
    /// A limit of `max` permits (at least 1).
    pub fn new(max: usize) -> Self {
        ConcurrencyLimit {
            max: max.max(1),
            in_use: 0,
            waiting: VecDeque::new(),
        }
    }

    /// Takes a permit for `who` if one is free and nobody waits (`true`); otherwise queues
    /// `who` (`false`): a later [`release`](Self::release) names it when its permit is ready.
    pub fn try_acquire(&mut self, who: K) -> bool {
        if self.waiting.is_empty() && self.in_use < self.max {
            self.in_use += 1;
            true
        } else {
            self.waiting.push_back(who);
            false
        }
    }

    /// Gives a permit back. If someone waits, the permit passes to the oldest waiter, who is
    /// returned and now holds it.
    #[must_use = "the returned waiter now holds a permit and must be told"]
    pub fn release(&mut self) -> Option<K> {
        match self.waiting.pop_front() {
            Some(next) => Some(next),
            None => {
                self.in_use = self.in_use.saturating_sub(1);
                None
            }
        }
    }

    /// Removes `who` from the queue; `false` if it was not waiting.
    pub fn cancel(&mut self, who: &K) -> bool {
        match self.waiting.iter().position(|w| w == who) {
            Some(i) => self.waiting.remove(i).is_some(),
            None => false,
        }
    }

    /// Permits out.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Waiters in line.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }
}

// ---------------------------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------------------------

/// One logical call's id within its engine. A finished call's id is never reused for another
/// live call (a generation counter tells them apart).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct CallId {
    index: u32,
    generation: u32,
}

/// The health a client keeps for one origin (docs/spec/README.md#words-used-throughout).
#[derive(Debug)]
pub struct OriginHealth {
    origin: OriginId,
    timeouts: Timeouts,
    breaker: Breaker,
    latency: LatencyWindow,
    budget: RetryBudget,
    gate: RetryAfterGate,
}

impl OriginHealth {
    /// The origin's circuit breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }
    /// The origin's latency window.
    pub fn latency(&self) -> &LatencyWindow {
        &self.latency
    }
    /// The origin's retry budget.
    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }
    /// The origin's Retry-After gate.
    pub fn gate(&self) -> &RetryAfterGate {
        &self.gate
    }
}

/// Something the driver must act on, drained with [`Engine::poll_event`].
#[derive(Debug)]
#[non_exhaustive]
pub enum EngineEvent<C> {
    /// A call waiting on another call (permit, pool slot, token) can go on: poll it.
    Wake(CallId),
    /// The driver must close this connection.
    Close {
        /// The connection.
        conn: C,
        /// Why.
        reason: CloseReason,
    },
    /// An origin's breaker changed state.
    Breaker {
        /// The origin.
        origin: OriginId,
        /// The change.
        transition: BreakerTransition,
    },
}

/// What a logical call is: given to [`Engine::start_call`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CallSpec {
    /// The request method.
    pub method: Method,
    /// The origin, from [`Engine::origin_id`].
    pub origin: OriginId,
    /// The caller's statement about idempotency (default: by method).
    pub idempotence: Idempotence,
    /// The caller's own idempotency key.
    pub key: Option<IdempotencyKey>,
    /// Whether the body can be sent again byte for byte (default true).
    pub body_replayable: bool,
    /// Whether the request carries a bearer token from the engine's token cache.
    pub authenticated: bool,
    /// Overrides the engine's total timeout.
    pub total_timeout: Option<Duration>,
    /// Overrides the retry policy's attempts (clamped to 1..=10).
    pub max_attempts: Option<u32>,
}

impl CallSpec {
    /// A call with `method` to `origin`, everything else by default.
    pub fn new(method: Method, origin: OriginId) -> CallSpec {
        CallSpec {
            method,
            origin,
            idempotence: Idempotence::ByMethod,
            key: None,
            body_replayable: true,
            authenticated: false,
            total_timeout: None,
            max_attempts: None,
        }
    }
    /// States the request's idempotency.
    pub fn with_idempotence(mut self, idempotence: Idempotence) -> Self {
        self.idempotence = idempotence;
        self
    }
    /// The caller's own idempotency key.
    pub fn with_key(mut self, key: IdempotencyKey) -> Self {
        self.key = Some(key);
        self
    }
    /// Whether the body can be replayed.
    pub fn with_body_replayable(mut self, replayable: bool) -> Self {
        self.body_replayable = replayable;
        self
    }
    /// Sends a bearer token from the engine's token cache.
    pub fn with_authenticated(mut self, authenticated: bool) -> Self {
        self.authenticated = authenticated;
        self
    }
    /// This call's total timeout.
    pub fn with_total_timeout(mut self, timeout: Duration) -> Self {
        self.total_timeout = Some(timeout);
        self
    }
    /// This call's attempt limit.
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }
}

/// Why [`Engine::start_call`] refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartError {
    /// The origin id was not issued by this engine's [`Engine::origin_id`].
    UnknownOrigin(OriginId),
    /// The call is authenticated but the engine has no token cache.
    NoTokenSource,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::UnknownOrigin(id) => write!(f, "origin #{} is not registered", id.index()),
            StartError::NoTokenSource => f.write_str("authenticated call without a token cache"),
        }
    }
}

impl std::error::Error for StartError {}

/// Misuse of the token-fetch reports of an [`Engine`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenReportError {
    /// No fetch with this id is in flight.
    UnknownFetch(FetchId),
    /// The engine has no token cache.
    NoTokenSource,
    /// The token cache refused the report.
    Cache(TokenCacheError),
}

impl fmt::Display for TokenReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenReportError::UnknownFetch(id) => {
                write!(f, "token fetch {} is not in flight", id.get())
            }
            TokenReportError::NoTokenSource => f.write_str("the engine has no token cache"),
            TokenReportError::Cache(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TokenReportError {}

/// An answer of the pool to a queued call, kept until the call polls.
#[derive(Debug)]
enum PoolAnswer<C> {
    Granted(Grant<C>),
    TimedOut,
    Closed,
}

/// A call's mailbox in the engine.
#[derive(Debug)]
struct CallSlot<C> {
    generation: u32,
    live: bool,
    permit_granted: bool,
    pool_answer: Option<PoolAnswer<C>>,
}

#[derive(Debug)]
struct InFlightFetch {
    ticket: FetchTicket,
    owner: Option<CallId>,
}

/// The client-wide decision state shared by every [`Call`]; see the [module docs](self).
pub struct Engine<C> {
    config: EngineConfig,
    pool: Pool<C>,
    health: Vec<Option<OriginHealth>>,
    limit: ConcurrencyLimit<CallId>,
    tokens: Option<TokenCache>,
    token_fetch: Option<InFlightFetch>,
    token_waiters: Vec<CallId>,
    pool_waiters: Vec<(WaiterId, CallId)>,
    calls: Vec<CallSlot<C>>,
    free_calls: Vec<u32>,
    events: VecDeque<EngineEvent<C>>,
    rng: fastrand::Rng,
    latest_now: Instant,
}

impl<C> fmt::Debug for Engine<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("pool", &self.pool.stats())
            .field("concurrency_in_use", &self.limit.in_use())
            .field("concurrency_waiting", &self.limit.waiting())
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl<C> Engine<C> {
    /// An engine with `config`, drawing every random choice from `rng` (split per origin and
    /// per call, so one call's draws never shift another's).
    pub fn new(config: EngineConfig, rng: fastrand::Rng) -> Result<Engine<C>, EngineConfigError> {
        config
            .breaker
            .validate()
            .map_err(EngineConfigError::Breaker)?;
        for (_, profile) in &config.profiles {
            if let Some(breaker) = &profile.breaker {
                breaker.validate().map_err(EngineConfigError::Breaker)?;
            }
        }
        RetryBudget::new(config.budget).map_err(EngineConfigError::Budget)?;
        Ok(Engine {
            pool: Pool::new(config.pool.clone()),
            limit: ConcurrencyLimit::new(config.max_concurrency),
            tokens: config.tokens.clone().map(TokenCache::new),
            config,
            health: Vec::new(),
            token_fetch: None,
            token_waiters: Vec::new(),
            pool_waiters: Vec::new(),
            calls: Vec::new(),
            free_calls: Vec::new(),
            events: VecDeque::with_capacity(16),
            rng,
            latest_now: Instant::ZERO,
        })
    }

    /// The id of `origin`, registering it (pool profile, breaker, latency window, budget, gate)
    /// on first use. Keep it: [`CallSpec`] takes it.
    pub fn origin_id(&mut self, origin: &Origin) -> OriginId {
        let id = self.pool.origin_id(origin);
        let i = id.index();
        if self.health.len() <= i {
            self.health.resize_with(i + 1, || None);
        }
        let pool_timeout = self
            .pool
            .limits(id)
            .map_or(Duration::ZERO, |l| l.pool_timeout);
        if let Some(slot @ None) = self.health.get_mut(i) {
            let profile = self.config.profile(origin);
            let timeouts = Timeouts {
                total: profile
                    .and_then(|p| p.total_timeout)
                    .unwrap_or(self.config.total_timeout),
                attempt: profile
                    .and_then(|p| p.attempt_timeout)
                    .unwrap_or(self.config.attempt_timeout),
                connect: profile
                    .and_then(|p| p.connect_timeout)
                    .unwrap_or(self.config.connect_timeout),
            };
            let mut breaker_config = profile
                .and_then(|p| p.breaker.clone())
                .unwrap_or_else(|| self.config.breaker.clone());
            let longest_attempt = pool_timeout + timeouts.connect + timeouts.attempt;
            if let Some(t) = breaker_config.probe_timeout {
                breaker_config.probe_timeout = Some(t.max(longest_attempt));
            }
            let breaker = Breaker::new(breaker_config, fastrand::Rng::with_seed(self.rng.u64(..)));
            let budget = RetryBudget::new(self.config.budget);
            if let (Ok(breaker), Ok(budget)) = (breaker, budget) {
                *slot = Some(OriginHealth {
                    origin: id,
                    timeouts,
                    breaker,
                    latency: LatencyWindow::new(self.config.latency.clone()),
                    budget,
                    gate: RetryAfterGate::new(),
                });
            }
        }
        id
    }

    /// Starts a logical call at `now`: fixes its deadline, its idempotency key and its RNG.
    pub fn start_call(&mut self, now: Instant, spec: CallSpec) -> Result<Call<C>, StartError> {
        let now = self.observe(now);
        if self.health(spec.origin).is_none() {
            return Err(StartError::UnknownOrigin(spec.origin));
        }
        if spec.authenticated && self.tokens.is_none() {
            return Err(StartError::NoTokenSource);
        }
        let mut rng = fastrand::Rng::with_seed(self.rng.u64(..));
        let key = key_for_call(&self.config.idempotency, &spec.method, spec.key, &mut rng);
        let key_header = key.key().map(|k| {
            (
                self.config.idempotency.header().clone(),
                k.header_value(self.config.idempotency.wire_format()),
            )
        });
        let facts = RequestFacts {
            idempotent: spec.idempotence.resolve(&spec.method),
            keyed: key.is_keyed(),
            body_replayable: spec.body_replayable,
        };
        let max_attempts = spec
            .max_attempts
            .unwrap_or_else(|| self.config.retry.max_attempts());
        let total_timeout = self.timeouts(spec.origin).total;
        let deadline = now + spec.total_timeout.unwrap_or(total_timeout);
        let id = self.allocate_call();
        Ok(Call {
            id,
            origin: spec.origin,
            facts,
            authenticated: spec.authenticated,
            key,
            key_header,
            started_at: now,
            deadline,
            latest_now: now,
            ledger: AttemptLedger::new(max_attempts),
            rng,
            phase: Phase::Admit {
                not_before: Instant::ZERO,
            },
            failure: None,
            holds_permit: false,
            breaker_permit: None,
            lease: None,
            sent_generation: None,
            owned_fetch: None,
            reservation: None,
            conn: None,
            attempt_kind: AttemptKind::Original,
            attempt_started: now,
            need_fresh: false,
            backoff_retries: 0,
            previous_delay: None,
            deposited: false,
            records: AttemptRecords::new(),
            body_read_reusable: None,
        })
    }

    /// The next thing the driver must act on.
    #[must_use = "events carry wakes, connections to close and breaker transitions"]
    pub fn poll_event(&mut self) -> Option<EngineEvent<C>> {
        self.events.pop_front()
    }

    /// The next instant at which a shared timer (a pool waiter's timeout or an idle expiry, a
    /// breaker's open interval or probe timeout) falls due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let breakers = self
            .health
            .iter()
            .flatten()
            .filter_map(|h| h.breaker.next_deadline())
            .min();
        match (self.pool.poll_timeout(), breakers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies whatever shared timer is due at `now`. Early or repeated ticks are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.observe(now);
        self.pool.handle_timeout(now);
        self.pump_pool(now);
        for i in 0..self.health.len() {
            if let Some(Some(h)) = self.health.get_mut(i) {
                h.breaker.handle_timeout(now);
            }
            self.pump_breaker_index(i);
        }
    }

    /// Reports that the token request `fetch` was sent (again) at `now`.
    pub fn handle_token_fetch_sent(
        &mut self,
        now: Instant,
        fetch: FetchId,
    ) -> Result<(), TokenReportError> {
        let now = self.observe(now);
        let (Some(cache), Some(flight)) = (&mut self.tokens, &self.token_fetch) else {
            return Err(self.unknown_fetch(fetch));
        };
        if flight.ticket.id() != fetch {
            return Err(TokenReportError::UnknownFetch(fetch));
        }
        cache
            .handle_fetch_sent(&flight.ticket, now)
            .map_err(TokenReportError::Cache)
    }

    /// Reports how the token request `fetch` ended, and wakes every call waiting for it.
    pub fn handle_token_fetched(
        &mut self,
        now: Instant,
        fetch: FetchId,
        result: Result<TokenResponse, TokenFetchError>,
    ) -> Result<FetchCompletion, TokenReportError> {
        let now = self.observe(now);
        let ticket = self.take_fetch(fetch)?;
        let completion = match &mut self.tokens {
            Some(cache) => cache
                .handle_fetch_result(now, ticket, result)
                .map_err(TokenReportError::Cache)?,
            None => return Err(TokenReportError::NoTokenSource),
        };
        self.wake_token_waiters();
        Ok(completion)
    }

    /// Reports that the driver abandoned the token request `fetch`; its waiters are woken and
    /// one of them starts the next fetch.
    pub fn cancel_token_fetch(
        &mut self,
        now: Instant,
        fetch: FetchId,
    ) -> Result<(), TokenReportError> {
        let now = self.observe(now);
        let ticket = self.take_fetch(fetch)?;
        if let Some(cache) = &mut self.tokens {
            cache
                .handle_fetch_cancelled(now, ticket)
                .map_err(TokenReportError::Cache)?;
        }
        self.wake_token_waiters();
        Ok(())
    }

    /// Closes the pool: idle connections come out to be closed and queued calls fail.
    pub fn close(&mut self, now: Instant) {
        let now = self.observe(now);
        self.pool.close(now);
        self.pump_pool(now);
    }

    /// The timeouts in force for an origin (its profile's, else the engine's).
    fn timeouts(&self, origin: OriginId) -> Timeouts {
        match self.health.get(origin.index()) {
            Some(Some(health)) => health.timeouts,
            _ => Timeouts {
                total: self.config.total_timeout,
                attempt: self.config.attempt_timeout,
                connect: self.config.connect_timeout,
            },
        }
    }

    /// The connection pool, for its stats and limits.
    pub fn pool(&self) -> &Pool<C> {
        &self.pool
    }

    /// The health of an origin.
    pub fn origin_health(&self, origin: OriginId) -> Option<&OriginHealth> {
        self.health.get(origin.index()).and_then(Option::as_ref)
    }

    /// The token cache, if any.
    pub fn token_cache(&self) -> Option<&TokenCache> {
        self.tokens.as_ref()
    }

    /// Concurrency permits held by calls.
    pub fn concurrency_in_use(&self) -> usize {
        self.limit.in_use()
    }

    /// Calls waiting for a concurrency permit.
    pub fn concurrency_waiting(&self) -> usize {
        self.limit.waiting()
    }

    /// Calls started and not yet ended.
    pub fn live_calls(&self) -> usize {
        self.calls.iter().filter(|s| s.live).count()
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    // ---- helpers -----------------------------------------------------------------------------

    fn observe(&mut self, now: Instant) -> Instant {
        self.latest_now = self.latest_now.max(now);
        self.latest_now
    }

    fn health(&mut self, origin: OriginId) -> Option<&mut OriginHealth> {
        self.health.get_mut(origin.index()).and_then(Option::as_mut)
    }

    fn allocate_call(&mut self) -> CallId {
        if let Some(index) = self.free_calls.pop() {
            if let Some(slot) = self.calls.get_mut(index as usize) {
                slot.live = true;
                return CallId {
                    index,
                    generation: slot.generation,
                };
            }
        }
        let index = u32::try_from(self.calls.len()).unwrap_or(u32::MAX);
        self.calls.push(CallSlot {
            generation: 0,
            live: true,
            permit_granted: false,
            pool_answer: None,
        });
        CallId {
            index,
            generation: 0,
        }
    }

    fn slot(&mut self, id: CallId) -> Option<&mut CallSlot<C>> {
        self.calls
            .get_mut(id.index as usize)
            .filter(|s| s.live && s.generation == id.generation)
    }

    fn free_call(&mut self, id: CallId) {
        if let Some(slot) = self.slot(id) {
            slot.live = false;
            slot.permit_granted = false;
            slot.generation = slot.generation.wrapping_add(1);
            self.free_calls.push(id.index);
        }
    }

    fn wake(&mut self, id: CallId) {
        self.events.push_back(EngineEvent::Wake(id));
    }

    fn release_permit(&mut self) {
        if let Some(next) = self.limit.release() {
            if let Some(slot) = self.slot(next) {
                slot.permit_granted = true;
            }
            self.wake(next);
        }
    }

    /// Turns the pool's events into mailbox answers, wakes and closes.
    fn pump_pool(&mut self, now: Instant) {
        while let Some(event) = self.pool.poll_event() {
            let (waiter, answer) = match event {
                PoolEvent::Granted { waiter, grant } => (waiter, PoolAnswer::Granted(grant)),
                PoolEvent::TimedOut { waiter } => (waiter, PoolAnswer::TimedOut),
                PoolEvent::PoolClosed { waiter } => (waiter, PoolAnswer::Closed),
                PoolEvent::Close { value, reason } => {
                    self.events.push_back(EngineEvent::Close {
                        conn: value,
                        reason,
                    });
                    continue;
                }
            };
            let owner = self
                .pool_waiters
                .iter()
                .position(|(w, _)| *w == waiter)
                .map(|i| self.pool_waiters.swap_remove(i).1);
            match owner.and_then(|id| self.slot(id).map(|s| (id, s))) {
                Some((id, slot)) => {
                    slot.pool_answer = Some(answer);
                    self.wake(id);
                }
                // Nobody owns it (cannot happen while calls cancel their waiters): give it back.
                None => {
                    if let PoolAnswer::Granted(grant) = answer {
                        self.give_back_grant(grant, now);
                    }
                }
            }
        }
    }

    /// Returns an unused grant to the pool: a connection as reusable, a reservation cancelled.
    fn give_back_grant(&mut self, grant: Grant<C>, now: Instant) {
        // Errors only for ids from another pool, impossible for the pool's own grants.
        let _ = match grant {
            Grant::Idle { conn, value } => self.pool.handle_released(conn, value, true, now),
            Grant::Connect(reservation) => self.pool.cancel_reservation(reservation, now),
        };
    }

    fn pump_breaker(&mut self, origin: OriginId) {
        self.pump_breaker_index(origin.index());
    }

    fn pump_breaker_index(&mut self, i: usize) {
        let Some(Some(h)) = self.health.get_mut(i) else {
            return;
        };
        while let Some(transition) = h.breaker.poll_event() {
            self.events.push_back(EngineEvent::Breaker {
                origin: h.origin,
                transition,
            });
        }
    }

    fn breaker_record(
        &mut self,
        now: Instant,
        origin: OriginId,
        permit: Option<BreakerPermit>,
        effect: BreakerEffect,
    ) {
        if let (Some(permit), Some(h)) = (permit, self.health(origin)) {
            h.breaker.record(now, permit, effect);
            self.pump_breaker(origin);
        }
    }

    fn wake_token_waiters(&mut self) {
        let mut waiters = std::mem::take(&mut self.token_waiters);
        for id in waiters.drain(..) {
            self.wake(id);
        }
        // Keep the grown buffer for the next fetch.
        self.token_waiters = waiters;
    }

    fn take_fetch(&mut self, fetch: FetchId) -> Result<FetchTicket, TokenReportError> {
        match self.token_fetch.take() {
            Some(flight) if flight.ticket.id() == fetch => Ok(flight.ticket),
            other => {
                self.token_fetch = other;
                Err(self.unknown_fetch(fetch))
            }
        }
    }

    fn unknown_fetch(&self, fetch: FetchId) -> TokenReportError {
        if self.tokens.is_none() {
            TokenReportError::NoTokenSource
        } else {
            TokenReportError::UnknownFetch(fetch)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Steps, plans, records, errors
// ---------------------------------------------------------------------------------------------

/// What the driver does next for a call.
#[must_use = "a step must be executed (or the call cancelled)"]
#[derive(Debug)]
#[non_exhaustive]
pub enum Step {
    /// Run the token request `fetch` and report it with [`Engine::handle_token_fetched`].
    /// `background: true` means the call goes on meanwhile (poll it again at once); otherwise
    /// the call waits for the fetch.
    FetchToken {
        /// The fetch to run.
        fetch: FetchId,
        /// Whether this is a background refresh that the call does not wait for.
        background: bool,
    },
    /// Wait until `until` (if any) or a [`EngineEvent::Wake`] for this call, then poll.
    Wait {
        /// The instant to poll again at, at the latest.
        until: Option<Instant>,
    },
    /// Open a connection to `origin` by `connect_deadline`, then report
    /// [`Call::handle_connected`] or [`Call::handle_connect_failed`].
    Connect {
        /// The origin.
        origin: OriginId,
        /// When the connect attempt must be given up (connect timeout, clipped to the deadline).
        connect_deadline: Instant,
    },
    /// Send the request on [`Call::connection_mut`] with the plan's extra headers, read the
    /// response head by the plan's deadline, then report [`Call::handle_attempt_outcome`].
    Send(AttemptPlan),
    /// Hand the response head to the caller; report [`Call::handle_body_finished`] when its
    /// body ends.
    Deliver,
    /// The call has ended and holds nothing.
    Done,
    /// The call failed and holds nothing.
    Fail(CallError),
}

/// Which kind of attempt a send is.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[non_exhaustive]
pub enum AttemptKind {
    /// The call's first attempt.
    Original,
    /// A retry of this kind.
    Retry(RetryKind),
}

/// How to send one attempt.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AttemptPlan {
    /// The counted attempt this send belongs to (1 for the original; transparent retries and
    /// the auth replay keep the number).
    pub number: u32,
    /// Original or which retry.
    pub kind: AttemptKind,
    /// Whether the connection came from the idle pool.
    pub reused: bool,
    /// When the attempt times out if no response head has arrived.
    pub attempt_deadline: Instant,
    /// How long an attempt may wait for its response head.
    pub attempt_timeout: Duration,
    /// The call's deadline, which bounds writing the request: an upload may
    /// take longer than an attempt may wait for its head.
    pub call_deadline: Instant,
    /// The idempotency-key header, the same on every send of the call.
    pub idempotency_key: Option<(HeaderName, HeaderValue)>,
    /// The `Authorization: Bearer` value (marked sensitive).
    pub authorization: Option<HeaderValue>,
}

impl AttemptPlan {
    /// When the wait for the response head ends, given when the request
    /// finished writing: the attempt deadline, unless the write outlasted it
    /// (a long upload), in which case the head gets the attempt timeout again
    /// from the end of the write, within the call's deadline.
    pub fn head_deadline(&self, written_at: Instant) -> Instant {
        if written_at < self.attempt_deadline {
            self.attempt_deadline
        } else {
            (written_at + self.attempt_timeout).min(self.call_deadline)
        }
    }
}

/// One attempt as it ended, for the call's record.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct AttemptRecord {
    /// The counted attempt number.
    pub number: u32,
    /// Original or which retry.
    pub kind: AttemptKind,
    /// The outcome rule its outcome fell under (docs/spec/outcomes.md).
    pub row: OutcomeRow,
    /// The response status, if a response arrived.
    pub status: Option<StatusCode>,
    /// From the attempt's admission to its outcome.
    pub elapsed: Duration,
}

/// The attempts a call has made: most calls make one, so the first two are
/// kept inline and a longer history moves to the heap. The call is moved
/// whole between the driver's steps, so its size is paid on every move.
#[derive(Clone, Debug)]
enum AttemptRecords {
    Inline { len: u8, items: [AttemptRecord; 2] },
    Spilled(Vec<AttemptRecord>),
}

impl AttemptRecords {
    const EMPTY: AttemptRecord = AttemptRecord {
        number: 0,
        kind: AttemptKind::Original,
        row: OutcomeRow::Cancelled,
        status: None,
        elapsed: Duration::ZERO,
    };

    fn new() -> AttemptRecords {
        AttemptRecords::Inline {
            len: 0,
            items: [Self::EMPTY; 2],
        }
    }

    /// Records an attempt; past [`MAX_RECORDS`] the history stops growing.
    fn push(&mut self, record: AttemptRecord) {
        match self {
            AttemptRecords::Inline { len, items } => match items.get_mut(usize::from(*len)) {
                Some(item) => {
                    *item = record;
                    *len += 1;
                }
                None => {
                    let mut spilled = Vec::with_capacity(MAX_RECORDS);
                    spilled.extend_from_slice(items);
                    spilled.push(record);
                    *self = AttemptRecords::Spilled(spilled);
                }
            },
            AttemptRecords::Spilled(records) if records.len() < MAX_RECORDS => records.push(record),
            AttemptRecords::Spilled(_) => {}
        }
    }

    fn as_slice(&self) -> &[AttemptRecord] {
        match self {
            AttemptRecords::Inline { len, items } => items.get(..usize::from(*len)).unwrap_or(&[]),
            AttemptRecords::Spilled(records) => records,
        }
    }

    fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
}

/// How a call failed, and every attempt it made.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallError {
    /// What happened.
    pub kind: CallErrorKind,
    /// Why the last failure was not retried, when a retry was considered.
    pub give_up: Option<GiveUpReason>,
    /// Every attempt, in order.
    pub attempts: Vec<AttemptRecord>,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} after {} attempt(s)", self.kind, self.attempts.len())?;
        if let Some(reason) = self.give_up {
            write!(f, " (not retried: {reason})")?;
        }
        Ok(())
    }
}

impl std::error::Error for CallError {}

/// Which phase timed out.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[non_exhaustive]
pub enum TimeoutPhase {
    /// Opening the connection.
    Connect,
    /// Waiting for the response head.
    Response,
}

/// What ended a call in failure.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallErrorKind {
    /// The origin's breaker refused the attempt (rule `breaker-rejected`).
    CircuitOpen {
        /// When an admission may next succeed, if known.
        retry_at: Option<Instant>,
        /// `retry_at − now`.
        retry_after: Option<Duration>,
    },
    /// No connection slot or concurrency permit in time, or the queue was full (rule
    /// `local-exhaustion`).
    PoolExhausted(LocalExhaustion),
    /// The pool was closed.
    PoolClosed,
    /// The origin is plain `http` and its profile forbids it.
    PlainHttpForbidden,
    /// The server's Retry-After is over the cap or ends after the deadline.
    RateLimited {
        /// When the server will take requests again.
        until: Instant,
    },
    /// The total deadline passed, or no retry fits before it.
    DeadlineExceeded,
    /// No connection could be made (rule `connect-failure`).
    Connect(ConnectFailure),
    /// A timeout.
    Timeout(TimeoutPhase),
    /// The TLS certificate failed verification (rule `certificate-failure`).
    Certificate,
    /// The connection broke during the exchange (rules `stale-connection`, `refused-stream`,
    /// `reused-connection-closed`, `exchange-failed`, or `connect-failure` for a fresh
    /// connection found dead before the first write).
    Transport(OutcomeRow),
    /// No token could be had.
    Auth(AuthError),
    /// The caller cancelled the call.
    Cancelled,
    /// An outcome with no error of its own (for example a body failure reported as an attempt).
    Other(OutcomeRow),
}

impl fmt::Display for CallErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Plain sentences: no outcome rule numbers, no enum names.
        match self {
            CallErrorKind::CircuitOpen {
                retry_after: Some(after),
                ..
            } => write!(f, "circuit open (retry after {after:?})"),
            CallErrorKind::CircuitOpen { .. } => f.write_str("circuit open"),
            CallErrorKind::PoolExhausted(why) => write!(f, "pool exhausted: {why}"),
            CallErrorKind::PoolClosed => f.write_str("pool closed"),
            CallErrorKind::PlainHttpForbidden => f.write_str("plain http forbidden"),
            CallErrorKind::RateLimited { until } => write!(f, "rate limited until {until:?}"),
            CallErrorKind::DeadlineExceeded => f.write_str("deadline exceeded"),
            CallErrorKind::Connect(why) => f.write_str(match why {
                ConnectFailure::Dns => "connect failed: the host name did not resolve",
                ConnectFailure::Refused => {
                    "connect failed: the peer refused the connection or was unreachable"
                }
                ConnectFailure::Timeout => "connect failed: the connect timeout expired",
                ConnectFailure::TlsHandshake => "connect failed: the TLS handshake failed",
            }),
            CallErrorKind::Timeout(TimeoutPhase::Connect) => {
                f.write_str("timed out opening the connection")
            }
            CallErrorKind::Timeout(TimeoutPhase::Response) => {
                f.write_str("timed out waiting for the response head")
            }
            CallErrorKind::Certificate => f.write_str("certificate verification failed"),
            CallErrorKind::Transport(row) => f.write_str(match row {
                OutcomeRow::StaleConnection => {
                    "the pooled connection was closed before the request was sent"
                }
                OutcomeRow::ConnectFailure => {
                    "the new connection was closed before the request was sent"
                }
                OutcomeRow::RefusedStream => "the server refused the request without processing it",
                OutcomeRow::ReusedConnectionClosed => {
                    "the pooled connection was closed before the response began"
                }
                _ => "the connection broke during the exchange",
            }),
            CallErrorKind::Auth(e) => write!(f, "authentication failed: {e}"),
            CallErrorKind::Cancelled => f.write_str("cancelled"),
            CallErrorKind::Other(row) => f.write_str(match row {
                OutcomeRow::BodyReadFailed => "reading the response body failed",
                _ => "the attempt failed",
            }),
        }
    }
}

/// How a delivered response's body ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[non_exhaustive]
pub enum BodyEnd {
    /// Read to the end; `reusable` if the connection may carry another request.
    Complete {
        /// Whether the connection may be reused.
        reusable: bool,
    },
    /// Reading it failed (rule `body-read-failed`: a breaker failure).
    Failed,
    /// The caller dropped it unread.
    Abandoned,
}

/// Where a call stands, named by [`CallMisuse`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[non_exhaustive]
pub enum CallPhase {
    /// Going through admission (token, breaker, concurrency, pool) or backing off.
    Admitting,
    /// Waiting for a token fetch.
    WaitingForToken,
    /// Waiting for a concurrency permit.
    WaitingForPermit,
    /// Waiting in the pool's queue.
    WaitingForPool,
    /// A connection is being opened.
    Connecting,
    /// An attempt is on the wire.
    Sending,
    /// The response was delivered; the body is being read.
    Delivered,
    /// The call has ended.
    Ended,
}

/// A report that does not fit the call's state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum CallMisuse {
    /// The report needs another phase.
    WrongState {
        /// The report.
        input: &'static str,
        /// The phase the call was in.
        phase: CallPhase,
    },
    /// The pool refused the report (an id from another engine).
    Pool(PoolError),
}

impl fmt::Display for CallMisuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallMisuse::WrongState { input, phase } => {
                write!(f, "{input} is not expected while the call is {phase:?}")
            }
            CallMisuse::Pool(e) => write!(f, "pool refused the report: {e}"),
        }
    }
}

impl std::error::Error for CallMisuse {}

// ---------------------------------------------------------------------------------------------
// The call
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Phase {
    /// Admission of the next attempt, not before the instant (backoff).
    Admit {
        not_before: Instant,
    },
    WaitToken(WaitTicket),
    WaitPermit {
        until: Instant,
    },
    WaitPool {
        waiter: WaiterId,
        until: Instant,
    },
    Connecting {
        connect_deadline: Instant,
    },
    Sending,
    Delivered {
        effect: BreakerEffect,
    },
    Ended,
}

#[derive(Debug)]
struct Checkout<C> {
    id: ConnId,
    value: C,
    reused: bool,
    attempt_deadline: Instant,
    sent_at: Instant,
}

/// One logical request; see the [module docs](self).
#[derive(Debug)]
pub struct Call<C> {
    id: CallId,
    origin: OriginId,
    facts: RequestFacts,
    authenticated: bool,
    key: CallKey,
    key_header: Option<(HeaderName, HeaderValue)>,
    started_at: Instant,
    deadline: Instant,
    latest_now: Instant,
    ledger: AttemptLedger,
    rng: fastrand::Rng,
    phase: Phase,
    failure: Option<CallError>,
    holds_permit: bool,
    breaker_permit: Option<BreakerPermit>,
    lease: Option<TokenLease>,
    sent_generation: Option<TokenGeneration>,
    owned_fetch: Option<FetchId>,
    reservation: Option<Reservation>,
    conn: Option<Checkout<C>>,
    attempt_kind: AttemptKind,
    attempt_started: Instant,
    need_fresh: bool,
    backoff_retries: u32,
    previous_delay: Option<Duration>,
    deposited: bool,
    records: AttemptRecords,
    /// Set while a response whose body the driver has already read is concluded.
    body_read_reusable: Option<bool>,
}

impl<C> Call<C> {
    /// The call's id (named by [`EngineEvent::Wake`]).
    pub fn id(&self) -> CallId {
        self.id
    }

    /// The call's total deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The call's idempotency key, fixed at its start.
    pub fn key(&self) -> &CallKey {
        &self.key
    }

    /// Every attempt that has ended so far.
    pub fn attempts(&self) -> &[AttemptRecord] {
        self.records.as_slice()
    }

    /// Counted attempts so far (transparent retries and the auth replay excluded).
    pub fn counted_attempts(&self) -> u32 {
        if self.records.is_empty() && !self.deposited {
            return 0;
        }
        self.ledger.counted_attempts()
    }

    /// The connection checked out for the current attempt, for the driver's I/O.
    pub fn connection_mut(&mut self) -> Option<&mut C> {
        self.conn.as_mut().map(|c| &mut c.value)
    }

    /// Where the call stands.
    pub fn phase(&self) -> CallPhase {
        match self.phase {
            Phase::Admit { .. } => CallPhase::Admitting,
            Phase::WaitToken(_) => CallPhase::WaitingForToken,
            Phase::WaitPermit { .. } => CallPhase::WaitingForPermit,
            Phase::WaitPool { .. } => CallPhase::WaitingForPool,
            Phase::Connecting { .. } => CallPhase::Connecting,
            Phase::Sending => CallPhase::Sending,
            Phase::Delivered { .. } => CallPhase::Delivered,
            Phase::Ended => CallPhase::Ended,
        }
    }

    /// What the driver does next. Polling again before reporting the last step's result
    /// repeats that step.
    pub fn poll_step(&mut self, now: Instant, engine: &mut Engine<C>) -> Step {
        let now = self.observe(now, engine);
        loop {
            match self.phase {
                Phase::Admit { not_before } => {
                    if now >= self.deadline {
                        self.fail(now, engine, CallErrorKind::DeadlineExceeded, None);
                        continue;
                    }
                    if now < not_before {
                        return Step::Wait {
                            until: Some(not_before),
                        };
                    }
                    if let Some(step) = self.admit(now, engine) {
                        return step;
                    }
                }
                Phase::WaitToken(wait) => {
                    if now >= self.deadline {
                        self.fail(now, engine, CallErrorKind::DeadlineExceeded, None);
                        continue;
                    }
                    let decision = match &mut engine.tokens {
                        Some(cache) => cache.resume(now, wait),
                        None => return self.end_step(),
                    };
                    if let TokenDecision::Wait(_) = decision {
                        return Step::Wait {
                            until: Some(self.deadline),
                        };
                    }
                    self.phase = Phase::Admit {
                        not_before: Instant::ZERO,
                    };
                    if let Some(step) = self.take_token_decision(now, engine, decision) {
                        return step;
                    }
                }
                Phase::WaitPermit { until } => {
                    let granted = engine
                        .slot(self.id)
                        .is_some_and(|s| std::mem::replace(&mut s.permit_granted, false));
                    if granted {
                        self.holds_permit = true;
                        self.phase = Phase::Admit {
                            not_before: Instant::ZERO,
                        };
                    } else if now >= until {
                        engine.limit.cancel(&self.id);
                        self.refuse_locally(now, engine, LocalExhaustion::ConcurrencyLimit);
                    } else {
                        return Step::Wait { until: Some(until) };
                    }
                }
                Phase::WaitPool { waiter, until } => {
                    if now >= until {
                        // Let the pool decide first: an answer may be due exactly now.
                        engine.pool.handle_timeout(now);
                        engine.pump_pool(now);
                    }
                    let answer = engine.slot(self.id).and_then(|s| s.pool_answer.take());
                    match answer {
                        Some(PoolAnswer::Granted(grant)) => {
                            self.phase = Phase::Admit {
                                not_before: Instant::ZERO,
                            };
                            if let Some(step) = self.take_grant(now, engine, grant) {
                                return step;
                            }
                        }
                        Some(PoolAnswer::TimedOut) => {
                            self.refuse_locally(now, engine, LocalExhaustion::PoolTimeout)
                        }
                        Some(PoolAnswer::Closed) => {
                            self.release_breaker(now, engine);
                            self.fail(now, engine, CallErrorKind::PoolClosed, None);
                        }
                        None if now >= until => {
                            // The pool did not answer by our own bound: treat as its timeout.
                            let _ = engine.pool.cancel_waiter(waiter, now);
                            engine.pool_waiters.retain(|(w, _)| *w != waiter);
                            engine.pump_pool(now);
                            self.refuse_locally(now, engine, LocalExhaustion::PoolTimeout);
                        }
                        None => return Step::Wait { until: Some(until) },
                    }
                }
                Phase::Connecting { connect_deadline } => {
                    return Step::Connect {
                        origin: self.origin,
                        connect_deadline,
                    }
                }
                Phase::Sending => return Step::Send(self.plan(engine)),
                Phase::Delivered { .. } => return Step::Deliver,
                Phase::Ended => return self.end_step(),
            }
        }
    }

    /// The connection for [`Step::Connect`] is open.
    pub fn handle_connected(
        &mut self,
        now: Instant,
        engine: &mut Engine<C>,
        conn: C,
    ) -> Result<(), CallMisuse> {
        let now = self.observe(now, engine);
        let (Phase::Connecting { .. }, Some(reservation)) = (&self.phase, self.reservation.take())
        else {
            engine.events.push_back(EngineEvent::Close {
                conn,
                reason: CloseReason::Unknown,
            });
            return Err(self.wrong_state("handle_connected"));
        };
        match engine.pool.handle_opened(reservation, now) {
            Ok(id) => {
                self.check_out(now, engine, id, conn, false);
                self.phase = Phase::Admit {
                    not_before: Instant::ZERO,
                };
                Ok(())
            }
            Err(e) => {
                engine.events.push_back(EngineEvent::Close {
                    conn,
                    reason: CloseReason::Unknown,
                });
                self.fail(
                    now,
                    engine,
                    CallErrorKind::Other(OutcomeRow::LocalExhaustion),
                    None,
                );
                Err(CallMisuse::Pool(e))
            }
        }
    }

    /// Opening the connection for [`Step::Connect`] failed.
    pub fn handle_connect_failed(
        &mut self,
        now: Instant,
        engine: &mut Engine<C>,
        failure: ConnectError,
    ) -> Result<(), CallMisuse> {
        let now = self.observe(now, engine);
        let (Phase::Connecting { .. }, Some(reservation)) = (&self.phase, self.reservation.take())
        else {
            return Err(self.wrong_state("handle_connect_failed"));
        };
        let _ = engine.pool.handle_connect_failed(reservation, now);
        engine.pump_pool(now);
        let outcome = match failure {
            ConnectError::Failed(kind) => AttemptOutcome::ConnectFailed(kind),
            ConnectError::CertificateInvalid => AttemptOutcome::CertificateInvalid,
        };
        self.conclude(
            now,
            engine,
            outcome,
            &HeaderMap::new(),
            SystemTime::UNIX_EPOCH,
        );
        Ok(())
    }

    /// How the attempt of [`Step::Send`] ended: `headers` are the response's (empty when there
    /// was no response) and `received_wall` the wall clock at receipt, for Retry-After dates.
    pub fn handle_attempt_outcome(
        &mut self,
        now: Instant,
        engine: &mut Engine<C>,
        outcome: AttemptOutcome,
        headers: &HeaderMap,
        received_wall: SystemTime,
    ) -> Result<(), CallMisuse> {
        let now = self.observe(now, engine);
        if !matches!(self.phase, Phase::Sending) {
            return Err(self.wrong_state("handle_attempt_outcome"));
        }
        if outcome == AttemptOutcome::Cancelled {
            self.cancel(now, engine);
            return Ok(());
        }
        self.conclude(now, engine, outcome, headers, received_wall);
        Ok(())
    }

    /// Reports a response whose body the driver has already read whole (it
    /// arrived with the head): like [`handle_attempt_outcome`](Self::handle_attempt_outcome)
    /// with [`AttemptOutcome::Response`], except that if the response is
    /// retried or ends the call in a failure, the connection goes back to the
    /// pool when `reusable` instead of being closed for an unread body.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_response_read(
        &mut self,
        now: Instant,
        engine: &mut Engine<C>,
        status: StatusCode,
        elapsed: Duration,
        headers: &HeaderMap,
        received_wall: SystemTime,
        reusable: bool,
    ) -> Result<(), CallMisuse> {
        self.body_read_reusable = Some(reusable);
        let outcome = AttemptOutcome::Response { status, elapsed };
        let result = self.handle_attempt_outcome(now, engine, outcome, headers, received_wall);
        self.body_read_reusable = None;
        result
    }

    /// The body of the delivered response ended.
    pub fn handle_body_finished(
        &mut self,
        now: Instant,
        engine: &mut Engine<C>,
        end: BodyEnd,
    ) -> Result<(), CallMisuse> {
        let now = self.observe(now, engine);
        let Phase::Delivered { effect } = self.phase else {
            return Err(self.wrong_state("handle_body_finished"));
        };
        let (effect, reusable) = match end {
            BodyEnd::Complete { reusable } => (effect, reusable),
            BodyEnd::Failed => {
                self.push_record(now, OutcomeRow::BodyReadFailed, None);
                (BreakerEffect::Failure, false)
            }
            BodyEnd::Abandoned => (effect, false),
        };
        let permit = self.breaker_permit.take();
        engine.breaker_record(now, self.origin, permit, effect);
        self.release_connection(now, engine, reusable);
        self.end(now, engine);
        Ok(())
    }

    /// Gives back everything the call holds (concurrency permit, queue places, reservation,
    /// connection — closed as unusable —, breaker permit, foreground token fetch) and ends it.
    /// Correct in every state; a second call does nothing.
    pub fn cancel(&mut self, now: Instant, engine: &mut Engine<C>) {
        if matches!(self.phase, Phase::Ended) {
            return;
        }
        let now = self.observe(now, engine);
        if matches!(self.phase, Phase::Sending) {
            self.push_record(now, OutcomeRow::Cancelled, None);
        }
        self.failure = Some(self.error(CallErrorKind::Cancelled, None));
        self.end(now, engine);
    }

    // ---- admission ---------------------------------------------------------------------------

    /// Runs the admission pipeline from wherever it stands; `None` when the phase changed and
    /// the caller should loop.
    fn admit(&mut self, now: Instant, engine: &mut Engine<C>) -> Option<Step> {
        // 1. A token (waiting for one holds nothing).
        if self.authenticated && !self.lease.as_ref().is_some_and(|l| l.is_usable_at(now)) {
            self.lease = None;
            let decision = match &mut engine.tokens {
                Some(cache) => cache.acquire(now),
                None => TokenDecision::Failed(AuthError::ExpiredOnArrival),
            };
            if let Some(step) = self.take_token_decision(now, engine, decision) {
                return Some(step);
            }
            // No lease yet: the phase changed (waiting or failed); the caller loops.
            self.lease.as_ref()?;
        }
        // 2. The breaker.
        if self.breaker_permit.is_none() && self.conn.is_none() {
            self.attempt_started = now;
            let admitted = match engine.health(self.origin) {
                Some(h) => h.breaker.try_acquire(now).map(Some),
                None => Ok(None),
            };
            engine.pump_breaker(self.origin);
            match admitted {
                Ok(permit) => self.breaker_permit = permit,
                Err(rejected) => {
                    self.refuse_by_breaker(now, engine, rejected);
                    return None;
                }
            }
        }
        // 3. Concurrency, once per call.
        if !self.holds_permit {
            if engine.limit.try_acquire(self.id) {
                self.holds_permit = true;
            } else {
                let until = self.local_wait_bound(now, engine);
                self.phase = Phase::WaitPermit { until };
                return Some(Step::Wait { until: Some(until) });
            }
        }
        // 4. A connection.
        if self.conn.is_none() {
            return self.acquire_connection(now, engine);
        }
        // 5. Send.
        if self.authenticated && !self.lease.as_ref().is_some_and(|l| l.is_usable_at(now)) {
            return None; // the token expired while we waited: get another first
        }
        if !self.deposited {
            self.deposit(now, engine);
        }
        self.sent_generation = self.lease.as_ref().map(TokenLease::generation);
        if let Some(c) = &mut self.conn {
            c.sent_at = now;
        }
        self.phase = Phase::Sending;
        Some(Step::Send(self.plan(engine)))
    }

    fn take_token_decision(
        &mut self,
        now: Instant,
        engine: &mut Engine<C>,
        decision: TokenDecision,
    ) -> Option<Step> {
        match decision {
            TokenDecision::Use(lease) => {
                self.lease = Some(lease);
                None
            }
            TokenDecision::UseAndRefresh(lease, ticket) => {
                self.lease = Some(lease);
                let fetch = ticket.id();
                engine.token_fetch = Some(InFlightFetch {
                    ticket,
                    owner: None,
                });
                Some(Step::FetchToken {
                    fetch,
                    background: true,
                })
            }
            TokenDecision::Fetch(ticket) => {
                let fetch = ticket.id();
                let wait = ticket.wait_ticket();
                engine.token_fetch = Some(InFlightFetch {
                    ticket,
                    owner: Some(self.id),
                });
                self.owned_fetch = Some(fetch);
                engine.token_waiters.push(self.id);
                self.phase = Phase::WaitToken(wait);
                Some(Step::FetchToken {
                    fetch,
                    background: false,
                })
            }
            TokenDecision::Wait(wait) => {
                engine.token_waiters.push(self.id);
                self.phase = Phase::WaitToken(wait);
                Some(Step::Wait {
                    until: Some(self.deadline),
                })
            }
            TokenDecision::Failed(error) => {
                self.fail(now, engine, CallErrorKind::Auth(error), None);
                None
            }
        }
    }

    fn acquire_connection(&mut self, now: Instant, engine: &mut Engine<C>) -> Option<Step> {
        loop {
            let acquired = engine.pool.acquire(self.origin, Some(self.deadline), now);
            engine.pump_pool(now);
            match acquired {
                Ok(Acquired::Ready(Grant::Idle { conn, value })) if self.need_fresh => {
                    // A transparent retry needs a fresh connection; this idle one is most
                    // likely as stale as the one that just died.
                    let _ = engine.pool.handle_released(conn, value, false, now);
                    engine.pump_pool(now);
                }
                Ok(Acquired::Ready(grant)) => return self.take_grant(now, engine, grant),
                Ok(Acquired::Queued(waiter)) => {
                    engine.pool_waiters.push((waiter, self.id));
                    let until = self.local_wait_bound(now, engine);
                    self.phase = Phase::WaitPool { waiter, until };
                    return Some(Step::Wait { until: Some(until) });
                }
                Err(AcquireError::QueueFull { .. }) => {
                    self.refuse_locally(now, engine, LocalExhaustion::QueueFull);
                    return None;
                }
                Err(error) => {
                    self.release_breaker(now, engine);
                    let kind = match error {
                        AcquireError::PlainHttpForbidden { .. } => {
                            CallErrorKind::PlainHttpForbidden
                        }
                        _ => CallErrorKind::PoolClosed,
                    };
                    self.fail(now, engine, kind, None);
                    return None;
                }
            }
        }
    }

    /// Takes a pool grant: an idle connection (unless a fresh one is needed) or a reservation.
    fn take_grant(
        &mut self,
        now: Instant,
        engine: &mut Engine<C>,
        grant: Grant<C>,
    ) -> Option<Step> {
        match grant {
            Grant::Idle { conn, value } if self.need_fresh => {
                let _ = engine.pool.handle_released(conn, value, false, now);
                engine.pump_pool(now);
                None // admission loops and asks the pool again
            }
            Grant::Idle { conn, value } => {
                self.check_out(now, engine, conn, value, true);
                None
            }
            Grant::Connect(reservation) => {
                if !self.deposited {
                    self.deposit(now, engine);
                }
                self.reservation = Some(reservation);
                let connect_deadline =
                    (now + engine.timeouts(self.origin).connect).min(self.deadline);
                self.phase = Phase::Connecting { connect_deadline };
                Some(Step::Connect {
                    origin: self.origin,
                    connect_deadline,
                })
            }
        }
    }

    fn check_out(
        &mut self,
        now: Instant,
        engine: &mut Engine<C>,
        id: ConnId,
        value: C,
        reused: bool,
    ) {
        if !self.deposited {
            self.deposit(now, engine);
        }
        let attempt_deadline = (now + engine.timeouts(self.origin).attempt).min(self.deadline);
        self.conn = Some(Checkout {
            id,
            value,
            reused,
            attempt_deadline,
            sent_at: now,
        });
        self.need_fresh = false;
    }

    /// The original attempt is dispatched: it pays into the origin's budget
    /// (docs/spec/budget.md#arithmetic).
    fn deposit(&mut self, now: Instant, engine: &mut Engine<C>) {
        self.deposited = true;
        if let Some(h) = engine.health(self.origin) {
            h.budget.deposit(now);
        }
    }

    /// How long a local wait (concurrency, pool queue) may last.
    fn local_wait_bound(&self, now: Instant, engine: &Engine<C>) -> Instant {
        let pool_timeout = engine
            .pool
            .limits(self.origin)
            .map_or(Duration::ZERO, |l| l.pool_timeout);
        (now + pool_timeout).min(self.deadline)
    }

    fn plan(&self, engine: &Engine<C>) -> AttemptPlan {
        let (reused, attempt_deadline) = self
            .conn
            .as_ref()
            .map_or((false, self.deadline), |c| (c.reused, c.attempt_deadline));
        AttemptPlan {
            number: self.ledger.counted_attempts(),
            kind: self.attempt_kind,
            reused,
            attempt_deadline,
            attempt_timeout: engine.timeouts(self.origin).attempt,
            call_deadline: self.deadline,
            idempotency_key: self.key_header.clone(),
            authorization: self.lease.as_ref().and_then(|l| l.bearer_header().ok()),
        }
    }

    // ---- outcomes ----------------------------------------------------------------------------

    /// Classifies an attempt's outcome and decides: retry (when), deliver, or fail.
    fn conclude(
        &mut self,
        now: Instant,
        engine: &mut Engine<C>,
        outcome: AttemptOutcome,
        headers: &HeaderMap,
        received_wall: SystemTime,
    ) {
        let ctx = engine
            .config
            .retry
            .outcome_policy()
            .context(self.facts.keyed, self.sent_generation.is_some());
        let classification = classify(&outcome, &ctx);
        let status = match outcome {
            AttemptOutcome::Response { status, .. } => Some(status),
            _ => None,
        };
        self.push_record(now, classification.row, status);
        let directives = match status {
            Some(_) => engine.config.retry.directives(headers, received_wall),
            None => ServerDirectives::default(),
        };
        if let Some(h) = engine.health(self.origin) {
            if let Some(sample) = classification.latency_sample {
                h.latency.record(now, sample);
            }
            if let Some(status) = status {
                h.gate.handle_response(now, status, directives.retry_after);
            }
        }
        let verdict = decide(&classification, &self.facts, &directives, &self.ledger);
        let decision = match verdict {
            RetryVerdict::Retry(plan) => self.place_retry(now, engine, plan, &directives),
            RetryVerdict::GiveUp(reason) => Decision::GiveUp(reason),
        };
        match (decision, status) {
            (Decision::GiveUp(_), Some(_)) => {
                // A response the caller gets; the breaker hears about it when the body ends.
                self.phase = Phase::Delivered {
                    effect: classification.breaker,
                };
            }
            (decision, _) => {
                let permit = self.breaker_permit.take();
                engine.breaker_record(now, self.origin, permit, classification.breaker);
                let reusable = self.body_read_reusable.take().unwrap_or(false);
                self.release_connection(now, engine, reusable);
                match decision {
                    Decision::Retry { kind, at } => {
                        if kind == RetryKind::AuthReplay {
                            if let (Some(generation), Some(cache)) =
                                (self.sent_generation, &mut engine.tokens)
                            {
                                cache.handle_unauthorized(now, generation);
                            }
                            self.lease = None;
                        }
                        self.attempt_kind = AttemptKind::Retry(kind);
                        self.phase = Phase::Admit { not_before: at };
                    }
                    Decision::GiveUp(reason) => {
                        let kind = error_kind(outcome, classification.row);
                        self.fail(now, engine, kind, Some(reason));
                    }
                    Decision::RateLimited { until } => {
                        self.fail(now, engine, CallErrorKind::RateLimited { until }, None)
                    }
                    Decision::DeadlineExceeded => {
                        self.fail(now, engine, CallErrorKind::DeadlineExceeded, None)
                    }
                }
            }
        }
    }

    /// Draws the delay, schedules it against the deadline and the Retry-After cap, then pays
    /// (docs/spec/retry.md#deciding-a-retry); records the retry in the ledger when it will
    /// happen.
    fn place_retry(
        &mut self,
        now: Instant,
        engine: &mut Engine<C>,
        plan: crate::policy::retry::RetryPlan,
        directives: &ServerDirectives,
    ) -> Decision {
        let config = &engine.config;
        let Some(h) = engine
            .health
            .get_mut(self.origin.index())
            .and_then(Option::as_mut)
        else {
            return Decision::GiveUp(GiveUpReason::BudgetExhausted);
        };
        let p95 = h.latency.p95(now);
        let attempt_floor = if h.latency.len(now) >= ATTEMPT_FLOOR_MIN_SAMPLES {
            h.latency.p50(now).unwrap_or(Duration::ZERO)
        } else {
            Duration::ZERO
        };
        let gated = matches!(
            plan.kind,
            RetryKind::Ordinary | RetryKind::KeyedConflict | RetryKind::OneShot
        );
        let (mut delay, min_delay) = if plan.backoff {
            let n = self.backoff_retries;
            let delay = config
                .backoff
                .delay(n, p95, self.previous_delay, &mut self.rng);
            (delay, config.backoff.earliest_delay(n, p95))
        } else {
            (Duration::ZERO, Duration::ZERO)
        };
        let mut retry_after = if gated { directives.retry_after } else { None };
        if let Some(ra) = retry_after {
            delay = config.backoff.apply_retry_after(delay, ra, &mut self.rng);
        }
        if gated {
            if let Some(gate) = h.gate.remaining(now) {
                retry_after = Some(retry_after.map_or(gate, |ra| ra.max(gate)));
            }
        }
        let scheduled = schedule(&ScheduleInput {
            now,
            deadline: self.deadline,
            delay,
            min_delay,
            retry_after,
            retry_after_cap: config.retry.retry_after_cap(),
            attempt_floor,
        });
        match scheduled {
            // An attempt that would start at the deadline has no time to run: do not wait for it.
            Schedule::Proceed { at, .. } if at >= self.deadline => Decision::DeadlineExceeded,
            Schedule::Proceed { delay, at } => {
                match h.budget.charge(now, RetryVerdict::Retry(plan)) {
                    RetryVerdict::GiveUp(reason) => Decision::GiveUp(reason),
                    verdict @ RetryVerdict::Retry(_) => {
                        self.ledger.record(&verdict);
                        if plan.backoff {
                            self.backoff_retries += 1;
                            self.previous_delay = Some(delay);
                        }
                        self.need_fresh = plan.fresh_connection;
                        Decision::Retry {
                            kind: plan.kind,
                            at,
                        }
                    }
                }
            }
            Schedule::RateLimited { until } => Decision::RateLimited { until },
            Schedule::DeadlineExceeded => Decision::DeadlineExceeded,
        }
    }

    fn refuse_by_breaker(
        &mut self,
        now: Instant,
        engine: &mut Engine<C>,
        rejected: BreakerRejected,
    ) {
        self.push_record(now, OutcomeRow::BreakerRejected, None);
        let kind = CallErrorKind::CircuitOpen {
            retry_at: rejected.retry_at,
            retry_after: rejected.retry_after,
        };
        self.fail(now, engine, kind, None);
    }

    /// A local limit refused the attempt (rule `local-exhaustion`): no retry, no budget; the
    /// breaker hears the rule's effect (Ignore unless the user counts local exhaustion).
    fn refuse_locally(&mut self, now: Instant, engine: &mut Engine<C>, why: LocalExhaustion) {
        let ctx = engine.config.retry.outcome_policy().context(false, false);
        let effect = classify(&AttemptOutcome::LocalExhaustion(why), &ctx).breaker;
        let permit = self.breaker_permit.take();
        engine.breaker_record(now, self.origin, permit, effect);
        self.push_record(now, OutcomeRow::LocalExhaustion, None);
        let kind = if now >= self.deadline && why != LocalExhaustion::QueueFull {
            CallErrorKind::DeadlineExceeded
        } else {
            CallErrorKind::PoolExhausted(why)
        };
        self.fail(now, engine, kind, None);
    }

    // ---- endings -----------------------------------------------------------------------------

    fn fail(
        &mut self,
        now: Instant,
        engine: &mut Engine<C>,
        kind: CallErrorKind,
        give_up: Option<GiveUpReason>,
    ) {
        self.failure = Some(self.error(kind, give_up));
        self.end(now, engine);
    }

    fn error(&self, kind: CallErrorKind, give_up: Option<GiveUpReason>) -> CallError {
        CallError {
            kind,
            give_up,
            attempts: self.records.as_slice().to_vec(),
        }
    }

    fn end_step(&mut self) -> Step {
        match self.failure.take() {
            Some(error) => Step::Fail(error),
            None => Step::Done,
        }
    }

    /// Gives everything back and marks the call ended. Safe to call in any state.
    fn end(&mut self, now: Instant, engine: &mut Engine<C>) {
        self.release_breaker(now, engine);
        self.release_connection(now, engine, false);
        if let Some(reservation) = self.reservation.take() {
            let _ = engine.pool.cancel_reservation(reservation, now);
        }
        if let Phase::WaitPool { waiter, .. } = self.phase {
            if engine.pool.cancel_waiter(waiter, now).is_ok() {
                engine.pool_waiters.retain(|(w, _)| *w != waiter);
            }
        }
        // An answer the pool already gave but the call never took.
        if let Some(PoolAnswer::Granted(grant)) =
            engine.slot(self.id).and_then(|s| s.pool_answer.take())
        {
            engine.give_back_grant(grant, now);
        }
        let granted_unseen = engine
            .slot(self.id)
            .is_some_and(|s| std::mem::replace(&mut s.permit_granted, false));
        if self.holds_permit || granted_unseen {
            self.holds_permit = false;
            engine.release_permit();
        } else {
            engine.limit.cancel(&self.id);
        }
        engine.token_waiters.retain(|id| *id != self.id);
        if let Some(fetch) = self.owned_fetch.take() {
            let owned = engine
                .token_fetch
                .as_ref()
                .is_some_and(|f| f.ticket.id() == fetch && f.owner == Some(self.id));
            if owned {
                let _ = engine.cancel_token_fetch(now, fetch);
            }
        }
        engine.pump_pool(now);
        engine.free_call(self.id);
        self.phase = Phase::Ended;
    }

    fn release_breaker(&mut self, now: Instant, engine: &mut Engine<C>) {
        if let (Some(permit), Some(h)) = (self.breaker_permit.take(), engine.health(self.origin)) {
            h.breaker.release(now, permit);
            engine.pump_breaker(self.origin);
        }
    }

    fn release_connection(&mut self, now: Instant, engine: &mut Engine<C>, reusable: bool) {
        if let Some(c) = self.conn.take() {
            let _ = engine.pool.handle_released(c.id, c.value, reusable, now);
            engine.pump_pool(now);
        }
    }

    fn push_record(&mut self, now: Instant, row: OutcomeRow, status: Option<StatusCode>) {
        let since = self
            .conn
            .as_ref()
            .map_or(self.attempt_started, |c| c.sent_at);
        self.records.push(AttemptRecord {
            number: self.ledger.counted_attempts(),
            kind: self.attempt_kind,
            row,
            status,
            elapsed: now.saturating_duration_since(since),
        });
    }

    fn observe(&mut self, now: Instant, engine: &mut Engine<C>) -> Instant {
        self.latest_now = self.latest_now.max(engine.observe(now));
        self.latest_now
    }

    fn wrong_state(&self, input: &'static str) -> CallMisuse {
        CallMisuse::WrongState {
            input,
            phase: self.phase(),
        }
    }

    /// How long the call has run.
    pub fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started_at)
    }
}

/// Why opening a connection failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[non_exhaustive]
pub enum ConnectError {
    /// DNS, refused, timeout or TLS handshake (rule `connect-failure`).
    Failed(ConnectFailure),
    /// The certificate or host name failed verification (rule `certificate-failure`).
    CertificateInvalid,
}

/// The outcome of weighing a retry.
enum Decision {
    Retry { kind: RetryKind, at: Instant },
    GiveUp(GiveUpReason),
    RateLimited { until: Instant },
    DeadlineExceeded,
}

/// The error an unretried failure ends the call with.
fn error_kind(outcome: AttemptOutcome, row: OutcomeRow) -> CallErrorKind {
    match outcome {
        AttemptOutcome::ConnectFailed(ConnectFailure::Timeout) => {
            CallErrorKind::Timeout(TimeoutPhase::Connect)
        }
        AttemptOutcome::ConnectFailed(kind) => CallErrorKind::Connect(kind),
        AttemptOutcome::CertificateInvalid => CallErrorKind::Certificate,
        AttemptOutcome::LocalExhaustion(why) => CallErrorKind::PoolExhausted(why),
        AttemptOutcome::AttemptTimedOut { .. } => CallErrorKind::Timeout(TimeoutPhase::Response),
        AttemptOutcome::ConnectionDeadBeforeWrite { .. }
        | AttemptOutcome::RefusedStream
        | AttemptOutcome::ClosedBeforeResponse { .. }
        | AttemptOutcome::ExchangeFailed => CallErrorKind::Transport(row),
        AttemptOutcome::Cancelled => CallErrorKind::Cancelled,
        _ => CallErrorKind::Other(row),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
