//! Breakwater: the user-facing client.
//!
//! **Status: not built yet.** This crate will hold the runtime-generic driver
//! and the public `Client` API (see `DESIGN.md`). Today it only re-exports the
//! sans-IO core, [`breakwater_core`], whose decisions the driver will execute.
//!
//! ```
//! // The core's vocabulary is already usable through this crate.
//! let origin = breakwater::core::Origin::from_uri(&"https://api.example.com".parse().unwrap()).unwrap();
//! assert_eq!(origin.port(), 443);
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub use breakwater_core as core;
