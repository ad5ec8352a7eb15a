//! The testkit's deep client suite on real sockets
//! (`breakwater_testkit::conformance::sockets`) on tokio, against hyper and
//! tokio-rustls peers on 127.0.0.1. `breakwater-smol` and the example
//! runtime run the same scenarios.

use std::sync::Arc;

use breakwater::runtime::BoxFuture;
use breakwater_tokio::TokioRuntime;

/// A current-thread tokio runtime's `block_on`, as `#[tokio::test]` uses.
fn block_on(future: BoxFuture<'static, ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

breakwater_testkit::socket_client_tests!(Arc::new(TokioRuntime::new()), block_on);

breakwater_testkit::socket_http_tests!(Arc::new(TokioRuntime::new()), block_on);
