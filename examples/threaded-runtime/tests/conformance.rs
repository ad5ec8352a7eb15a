//! The testkit's conformance kit on the runtime written from first
//! principles, with peers on 127.0.0.1.

use std::sync::Arc;

use breakwater_example_threads::{block_on, Threads};
use breakwater_testkit::conformance::Loopback;

breakwater_testkit::conformance_tests!(Loopback::new(Arc::new(Threads::new()), block_on));
