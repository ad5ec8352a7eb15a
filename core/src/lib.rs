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
//! - [`h1`]: request encoding and an incremental, strict response decoder.
//! - [`outcome`](policy::outcome): the one table that classifies an attempt's outcome into
//!   evidence, breaker effect, retry eligibility and latency sample.
//! - [`retry`](policy::retry): whether and when to retry, Retry-After, the retry budget.
//! - [`backoff`](policy::backoff) and [`latency`](policy::latency): delays whose floor follows the origin's p95.
//! - [`breaker`](policy::breaker): a per-origin circuit breaker with epochs and bounded probes.
//! - [`idempotency`](policy::idempotency): which requests are safe to resend, and their keys.
//! - [`auth`](policy::auth): a single-flight cache for expiring tokens.
//! - [`pool`]: connection-pool admission with exact accounting.
//! - [`call`]: the orchestrator that sequences one logical call.
//!
//! The policies these modules implement are specified in `docs/spec/` at the root of the
//! repository; comments cite its pages, its outcome rules (rule `exchange-failed`) and its
//! invariants (invariant `unsafe-never-resent`).
//!
//! # The calling contract
//! Every state machine here follows the same rules (after quinn-proto):
//! 1. Inputs are methods that take `now` (`handle_*`, `record`, `acquire`, ...).
//! 2. Outputs are drained with `poll_*` methods until they return `None`.
//! 3. A machine with timers reports the next instant it needs through
//!    `poll_timeout`/`poll_timeout`; calling `handle_timeout` early or twice
//!    is harmless.
//! 4. `now` never goes backwards; an earlier `now` is treated as the latest seen.
//!
//! # Example
//! A response arrives in two reads; the decoder reports it, the breaker
//! records the outcome, and the backoff policy says how long a retry of a
//! 503 would wait given the origin's recent latency.
//!
//! ```
//! use std::time::Duration;
//! use breakwater_core::policy::backoff::BackoffPolicy;
//! use breakwater_core::policy::breaker::{Breaker, BreakerConfig};
//! use breakwater_core::h1::{RequestContext, ResponseDecoder, ResponseEvent};
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
pub mod h1;
pub mod origin;
pub mod policy;
pub mod pool;
pub mod time;

pub use origin::{Origin, OriginError, Scheme};
pub use time::Instant;
