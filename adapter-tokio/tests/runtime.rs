//! The shared runtime scenarios (tests/common) on `TokioRuntime`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use breakwater_tokio::TokioRuntime;

fn runtime() -> Arc<dyn breakwater::runtime::Runtime> {
    Arc::new(TokioRuntime::new())
}

macro_rules! scenarios {
    ($($scenario:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $scenario() {
            common::$scenario(runtime()).await;
        }
    )*};
}

include!("common/list.rs");

/// Transports move between worker threads of a multi-threaded runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_custom_ca_on_multi_thread_runtime() {
    common::tls_custom_ca(runtime()).await;
}

/// Under tokio's paused clock `now()` and `sleep_until` move together: a
/// 30-second sleep completes at once and the clock reads 30 s later.
#[tokio::test(start_paused = true)]
async fn sleep_follows_the_tokio_clock() {
    common::sleep_reaches_deadline(runtime(), Duration::from_secs(30)).await;
}

/// A runtime built outside tokio works once its futures are polled inside.
#[test]
fn runtime_built_outside_tokio() {
    let rt = runtime();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(common::plain_tcp_round_trip(rt));
}
