//! The call orchestrator: one state machine per logical request that answers "what next?".
//!
//! Every decision the core makes about a call is taken here, in one place, by combining the
//! policies of [`crate::policy`] — the token cache, the circuit breaker, the outcome table,
//! the retry rules and budget, backoff, the latency window and idempotency keys — with the
//! connection [`pool`](crate::pool) and the client's concurrency cap ([`ConcurrencyLimit`]).
//! The driver (the `breakwater` client) only executes the [`Step`]s it is given and reports
//! what happened; it takes no retry, breaker or pool decision of its own. How a driver runs
//! a call — the steps, the reports, the events, the timers, the guard — is the
//! [run loop](crate#the-run-loop) of the crate documentation; this page says what the call
//! decides. The specification is docs/spec/call.md, over the policies of the other pages of
//! docs/spec/.
//!
//! # Two objects
//! - [`Engine`]: client-wide shared state. The pool, per-origin health (breaker, latency window,
//!   retry budget, Retry-After gate; created when the origin is registered), the concurrency
//!   cap, the optional token cache, the policies and a seeded RNG. A wait that another call
//!   ends (a concurrency permit, a pool slot, a token fetch) is answered into the waiting
//!   call's mailbox and announced by [`EngineEvent::Wake`]. A call changes this state only
//!   through the engine's methods.
//! - [`Call`]: one logical request, from [`Engine::start_call`] to [`Step::Done`] or
//!   [`Step::Fail`]. It holds, at most, one concurrency permit (for all its attempts and
//!   backoffs), one breaker permit, one pool reservation, waiter or checked-out connection,
//!   and one token lease. [`Call::cancel`] gives all of it back, in every state, idempotently.
//!
//! The files follow that split: `config.rs` (the engine's settings), `limit.rs` (the
//! concurrency cap), `engine.rs`, `step.rs` (what a call asks of its driver and how it ends)
//! and `machine.rs` (the call).
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
//! Every outcome is classified once ([`crate::policy::outcome::classify`]); the latency window
//! takes the classification's sample, the breaker its effect, and the retry policy its
//! eligibility, in the order of [`crate::policy::retry`]'s calling order (decide, then place
//! the retry in time: backoff, schedule, charge, record). A response that is not retried is
//! delivered ([`Step::Deliver`]), whatever its status: at this layer a 404 or a final 503 is
//! a response, not an error; turning it into an error with a body snippet is the client's
//! presentation. Its breaker effect is recorded when the body ends (rule `body-read-failed`:
//! a body that fails is a breaker failure).
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
//!   (`background: true`) belongs to no call.
//! - **Breaker probe timeout** is raised, per origin, to at least pool timeout + connect
//!   timeout + attempt timeout, the longest an admitted attempt can take to report.
//! - [`Engine::poll_timeout`] covers the shared timers (pool, breakers); each call's own
//!   instants (backoff, deadline, wait bounds) come in its [`Step::Wait`].

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
