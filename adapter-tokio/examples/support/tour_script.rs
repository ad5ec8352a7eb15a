//! The tour itself: every capability of a production API client, run
//! against the embedded demo API ([`crate::demo_api`]) and narrated.
//!
//! It is written against `breakwater::Client` and the `Runtime` trait only,
//! without spawning a task, so the same script runs on tokio (`tour`) and on
//! smol (`tour_smol`): that is the point of the runtime-generic client.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as WallInstant};

use breakwater::core::policy::backoff::BackoffPolicy;
use breakwater::core::policy::breaker::{BreakerConfig, BreakerStateKind};
use breakwater::oauth2::ClientCredentials;
use breakwater::runtime::Runtime;
use breakwater::{Client, ClientBuilder, Error};
use futures_lite::StreamExt;
use http::StatusCode;
use serde::Deserialize;

use crate::demo_api::{self, DemoApi};

/// Any error the tour can meet; it stops the tour with a non-zero exit.
pub type TourError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Deserialize)]
struct User {
    name: String,
}

#[derive(Deserialize)]
struct Post {
    id: u64,
}

#[derive(Deserialize)]
struct Account {
    id: String,
    balance_cents: u64,
}

#[derive(Deserialize)]
struct Event {
    seq: u64,
    kind: String,
}

/// One attempt as the `on_request` / `on_response` hooks saw it.
#[derive(Clone, Debug)]
struct Attempt {
    path: String,
    number: u32,
    sent: WallInstant,
    answer: Option<(StatusCode, WallInstant)>,
}

/// Records every attempt through the client's hooks, so the tour can show
/// the retries and the delays the client chose.
#[derive(Clone, Default)]
struct AttemptLog(Arc<Mutex<Vec<Attempt>>>);

impl AttemptLog {
    fn install(&self, builder: ClientBuilder) -> ClientBuilder {
        let (requests, responses) = (self.clone(), self.clone());
        builder
            .on_request(move |info| {
                requests.0.lock().unwrap().push(Attempt {
                    path: info.url.path().to_owned(),
                    number: info.attempt,
                    sent: WallInstant::now(),
                    answer: None,
                });
            })
            .on_response(move |info| {
                let mut log = responses.0.lock().unwrap();
                let path = info.url.path();
                if let Some(attempt) = log
                    .iter_mut()
                    .rev()
                    .find(|a| a.path == path && a.number == info.attempt && a.answer.is_none())
                {
                    attempt.answer = Some((info.status, WallInstant::now()));
                }
            })
    }

    /// The attempts made to `path`, removed from the log.
    fn take(&self, path: &str) -> Vec<Attempt> {
        let mut log = self.0.lock().unwrap();
        let (taken, kept) = log.drain(..).partition(|a| a.path == path);
        *log = kept;
        taken
    }
}

/// Prints the attempts of one call, with the waits between them;
/// `expected(n)` says what the policy allowed before retry `n` (0-based).
fn print_attempts(
    attempts: &[Attempt],
    note: impl Fn(&Attempt) -> String,
    expected: impl Fn(u32) -> String,
) {
    for (i, attempt) in attempts.iter().enumerate() {
        if i > 0 {
            if let Some((_, answered)) = attempts[i - 1].answer {
                let waited = attempt.sent.saturating_duration_since(answered);
                println!(
                    "{}  ... waited {} ({})",
                    indent(),
                    human(waited),
                    expected(i as u32 - 1)
                );
            }
        }
        let status = match attempt.answer {
            Some((status, _)) => status.to_string(),
            None => "no response".to_owned(),
        };
        println!(
            "{}attempt {} -> {status}{}",
            indent(),
            attempt.number,
            note(attempt)
        );
    }
}

/// A duration as a person reads it.
fn human(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else if d >= Duration::from_millis(10) {
        format!("{} ms", d.as_millis())
    } else if d >= Duration::from_millis(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{} µs", d.as_micros())
    }
}

fn breaker_name(kind: Option<BreakerStateKind>) -> &'static str {
    match kind {
        Some(BreakerStateKind::Closed) => "closed",
        Some(BreakerStateKind::Open) => "OPEN",
        Some(BreakerStateKind::HalfOpen) => "half-open",
        Some(BreakerStateKind::ForcedOpen) => "forced open",
        Some(BreakerStateKind::Disabled) => "disabled",
        Some(_) | None => "?",
    }
}

async fn sleep(runtime: &Arc<dyn Runtime>, duration: Duration) {
    runtime.sleep_until(runtime.now() + duration).await;
}

/// Runs the whole tour against `api` with clients on `runtime`.
pub async fn run(
    runtime: Arc<dyn Runtime>,
    api: &DemoApi,
    runtime_name: &str,
) -> Result<(), TourError> {
    let started = WallInstant::now();
    let base = api.base_url();
    println!("Breakwater tour on {runtime_name}, against the demo API at {base}\n");

    // One client for the upstream, built once and shared by every call.
    // The backoff floor is lowered from the default 0.5–5 s to 0.1–5 s so
    // the tour ends in seconds; everything else is the production default.
    let log = AttemptLog::default();
    let backoff = BackoffPolicy::default()
        .with_base_floor(Duration::from_millis(200))
        .with_floor_bounds(Duration::from_millis(100), Duration::from_secs(5));
    let client = log
        .install(Client::builder(runtime.clone(), base.clone()))
        .timeout(Duration::from_secs(10))
        .max_concurrency(20)
        .configure(|c| c.with_backoff(backoff.clone()))
        .build()?;

    // 1. A single GET, decoded from JSON, with the timings of its phases.
    let response = client.get("users/1").send().await?;
    let timings = *response.timings();
    let user: User = response.error_for_status().await?.json().await?;
    println!(
        "{}User: {}  (new connection in {}, response head after {})",
        label(1, "Single GET"),
        user.name,
        timings.connect.map(human).unwrap_or_else(|| "-".to_owned()),
        human(timings.total),
    );

    // 2. A batch of 20 concurrent GETs, then 20 more on the warm pool.
    let before = api.connections();
    let paths: Vec<String> = (1..=20).map(|i| format!("posts/{i}")).collect();
    let posts: Vec<Result<Post, Error>> = client.get_many(&paths).await;
    let ok = posts.iter().filter(|p| p.is_ok()).count();
    let in_order = posts
        .iter()
        .zip(1..)
        .all(|(p, i)| p.as_ref().is_ok_and(|p| p.id == i));
    println!(
        "{}Fetched {ok} posts, {} failures{}",
        label(2, "Batch of 20 GETs"),
        posts.len() - ok,
        if in_order { ", in input order" } else { "" },
    );
    println!(
        "{}over {} TCP connections: {} new, 1 kept warm by the single GET",
        indent(),
        api.connections(),
        api.connections() - before,
    );
    let before = api.connections();
    let paths: Vec<String> = (21..=40).map(|i| format!("posts/{i}")).collect();
    let more: Vec<Result<Post, Error>> = client.get_many(&paths).await;
    println!(
        "{}20 more: {} ok, {} new connections (the pool reused the warm ones)",
        indent(),
        more.iter().filter(|p| p.is_ok()).count(),
        api.connections() - before,
    );
    // All or nothing: the first error cancels the rest and is returned.
    let all: Result<Vec<User>, Error> = client
        .try_get_many(["users/1", "users/999", "users/2"])
        .await;
    println!(
        "{}all or nothing, users 1, 999, 2: {}",
        indent(),
        match &all {
            Ok(users) => format!("{} users", users.len()),
            Err(err) => format!("Err({err})"),
        }
    );

    // 3. Retries with backoff: /flaky answers 503, 503, then 200.
    let p95 = client
        .stats()
        .origin(client.base_origin())
        .and_then(|o| o.p95);
    let floor = backoff.floor(p95);
    println!(
        "{}GET /flaky; backoff floor {} (from the live p95), retry n waits floor x 2^n + U(0, floor)",
        label(3, "Retry with backoff"),
        human(floor),
    );
    let response = client.get("flaky").send().await?;
    let status = response.status();
    let _ = response.bytes().await?;
    print_attempts(
        &log.take("/flaky"),
        |_| String::new(),
        |n| {
            let earliest = backoff.earliest_delay(n, p95);
            format!("allowed {}–{}", human(earliest), human(earliest + floor))
        },
    );
    println!("{}=> {status} after 2 retries", indent());

    // 4. A 429 with Retry-After: 1 is honoured, never retried sooner.
    let response = client.get("limited").send().await?;
    let status = response.status();
    let _ = response.bytes().await?;
    println!("{}GET /limited", label(4, "Rate limit (429)"));
    print_attempts(
        &log.take("/limited"),
        |a| match a.answer {
            Some((StatusCode::TOO_MANY_REQUESTS, _)) => ", Retry-After: 1".to_owned(),
            _ => String::new(),
        },
        |_| "Retry-After honoured: 1–1.5 s".to_owned(),
    );
    println!("{}=> {status}, no sooner than the server asked", indent());

    // 5. The circuit breaker: its own client, tripping after 3 consecutive
    //    failures and staying open 1 s (defaults: 5 failures, 30 s).
    let breaker_client = Client::builder(runtime.clone(), base.clone())
        .configure(|c| {
            c.with_breaker(
                BreakerConfig::default()
                    .with_consecutive_failures(Some(3))
                    .with_open_interval(Duration::from_secs(1)),
            )
        })
        .build()?;
    let origin = breaker_client.base_origin().clone();
    let breaker = |client: &Client| client.stats().origin(&origin).map(|o| o.breaker);
    println!(
        "{}GET /outage, one attempt per call; the upstream is down, then recovers",
        label(5, "Circuit breaker"),
    );
    for call in 1..=3 {
        let response = breaker_client.get("outage").attempts(1).send().await?;
        let status = response.status();
        let _ = response.bytes().await?;
        println!(
            "{}call {call}: {status} -> breaker {}",
            indent(),
            breaker_name(breaker(&breaker_client))
        );
    }
    let hits = api.outage_hits();
    let t = WallInstant::now();
    let rejected = match breaker_client.get("outage").attempts(1).send().await {
        Ok(response) => {
            return Err(format!("expected a fast failure, got {}", response.status()).into())
        }
        Err(err) => err,
    };
    println!(
        "{}call 4: failed fast in {}, {} requests reached the server: \"{rejected}\"",
        indent(),
        human(t.elapsed()),
        api.outage_hits() - hits,
    );
    let wait = rejected.retry_after().unwrap_or(Duration::from_secs(1));
    sleep(&runtime, wait).await;
    let response = breaker_client.get("outage").attempts(1).send().await?;
    let status = response.status();
    let _ = response.bytes().await?;
    println!(
        "{}{} later, call 5 is the half-open probe: {status} -> breaker {}",
        indent(),
        human(wait),
        breaker_name(breaker(&breaker_client))
    );
    breaker_client.close().await;

    // 6. A POST retried safely: the server charges, then the gateway times
    //    out; the retry carries the same Idempotency-Key, so no double charge.
    println!(
        "{}POST /payments with Idempotency-Key: order-A-1001",
        label(6, "Safe POST retry")
    );
    let payment = serde_json::json!({ "order": "A-1001", "amount_cents": 4200, "currency": "EUR" });
    let response = client
        .post("payments")
        .idempotency_key("order-A-1001")
        .json(&payment)
        .send()
        .await?;
    let replayed = response.headers().contains_key("idempotent-replayed");
    let status = response.status();
    let _ = response.bytes().await?;
    print_attempts(
        &log.take("/payments"),
        |a| match a.answer {
            Some((StatusCode::GATEWAY_TIMEOUT, _)) => " after the server charged".to_owned(),
            Some((s, _)) if s.is_success() && replayed => ", the stored result replayed".to_owned(),
            _ => String::new(),
        },
        |_| "same key on the retry".to_owned(),
    );
    let keyed: Vec<_> = api
        .charges()
        .into_iter()
        .filter(|c| c.key.as_deref() == Some("order-A-1001"))
        .collect();
    println!(
        "{}=> {status}; charges recorded: {} (for {} requests with that key)",
        indent(),
        keyed.len(),
        keyed.iter().map(|c| c.requests).sum::<usize>()
    );
    let unkeyed = client.post("payments").json(&payment).send().await?;
    let unkeyed_attempts = log.take("/payments").len();
    println!(
        "{}without a key the same failure is not resent: {} after {unkeyed_attempts} attempt",
        indent(),
        unkeyed.status()
    );
    drop(unkeyed);

    // 7. Short-lived OAuth2 tokens: one fetch serves many concurrent calls.
    let token_client = Client::builder(runtime.clone(), base.clone()).build()?;
    let oauth = ClientCredentials::new(
        token_client,
        "oauth/token",
        demo_api::CLIENT_ID,
        demo_api::CLIENT_SECRET,
    );
    let accounts = Client::builder(runtime.clone(), base.clone())
        .token_source(oauth)
        .build()?;
    let paths: Vec<String> = (1..=20).map(|i| format!("accounts/{i}")).collect();
    let before = api.token_fetches();
    let first: Vec<Result<Account, Error>> = accounts.get_many(&paths).await;
    let after_first = api.token_fetches() - before;
    println!(
        "{}20 concurrent calls -> {after_first} token fetch ({} ok; account {}: {:.2} EUR)",
        label(7, "Token refresh"),
        first.iter().filter(|r| r.is_ok()).count(),
        first[0].as_ref().map(|a| a.id.as_str()).unwrap_or("?"),
        first[0].as_ref().map(|a| a.balance_cents).unwrap_or(0) as f64 / 100.0,
    );
    // Wait past the token's usable life (three quarters of its lifetime).
    sleep(&runtime, demo_api::TOKEN_LIFETIME.mul_f64(0.8)).await;
    let second: Vec<Result<Account, Error>> = accounts.get_many(&paths).await;
    println!(
        "{}the {} s token expires; 20 more calls -> {} more fetch ({} ok)",
        indent(),
        demo_api::TOKEN_LIFETIME.as_secs(),
        api.token_fetches() - before - after_first,
        second.iter().filter(|r| r.is_ok()).count(),
    );

    // 8. The live p95 and the backoff floor it implies.
    let stats = client.stats();
    let here = stats
        .origin(client.base_origin())
        .ok_or("no stats for the demo API")?;
    println!(
        "{}p95 {} over {} samples -> backoff floor {} (p95 clamped to 0.1–5 s; the default 0.5–5 s gives {})",
        label(8, "Latency"),
        here.p95.map(human).unwrap_or_else(|| "n/a".to_owned()),
        here.latency_samples,
        human(backoff.floor(here.p95)),
        human(BackoffPolicy::default().floor(here.p95)),
    );
    println!(
        "{}breaker {}, retry budget {} retries, pool {} idle / {} active / {} opened",
        indent(),
        breaker_name(Some(here.breaker)),
        here.retry_budget,
        here.pool.idle,
        here.pool.active,
        here.pool.opened,
    );

    // 9. A deadline for the whole call, and a cancelled call that leaks nothing.
    let t = WallInstant::now();
    let timed_out = client
        .get("slow")
        .query(&[("ms", "2000")])
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    println!(
        "{}GET /slow (2 s) with a 300 ms deadline -> {} after {}",
        label(9, "Timeout and cancel"),
        match &timed_out {
            Ok(response) => response.status().to_string(),
            Err(err) => format!("{:?}: {err}", err.kind()),
        },
        human(t.elapsed()),
    );
    let call = client.get("slow").query(&[("ms", "2000")]).send();
    let outcome = futures_lite::future::or(async { Some(call.await) }, async {
        sleep(&runtime, Duration::from_millis(50)).await;
        None
    })
    .await;
    let pool = client
        .stats()
        .origin(client.base_origin())
        .map(|o| o.pool)
        .ok_or("no stats for the demo API")?;
    println!(
        "{}a call dropped after 50 ms{}: pool {} active, {} idle, {} closed, {} opened ({})",
        indent(),
        if outcome.is_none() {
            ""
        } else {
            " (it finished first!)"
        },
        pool.active,
        pool.idle,
        pool.closed,
        pool.opened,
        if pool.opened == (pool.active + pool.idle) as u64 + pool.closed {
            "every connection accounted for"
        } else {
            "ACCOUNTING MISMATCH"
        },
    );

    // 10. An NDJSON stream, record by record, with a progress bar.
    let response = client
        .get("events")
        .query(&[("count", "500")])
        .send()
        .await?
        .error_for_status()
        .await?;
    let total: usize = response
        .headers()
        .get("x-total-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let live = std::io::stdout().is_terminal();
    let mut records = std::pin::pin!(response.ndjson::<Event>());
    let mut count = 0usize;
    let mut last_seq = 0;
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(event) = records.next().await {
        let event = event?;
        count += 1;
        last_seq = event.seq;
        *kinds.entry(event.kind).or_default() += 1;
        if live && count % 20 == 0 {
            print!(
                "\r{}",
                progress(label(10, "Streaming NDJSON"), count, total)
            );
            std::io::stdout().flush()?;
        }
    }
    println!(
        "\r{}",
        progress(label(10, "Streaming NDJSON"), count, total)
    );
    println!(
        "{}{count} records (last seq {last_seq}): {}",
        indent(),
        kinds
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    client.close().await;
    accounts.close().await;
    println!(
        "\nDone in {}: {} requests served, {} TCP connections accepted.",
        human(started.elapsed()),
        api.requests(),
        api.connections()
    );
    Ok(())
}

/// The width of the section titles.
const TITLE: usize = 23;

/// `"3. Retry with backoff  "`, padded to the title column.
fn label(n: u32, title: &str) -> String {
    format!("{:TITLE$}", format!("{n}. {title}"))
}

/// Blank space up to the title column.
fn indent() -> String {
    " ".repeat(TITLE)
}

/// `label [#########-----------] 120/500`
fn progress(label: String, done: usize, total: usize) -> String {
    const WIDTH: usize = 30;
    let filled = (done * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH)
        .min(WIDTH);
    format!(
        "{label}[{}{}] {done}/{total}",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled)
    )
}
