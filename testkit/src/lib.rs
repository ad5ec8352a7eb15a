//! Breakwater's testkit: run the client — and your code that uses it — on a
//! virtual clock, over a simulated network, against simulated upstreams that
//! misbehave on purpose, replayable from one seed (or from a [`Tape`] of
//! its choices, which a failing run can be shrunk to).
//!
//! This crate is the third way to run the client, beside the tokio and smol
//! adapters: [`Sim::runtime`] is a [`Runtime`] whose
//! clock only moves when every task waits, whose connections are in-memory
//! pipes with latency, and whose servers are handlers that speak real
//! HTTP/1.1 bytes. Nothing sleeps for real: a backoff of thirty seconds is a
//! jump of the clock, so thousands of calls with retries run in milliseconds,
//! and a test can assert the exact delays the client chose.
//!
//! It doubles as a mocking tool, in the role respx plays for httpx: routes
//! with canned replies or sequences of them, call counts, captured requests
//! (whose `multipart/form-data` bodies [`multipart::parse`] reads back), and
//! a loud failure for any request no route matched.
//!
//! ```
//! use breakwater_testkit::{Reply, Sim};
//! use http::Method;
//!
//! let mut sim = Sim::new(7);
//! let api = sim.mock("https://api.example.com");
//! let flaky = api.route(Method::GET, "/flaky")
//!     .respond_seq([Reply::new(503, "busy"), Reply::new(503, "busy"), Reply::json(r#"{"ok":true}"#)]);
//!
//! let client = breakwater::Client::builder(sim.runtime(), "https://api.example.com/").build().unwrap();
//! let started = sim.now();
//! let body = sim.run(async move { client.get("flaky").send().await?.text().await }).unwrap();
//! assert_eq!(body, r#"{"ok":true}"#);
//! assert_eq!(flaky.calls(), 3);
//! // Two backoffs of at least one second each passed on the virtual clock, instantly.
//! assert!(sim.now().saturating_duration_since(started) >= std::time::Duration::from_secs(3));
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bodies;
mod choices;
pub mod conformance;
mod executor;
mod mock;
pub mod multipart;
mod net;
pub mod proxy;
mod server;
pub mod swarm;
mod trace;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use breakwater::core::{Instant, Origin, Scheme};
use breakwater::runtime::{
    BoxFuture, BoxTransport, ConnectError, ConnectErrorKind, ConnectTarget, Runtime, TransportInfo,
};

pub use breakwater;
pub use choices::{shrink, Choices, Shrunk, Tape, TapeError};
pub use executor::Stuck;
pub use mock::{Mock, RouteHandle};
pub use net::Link;
pub use server::{Context, Fault, Reply, Request, RequestBodies, ServerConfig, ServerHandle};
pub use trace::{stream_seed, Trace};

use executor::{Executor, Handle};
use server::ServerState;

/// The environment variable that overrides a simulation's seed, to replay a failure.
pub const SEED_VAR: &str = "BREAKWATER_SEED";

/// The environment variable naming a tape file to replay instead of a seed
/// (see [`Tape::save`]); it wins over [`SEED_VAR`].
pub const TAPE_VAR: &str = "BREAKWATER_TAPE";

/// Where a simulation's random choices come from.
#[derive(Clone)]
enum Entropy {
    Seed(u64),
    Tape(Arc<Tape>),
}

/// Every stream's record of its choices, by stream name.
type Recordings = Arc<Mutex<Vec<(String, Arc<Mutex<Vec<u8>>>)>>>;

impl Entropy {
    /// The stream of `component`, entered in `recordings`. A name asked for
    /// again gets a stream of its own (`name#2`, ...), so that each stream's
    /// record replays exactly the choices it made.
    fn stream(&self, component: &str, recordings: &Recordings) -> Choices {
        let mut recordings = recordings.lock().unwrap();
        let earlier = recordings
            .iter()
            .filter(|(name, _)| name.split('#').next() == Some(component))
            .count();
        let name = match earlier {
            0 => component.to_owned(),
            n => format!("{component}#{}", n + 1),
        };
        let choices = match self {
            Entropy::Seed(seed) => Choices::seeded(stream_seed(*seed, &name)),
            Entropy::Tape(tape) => Choices::replaying(tape.stream(&name)),
        };
        recordings.push((name, choices.record_handle()));
        choices
    }
}

/// A simulation: executor, virtual clock, network, servers, seed and trace.
pub struct Sim {
    entropy: Entropy,
    recordings: Recordings,
    executor: Executor,
    runtime: Arc<SimRuntime>,
    trace: Trace,
    time_limit: Duration,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed())
            .field("now", &self.now())
            .finish_non_exhaustive()
    }
}

/// The network's shared record: servers by origin, links, counters.
struct Network {
    servers: Mutex<BTreeMap<Origin, Arc<ServerState>>>,
    links: Mutex<BTreeMap<Origin, Link>>,
    default_link: Mutex<Link>,
    connections: AtomicU64,
    /// Client ends not yet dropped.
    live_client_ends: net::LiveEnds,
    /// Simulated proxies, by host and port.
    proxies: Mutex<BTreeMap<(String, u16), proxy::ProxyHandle>>,
}

/// The [`Runtime`] of a simulation.
pub struct SimRuntime {
    handle: Handle,
    network: Arc<Network>,
    trace: Trace,
    client_choices: Mutex<Choices>,
    connects: AtomicUsize,
    /// The simulation's own environment variables: a simulated client never
    /// reads the machine's (a developer's `HTTPS_PROXY` must not change a run).
    env: Mutex<std::collections::BTreeMap<String, String>>,
}

impl std::fmt::Debug for SimRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRuntime")
            .field("now", &self.handle.now())
            .finish_non_exhaustive()
    }
}

/// Wall-clock time at the simulation's epoch (used only for HTTP dates).
const WALL_EPOCH_SECS: u64 = 1_800_000_000;

impl Sim {
    /// A simulation from `seed`, unless [`SEED_VAR`] or [`TAPE_VAR`] is set,
    /// which wins (so a failing seed can be replayed with the one command the
    /// failure prints).
    ///
    /// # Panics
    /// If [`TAPE_VAR`] names a file that is not a tape.
    pub fn new(seed: u64) -> Sim {
        if let Some(path) = std::env::var_os(TAPE_VAR) {
            let tape = Tape::load(path.as_ref())
                .unwrap_or_else(|e| panic!("{TAPE_VAR}={}: {e}", path.to_string_lossy()));
            return Sim::from_tape(tape);
        }
        let seed = std::env::var(SEED_VAR)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(seed);
        Sim::with_seed(seed)
    }

    /// A simulation from exactly `seed`, ignoring the environment.
    pub fn with_seed(seed: u64) -> Sim {
        Sim::build(Entropy::Seed(seed), false, true)
    }

    /// A simulation whose scheduler polls ready tasks in an order drawn from
    /// the seed (exploring interleavings), keeping or dropping trace lines.
    pub fn shuffled(seed: u64, keep_trace_lines: bool) -> Sim {
        Sim::build(Entropy::Seed(seed), true, keep_trace_lines)
    }

    /// A simulation whose choices are read from `tape` (the calmest ones
    /// where it runs out), ignoring the environment.
    pub fn from_tape(tape: Tape) -> Sim {
        Sim::build(Entropy::Tape(Arc::new(tape)), false, true)
    }

    /// [`shuffled`](Self::shuffled), with the choices read from `tape`.
    pub fn shuffled_from_tape(tape: Tape, keep_trace_lines: bool) -> Sim {
        Sim::build(Entropy::Tape(Arc::new(tape)), true, keep_trace_lines)
    }

    fn build(entropy: Entropy, shuffle: bool, keep_lines: bool) -> Sim {
        let recordings = Recordings::default();
        let shuffle = shuffle.then(|| entropy.stream("scheduler", &recordings));
        let client_choices = entropy.stream("client", &recordings);
        let executor = Executor::new(Instant::ZERO, shuffle);
        let trace = Trace::new(keep_lines);
        let runtime = Arc::new(SimRuntime {
            handle: executor.handle(),
            network: Arc::new(Network {
                servers: Mutex::new(BTreeMap::new()),
                links: Mutex::new(BTreeMap::new()),
                default_link: Mutex::new(Link::default()),
                connections: AtomicU64::new(0),
                live_client_ends: Default::default(),
                proxies: Mutex::new(BTreeMap::new()),
            }),
            trace: trace.clone(),
            client_choices: Mutex::new(client_choices),
            connects: AtomicUsize::new(0),
            env: Mutex::default(),
        });
        Sim {
            entropy,
            recordings,
            executor,
            runtime,
            trace,
            time_limit: Duration::from_secs(24 * 3600),
        }
    }

    /// The seed this simulation runs on (0 when it replays a tape).
    pub fn seed(&self) -> u64 {
        match self.entropy {
            Entropy::Seed(seed) => seed,
            Entropy::Tape(_) => 0,
        }
    }

    /// Whether this simulation's choices are read from a tape, not drawn from its seed.
    pub fn replays_a_tape(&self) -> bool {
        matches!(self.entropy, Entropy::Tape(_))
    }

    /// The random stream of `component`: drawn from the seed's stream of
    /// that name, or read from the tape's. Its choices go on this run's
    /// [`tape`](Self::tape) either way. Asked for again, a name gives a new
    /// stream (`component#2`), not the same choices twice.
    pub fn choices(&self, component: &str) -> Choices {
        self.entropy.stream(component, &self.recordings)
    }

    /// The choices every stream has made so far, as a tape that replays
    /// them ([`from_tape`](Self::from_tape)).
    pub fn tape(&self) -> Tape {
        let mut tape = Tape::default();
        for (name, record) in self.recordings.lock().unwrap().iter() {
            tape.set_stream(name, record.lock().unwrap().clone());
        }
        tape
    }

    /// The ids (the trace's `conn=`) of the connections whose client end has
    /// not been dropped: those a client still holds, idle or in use.
    pub fn client_connection_ids(&self) -> Vec<u64> {
        let live = self.runtime.network.live_client_ends.lock().unwrap();
        live.iter().copied().collect()
    }

    /// The runtime to build clients on.
    pub fn runtime(&self) -> Arc<dyn Runtime> {
        self.runtime.clone()
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.executor.handle().now()
    }

    /// The trace of this run.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Sets how far the virtual clock may run before a run is declared stuck (default 24 h).
    pub fn set_time_limit(&mut self, limit: Duration) {
        self.time_limit = limit;
    }

    /// Sets the link used for origins without their own.
    pub fn set_default_link(&mut self, link: Link) {
        *self.runtime.network.default_link.lock().unwrap() = link;
    }

    /// Sets the link to one origin (`"https://api.example.com"`).
    pub fn set_link(&mut self, origin: &str, link: Link) {
        let origin = parse_origin(origin);
        self.runtime
            .network
            .links
            .lock()
            .unwrap()
            .insert(origin, link);
    }

    /// Starts a simulated server at `origin` with a handler.
    pub fn server(
        &mut self,
        origin: &str,
        handler: impl FnMut(&Request, &mut Context<'_>) -> Reply + Send + 'static,
    ) -> ServerHandle {
        let origin = parse_origin(origin);
        let name = format!("{}:{}", origin.host(), origin.port());
        let choices = self.choices(&format!("server {name}"));
        let state = Arc::new(ServerState::new(name, Box::new(handler), choices));
        self.runtime
            .network
            .servers
            .lock()
            .unwrap()
            .insert(origin, state.clone());
        ServerHandle { state }
    }

    /// Starts a mock server at `origin`: routes, canned replies, call counts.
    pub fn mock(&mut self, origin: &str) -> Mock {
        let mock = Mock::new();
        let router = mock.clone();
        let server = self.server(origin, move |request, ctx| router.answer(request, ctx));
        mock.attach(server);
        mock
    }

    /// Puts a proxy on the simulated network at `url`'s host and port
    /// (`http://proxy.test:3128`, `socks5://...`; see [`proxy`]).
    ///
    /// # Panics
    /// If `url` is not a proxy URL.
    pub fn proxy(&mut self, url: &str) -> proxy::ProxyHandle {
        let parsed = breakwater::core::proxy::ProxyUrl::parse(url)
            .unwrap_or_else(|e| panic!("bad proxy URL {url:?}: {e}"));
        let handle = proxy::ProxyHandle::new();
        self.runtime
            .network
            .proxies
            .lock()
            .unwrap()
            .insert((parsed.host().to_owned(), parsed.port()), handle.clone());
        handle
    }

    /// Sets one of the simulation's own environment variables, which a
    /// client built on its runtime reads (the proxy variables); the
    /// machine's are never read.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.runtime
            .env
            .lock()
            .unwrap()
            .insert(name.to_owned(), value.to_owned());
    }

    /// A client builder on this simulation's runtime whose every attempt and
    /// response is written to the trace, so a determinism check sees the
    /// client's decisions, not only the network's.
    pub fn client_builder(&self, base_url: &str) -> breakwater::ClientBuilder {
        let (sends, responses) = (self.trace.clone(), self.trace.clone());
        let (clock_a, clock_b) = (self.executor.handle(), self.executor.handle());
        breakwater::Client::builder(self.runtime(), base_url)
            .on_request(move |info| {
                let text = format!(
                    "send {} {} attempt={} reused={}",
                    info.method, info.url, info.attempt, info.reused_connection
                );
                sends.event(clock_a.now(), "client", &text);
            })
            .on_response(move |info| {
                let text = format!(
                    "response {} {} attempt={} status={} after={:?}",
                    info.method,
                    info.url,
                    info.attempt,
                    info.status.as_u16(),
                    info.elapsed
                );
                responses.event(clock_b.now(), "client", &text);
            })
    }

    /// Runs a task beside the main future of the next [`run`](Self::run).
    pub fn spawn(&mut self, future: impl Future<Output = ()> + Send + 'static) {
        self.executor.handle().spawn(future);
    }

    /// Runs `future` to completion on the virtual clock and returns its output.
    ///
    /// # Panics
    /// If the simulation gets stuck (every task waits and no timer is set) or
    /// passes its time limit; the message names the seed and the command
    /// that replays it.
    pub fn run<T: Send + 'static>(
        &mut self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> T {
        match self.try_run(future) {
            Ok(output) => output,
            Err(stuck) => panic!("simulation stuck: {stuck:?}\n{}", self.replay_hint()),
        }
    }

    /// Like [`run`](Self::run), but reports a stuck simulation instead of panicking.
    pub fn try_run<T: Send + 'static>(
        &mut self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, Stuck> {
        let output = Arc::new(Mutex::new(None));
        let slot = output.clone();
        self.executor.handle().spawn(async move {
            let value = future.await;
            *slot.lock().unwrap() = Some(value);
        });
        let limit = self.now() + self.time_limit;
        self.executor
            .run(limit, || output.lock().unwrap().is_some())?;
        let value = output.lock().unwrap().take();
        Ok(value.expect("run ended with its output"))
    }

    /// The one command that replays this simulation's seed in the current test.
    pub fn replay_hint(&self) -> String {
        let test = std::thread::current()
            .name()
            .unwrap_or("<test name>")
            .to_owned();
        match &self.entropy {
            Entropy::Seed(seed) => {
                format!("replay with: {SEED_VAR}={seed} cargo test {test} -- --exact")
            }
            Entropy::Tape(_) => {
                format!("replay with: {TAPE_VAR}=<the tape's file> cargo test {test} -- --exact")
            }
        }
    }

    /// How many times tasks were polled so far (a measure of work done).
    pub fn polls(&self) -> u64 {
        self.executor.polls
    }

    /// Tasks still alive (servers' connections included).
    pub fn live_tasks(&self) -> usize {
        self.executor.live_tasks()
    }

    /// Connections the client has opened through this simulation.
    pub fn connects(&self) -> usize {
        self.runtime.connects.load(Ordering::SeqCst)
    }
}

fn parse_origin(origin: &str) -> Origin {
    let uri: http::Uri = origin
        .parse()
        .unwrap_or_else(|e| panic!("bad origin {origin:?}: {e}"));
    Origin::from_uri(&uri).unwrap_or_else(|e| panic!("bad origin {origin:?}: {e}"))
}

impl Runtime for SimRuntime {
    fn env_var(&self, name: &str) -> Option<String> {
        self.env.lock().unwrap().get(name).cloned()
    }

    fn connect(
        &self,
        target: ConnectTarget,
    ) -> BoxFuture<'static, Result<BoxTransport, ConnectError>> {
        let handle = self.handle.clone();
        let network = self.network.clone();
        let trace = self.trace.clone();
        self.connects.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let mut drop_tunnel_after = None;
            if let Some(url) = &target.proxy {
                let found = network
                    .proxies
                    .lock()
                    .unwrap()
                    .get(&(url.host().to_owned(), url.port()))
                    .cloned();
                let admission = match found {
                    Some(proxy) => proxy.state.admit(url),
                    None => proxy::Admission::Unreachable,
                };
                let link = *network.default_link.lock().unwrap();
                // Reaching the proxy, and its answer.
                handle.sleep_until(handle.now() + link.latency * 2).await;
                let refusal = match admission {
                    proxy::Admission::Open { drop_after } => {
                        drop_tunnel_after = drop_after;
                        None
                    }
                    proxy::Admission::Unreachable => Some(ConnectErrorKind::ProxyUnreachable),
                    proxy::Admission::Refused => Some(ConnectErrorKind::ProxyRefused),
                    proxy::Admission::OriginUnreachable => Some(ConnectErrorKind::Unreachable),
                };
                if let Some(kind) = refusal {
                    trace.event(handle.now(), "net", &format!("proxy {url:?} -> {kind:?}"));
                    return Err(ConnectError::from_kind(kind));
                }
            }
            let origin = target.origin;
            let link = network
                .links
                .lock()
                .unwrap()
                .get(&origin)
                .copied()
                .unwrap_or(*network.default_link.lock().unwrap());
            let server = network.servers.lock().unwrap().get(&origin).cloned();
            let Some(server) = server else {
                trace.event(
                    handle.now(),
                    "net",
                    &format!("connect {origin} -> no such host"),
                );
                return Err(ConnectError::from_kind(ConnectErrorKind::Dns));
            };
            let config = *server.config.lock().unwrap();
            let rtt = link.latency * 2;
            if config.stall_connections {
                trace.event(handle.now(), "net", &format!("connect {origin} -> stalled"));
                futures_lite::future::pending::<()>().await;
            }
            // SYN / SYN-ACK.
            handle.sleep_until(handle.now() + rtt).await;
            if config.refuse_connections {
                trace.event(handle.now(), "net", &format!("connect {origin} -> refused"));
                return Err(ConnectError::from_kind(ConnectErrorKind::Refused));
            }
            let tls = origin.scheme() == Scheme::Https;
            if tls {
                // A TLS 1.3 handshake: one more round trip.
                handle.sleep_until(handle.now() + rtt).await;
            }
            let id = network.connections.fetch_add(1, Ordering::SeqCst) + 1;
            let info =
                TransportInfo::new(None, tls).with_timings(None, Some(rtt), tls.then_some(rtt));
            let (mut client, mut server_end) = net::connection(&handle, link, info);
            client.track(&network.live_client_ends, id);
            let connection = server.accepted.fetch_add(1, Ordering::SeqCst) + 1;
            if config.reset_connections {
                trace.event(
                    handle.now(),
                    "net",
                    &format!("connect {origin} -> conn={id} reset on accept"),
                );
                server_end.reset();
                return Ok(Box::new(client) as BoxTransport);
            }
            server.open.lock().unwrap().insert(id);
            if let Some(bytes) = drop_tunnel_after {
                server_end.reset_after(bytes);
            }
            trace.event(
                handle.now(),
                "net",
                &format!("connect {origin} -> conn={id}"),
            );
            handle.spawn(server::serve(
                handle.clone(),
                server,
                server_end,
                server::ConnectionIds {
                    network: id,
                    per_server: connection,
                },
                trace.clone(),
            ));
            Ok(Box::new(client) as BoxTransport)
        })
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        Box::pin(self.handle.sleep_until(deadline))
    }

    fn now(&self) -> Instant {
        self.handle.now()
    }

    fn wall_clock(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(WALL_EPOCH_SECS)
            + Duration::from_nanos(self.handle.now().as_nanos())
    }

    fn random_seed(&self) -> u64 {
        self.client_choices.lock().unwrap().u64()
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.handle.spawn(task);
    }
}
