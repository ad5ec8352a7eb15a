//! The testkit's conformance kit on tokio, with peers on 127.0.0.1.

use std::sync::Arc;

use breakwater_testkit::conformance::Loopback;
use breakwater_tokio::TokioRuntime;

breakwater_testkit::conformance_tests!(Loopback::new(Arc::new(TokioRuntime::new()), |future| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}));

/// The same on tokio's multi-threaded scheduler, where a call's task moves
/// between threads and the housekeeper runs on another worker.
mod multi_thread {
    use super::*;

    breakwater_testkit::conformance_tests!(Loopback::new(
        Arc::new(TokioRuntime::new()),
        |future| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(future)
        }
    ));
}
