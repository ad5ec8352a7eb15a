//! What a call asks of the driver ([`Step`], [`AttemptPlan`]), what the driver reports back
//! ([`BodyEnd`], [`ConnectError`]), and how a call ends in failure ([`CallError`]).

use std::fmt;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::StatusCode;

use crate::policy::auth::{AuthError, FetchId};
use crate::policy::outcome::{ConnectFailure, LocalExhaustion, OutcomeRow};
use crate::policy::retry::{GiveUpReason, RetryKind};
use crate::pool::PoolError;
use crate::Instant;

#[cfg(doc)]
use super::{Call, CallSpec, Engine, EngineEvent};

/// Attempt records a call keeps: 10 counted attempts, a transparent retry for each, the auth
/// replay and a final admission refusal fit.
pub(super) const MAX_RECORDS: usize = 24;

/// What the driver does next for a call.
#[must_use = "a step must be executed (or the call cancelled)"]
#[derive(Debug)]
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
    /// Open a connection to the call's origin (the one its [`CallSpec`] names) by
    /// `connect_deadline`, then report [`Call::handle_connected`] or
    /// [`Call::handle_connect_failed`].
    Connect {
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
pub(super) enum AttemptRecords {
    Inline { len: u8, items: [AttemptRecord; 2] },
    Spilled(Vec<AttemptRecord>),
}

impl AttemptRecords {
    pub(super) const EMPTY: AttemptRecord = AttemptRecord {
        number: 0,
        kind: AttemptKind::Original,
        row: OutcomeRow::Cancelled,
        status: None,
        elapsed: Duration::ZERO,
    };

    pub(super) fn new() -> AttemptRecords {
        AttemptRecords::Inline {
            len: 0,
            items: [Self::EMPTY; 2],
        }
    }

    /// Records an attempt; past [`MAX_RECORDS`] the history stops growing.
    pub(super) fn push(&mut self, record: AttemptRecord) {
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

    pub(super) fn as_slice(&self) -> &[AttemptRecord] {
        match self {
            AttemptRecords::Inline { len, items } => items.get(..usize::from(*len)).unwrap_or(&[]),
            AttemptRecords::Spilled(records) => records,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
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
            CallErrorKind::RateLimited { .. } => f.write_str(
                "rate limited: the server asked for a longer wait than the call can make",
            ),
            CallErrorKind::DeadlineExceeded => f.write_str("deadline exceeded"),
            CallErrorKind::Connect(why) => f.write_str(match why {
                ConnectFailure::Dns => "connect failed: the host name did not resolve",
                ConnectFailure::Refused => {
                    "connect failed: the peer refused the connection or was unreachable"
                }
                ConnectFailure::Timeout => "connect failed: the connect timeout expired",
                ConnectFailure::TlsHandshake => "connect failed: the TLS handshake failed",
                ConnectFailure::ProxyUnreachable => {
                    "connect failed: the proxy could not be reached"
                }
                ConnectFailure::ProxyRefused => "connect failed: the proxy refused the connection",
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

/// Why opening a connection failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[non_exhaustive]
pub enum ConnectError {
    /// DNS, refused, timeout or TLS handshake (rule `connect-failure`).
    Failed(ConnectFailure),
    /// The certificate or host name failed verification (rule `certificate-failure`).
    CertificateInvalid,
}
