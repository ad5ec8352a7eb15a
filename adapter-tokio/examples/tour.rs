//! The Breakwater tour on tokio: an embedded demo REST API on 127.0.0.1 and
//! a client that shows, in a few seconds, every production behaviour it
//! builds in — pooling, batches, retries with backoff, Retry-After, the
//! circuit breaker, safe POST retries, token refresh, live p95, streaming.
//!
//! ```sh
//! cargo run --release --example tour
//! ```
//!
//! The same tour runs on smol with `cargo run --release --example tour_smol`.

#[path = "support/demo_api.rs"]
mod demo_api;
#[path = "support/tour_script.rs"]
mod tour_script;

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), tour_script::TourError> {
    let api = demo_api::DemoApi::start();
    let runtime = Arc::new(breakwater_tokio::TokioRuntime::new());
    tour_script::run(runtime, &api, "tokio").await
}
