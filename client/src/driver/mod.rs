//! The driver: the run loop of one call, as the core's manual describes it.
//!
//! [`run`] asks the core's engine for the call's next [`Step`] and does
//! exactly that: wait, fetch a token, connect, send, deliver, fail. It holds
//! no policy of its own. Each step's I/O lives in a module of its own:
//! [`connect`] opens a connection, [`exchange`] writes a request and reads
//! its head, [`token`] runs token fetches, [`errors`] turns the core's
//! verdicts into the client's [`Error`]. All of it happens on the task that
//! awaits the call, on the connection the call checked out.

mod connect;
mod errors;
mod exchange;
mod follow;
mod token;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use breakwater_core::call::{CallSpec, Step};
use breakwater_core::h1::{BodyLength, ResponseHead};
use breakwater_core::policy::idempotency::{Idempotence, IdempotencyKey};
use breakwater_core::pool::OriginId;
use breakwater_core::proxy::tunnel::absolute_form_refusal;
use breakwater_core::redirect::RedirectPolicy;
use breakwater_core::{Instant, Origin};
use bytes::Bytes;
use http::header::HeaderMap;
use http::Method;
use url::Url;

use crate::error::{Error, ErrorKind};
use crate::guard::CallGuard;
use crate::io::{BodyStream, Prefetched};
use crate::response::{Response, Timings};
use crate::state::{HttpProxyForm, Inner, WakeSlot};

/// What a request changes about its call.
pub(crate) struct CallOverrides {
    pub(crate) body_replayable: bool,
    pub(crate) idempotence: Idempotence,
    pub(crate) key: Option<IdempotencyKey>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) attempts: Option<u32>,
}

impl CallOverrides {
    pub(crate) fn spec(self, method: Method, origin: OriginId, authenticated: bool) -> CallSpec {
        let mut spec = CallSpec::new(method, origin)
            .with_idempotence(self.idempotence)
            .with_body_replayable(self.body_replayable)
            .with_authenticated(authenticated);
        if let Some(key) = self.key {
            spec = spec.with_key(key);
        }
        if let Some(timeout) = self.timeout {
            spec = spec.with_total_timeout(timeout);
        }
        if let Some(attempts) = self.attempts {
            spec = spec.with_max_attempts(attempts);
        }
        spec
    }
}

/// A request ready for the wire.
pub(crate) struct Prepared {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) origin: Origin,
    /// Shared with the client when the request sets no header of its own.
    pub(crate) headers: Arc<HeaderMap>,
    pub(crate) body: Bytes,
    /// A streamed body, taken by the attempt that sends it.
    pub(crate) stream: Option<BodyStream>,
    pub(crate) body_replayable: bool,
    pub(crate) body_length: BodyLength,
    pub(crate) tokens: bool,
    /// Whether the response's body is decoded (when the client decodes bodies).
    pub(crate) decompress: bool,
    /// How a plain `http` request is written for an HTTP proxy, if one is between.
    pub(crate) proxy_form: HttpProxyForm,
}

/// What the call's attempts have left for its end: the last response head
/// (with the body bytes that came with it), the last attempt's failure, and
/// the timings the response will report.
#[derive(Default)]
struct Progress {
    head: Option<(ResponseHead, Prefetched)>,
    last_failure: Option<Error>,
    timings: Timings,
}

impl Progress {
    /// A new attempt starts: an earlier one's response is not its outcome.
    fn new_attempt(&mut self) {
        self.head = None;
    }
}

/// Runs one call to its response or its error: the loop of the core's
/// manual, once per hop of a chain of redirects ([`follow`]), each hop a
/// call of its own in the engine.
///
/// The clock is read once after each await, and that reading serves every
/// decision until the next one: a call reads it about five times.
pub(crate) async fn run(
    inner: Arc<Inner>,
    mut request: Prepared,
    overrides: CallOverrides,
    redirects: Option<RedirectPolicy>,
) -> Result<Response, Error> {
    let runtime = inner.runtime.clone();
    let mut started = runtime.now();
    let mut now = started;
    // Every error names the call (method, URL with query values redacted).
    let named =
        |error: Error, request: &Prepared| error.with_request(&request.method, &request.url);
    // What a redirect's next hop keeps of the call's overrides.
    let (mut idempotence, mut attempts) = (overrides.idempotence, overrides.attempts);
    let mut guard = start(&inner, &request, overrides, now).map_err(|e| named(e, &request))?;
    let mut progress = Progress::default();
    let mut chain = follow::Chain::default();
    loop {
        match guard.poll_step(now) {
            Step::Wait { until } => {
                tracing::trace!(
                    ?until,
                    "waiting (permit, pool slot, token, backoff or Retry-After)"
                );
                guard.wait(until).await;
                let waited_from = now;
                now = runtime.now();
                progress.timings.queued += now.saturating_duration_since(waited_from);
            }
            // A refresh while the token is still valid: the call goes on with it.
            Step::FetchToken {
                fetch,
                background: true,
            } => token::spawn_background_refresh(&inner, fetch),
            Step::FetchToken {
                fetch,
                background: false,
            } => {
                token::fetch_for_call(&mut guard, fetch).await;
                now = runtime.now();
            }
            Step::Connect { connect_deadline } => {
                progress.new_attempt();
                now = connect::open(&mut guard, &request.origin, connect_deadline, &mut progress)
                    .await;
            }
            Step::Send(plan) => {
                progress.new_attempt();
                now = exchange::send(&mut guard, &mut request, &plan, now, &mut progress)
                    .await
                    .map_err(|e| named(e, &request))?;
            }
            Step::Deliver => {
                let Some((head, prefetched)) = progress.head.take() else {
                    let error =
                        Error::new(ErrorKind::Protocol).with_message("delivery without a head");
                    return Err(named(error, &request));
                };
                progress.timings.total = now.saturating_duration_since(started);
                // The proxy's own refusal of a request in absolute form (its
                // 407) is the proxy's error, not the origin's response.
                let sent = request.proxy_form.authorization.is_some();
                if let Some(refusal) = request
                    .proxy_form
                    .absolute
                    .then(|| absolute_form_refusal(head.status.as_u16(), sent))
                    .flatten()
                {
                    let error = Error::new(ErrorKind::Proxy)
                        .with_message(refusal.to_string())
                        .with_source(refusal);
                    return Err(named(error, &request));
                }
                let decode = inner.decompress.filter(|_| request.decompress);
                let response = Response::new(
                    guard,
                    head,
                    prefetched,
                    request.method,
                    request.url,
                    std::mem::take(&mut progress.timings),
                    decode,
                );
                // Most responses end the call: returned as they are, with
                // no redirect state built and the response moved once.
                if chain.is_empty() && !follow::is_redirect(&response) {
                    return Ok(response);
                }
                let answered = follow::Answered {
                    headers: request.headers,
                    body: request.body,
                    body_length: request.body_length,
                    origin: request.origin,
                    tokens: request.tokens,
                    decompress: request.decompress,
                    idempotence,
                    attempts,
                };
                // Boxed: the redirect's state stays out of every call's future.
                let next = Box::pin(follow::next(
                    &inner, &mut chain, response, answered, redirects,
                ));
                match next.await? {
                    follow::Next::Deliver(response) => return Ok(response),
                    follow::Next::Follow(next, overrides) => {
                        (idempotence, attempts) = (overrides.idempotence, overrides.attempts);
                        request = next;
                        started = runtime.now();
                        now = started;
                        guard = start(&inner, &request, overrides, now)
                            .map_err(|e| named(e, &request))?;
                        progress = Progress::default();
                    }
                }
            }
            Step::Done => {
                let error =
                    Error::new(ErrorKind::Protocol).with_message("call ended without a response");
                return Err(named(error, &request));
            }
            Step::Fail(error) => {
                inner.counters.failures.fetch_add(1, Ordering::Relaxed);
                let head = progress.head.as_ref().map(|(head, _)| head);
                let error =
                    errors::call_error(error, &request.origin, progress.last_failure, head, now);
                return Err(named(error, &request));
            }
        }
    }
}

/// Starts the call in the engine (after any shared timer that is due) and
/// puts it in the guard that cancels it if this future is dropped.
fn start(
    inner: &Arc<Inner>,
    request: &Prepared,
    overrides: CallOverrides,
    now: Instant,
) -> Result<CallGuard, Error> {
    let call = inner.decide(|shared| {
        if shared.closed {
            return Err(Error::new(ErrorKind::Closed).with_origin(request.origin.clone()));
        }
        if shared.engine.poll_timeout().is_some_and(|t| t <= now) {
            shared.engine.handle_timeout(now);
        }
        let origin = shared.engine.origin_id(&request.origin);
        let spec = overrides.spec(request.method.clone(), origin, request.tokens);
        let call = shared
            .engine
            .start_call(now, spec)
            .map_err(|e| Error::new(ErrorKind::Builder).with_message(e.to_string()))?;
        shared.wake_slots.insert(call.id(), WakeSlot::default());
        Ok(call)
    })?;
    inner.counters.calls.fetch_add(1, Ordering::Relaxed);
    Ok(CallGuard::new(inner.clone(), call))
}
