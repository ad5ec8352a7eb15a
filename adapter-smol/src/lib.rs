//! Breakwater on async-io, under any executor.
//!
//! **Status: not built yet.** This crate will implement the client's runtime
//! trait with async-io sockets and timers, non-blocking DNS and futures-rustls. Until then it
//! exposes nothing but the client crate it will drive.
//!
//! ```
//! use breakwater_smol::breakwater;
//! let _ = breakwater::core::Scheme::Https.default_port();
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub use breakwater;
