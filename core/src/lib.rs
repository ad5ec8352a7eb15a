//! Breakwater's sans-IO core.
//!
//! (crate documentation is completed together with the modules)

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod auth;
pub mod backoff;
pub mod breaker;
pub mod call;
pub mod h1;
pub mod idempotency;
pub mod latency;
pub mod origin;
pub mod outcome;
pub mod pool;
pub mod retry;
pub mod time;

pub use origin::{Origin, OriginError, Scheme};
pub use time::Instant;
