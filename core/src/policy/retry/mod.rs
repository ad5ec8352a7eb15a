//! Retries: whether a failed attempt is sent again, and when, within the server's directives,
//! the call's deadline and the origin's budget.
//!
//! The specification is docs/spec/retry.md. This module decides *whether* and *how* to retry;
//! the delay itself comes from [`crate::policy::backoff`] and the payment from
//! [`crate::policy::budget`].
//!
//! # Calling order (for the call orchestrator)
//! 1. Classify the attempt's outcome ([`crate::policy::outcome::classify`]).
//! 2. Read the response's directives ([`RetryPolicy::directives`]) and, on 429/503, feed
//!    the origin's [`RetryAfterGate`].
//! 3. [`decide`] — the outcome rule's retry kind, the absolute safety rule, replayable body,
//!    attempt limits, "do not retry" directives. Gives a [`RetryVerdict`].
//! 4. For a delayed retry, draw the backoff delay ([`crate::policy::backoff`]), then
//!    [`schedule`] it against the deadline, the Retry-After cap and the origin's gate (a
//!    transparent retry is scheduled with a zero delay: it still honours the deadline).
//! 5. Pay: [`RetryBudget::charge`] (free for transparent retries and auth replays). Paying
//!    last means a retry that cannot happen costs nothing.
//! 6. Record the retry in the call's [`AttemptLedger`] and dispatch it (the breaker admits it
//!    at dispatch).
//!
//! Steps 4 to 6 are one function of this module, `place_retry`, which the call orchestrator
//! runs with the origin's state. Every original attempt deposits into its origin's budget on
//! dispatch ([`RetryBudget::deposit`]); retries never deposit.
//!
//! # Defaults
//! - 3 attempts in total including the original, hard cap 10 ([`MAX_ATTEMPTS_CAP`]);
//!   transparent retries and the auth replay do not count (docs/spec/retry.md#attempts).
//! - Retried statuses 429, 500, 502, 503, 504, those of the httpx tutorial's `ApiClient`
//!   ([`crate::policy::outcome::StatusSet`]).
//! - Retry-After honoured up to 60 s; above the cap, or when it would end after the deadline,
//!   the call fails at once with a rate-limited error carrying the instant
//!   ([`Schedule::RateLimited`]; docs/spec/retry.md#retry-after).
//! - "Do not retry" directive header: `Stripe-Should-Retry: false` (more can be added).
//! - Budget per origin: 20 %, 10 retries per second minimum, 10 s window in 10 slots, integer
//!   units (Finagle / tower).
//!
//! # Details worth knowing
//! - Retry-After is honoured on any retried response; only 429 and 503 set the origin's gate
//!   (docs/spec/retry.md#the-retry-after-gate). `x-amz-retry-after` (milliseconds) is used when
//!   `Retry-After` is absent or invalid.
//! - Only the value `false` (any case) of a directive header forbids; `true` never overrides
//!   the safety rule or the limits.
//! - A transparent retry whose attempt already used its one transparent retry falls back to an
//!   ordinary retry (counted, charged, delayed) if the request qualifies for one.
//! - One-shot retries (408/421/425) and auth replays are immediate (no backoff); one-shot
//!   retries still count as attempts, so they cannot exceed `max_attempts`.
//! - `max_attempts` outside 1..=10 is clamped, not rejected; budget settings outside their
//!   ranges are rejected with [`BudgetConfigError`](crate::policy::budget::BudgetConfigError).

use std::time::{Duration, SystemTime};

use http::header::HeaderName;
use http::{HeaderMap, StatusCode};

use crate::policy::backoff::BackoffPolicy;
use crate::policy::budget::RetryBudget;
use crate::policy::latency::LatencyWindow;
use crate::policy::outcome::{
    Classification, Evidence, NoRetryReason, OutcomePolicy, RetryEligibility, StatusSet,
};
use crate::Instant;

/// The most attempts (original included) any call may make.
pub const MAX_ATTEMPTS_CAP: u32 = 10;

/// Retry settings for a client (per-call overrides go into [`AttemptLedger::new`]).
///
/// ```
/// use breakwater_core::policy::retry::RetryPolicy;
/// use std::time::Duration;
///
/// let policy = RetryPolicy::default()
///     .with_max_attempts(5)
///     .with_retry_500(false)
///     .with_retry_after_cap(Duration::from_secs(20));
/// assert_eq!(policy.max_attempts(), 5);
/// assert_eq!(RetryPolicy::default().with_max_attempts(50).max_attempts(), 10);
/// ```
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RetryPolicy {
    max_attempts: u32,
    outcome: OutcomePolicy,
    retry_after_cap: Duration,
    dont_retry_headers: Vec<HeaderName>,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            outcome: OutcomePolicy::default(),
            retry_after_cap: Duration::from_secs(60),
            dont_retry_headers: vec![HeaderName::from_static("stripe-should-retry")],
        }
    }
}

impl RetryPolicy {
    /// Attempts in total, original included; clamped to 1..=[`MAX_ATTEMPTS_CAP`]. Default 3.
    pub fn with_max_attempts(mut self, max_attempts: u32) -> RetryPolicy {
        self.max_attempts = max_attempts.clamp(1, MAX_ATTEMPTS_CAP);
        self
    }

    /// The classification switches (retried statuses, breaker effect of 500...).
    pub fn with_outcome_policy(mut self, outcome: OutcomePolicy) -> RetryPolicy {
        self.outcome = outcome;
        self
    }

    /// Replaces the retried statuses (default 429, 500, 502, 503, 504).
    pub fn with_retried_statuses(mut self, statuses: StatusSet) -> RetryPolicy {
        self.outcome = self.outcome.with_retried_statuses(statuses);
        self
    }

    /// Adds or removes 500 from the retried statuses (on by default).
    pub fn with_retry_500(mut self, retry: bool) -> RetryPolicy {
        self.outcome = self.outcome.with_retry_500(retry);
        self
    }

    /// The longest Retry-After honoured; a longer one fails the call at once. Default 60 s.
    pub fn with_retry_after_cap(mut self, cap: Duration) -> RetryPolicy {
        self.retry_after_cap = cap;
        self
    }

    /// Adds a response header whose value `false` forbids any retry.
    pub fn with_dont_retry_header(mut self, header: HeaderName) -> RetryPolicy {
        if !self.dont_retry_headers.contains(&header) {
            self.dont_retry_headers.push(header);
        }
        self
    }

    /// Removes every "do not retry" header, the default `Stripe-Should-Retry` included.
    pub fn without_dont_retry_headers(mut self) -> RetryPolicy {
        self.dont_retry_headers.clear();
        self
    }

    /// Attempts in total, original included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The classification switches.
    pub fn outcome_policy(&self) -> &OutcomePolicy {
        &self.outcome
    }

    /// The longest Retry-After honoured.
    pub fn retry_after_cap(&self) -> Duration {
        self.retry_after_cap
    }

    /// The "do not retry" headers.
    pub fn dont_retry_headers(&self) -> &[HeaderName] {
        &self.dont_retry_headers
    }

    /// A ledger for a new call with the policy's attempt limit.
    pub fn ledger(&self) -> AttemptLedger {
        AttemptLedger::new(self.max_attempts)
    }

    /// The server's directives in a response's headers (docs/spec/retry.md#server-directives).
    /// `received_wall` is the local wall clock when the response arrived.
    pub fn directives(&self, headers: &HeaderMap, received_wall: SystemTime) -> ServerDirectives {
        let forbid = self.dont_retry_headers.iter().any(|name| {
            headers.get_all(name).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.trim().eq_ignore_ascii_case("false"))
            })
        });
        let retry_after =
            parse_retry_after(headers, received_wall).or_else(|| parse_amz_retry_after(headers));
        ServerDirectives {
            retry_after,
            forbid,
        }
    }
}

/// What the server said about retrying.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ServerDirectives {
    /// How long the server asked the client to wait, if it said so validly.
    pub retry_after: Option<Duration>,
    /// Whether the server forbade retrying. Always wins (invariant `directive-wins`).
    pub forbid: bool,
}

/// Parses `Retry-After` (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date in IMF-fixdate,
/// RFC 850 or asctime form.
///
/// A date is measured against the response's own `Date` header when it has a valid one, which
/// cancels clock skew between server and client; otherwise against `received_wall`. A date in
/// the past gives zero. A missing, unparsable or negative value gives `None`. A delay too large
/// for `u64` seconds saturates (and will exceed any cap).
///
/// ```
/// use breakwater_core::policy::retry::parse_retry_after;
/// use http::HeaderMap;
/// use std::time::{Duration, SystemTime};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "120".parse().unwrap());
/// assert_eq!(parse_retry_after(&headers, SystemTime::UNIX_EPOCH), Some(Duration::from_secs(120)));
///
/// headers.insert("date", "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap());
/// headers.insert("retry-after", "Sun, 06 Nov 1994 08:50:07 GMT".parse().unwrap());
/// assert_eq!(parse_retry_after(&headers, SystemTime::UNIX_EPOCH), Some(Duration::from_secs(30)));
/// ```
pub fn parse_retry_after(headers: &HeaderMap, received_wall: SystemTime) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: only overflow can fail, and an absurd delay is still a delay.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let until = httpdate::parse_http_date(value).ok()?;
    let base = headers
        .get(http::header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d.trim()).ok())
        .unwrap_or(received_wall);
    Some(until.duration_since(base).unwrap_or(Duration::ZERO))
}

/// Parses the `x-amz-retry-after` hint: a non-negative integer of milliseconds.
pub fn parse_amz_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("x-amz-retry-after")?.to_str().ok()?.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Duration::from_millis(
        value.parse::<u64>().unwrap_or(u64::MAX),
    ))
}

/// Facts about the request that the retry decision needs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RequestFacts {
    /// Idempotent by method or by the caller's assertion
    /// (docs/spec/idempotency.md#idempotent-requests).
    pub idempotent: bool,
    /// Carries an idempotency key (docs/spec/idempotency.md#keys).
    pub keyed: bool,
    /// The body can be sent again byte for byte (buffered, or re-creatable).
    pub body_replayable: bool,
}

/// Per-call retry accounting: counted attempts, and the once-only allowances used so far.
///
/// Created when the original attempt is dispatched (it counts as attempt 1); each retry that
/// is dispatched is [`record`](Self::record)ed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AttemptLedger {
    max_attempts: u8,
    counted_attempts: u8,
    transparent_used_this_attempt: bool,
    transparent_retries: u8,
    one_shot_used: bool,
    auth_replay_used: bool,
}

impl AttemptLedger {
    /// A ledger for a call allowed `max_attempts` counted attempts (clamped to 1..=10), after
    /// its original attempt.
    pub fn new(max_attempts: u32) -> AttemptLedger {
        let max = max_attempts.clamp(1, MAX_ATTEMPTS_CAP);
        AttemptLedger {
            max_attempts: u8::try_from(max).unwrap_or(10),
            counted_attempts: 1,
            transparent_used_this_attempt: false,
            transparent_retries: 0,
            one_shot_used: false,
            auth_replay_used: false,
        }
    }

    /// Records a retry that is being dispatched. A [`RetryVerdict::GiveUp`] changes nothing.
    pub fn record(&mut self, verdict: &RetryVerdict) {
        let RetryVerdict::Retry(plan) = verdict else {
            return;
        };
        match plan.kind {
            RetryKind::Transparent => {
                self.transparent_used_this_attempt = true;
                self.transparent_retries = self.transparent_retries.saturating_add(1);
            }
            RetryKind::AuthReplay => self.auth_replay_used = true,
            RetryKind::OneShot => self.one_shot_used = true,
            RetryKind::Ordinary | RetryKind::KeyedConflict => {}
        }
        if plan.counts_as_attempt {
            self.counted_attempts = self.counted_attempts.saturating_add(1);
            self.transparent_used_this_attempt = false;
        }
    }

    /// Counted attempts dispatched so far, original included.
    pub fn counted_attempts(&self) -> u32 {
        u32::from(self.counted_attempts)
    }

    /// The call's attempt limit.
    pub fn max_attempts(&self) -> u32 {
        u32::from(self.max_attempts)
    }

    /// Transparent retries dispatched over the whole call.
    pub fn transparent_retries(&self) -> u32 {
        u32::from(self.transparent_retries)
    }

    /// Whether the current counted attempt already had its transparent retry.
    pub fn transparent_used_this_attempt(&self) -> bool {
        self.transparent_used_this_attempt
    }

    /// Whether the one 408/421/425 retry was used.
    pub fn one_shot_used(&self) -> bool {
        self.one_shot_used
    }

    /// Whether the one auth replay was used.
    pub fn auth_replay_used(&self) -> bool {
        self.auth_replay_used
    }
}

/// The kind of a retry, which fixes its price and its shape.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[non_exhaustive]
pub enum RetryKind {
    /// A configured retry after backoff: counted, charged.
    Ordinary,
    /// Immediate, on a fresh connection, free, not counted (rules `stale-connection`,
    /// `refused-stream`, `reused-connection-closed`; docs/spec/retry.md#kinds-of-retry).
    Transparent,
    /// The one 408/421/425 retry: immediate, on a new connection, counted, charged.
    OneShot,
    /// The one replay after a token refresh: free, not counted (docs/spec/auth.md#a-401).
    AuthReplay,
    /// 409 on a keyed request: backoff, counted, charged, breaker-neutral (rule
    /// `keyed-conflict`).
    KeyedConflict,
}

/// How a retry is to be dispatched.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct RetryPlan {
    /// The kind of retry.
    pub kind: RetryKind,
    /// Whether it withdraws from the origin's budget.
    pub charge_budget: bool,
    /// Whether it counts against `max_attempts`.
    pub counts_as_attempt: bool,
    /// Whether it must use a freshly dialled connection.
    pub fresh_connection: bool,
    /// Whether it waits for a backoff delay (otherwise it goes at once, deadline permitting).
    pub backoff: bool,
}

impl RetryKind {
    /// The plan every retry of this kind follows.
    pub const fn plan(self) -> RetryPlan {
        let (charge_budget, counts_as_attempt, fresh_connection, backoff) = match self {
            RetryKind::Ordinary => (true, true, false, true),
            RetryKind::Transparent => (false, false, true, false),
            RetryKind::OneShot => (true, true, true, false),
            RetryKind::AuthReplay => (false, false, false, false),
            RetryKind::KeyedConflict => (true, true, false, true),
        };
        RetryPlan {
            kind: self,
            charge_budget,
            counts_as_attempt,
            fresh_connection,
            backoff,
        }
    }
}

/// The answer of [`decide`] (and of [`RetryBudget::charge`](crate::policy::budget::RetryBudget::charge)).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[must_use]
pub enum RetryVerdict {
    /// Send the request again, as planned.
    Retry(RetryPlan),
    /// End the call with the attempt's outcome.
    GiveUp(GiveUpReason),
}

/// Why a call is not retried.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// The outcome's rule allows no retry.
    NotRetryable(NoRetryReason),
    /// The safety rule (docs/spec/retry.md#the-safety-rule): the request is neither idempotent
    /// nor keyed and the server may have applied it.
    UnsafeToResend,
    /// The server forbade retrying (docs/spec/retry.md#server-directives).
    DirectiveForbids,
    /// The body cannot be sent again.
    BodyNotReplayable,
    /// `max_attempts` counted attempts were made.
    AttemptsExhausted,
    /// The one 408/421/425 retry was already used.
    OneShotUsed,
    /// The one auth replay was already used.
    AuthReplayUsed,
    /// The origin's retry budget could not pay ([`RetryBudget::charge`](crate::policy::budget::RetryBudget::charge)).
    BudgetExhausted,
    /// Another response's Retry-After holds the origin's retries back longer
    /// than this call can wait (docs/spec/retry.md#the-retry-after-gate): this
    /// call's own outcome stands, and it is not rate limited itself.
    OriginGated,
}

impl std::fmt::Display for GiveUpReason {
    /// A plain sentence for error messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GiveUpReason::NotRetryable(reason) => match reason {
                NoRetryReason::CertificateInvalid => "the server's certificate was rejected",
                NoRetryReason::LocalExhaustion => "a local limit refused the attempt",
                NoRetryReason::CircuitOpen => "the circuit breaker is open",
                NoRetryReason::Completed => "the response is final",
                NoRetryReason::StatusNotRetried => "the status is not one that is retried",
                NoRetryReason::IdempotencyKeyMismatch => {
                    "the idempotency key was reused with a different request"
                }
                NoRetryReason::ResponseDelivered => "the response was already delivered",
                NoRetryReason::Cancelled => "the call was cancelled",
                NoRetryReason::MalformedResponse => "the server's response was not valid HTTP",
                NoRetryReason::ProxyRefused => "the proxy refused the way to the origin",
            },
            GiveUpReason::UnsafeToResend => {
                "the request may have reached the server and is neither idempotent nor keyed"
            }
            GiveUpReason::DirectiveForbids => "the server said not to retry",
            GiveUpReason::BodyNotReplayable => "the request body cannot be sent again",
            GiveUpReason::AttemptsExhausted => "every allowed attempt was made",
            GiveUpReason::OneShotUsed => "the one retry for 408, 421 or 425 was already used",
            GiveUpReason::AuthReplayUsed => "the one retry after a token refresh was already used",
            GiveUpReason::BudgetExhausted => "the origin's retry budget is spent",
            GiveUpReason::OriginGated => {
                "another response asked this origin's callers to wait longer than this call can"
            }
        })
    }
}

/// Decides whether the attempt just classified is retried, and how
/// (docs/spec/retry.md#deciding-a-retry).
///
/// The safety rule is checked on its own, whatever the classification says: a request that is
/// neither idempotent nor keyed is resent only after [`NotSent`](crate::policy::outcome::Evidence) or
/// `NotProcessed` evidence. Budget, deadline, Retry-After and breaker are checked afterwards
/// by [`schedule`], [`RetryBudget::charge`](crate::policy::budget::RetryBudget::charge) and the breaker.
pub fn decide(
    classification: &Classification,
    request: &RequestFacts,
    directives: &ServerDirectives,
    ledger: &AttemptLedger,
) -> RetryVerdict {
    use GiveUpReason as G;
    if directives.forbid {
        return RetryVerdict::GiveUp(G::DirectiveForbids);
    }
    let retry_safe = request.idempotent || request.keyed;
    if !retry_safe && !classification.evidence.proves_not_applied() {
        return RetryVerdict::GiveUp(G::UnsafeToResend);
    }
    let kind = match classification.retry {
        RetryEligibility::Never(reason) => return RetryVerdict::GiveUp(G::NotRetryable(reason)),
        RetryEligibility::AnyMethod => RetryKind::Ordinary,
        RetryEligibility::IdempotentOrKeyed if retry_safe => RetryKind::Ordinary,
        RetryEligibility::Transparent if !ledger.transparent_used_this_attempt => {
            RetryKind::Transparent
        }
        RetryEligibility::Transparent => RetryKind::Ordinary,
        RetryEligibility::TransparentIfIdempotentOrKeyed if retry_safe => {
            if ledger.transparent_used_this_attempt {
                RetryKind::Ordinary
            } else {
                RetryKind::Transparent
            }
        }
        RetryEligibility::IdempotentOrKeyed | RetryEligibility::TransparentIfIdempotentOrKeyed => {
            return RetryVerdict::GiveUp(G::UnsafeToResend)
        }
        RetryEligibility::OneShot if ledger.one_shot_used => {
            return RetryVerdict::GiveUp(G::OneShotUsed)
        }
        RetryEligibility::OneShot => RetryKind::OneShot,
        RetryEligibility::AuthReplay if ledger.auth_replay_used => {
            return RetryVerdict::GiveUp(G::AuthReplayUsed)
        }
        RetryEligibility::AuthReplay => RetryKind::AuthReplay,
        RetryEligibility::KeyedConflict if request.keyed => RetryKind::KeyedConflict,
        RetryEligibility::KeyedConflict => {
            return RetryVerdict::GiveUp(G::NotRetryable(NoRetryReason::Completed))
        }
    };
    // A body that cannot be sent twice can still go out once more when no
    // byte of it left: nothing of it was consumed.
    if !request.body_replayable && classification.evidence != Evidence::NotSent {
        return RetryVerdict::GiveUp(G::BodyNotReplayable);
    }
    let plan = kind.plan();
    if plan.counts_as_attempt && ledger.counted_attempts >= ledger.max_attempts {
        return RetryVerdict::GiveUp(G::AttemptsExhausted);
    }
    RetryVerdict::Retry(plan)
}

/// What [`schedule`] weighs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ScheduleInput {
    /// The current instant.
    pub now: Instant,
    /// The call's total deadline.
    pub deadline: Instant,
    /// The proposed delay (from backoff, Retry-After already applied; zero when immediate).
    pub delay: Duration,
    /// The least delay that deadline clipping may leave: the backoff strategy's earliest delay,
    /// its non-random part (docs/spec/backoff.md#deadline-clipping).
    pub min_delay: Duration,
    /// The longest of the response's Retry-After and the origin gate's remaining wait.
    pub retry_after: Option<Duration>,
    /// The longest Retry-After honoured ([`RetryPolicy::retry_after_cap`]).
    pub retry_after_cap: Duration,
    /// Time an attempt needs at least: the origin's p50 with ≥ 20 samples, else zero
    /// (docs/spec/retry.md#scheduling-against-the-deadline).
    pub attempt_floor: Duration,
}

/// When (and whether) a retry goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[must_use]
pub enum Schedule {
    /// Retry after `delay`, at `at`.
    Proceed {
        /// The delay to wait.
        delay: Duration,
        /// `now + delay`.
        at: Instant,
    },
    /// The server's Retry-After is above the cap or ends too late: fail at once with a
    /// rate-limited error that says when the server will take requests again.
    RateLimited {
        /// `now + Retry-After`.
        until: Instant,
    },
    /// No retry fits before the deadline.
    DeadlineExceeded,
}

/// Places a retry in time (docs/spec/retry.md#scheduling-against-the-deadline).
///
/// A retry goes only if `now + delay + attempt_floor ≤ deadline`. A Retry-After above the cap,
/// or one that leaves no room before the deadline, gives [`Schedule::RateLimited`]. A delay
/// that would break the deadline rule is lowered to the latest instant that keeps it, provided
/// that is still at least `min_delay` and the Retry-After; otherwise
/// [`Schedule::DeadlineExceeded`]. The delay is never below the Retry-After.
pub fn schedule(input: &ScheduleInput) -> Schedule {
    let ScheduleInput {
        now,
        deadline,
        delay,
        min_delay,
        retry_after,
        retry_after_cap,
        attempt_floor,
    } = *input;
    if let Some(ra) = retry_after {
        let until = now + ra;
        if ra > retry_after_cap || until + attempt_floor > deadline {
            return Schedule::RateLimited { until };
        }
    }
    let ra = retry_after.unwrap_or(Duration::ZERO);
    let delay = delay.max(ra);
    if now + delay + attempt_floor <= deadline {
        return Schedule::Proceed {
            delay,
            at: now + delay,
        };
    }
    if now + attempt_floor > deadline {
        return Schedule::DeadlineExceeded;
    }
    let latest = deadline.saturating_duration_since(now + attempt_floor);
    if latest >= min_delay.max(ra) {
        Schedule::Proceed {
            delay: latest,
            at: now + latest,
        }
    } else {
        Schedule::DeadlineExceeded
    }
}

/// The per-origin Retry-After gate (docs/spec/retry.md#the-retry-after-gate): a valid
/// Retry-After on a 429 or 503 sets a "not before" instant for *retries* to that origin; new
/// calls are not blocked.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct RetryAfterGate {
    not_before: Instant,
}

impl RetryAfterGate {
    /// A gate that is open.
    pub fn new() -> RetryAfterGate {
        RetryAfterGate::default()
    }

    /// Takes a response's status and Retry-After; only 429 and 503 move the gate, and only
    /// later (a shorter Retry-After never reopens it early).
    pub fn handle_response(
        &mut self,
        now: Instant,
        status: StatusCode,
        retry_after: Option<Duration>,
    ) {
        let gating =
            status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE;
        if let (true, Some(ra)) = (gating, retry_after) {
            self.not_before = self.not_before.max(now + ra);
        }
    }

    /// The instant before which no retry to the origin may go.
    pub fn not_before(&self) -> Instant {
        self.not_before
    }

    /// How long retries must still wait, if at all: feed it to [`schedule`] as a Retry-After
    /// (taking the longer of it and the response's own).
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        (now < self.not_before).then(|| self.not_before.saturating_duration_since(now))
    }
}

/// Latency samples needed before the p50 is used as the least time an attempt takes
/// (docs/spec/retry.md#scheduling-against-the-deadline).
const ATTEMPT_FLOOR_MIN_SAMPLES: usize = 20;

/// A call's backoff so far: the backoff retries it made and the last delay drawn (a
/// decorrelated jitter grows from it).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct BackoffHistory {
    pub(crate) retries: u32,
    pub(crate) previous_delay: Option<Duration>,
}

/// What a retry is placed against on the origin's side: the policies, and the origin's latency
/// window, Retry-After gate and budget.
pub(crate) struct RetryOrigin<'a> {
    pub(crate) policy: &'a RetryPolicy,
    pub(crate) backoff: &'a BackoffPolicy,
    pub(crate) latency: &'a LatencyWindow,
    pub(crate) gate: &'a RetryAfterGate,
    pub(crate) budget: &'a mut RetryBudget,
}

/// What a retry is placed against on the call's side: its deadline, its attempts so far, its
/// backoff history and its RNG.
pub(crate) struct CallRetries<'a> {
    pub(crate) deadline: Instant,
    pub(crate) ledger: &'a mut AttemptLedger,
    pub(crate) backoff: &'a mut BackoffHistory,
    pub(crate) rng: &'a mut fastrand::Rng,
}

/// Where [`place_retry`] puts a retry that [`decide`] allowed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Placement {
    /// Send it again at `at`.
    Retry { kind: RetryKind, at: Instant },
    /// The budget cannot pay (or the origin is unknown).
    GiveUp(GiveUpReason),
    /// The server's Retry-After is over the cap or ends too late ([`Schedule::RateLimited`]).
    RateLimited { until: Instant },
    /// No retry fits before the deadline.
    DeadlineExceeded,
}

/// Places a retry in time, then pays for it (docs/spec/retry.md#deciding-a-retry): steps 4 to
/// 6 of the calling order above. Draws the backoff delay (none for an immediate retry), applies
/// the response's Retry-After and the origin's gate (only to ordinary, keyed-conflict and
/// one-shot retries: a transparent retry or the auth replay answers a broken connection or a
/// token, not the server's load), [`schedule`]s it against the deadline, charges the budget,
/// and records the retry in the call's ledger and backoff history when it will happen.
///
/// `retry_after` is the response's own Retry-After, if it gave one.
pub(crate) fn place_retry(
    now: Instant,
    plan: RetryPlan,
    retry_after: Option<Duration>,
    origin: RetryOrigin<'_>,
    call: CallRetries<'_>,
) -> Placement {
    let p95 = origin.latency.p95(now);
    let attempt_floor = if origin.latency.len(now) >= ATTEMPT_FLOOR_MIN_SAMPLES {
        origin.latency.p50(now).unwrap_or(Duration::ZERO)
    } else {
        Duration::ZERO
    };
    let gated = matches!(
        plan.kind,
        RetryKind::Ordinary | RetryKind::KeyedConflict | RetryKind::OneShot
    );
    let (mut delay, min_delay) = if plan.backoff {
        let n = call.backoff.retries;
        let delay = origin
            .backoff
            .delay(n, p95, call.backoff.previous_delay, call.rng);
        (delay, origin.backoff.earliest_delay(n, p95))
    } else {
        (Duration::ZERO, Duration::ZERO)
    };
    let own_retry_after = if gated { retry_after } else { None };
    let mut retry_after = own_retry_after;
    if let Some(ra) = retry_after {
        delay = origin.backoff.apply_retry_after(delay, ra, call.rng);
    }
    if gated {
        if let Some(gate) = origin.gate.remaining(now) {
            retry_after = Some(retry_after.map_or(gate, |ra| ra.max(gate)));
        }
    }
    let retry_after_cap = origin.policy.retry_after_cap();
    // Whether this attempt's own response asked for more than the call can wait.
    let own_wait_too_long = own_retry_after
        .is_some_and(|ra| ra > retry_after_cap || now + ra + attempt_floor > call.deadline);
    let scheduled = schedule(&ScheduleInput {
        now,
        deadline: call.deadline,
        delay,
        min_delay,
        retry_after,
        retry_after_cap,
        attempt_floor,
    });
    match scheduled {
        // An attempt that would start at the deadline has no time to run: do not wait for it.
        Schedule::Proceed { at, .. } if at >= call.deadline => Placement::DeadlineExceeded,
        Schedule::Proceed { delay, at } => {
            match origin.budget.charge(now, RetryVerdict::Retry(plan)) {
                RetryVerdict::GiveUp(reason) => Placement::GiveUp(reason),
                verdict @ RetryVerdict::Retry(_) => {
                    call.ledger.record(&verdict);
                    if plan.backoff {
                        call.backoff.retries += 1;
                        call.backoff.previous_delay = Some(delay);
                    }
                    Placement::Retry {
                        kind: plan.kind,
                        at,
                    }
                }
            }
        }
        // Only the response that asked for the wait makes its call rate
        // limited; a call held back by another's Retry-After gives up its
        // retry, and its own response (or failure) stands.
        // The wait reported is the one this response asked for.
        Schedule::RateLimited { until } if own_wait_too_long => Placement::RateLimited {
            until: own_retry_after.map_or(until, |ra| now + ra),
        },
        Schedule::RateLimited { .. } => Placement::GiveUp(GiveUpReason::OriginGated),
        Schedule::DeadlineExceeded => Placement::DeadlineExceeded,
    }
}

#[cfg(test)]
mod tests;
