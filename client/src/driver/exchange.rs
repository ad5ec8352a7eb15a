//! The send step: one attempt's request written and its response head read.
//!
//! The attempt's extra headers (the idempotency key, the token) go into the
//! call's own header map, the head is encoded straight into the
//! connection's write buffer, and the exchange (write, then read until a
//! head) runs under the attempt's deadline. The hooks see the attempt before
//! it leaves and the head when it arrives; the core gets the outcome.

use std::sync::atomic::Ordering;

use breakwater_core::call::{self, AttemptPlan};
use breakwater_core::h1::{
    encode_proxy_request_head_with, encode_request_head_with, BodyLength, RequestContext,
};
use breakwater_core::policy::outcome::AttemptOutcome;
use breakwater_core::Instant;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION,
};

/// A placeholder for the unused places of an attempt's override list.
static NO_VALUE: HeaderValue = HeaderValue::from_static("");

use super::Prepared;
use crate::error::{Error, ErrorKind};
use crate::guard::CallGuard;
use crate::io::{AttemptTimes, Exchange, RequestBody};
use crate::state::{RequestInfo, ResponseInfo};

use super::errors::exchange_error;
use super::Progress;

/// Sends the attempt `plan` describes on the call's connection and reports
/// its outcome to the core. Returns the clock reading after the exchange;
/// an error only when the request cannot be put on the wire at all.
pub(super) async fn send(
    guard: &mut CallGuard,
    request: &mut Prepared,
    plan: &AttemptPlan,
    now: Instant,
    progress: &mut Progress,
) -> Result<Instant, Error> {
    // Whatever an earlier attempt failed with or measured is not this one's.
    progress.last_failure = None;
    if plan.reused {
        let timings = &mut progress.timings;
        (timings.dns, timings.connect, timings.tls_handshake) = (None, None, None);
        timings.proxy_handshake = None;
    }
    let inner = guard.inner.clone();
    let others_in_flight = guard.others_in_flight();
    let Some(conn) = guard.call.connection_mut() else {
        return Err(Error::new(ErrorKind::Protocol).with_message("no connection for a send"));
    };
    // This attempt's idempotency key and token go beside the request's
    // shared header map, replacing any of the same name, rather than into a
    // copy of it: most requests share the client's own map.
    // The jar's cookies for this URL, unless the request brought its own
    // `Cookie`: asked on every attempt and every redirect hop, so each
    // carries exactly what its own URL may have.
    let cookie = match &inner.cookies {
        Some(jar) if !request.headers.contains_key(COOKIE) => jar.cookie_header(&request.url),
        _ => None,
    };
    let mut overrides: [(&HeaderName, &HeaderValue); 4] = [(&AUTHORIZATION, &NO_VALUE); 4];
    let mut count = 0;
    if let Some(value) = &request.proxy_form.authorization {
        overrides[count] = (&PROXY_AUTHORIZATION, value);
        count += 1;
    }
    if let Some(value) = &cookie {
        overrides[count] = (&COOKIE, value);
        count += 1;
    }
    if let Some((name, value)) = &plan.idempotency_key {
        overrides[count] = (name, value);
        count += 1;
    }
    if let Some(value) = &plan.authorization {
        overrides[count] = (&AUTHORIZATION, value);
        count += 1;
    }
    let reused = plan.reused;
    // A pooled connection the server closed while it was idle: nothing is
    // written, so this is not an attempt and no hook hears of it; the core
    // replaces the connection and the attempt goes out on another.
    if reused && !conn.looks_alive() {
        inner
            .counters
            .stale_connections
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(attempt = plan.number, "pooled connection closed while idle");
        let wall = inner.runtime.wall_clock();
        let _ = guard.report_at(now, |call, now, engine| {
            call.handle_attempt_outcome(
                now,
                engine,
                AttemptOutcome::ConnectionDeadBeforeWrite { reused },
                &HeaderMap::new(),
                wall,
            )
        });
        return Ok(now);
    }
    inner.counters.attempts.fetch_add(1, Ordering::Relaxed);
    if plan.kind != call::AttemptKind::Original {
        inner.counters.retries.fetch_add(1, Ordering::Relaxed);
    }
    for hook in &inner.hooks.on_request {
        hook(&RequestInfo {
            method: &request.method,
            url: &request.url,
            attempt: plan.number,
            reused_connection: reused,
        });
    }
    tracing::debug!(attempt = plan.number, reused, kind = ?plan.kind, "sending");
    // The target is the URL's own text: no `Uri` is built per request. An
    // HTTP proxy is given the absolute form, as it must forward it.
    let target = &request.url[url::Position::BeforePath..url::Position::AfterQuery];
    let encode = if request.proxy_form.absolute {
        encode_proxy_request_head_with
    } else {
        encode_request_head_with
    };
    if let Err(e) = encode(
        conn.write_buf(),
        &request.method,
        target,
        &request.origin,
        &request.headers,
        &overrides[..count],
        request.body_length,
    ) {
        return Err(Error::new(ErrorKind::Request)
            .with_source(e)
            .with_origin(request.origin.clone()));
    }
    let context = RequestContext::for_method(&request.method);
    // The attempt's clock started at checkout, in the core; the
    // yield spends the attempt's time and is counted in it.
    let sent_at = now;
    // With other calls in flight, let every ready task run first:
    // concurrent requests then leave together and the peer is
    // woken once for the burst rather than once per request, which
    // is most of the cost of a send where the peer sleeps between them.
    if others_in_flight {
        futures_lite::future::yield_now().await;
    }
    let runtime = inner.runtime.clone();
    let exchange = conn
        .exchange(
            &runtime,
            // Chosen by the framing the head announces, not by whether the
            // stream is still there: a taken stream must fail, not go out
            // as an empty body under a chunked head.
            if matches!(request.body_length, BodyLength::Streamed) {
                RequestBody::Streamed(&mut request.stream)
            } else {
                RequestBody::Buffered(&request.body)
            },
            context,
            reused,
            AttemptTimes {
                started: sent_at,
                plan,
            },
        )
        .await;
    let now = runtime.now();
    progress.timings.reused = reused;
    match exchange {
        Exchange::Head {
            head: mut response_head,
            written_at,
        } => {
            // A session cookie is a credential: no Debug of the head shows it.
            // (`entry` may grow the map: look first.)
            if response_head.headers.contains_key(http::header::SET_COOKIE) {
                if let http::header::Entry::Occupied(mut cookies) =
                    response_head.headers.entry(http::header::SET_COOKIE)
                {
                    cookies
                        .iter_mut()
                        .for_each(|value| value.set_sensitive(true));
                }
            }
            if let Some(jar) = &inner.cookies {
                jar.store_response(&response_head.headers, &request.url);
            }
            let elapsed = now.saturating_duration_since(sent_at);
            progress.timings.first_byte = Some(elapsed);
            // The upstream's latency, for the core's estimate:
            // from the end of the upload, which may have been long.
            let latency = now.saturating_duration_since(written_at);
            for hook in &inner.hooks.on_response {
                hook(&ResponseInfo {
                    method: &request.method,
                    url: &request.url,
                    status: response_head.status,
                    headers: &response_head.headers,
                    attempt: plan.number,
                    elapsed,
                });
            }
            let wall = runtime.wall_clock();
            let status = response_head.status;
            let pre = conn.prefetch(response_head.body_length);
            let read_whole = pre.end.as_ref().map(|end| end.is_reusable());
            let headers = &response_head.headers;
            let _ = guard.report_at(now, |call, now, engine| match read_whole {
                Some(reusable) => {
                    call.handle_response_read(now, engine, status, latency, headers, wall, reusable)
                }
                None => call.handle_attempt_outcome(
                    now,
                    engine,
                    AttemptOutcome::Response {
                        status,
                        elapsed: latency,
                    },
                    headers,
                    wall,
                ),
            });
            progress.head = Some((response_head, pre));
        }
        Exchange::Failed { outcome, detail } => {
            tracing::debug!(attempt = plan.number, ?outcome, "attempt failed");
            progress.last_failure =
                Some(exchange_error(detail).with_origin(request.origin.clone()));
            let wall = runtime.wall_clock();
            let _ = guard.report_at(now, |call, now, engine| {
                call.handle_attempt_outcome(now, engine, outcome, &HeaderMap::new(), wall)
            });
        }
    }
    Ok(now)
}
