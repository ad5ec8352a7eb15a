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

mod config;
mod engine;
mod limit;
mod machine;
mod step;
#[cfg(test)]
mod tests;

pub use config::{EngineConfig, EngineConfigError, OriginProfile};
pub use engine::{CallId, Engine, EngineEvent, OriginHealth, StartError, TokenReportError};
pub use limit::ConcurrencyLimit;
pub use machine::{Call, CallSpec};
pub use step::{
    AttemptKind, AttemptPlan, AttemptRecord, BodyEnd, CallError, CallErrorKind, CallMisuse,
    CallPhase, ConnectError, Step, TimeoutPhase,
};
