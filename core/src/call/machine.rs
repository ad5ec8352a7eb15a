//! The [`Call`]: one logical request's state machine, from admission through every attempt
//! to its response or its error.
//!
//! One file, longer than its neighbours, because every transition in it shares one list of
//! things the call holds (permits, a reservation, a queue place or a connection, a token
//! lease or fetch) that [`Call::cancel`] must give back in every state: reading the
//! transitions beside that list is how one checks that nothing is lost.

use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use crate::policy::auth::{
    AuthError, FetchId, TokenDecision, TokenGeneration, TokenLease, WaitTicket,
};
use crate::policy::breaker::{BreakerPermit, BreakerRejected};
use crate::policy::idempotency::{key_for_call, CallKey, Idempotence, IdempotencyKey};
use crate::policy::outcome::{
    classify, AttemptOutcome, BreakerEffect, ConnectFailure, LocalExhaustion, OutcomeRow,
};
use crate::policy::retry::{
    decide, place_retry, AttemptLedger, BackoffHistory, CallRetries, GiveUpReason, Placement,
    RequestFacts, RetryKind, RetryPlan, RetryVerdict, ServerDirectives,
};
use crate::pool::{
    AcquireError, Acquired, CloseReason, ConnId, Grant, OriginId, Reservation, WaiterId,
};
use crate::Instant;

use super::config::EngineConfig;
use super::engine::{CallId, Engine, Holdings, PoolAnswer};
use super::step::{
    AttemptKind, AttemptPlan, AttemptRecord, AttemptRecords, BodyEnd, CallError, CallErrorKind,
    CallMisuse, CallPhase, ConnectError, Step, TimeoutPhase,
};

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

/// One logical request; see the [module docs](crate::call) for what it decides and the
/// crate's [run loop](crate#the-run-loop) for how to drive it.
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
    backoff: BackoffHistory,
    deposited: bool,
    records: AttemptRecords,
    /// Set while a response whose body the driver has already read is concluded.
    body_read_reusable: Option<bool>,
}

impl<C> Call<C> {
    /// A call started at `now` by [`Engine::start_call`]: fixes its deadline, its idempotency
    /// key and its attempt limit, drawing the key from the call's own `rng`.
    pub(super) fn new(
        id: CallId,
        now: Instant,
        spec: CallSpec,
        config: &EngineConfig,
        total_timeout: Duration,
        mut rng: fastrand::Rng,
    ) -> Call<C> {
        let key = key_for_call(&config.idempotency, &spec.method, spec.key, &mut rng);
        let key_header = key.key().map(|k| {
            (
                config.idempotency.header().clone(),
                k.header_value(config.idempotency.wire_format()),
            )
        });
        let facts = RequestFacts {
            idempotent: spec.idempotence.resolve(&spec.method),
            keyed: key.is_keyed(),
            body_replayable: spec.body_replayable,
        };
        let max_attempts = spec
            .max_attempts
            .unwrap_or_else(|| config.retry.max_attempts());
        let deadline = now + spec.total_timeout.unwrap_or(total_timeout);
        Call {
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
            backoff: BackoffHistory::default(),
            deposited: false,
            records: AttemptRecords::new(),
            body_read_reusable: None,
        }
    }

    /// The call's id (named by [`EngineEvent::Wake`](super::EngineEvent::Wake)).
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
                    let Some(decision) = engine.resume_token_wait(now, wait) else {
                        return self.end_step();
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
                    if engine.take_granted_permit(self.id) {
                        self.holds_permit = true;
                        self.phase = Phase::Admit {
                            not_before: Instant::ZERO,
                        };
                    } else if now >= until {
                        engine.leave_permit_queue(self.id);
                        self.refuse_locally(now, engine, LocalExhaustion::ConcurrencyLimit);
                    } else {
                        return Step::Wait { until: Some(until) };
                    }
                }
                Phase::WaitPool { waiter, until } => {
                    if now >= until {
                        // Let the pool decide first: an answer may be due exactly now.
                        engine.fire_pool_timers(now);
                    }
                    match engine.take_pool_answer(self.id) {
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
                            engine.leave_pool_queue(now, waiter);
                            self.refuse_locally(now, engine, LocalExhaustion::PoolTimeout);
                        }
                        None => return Step::Wait { until: Some(until) },
                    }
                }
                Phase::Connecting { connect_deadline } => {
                    return Step::Connect { connect_deadline }
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
            engine.close_connection(conn, CloseReason::Unknown);
            return Err(self.wrong_state("handle_connected"));
        };
        match engine.connection_opened(now, reservation) {
            Ok(id) => {
                self.check_out(now, engine, id, conn, false);
                self.phase = Phase::Admit {
                    not_before: Instant::ZERO,
                };
                Ok(())
            }
            Err(e) => {
                engine.close_connection(conn, CloseReason::Unknown);
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
        engine.connect_failed(now, reservation);
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
        engine.record_in_breaker(now, self.origin, permit, effect);
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
            let decision = engine
                .acquire_token(now)
                .unwrap_or(TokenDecision::Failed(AuthError::ExpiredOnArrival));
            if let Some(step) = self.take_token_decision(now, engine, decision) {
                return Some(step);
            }
            // No lease yet: the phase changed (waiting or failed); the caller loops.
            self.lease.as_ref()?;
        }
        // 2. The breaker.
        if self.breaker_permit.is_none() && self.conn.is_none() {
            self.attempt_started = now;
            match engine.admit_to_breaker(now, self.origin) {
                Ok(permit) => self.breaker_permit = permit,
                Err(rejected) => {
                    self.refuse_by_breaker(now, engine, rejected);
                    return None;
                }
            }
        }
        // 3. Concurrency, once per call.
        if !self.holds_permit {
            if engine.try_acquire_permit(self.id) {
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
                let fetch = engine.track_token_fetch(ticket, None);
                Some(Step::FetchToken {
                    fetch,
                    background: true,
                })
            }
            TokenDecision::Fetch(ticket) => {
                let wait = ticket.wait_ticket();
                let fetch = engine.track_token_fetch(ticket, Some(self.id));
                self.owned_fetch = Some(fetch);
                engine.wait_for_token(self.id);
                self.phase = Phase::WaitToken(wait);
                Some(Step::FetchToken {
                    fetch,
                    background: false,
                })
            }
            TokenDecision::Wait(wait) => {
                engine.wait_for_token(self.id);
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
            match engine.acquire_connection(now, self.id, self.origin, self.deadline) {
                Ok(Acquired::Ready(Grant::Idle { conn, value })) if self.need_fresh => {
                    // A transparent retry needs a fresh connection; this idle one is most
                    // likely as stale as the one that just died.
                    engine.release_connection(now, conn, value, false);
                }
                Ok(Acquired::Ready(grant)) => return self.take_grant(now, engine, grant),
                Ok(Acquired::Queued(waiter)) => {
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
                engine.release_connection(now, conn, value, false);
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
                Some(Step::Connect { connect_deadline })
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
        engine.deposit_in_budget(now, self.origin);
    }

    /// How long a local wait (concurrency, pool queue) may last.
    fn local_wait_bound(&self, now: Instant, engine: &Engine<C>) -> Instant {
        (now + engine.pool_timeout(self.origin)).min(self.deadline)
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
            .config()
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
            Some(_) => engine.config().retry.directives(headers, received_wall),
            None => ServerDirectives::default(),
        };
        if let Some(sample) = classification.latency_sample {
            engine.record_latency(now, self.origin, sample);
        }
        if let Some(status) = status {
            engine.note_retry_after(now, self.origin, status, directives.retry_after);
        }
        let verdict = decide(&classification, &self.facts, &directives, &self.ledger);
        let decision = match verdict {
            RetryVerdict::Retry(plan) => {
                self.place_retry(now, engine, plan, directives.retry_after)
            }
            RetryVerdict::GiveUp(reason) => Placement::GiveUp(reason),
        };
        match (decision, status) {
            (Placement::GiveUp(_), Some(_)) => {
                // A response the caller gets; the breaker hears about it when the body ends.
                self.phase = Phase::Delivered {
                    effect: classification.breaker,
                };
            }
            (decision, _) => {
                let permit = self.breaker_permit.take();
                engine.record_in_breaker(now, self.origin, permit, classification.breaker);
                let reusable = self.body_read_reusable.take().unwrap_or(false);
                self.release_connection(now, engine, reusable);
                match decision {
                    Placement::Retry { kind, at } => {
                        if kind == RetryKind::AuthReplay {
                            if let Some(generation) = self.sent_generation {
                                engine.discard_token(now, generation);
                            }
                            self.lease = None;
                        }
                        self.attempt_kind = AttemptKind::Retry(kind);
                        self.phase = Phase::Admit { not_before: at };
                    }
                    Placement::GiveUp(reason) => {
                        let kind = error_kind(outcome, classification.row);
                        self.fail(now, engine, kind, Some(reason));
                    }
                    Placement::RateLimited { until } => {
                        self.fail(now, engine, CallErrorKind::RateLimited { until }, None)
                    }
                    Placement::DeadlineExceeded => {
                        self.fail(now, engine, CallErrorKind::DeadlineExceeded, None)
                    }
                }
            }
        }
    }

    /// Places an allowed retry with the retry policy's [`place_retry`], against the origin's
    /// state the engine lends; a retry that will happen on a fresh connection says so.
    fn place_retry(
        &mut self,
        now: Instant,
        engine: &mut Engine<C>,
        plan: RetryPlan,
        retry_after: Option<Duration>,
    ) -> Placement {
        let Some(origin) = engine.retry_origin(self.origin) else {
            return Placement::GiveUp(GiveUpReason::BudgetExhausted);
        };
        let call = CallRetries {
            deadline: self.deadline,
            ledger: &mut self.ledger,
            backoff: &mut self.backoff,
            rng: &mut self.rng,
        };
        let placement = place_retry(now, plan, retry_after, origin, call);
        if let Placement::Retry { .. } = placement {
            self.need_fresh = plan.fresh_connection;
        }
        placement
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
        let ctx = engine.config().retry.outcome_policy().context(false, false);
        let effect = classify(&AttemptOutcome::LocalExhaustion(why), &ctx).breaker;
        let permit = self.breaker_permit.take();
        engine.record_in_breaker(now, self.origin, permit, effect);
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
        let pool_waiter = match self.phase {
            Phase::WaitPool { waiter, .. } => Some(waiter),
            _ => None,
        };
        let held = Holdings {
            reservation: self.reservation.take(),
            pool_waiter,
            permit: std::mem::take(&mut self.holds_permit),
            token_fetch: self.owned_fetch.take(),
        };
        engine.end_call(now, self.id, held);
        self.phase = Phase::Ended;
    }

    fn release_breaker(&mut self, now: Instant, engine: &mut Engine<C>) {
        if let Some(permit) = self.breaker_permit.take() {
            engine.release_breaker_permit(now, self.origin, permit);
        }
    }

    fn release_connection(&mut self, now: Instant, engine: &mut Engine<C>, reusable: bool) {
        if let Some(c) = self.conn.take() {
            engine.release_connection(now, c.id, c.value, reusable);
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
