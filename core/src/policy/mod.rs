//! The resilience policies: each a small, pure decision that [`crate::call`] combines for
//! every attempt of a call.
//!
//! Each module implements one page of `docs/spec/` and knows nothing of the others except
//! through the [`outcome`] record that classifies an attempt:
//!
//! - [`outcome`]: the outcome table — what an attempt's ending proves, its breaker effect,
//!   whether it may be retried, whether it is a latency sample (docs/spec/outcomes.md);
//! - [`retry`]: whether a failed attempt is sent again, and when (docs/spec/retry.md);
//! - [`budget`]: the per-origin retry budget that caps retry amplification
//!   (docs/spec/budget.md);
//! - [`backoff`]: the delay before a retry (docs/spec/backoff.md);
//! - [`latency`]: the per-origin latency window whose p95 floors that delay
//!   (docs/spec/latency.md);
//! - [`breaker`]: the per-origin circuit breaker (docs/spec/breaker.md);
//! - [`idempotency`]: which requests are safe to resend, and their keys
//!   (docs/spec/idempotency.md);
//! - [`auth`]: the single-flight cache for expiring tokens (docs/spec/auth.md).
//!
//! Policies that are machines with inputs over time (the breaker, the token cache) follow the
//! one calling contract stated in the [crate documentation](crate#the-run-loop); the others
//! are plain values and functions.

pub mod auth;
pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod idempotency;
pub mod latency;
pub mod outcome;
pub mod retry;
