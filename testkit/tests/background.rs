//! Work that belongs to no call, on the virtual clock: idle connections of a
//! quiet client expire on time, and a token refresh runs beside the call that
//! noticed it was due instead of in front of it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use breakwater::auth::TokenResponse;
use breakwater::core::pool::PoolConfig;
use breakwater::core::Instant;
use breakwater_testkit::{Reply, Sim};
use http::Method;

const SECOND: Duration = Duration::from_secs(1);
const MILLI: Duration = Duration::from_millis(1);

/// A quiet client closes an idle connection when it expires, with no call
/// to prompt it: the pool and the server both see it go within one timer
/// tick (here, the link's one-way half millisecond) of the expiry.
#[test]
fn a_quiet_client_closes_an_expired_idle_connection_on_time() {
    let mut sim = Sim::new(161);
    let api = sim.mock("http://api.test");
    api.route(Method::GET, "/ping").respond(Reply::json("{}"));
    let server = api.server();
    let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .configure(|c| c.with_pool(PoolConfig::default().with_idle_expiry(20 * SECOND)))
        .build()
        .unwrap();
    let runtime = sim.runtime();
    let (idle_at, seen) = sim.run(async move {
        let response = client.get("ping").send().await.unwrap();
        response.bytes().await.unwrap();
        let idle_at = runtime.now();
        let mut seen = Vec::new();
        for offset in [20 * SECOND - MILLI, 20 * SECOND + MILLI] {
            runtime.sleep_until(idle_at + offset).await;
            let stats = client.stats();
            seen.push((
                stats.pool.idle,
                stats.pool.closed,
                server.open_connections(),
            ));
        }
        (idle_at, seen)
    });
    assert!(idle_at > Instant::ZERO);
    assert_eq!(seen[0], (1, 0, 1), "closed before its expiry");
    assert_eq!(
        seen[1],
        (0, 1, 0),
        "still open after its expiry on a quiet client"
    );
}

/// The housekeeper watches the earliest timer: a connection that goes idle
/// with a shorter expiry than the one being watched (another origin's
/// profile) still closes on time.
#[test]
fn an_earlier_expiry_wakes_the_housekeeper() {
    use breakwater::core::call::OriginProfile;
    use breakwater::core::pool::OriginLimits;
    let mut sim = Sim::new(162);
    let slow = sim.mock("http://slow.test");
    slow.route(Method::GET, "/").respond(Reply::json("{}"));
    let fast = sim.mock("http://fast.test");
    fast.route(Method::GET, "/").respond(Reply::json("{}"));
    let fast_server = fast.server();
    let client = breakwater::Client::builder(sim.runtime(), "http://slow.test/")
        .configure(|c| c.with_pool(PoolConfig::default().with_idle_expiry(600 * SECOND)))
        .profile(
            "http://fast.test",
            OriginProfile::default()
                .with_limits(OriginLimits::default().with_idle_expiry(5 * SECOND)),
        )
        .build()
        .unwrap();
    let runtime = sim.runtime();
    let open = sim.run(async move {
        client
            .get("http://slow.test/")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        // The housekeeper now sleeps until the slow origin's 600 s expiry.
        runtime.sleep_until(runtime.now() + SECOND).await;
        client
            .get("http://fast.test/")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let idle_at = runtime.now();
        runtime.sleep_until(idle_at + 5 * SECOND + MILLI).await;
        fast_server.open_connections()
    });
    assert_eq!(open, 0, "the 5 s expiry waited for the 600 s one");
}

/// A token source whose fetches take `delay` each, hand out `t1`, `t2`, ...
/// with the lifetimes `lifetimes` gives, and never answer the fetches that
/// `hangs` names.
fn slow_tokens(
    sim: &Sim,
    delay: Duration,
    lifetime: Duration,
    hangs: &'static [usize],
) -> (impl breakwater::auth::TokenSource, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    let runtime = sim.runtime();
    let source = move || {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        let runtime = runtime.clone();
        async move {
            if hangs.contains(&n) {
                std::future::pending::<()>().await;
            }
            runtime.sleep_until(runtime.now() + delay).await;
            Ok(TokenResponse::new(format!("t{n}").into(), Some(lifetime)))
        }
    };
    (source, fetches)
}

/// With a valid token inside its refresh window, the call that notices it
/// takes exactly as long as any other call: the token endpoint's 5 s are
/// spent beside it, and the next call after the refresh carries the new token.
#[test]
fn a_background_refresh_does_not_hold_the_call_that_starts_it() {
    let mut sim = Sim::new(163);
    let api = sim.mock("http://api.test");
    let me = api.route(Method::GET, "/me").respond(Reply::json("{}"));
    let (source, fetches) = slow_tokens(&sim, 5 * SECOND, 100 * SECOND, &[]);
    let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .token_source(source)
        // Every call reuses one connection, so that durations compare.
        .configure(|c| c.with_pool(PoolConfig::default().with_idle_expiry(600 * SECOND)))
        .build()
        .unwrap();
    let runtime = sim.runtime();
    let durations = sim.run(async move {
        let mut durations = Vec::new();
        // t=0: no token yet, so this call waits for the first fetch.
        // t=30: a fresh token. t=70: inside the refresh window (the last
        // 50 s of a 100 s token, fetched at 0). t=80: after the refresh.
        for at in [0, 30, 70, 80] {
            runtime.sleep_until(Instant::ZERO + at * SECOND).await;
            let started = runtime.now();
            client
                .get("me")
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            durations.push(runtime.now().saturating_duration_since(started));
        }
        durations
    });
    // It also opens the connection, one round trip more than the others.
    assert_eq!(
        durations[0],
        5 * SECOND + durations[1] + MILLI,
        "the first call waits for a token"
    );
    assert_eq!(
        durations[2], durations[1],
        "the call that started the refresh waited for it"
    );
    assert_eq!(durations[3], durations[1]);
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    let seen: Vec<String> = me
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        seen,
        ["Bearer t1", "Bearer t1", "Bearer t1", "Bearer t2"],
        "the refreshed token was not used"
    );
}

/// A background refresh whose token endpoint never answers holds no call,
/// is given up by the client's total timeout (30 s), and is handed back, so
/// the first call after the old token expires starts a fetch that works.
#[test]
fn a_hanging_background_refresh_is_given_up_and_handed_back() {
    let mut sim = Sim::new(38);
    let api = sim.mock("http://api.test");
    api.route(Method::GET, "/me").respond(Reply::json("{}"));
    // The second fetch (the first refresh) never answers.
    let (source, fetches) = slow_tokens(&sim, Duration::ZERO, 100 * SECOND, &[2]);
    let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .token_source(source)
        .build()
        .unwrap();
    let runtime = sim.runtime();
    let statuses = sim.run(async move {
        let mut statuses = Vec::new();
        // 55 s starts the refresh that hangs; 60 s is still inside the old
        // token's life; 95 s is past its expiry and the hang's 30 s limit.
        for at in [0, 55, 60, 95] {
            runtime.sleep_until(Instant::ZERO + at * SECOND).await;
            let started = runtime.now();
            let status = client.get("me").send().await.map(|r| r.status());
            let took = runtime.now().saturating_duration_since(started);
            statuses.push((
                status.map(|s| s.as_u16()).map_err(|e| e.to_string()),
                took < SECOND,
            ));
        }
        statuses
    });
    assert_eq!(
        statuses,
        [
            (Ok(200), true),
            (Ok(200), true),
            (Ok(200), true),
            (Ok(200), true)
        ]
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 3);
}

/// A pooled connection the server closed while idle is found before the
/// request is written: it is no attempt, no hook hears of it, and the
/// stats count it as what it was.
#[test]
fn a_connection_found_closed_before_writing_is_not_an_attempt() {
    use breakwater_testkit::ServerConfig;
    let mut sim = Sim::new(164);
    let api = sim.mock("http://api.test");
    api.route(Method::GET, "/ping").respond(Reply::json("{}"));
    api.server().set_config(ServerConfig {
        idle_timeout: Some(5 * SECOND),
        ..ServerConfig::default()
    });
    let announced = Arc::new(AtomicUsize::new(0));
    let counted = announced.clone();
    let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .configure(|c| c.with_pool(PoolConfig::default().with_idle_expiry(60 * SECOND)))
        .on_request(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let runtime = sim.runtime();
    let stats = sim.run(async move {
        client
            .get("ping")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        // The server closes the idle connection at 5 s; the client keeps it 60 s.
        runtime.sleep_until(runtime.now() + 10 * SECOND).await;
        let response = client.get("ping").send().await.unwrap();
        assert_eq!(response.attempts(), 1);
        client.stats()
    });
    assert_eq!(
        announced.load(Ordering::SeqCst),
        2,
        "on_request fired for the dead connection"
    );
    assert_eq!(stats.attempts, 2);
    assert_eq!(stats.stale_connections, 1);
    assert_eq!(sim.connects(), 2);
}

/// `stats()` tells the breaker's state at the moment it is read: an open
/// breaker whose interval has passed is half-open, with no call to move it.
#[test]
fn stats_show_the_breaker_as_it_is_when_read() {
    use breakwater::core::policy::breaker::{BreakerConfig, BreakerStateKind};
    let mut sim = Sim::new(165);
    let api = sim.mock("http://api.test");
    api.route(Method::GET, "/down")
        .respond(Reply::new(503, "down"));
    let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .configure(|c| {
            c.with_breaker(
                BreakerConfig::default()
                    .with_consecutive_failures(Some(2))
                    .with_open_interval(30 * SECOND),
            )
        })
        .build()
        .unwrap();
    let runtime = sim.runtime();
    let (open, later) = sim.run(async move {
        for _ in 0..2 {
            let _ = client.get("down").attempts(1).send().await;
        }
        let open = client.stats().origins[0].breaker;
        runtime.sleep_until(runtime.now() + 31 * SECOND).await;
        (open, client.stats().origins[0].breaker)
    });
    assert_eq!(open, BreakerStateKind::Open);
    assert_eq!(later, BreakerStateKind::HalfOpen, "stats kept a stale Open");
}

/// One 429 with `Retry-After: 120` holds the origin's retries back, but it
/// does not turn another path's 503 into a rate-limited error: that 503 is
/// delivered at once, unretried, while the 429's own call is rate limited
/// with the server's wait as a `Duration`.
#[test]
fn the_retry_after_gate_never_makes_another_calls_5xx_rate_limited() {
    let mut sim = Sim::new(166);
    let api = sim.mock("http://api.test");
    let export = api
        .route(Method::GET, "/export")
        .respond(Reply::new(429, "slow down").header("retry-after", "120"));
    let users = api
        .route(Method::GET, "/users")
        .respond(Reply::new(503, "busy"));
    let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .build()
        .unwrap();
    let runtime = sim.runtime();
    let (limited, users_status, took) = sim.run(async move {
        let limited = client.get("export").send().await.unwrap_err();
        let started = runtime.now();
        let users = client
            .get("users")
            .send()
            .await
            .map(|r| r.status().as_u16());
        let took = runtime.now().saturating_duration_since(started);
        (limited, users, took)
    });
    assert_eq!(
        limited.kind(),
        breakwater::ErrorKind::RateLimited,
        "{limited}"
    );
    assert_eq!(limited.retry_after(), Some(120 * SECOND));
    assert_eq!(limited.status().map(|s| s.as_u16()), Some(429));
    assert_eq!(
        users_status.unwrap(),
        503,
        "the gate turned an unrelated 503 into an error"
    );
    assert_eq!(users.calls(), 1, "the gated 503 was retried");
    assert_eq!(export.calls(), 1);
    assert!(took < SECOND, "the gated call waited {took:?}");
}

/// A chunked body whose trailer holds a malformed line, followed by
/// silence, fails as soon as the line arrives, not at the body timeout; a
/// response head that is not HTTP fails its GET at once, sent once.
#[test]
fn malformed_responses_fail_at_once() {
    use breakwater_testkit::Fault;
    let mut sim = Sim::new(167);
    let api = sim.mock("http://api.test");
    api.route(Method::GET, "/trailer")
        .respond(Reply::json("{}").fault(Fault::MalformedTrailer));
    let garbage = api
        .route(Method::GET, "/garbage")
        .respond(Reply::json("{}").fault(Fault::MalformedHead));
    let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .body_timeout(60 * SECOND)
        .build()
        .unwrap();
    let runtime = sim.runtime();
    let (trailer, garbage_error, took) = sim.run(async move {
        let started = runtime.now();
        let response = client.get("trailer").send().await.unwrap();
        let trailer = response.bytes().await.unwrap_err();
        let garbage = client.get("garbage").send().await.unwrap_err();
        (
            trailer,
            garbage,
            runtime.now().saturating_duration_since(started),
        )
    });
    assert!(
        took < SECOND,
        "a malformed response was waited on for {took:?}"
    );
    assert!(trailer.to_string().contains("trailer"), "{trailer}");
    assert_eq!(
        garbage_error.kind(),
        breakwater::ErrorKind::Protocol,
        "{garbage_error}"
    );
    assert_eq!(garbage.calls(), 1, "a malformed response was retried");
}

/// The runtime of a simulation, counting the background tasks it is asked to spawn.
struct CountingSpawns {
    inner: Arc<dyn breakwater::runtime::Runtime>,
    spawned: Arc<AtomicUsize>,
}

impl breakwater::runtime::Runtime for CountingSpawns {
    fn connect(
        &self,
        target: breakwater::runtime::ConnectTarget,
    ) -> breakwater::runtime::BoxFuture<
        'static,
        Result<breakwater::runtime::BoxTransport, breakwater::runtime::ConnectError>,
    > {
        self.inner.connect(target)
    }

    fn sleep_until(&self, deadline: Instant) -> breakwater::runtime::BoxFuture<'static, ()> {
        self.inner.sleep_until(deadline)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn wall_clock(&self) -> std::time::SystemTime {
        self.inner.wall_clock()
    }

    fn random_seed(&self) -> u64 {
        self.inner.random_seed()
    }

    fn spawn(&self, task: breakwater::runtime::BoxFuture<'static, ()>) {
        self.spawned.fetch_add(1, Ordering::SeqCst);
        self.inner.spawn(task)
    }
}

/// A housekeeper that ended after a quiet minute is followed by one that
/// starts afresh: a busy client again gets one housekeeper, not one per call.
#[test]
fn a_housekeeper_after_a_quiet_minute_is_not_one_per_call() {
    let mut sim = Sim::new(168);
    let api = sim.mock("http://api.test");
    api.route(Method::GET, "/ping").respond(Reply::json("{}"));
    let spawned = Arc::new(AtomicUsize::new(0));
    let runtime: Arc<dyn breakwater::runtime::Runtime> = Arc::new(CountingSpawns {
        inner: sim.runtime(),
        spawned: spawned.clone(),
    });
    let client = breakwater::Client::builder(runtime.clone(), "http://api.test/")
        .configure(|c| c.with_pool(PoolConfig::default().with_idle_expiry(5 * SECOND)))
        .build()
        .unwrap();
    let counted = spawned.clone();
    let spawns_during_burst = sim.run(async move {
        client
            .get("ping")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        // The connection expires at 5 s; the housekeeper then looks for a
        // minute, finds nothing, and ends.
        runtime.sleep_until(runtime.now() + 120 * SECOND).await;
        let before = counted.load(Ordering::SeqCst);
        for _ in 0..20 {
            client
                .get("ping")
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
        }
        counted.load(Ordering::SeqCst) - before
    });
    assert!(
        spawns_during_burst <= 1,
        "{spawns_during_burst} housekeepers for 20 calls"
    );
}

/// An upload whose body stream is slow to produce, but whose server reads
/// everything at once, is not a stalled upload: the wait for the caller's
/// stream does not count against the server.
#[test]
fn a_slow_body_stream_is_not_a_stalled_server() {
    let mut sim = Sim::new(169);
    let api = sim.mock("http://api.test");
    let upload = api
        .route(Method::POST, "/upload")
        .respond(Reply::json("{}"));
    let client = breakwater::Client::builder(sim.runtime(), "http://api.test/")
        .attempt_timeout(10 * SECOND)
        .timeout(120 * SECOND)
        .build()
        .unwrap();
    let runtime = sim.runtime();
    let status = sim.run(async move {
        let pieces = futures_lite::stream::unfold(0u32, move |n| {
            let runtime = runtime.clone();
            async move {
                if n == 3 {
                    return None;
                }
                // Each piece takes the caller 15 s to produce.
                runtime.sleep_until(runtime.now() + 15 * SECOND).await;
                Some((Ok(bytes::Bytes::from(vec![b'x'; 100])), n + 1))
            }
        });
        client
            .post("upload")
            .body_stream(pieces)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    });
    assert_eq!(status, Ok(200));
    assert_eq!(upload.requests()[0].body.len(), 300);
}
