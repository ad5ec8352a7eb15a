//! The interim tour: Breakwater's core making its decisions on canned inputs.
//!
//! The client and its runtime adapters are not built yet, so this tour runs no
//! network: it feeds the pure core the bytes and outcomes a flaky upstream
//! would produce, on a virtual clock, and prints what the core decides. Every
//! run prints the same thing, because time and randomness are inputs.
//!
//! Run it with `cargo run --release --example tour`.

use std::time::Duration;

use breakwater_core::auth::{TokenCache, TokenCacheConfig, TokenDecision, TokenResponse};
use breakwater_core::backoff::BackoffPolicy;
use breakwater_core::breaker::{Breaker, BreakerConfig};
use breakwater_core::h1::{RequestContext, ResponseDecoder, ResponseEvent};
use breakwater_core::idempotency::{key_for_call, IdempotencyConfig, KeyWireFormat};
use breakwater_core::latency::{LatencyConfig, LatencyWindow};
use breakwater_core::outcome::{classify, AttemptOutcome, OutcomePolicy};
use breakwater_core::pool::{Acquired, Grant, Pool, PoolConfig};
use breakwater_core::retry::{decide, RequestFacts, RetryPolicy, RetryVerdict};
use breakwater_core::{Instant, Origin};
use bytes::BytesMut;
use http::{Method, StatusCode};

fn main() {
    let seed = 2026;
    let mut rng = fastrand::Rng::with_seed(seed);
    let origin = Origin::from_uri(&"https://api.example.com".parse().unwrap()).unwrap();
    let start = Instant::from_nanos(1_000_000_000);
    println!("Breakwater core tour (seed {seed}, virtual time; no network: the client is not built yet)\n");

    // 1. A response arriving in three reads, decoded without copying the body.
    let wire: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-len",
        b"gth: 31\r\n\r\n{\"id\":1,\"name\":",
        b"\"Leanne Graham\"}",
    ];
    let mut decoder = ResponseDecoder::new(RequestContext::for_method(&Method::GET));
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut reusable = false;
    for read in wire {
        buf.extend_from_slice(read);
        while !decoder.is_done() {
            let Some(event) = decoder.poll_event(&mut buf).expect("a valid response") else {
                break; // wait for the next read
            };
            match event {
                ResponseEvent::Head(head) => print!("GET /users/1 -> {} ", head.status),
                ResponseEvent::Body(piece) => body.extend_from_slice(&piece),
                ResponseEvent::End(end) => reusable = end.is_reusable(),
            }
        }
    }
    let body = String::from_utf8(body).unwrap();
    let name = body
        .split("\"name\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or("?");
    println!("User: {name} (connection reusable: {reusable})");

    // 2. A pool of 20 connections serving a batch of 20 concurrent GETs, then 20 more.
    let mut pool: Pool<u32> = Pool::new(PoolConfig::default().with_max_connections(20));
    let id = pool.origin_id(&origin);
    let mut opened = 0;
    for round in 0..2 {
        let mut held = Vec::new();
        for _ in 0..20 {
            match pool.acquire(id, None, start).expect("admitted") {
                Acquired::Ready(Grant::Idle { conn, value }) => held.push((conn, value)),
                Acquired::Ready(Grant::Connect(reservation)) => {
                    opened += 1;
                    held.push((
                        pool.handle_connected(reservation, opened, start).unwrap(),
                        opened,
                    ));
                }
                Acquired::Queued(_) => unreachable!("20 slots for 20 calls"),
            }
        }
        for (conn, value) in held {
            pool.handle_released(conn, value, true, start).unwrap();
        }
        println!(
            "batch {}: 20 GETs, 0 failures, TCP connections opened so far: {opened}",
            round + 1
        );
    }

    // 3. 503, 503, 200: two retries with backoff whose floor follows the p95.
    let mut window = LatencyWindow::new(LatencyConfig::default());
    for i in 0..50u64 {
        window.record(start, Duration::from_millis(120 + (i * 37) % 900));
    }
    let p95 = window.p95(start);
    let backoff = BackoffPolicy::default();
    println!(
        "\nlatency window: p95 {:?} -> backoff floor {:?}",
        p95.unwrap(),
        backoff.floor(p95)
    );
    let policy = RetryPolicy::default();
    let outcomes = OutcomePolicy::default();
    let get = RequestFacts {
        idempotent: true,
        keyed: false,
        body_replayable: true,
    };
    let mut ledger = policy.ledger();
    let mut now = start;
    for status in [503u16, 503, 200] {
        let outcome = AttemptOutcome::Response {
            status: StatusCode::from_u16(status).unwrap(),
            elapsed: Duration::from_millis(80),
        };
        let class = classify(&outcome, &outcomes.context(false, false));
        let verdict = decide(&class, &get, &Default::default(), &ledger);
        match verdict {
            RetryVerdict::Retry(_) => {
                let delay = backoff.delay(ledger.counted_attempts() - 1, p95, None, &mut rng);
                println!(
                    "  attempt {} -> {status}: retry in {delay:.2?}",
                    ledger.counted_attempts()
                );
                now += delay;
                ledger.record(&verdict);
            }
            RetryVerdict::GiveUp(reason) => {
                println!(
                    "  attempt {} -> {status}: done ({reason:?})",
                    ledger.counted_attempts()
                )
            }
        }
    }
    let _ = now;

    // 4. A POST is resent only with a key, and the key never changes.
    let key_config = IdempotencyConfig::default().with_auto_keys(true);
    let key = key_for_call(&key_config, &Method::POST, None, &mut rng);
    let key = key.key().expect("declared upstreams get a generated key");
    println!("\nPOST /payments carries Idempotency-Key {}", key.as_str());
    let reset = AttemptOutcome::ExchangeFailed;
    for keyed in [false, true] {
        let post = RequestFacts {
            idempotent: false,
            keyed,
            body_replayable: true,
        };
        let class = classify(&reset, &outcomes.context(keyed, false));
        let verdict = decide(&class, &post, &Default::default(), &policy.ledger());
        let header = key.header_value(KeyWireFormat::Raw);
        println!(
            "  reset mid-response, {}: {}",
            if keyed {
                format!("keyed ({})", header.to_str().unwrap())
            } else {
                "no key".into()
            },
            match verdict {
                RetryVerdict::Retry(_) => "resent with the same key".to_owned(),
                RetryVerdict::GiveUp(reason) => format!("not resent ({reason:?})"),
            }
        );
    }

    // 5. The breaker: 5 failures open it, it fails fast, probes after 30 s, and closes.
    let mut breaker = Breaker::new(BreakerConfig::default(), rng.fork()).unwrap();
    let mut now = start;
    for _ in 0..5 {
        let permit = breaker.try_acquire(now).unwrap();
        breaker.record(
            now,
            permit,
            breakwater_core::outcome::BreakerEffect::Failure,
        );
        now += Duration::from_millis(100);
    }
    let rejected = breaker.try_acquire(now).unwrap_err();
    println!(
        "\nbreaker after 5 failures: {:?}; next call fails fast: {rejected}",
        breaker.state().kind()
    );
    now = rejected.retry_at.unwrap();
    let probe = breaker.try_acquire(now).unwrap();
    println!(
        "  at +30 s one probe is admitted (probe: {}), state {:?}",
        probe.is_probe(),
        breaker.state().kind()
    );
    breaker.record(now, probe, breakwater_core::outcome::BreakerEffect::Success);
    println!("  the probe succeeds: state {:?}", breaker.state().kind());
    while let Some(transition) = breaker.poll_event() {
        println!(
            "  transition {:?} -> {:?} ({:?})",
            transition.from.kind(),
            transition.to.kind(),
            transition.cause
        );
    }

    // 6. One token fetch for 50 concurrent callers.
    let mut tokens = TokenCache::new(TokenCacheConfig::default());
    let mut fetches = 0;
    let mut ticket = None;
    for _ in 0..50 {
        match tokens.acquire(start) {
            TokenDecision::Fetch(t) => {
                fetches += 1;
                ticket = Some(t);
            }
            TokenDecision::Wait(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let response = TokenResponse::new("s3cr3t".into(), Some(Duration::from_secs(300)));
    tokens
        .handle_fetch_result(start, ticket.unwrap(), Ok(response))
        .unwrap();
    let TokenDecision::Use(lease) = tokens.acquire(start) else {
        panic!()
    };
    println!(
        "\n50 callers on an empty token cache: {fetches} fetch; generation {:?}; Debug shows {:?}",
        lease.generation(),
        lease.token()
    );
}
