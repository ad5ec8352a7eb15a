//! Breakwater: the user-facing client.
//!
//! **Status: being built.** This crate holds the runtime trait
//! ([`runtime::Runtime`]) that adapters implement and the shared TLS settings
//! ([`tls::TlsOptions`]); the driver and the public `Client` come next.
//!
//! ```
//! // The core's vocabulary is usable through this crate.
//! let origin = breakwater::core::Origin::from_uri(&"https://api.example.com".parse().unwrap()).unwrap();
//! assert_eq!(origin.port(), 443);
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub use breakwater_core as core;

pub mod runtime;
pub mod tls;
