//! The client's behavioural scenarios on real sockets, written once against
//! `Arc<dyn Runtime>`, with hyper and tokio-rustls peers.
//!
//! One file, over 900 lines, because the scenarios share one set of helpers
//! and read best as one table of contents; [`socket_client_tests!`]
//! (crate::socket_client_tests) lists them.
//!
//! Every scenario starts its own peers, builds its own client on the runtime
//! it is given, and panics on the first broken promise. Concurrency comes from
//! joining futures on the calling task, so no scenario needs a spawner. Retry
//! backoff is squeezed to a few milliseconds; the only real wait longer than
//! ~50 ms is the one `Retry-After: 1` the server asks for. A scenario that
//! needs time to pass on the client's side (a breaker's open interval, a
//! token's lifetime) moves the client's clock forward instead of sleeping
//! ([`jumping`]), and one that waits for the server blocks on the server's
//! own signal ([`TestServer::wait_until_open`]), never on a timer.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, SystemTime};

use breakwater::auth::{TokenFetchError, TokenResponse};
use breakwater::core::call::EngineConfig;
use breakwater::core::h1::DecodeError;
use breakwater::core::policy::backoff::BackoffPolicy;
use breakwater::core::policy::breaker::{BreakerConfig, BreakerStateKind};
use breakwater::core::pool::PoolConfig;
use breakwater::core::Instant;
use breakwater::runtime::{
    BoxFuture, BoxTransport, CertificateErrorKind, ConnectError, ConnectTarget, Runtime,
};
use breakwater::{Client, ClientBuilder, Error, ErrorKind};
use bytes::Bytes;
use futures_lite::StreamExt;

use super::server::{
    big_chunked, chunked, delayed, respond, respond_bytes, respond_with, streamed_with_length,
    Options, RawServer, Reply, TestServer,
};
use super::transport::{closed_port, localhost_ca, self_signed, tls_server_config, Identity, Pki};

// ---------------------------------------------------------------------------
// Helpers

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Backoff of a few milliseconds, so that retries cost no real time.
pub(super) fn fast(config: EngineConfig) -> EngineConfig {
    config.with_backoff(
        BackoffPolicy::default()
            .with_adaptive_floor(false)
            .with_base_floor(ms(2))
            .with_floor_bounds(ms(1), ms(5)),
    )
}

/// A client builder for `url` on `rt`, with fast backoff.
fn builder(rt: &Arc<dyn Runtime>, url: String) -> ClientBuilder {
    Client::builder(rt.clone(), url).configure(fast)
}

/// `rt` with a clock the test moves forward with [`Jumps::advance`]: its
/// `now` is `rt`'s plus every jump so far, and a sleep ends when that clock
/// reaches the deadline, woken early by a jump past it.
fn jumping(rt: Arc<dyn Runtime>) -> (Arc<dyn Runtime>, Jumps) {
    let jumps = Jumps::default();
    let runtime = JumpingClock {
        inner: rt,
        jumps: jumps.clone(),
    };
    (Arc::new(runtime), jumps)
}

/// The jumps of a [`jumping`] clock.
#[derive(Clone, Default)]
struct Jumps(Arc<Mutex<JumpState>>);

#[derive(Default)]
struct JumpState {
    ahead: Duration,
    sleepers: Vec<Waker>,
}

impl Jumps {
    /// Moves the clock forward by `by`, at once.
    fn advance(&self, by: Duration) {
        let sleepers = {
            let mut state = self.0.lock().unwrap();
            state.ahead += by;
            std::mem::take(&mut state.sleepers)
        };
        sleepers.into_iter().for_each(Waker::wake);
    }

    fn ahead(&self) -> Duration {
        self.0.lock().unwrap().ahead
    }
}

struct JumpingClock {
    inner: Arc<dyn Runtime>,
    jumps: Jumps,
}

impl Runtime for JumpingClock {
    fn connect(
        &self,
        target: ConnectTarget,
    ) -> BoxFuture<'static, Result<BoxTransport, ConnectError>> {
        self.inner.connect(target)
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        let (inner, jumps) = (self.inner.clone(), self.jumps.clone());
        Box::pin(async move {
            loop {
                let ahead = jumps.ahead();
                let on_inner_clock = deadline.saturating_sub(ahead);
                if inner.now() >= on_inner_clock {
                    return;
                }
                let jumped = std::future::poll_fn(|cx| {
                    let mut state = jumps.0.lock().unwrap();
                    if state.ahead != ahead {
                        return Poll::Ready(());
                    }
                    if !state.sleepers.iter().any(|w| w.will_wake(cx.waker())) {
                        state.sleepers.push(cx.waker().clone());
                    }
                    Poll::Pending
                });
                futures_lite::future::or(inner.sleep_until(on_inner_clock), jumped).await;
            }
        })
    }

    fn now(&self) -> Instant {
        self.inner.now() + self.jumps.ahead()
    }

    fn wall_clock(&self) -> SystemTime {
        self.inner.wall_clock() + self.jumps.ahead()
    }

    fn random_seed(&self) -> u64 {
        self.inner.random_seed()
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.inner.spawn(task)
    }
}

/// Pending once, having woken itself: the task goes round its executor, and
/// the runtime's reactor gets its turn (tokio's and async-io's `block_on`
/// both poll for I/O events before polling a woken future again).
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// `future`, unless `duration` passes first on the runtime's clock.
async fn timeout<T>(
    rt: &Arc<dyn Runtime>,
    duration: Duration,
    future: impl Future<Output = T>,
) -> Option<T> {
    let deadline = rt.now() + duration;
    futures_lite::future::or(async { Some(future.await) }, async {
        rt.sleep_until(deadline).await;
        None
    })
    .await
}

/// Runs all `futures` concurrently on the calling task; outputs in input order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Option<Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

/// `total` jobs run by `workers` concurrent workers, each taking the next job
/// when it finishes one: at most `workers` jobs are ever in progress.
async fn with_workers<F, Fut>(workers: usize, total: usize, job: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let next = AtomicUsize::new(0);
    let worker = || async {
        loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            if i >= total {
                return;
            }
            job(i).await;
        }
    };
    join_all((0..workers).map(|_| worker()).collect()).await;
}

/// A GET whose body must be `expected`.
async fn get_ok(client: &Client, path: &str, expected: &str) {
    let response = client.get(path).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), expected);
}

/// The decoder's error behind a protocol error, if any.
fn decode_error(err: &Error) -> Option<DecodeError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(decode) = e.downcast_ref::<DecodeError>() {
            return Some(decode.clone());
        }
        source = e.source();
    }
    None
}

/// Pool accounting at rest: nothing checked out, connecting or waiting.
fn assert_at_rest(client: &Client) {
    let stats = client.stats();
    assert_eq!(stats.pool.active, 0, "{stats:#?}");
    assert_eq!(stats.pool.connecting, 0, "{stats:#?}");
    assert_eq!(stats.pool.waiting, 0, "{stats:#?}");
    assert_eq!(stats.in_flight, 0, "{stats:#?}");
    assert_eq!(stats.waiting_for_permit, 0, "{stats:#?}");
    assert_eq!(
        stats.pool.opened - stats.pool.closed,
        stats.pool.idle as u64,
        "{stats:#?}"
    );
}

// ---------------------------------------------------------------------------
// 1. The pool

/// 1,000 sequential requests open exactly one connection.
pub async fn pool_sequential_uses_one_connection(rt: Arc<dyn Runtime>) {
    let server = TestServer::start(|_| respond(200, "ok"));
    let client = builder(&rt, server.url("/")).build().unwrap();
    for _ in 0..1000 {
        get_ok(&client, "ping", "ok").await;
    }
    assert_eq!(server.hits(), 1000);
    assert_eq!(server.accepted(), 1);
    assert_at_rest(&client);
    assert_eq!(client.stats().pool.idle, 1);
}

/// 200 requests at concurrency 20 open at most 20 connections.
pub async fn pool_concurrency_20(rt: Arc<dyn Runtime>) {
    let server = TestServer::start(|_| respond(200, "ok"));
    let client = builder(&rt, server.url("/")).build().unwrap();
    with_workers(20, 200, |_| get_ok(&client, "ping", "ok")).await;
    assert_eq!(server.hits(), 200);
    assert!(server.accepted() <= 20, "opened {}", server.accepted());
    println!(
        "200 requests at concurrency 20: {} connections",
        server.accepted()
    );
    assert_at_rest(&client);
}

/// 10,000 requests at concurrency 64 open at most 64 connections: a waiting
/// request takes the connection that comes back instead of racing a new one.
pub async fn pool_concurrency_64(rt: Arc<dyn Runtime>) {
    let server = TestServer::start(|_| respond(200, "ok"));
    let client = builder(&rt, server.url("/"))
        .max_concurrency(64)
        .configure(|c| {
            c.with_pool(
                PoolConfig::default()
                    .with_max_connections(64)
                    .with_max_idle_per_origin(64),
            )
        })
        .build()
        .unwrap();
    with_workers(64, 10_000, |_| get_ok(&client, "ping", "ok")).await;
    assert_eq!(server.hits(), 10_000);
    assert!(server.accepted() <= 64, "opened {}", server.accepted());
    println!(
        "10,000 requests at concurrency 64: {} connections",
        server.accepted()
    );
    assert_at_rest(&client);
}

/// A pool of 5 with 50 concurrent callers never has more than 5 connections
/// open, and every caller completes (most of them after queueing).
pub async fn pool_of_five_fifty_callers(rt: Arc<dyn Runtime>) {
    let server = TestServer::start(|_| delayed(respond(200, "ok"), ms(2)));
    let client = builder(&rt, server.url("/"))
        .max_concurrency(50)
        .configure(|c| c.with_pool(PoolConfig::default().with_max_connections(5)))
        .build()
        .unwrap();
    let queued = AtomicUsize::new(0);
    let calls = (0..50).map(|_| async {
        let response = client.get("slow").send().await.unwrap();
        if !response.timings().queued.is_zero() {
            queued.fetch_add(1, Ordering::SeqCst);
        }
        assert_eq!(response.text().await.unwrap(), "ok");
    });
    join_all(calls.collect()).await;
    assert_eq!(server.hits(), 50);
    assert!(server.peak_open() <= 5, "peak open {}", server.peak_open());
    assert!(server.accepted() <= 5, "opened {}", server.accepted());
    assert!(
        queued.load(Ordering::SeqCst) >= 45,
        "callers queued for the pool"
    );
    println!(
        "pool of 5, 50 callers: {} connections, peak open {}",
        server.accepted(),
        server.peak_open()
    );
    assert_at_rest(&client);
}

// ---------------------------------------------------------------------------
// 2. Retries

/// 503, 503, 200 gives the body after exactly 3 hits.
pub async fn retry_503_503_200(rt: Arc<dyn Runtime>) {
    let server = TestServer::start(|seen| match seen.hit {
        1 | 2 => respond(503, "busy"),
        _ => respond(200, "finally"),
    });
    let client = builder(&rt, server.url("/")).build().unwrap();
    get_ok(&client, "flaky", "finally").await;
    assert_eq!(server.hits(), 3);
    // The 503s carried their bodies with their heads: one connection served all three.
    assert_eq!(server.accepted(), 1);
    assert_at_rest(&client);
}

/// A streamed request body arrives whole, chunked; since it cannot be sent
/// twice, a 503 after it is delivered rather than retried (even for PUT).
pub async fn streamed_request_body(rt: Arc<dyn Runtime>) {
    let server = TestServer::start(|seen| match seen.uri.path() {
        "/upload" => respond_bytes(seen.body.clone()),
        _ => respond(503, "busy"),
    });
    let client = builder(&rt, server.url("/")).build().unwrap();
    let pieces = ["first piece, ", "second piece, ", "", "last piece"];
    let stream = futures_lite::stream::iter(pieces.map(|p| Ok(Bytes::from_static(p.as_bytes()))));
    let response = client
        .post("upload")
        .body_stream(stream)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), pieces.concat().as_bytes());
    let seen = server.seen();
    assert_eq!(seen[0].headers.get("transfer-encoding").unwrap(), "chunked");
    assert!(seen[0].headers.get("content-length").is_none());

    let stream = futures_lite::stream::iter([Ok(Bytes::from_static(b"data"))]);
    let response = client.put("busy").body_stream(stream).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(server.hits(), 2, "a streamed body is never sent twice");

    // The caller's stream failing is the caller's error, not the upstream's:
    // more failures than open the breaker (5) leave it closed.
    for _ in 0..6 {
        let failing = futures_lite::stream::iter([
            Ok(Bytes::from_static(b"some")),
            Err(std::io::Error::other("disk gone")),
        ]);
        let err = client
            .post("upload")
            .body_stream(failing)
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Request, "{err}");
        assert!(err.to_string().contains("disk gone"), "{err}");
    }
    let stats = client.stats();
    assert_eq!(stats.origins[0].breaker, BreakerStateKind::Closed);
    assert_at_rest(&client);
}

/// 404 and 422 are answers, not failures: one hit each, no retry.
pub async fn no_retry_on_404_and_422(rt: Arc<dyn Runtime>) {
    let server = TestServer::start(|seen| match seen.uri.path() {
        "/missing" => respond(404, "no such thing"),
        _ => respond(422, "bad input"),
    });
    let client = builder(&rt, server.url("/")).build().unwrap();
    let response = client.get("missing").send().await.unwrap();
    assert_eq!(response.status(), 404);
    let err = response.error_for_status().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status);
    assert_eq!(err.body_snippet(), Some("no such thing"));
    assert_eq!(server.hits(), 1);

    let response = client.post("things").body("{}").send().await.unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(server.hits(), 2);
    let response = client.put("things/1").body("{}").send().await.unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(server.hits(), 3);
}

/// 429 with `Retry-After: 1` waits at least a second, then succeeds (the
/// suite's only real wait).
pub async fn retry_after_429_is_honoured(rt: Arc<dyn Runtime>) {
    let server = TestServer::start(|seen| match seen.hit {
        1 => respond_with(429, &[("retry-after", "1")], "slow down"),
        _ => respond(200, "welcome"),
    });
    let client = builder(&rt, server.url("/")).build().unwrap();
    let started = rt.now();
    get_ok(&client, "limited", "welcome").await;
    let waited = rt.now().saturating_duration_since(started);
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
    assert_eq!(server.hits(), 2);
}

/// A POST with a key is retried, with the same key and body on every attempt;
/// a POST without a key is not retried on the same 503.
pub async fn idempotency_key_on_every_attempt(rt: Arc<dyn Runtime>) {
    let server = TestServer::start(|seen| match (seen.uri.path(), seen.hit) {
        ("/orders", 1 | 2) => respond(503, "busy"),
        ("/orders", _) => respond(201, "created"),
        _ => respond(503, "busy"),
    });
    let client = builder(&rt, server.url("/")).build().unwrap();
    let response = client
        .post("orders")
        .idempotency_key("order-42")
        .body(r#"{"sku":"A-1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    for request in &seen {
        assert_eq!(request.method, http::Method::POST);
        assert_eq!(
            request.header("idempotency-key").as_deref(),
            Some("order-42")
        );
        assert_eq!(&request.body[..], br#"{"sku":"A-1"}"#);
    }

    let response = client.post("payments").body("{}").send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(server.hits(), 4, "a POST without a key was retried");
    assert_eq!(server.seen()[3].header("idempotency-key"), None);
}

/// The server resets the connection after reading a request's head, while
/// the client is still writing a body larger than the socket buffers. Request
/// bytes have left, so a POST without a key is not resent; a PUT, being
/// idempotent, is.
pub async fn reset_mid_upload_resends_only_what_is_safe(rt: Arc<dyn Runtime>) {
    let server = RawServer::start(|request| match request.connection {
        1 | 2 => Reply::ResetBeforeBody,
        _ => Reply::Write(GOOD.to_vec()),
    });
    let client = builder(&rt, server.url("/")).build().unwrap();
    let body = Bytes::from(vec![b'x'; 32 << 20]);

    let err = client
        .post("upload")
        .body(body.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert_eq!(server.accepted(), 1, "the POST was resent");

    let response = client.put("upload").body(body).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "ok");
    assert_eq!(server.accepted(), 3, "the PUT was resent once");
    assert_at_rest(&client);
}

/// A POST without a key is not resent after the connection is reset
/// mid-response (nothing answered, or half a head); a GET in the same spot is.
pub async fn post_without_key_not_resent_after_reset(rt: Arc<dyn Runtime>) {
    let server = RawServer::start(|request| match request.path() {
        "/half" => Reply::WriteThenClose(b"HTTP/1.1 200 OK\r\nContent-Le".to_vec()),
        _ => Reply::WriteThenClose(Vec::new()),
    });
    let client = builder(&rt, server.url("/")).build().unwrap();

    let err = client.post("orders").body("{}").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert_eq!(server.requests().len(), 1, "the POST was resent");
    assert_eq!(err.attempts(), 1);

    let err = client.post("half").body("{}").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert_eq!(server.requests().len(), 2, "the POST was resent");

    // The same failure on a GET is retried: the test can tell the difference.
    let err = client.get("orders").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert_eq!(server.requests().len(), 5, "a GET is retried 3 times");
    assert_at_rest(&client);
}

// ---------------------------------------------------------------------------
// 3. Stale keep-alive

/// A server answering "fresh", and a client for it.
fn fresh_server(rt: &Arc<dyn Runtime>) -> (TestServer, Client) {
    let server = TestServer::start(|_| respond(200, "fresh"));
    let client = builder(rt, server.url("/")).build().unwrap();
    (server, client)
}

/// The server closes the client's idle connection, as its idle timeout
/// would; returns once the server has closed it, having let the client's
/// runtime turn its reactor once since.
async fn server_closes_the_idle_connection(server: &TestServer) {
    server.close_idle_connections();
    server.wait_until_open("the server to close the idle connection", |open| open == 0);
    yield_once().await;
}

/// A server that closes idle connections sooner than the client would
/// causes no error: the stale connection is replaced.
pub async fn stale_keep_alive_is_replaced(rt: Arc<dyn Runtime>) {
    let (server, client) = fresh_server(&rt);
    for round in 1..=3 {
        let response = client.get("data").send().await.unwrap();
        assert!(
            !response.timings().reused,
            "round {round} reused a dead connection"
        );
        assert_eq!(response.text().await.unwrap(), "fresh");
        // The client keeps the connection idle; the server closes its end.
        assert_eq!(client.stats().pool.idle, 1);
        server_closes_the_idle_connection(&server).await;
    }
    get_ok(&client, "data", "fresh").await;
    assert_eq!(server.hits(), 4);
    assert_eq!(server.accepted(), 4);
    assert_at_rest(&client);
}

/// The liveness check before reuse: a POST without a key cannot be resent,
/// so a connection the server closed while it sat idle must be noticed
/// before the POST is written to it, not after.
pub async fn stale_keep_alive_is_noticed_before_a_post(rt: Arc<dyn Runtime>) {
    let (server, client) = fresh_server(&rt);
    for round in 1..=3 {
        get_ok(&client, "data", "fresh").await;
        assert_eq!(client.stats().pool.idle, 1);
        server_closes_the_idle_connection(&server).await;
        let response = client.post("orders").body("{}").send().await;
        let response = response.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(!response.timings().reused, "round {round}");
        assert_eq!(response.text().await.unwrap(), "fresh");
    }
    assert_eq!(server.hits(), 6, "each POST reached the server once");
    assert_at_rest(&client);
}

/// The same, when the close reaches the client's socket while its task
/// blocks its thread, so its own runtime's reactor has not run since: the
/// check must look at the socket, not at readiness a reactor last reported.
/// Deterministic on tokio's single-threaded test runtime; on smol, async-io's
/// own thread may run the reactor meanwhile, so there it shows less.
pub async fn stale_keep_alive_is_noticed_with_no_reactor_turn_since(rt: Arc<dyn Runtime>) {
    let (server, client) = fresh_server(&rt);
    post_after_an_idle_close_with_no_reactor_turn(&server, &client, "fresh").await;
}

/// The same over TLS, where the check looks past the TLS layer to the socket.
pub async fn stale_tls_keep_alive_is_noticed_with_no_reactor_turn_since(rt: Arc<dyn Runtime>) {
    let pki = Pki::new();
    let options = Options {
        tls: Some(Arc::new(tls_server_config(&pki.leaf("localhost"), None))),
    };
    let server = TestServer::start_with(options, |_| respond(200, "secure"));
    let client = builder(&rt, server.url("/"))
        .tls(localhost_ca(&pki))
        .build()
        .unwrap();
    post_after_an_idle_close_with_no_reactor_turn(&server, &client, "secure").await;
}

/// One GET; the server closes the idle connection while the client's thread
/// blocks (no await, so its runtime's reactor does not run); then a POST
/// without a key, which must reach the server once.
async fn post_after_an_idle_close_with_no_reactor_turn(
    server: &TestServer,
    client: &Client,
    body: &str,
) {
    get_ok(client, "data", body).await;
    server.close_idle_connections();
    server.wait_until_open("the server to close the idle connection", |open| open == 0);
    let response = client.post("orders").body("{}").send().await.unwrap();
    assert!(!response.timings().reused);
    assert_eq!(response.text().await.unwrap(), body);
    assert_eq!(server.hits(), 2, "the POST reached the server once");
    assert_at_rest(client);
}

/// Nothing listening: the caller gets a connect error (after the retries a
/// failed connect allows, since nothing was sent), not a protocol error.
pub async fn refused_connection_is_a_connect_error(rt: Arc<dyn Runtime>) {
    let url = format!("http://{}/", closed_port());
    let client = builder(&rt, url).build().unwrap();
    let err = client.post("orders").body("{}").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    assert_at_rest(&client);
}

/// The race a timer cannot settle: the server closes the kept-alive
/// connection just as the next request reaches it (it reads the request and
/// closes without a byte of answer). The request is resent on a new
/// connection and the caller sees no error.
pub async fn stale_keep_alive_race_is_retried(rt: Arc<dyn Runtime>) {
    let server = RawServer::start(|request| {
        let first_connection = request.connection == 1;
        match request.hit {
            2 if first_connection => Reply::WriteThenClose(Vec::new()),
            _ => Reply::Write(GOOD.to_vec()),
        }
    });
    let client = builder(&rt, server.url("/")).build().unwrap();
    get_ok(&client, "a", "ok").await;
    let response = client.get("b").send().await.unwrap();
    assert!(!response.timings().reused);
    assert_eq!(response.text().await.unwrap(), "ok");
    let requests = server.requests();
    let connections: Vec<_> = requests.iter().map(|r| r.connection).collect();
    assert_eq!(connections, [1, 1, 2]);
    assert_at_rest(&client);
}

// ---------------------------------------------------------------------------
// 4. The breaker

/// Five failures open the breaker; the next call fails fast without reaching
/// the server; after the open interval exactly the configured probes go
/// through, and their success closes the breaker.
pub async fn breaker_opens_probes_and_closes(rt: Arc<dyn Runtime>) {
    const PROBES: usize = 2;
    let (rt, clock) = jumping(rt);
    let server = TestServer::start(|seen| match seen.hit {
        1..=5 => respond(503, "down"),
        // Slow enough that every concurrent call sees the probes in flight.
        _ => delayed(respond(200, "up"), ms(20)),
    });
    let client = builder(&rt, server.url("/"))
        .configure(|c| {
            c.with_breaker(
                BreakerConfig::default()
                    .with_consecutive_failures(Some(5))
                    .with_open_interval(Duration::from_secs(30))
                    .with_half_open_probes(PROBES as u32),
            )
        })
        .build()
        .unwrap();
    for _ in 0..5 {
        let response = client.get("svc").attempts(1).send().await.unwrap();
        assert_eq!(response.status(), 503);
    }
    assert_eq!(server.hits(), 5);
    assert_eq!(client.stats().origins[0].breaker, BreakerStateKind::Open);

    let err = client.get("svc").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen, "{err}");
    assert_eq!(server.hits(), 5, "a call went through an open breaker");
    let retry_after = err.retry_after().expect("circuit-open says when to retry");
    assert!(retry_after <= Duration::from_secs(30), "{retry_after:?}");
    println!("{err}");

    clock.advance(retry_after + ms(1));
    let calls = (0..6).map(|_| client.get("svc").attempts(1).send());
    let results = join_all(calls.collect()).await;
    let passed = results.iter().filter(|r| r.is_ok()).count();
    let rejected = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.kind() == ErrorKind::CircuitOpen))
        .count();
    assert_eq!(server.hits(), 5 + PROBES, "probes that reached the server");
    assert_eq!((passed, rejected), (PROBES, 6 - PROBES));
    assert_eq!(client.stats().origins[0].breaker, BreakerStateKind::Closed);
    drop(results);

    get_ok(&client, "svc", "up").await;
    assert_eq!(server.hits(), 6 + PROBES);
    assert_at_rest(&client);
}

// ---------------------------------------------------------------------------
// 5. Token refresh

/// A token source that counts its fetches and answers `t1`, `t2`, … on its
/// second poll (so that calls made together find the fetch in flight);
/// `lifetime(n)` is the n-th token's lifetime.
fn counting_source(
    fetches: &Arc<AtomicUsize>,
    lifetime: fn(usize) -> Duration,
) -> impl Fn() -> Pin<Box<dyn Future<Output = Result<TokenResponse, TokenFetchError>> + Send>>
       + Send
       + Sync
       + 'static {
    let fetches = fetches.clone();
    move || {
        let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            yield_once().await;
            Ok(TokenResponse::new(
                format!("t{n}").into(),
                Some(lifetime(n)),
            ))
        })
    }
}

/// 50 concurrent calls with an expired token cause exactly one token fetch.
pub async fn token_single_flight(rt: Arc<dyn Runtime>) {
    let (rt, clock) = jumping(rt);
    let server = TestServer::start(|_| respond(200, "ok"));
    let fetches = Arc::new(AtomicUsize::new(0));
    // The first token lives 10 minutes; the next one an hour.
    let lifetime = |n| Duration::from_secs(if n == 1 { 600 } else { 3600 });
    let client = builder(&rt, server.url("/"))
        .token_source(counting_source(&fetches, lifetime))
        .max_concurrency(50)
        .build()
        .unwrap();
    get_ok(&client, "me", "ok").await;
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_secs(601)); // the first token has expired

    let calls = (0..50).map(|_| get_ok(&client, "me", "ok"));
    join_all(calls.collect()).await;
    assert_eq!(fetches.load(Ordering::SeqCst), 2, "token fetches");
    let seen = server.seen();
    assert_eq!(seen.len(), 51);
    assert_eq!(
        seen[0].header("authorization").as_deref(),
        Some("Bearer t1")
    );
    for request in &seen[1..] {
        assert_eq!(
            request.header("authorization").as_deref(),
            Some("Bearer t2")
        );
    }
    assert_at_rest(&client);
}

/// A 401 forces one refresh and one resend with the new token.
pub async fn token_refreshed_after_401(rt: Arc<dyn Runtime>) {
    let server = TestServer::start(|seen| match seen.header("authorization").as_deref() {
        Some("Bearer t1") => respond(401, "token revoked"),
        _ => respond(200, "ok"),
    });
    let fetches = Arc::new(AtomicUsize::new(0));
    let client = builder(&rt, server.url("/"))
        .token_source(counting_source(&fetches, |_| Duration::from_secs(600)))
        .build()
        .unwrap();
    get_ok(&client, "me", "ok").await;
    assert_eq!(fetches.load(Ordering::SeqCst), 2, "token fetches");
    let auth: Vec<_> = server
        .seen()
        .iter()
        .map(|s| s.header("authorization").unwrap())
        .collect();
    assert_eq!(auth, ["Bearer t1", "Bearer t2"]);
    // The fresh token stays in use.
    get_ok(&client, "me", "ok").await;
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    assert_eq!(server.hits(), 3);
}

// ---------------------------------------------------------------------------
// 6. Cancellation

/// One call, cancelled in the way `how` says.
async fn cancelled_call(client: &Client, rt: &Arc<dyn Runtime>, how: usize, after: Duration) {
    let read = |path: &'static str| async move { client.get(path).send().await?.bytes().await };
    match how {
        // A timeout around the whole call, anywhere from the pool to the body.
        0 => drop(timeout(rt, after, read("/")).await),
        // A timeout while a streamed body trickles in.
        1 => drop(timeout(rt, after, read("/stream")).await),
        // The response dropped after its first piece of body.
        2 => {
            if let Ok(mut response) = client.get("/stream").send().await {
                let _ = response.chunk().await;
            }
        }
        // The loser of a race between two calls.
        3 => drop(futures_lite::future::or(read("/"), read("/stream")).await),
        // Polled once, then dropped.
        _ => drop(futures_lite::future::poll_once(client.get("/").send()).await),
    }
}

/// 1,000 calls cancelled at random points leave no active connection, no
/// permit and no leaked server connection; the next 100 calls all succeed.
pub async fn cancellation_leaks_nothing(rt: Arc<dyn Runtime>) {
    let server = TestServer::start(|seen| match seen.uri.path() {
        "/stream" => chunked(vec![Bytes::from(vec![b'y'; 512]); 6], ms(1)),
        _ => delayed(
            respond(200, "ok"),
            Duration::from_micros(fastrand::u64(0..2000)),
        ),
    });
    let client = builder(&rt, server.url("/"))
        .configure(|c| c.with_pool(PoolConfig::default().with_pool_timeout(ms(2000))))
        .build()
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for _ in 0..50 {
        let calls = (0..20).map(|_| {
            let how = rng.usize(0..5);
            let after = Duration::from_micros(rng.u64(0..4000));
            cancelled_call(&client, &rt, how, after)
        });
        join_all(calls.collect()).await;
    }
    assert_at_rest(&client);
    let stats = client.stats();
    // Cancelling is not failing: the breaker never saw an error.
    assert_eq!(stats.origins[0].breaker, BreakerStateKind::Closed);
    println!(
        "after 1,000 cancellations: opened {}, closed {}, idle {}; server accepted {}",
        stats.pool.opened,
        stats.pool.closed,
        stats.pool.idle,
        server.accepted()
    );
    // The client closes what it drops at once; the server's thread sees it.
    let idle = client.stats().pool.idle;
    server.wait_until_open("the server to see only the idle pool open", |open| {
        open == idle
    });

    with_workers(20, 100, |_| get_ok(&client, "/", "ok")).await;
    let stats = client.stats();
    assert_eq!(stats.pool.timed_out, 0, "{stats:#?}");
    assert_at_rest(&client);
}

/// A body read cancelled while it waits for the socket, then the response
/// dropped: the connection is closed, not put back with its body unread (a
/// cancelled read once left its unfilled buffer behind, which the drop then
/// "drained" as body bytes, returning a connection still carrying the real
/// body to the pool).
pub async fn cancelled_body_read_closes_connection(rt: Arc<dyn Runtime>) {
    let server = TestServer::start(|seen| match seen.uri.path() {
        // The rest of the body is exactly one client read (16 KiB) long.
        "/slow" => streamed_with_length(
            vec![
                Bytes::from(vec![b'y'; 1024]),
                Bytes::from(vec![b'y'; 16 << 10]),
            ],
            ms(30),
        ),
        _ => respond(200, "ok"),
    });
    for round in 1..=3 {
        let client = builder(&rt, server.url("/")).build().unwrap();
        let mut response = client.get("slow").send().await.unwrap();
        assert_eq!(response.content_length(), Some(1024 + (16 << 10)));
        let first = response.chunk().await.unwrap().unwrap();
        assert!(first.iter().all(|&b| b == b'y'));
        // The rest is 30 ms away: this read is pending when it is dropped.
        let read = futures_lite::future::poll_once(response.chunk()).await;
        assert!(read.is_none(), "round {round}: the rest came early");
        drop(response);
        let stats = client.stats();
        assert_eq!(
            stats.pool.idle, 0,
            "round {round}: an unread body went back to the pool"
        );
        assert_at_rest(&client);

        let response = client.get("ok").send().await.unwrap();
        assert!(!response.timings().reused, "round {round}");
        assert_eq!(response.text().await.unwrap(), "ok");
        assert_eq!(server.accepted(), 2 * round);
    }
}

// ---------------------------------------------------------------------------
// 7. TLS

fn https_server(identity: &Identity, client_ca_pem: Option<&str>) -> TestServer {
    let options = Options {
        tls: Some(Arc::new(tls_server_config(identity, client_ca_pem))),
    };
    TestServer::start_with(options, |_| respond(200, "secure"))
}

/// A chain from a custom CA succeeds with that CA, and only with it.
pub async fn tls_valid_chain_with_custom_ca(rt: Arc<dyn Runtime>) {
    let pki = Pki::new();
    let server = https_server(&pki.leaf("localhost"), None);
    let client = builder(&rt, server.url("/"))
        .tls(localhost_ca(&pki))
        .build()
        .unwrap();
    let response = client.get("hello").send().await.unwrap();
    assert!(response.timings().tls_handshake.is_some());
    assert_eq!(response.text().await.unwrap(), "secure");
    get_ok(&client, "again", "secure").await;
    assert_eq!(server.accepted(), 1, "the TLS connection was reused");

    // The platform roots do not know the test CA.
    let client = builder(&rt, server.url("/")).build().unwrap();
    let err = client.get("hello").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert_eq!(
        err.certificate_error(),
        Some(CertificateErrorKind::UnknownIssuer)
    );
    assert_eq!(server.hits(), 2);
}

/// Self-signed, expired and wrong-host certificates each fail with their
/// typed error, are not retried, and never reach HTTP.
pub async fn tls_bad_certificates(rt: Arc<dyn Runtime>) {
    let pki = Pki::new();
    let cases = [
        (
            self_signed("localhost"),
            CertificateErrorKind::UnknownIssuer,
        ),
        (pki.expired_leaf("localhost"), CertificateErrorKind::Expired),
        (pki.leaf("other.example"), CertificateErrorKind::WrongHost),
    ];
    for (identity, expected) in cases {
        let server = https_server(&identity, None);
        let client = builder(&rt, server.url("/"))
            .tls(localhost_ca(&pki))
            .build()
            .unwrap();
        let err = client.get("hello").send().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
        assert!(err.is_certificate(), "{err}");
        assert_eq!(err.certificate_error(), Some(expected), "{err}");
        assert_eq!(server.accepted(), 1, "a certificate error was retried");
        assert_eq!(server.hits(), 0);
        println!("{err}");
    }
}

/// A server that requires client certificates serves a client with one and
/// refuses a client without one.
pub async fn tls_mutual(rt: Arc<dyn Runtime>) {
    let pki = Pki::new();
    let server = https_server(&pki.leaf("localhost"), Some(&pki.ca_pem));
    let identity = pki.leaf("client.localhost");
    let with_cert = localhost_ca(&pki)
        .with_client_certificate_pem(identity.chain_pem.as_bytes(), identity.key_pem.as_bytes())
        .unwrap();
    let client = builder(&rt, server.url("/"))
        .tls(with_cert)
        .build()
        .unwrap();
    get_ok(&client, "hello", "secure").await;
    assert_eq!(server.hits(), 1);

    let client = builder(&rt, server.url("/"))
        .tls(localhost_ca(&pki))
        .build()
        .unwrap();
    let err = client.get("hello").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert_eq!(
        server.hits(),
        1,
        "a client without a certificate was served"
    );
    // A refusal of our credentials is configuration, not a flaky upstream.
    assert_eq!(err.attempts(), 1, "a refused certificate was retried");
    println!("{err}");
}

// ---------------------------------------------------------------------------
// 8. Streaming

/// A 100 MiB chunked body streams through in pieces no larger than the
/// client's reads: the whole body is never held.
pub async fn stream_100_mib(rt: Arc<dyn Runtime>) {
    const TOTAL: usize = 100 << 20;
    let server = TestServer::start(|_| big_chunked(TOTAL, 64 << 10));
    let client = builder(&rt, server.url("/")).build().unwrap();
    let response = client.get("big").send().await.unwrap();
    assert_eq!(response.content_length(), None);
    let mut stream = std::pin::pin!(response.bytes_stream());
    let (mut received, mut largest, mut pieces) = (0usize, 0usize, 0usize);
    while let Some(piece) = stream.next().await {
        let piece = piece.unwrap();
        received += piece.len();
        largest = largest.max(piece.len());
        pieces += 1;
    }
    assert_eq!(received, TOTAL);
    assert!(largest <= 64 << 10, "a piece of {largest} bytes");
    assert!(pieces >= TOTAL / (64 << 10), "{pieces} pieces");
    // Read to its end, the connection went back to the pool.
    assert_at_rest(&client);
    assert_eq!(client.stats().pool.idle, 1);
}

#[derive(Debug, PartialEq, serde::Deserialize)]
struct Record {
    id: u32,
    name: String,
}

/// Splits `text` into frames of `size` bytes, ignoring UTF-8 boundaries.
fn frames(text: &str, size: usize) -> Vec<Bytes> {
    text.as_bytes()
        .chunks(size)
        .map(Bytes::copy_from_slice)
        .collect()
}

/// NDJSON records and text lines split mid-line (and mid-character) across
/// chunks parse whole.
pub async fn ndjson_and_lines_across_chunks(rt: Arc<dyn Runtime>) {
    let ndjson: String = (1..=20)
        .map(|id| format!("{{\"id\":{id},\"name\":\"item-{id}\"}}\n"))
        .collect::<String>()
        + "\n"; // a blank line is skipped
    let lines = "première ligne\r\nsecond line\n\nlast line without newline";
    let (nd, li) = (ndjson.clone(), lines.to_owned());
    let server = TestServer::start(move |seen| match seen.uri.path() {
        "/ndjson" => chunked(frames(&nd, 7), Duration::ZERO),
        _ => chunked(frames(&li, 4), ms(1)),
    });
    let client = builder(&rt, server.url("/")).build().unwrap();

    // The pieces really are split mid-line.
    let mut response = client.get("ndjson").send().await.unwrap();
    let mut split = 0;
    while let Some(piece) = response.chunk().await.unwrap() {
        split += usize::from(!piece.ends_with(b"\n"));
    }
    assert!(split > 10, "only {split} pieces ended mid-line");

    let response = client.get("ndjson").send().await.unwrap();
    let records: Vec<Record> = response
        .ndjson::<Record>()
        .map(Result::unwrap)
        .collect()
        .await;
    let expected: Vec<Record> = (1..=20)
        .map(|id| Record {
            id,
            name: format!("item-{id}"),
        })
        .collect();
    assert_eq!(records, expected);

    let response = client.get("lines").send().await.unwrap();
    let got: Vec<String> = response.lines().map(Result::unwrap).collect().await;
    assert_eq!(
        got,
        [
            "première ligne",
            "second line",
            "",
            "last line without newline"
        ]
    );
    assert_eq!(server.accepted(), 1);
    assert_at_rest(&client);
}

/// A download into a file reports increasing progress that ends at the total.
pub async fn copy_to_file_with_progress(rt: Arc<dyn Runtime>) {
    let body: Vec<u8> = (0..(1usize << 20)).map(|i| (i % 251) as u8).collect();
    let served = Bytes::from(body.clone());
    let server = TestServer::start(move |_| respond_bytes(served.clone()));
    let client = builder(&rt, server.url("/")).build().unwrap();
    let path = std::env::temp_dir().join(format!(
        "breakwater-download-{}-{}.bin",
        std::process::id(),
        fastrand::u64(..)
    ));
    let file = std::fs::File::create(&path).unwrap();
    let response = client.get("file").send().await.unwrap();
    let mut progress = Vec::new();
    let written = response
        .copy_to(futures_lite::io::AssertAsync::new(file), |n, total| {
            progress.push((n, total))
        })
        .await
        .unwrap();
    let on_disk = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let total = body.len() as u64;
    assert_eq!(written, total);
    assert!(on_disk == body, "the file differs from the body");
    assert!(progress.len() > 1, "{} progress reports", progress.len());
    assert!(progress.windows(2).all(|w| w[0].0 < w[1].0), "{progress:?}");
    assert!(progress.iter().all(|&(_, t)| t == Some(total)));
    assert_eq!(progress.last(), Some(&(total, Some(total))));
    assert_at_rest(&client);
}

// ---------------------------------------------------------------------------
// 9. Hostile servers

const GOOD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A raw server answering `/bad` with `bad` (closing after it if `close`)
/// and everything else with a good response on a kept-alive connection.
fn hostile(bad: Vec<u8>, close: bool) -> RawServer {
    RawServer::start(move |request| match (request.path(), close) {
        ("/bad", true) => Reply::WriteThenClose(bad.clone()),
        ("/bad", false) => Reply::Write(bad.clone()),
        _ => Reply::Write(GOOD.to_vec()),
    })
}

/// After the bad responses, a good request must open a connection of its own.
async fn next_request_uses_a_new_connection(client: &Client, server: &RawServer) {
    let bad_attempts = server.requests().len();
    assert_eq!(
        server.accepted(),
        bad_attempts,
        "an attempt reused a connection that saw bad bytes"
    );
    get_ok(client, "good", "ok").await;
    assert_eq!(
        server.accepted(),
        bad_attempts + 1,
        "the bad connection was reused"
    );
    assert_at_rest(client);
}

/// Two different Content-Lengths: a protocol error, and the connection is dropped.
pub async fn hostile_conflicting_content_length(rt: Arc<dyn Runtime>) {
    let bad = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec();
    let server = hostile(bad, false);
    let client = builder(&rt, server.url("/")).build().unwrap();
    let err = client.get("bad").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert_eq!(
        decode_error(&err),
        Some(DecodeError::ConflictingContentLength),
        "{err}"
    );
    next_request_uses_a_new_connection(&client, &server).await;
}

/// A body cut short by the server: an error on the body read.
pub async fn hostile_truncated_body(rt: Arc<dyn Runtime>) {
    body_ends_truncated(&rt, 100, 50).await;
}

/// A Content-Length of a terabyte must not make the client allocate it up
/// front (or abort): the body is read as it comes, and ends truncated.
pub async fn hostile_huge_content_length(rt: Arc<dyn Runtime>) {
    body_ends_truncated(&rt, 1_000_000_000_000, 5000).await;
}

/// A server announces `announced` body bytes, sends `sent`, and closes.
async fn body_ends_truncated(rt: &Arc<dyn Runtime>, announced: u64, sent: usize) {
    let mut bad = format!("HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\n\r\n").into_bytes();
    bad.extend(std::iter::repeat_n(b'z', sent));
    let server = hostile(bad, true);
    let client = builder(rt, server.url("/")).build().unwrap();
    let response = client.get("bad").send().await.unwrap();
    assert_eq!(response.content_length(), Some(announced));
    let err = response.bytes().await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Body | ErrorKind::Protocol),
        "{err}"
    );
    assert_eq!(
        decode_error(&err),
        Some(DecodeError::TruncatedBody),
        "{err}"
    );
    next_request_uses_a_new_connection(&client, &server).await;
}

/// A head with 150 header fields: refused, and the connection is dropped.
pub async fn hostile_header_flood(rt: Arc<dyn Runtime>) {
    let mut bad = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..150 {
        bad.extend_from_slice(format!("X-Flood-{i}: {i}\r\n").as_bytes());
    }
    bad.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
    let server = hostile(bad, false);
    let client = builder(&rt, server.url("/")).build().unwrap();
    let err = client.get("bad").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(
        matches!(decode_error(&err), Some(DecodeError::TooManyHeaders { .. })),
        "{err}"
    );
    next_request_uses_a_new_connection(&client, &server).await;
}

// ---------------------------------------------------------------------------
// 10. Credentials stay with their origin

/// A bearer token (or API key, or token source) set on the client goes to the
/// base origin, and not to an absolute URL on another origin.
pub async fn credentials_stay_with_base_origin(rt: Arc<dyn Runtime>) {
    let base = TestServer::start(|_| respond(200, "base"));
    let other = TestServer::start(|_| respond(200, "other"));
    let client = builder(&rt, base.url("/api/"))
        .bearer_token("s3cr3t")
        .build()
        .unwrap();
    get_ok(&client, "users", "base").await;
    get_ok(&client, &base.url("/absolute-but-same-origin"), "base").await;
    get_ok(&client, &other.url("/elsewhere"), "other").await;
    let auth = |server: &TestServer| -> Vec<Option<String>> {
        server
            .seen()
            .iter()
            .map(|s| s.header("authorization"))
            .collect()
    };
    let bearer = Some("Bearer s3cr3t".to_owned());
    assert_eq!(auth(&base), [bearer.clone(), bearer]);
    assert_eq!(auth(&other), [None]);
    assert_eq!(base.seen()[0].uri.path(), "/api/users");

    let client = builder(&rt, base.url("/"))
        .api_key(http::HeaderName::from_static("x-api-key"), "k3y")
        .build()
        .unwrap();
    get_ok(&client, "k", "base").await;
    get_ok(&client, &other.url("/k"), "other").await;
    assert_eq!(base.seen()[2].header("x-api-key").as_deref(), Some("k3y"));
    assert_eq!(other.seen()[1].header("x-api-key"), None);

    let fetches = Arc::new(AtomicUsize::new(0));
    let client = builder(&rt, base.url("/"))
        .token_source(counting_source(&fetches, |_| Duration::from_secs(600)))
        .build()
        .unwrap();
    get_ok(&client, &other.url("/t"), "other").await;
    assert_eq!(other.seen()[2].header("authorization"), None);
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        0,
        "a token was fetched for another origin"
    );
    get_ok(&client, "t", "base").await;
    assert_eq!(
        base.seen()[3].header("authorization").as_deref(),
        Some("Bearer t1")
    );
}
