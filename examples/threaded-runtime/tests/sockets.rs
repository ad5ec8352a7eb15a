//! The testkit's deep suite on real sockets (transport and client scenarios,
//! TLS and hostile peers included) on the runtime written from first principles.

use std::sync::Arc;

use breakwater_example_threads::{block_on, Threads};

breakwater_testkit::socket_transport_tests!(Arc::new(Threads::new()), |future| block_on(future));
breakwater_testkit::socket_client_tests!(Arc::new(Threads::new()), |future| block_on(future));
breakwater_testkit::socket_http_tests!(Arc::new(Threads::new()), |future| block_on(future));
