//! The testkit's conformance kit on smol, with peers on 127.0.0.1.

use std::sync::Arc;

use breakwater_smol::SmolRuntime;
use breakwater_testkit::conformance::Loopback;

breakwater_testkit::conformance_tests!(Loopback::new(Arc::new(SmolRuntime::new()), smol::block_on));

/// Under futures-lite's `block_on`, which leaves async-io's reactor to its own thread.
mod reactor_on_another_thread {
    use super::*;

    breakwater_testkit::conformance_tests!(Loopback::new(
        Arc::new(SmolRuntime::new()),
        futures_lite::future::block_on
    ));
}
