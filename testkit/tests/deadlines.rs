//! A connection keeps one timer from wait to wait instead of arming one per
//! read. These check, on the virtual clock, that every deadline still holds
//! to the instant whichever way it moves from one wait to the next, and that
//! a run of requests arms a handful of timers rather than one per request.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use breakwater::core::Instant;
use breakwater::runtime::{BoxFuture, BoxTransport, ConnectError, ConnectTarget, Runtime};
use breakwater::{ErrorKind, TimeoutPhase};
use breakwater_testkit::{Fault, Link, Reply, RequestBodies, ServerConfig, ServerHandle, Sim};
use common::fetch;
use http::Method;

/// The simulation's runtime, counting the timers the client arms.
struct CountingTimers {
    inner: Arc<dyn Runtime>,
    armed: Arc<AtomicUsize>,
}

impl Runtime for CountingTimers {
    fn connect(
        &self,
        target: ConnectTarget,
    ) -> BoxFuture<'static, Result<BoxTransport, ConnectError>> {
        self.inner.connect(target)
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        self.armed.fetch_add(1, Ordering::SeqCst);
        self.inner.sleep_until(deadline)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn wall_clock(&self) -> SystemTime {
        self.inner.wall_clock()
    }

    fn random_seed(&self) -> u64 {
        self.inner.random_seed()
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.inner.spawn(task)
    }
}

const SECOND: Duration = Duration::from_secs(1);

/// An API whose `/fast` answers at once and whose `/slow` takes an hour,
/// and a client that waits 10 s for a response head.
fn fast_and_slow(sim: &mut Sim) -> breakwater::Client {
    let api = sim.mock("http://api.test");
    api.route(Method::GET, "/fast").respond(Reply::json("{}"));
    api.route(Method::GET, "/slow")
        .respond(Reply::json("{}").delayed(Duration::from_secs(3600)));
    breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .attempt_timeout(10 * SECOND)
        .build()
        .unwrap()
}

/// A GET of `path` under a whole-call `timeout` that must fail.
async fn failing_get(
    client: &breakwater::Client,
    path: &str,
    timeout: Duration,
) -> breakwater::Error {
    client.get(path).timeout(timeout).send().await.unwrap_err()
}

#[test]
fn a_run_of_requests_on_one_connection_arms_a_few_timers_not_one_each() {
    let mut sim = Sim::new(71);
    let api = sim.mock("http://api.test");
    api.route(Method::GET, "/item")
        .respond(Reply::json("{}").delayed(Duration::from_millis(5)));
    let armed = Arc::new(AtomicUsize::new(0));
    let runtime = Arc::new(CountingTimers {
        inner: sim.runtime(),
        armed: armed.clone(),
    });
    let client = breakwater::Client::builder(runtime, "http://api.test/")
        .build()
        .unwrap();
    let requests = 200;
    sim.run(async move {
        for _ in 0..requests {
            assert_eq!(&fetch(&client, "item").await[..], b"{}");
        }
    });
    assert_eq!(sim.connects(), 1);
    // 200 requests at 5 ms take one second: with the 10 s attempt timeout
    // the first timer never fires early, and every wait shares it. The
    // housekeeper adds its own: one for the idle connection's expiry, and a
    // look a second while it finds the connection checked out.
    let armed = armed.load(Ordering::SeqCst);
    assert!(
        armed <= 3 + 2,
        "{armed} timers armed for {requests} requests on one connection"
    );
}

#[test]
fn a_kept_timer_that_fires_early_is_armed_again_for_the_real_deadline() {
    let mut sim = Sim::new(72);
    let client = fast_and_slow(&mut sim);
    let runtime = sim.runtime();
    let (waited, kind) = sim.run(async move {
        // Arms the connection's timer for about t0 + 10 s.
        fetch(&client, "fast").await;
        runtime.sleep_until(runtime.now() + 6 * SECOND).await;
        // This wait's deadline is 10 s from now, after the kept timer's.
        let sent = runtime.now();
        let error = client.get("slow").attempts(1).send().await.unwrap_err();
        (runtime.now() - sent, error.kind())
    });
    assert_eq!(sim.connects(), 1, "the slow call reused the connection");
    assert_eq!(kind, ErrorKind::Timeout(TimeoutPhase::Response));
    assert_eq!(
        waited,
        10 * SECOND,
        "timed out at its own deadline, not the kept timer's"
    );
}

/// A call whose attempts each time out until its deadline comes ends as a
/// deadline error whose kind names what the last attempt timed out on: a
/// slow response here, not just "out of time".
#[test]
fn a_deadline_after_failed_attempts_names_the_last_attempts_timeout() {
    let mut sim = Sim::new(74);
    let client = fast_and_slow(&mut sim);
    let err = sim.run(async move { failing_get(&client, "slow", 15 * SECOND).await });
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout(TimeoutPhase::Response),
        "{err}"
    );
    assert!(err.deadline_exceeded(), "{err}");
    assert!(err.attempts() > 1, "{err}");
}

/// The failure a deadline error carries is the last attempt's own: here the
/// first attempt times out, the second, on another pooled connection, gets
/// a 503, and the deadline comes before a third. The error names the 503,
/// not the first attempt's timeout.
#[test]
fn a_deadline_error_names_the_last_attempt_not_an_earlier_one() {
    let mut sim = Sim::new(75);
    let api = sim.mock("http://api.test");
    api.route(Method::GET, "/warm")
        .respond(Reply::json("{}").delayed(Duration::from_millis(100)));
    api.route(Method::GET, "/flaky").respond_seq([
        Reply::json("{}").delayed(3600 * SECOND),
        Reply::new(503, "busy").delayed(Duration::from_millis(500)),
    ]);
    let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .attempt_timeout(SECOND)
        .build()
        .unwrap();
    let err = sim.run(async move {
        // Two calls at once leave two idle connections in the pool.
        let (a, b) =
            futures_lite::future::zip(client.get("warm").send(), client.get("warm").send()).await;
        let _ = (a.unwrap().bytes().await, b.unwrap().bytes().await);
        client
            .get("flaky")
            .timeout(3 * SECOND)
            .send()
            .await
            .unwrap_err()
    });
    assert_eq!(
        sim.connects(),
        2,
        "the second attempt did not reuse a connection"
    );
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Total), "{err}");
    assert_eq!(
        err.status(),
        Some(http::StatusCode::SERVICE_UNAVAILABLE),
        "{err}"
    );
    assert!(
        std::error::Error::source(&err).is_none(),
        "an earlier attempt's failure is reported: {err}"
    );
}

/// A new connection starts a new attempt: a 503 on the first attempt, then
/// a connect that never completes until the deadline, ends with the
/// connect's failure and no status, not the 503's status beside it.
#[test]
fn a_deadline_error_does_not_mix_two_attempts() {
    let mut sim = Sim::new(76);
    let api = sim.mock("http://api.test");
    api.route(Method::GET, "/flaky")
        .respond(Reply::new(503, "busy").header("connection", "close"));
    let server = api.server();
    let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .build()
        .unwrap();
    let runtime = sim.runtime();
    sim.spawn(async move {
        // After the first answer, before the retry connects.
        runtime
            .sleep_until(Instant::ZERO + Duration::from_millis(20))
            .await;
        server.set_config(ServerConfig {
            stall_connections: true,
            ..server.config()
        });
    });
    let err = sim.run(async move { failing_get(&client, "flaky", 3 * SECOND).await });
    // A connect that never completed, told apart from a slow response.
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout(TimeoutPhase::Connect),
        "{err}"
    );
    assert!(err.deadline_exceeded(), "{err}");
    assert_eq!(err.status(), None, "an earlier attempt's status: {err}");
}

#[test]
fn a_deadline_earlier_than_the_kept_timer_is_honoured() {
    let mut sim = Sim::new(73);
    let client = fast_and_slow(&mut sim);
    let runtime = sim.runtime();
    let (waited, kind) = sim.run(async move {
        fetch(&client, "fast").await;
        // A call whose whole budget is 2 s: its deadline comes before the
        // timer the first call left armed.
        let sent = runtime.now();
        let error = client
            .get("slow")
            .timeout(2 * SECOND)
            .send()
            .await
            .unwrap_err();
        (runtime.now() - sent, error.kind())
    });
    assert_eq!(sim.connects(), 1);
    assert_eq!(kind, ErrorKind::Timeout(TimeoutPhase::Response));
    assert_eq!(waited, 2 * SECOND);
}

#[test]
fn a_stalled_body_times_out_at_the_body_deadline_either_side_of_the_kept_timer() {
    for (body_timeout, attempt_timeout) in [(3, 10), (20, 10)] {
        let mut sim = Sim::new(74);
        let api = sim.mock("http://api.test");
        api.route(Method::GET, "/stall")
            .respond(Reply::new(200, vec![b'x'; 4096]).fault(Fault::StallMidBody));
        let runtime = sim.runtime();
        let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
            .attempt_timeout(attempt_timeout * SECOND)
            .body_timeout(body_timeout * SECOND)
            .build()
            .unwrap();
        let (waited, kind) = sim.run(async move {
            let response = client.get("stall").send().await.unwrap();
            let started = runtime.now();
            let error = response.bytes().await.unwrap_err();
            (runtime.now() - started, error.kind())
        });
        assert_eq!(kind, ErrorKind::Timeout(TimeoutPhase::Body));
        assert_eq!(
            waited,
            body_timeout * SECOND,
            "body timeout {body_timeout} s after an attempt timeout of {attempt_timeout} s"
        );
    }
}

#[test]
fn a_stalled_chunked_body_times_out_as_a_body_timeout() {
    let mut sim = Sim::new(75);
    let api = sim.mock("http://api.test");
    let pieces = vec![bytes::Bytes::from(vec![b'x'; 2048]); 4];
    api.route(Method::GET, "/stall").respond(
        Reply::new(200, "")
            .chunks(pieces)
            .fault(Fault::StallMidBody),
    );
    let runtime = sim.runtime();
    let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .body_timeout(3 * SECOND)
        .build()
        .unwrap();
    let (waited, kind) = sim.run(async move {
        let response = client.get("stall").send().await.unwrap();
        assert_eq!(
            response.content_length(),
            None,
            "chunked: read piece by piece"
        );
        let started = runtime.now();
        let error = response.bytes().await.unwrap_err();
        (runtime.now() - started, error.kind())
    });
    assert_eq!(kind, ErrorKind::Timeout(TimeoutPhase::Body));
    assert_eq!(waited, 3 * SECOND);
}

/// An upload may outlast the attempt timeout (the call's deadline bounds it);
/// the wait for the response head then gets the attempt timeout again from
/// the end of the upload, instead of timing out the moment it begins.
#[test]
fn the_head_wait_after_a_long_upload_gets_its_own_attempt_timeout() {
    let mut sim = Sim::new(76);
    let api = sim.mock("http://api.test");
    let upload = api
        .route(Method::POST, "/upload")
        .respond(Reply::json("{}").delayed(2 * SECOND));
    let runtime = sim.runtime();
    let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .attempt_timeout(10 * SECOND)
        .timeout(60 * SECOND)
        .build()
        .unwrap();
    let (status, took) = sim.run(async move {
        // Three pieces, five seconds apart: the upload takes 15 s.
        let pacer = runtime.clone();
        let pieces = futures_lite::stream::unfold(0, move |n| {
            let pacer = pacer.clone();
            async move {
                if n == 3 {
                    return None;
                }
                pacer.sleep_until(pacer.now() + 5 * SECOND).await;
                Some((Ok(bytes::Bytes::from_static(b"piece")), n + 1))
            }
        });
        let started = runtime.now();
        let response = client.post("upload").body_stream(pieces).send().await;
        (response.map(|r| r.status()), runtime.now() - started)
    });
    assert_eq!(status.unwrap(), 200);
    assert!(took > 15 * SECOND && took < 20 * SECOND, "{took:?}");
    assert_eq!(&upload.requests()[0].body[..], b"piecepiecepiece");
}

/// A link with a window paces a large upload as a socket would: writing
/// takes the transfer time, and the wait for the head starts after it. So a
/// 10 s upload succeeds under a 5 s attempt timeout (with writes that never
/// waited, the head wait would have started at once and timed out).
#[test]
fn a_slow_link_paces_a_large_upload_and_the_head_wait_follows_it() {
    let mut sim = Sim::new(77);
    sim.set_default_link(
        Link::rtt(Duration::from_millis(10))
            .with_bandwidth(100 * 1024)
            .with_window(64 * 1024),
    );
    let api = sim.mock("http://api.test");
    let upload = api
        .route(Method::POST, "/blob")
        .respond(Reply::new(201, "stored"));
    let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .attempt_timeout(5 * SECOND)
        .timeout(60 * SECOND)
        .build()
        .unwrap();
    let started = sim.now();
    // 1 MiB at 100 KiB/s: ten seconds on the wire.
    let body = vec![b'x'; 1 << 20];
    let status = sim.run(async move {
        client
            .post("blob")
            .body(body)
            .send()
            .await
            .map(|r| r.status())
    });
    assert_eq!(status.unwrap(), 201);
    let arrived = upload.requests()[0].received_at - started;
    assert!(
        arrived >= 10 * SECOND && arrived < 11 * SECOND,
        "{arrived:?}"
    );
    assert_eq!(upload.calls(), 1);
}

/// The round trip of the upload scenarios below.
const UPLOAD_RTT: Duration = Duration::from_millis(10);

/// A simulation whose link has a 64 KiB window and whose upstream treats
/// request bodies as `bodies` says.
fn upstream_for_uploads(seed: u64, bodies: RequestBodies) -> (Sim, ServerHandle) {
    let mut sim = Sim::new(seed);
    sim.set_default_link(Link::rtt(UPLOAD_RTT).with_window(64 * 1024));
    let server = sim.server("http://api.test", |_, _| Reply::json("{}"));
    server.set_config(ServerConfig {
        request_bodies: bodies,
        ..ServerConfig::default()
    });
    (sim, server)
}

/// An upstream that reads a request's head and then nothing more: the
/// upload fills the window and waits, and the attempt timeout without
/// progress ends it (a named send timeout), not the call's deadline: a
/// stalled upload holds its connection for the attempt timeout, no longer.
#[test]
fn an_upload_to_an_upstream_that_stopped_reading_ends_after_the_attempt_timeout() {
    let (mut sim, server) = upstream_for_uploads(78, RequestBodies::StopAfterHead);
    let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .attempt_timeout(5 * SECOND)
        .timeout(20 * SECOND)
        .build()
        .unwrap();
    let runtime = sim.runtime();
    let (error, took) = sim.run(async move {
        let started = runtime.now();
        let result = client.post("orders").body(vec![0u8; 1 << 20]).send().await;
        (result.err(), runtime.now() - started)
    });
    let error = error.expect("the stalled upload succeeded");
    assert_eq!(
        error.kind(),
        ErrorKind::Timeout(TimeoutPhase::Send),
        "{error}"
    );
    // The window fills within the first second; then 5 s without progress.
    assert!(
        took >= 5 * SECOND && took < 6 * SECOND,
        "ended after {took:?}"
    );
    assert_eq!(server.accepted(), 1, "a POST without a key was sent again");
    let heads = server.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert_eq!(
        (heads[0].method.as_str(), heads[0].target.as_str()),
        ("POST", "/orders")
    );
    assert!(server.requests().is_empty(), "its body never arrived");
}

/// The same stalled upload with a method that may be retried: the core ends
/// the call at its deadline, and the error still says the request was being
/// sent, not only that time ran out.
#[test]
fn a_retried_upload_cut_by_the_deadline_says_it_was_still_sending() {
    let (mut sim, _server) = upstream_for_uploads(80, RequestBodies::StopAfterHead);
    let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .timeout(20 * SECOND)
        .build()
        .unwrap();
    let err = sim.run(async move {
        client
            .put("orders")
            .body(vec![0u8; 1 << 20])
            .send()
            .await
            .unwrap_err()
    });
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Total), "{err}");
    assert!(
        err.to_string().contains("still being sent"),
        "the error does not say the upload was cut: {err}"
    );
}

/// An upstream that resets the connection while the client is still
/// uploading: the client's next write fails once the reset arrives, as a
/// socket's does, instead of waiting on a window no one will open. A POST
/// without a key is not sent again; a PUT is.
#[test]
fn a_reset_mid_upload_fails_the_write_and_resends_only_what_is_safe() {
    let (mut sim, server) = upstream_for_uploads(79, RequestBodies::ResetAfterHead);
    let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .timeout(60 * SECOND)
        .build()
        .unwrap();
    let runtime = sim.runtime();
    let outcomes = sim.run(async move {
        let mut outcomes = Vec::new();
        for method in [Method::POST, Method::PUT] {
            let started = runtime.now();
            let err = client
                .request(method, "orders")
                .body(vec![0u8; 1 << 20])
                .send()
                .await
                .unwrap_err();
            outcomes.push((err.kind(), err.attempts(), runtime.now() - started));
        }
        outcomes
    });
    let (post, put) = (outcomes[0], outcomes[1]);
    assert_eq!((post.0, post.1), (ErrorKind::Protocol, 1), "{post:?}");
    // A round trip to connect, then the head reaches the server and the
    // reset comes back: the second round trip.
    assert_eq!(post.2, 2 * UPLOAD_RTT, "{post:?}");
    assert_eq!(put.0, ErrorKind::Protocol, "{put:?}");
    assert!(put.1 > 1, "the PUT was not sent again: {put:?}");
    assert_eq!(server.accepted(), 1 + u64::from(put.1));
}

/// The latency estimate behind the adaptive backoff floor is the upstream's:
/// it counts the wait for the head from the end of the upload, not the
/// upload itself. Twelve 256 KiB uploads over a 1 MiB/s link take a quarter
/// of a second each; the server answers at once.
#[test]
fn the_latency_estimate_leaves_out_the_upload() {
    let mut sim = Sim::new(82);
    sim.set_default_link(
        Link::rtt(UPLOAD_RTT)
            .with_bandwidth(1024 * 1024)
            .with_window(64 * 1024),
    );
    let api = sim.mock("http://api.test");
    api.route(Method::POST, "/blob")
        .respond(Reply::new(201, "stored"));
    let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .build()
        .unwrap();
    let observer = client.clone();
    let runtime = sim.runtime();
    let took = sim.run(async move {
        let started = runtime.now();
        for _ in 0..12 {
            let body = vec![b'x'; 256 * 1024];
            let status = client
                .post("blob")
                .body(body)
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 201);
        }
        runtime.now() - started
    });
    assert!(took >= 3 * SECOND, "{took:?}");
    let p95 = observer.stats().origins[0].p95.expect("twelve samples");
    println!("p95 of the upstream's latency: {p95:?}");
    // The last window's worth (64 KiB, 62.5 ms on the wire) and a round trip.
    assert!(
        p95 > UPLOAD_RTT && p95 < Duration::from_millis(100),
        "p95 {p95:?}"
    );
}
