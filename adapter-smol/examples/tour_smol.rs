//! The Breakwater tour on smol: the same script as the tokio tour
//! (`cargo run --release --example tour`), with the client on
//! `smol::block_on` and async-io sockets and timers. The demo API server
//! runs on its own tokio runtime in a background thread; the client under
//! test does not touch tokio.
//!
//! ```sh
//! cargo run --release --example tour_smol
//! ```

#[path = "../../adapter-tokio/examples/support/demo_api.rs"]
mod demo_api;
#[path = "../../adapter-tokio/examples/support/tour_script.rs"]
mod tour_script;

use std::sync::Arc;

fn main() -> Result<(), tour_script::TourError> {
    let api = demo_api::DemoApi::start();
    let runtime = Arc::new(breakwater_smol::SmolRuntime::new());
    smol::block_on(tour_script::run(runtime, &api, "smol"))
}
