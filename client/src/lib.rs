//! Breakwater: a resilient HTTP/REST client whose every decision is made by a
//! pure, simulation-tested core.
//!
//! This crate is the middle layer. [`Client`] is what applications hold: one
//! per upstream, cheap to clone, shared across tasks. Underneath, the
//! driver asks [`breakwater_core`]'s call orchestrator what to do next —
//! wait, fetch a token, connect, send, deliver — and performs the I/O through
//! a [`Runtime`](runtime::Runtime) supplied by an adapter:
//! `breakwater-tokio`, `breakwater-smol`, or the testkit's simulation. The
//! driver holds no policy: retries, backoff, the breaker, the pool and the
//! token cache are all the core's decisions.
//!
//! What every call gets, by default: a pool of 50 connections (20 idle per
//! origin, 30 s idle expiry, 5 s pool timeout), at most 20 calls in flight,
//! 3 attempts within a 30 s deadline (10 s per attempt, 5 s to connect),
//! retries of 429/500/502/503/504 for idempotent or keyed requests only, with
//! a backoff floored on the origin's live p95 and a 20 % retry budget,
//! `Retry-After` honoured, a circuit breaker per origin, and a connection
//! that saw bad bytes never reused. Dropping a call's future at any point
//! cancels it and gives its connection back (or closes it).
//!
//! ```no_run
//! # async fn example(runtime: std::sync::Arc<dyn breakwater::runtime::Runtime>) -> Result<(), breakwater::Error> {
//! #[derive(serde::Deserialize)]
//! struct User { name: String }
//!
//! let client = breakwater::Client::builder(runtime, "https://api.example.com/v1/")
//!     .bearer_token("s3cr3t")
//!     .build()?;
//! let user: User = client.get_json("users/1").await?;
//! println!("User: {}", user.name);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub use breakwater_core as core;
/// The `bytes` crate, whose `Bytes` carries bodies.
pub use bytes;
/// The `http` crate, whose types (`Method`, `HeaderName`, `StatusCode`, ...) the client speaks.
pub use http;

pub mod auth;
mod batch;
mod builder;
mod client;
pub mod cookies;
mod decompress;
mod driver;
mod error;
mod guard;
mod io;
pub mod multipart;
pub mod oauth2;
mod request;
mod response;
pub mod runtime;
mod state;
mod stats;
pub mod tls;
mod urls;

/// Deliberate bugs for proving that the testkit's invariants catch them
/// (cargo feature `fault-injection`). Not for use outside such tests.
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub mod fault_injection {
    use std::sync::atomic::{AtomicBool, Ordering};

    static FORGET_CANCELLED_CALLS: AtomicBool = AtomicBool::new(false);

    /// When on, a call dropped while it holds a connection forgets to give
    /// it (and its permits) back: the phantom-connection bug of httpcore.
    pub fn set_forget_cancelled_calls(on: bool) {
        FORGET_CANCELLED_CALLS.store(on, Ordering::SeqCst);
    }

    pub(crate) fn forget_cancelled_calls() -> bool {
        FORGET_CANCELLED_CALLS.load(Ordering::Relaxed)
    }

    static BROKEN_UPLOADS_LOOK_UNSENT: AtomicBool = AtomicBool::new(false);

    /// When on, a write that fails after bytes of the request have left is
    /// reported as if nothing had been sent, so a POST without a key is sent
    /// again though the server may have acted on it.
    pub fn set_broken_uploads_look_unsent(on: bool) {
        BROKEN_UPLOADS_LOOK_UNSENT.store(on, Ordering::SeqCst);
    }

    pub(crate) fn broken_uploads_look_unsent() -> bool {
        BROKEN_UPLOADS_LOOK_UNSENT.load(Ordering::Relaxed)
    }

    static KEEP_CANCELLED_SOCKETS: AtomicBool = AtomicBool::new(false);

    /// When on, a call dropped while it holds a connection gives the
    /// connection back, so every count stays right, but never lets go of its
    /// socket: a leak only a check of which connections are still alive sees.
    pub fn set_keep_cancelled_sockets(on: bool) {
        KEEP_CANCELLED_SOCKETS.store(on, Ordering::SeqCst);
    }

    pub(crate) fn keep_cancelled_sockets() -> bool {
        KEEP_CANCELLED_SOCKETS.load(Ordering::Relaxed)
    }

    /// What a connection whose socket was kept is left with: a stream that has ended.
    pub(crate) struct Gone;

    impl futures_io::AsyncRead for Gone {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Ok(0))
        }
    }

    impl futures_io::AsyncWrite for Gone {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    impl crate::runtime::Transport for Gone {}
}

pub use breakwater_core::content::DecodeLimits;
pub use breakwater_core::redirect::RedirectPolicy;
pub use builder::ClientBuilder;
pub use client::Client;
pub use error::{Error, ErrorKind, TimeoutPhase};
pub use request::RequestBuilder;
pub use response::{Redirect, Response, Timings};
pub use state::{RequestInfo, ResponseInfo};
pub use stats::{ClientStats, OriginStats};
