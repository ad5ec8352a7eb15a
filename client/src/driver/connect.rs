//! Opening a connection for a call, by the core's connect deadline.

use breakwater_core::call;
use breakwater_core::policy::outcome::ConnectFailure;
use breakwater_core::{Instant, Origin};

use crate::error::{Error, ErrorKind, TimeoutPhase};
use crate::guard::CallGuard;
use crate::io::{with_deadline, Connection};
use crate::runtime::{BoxTransport, ConnectErrorKind, ConnectTarget};
use crate::state::Inner;

use super::Progress;

/// The connect step: opens a connection and reports it (or the failure) to
/// the core. Returns the clock reading after the connect.
pub(super) async fn open(
    guard: &mut CallGuard,
    origin: &Origin,
    deadline: Instant,
    progress: &mut Progress,
) -> Instant {
    let runtime = guard.inner.runtime.clone();
    let started = runtime.now();
    let dialled = dial(&guard.inner, origin, deadline).await;
    let now = runtime.now();
    let failure = match dialled {
        Ok(io) => {
            let conn = Connection::new(io);
            let timings = &mut progress.timings;
            timings.dns = conn.info.dns;
            timings.tls_handshake = conn.info.tls_handshake;
            timings.proxy_handshake = conn.info.proxy_handshake;
            timings.connect = Some(now.saturating_duration_since(started));
            guard
                .report_at(now, |call, now, engine| {
                    call.handle_connected(now, engine, conn)
                })
                .err()
                .map(|e| Error::new(ErrorKind::Connect).with_message(e.to_string()))
        }
        Err((kind, err)) => {
            let _ = guard.report_at(now, |call, now, engine| {
                call.handle_connect_failed(now, engine, kind)
            });
            Some(err)
        }
    };
    progress.last_failure = failure.map(|e| e.with_origin(origin.clone()));
    now
}

/// Dials `origin` (with TLS for https) by `deadline`, classifying a failure
/// for the core and for the caller.
async fn dial(
    inner: &Inner,
    origin: &Origin,
    deadline: Instant,
) -> Result<BoxTransport, (call::ConnectError, Error)> {
    let runtime = &inner.runtime;
    let tls = match origin.scheme() {
        breakwater_core::Scheme::Https => match inner.tls() {
            Ok(tls) => Some(tls),
            // Only the defaults can fail here (the caller's settings were
            // checked by `build`), and they fall back to the bundled roots, so
            // this is not expected. If it happens, retrying will not help and it
            // says nothing about the upstream's health: the core's
            // never-retried, breaker-neutral outcome is the certificate's.
            Err(e) => return Err((call::ConnectError::CertificateInvalid, e)),
        },
        breakwater_core::Scheme::Http => None,
    };
    let proxy = inner.proxy_for(origin);
    let target = ConnectTarget::new(origin.clone(), tls).via(proxy.clone());
    // A failure of the proxy's is named by it (its password never shown).
    let through = |error: Error| match &proxy {
        Some(proxy) => error.with_message(format!("through the proxy {proxy:?}")),
        None => error,
    };
    match with_deadline(runtime, deadline, runtime.connect(target)).await {
        Some(Ok(io)) => Ok(io),
        Some(Err(err)) => {
            let (core, kind) = match err.kind() {
                ConnectErrorKind::Dns => (ConnectFailure::Dns, ErrorKind::Connect),
                ConnectErrorKind::TimedOut => (
                    ConnectFailure::Timeout,
                    ErrorKind::Timeout(TimeoutPhase::Connect),
                ),
                ConnectErrorKind::TlsHandshake => (ConnectFailure::TlsHandshake, ErrorKind::Tls),
                ConnectErrorKind::ProxyUnreachable => {
                    (ConnectFailure::ProxyUnreachable, ErrorKind::Proxy)
                }
                ConnectErrorKind::ProxyRefused => (ConnectFailure::ProxyRefused, ErrorKind::Proxy),
                ConnectErrorKind::Certificate(_) => {
                    return Err((
                        call::ConnectError::CertificateInvalid,
                        Error::new(ErrorKind::Tls).with_source(err),
                    ))
                }
                _ => (ConnectFailure::Refused, ErrorKind::Connect),
            };
            Err((
                call::ConnectError::Failed(core),
                through(Error::new(kind).with_source(err)),
            ))
        }
        None => Err((
            call::ConnectError::Failed(ConnectFailure::Timeout),
            Error::new(ErrorKind::Timeout(TimeoutPhase::Connect)),
        )),
    }
}
