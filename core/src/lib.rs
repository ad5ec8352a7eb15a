//! Breakwater's sans-IO core: every decision a resilient HTTP client makes,
//! and none of its I/O.
//!
//! This crate is the bottom layer of Breakwater. It speaks HTTP/1.1 on bytes
//! it is handed ([`h1`]) and decides — for a pool of connections, a circuit
//! breaker, retries, backoff, idempotency keys and expiring tokens — what a
//! call should do next. It never reads a clock, opens a socket, spawns a
//! thread or draws from a global random source: time arrives as an
//! [`Instant`] argument (nanoseconds from an epoch the caller picks) and
//! randomness from a [`fastrand::Rng`] seeded by the caller. The same inputs
//! therefore always give the same decisions, which is what lets the client
//! run unchanged on tokio, on smol, or under a simulation that replays a
//! failure from its seed. An architecture test (`tests/architecture.rs`)
//! keeps it that way.
//!
//! # The modules
//! - [`call`]: the [`Engine`](call::Engine) that every call of a client shares, and the
//!   [`Call`](call::Call) state machine that sequences one logical request. A driver talks to
//!   these two and to nothing else.
//! - [`pool`]: connection-pool admission with exact accounting.
//! - [`policy`]: the decisions a call combines for every attempt — the outcome table
//!   ([`outcome`](policy::outcome)), retries ([`retry`](policy::retry)) and their budget
//!   ([`budget`](policy::budget)), [`backoff`](policy::backoff) floored on the
//!   [`latency`](policy::latency) window, the circuit [`breaker`](policy::breaker),
//!   [`idempotency`](policy::idempotency) keys and the token cache ([`auth`](policy::auth)).
//! - [`h1`]: HTTP/1.1 request encoding and an incremental, strict response decoder.
//! - [`Origin`] and [`Instant`]: the two values every module speaks in.
//!
//! The policies these modules implement are specified in `docs/spec/` at the root of the
//! repository; comments cite its pages, its outcome rules (rule `exchange-failed`) and its
//! invariants (invariant `unsafe-never-resent`).
//!
//! # The run loop
//!
//! This section is the calling contract of every state machine in the crate, stated once.
//! The module documentation of each machine names its own inputs and outputs and refers
//! here for the rest.
//!
//! ## Words
//!
//! - **Inputs** are methods that take `now`. Those named `handle_*` report something that
//!   happened: an I/O result ([`Call::handle_connected`](call::Call::handle_connected),
//!   [`Call::handle_attempt_outcome`](call::Call::handle_attempt_outcome),
//!   [`Engine::handle_token_fetched`](call::Engine::handle_token_fetched), ...) or a timer
//!   (`handle_timeout`). The others name the driver's own act: `start_call`, `cancel`,
//!   `acquire`.
//! - **Outputs** are polled: `poll_step` says what one call does next, `poll_event` hands out
//!   what a machine asks of its driver until it returns `None`, and `poll_timeout` names the
//!   next instant at which a timer falls due. The enums a driver matches — [`Step`](call::Step),
//!   [`EngineEvent`](call::EngineEvent), [`PoolEvent`](pool::PoolEvent),
//!   [`TokenDecision`](policy::auth::TokenDecision) — are exhaustive: a new variant is a
//!   compile error in the driver, not a surprise at run time.
//! - **Timers**: `poll_timeout` returns the earliest due instant and `handle_timeout(now)`
//!   applies whatever is due by `now`. Calling it early, late or twice is harmless. Decide
//!   that an instant has passed by reading the clock, not by trusting a timer future (a
//!   cooperative scheduler may report a fired timer as not ready).
//! - **Time**: `now` is the driver's monotonic clock, as an [`Instant`]. It never goes
//!   backwards: an earlier `now` than one already seen counts as the latest seen. Wall-clock
//!   time enters in one place only, as the `received_wall` of a response, to read a
//!   Retry-After date.
//! - **Polling again before reporting** repeats the last output: a step is an order that stays
//!   open until its report arrives.
//!
//! ## One call, from start to end
//!
//! 1. Register each origin once with [`Engine::origin_id`](call::Engine::origin_id), then
//!    start a call with [`Engine::start_call`](call::Engine::start_call). Hold the
//!    [`Call`](call::Call) in a guard at once (step 5).
//! 2. Loop on [`Call::poll_step`](call::Call::poll_step) and act on the [`Step`](call::Step):
//!    - `Wait { until }`: sleep until `until`, or until an
//!      [`EngineEvent::Wake`](call::EngineEvent::Wake) names the call, then poll again.
//!      Backoff, Retry-After and the waits for a permit, a pool slot or a token all end here.
//!    - `FetchToken { fetch, background: false }`: run the token request; report
//!      [`Engine::handle_token_fetch_sent`](call::Engine::handle_token_fetch_sent) each time
//!      it leaves and [`Engine::handle_token_fetched`](call::Engine::handle_token_fetched)
//!      when it ends (or [`Engine::cancel_token_fetch`](call::Engine::cancel_token_fetch) if
//!      the driver gives it up). The call waits for the token: poll it after the report.
//!    - `FetchToken { fetch, background: true }`: the token in hand is still good but due for
//!      refresh. Run the request **beside** the call — on a task of its own, reported the same
//!      way — and do not await it: poll the call again at once. The refresh belongs to no call
//!      and outlives the one that asked for it.
//!    - `Connect { connect_deadline }`: open a connection (TCP, and TLS for `https`) to the
//!      origin the call's [`CallSpec`](call::CallSpec) names, giving up at the deadline.
//!      Report [`Call::handle_connected`](call::Call::handle_connected) with the connection
//!      value, which the call keeps for you, or
//!      [`Call::handle_connect_failed`](call::Call::handle_connect_failed).
//!    - `Send(plan)`: the codec's turn. Encode the request head with
//!      [`h1::encode_request_head`], adding the plan's idempotency-key and `Authorization`
//!      headers, and write head and body on [`Call::connection_mut`](call::Call::connection_mut).
//!      Then feed every read into a [`h1::ResponseDecoder`] until it yields the
//!      [`Head`](h1::ResponseEvent::Head), waiting no later than
//!      [`AttemptPlan::head_deadline`](call::AttemptPlan::head_deadline). Report
//!      [`Call::handle_attempt_outcome`](call::Call::handle_attempt_outcome) with
//!      [`AttemptOutcome::Response`](policy::outcome::AttemptOutcome::Response) and the head's
//!      headers, or with the [`AttemptOutcome`](policy::outcome::AttemptOutcome) that says how
//!      the attempt failed (a [`DecodeError`](h1::DecodeError) breaks the exchange and the
//!      connection with it). A response whose body came whole with the head is reported with
//!      [`Call::handle_response_read`](call::Call::handle_response_read) instead, so its
//!      connection can be reused even if the response is retried.
//!    - `Deliver`: the response is the caller's. Keep feeding the same decoder with reads as
//!      the caller consumes the body, and when it ends report
//!      [`Call::handle_body_finished`](call::Call::handle_body_finished) with a
//!      [`BodyEnd`](call::BodyEnd): complete (reusable as the decoder's
//!      [`EndOfResponse`](h1::EndOfResponse) says), failed, or abandoned by the caller.
//!    - `Done` or `Fail(error)`: the call has ended and holds nothing.
//! 3. After every input, to a call or to the engine, drain
//!    [`Engine::poll_event`](call::Engine::poll_event): `Wake(id)` wakes the task waiting on
//!    that call (a permit, a pool slot or a token it waited for is ready), `Close { conn, .. }`
//!    closes that connection, and `Breaker { .. }` reports a breaker's change of state for
//!    logs and metrics.
//! 4. Background work. The engine keeps timers that belong to no call: pool waiters'
//!    deadlines, idle expiry and maximum lifetime of pooled connections, and each breaker's
//!    open interval and probe timeout. Sleep until
//!    [`Engine::poll_timeout`](call::Engine::poll_timeout) and call
//!    [`Engine::handle_timeout`](call::Engine::handle_timeout) there **even when no call is
//!    running**, then drain the events: otherwise an idle connection outlives its expiry
//!    until the next call comes. (The `breakwater` client runs a housekeeping task for this:
//!    `client/src/housekeeping.rs`.) A call's own instants — its backoff, its deadline, the
//!    bound of its waits — come in its `Step::Wait`, not here.
//! 5. Cancellation. Keep the call in a guard whose `Drop` calls
//!    [`Call::cancel`](call::Call::cancel), so that dropping the task or future that drives
//!    the call cancels it at any await point. `cancel` gives back everything the call holds,
//!    in every state: its concurrency permit, its places in the queues, a reservation, its
//!    breaker permit, a foreground token fetch, and its connection — closed, since a request
//!    cut mid-exchange leaves the connection in an unknown state. A second `cancel` does
//!    nothing.
//!
//! ## Errors
//!
//! Each error says which of four things happened: the caller broke the contract
//! ([`CallMisuse`](call::CallMisuse), which names the phase the call was in, and the
//! engine's [`StartError`](call::StartError) and [`TokenReportError`](call::TokenReportError));
//! the peer broke the protocol ([`DecodeError`](h1::DecodeError), after which the connection
//! is never reused); the transport failed (not an error here but an input: the
//! [`AttemptOutcome`](policy::outcome::AttemptOutcome) or
//! [`ConnectError`](call::ConnectError) the driver reports); or the call ended in failure
//! ([`CallError`](call::CallError), with every attempt it made).
//!
//! ## The machines inside
//!
//! The engine drives the [`Pool`](pool::Pool), each origin's
//! [`Breaker`](policy::breaker::Breaker) and the [`TokenCache`](policy::auth::TokenCache)
//! itself, so a driver of the engine never touches them. Each can also be driven alone, under
//! the same contract: inputs that take `now`, `poll_event` drained until `None` after every
//! input, and `poll_timeout`/`handle_timeout` for its timers. The
//! [`ResponseDecoder`](h1::ResponseDecoder) needs no clock: its input is the read buffer
//! (and [`handle_eof`](h1::ResponseDecoder::handle_eof) when the peer closes), its output
//! `poll_event`, where `Ok(None)` means "read more".
//!
//! # Example: a driver loop
//!
//! A driver loop over a fake connection: the server answers 503, then 200. The first
//! connection is closed because its response was not read, the retry waits for its backoff
//! on a new connection, and the second connection goes back to the pool, where the engine's
//! own timer expires it once no call is running.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//!
//! use breakwater_core::call::{BodyEnd, CallSpec, Engine, EngineConfig, EngineEvent, Step};
//! use breakwater_core::h1::{self, BodyLength, RequestContext, ResponseDecoder, ResponseEvent};
//! use breakwater_core::policy::outcome::AttemptOutcome;
//! use breakwater_core::{Instant, Origin, Scheme};
//! use bytes::BytesMut;
//! use http::{HeaderMap, Method, Uri};
//!
//! /// The driver's connection: the bytes it writes and the bytes its reads bring.
//! struct Conn {
//!     write_buf: Vec<u8>,
//!     read_buf: BytesMut,
//! }
//!
//! let mut server = [
//!     &b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy"[..],
//!     &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"[..],
//! ]
//! .into_iter();
//! let origin = Origin::new(Scheme::Https, "api.example.com", 443);
//! let uri: Uri = "/v1/users/1".parse()?;
//! let rng = fastrand::Rng::with_seed(1);
//! let mut engine: Engine<Conn> = Engine::new(EngineConfig::default(), rng)?;
//! let api = engine.origin_id(&origin);
//! let mut now = Instant::ZERO; // the driver's monotonic clock
//!
//! let mut call = engine.start_call(now, CallSpec::new(Method::GET, api))?;
//! let mut decoder = ResponseDecoder::new(RequestContext::for_method(&Method::GET));
//! let mut body = Vec::new();
//! let mut closed = 0;
//! let ended = loop {
//!     match call.poll_step(now, &mut engine) {
//!         // Here, the backoff before the retry: sleep, then read the clock.
//!         Step::Wait { until } => now = now.max(until.unwrap_or(now)),
//!         Step::FetchToken { .. } => unreachable!("the engine has no token cache"),
//!         Step::Connect { connect_deadline: _ } => {
//!             let conn = Conn { write_buf: Vec::new(), read_buf: BytesMut::new() };
//!             call.handle_connected(now, &mut engine, conn)?;
//!         }
//!         Step::Send(plan) => {
//!             let conn = call.connection_mut().expect("a send has its connection");
//!             let mut headers = HeaderMap::new();
//!             headers.extend(plan.idempotency_key.clone());
//!             let (get, no_body) = (&Method::GET, BodyLength::None);
//!             let out = &mut conn.write_buf;
//!             h1::encode_request_head(out, get, &uri, &origin, &headers, no_body)?;
//!             // ... write `write_buf`; the server's answer arrives in reads.
//!             conn.read_buf.extend_from_slice(server.next().expect("one answer per request"));
//!             now = now + Duration::from_millis(20);
//!             decoder = ResponseDecoder::new(RequestContext::for_method(&Method::GET));
//!             let Some(ResponseEvent::Head(head)) = decoder.poll_event(&mut conn.read_buf)? else {
//!                 unreachable!("the whole head has arrived");
//!             };
//!             let elapsed = Duration::from_millis(20);
//!             let outcome = AttemptOutcome::Response { status: head.status, elapsed };
//!             let wall = SystemTime::UNIX_EPOCH; // when it arrived, for Retry-After dates
//!             call.handle_attempt_outcome(now, &mut engine, outcome, &head.headers, wall)?;
//!         }
//!         Step::Deliver => {
//!             // The caller reads the body through the same decoder.
//!             let conn = call.connection_mut().expect("a delivered response has its connection");
//!             let end = loop {
//!                 match decoder.poll_event(&mut conn.read_buf)? {
//!                     Some(ResponseEvent::Body(piece)) => body.extend_from_slice(&piece),
//!                     Some(ResponseEvent::End(end)) => break end,
//!                     _ => unreachable!("the whole body has arrived"),
//!                 }
//!             };
//!             let reusable = end.is_reusable();
//!             call.handle_body_finished(now, &mut engine, BodyEnd::Complete { reusable })?;
//!         }
//!         Step::Done => break Ok(()),
//!         Step::Fail(error) => break Err(error),
//!     }
//!     // After every input: wake the calls the engine names, close what it hands back.
//!     while let Some(event) = engine.poll_event() {
//!         match event {
//!             EngineEvent::Wake(_id) => {}
//!             EngineEvent::Close { conn, .. } => {
//!                 drop(conn);
//!                 closed += 1;
//!             }
//!             EngineEvent::Breaker { .. } => {}
//!         }
//!     }
//! };
//! ended?;
//! assert_eq!((body.as_slice(), call.attempts().len(), closed), (&b"hello"[..], 2, 1));
//! assert_eq!(engine.pool().stats().idle, 1);
//!
//! // No call runs, yet the pool's idle expiry falls due: the driver's housekeeping applies it.
//! let due = engine.poll_timeout().expect("the idle connection expires");
//! engine.handle_timeout(due);
//! assert!(matches!(engine.poll_event(), Some(EngineEvent::Close { .. })));
//!
//! // A call whose task is dropped: its guard cancels it, and what it held goes back.
//! let mut dropped = engine.start_call(due, CallSpec::new(Method::GET, api))?;
//! assert!(matches!(dropped.poll_step(due, &mut engine), Step::Connect { .. }));
//! dropped.cancel(due, &mut engine);
//! assert_eq!((engine.pool().stats().connecting, engine.concurrency_in_use()), (0, 0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Example: the machines on their own
//!
//! A response arrives in two reads; the decoder reports it, the breaker
//! records the outcome, and the backoff policy says how long a retry of a
//! 503 would wait given the origin's recent latency.
//!
//! ```
//! use std::time::Duration;
//! use breakwater_core::h1::{RequestContext, ResponseDecoder, ResponseEvent};
//! use breakwater_core::policy::backoff::BackoffPolicy;
//! use breakwater_core::policy::breaker::{Breaker, BreakerConfig};
//! use breakwater_core::policy::latency::{LatencyConfig, LatencyWindow};
//! use breakwater_core::policy::outcome::BreakerEffect;
//! use breakwater_core::Instant;
//! use bytes::BytesMut;
//!
//! let now = Instant::from_nanos(1_000_000_000);
//! let mut decoder = ResponseDecoder::new(RequestContext::default());
//! let mut read_buf = BytesMut::from(&b"HTTP/1.1 503 Service Unavailable\r\ncontent-len"[..]);
//! assert!(decoder.poll_event(&mut read_buf)?.is_none()); // the head is not complete yet
//! read_buf.extend_from_slice(b"gth: 0\r\n\r\n");
//! let Some(ResponseEvent::Head(head)) = decoder.poll_event(&mut read_buf)? else { panic!() };
//! assert_eq!(head.status, 503);
//!
//! let mut breaker = Breaker::new(BreakerConfig::default(), fastrand::Rng::with_seed(7)).unwrap();
//! let permit = breaker.try_acquire(now).expect("a closed breaker admits");
//! breaker.record(now, permit, BreakerEffect::Failure);
//!
//! let mut window = LatencyWindow::new(LatencyConfig::default());
//! for ms in 100..120 {
//!     window.record(now, Duration::from_millis(ms));
//! }
//! let p95 = window.p95(now);
//! let delay = BackoffPolicy::default().delay(0, p95, None, &mut fastrand::Rng::with_seed(1));
//! // First retry: the floor is the p95 (clamped to at least 0.5 s), plus up to one floor of jitter.
//! assert!(delay >= Duration::from_millis(500) && delay <= Duration::from_secs(1));
//! # Ok::<(), breakwater_core::h1::DecodeError>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod call;
pub mod content;
pub mod h1;
pub mod origin;
pub mod policy;
pub mod pool;
pub mod proxy;
pub mod redirect;
pub mod request;
pub mod time;

pub use origin::{Origin, OriginError, Scheme};
pub use time::Instant;
