//! The [`Engine`]: the client-wide state every call shares — the pool, each origin's health,
//! the concurrency cap, the token cache — and the mailboxes through which one call's release
//! wakes another.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use http::StatusCode;

use crate::policy::auth::{
    FetchCompletion, FetchId, FetchTicket, TokenCache, TokenCacheError, TokenDecision,
    TokenFetchError, TokenGeneration, TokenResponse, WaitTicket,
};
use crate::policy::breaker::{Breaker, BreakerPermit, BreakerRejected, BreakerTransition};
use crate::policy::budget::RetryBudget;
use crate::policy::latency::LatencyWindow;
use crate::policy::outcome::BreakerEffect;
use crate::policy::retry::{RetryAfterGate, RetryOrigin};
use crate::pool::{
    AcquireError, Acquired, CloseReason, ConnId, Grant, OriginId, Pool, PoolError, PoolEvent,
    Reservation, WaiterId,
};
use crate::{Instant, Origin};

use super::config::{EngineConfig, EngineConfigError, Timeouts};
use super::limit::ConcurrencyLimit;
use super::machine::{Call, CallSpec};

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
pub(super) enum PoolAnswer<C> {
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

/// The token request in flight, and the call that runs it (none for a background refresh).
#[derive(Debug)]
struct InFlightFetch {
    ticket: FetchTicket,
    owner: Option<CallId>,
}

/// The client-wide decision state shared by every [`Call`]; see the [module docs](crate::call)
/// for what it decides and the crate's [run loop](crate#the-run-loop) for how to drive it.
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
        let rng = fastrand::Rng::with_seed(self.rng.u64(..));
        let total_timeout = self.timeouts(spec.origin).total;
        let id = self.allocate_call();
        Ok(Call::new(id, now, spec, &self.config, total_timeout, rng))
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
            .filter_map(|h| h.breaker.poll_timeout())
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
}

/// What a call gives back to the engine when it ends, besides its breaker permit and its
/// connection (which it returns itself, as it does between attempts).
#[derive(Debug)]
pub(super) struct Holdings {
    /// A reservation to open a connection, not yet used.
    pub(super) reservation: Option<Reservation>,
    /// The call's place in the pool's queue.
    pub(super) pool_waiter: Option<WaiterId>,
    /// Whether the call holds a concurrency permit.
    pub(super) permit: bool,
    /// A token fetch the call was asked to run.
    pub(super) token_fetch: Option<FetchId>,
}

/// What a [`Call`] asks of the engine. The call owns its own progress; everything shared with
/// other calls (the pool, an origin's health, the concurrency cap, the token cache, the
/// mailboxes and the event queue) changes only through these methods.
impl<C> Engine<C> {
    /// Takes `now` in; an earlier `now` than one already seen counts as the latest seen.
    pub(super) fn observe(&mut self, now: Instant) -> Instant {
        self.latest_now = self.latest_now.max(now);
        self.latest_now
    }

    /// The timeouts in force for an origin (its profile's, else the engine's).
    pub(super) fn timeouts(&self, origin: OriginId) -> Timeouts {
        match self.health.get(origin.index()) {
            Some(Some(health)) => health.timeouts,
            _ => Timeouts {
                total: self.config.total_timeout,
                attempt: self.config.attempt_timeout,
                connect: self.config.connect_timeout,
            },
        }
    }

    /// The origin's pool timeout: how long a call may wait for a connection or a permit.
    pub(super) fn pool_timeout(&self, origin: OriginId) -> Duration {
        self.pool
            .limits(origin)
            .map_or(Duration::ZERO, |l| l.pool_timeout)
    }

    // ---- the token cache ---------------------------------------------------------------------

    /// Asks the token cache for a token; `None` when the engine has none.
    pub(super) fn acquire_token(&mut self, now: Instant) -> Option<TokenDecision> {
        self.tokens.as_mut().map(|cache| cache.acquire(now))
    }

    /// Asks again for the token a call waits for; `None` when the engine has no token cache.
    pub(super) fn resume_token_wait(
        &mut self,
        now: Instant,
        wait: WaitTicket,
    ) -> Option<TokenDecision> {
        self.tokens.as_mut().map(|cache| cache.resume(now, wait))
    }

    /// Keeps the ticket of a token request the driver is about to run, so that its reports
    /// find it; `owner` is the call that runs it in the foreground (none for a background
    /// refresh).
    pub(super) fn track_token_fetch(
        &mut self,
        ticket: FetchTicket,
        owner: Option<CallId>,
    ) -> FetchId {
        let fetch = ticket.id();
        self.token_fetch = Some(InFlightFetch { ticket, owner });
        fetch
    }

    /// Registers a call to be woken when the token request in flight ends.
    pub(super) fn wait_for_token(&mut self, id: CallId) {
        self.token_waiters.push(id);
    }

    /// A 401 proved the token of `generation` bad: the cache drops it if it still holds it.
    pub(super) fn discard_token(&mut self, now: Instant, generation: TokenGeneration) {
        if let Some(cache) = &mut self.tokens {
            cache.handle_unauthorized(now, generation);
        }
    }

    // ---- the breaker -------------------------------------------------------------------------

    /// Asks the origin's breaker to admit an attempt (no permit when the origin is unknown).
    pub(super) fn admit_to_breaker(
        &mut self,
        now: Instant,
        origin: OriginId,
    ) -> Result<Option<BreakerPermit>, BreakerRejected> {
        let admitted = match self.health(origin) {
            Some(h) => h.breaker.try_acquire(now).map(Some),
            None => Ok(None),
        };
        self.pump_breaker(origin);
        admitted
    }

    /// Answers a breaker permit with the attempt's effect.
    pub(super) fn record_in_breaker(
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

    /// Gives back a breaker permit whose attempt produced no outcome.
    pub(super) fn release_breaker_permit(
        &mut self,
        now: Instant,
        origin: OriginId,
        permit: BreakerPermit,
    ) {
        if let Some(h) = self.health(origin) {
            h.breaker.release(now, permit);
            self.pump_breaker(origin);
        }
    }

    // ---- the concurrency cap -----------------------------------------------------------------

    /// Takes a concurrency permit for the call, or queues it (`false`): a released permit then
    /// passes to it and wakes it.
    pub(super) fn try_acquire_permit(&mut self, id: CallId) -> bool {
        self.limit.try_acquire(id)
    }

    /// Whether a permit was passed to the call while it waited (and takes it).
    pub(super) fn take_granted_permit(&mut self, id: CallId) -> bool {
        self.slot(id)
            .is_some_and(|s| std::mem::replace(&mut s.permit_granted, false))
    }

    /// Takes the call out of the permit queue.
    pub(super) fn leave_permit_queue(&mut self, id: CallId) {
        self.limit.cancel(&id);
    }

    // ---- the pool ----------------------------------------------------------------------------

    /// Asks the pool for a connection to `origin` by `deadline`. When the call is queued, the
    /// pool's answer will come to its mailbox ([`take_pool_answer`](Self::take_pool_answer))
    /// with a wake.
    pub(super) fn acquire_connection(
        &mut self,
        now: Instant,
        id: CallId,
        origin: OriginId,
        deadline: Instant,
    ) -> Result<Acquired<C>, AcquireError> {
        let acquired = self.pool.acquire(origin, Some(deadline), now);
        self.pump_pool(now);
        if let Ok(Acquired::Queued(waiter)) = acquired {
            self.pool_waiters.push((waiter, id));
        }
        acquired
    }

    /// Applies the pool's timers now, so that an answer due at this very instant is given.
    pub(super) fn fire_pool_timers(&mut self, now: Instant) {
        self.pool.handle_timeout(now);
        self.pump_pool(now);
    }

    /// The pool's answer to the queued call, if it came.
    pub(super) fn take_pool_answer(&mut self, id: CallId) -> Option<PoolAnswer<C>> {
        self.slot(id).and_then(|s| s.pool_answer.take())
    }

    /// Takes the call's waiter out of the pool's queue.
    pub(super) fn leave_pool_queue(&mut self, now: Instant, waiter: WaiterId) {
        self.forget_pool_waiter(now, waiter);
        self.pump_pool(now);
    }

    /// The connection for `reservation` is open; the pool names it.
    pub(super) fn connection_opened(
        &mut self,
        now: Instant,
        reservation: Reservation,
    ) -> Result<ConnId, PoolError> {
        self.pool.handle_opened(reservation, now)
    }

    /// Opening the connection for `reservation` failed: its slot is free again.
    pub(super) fn connect_failed(&mut self, now: Instant, reservation: Reservation) {
        let _ = self.pool.handle_connect_failed(reservation, now);
        self.pump_pool(now);
    }

    /// Returns a checked-out connection: to the idle set if `reusable`, else to be closed.
    pub(super) fn release_connection(
        &mut self,
        now: Instant,
        conn: ConnId,
        value: C,
        reusable: bool,
    ) {
        let _ = self.pool.handle_released(conn, value, reusable, now);
        self.pump_pool(now);
    }

    /// Asks the driver to close a connection the pool never accounted for.
    pub(super) fn close_connection(&mut self, conn: C, reason: CloseReason) {
        self.events.push_back(EngineEvent::Close { conn, reason });
    }

    // ---- the origin's health -----------------------------------------------------------------

    /// The call's original attempt is dispatched: it pays into the origin's retry budget.
    pub(super) fn deposit_in_budget(&mut self, now: Instant, origin: OriginId) {
        if let Some(h) = self.health(origin) {
            h.budget.deposit(now);
        }
    }

    /// Adds an attempt's latency sample to the origin's window.
    pub(super) fn record_latency(&mut self, now: Instant, origin: OriginId, sample: Duration) {
        if let Some(h) = self.health(origin) {
            h.latency.record(now, sample);
        }
    }

    /// Shows a response to the origin's Retry-After gate.
    pub(super) fn note_retry_after(
        &mut self,
        now: Instant,
        origin: OriginId,
        status: StatusCode,
        retry_after: Option<Duration>,
    ) {
        if let Some(h) = self.health(origin) {
            h.gate.handle_response(now, status, retry_after);
        }
    }

    /// What placing a retry to `origin` reads and pays from: the policies, and the origin's
    /// latency window, Retry-After gate and budget.
    pub(super) fn retry_origin(&mut self, origin: OriginId) -> Option<RetryOrigin<'_>> {
        let health = self.health.get_mut(origin.index())?.as_mut()?;
        Some(RetryOrigin {
            policy: &self.config.retry,
            backoff: &self.config.backoff,
            latency: &health.latency,
            gate: &health.gate,
            budget: &mut health.budget,
        })
    }

    // ---- the end of a call -------------------------------------------------------------------

    /// Takes back everything an ending call holds in the engine, passes what it frees to the
    /// calls waiting for it, and forgets the call. Safe in every state of the call.
    pub(super) fn end_call(&mut self, now: Instant, id: CallId, held: Holdings) {
        if let Some(reservation) = held.reservation {
            let _ = self.pool.cancel_reservation(reservation, now);
        }
        if let Some(waiter) = held.pool_waiter {
            self.forget_pool_waiter(now, waiter);
        }
        // An answer the pool already gave but the call never took.
        if let Some(PoolAnswer::Granted(grant)) = self.take_pool_answer(id) {
            self.give_back_grant(grant, now);
        }
        // A permit passed to the call after its last poll is the call's to give back.
        let granted_unseen = self.take_granted_permit(id);
        if held.permit || granted_unseen {
            self.release_permit();
        } else {
            self.limit.cancel(&id);
        }
        self.token_waiters.retain(|waiting| *waiting != id);
        if let Some(fetch) = held.token_fetch {
            let owned = self
                .token_fetch
                .as_ref()
                .is_some_and(|f| f.ticket.id() == fetch && f.owner == Some(id));
            if owned {
                let _ = self.cancel_token_fetch(now, fetch);
            }
        }
        self.pump_pool(now);
        self.free_call(id);
    }
}

// The engine's own bookkeeping.
impl<C> Engine<C> {
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

    /// Takes a waiter out of the pool's queue and forgets whose it was, without passing on
    /// what that frees yet.
    fn forget_pool_waiter(&mut self, now: Instant, waiter: WaiterId) {
        if self.pool.cancel_waiter(waiter, now).is_ok() {
            self.pool_waiters.retain(|(w, _)| *w != waiter);
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
