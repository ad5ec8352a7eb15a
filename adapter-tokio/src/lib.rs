//! Breakwater on tokio.
//!
//! **Status: not built yet.** This crate will implement the client's runtime
//! trait with tokio sockets, DNS, timers and tokio-rustls. Until then it
//! exposes nothing but the client crate it will drive.
//!
//! ```
//! use breakwater_tokio::breakwater;
//! let _ = breakwater::core::Scheme::Https.default_port();
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub use breakwater;
