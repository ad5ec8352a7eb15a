//! Breakwater's testkit: deterministic simulation and mocking.
//!
//! **Status: not built yet.** This crate will provide a simulated runtime
//! (virtual clock, in-memory network, seeded faults) and respx-style mock
//! routes. Until then it exposes nothing but the client crate it will drive.
//!
//! ```
//! use breakwater_testkit::breakwater;
//! let _ = breakwater::core::Instant::ZERO;
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub use breakwater;
