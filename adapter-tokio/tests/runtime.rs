//! The testkit's transport scenarios (connect, TLS, timers on real sockets)
//! on `TokioRuntime`, and what only tokio has: a paused clock, runtimes
//! built and driven apart.

use breakwater_testkit::conformance::sockets::transport as common;

use std::sync::Arc;
use std::time::Duration;

use breakwater_tokio::TokioRuntime;

fn runtime() -> Arc<dyn breakwater::runtime::Runtime> {
    Arc::new(TokioRuntime::new())
}

/// A current-thread tokio runtime's `block_on`, as `#[tokio::test]` uses.
fn block_on(future: breakwater::runtime::BoxFuture<'static, ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

breakwater_testkit::socket_transport_tests!(runtime(), block_on);

/// Transports move between worker threads of a multi-threaded runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_custom_ca_on_multi_thread_runtime() {
    common::tls_custom_ca(runtime()).await;
}

/// Under tokio's paused clock `now()` and `sleep_until` move together: a
/// 30-second sleep completes at once and the clock reads 30 s later. No
/// real time passes (`start_paused`); that is what users testing their own
/// code on tokio's paused clock rely on.
#[tokio::test(start_paused = true)]
async fn sleep_follows_the_tokio_clock() {
    common::sleep_reaches_deadline(runtime(), Duration::from_secs(30)).await;
}

/// A runtime built outside tokio works once its futures are polled inside.
#[test]
fn runtime_built_outside_tokio() {
    let rt = runtime();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(common::plain_tcp_round_trip(rt));
}

/// A pooled connection keeps its timer between requests; a client used from
/// a second runtime must still time out by that runtime's clock. Runtime A
/// makes the connection and stays alive but is never driven again; runtime B
/// (paused clock: no real waiting) reuses it against a server that stops
/// answering, and the attempt timeout must fire there.
#[test]
fn a_connection_reused_from_another_runtime_still_times_out() {
    use std::io::{Read, Write};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request).unwrap();
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .unwrap();
        // Read the second request and never answer; return when the client hangs up.
        while socket.read(&mut request).is_ok_and(|n| n > 0) {}
    });

    let runtime_a = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = runtime_a.block_on(async {
        let client = breakwater_tokio::client(base)
            .attempt_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let body = client.get("first").send().await.unwrap().bytes().await;
        assert_eq!(&body.unwrap()[..], b"ok");
        client
    });

    let runtime_b = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let outcome = runtime_b.block_on(async {
        let call = client.get("second").attempts(1).send();
        tokio::time::timeout(Duration::from_secs(60), call).await
    });
    let error = outcome
        .expect("the attempt timeout fired on the runtime that waited")
        .unwrap_err();
    assert_eq!(
        error.kind(),
        breakwater::ErrorKind::Timeout(breakwater::TimeoutPhase::Response)
    );
    assert_eq!(client.stats().pool.opened, 1, "the connection was reused");
    drop(client);
    server.join().unwrap();
    drop(runtime_a);
}

/// An upload to a server that stopped reading is cut once no byte could be
/// written for the attempt timeout, well before the call's deadline: a
/// stalled upload holds its connection for the attempt timeout, no longer.
/// The server accepts and never reads, so a body larger than the socket
/// buffers stalls; on tokio's paused clock the stall costs no real time.
#[tokio::test(start_paused = true)]
async fn a_stalled_upload_ends_after_the_attempt_timeout_without_progress() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let (release, released) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        // Hold the connection without reading until the test is done.
        let _ = released.recv();
        drop(socket);
    });
    let client = breakwater_tokio::client(base)
        .attempt_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let body = bytes::Bytes::from(vec![b'x'; 32 << 20]);
    // A POST without a key: not resent, so one stall is the whole call.
    let error = client.post("upload").body(body).send().await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(
        error.kind(),
        breakwater::ErrorKind::Timeout(breakwater::TimeoutPhase::Send),
        "{error}"
    );
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(2),
        "the stalled upload ended after {waited:?}"
    );
    drop(client);
    release.send(()).unwrap();
    server.join().unwrap();
}
