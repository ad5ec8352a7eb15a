//! Outcome classification: the one table every other policy reads.
//!
//! Every attempt ends in an [`AttemptOutcome`]. [`classify`] turns it, once, into a
//! [`Classification`]: what the outcome proves about whether the server applied the request
//! ([`Evidence`]), how it moves the origin's breaker ([`BreakerEffect`]), whether and how it may
//! be retried ([`RetryEligibility`]) and whether it is a latency sample. The retry decision
//! (`crate::policy::retry`), the breaker, the latency window and the idempotency rules read only that
//! record, so the whole policy can be audited in [`table`] below: one line per rule of the
//! outcome table in `docs/spec/outcomes.md`, in the same order. Each rule is an
//! [`OutcomeRow`] variant and is named, in prose, by that variant in kebab-case (rule
//! `exchange-failed` is [`OutcomeRow::ExchangeFailed`], anchored at
//! `docs/spec/outcomes.md#exchange-failed`).
//!
//! Defaults the table reads, all switchable in [`OutcomePolicy`]:
//! - the statuses retried by default are 429, 500, 502, 503 and 504; the set is configurable
//!   ([`StatusSet`], [`OutcomePolicy::retried_statuses`]) and is the only "retry 500" switch;
//! - 500 is *not* a breaker failure unless the user says so
//!   ([`OutcomePolicy::server_error_is_breaker_failure`], default off); when it is not a failure
//!   it is [`BreakerEffect::Ignore`] (a 500 is no proof of health either, so it must not reset a
//!   run of consecutive failures);
//! - local exhaustion (rule `local-exhaustion`) is never a breaker failure unless the user opts
//!   in ([`OutcomePolicy::local_exhaustion_is_breaker_failure`]).
//!
//! Cases the table settles that are easy to get wrong:
//! - 5xx statuses that no rule names (506–599) follow rule `server-error`, as 500 does;
//! - a status that the user adds to the retried set and that has no rule of its own (for
//!   example 418) becomes retryable like rule `gateway-failure`: idempotent or keyed only;
//! - rule `unauthorized` applies to any 401 on a request authenticated by a refreshable token
//!   (a challenge saying `error="invalid_token"` on a request without such a token has
//!   nothing to refresh, so it falls under rule `final-status`);
//! - a cancelled attempt (rule `cancelled`) is recorded as [`Evidence::MaybeProcessed`], the
//!   conservative reading, although a cancellation never leads to a retry anyway;
//! - a connection found dead before any byte was written is rule `stale-connection` only when
//!   it was reused; on a freshly dialled connection it is a connect failure (rule
//!   `connect-failure`), and a close before the first response byte on a fresh connection is
//!   rule `exchange-failed`, not `reused-connection-closed`: a fresh connection's failure is
//!   never retried transparently (docs/spec/retry.md#kinds-of-retry).

use std::time::Duration;

use http::StatusCode;

use crate::policy::idempotency::{keyed_status, KeyedStatus};

/// What an attempt's outcome proves about whether the server applied the request.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Evidence {
    /// No request byte left the client.
    NotSent,
    /// Bytes reached the server, but a protocol-level signal proves it did not apply them.
    NotProcessed,
    /// Anything else before a complete response: the server may have applied it.
    MaybeProcessed,
    /// A response shows the server handled the request.
    Processed,
}

/// How an outcome moves the origin's circuit breaker.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum BreakerEffect {
    /// The upstream answered healthily.
    Success,
    /// Evidence that the upstream is unhealthy.
    Failure,
    /// Says nothing about upstream health (local exhaustion, rate limiting, cancellation...).
    Ignore,
}

impl Evidence {
    /// Whether the evidence proves the request was not applied, so that resending it is safe
    /// for any method (docs/spec/retry.md#the-safety-rule).
    pub const fn proves_not_applied(self) -> bool {
        matches!(self, Evidence::NotSent | Evidence::NotProcessed)
    }
}

/// How an attempt ended, as the driver observed it. Input of [`classify`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// No connection could be made (rule `connect-failure`).
    ConnectFailed(ConnectFailure),
    /// The TLS peer's certificate or host name failed verification (rule `certificate-failure`).
    CertificateInvalid,
    /// A local limit refused the attempt before anything was sent (rule `local-exhaustion`).
    LocalExhaustion(LocalExhaustion),
    /// The origin's circuit breaker refused the attempt (rule `breaker-rejected`).
    BreakerRejected,
    /// The connection turned out dead before any request byte was written: rule
    /// `stale-connection` when it was a reused pooled connection, `connect-failure` when it was
    /// freshly dialled.
    ConnectionDeadBeforeWrite {
        /// Whether the connection came from the idle pool.
        reused: bool,
    },
    /// The peer refused the stream without processing it: HTTP/2 `REFUSED_STREAM`, a stream id
    /// above a GOAWAY's last-stream-id, HTTP/3 `REQUEST_REJECTED` (rule `refused-stream`; kept
    /// for completeness, HTTP/1.1 never reports it).
    RefusedStream,
    /// The peer closed the connection after request bytes were written and before the first
    /// response byte: rule `reused-connection-closed` when the connection was reused (the
    /// idle-close race), `exchange-failed` when it was fresh.
    ClosedBeforeResponse {
        /// Whether the connection came from the idle pool.
        reused: bool,
    },
    /// A write error mid-request, or a reset or EOF after request bytes were written and before
    /// complete response headers, once response bytes had started (rule `exchange-failed`).
    ExchangeFailed,
    /// No response headers arrived within the attempt timeout (rule `attempt-timeout`).
    AttemptTimedOut {
        /// Time from the request being completely written to the timeout (a long upload is
        /// not the upstream's latency; docs/spec/latency.md#which-outcomes-are-samples).
        elapsed: Duration,
    },
    /// Response headers arrived (the rules from `misdirected-or-too-early` to `completed`,
    /// chosen by status; docs/spec/outcomes.md#the-table).
    Response {
        /// The final (non-1xx) status.
        status: StatusCode,
        /// Time from the request being completely written to the response headers (a long
        /// upload is not the upstream's latency; docs/spec/latency.md#which-outcomes-are-samples).
        elapsed: Duration,
    },
    /// Reading the body failed after the headers were handed to the caller (rule
    /// `body-read-failed`).
    BodyReadFailed,
    /// The caller cancelled the call (rule `cancelled`).
    Cancelled,
    /// Response bytes arrived that cannot be read as an HTTP response: a garbage
    /// status line, invalid headers, contradicting framing (rule `malformed-response`).
    MalformedResponse,
}

/// Why no connection could be made (rule `connect-failure`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// The host name did not resolve.
    Dns,
    /// The peer refused the connection or was unreachable.
    Refused,
    /// The connect timeout expired.
    Timeout,
    /// The TLS handshake failed for a reason other than certificate verification.
    TlsHandshake,
    /// The proxy could not be reached or broke off its handshake: the origin
    /// was never asked (rule `proxy-unreachable`).
    ProxyUnreachable,
    /// The proxy answered, and would not open the way: it wants other
    /// credentials, or its rules refuse the origin (rule `proxy-refused`).
    ProxyRefused,
}

/// Which local limit refused an attempt (rule `local-exhaustion`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[non_exhaustive]
pub enum LocalExhaustion {
    /// No connection became free within the pool timeout.
    PoolTimeout,
    /// The pool's wait queue was full.
    QueueFull,
    /// A concurrency cap refused the call.
    ConcurrencyLimit,
}

impl std::fmt::Display for LocalExhaustion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LocalExhaustion::PoolTimeout => "no connection became free within the pool timeout",
            LocalExhaustion::QueueFull => "the pool's wait queue was full",
            LocalExhaustion::ConcurrencyLimit => {
                "no concurrency permit became free within the pool timeout"
            }
        })
    }
}

/// The rules of the outcome table (docs/spec/outcomes.md), in table order. Each rule is named
/// by its variant in kebab-case, which is also its anchor there: `ExchangeFailed` is rule
/// `exchange-failed`, `docs/spec/outcomes.md#exchange-failed`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum OutcomeRow {
    /// `connect-failure` (1): DNS failure, connect refused/unreachable/timeout, TLS handshake
    /// failure (not certificate); also a fresh connection found dead before writing.
    ConnectFailure,
    /// `certificate-failure` (2): TLS certificate or host name verification failure.
    CertificateFailure,
    /// `local-exhaustion` (3): pool timeout, wait-queue overflow, concurrency-limit rejection.
    LocalExhaustion,
    /// `breaker-rejected` (4): breaker rejection.
    BreakerRejected,
    /// `stale-connection` (5): reused pooled connection found dead before any request byte was
    /// written.
    StaleConnection,
    /// `refused-stream` (6): refused stream (HTTP/2 REFUSED_STREAM, above GOAWAY, HTTP/3
    /// REQUEST_REJECTED).
    RefusedStream,
    /// `misdirected-or-too-early` (7): 421 Misdirected Request or 425 Too Early.
    MisdirectedOrTooEarly,
    /// `request-timeout` (8): 408 Request Timeout.
    RequestTimeout,
    /// `unauthorized` (9): 401 on a request authenticated by a refreshable token.
    Unauthorized,
    /// `reused-connection-closed` (10): reused connection closed after request bytes, before the
    /// first response byte.
    ReusedConnectionClosed,
    /// `exchange-failed` (11): write error, reset or EOF mid-exchange (fresh connection, or
    /// response started).
    ExchangeFailed,
    /// `attempt-timeout` (12): attempt timeout before response headers.
    AttemptTimeout,
    /// `gateway-failure` (13): 502, 503, 504.
    GatewayFailure,
    /// `too-many-requests` (14): 429 Too Many Requests.
    TooManyRequests,
    /// `keyed-conflict` (15): 409 Conflict on a keyed request (the duplicate is still in flight).
    KeyedConflict,
    /// `server-error` (16): 500, and 5xx statuses named by no other rule.
    ServerError,
    /// `final-status` (17): 501, 505 and every other 4xx (incl. 400, 403, 404, 422, 409 unkeyed).
    FinalStatus,
    /// `completed` (18): 1xx (should never be final), 2xx, 3xx.
    Completed,
    /// `body-read-failed` (19): error while reading the body after headers were delivered.
    BodyReadFailed,
    /// `cancelled` (20): caller cancellation.
    Cancelled,
    /// `malformed-response` (21): response bytes that are not a valid HTTP response.
    MalformedResponse,
    /// The proxy could not be reached, or broke off before the origin was
    /// asked (rule `proxy-unreachable`).
    ProxyUnreachable,
    /// The proxy refused to open the way to the origin (rule `proxy-refused`).
    ProxyRefused,
}

impl OutcomeRow {
    /// The rule's position (1–23) in the outcome table of docs/spec/outcomes.md, for compact
    /// records; prose names rules by their kebab-case name, not by number.
    pub const fn number(self) -> u8 {
        match self {
            OutcomeRow::ConnectFailure => 1,
            OutcomeRow::CertificateFailure => 2,
            OutcomeRow::LocalExhaustion => 3,
            OutcomeRow::BreakerRejected => 4,
            OutcomeRow::StaleConnection => 5,
            OutcomeRow::RefusedStream => 6,
            OutcomeRow::MisdirectedOrTooEarly => 7,
            OutcomeRow::RequestTimeout => 8,
            OutcomeRow::Unauthorized => 9,
            OutcomeRow::ReusedConnectionClosed => 10,
            OutcomeRow::ExchangeFailed => 11,
            OutcomeRow::AttemptTimeout => 12,
            OutcomeRow::GatewayFailure => 13,
            OutcomeRow::TooManyRequests => 14,
            OutcomeRow::KeyedConflict => 15,
            OutcomeRow::ServerError => 16,
            OutcomeRow::FinalStatus => 17,
            OutcomeRow::Completed => 18,
            OutcomeRow::BodyReadFailed => 19,
            OutcomeRow::Cancelled => 20,
            OutcomeRow::MalformedResponse => 21,
            OutcomeRow::ProxyUnreachable => 22,
            OutcomeRow::ProxyRefused => 23,
        }
    }
}

/// Whether, and in which way, an outcome may lead to another dispatch of the same request.
///
/// This is the outcome rule's own retry rule; `crate::policy::retry::decide` adds the request's facts
/// (method, key, body, attempts used, server directives) and the absolute safety rule
/// (docs/spec/retry.md#the-safety-rule).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[non_exhaustive]
pub enum RetryEligibility {
    /// Any method may be retried (rule `connect-failure`: nothing was sent).
    AnyMethod,
    /// An immediate, free, uncounted retry on a fresh connection, any method (rules
    /// `stale-connection`, `refused-stream`).
    Transparent,
    /// As [`Transparent`](Self::Transparent), but only for idempotent or keyed requests
    /// (rule `reused-connection-closed`: the request may have reached the server).
    TransparentIfIdempotentOrKeyed,
    /// One extra attempt per logical request on a new connection, any method (rules
    /// `misdirected-or-too-early`, `request-timeout`).
    OneShot,
    /// One replay after a token refresh (rule `unauthorized`).
    AuthReplay,
    /// An ordinary retry, only for idempotent or keyed requests (rules `exchange-failed`,
    /// `attempt-timeout`, `gateway-failure`, `too-many-requests`, `server-error`).
    IdempotentOrKeyed,
    /// A keyed request whose duplicate is still in flight: retry with backoff (rule
    /// `keyed-conflict`).
    KeyedConflict,
    /// No automatic retry.
    Never(NoRetryReason),
}

/// Why an outcome rule allows no automatic retry.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[non_exhaustive]
pub enum NoRetryReason {
    /// The peer's certificate failed verification: retrying cannot help (rule
    /// `certificate-failure`).
    CertificateInvalid,
    /// A local limit refused the attempt; surfaced as a pool or concurrency error (rule
    /// `local-exhaustion`).
    LocalExhaustion,
    /// The breaker is open; surfaced as a circuit-open error (rule `breaker-rejected`).
    CircuitOpen,
    /// A response the caller should see (rules `final-status`, `completed`).
    Completed,
    /// A status that the retried-status set does not contain (rules `gateway-failure`,
    /// `too-many-requests`, `server-error`).
    StatusNotRetried,
    /// 422 on a keyed request: the key was reused with another payload
    /// (docs/spec/idempotency.md#responses-to-a-keyed-request).
    IdempotencyKeyMismatch,
    /// The response was already delivered to the caller, who owns it (rule
    /// `body-read-failed`).
    ResponseDelivered,
    /// The caller cancelled (rule `cancelled`).
    Cancelled,
    /// The server answered with bytes that are not HTTP: sending them the
    /// request again multiplies traffic to a broken server and cannot help
    /// (rule `malformed-response`).
    MalformedResponse,
    /// The proxy refused the way to the origin: sending again through it
    /// gets the same answer (rule `proxy-refused`).
    ProxyRefused,
}

/// The single record every later rule reads (docs/spec/outcomes.md).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[must_use]
pub struct Classification {
    /// The outcome rule the outcome fell under.
    pub row: OutcomeRow,
    /// What the outcome proves about whether the server applied the request.
    pub evidence: Evidence,
    /// How the outcome moves the origin's breaker.
    pub breaker: BreakerEffect,
    /// The row's retry rule.
    pub retry: RetryEligibility,
    /// The latency to record in the origin's window, if the outcome is a sample
    /// (docs/spec/latency.md#which-outcomes-are-samples; a timeout enters censored at its
    /// elapsed time).
    pub latency_sample: Option<Duration>,
}

/// A set of HTTP error statuses (400–599), as a fixed bitset: lookup is one shift and mask.
///
/// ```
/// use breakwater_core::policy::outcome::StatusSet;
/// use http::StatusCode;
///
/// let set = StatusSet::default();
/// assert!(set.contains(StatusCode::INTERNAL_SERVER_ERROR));
/// assert!(!set.contains(StatusCode::NOT_FOUND));
/// let set = set.without(StatusCode::INTERNAL_SERVER_ERROR);
/// assert!(!set.contains(StatusCode::INTERNAL_SERVER_ERROR));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusSet {
    bits: [u64; 4],
}

/// A status outside 400–599 cannot be placed in a [`StatusSet`]: only error statuses are
/// ever retried.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NotAnErrorStatus(pub StatusCode);

impl std::fmt::Display for NotAnErrorStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {} is not an error status (400-599)",
            self.0.as_u16()
        )
    }
}

impl std::error::Error for NotAnErrorStatus {}

impl StatusSet {
    /// The empty set.
    pub const EMPTY: StatusSet = StatusSet { bits: [0; 4] };

    /// The default retried statuses: 429, 500, 502, 503, 504 (docs/spec/retry.md#defaults).
    pub const DEFAULT_RETRIED: StatusSet = StatusSet::EMPTY
        .with_code(429)
        .with_code(500)
        .with_code(502)
        .with_code(503)
        .with_code(504);

    const fn with_code(mut self, code: u16) -> StatusSet {
        let index = (code - 400) as usize;
        self.bits[index / 64] |= 1 << (index % 64);
        self
    }

    fn index(status: StatusCode) -> Option<usize> {
        let code = status.as_u16();
        if (400..600).contains(&code) {
            Some(usize::from(code - 400))
        } else {
            None
        }
    }

    /// Whether `status` is in the set. Statuses outside 400–599 never are.
    pub fn contains(&self, status: StatusCode) -> bool {
        match Self::index(status) {
            Some(i) => self
                .bits
                .get(i / 64)
                .is_some_and(|w| w & (1 << (i % 64)) != 0),
            None => false,
        }
    }

    /// The set with `status` added; a status outside 400–599 is rejected.
    pub fn with(mut self, status: StatusCode) -> Result<StatusSet, NotAnErrorStatus> {
        let i = Self::index(status).ok_or(NotAnErrorStatus(status))?;
        if let Some(word) = self.bits.get_mut(i / 64) {
            *word |= 1 << (i % 64);
        }
        Ok(self)
    }

    /// The set without `status` (unchanged if it was absent).
    pub fn without(mut self, status: StatusCode) -> StatusSet {
        if let Some(i) = Self::index(status) {
            if let Some(word) = self.bits.get_mut(i / 64) {
                *word &= !(1 << (i % 64));
            }
        }
        self
    }

    /// The set with `status` present or absent.
    pub fn with_membership(self, status: StatusCode, present: bool) -> StatusSet {
        if present {
            self.with(status).unwrap_or(self)
        } else {
            self.without(status)
        }
    }

    /// The statuses in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = StatusCode> + '_ {
        (400u16..600).filter_map(|code| {
            StatusCode::from_u16(code)
                .ok()
                .filter(|status| self.contains(*status))
        })
    }
}

impl Default for StatusSet {
    /// [`StatusSet::DEFAULT_RETRIED`].
    fn default() -> StatusSet {
        StatusSet::DEFAULT_RETRIED
    }
}

impl std::fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(self.iter().map(|s| s.as_u16()))
            .finish()
    }
}

/// The user's switches that the table reads.
///
/// Defaults: retried statuses 429, 500, 502, 503, 504; a 500 is not a breaker failure; local
/// exhaustion is not a breaker failure.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct OutcomePolicy {
    /// Statuses retried (idempotent or keyed requests only). Default
    /// [`StatusSet::DEFAULT_RETRIED`].
    pub retried_statuses: StatusSet,
    /// Whether 500 (and the other 5xx of rule `server-error`) count as breaker failures.
    /// Default `false`.
    pub server_error_is_breaker_failure: bool,
    /// Whether pool timeouts and other local exhaustion count as breaker failures. Default
    /// `false`: a local burst must not cut off a healthy upstream.
    pub local_exhaustion_is_breaker_failure: bool,
}

impl Default for OutcomePolicy {
    fn default() -> OutcomePolicy {
        OutcomePolicy {
            retried_statuses: StatusSet::DEFAULT_RETRIED,
            server_error_is_breaker_failure: false,
            local_exhaustion_is_breaker_failure: false,
        }
    }
}

impl OutcomePolicy {
    /// Replaces the retried-status set.
    pub fn with_retried_statuses(mut self, statuses: StatusSet) -> OutcomePolicy {
        self.retried_statuses = statuses;
        self
    }

    /// Adds or removes 500 from the retried statuses (on by default).
    pub fn with_retry_500(mut self, retry: bool) -> OutcomePolicy {
        self.retried_statuses = self
            .retried_statuses
            .with_membership(StatusCode::INTERNAL_SERVER_ERROR, retry);
        self
    }

    /// Whether a 500 counts as a breaker failure (off by default).
    pub fn with_server_error_is_breaker_failure(mut self, failure: bool) -> OutcomePolicy {
        self.server_error_is_breaker_failure = failure;
        self
    }

    /// Whether local exhaustion counts as a breaker failure (off by default).
    pub fn with_local_exhaustion_is_breaker_failure(mut self, failure: bool) -> OutcomePolicy {
        self.local_exhaustion_is_breaker_failure = failure;
        self
    }

    /// The context for classifying one attempt of a request.
    pub fn context(&self, keyed: bool, token_authenticated: bool) -> ClassifyContext {
        ClassifyContext {
            policy: *self,
            keyed,
            token_authenticated,
        }
    }
}

/// What the table needs to know beyond the outcome itself.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ClassifyContext {
    /// The user's switches.
    pub policy: OutcomePolicy,
    /// Whether the request carries an idempotency key (docs/spec/idempotency.md).
    pub keyed: bool,
    /// Whether the request was authenticated with a token that can be refreshed (rule
    /// `unauthorized`).
    pub token_authenticated: bool,
}

/// Classifies one attempt outcome. Pure and allocation-free.
pub fn classify(outcome: &AttemptOutcome, ctx: &ClassifyContext) -> Classification {
    let (row, status) = row_of(outcome, ctx);
    let (evidence, breaker, retry, sampled) = table(row, status, ctx);
    let latency_sample = match (*outcome, sampled) {
        (AttemptOutcome::AttemptTimedOut { elapsed }, true)
        | (AttemptOutcome::Response { elapsed, .. }, true) => Some(elapsed),
        _ => None,
    };
    Classification {
        row,
        evidence,
        breaker,
        retry,
        latency_sample,
    }
}

/// The outcome table of docs/spec/outcomes.md: evidence, breaker effect, retry rule and
/// whether the outcome is a latency sample, per rule. `status` is the response status for the
/// rules that have one.
#[rustfmt::skip]
pub fn table(
    row: OutcomeRow,
    status: Option<StatusCode>,
    ctx: &ClassifyContext,
) -> (Evidence, BreakerEffect, RetryEligibility, bool) {
    use BreakerEffect::{Failure, Ignore, Success};
    use Evidence::{MaybeProcessed, NotProcessed, NotSent, Processed};
    use RetryEligibility as R;
    let p = &ctx.policy;
    let by_status = retried_status_rule(status, p);
    let if_user = |failure: bool| if failure { Failure } else { Ignore };
    match row {
        OutcomeRow::ConnectFailure => (NotSent, Failure, R::AnyMethod, false),
        OutcomeRow::CertificateFailure => (NotSent, Ignore, R::Never(NoRetryReason::CertificateInvalid), false),
        OutcomeRow::LocalExhaustion => (NotSent, if_user(p.local_exhaustion_is_breaker_failure), R::Never(NoRetryReason::LocalExhaustion), false),
        OutcomeRow::BreakerRejected => (NotSent, Ignore, R::Never(NoRetryReason::CircuitOpen), false),
        OutcomeRow::StaleConnection => (NotSent, Ignore, R::Transparent, false),
        OutcomeRow::RefusedStream => (NotProcessed, Ignore, R::Transparent, false),
        OutcomeRow::MisdirectedOrTooEarly => (NotProcessed, Ignore, R::OneShot, false),
        OutcomeRow::RequestTimeout => (NotProcessed, Ignore, R::OneShot, false),
        OutcomeRow::Unauthorized => (NotProcessed, Ignore, R::AuthReplay, true),
        OutcomeRow::ReusedConnectionClosed => (MaybeProcessed, Ignore, R::TransparentIfIdempotentOrKeyed, false),
        OutcomeRow::ExchangeFailed => (MaybeProcessed, Failure, R::IdempotentOrKeyed, false),
        OutcomeRow::AttemptTimeout => (MaybeProcessed, Failure, R::IdempotentOrKeyed, true),
        OutcomeRow::GatewayFailure => (MaybeProcessed, Failure, by_status, true),
        OutcomeRow::TooManyRequests => (MaybeProcessed, Ignore, by_status, true),
        OutcomeRow::KeyedConflict => (MaybeProcessed, Ignore, R::KeyedConflict, true),
        OutcomeRow::ServerError => (Processed, if_user(p.server_error_is_breaker_failure), by_status, true),
        OutcomeRow::FinalStatus => (Processed, Success, final_status_rule(status, ctx), true),
        OutcomeRow::Completed => (Processed, Success, R::Never(NoRetryReason::Completed), true),
        OutcomeRow::BodyReadFailed => (Processed, Failure, R::Never(NoRetryReason::ResponseDelivered), false),
        OutcomeRow::Cancelled => (MaybeProcessed, Ignore, R::Never(NoRetryReason::Cancelled), false),
        OutcomeRow::MalformedResponse => (MaybeProcessed, Failure, R::Never(NoRetryReason::MalformedResponse), false),
        OutcomeRow::ProxyUnreachable => (NotSent, Ignore, R::AnyMethod, false),
        OutcomeRow::ProxyRefused => (NotSent, Ignore, R::Never(NoRetryReason::ProxyRefused), false),
    }
}

/// Which rule an outcome falls under, and its status if it is a response.
pub fn row_of(outcome: &AttemptOutcome, ctx: &ClassifyContext) -> (OutcomeRow, Option<StatusCode>) {
    let row = match *outcome {
        AttemptOutcome::ConnectFailed(ConnectFailure::ProxyUnreachable) => {
            OutcomeRow::ProxyUnreachable
        }
        AttemptOutcome::ConnectFailed(ConnectFailure::ProxyRefused) => OutcomeRow::ProxyRefused,
        AttemptOutcome::ConnectFailed(_) => OutcomeRow::ConnectFailure,
        AttemptOutcome::CertificateInvalid => OutcomeRow::CertificateFailure,
        AttemptOutcome::LocalExhaustion(_) => OutcomeRow::LocalExhaustion,
        AttemptOutcome::BreakerRejected => OutcomeRow::BreakerRejected,
        AttemptOutcome::ConnectionDeadBeforeWrite { reused: true } => OutcomeRow::StaleConnection,
        AttemptOutcome::ConnectionDeadBeforeWrite { reused: false } => OutcomeRow::ConnectFailure,
        AttemptOutcome::RefusedStream => OutcomeRow::RefusedStream,
        AttemptOutcome::ClosedBeforeResponse { reused: true } => OutcomeRow::ReusedConnectionClosed,
        AttemptOutcome::ClosedBeforeResponse { reused: false } => OutcomeRow::ExchangeFailed,
        AttemptOutcome::ExchangeFailed => OutcomeRow::ExchangeFailed,
        AttemptOutcome::AttemptTimedOut { .. } => OutcomeRow::AttemptTimeout,
        AttemptOutcome::Response { status, .. } => return (status_row(status, ctx), Some(status)),
        AttemptOutcome::BodyReadFailed => OutcomeRow::BodyReadFailed,
        AttemptOutcome::Cancelled => OutcomeRow::Cancelled,
        AttemptOutcome::MalformedResponse => OutcomeRow::MalformedResponse,
    };
    (row, None)
}

fn status_row(status: StatusCode, ctx: &ClassifyContext) -> OutcomeRow {
    match status.as_u16() {
        421 | 425 => OutcomeRow::MisdirectedOrTooEarly,
        408 => OutcomeRow::RequestTimeout,
        401 if ctx.token_authenticated => OutcomeRow::Unauthorized,
        502..=504 => OutcomeRow::GatewayFailure,
        429 => OutcomeRow::TooManyRequests,
        409 if keyed_status(status, ctx.keyed) == KeyedStatus::DuplicateInFlight => {
            OutcomeRow::KeyedConflict
        }
        501 | 505 => OutcomeRow::FinalStatus,
        500..=599 => OutcomeRow::ServerError,
        400..=499 => OutcomeRow::FinalStatus,
        _ => OutcomeRow::Completed,
    }
}

/// Rules `gateway-failure`, `too-many-requests` and `server-error`: retried (idempotent or
/// keyed) only if the status is in the set.
fn retried_status_rule(status: Option<StatusCode>, policy: &OutcomePolicy) -> RetryEligibility {
    match status {
        Some(s) if policy.retried_statuses.contains(s) => RetryEligibility::IdempotentOrKeyed,
        _ => RetryEligibility::Never(NoRetryReason::StatusNotRetried),
    }
}

/// Rule `final-status`: terminal, except a status the user added to the retried set; a 422 on
/// a keyed request is always the terminal key mismatch
/// (docs/spec/idempotency.md#responses-to-a-keyed-request).
fn final_status_rule(status: Option<StatusCode>, ctx: &ClassifyContext) -> RetryEligibility {
    match status {
        Some(s) if keyed_status(s, ctx.keyed) == KeyedStatus::PayloadMismatch => {
            RetryEligibility::Never(NoRetryReason::IdempotencyKeyMismatch)
        }
        Some(s) if ctx.policy.retried_statuses.contains(s) => RetryEligibility::IdempotentOrKeyed,
        _ => RetryEligibility::Never(NoRetryReason::Completed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(code: u16) -> AttemptOutcome {
        AttemptOutcome::Response {
            status: StatusCode::from_u16(code).unwrap(),
            elapsed: Duration::from_millis(7),
        }
    }

    #[test]
    fn every_status_lands_in_exactly_the_expected_row() {
        let ctx = ClassifyContext::default();
        let rows: Vec<u8> = [
            200, 304, 400, 401, 404, 408, 409, 421, 422, 425, 429, 500, 501, 502, 503, 504, 505,
            507, 599,
        ]
        .iter()
        .map(|c| classify(&response(*c), &ctx).row.number())
        .collect();
        assert_eq!(
            rows,
            [18, 18, 17, 17, 17, 8, 17, 7, 17, 7, 14, 16, 17, 13, 13, 13, 17, 16, 16]
        );
    }

    #[test]
    fn status_set_holds_only_error_statuses() {
        assert_eq!(
            StatusSet::EMPTY.with(StatusCode::OK),
            Err(NotAnErrorStatus(StatusCode::OK))
        );
        let all: Vec<u16> = StatusSet::default().iter().map(|s| s.as_u16()).collect();
        assert_eq!(all, [429, 500, 502, 503, 504]);
        let s = StatusSet::EMPTY
            .with(StatusCode::from_u16(599).unwrap())
            .unwrap();
        assert!(s.contains(StatusCode::from_u16(599).unwrap()));
        assert!(!s.contains(StatusCode::from_u16(598).unwrap()));
        assert_eq!(format!("{s:?}"), "{599}");
    }

    #[test]
    fn retry_500_switch_only_touches_500() {
        let off = OutcomePolicy::default().with_retry_500(false);
        let ctx = off.context(false, false);
        assert_eq!(
            classify(&response(500), &ctx).retry,
            RetryEligibility::Never(NoRetryReason::StatusNotRetried)
        );
        assert_eq!(
            classify(&response(503), &ctx).retry,
            RetryEligibility::IdempotentOrKeyed
        );
    }

    #[test]
    fn a_status_added_by_the_user_becomes_retryable() {
        let teapot = StatusCode::from_u16(418).unwrap();
        let policy = OutcomePolicy::default()
            .with_retried_statuses(StatusSet::default().with(teapot).unwrap());
        let c = classify(&response(418), &policy.context(false, false));
        assert_eq!(
            (c.row, c.retry),
            (OutcomeRow::FinalStatus, RetryEligibility::IdempotentOrKeyed)
        );
        // ...but never a keyed 422, and never a one-shot row turned ordinary.
        let policy = OutcomePolicy::default().with_retried_statuses(
            StatusSet::default()
                .with(StatusCode::UNPROCESSABLE_ENTITY)
                .unwrap(),
        );
        let c = classify(&response(422), &policy.context(true, false));
        assert_eq!(
            c.retry,
            RetryEligibility::Never(NoRetryReason::IdempotencyKeyMismatch)
        );
    }
}
