//! The testkit's deep client suite on real sockets
//! (`breakwater_testkit::conformance::sockets`) on smol: the same scenarios
//! the tokio adapter runs. The peers run on tokio in background threads; the
//! client never does.

use std::sync::Arc;

use breakwater_smol::SmolRuntime;

breakwater_testkit::socket_client_tests!(Arc::new(SmolRuntime::new()), |future| {
    smol::block_on(future)
});

breakwater_testkit::socket_http_tests!(Arc::new(SmolRuntime::new()), |future| {
    smol::block_on(future)
});

/// The same scenarios under futures-lite's `block_on`, which does not run
/// async-io's reactor: the "async-io" thread does. Every registration of
/// interest then races that thread's `epoll_wait`, a timing the suite under
/// `smol::block_on` (which runs the reactor itself) never sees.
mod reactor_on_another_thread {
    use std::sync::Arc;

    use breakwater_smol::SmolRuntime;

    breakwater_testkit::socket_client_tests!(Arc::new(SmolRuntime::new()), |future| {
        futures_lite::future::block_on(future)
    });
}
