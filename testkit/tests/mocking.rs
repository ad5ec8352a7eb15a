//! The tutorial's three respx tests, as Breakwater mock tests on the virtual
//! clock, plus the cost of connection pooling measured in simulated time.

mod common;

use std::time::Duration;

use breakwater::core::call::EngineConfig;
use breakwater::core::pool::PoolConfig;
use breakwater_testkit::{Link, Reply, Sim};
use common::client;
use http::Method;

#[derive(serde::Deserialize, Debug, PartialEq)]
struct User {
    id: u32,
    name: String,
}

#[test]
fn get_returns_json() {
    let mut sim = Sim::new(1);
    let api = sim.mock("https://api.example.com");
    let route = api
        .route(Method::GET, "/users/1")
        .respond(Reply::json(r#"{"id":1,"name":"Leanne Graham"}"#));
    let client = client(&sim, "https://api.example.com/");
    let user: User = sim
        .run(async move { client.get_json("users/1").await })
        .unwrap();
    assert_eq!(
        user,
        User {
            id: 1,
            name: "Leanne Graham".into()
        }
    );
    assert_eq!(route.calls(), 1);
    assert_eq!(route.requests()[0].header("host"), Some("api.example.com"));
}

#[test]
fn retries_503_twice_with_exact_backoff_delays() {
    let mut sim = Sim::new(2);
    // No network latency: the gaps between the server's receipts are exactly the client's backoff.
    sim.set_default_link(Link::rtt(Duration::ZERO));
    let api = sim.mock("https://api.example.com");
    let route = api.route(Method::GET, "/users/1").respond_seq([
        Reply::new(503, "busy"),
        Reply::new(503, "busy"),
        Reply::json(r#"{"id":1,"name":"x"}"#),
    ]);
    let client = client(&sim, "https://api.example.com/");
    let user: User = sim
        .run(async move { client.get_json("users/1").await })
        .unwrap();
    assert_eq!(user.id, 1);
    assert_eq!(route.calls(), 3, "exactly three calls");
    let at: Vec<_> = route.requests().iter().map(|r| r.received_at).collect();
    let first = at[1].saturating_duration_since(at[0]);
    let second = at[2].saturating_duration_since(at[1]);
    println!(
        "backoff delays chosen: {first:?}, {second:?} (seed {})",
        sim.seed()
    );
    // Default backoff without a p95 estimate: floor 1 s; retry n waits floor·2^n + U(0, floor).
    assert!(
        first >= Duration::from_secs(1) && first <= Duration::from_secs(2),
        "{first:?}"
    );
    assert!(
        second >= Duration::from_secs(2) && second <= Duration::from_secs(3),
        "{second:?}"
    );

    // The delays are a function of the seed: the same seed chooses the same ones.
    let mut again = Sim::with_seed(sim.seed());
    again.set_default_link(Link::rtt(Duration::ZERO));
    let api = again.mock("https://api.example.com");
    let route2 = api.route(Method::GET, "/users/1").respond_seq([
        Reply::new(503, "busy"),
        Reply::new(503, "busy"),
        Reply::json(r#"{"id":1,"name":"x"}"#),
    ]);
    let client = breakwater::Client::builder(again.runtime(), "https://api.example.com/")
        .build()
        .unwrap();
    let _: User = again
        .run(async move { client.get_json("users/1").await })
        .unwrap();
    let at2: Vec<_> = route2.requests().iter().map(|r| r.received_at).collect();
    assert_eq!(at, at2);
}

#[test]
fn not_found_raises_without_retry() {
    let mut sim = Sim::new(3);
    let api = sim.mock("https://api.example.com");
    let route = api
        .route(Method::GET, "/users/999")
        .respond(Reply::new(404, r#"{"error":"not found"}"#));
    let client = client(&sim, "https://api.example.com/");
    let err = sim
        .run(async move { client.get_json::<User>("users/999").await })
        .unwrap_err();
    assert_eq!(err.kind(), breakwater::ErrorKind::Status);
    assert_eq!(err.status(), Some(http::StatusCode::NOT_FOUND));
    assert_eq!(err.body_snippet(), Some(r#"{"error":"not found"}"#));
    assert_eq!(route.calls(), 1, "a 404 is never retried");
    assert_eq!(err.attempts(), 1);
}

#[test]
fn unmatched_requests_fail_loudly() {
    let mut sim = Sim::new(4);
    let api = sim.mock("https://api.example.com");
    let client = client(&sim, "https://api.example.com/");
    let status = sim
        .run(async move { client.get("nowhere").send().await.map(|r| r.status()) })
        .unwrap();
    assert_eq!(status, 501);
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| api.assert_all_matched()));
    assert!(panic.is_err(), "an unmatched request must fail the test");
    std::mem::forget(api); // its drop would fail this test on purpose
}

/// 50 sequential GETs over TLS 1.3 with an 80 ms round trip.
fn fifty_sequential_gets(max_idle: usize) -> Duration {
    let mut sim = Sim::new(5);
    sim.set_default_link(Link::rtt(Duration::from_millis(80)));
    let api = sim.mock("https://api.example.com");
    api.route(Method::GET, "/ping").respond(Reply::json("{}"));
    let client = breakwater::Client::builder(sim.runtime(), "https://api.example.com/")
        .configure(|c: EngineConfig| {
            c.with_pool(PoolConfig::default().with_max_idle_per_origin(max_idle))
        })
        .build()
        .unwrap();
    let start = sim.now();
    sim.run(async move {
        for _ in 0..50 {
            client
                .get("ping")
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
        }
    });
    sim.now().saturating_duration_since(start)
}

#[test]
fn pooling_saves_two_round_trips_per_request() {
    let rtt = Duration::from_millis(80);
    let pooled = fifty_sequential_gets(20);
    let unpooled = fifty_sequential_gets(0);
    println!("50 GETs over TLS at 80 ms RTT: pooled {pooled:?}, no reuse {unpooled:?}");
    // Pooled: one TCP and one TLS round trip, then one round trip per request.
    let expected_pooled = rtt * 52;
    // No reuse: every request pays TCP + TLS + the request itself.
    let expected_unpooled = rtt * 150;
    let within = |got: Duration, want: Duration| {
        let (got, want) = (got.as_secs_f64(), want.as_secs_f64());
        (got - want).abs() <= want * 0.03
    };
    assert!(
        within(pooled, expected_pooled),
        "pooled {pooled:?} vs {expected_pooled:?}"
    );
    assert!(
        within(unpooled, expected_unpooled),
        "unpooled {unpooled:?} vs {expected_unpooled:?}"
    );
}

/// Two parts of a test that ask for the same stream name get a stream each,
/// and the run's tape replays both.
#[test]
fn a_stream_asked_for_twice_is_a_second_stream_on_the_tape() {
    let draw = |sim: &Sim| {
        let (mut first, mut second) = (sim.choices("worker"), sim.choices("worker"));
        let first: Vec<u64> = (0..4).map(|_| first.below(1_000)).collect();
        let second: Vec<u64> = (0..4).map(|_| second.u64()).collect();
        (first, second)
    };
    let sim = Sim::with_seed(40);
    let drawn = draw(&sim);
    let tape = sim.tape();
    let names: Vec<&str> = tape.streams().map(|(name, _)| name).collect();
    assert_eq!(names, ["worker", "worker#2"]);
    assert_eq!(draw(&Sim::from_tape(tape)), drawn);
}
