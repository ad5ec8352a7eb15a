//! The conformance kit: one suite of scenarios that any [`Runtime`] must pass.
//!
//! A runtime is more than the four methods of its trait: its clock and
//! timers must agree, its connects must be cancellable, its sockets must say
//! when a peer closed an idle connection, its background tasks must run.
//! The scenarios here exercise all of it through the client, the way an
//! application would, and check what the client promises on top: pooled
//! connections, retries that resend only what is safe, byte-exact bodies,
//! cancellation that gives everything back, idle connections that expire
//! without a call, one token fetch for many callers.
//!
//! Each scenario is written once against a [`Harness`], which supplies the
//! runtime, runs a future on it, and starts peers. Two harnesses come with
//! the kit:
//! - [`SimHarness`]: the testkit's own simulation, peers and all, on the
//!   virtual clock;
//! - [`Loopback`]: any runtime, with peers on 127.0.0.1 served by plain
//!   threads that share nothing with the runtime under test, and a
//!   `block_on` the runtime's author supplies.
//!
//! [`conformance_tests!`](crate::conformance_tests) turns the suite into one
//! `#[test]` per scenario. A runtime for your own executor passes when this
//! compiles and its tests pass:
//!
//! ```no_run
//! # fn block_on(_: breakwater::runtime::BoxFuture<'static, ()>) {}
//! # fn my_runtime() -> std::sync::Arc<dyn breakwater::runtime::Runtime> { unimplemented!() }
//! breakwater_testkit::conformance_tests!(breakwater_testkit::conformance::Loopback::new(
//!     my_runtime(),
//!     block_on,
//! ));
//! ```
//!
//! The peers behave like the simulation's servers: a scenario describes them
//! with the same [`Reply`] values, faults included. Waits are short (tens of
//! milliseconds on real clocks, nothing on the virtual one), and no
//! scenario asserts on how long anything took.

mod loopback;
pub mod scenarios;
#[cfg(feature = "sockets")]
pub mod sockets;

use std::future::Future;
use std::sync::Arc;

use breakwater::runtime::{BoxFuture, Runtime};

use crate::server::{Context, Reply, Request, ServerHandle};
use crate::Sim;

use loopback::LoopbackServer;

/// A request handler, as the simulation's servers and the kit's peers take it.
pub type Handler = Box<dyn FnMut(&Request, &mut Context<'_>) -> Reply + Send>;

/// A peer a scenario started: its base URL and its counts.
#[derive(Debug)]
pub struct Peer {
    /// The base URL to build a client on (`http://host:port/`).
    pub url: String,
    /// What it received and how many connections it saw.
    pub server: ServerHandle,
}

/// What a scenario needs from the world it runs in.
pub trait Harness {
    /// The runtime under test.
    fn runtime(&self) -> Arc<dyn Runtime>;

    /// Starts a peer that answers with `handler`.
    fn serve(&mut self, handler: Handler) -> Peer;

    /// A base URL where nothing accepts connections.
    fn unreachable(&mut self) -> String;

    /// Runs `future` to completion on the runtime under test.
    fn run(&mut self, future: BoxFuture<'static, ()>);
}

/// The testkit's simulation as a harness: the suite on the virtual clock.
pub struct SimHarness {
    sim: Sim,
    peers: usize,
}

impl SimHarness {
    /// A simulation from `seed`.
    pub fn new(seed: u64) -> Self {
        SimHarness {
            sim: Sim::new(seed),
            peers: 0,
        }
    }
}

impl Harness for SimHarness {
    fn runtime(&self) -> Arc<dyn Runtime> {
        self.sim.runtime()
    }

    fn serve(&mut self, handler: Handler) -> Peer {
        self.peers += 1;
        let url = format!("http://peer{}.test", self.peers);
        let server = self.sim.server(&url, handler);
        Peer {
            url: format!("{url}/"),
            server,
        }
    }

    fn unreachable(&mut self) -> String {
        "http://nobody.test/".to_owned()
    }

    fn run(&mut self, future: BoxFuture<'static, ()>) {
        self.sim.run(future);
    }
}

/// Any runtime, with peers on 127.0.0.1 and a `block_on` of the runtime's own.
pub struct Loopback<B> {
    runtime: Arc<dyn Runtime>,
    block_on: B,
    servers: Vec<LoopbackServer>,
}

impl<B: FnMut(BoxFuture<'static, ()>)> Loopback<B> {
    /// The harness for `runtime`, whose futures `block_on` runs to completion
    /// on the calling thread (with the runtime's reactor and timers running).
    pub fn new(runtime: Arc<dyn Runtime>, block_on: B) -> Self {
        Loopback {
            runtime,
            block_on,
            servers: Vec::new(),
        }
    }
}

impl<B: FnMut(BoxFuture<'static, ()>)> Harness for Loopback<B> {
    fn runtime(&self) -> Arc<dyn Runtime> {
        self.runtime.clone()
    }

    fn serve(&mut self, handler: Handler) -> Peer {
        let seed = self.servers.len() as u64 + 1;
        let (server, handle) =
            LoopbackServer::start(handler, seed).expect("a loopback peer could not start");
        let url = server.url();
        self.servers.push(server);
        Peer {
            url,
            server: handle,
        }
    }

    fn unreachable(&mut self) -> String {
        // A port that was just free: bound, then released.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("no free port");
        let port = listener.local_addr().expect("no local address").port();
        drop(listener);
        format!("http://127.0.0.1:{port}/")
    }

    fn run(&mut self, future: BoxFuture<'static, ()>) {
        (self.block_on)(future);
    }
}

/// Runs `future` on the harness and returns its output.
pub(crate) fn run<T: Send + 'static>(
    harness: &mut dyn Harness,
    future: impl Future<Output = T> + Send + 'static,
) -> T {
    let output = Arc::new(std::sync::Mutex::new(None));
    let slot = output.clone();
    harness.run(Box::pin(async move {
        let value = future.await;
        *slot.lock().unwrap() = Some(value);
    }));
    let value = output.lock().unwrap().take();
    value.expect("the harness returned before the scenario's future completed")
}

/// One `#[test]` per conformance scenario, each on a harness that `$harness`
/// makes afresh (an expression evaluated once per test).
///
/// See [`conformance`](crate::conformance) for an example.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::__conformance_each!(
            $harness;
            sequential_calls_reuse_one_connection,
            concurrent_calls_each_get_their_own_answer,
            a_503_is_retried_until_a_200,
            a_keyed_post_is_retried_with_the_same_key,
            an_unkeyed_post_is_not_resent_after_a_reset,
            a_streamed_upload_arrives_whole,
            a_large_chunked_body_arrives_byte_exact,
            a_refused_connect_is_a_connect_error,
            a_connection_the_server_closed_while_idle_is_replaced,
            a_dropped_call_gives_everything_back,
            the_clock_and_the_timers_agree,
            idle_connections_expire_without_a_call,
            one_token_fetch_serves_many_calls,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_each {
    ($harness:expr; $($scenario:ident),* $(,)?) => {$(
        #[test]
        fn $scenario() {
            let mut harness = $harness;
            $crate::conformance::scenarios::$scenario(&mut harness);
        }
    )*};
}
