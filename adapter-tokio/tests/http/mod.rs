//! The client's behavioural suite: peers on 127.0.0.1 and the scenarios run
//! against them. One suite, two runtimes: `adapter-tokio/tests/client.rs` runs
//! every scenario on tokio, `adapter-smol/tests/client.rs` includes this
//! module by path and runs them on smol. The peers always run on tokio in
//! background threads; the client under test uses only the runtime it is
//! given.
//!
//! The including crate must also declare the shared `common` module (rcgen
//! certificates and rustls server configurations) at its root.

pub mod scenarios;
pub mod server;
