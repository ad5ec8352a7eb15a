//! The core's verdicts, turned into the client's [`Error`].

use breakwater_core::call::{self, CallErrorKind};
use breakwater_core::h1::ResponseHead;
use breakwater_core::{Instant, Origin};

use crate::error::{Error, ErrorKind, TimeoutPhase};
use crate::io::ExchangeError;

pub(super) fn exchange_error(detail: ExchangeError) -> Error {
    match detail {
        ExchangeError::Io(e) => Error::new(ErrorKind::Protocol)
            .with_message("connection failed mid-exchange")
            .with_source(e),
        ExchangeError::Tls(e) => Error::new(ErrorKind::Tls)
            .with_message("the server ended the TLS session")
            .with_source(e),
        ExchangeError::Protocol(e) => Error::new(ErrorKind::Protocol).with_source(e),
        ExchangeError::TimedOut => Error::new(ErrorKind::Timeout(TimeoutPhase::Response)),
        ExchangeError::WriteStalled => Error::new(ErrorKind::Timeout(TimeoutPhase::Send))
            .with_message("the server stopped reading the request for the attempt timeout"),
        ExchangeError::WriteOutlastedCall => Error::new(ErrorKind::Timeout(TimeoutPhase::Total))
            .with_message("the request was still being sent when the call's deadline came"),
        ExchangeError::Body(e) => Error::new(ErrorKind::Request).with_source(e),
    }
}

pub(super) fn call_error(
    error: call::CallError,
    origin: &Origin,
    last_failure: Option<Error>,
    head: Option<&ResponseHead>,
    now: Instant,
) -> Error {
    let attempts = error.attempts.len() as u32;
    let base = match error.kind {
        CallErrorKind::CircuitOpen { retry_after, .. } => {
            Error::new(ErrorKind::CircuitOpen).with_retry_after(retry_after)
        }
        CallErrorKind::PoolExhausted(why) => {
            Error::new(ErrorKind::PoolExhausted).with_message(why.to_string())
        }
        CallErrorKind::PoolClosed => Error::new(ErrorKind::Closed),
        CallErrorKind::PlainHttpForbidden => {
            Error::new(ErrorKind::Request).with_message("plain http is forbidden for this origin")
        }
        CallErrorKind::RateLimited { until } => {
            let wait = until.saturating_duration_since(now);
            let mut err = Error::new(ErrorKind::RateLimited)
                .with_retry_after(Some(wait))
                .with_message("the server asked for a longer wait than the call can make");
            if let Some(head) = head {
                err = err.with_status(head.status, None);
            }
            err
        }
        // The deadline is what ended the call; what the last attempt ran into
        // says why it had not succeeded by then.
        // The last attempt ended in a response (a 503 whose retry would start
        // too late) or a failure; either way the caller learns which.
        CallErrorKind::DeadlineExceeded => {
            // A last attempt that timed out names its phase in `kind()`,
            // so a connect that never completed is told from a slow
            // response; `deadline_exceeded()` says the deadline ended it.
            let err = match last_failure {
                Some(last) if last.kind() == ErrorKind::Timeout(TimeoutPhase::Total) => last,
                Some(last) if matches!(last.kind(), ErrorKind::Timeout(_)) => last
                    .with_message("the call's deadline came before another attempt could be made"),
                Some(last) => Error::new(ErrorKind::Timeout(TimeoutPhase::Total))
                    .with_source(last.into_cause()),
                None => Error::new(ErrorKind::Timeout(TimeoutPhase::Total)),
            }
            .with_deadline_exceeded();
            match head {
                Some(head) => err.with_status(head.status, None),
                None => err,
            }
        }
        // A call the driver ended itself (its request body stream failed) says why.
        CallErrorKind::Cancelled => last_failure
            .unwrap_or_else(|| Error::new(ErrorKind::Closed).with_message("call cancelled")),
        CallErrorKind::Auth(e) => Error::new(ErrorKind::Auth).with_message(e.to_string()),
        _ => match last_failure {
            Some(err) => err,
            None => Error::new(ErrorKind::Protocol).with_message(error.kind.to_string()),
        },
    };
    let base = if let Some(reason) = error.give_up {
        base.with_message(format!("not retried: {reason}"))
    } else {
        base
    };
    base.with_origin(origin.clone()).with_attempts(attempts)
}
