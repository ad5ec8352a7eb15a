//! A typical service's outbound HTTP: one Breakwater client per upstream,
//! built once at start-up, cloned into every task that needs it, each with
//! the settings its upstream deserves, and hooks that feed `tracing` logs.
//!
//! Two upstreams, both played by the embedded demo API:
//! - **users**, a fast internal service: tight timeouts, a large pool, many
//!   calls in flight, an API key;
//! - **payments**, a slow partner API: relaxed timeouts, few calls in
//!   flight, OAuth2 tokens, automatic idempotency keys (the upstream honours
//!   them, so a timed-out POST is retried without a double charge) and a
//!   failure-rate breaker.
//!
//! Separate clients mean separate pools, breakers, retry budgets and latency
//! windows: an outage of payments cannot exhaust the connections or trip the
//! breaker that users depend on.
//!
//! ```sh
//! cargo run --release --example api_client
//! ```

#[path = "support/demo_api.rs"]
mod demo_api;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use breakwater::core::policy::breaker::{BreakerConfig, FailureRateRule};
use breakwater::core::policy::idempotency::IdempotencyConfig;
use breakwater::core::pool::PoolConfig;
use breakwater::oauth2::ClientCredentials;
use breakwater::runtime::Runtime;
use breakwater::{Client, ClientBuilder, Error, RequestInfo, ResponseInfo};
use http::header::HeaderName;
use serde::Deserialize;

/// The service's upstreams: cheap to clone, shared by every task.
#[derive(Clone)]
struct Upstreams {
    users: Client,
    payments: Client,
}

/// Logs every response head of `upstream` with `tracing` (errors as
/// warnings), and every retry as it is sent. Hooks run on the calling task
/// and must not block: a log line is fine, a database write is not.
fn logged(builder: ClientBuilder, upstream: &'static str) -> ClientBuilder {
    builder
        .on_request(move |info: &RequestInfo<'_>| {
            if info.attempt > 1 {
                tracing::info!(
                    upstream,
                    "{} {} retry, attempt {} (pooled connection: {})",
                    info.method,
                    info.url.path(),
                    info.attempt,
                    info.reused_connection
                );
            }
        })
        .on_response(move |info: &ResponseInfo<'_>| {
            let ms = info.elapsed.as_secs_f64() * 1e3;
            let (method, path, status) = (info.method, info.url.path(), info.status);
            if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
                tracing::warn!(upstream, "{method} {path} -> {status} in {ms:.1} ms");
            } else {
                tracing::info!(upstream, "{method} {path} -> {status} in {ms:.1} ms");
            }
        })
}

impl Upstreams {
    fn new(runtime: Arc<dyn Runtime>, users_url: &str, payments_url: &str) -> Result<Self, Error> {
        // A fast internal service: fail fast, keep many connections warm.
        let users = logged(Client::builder(runtime.clone(), users_url), "users")
            .api_key(HeaderName::from_static("x-api-key"), "users-api-key")
            .connect_timeout(Duration::from_millis(500))
            .attempt_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .max_concurrency(32)
            .configure(|c| {
                c.with_pool(
                    PoolConfig::default()
                        .with_max_connections(40)
                        .with_max_idle_per_origin(32),
                )
            })
            .build()?;

        // The token endpoint gets its own client (own pool and breaker).
        let tokens = Client::builder(runtime.clone(), payments_url)
            .timeout(Duration::from_secs(10))
            .build()?;
        let credentials = ClientCredentials::new(
            tokens,
            "oauth/token",
            demo_api::CLIENT_ID,
            demo_api::CLIENT_SECRET,
        );

        // A slow partner API: patient timeouts, few calls at once, keys on
        // every POST, and a breaker that judges by failure rate.
        let payments = logged(Client::builder(runtime, payments_url), "payments")
            .token_source(credentials)
            .connect_timeout(Duration::from_secs(2))
            .attempt_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .max_concurrency(4)
            .configure(|c| {
                c.with_idempotency(IdempotencyConfig::default().with_auto_keys(true))
                    .with_breaker(
                        BreakerConfig::default()
                            .with_failure_rate(Some(FailureRateRule::default())),
                    )
            })
            .build()?;
        Ok(Upstreams { users, payments })
    }
}

#[derive(Debug, Deserialize)]
struct User {
    name: String,
}

#[derive(Debug, Deserialize)]
struct Post {
    title: String,
}

#[derive(Debug, Deserialize)]
struct Charge {
    charge: String,
}

/// One request handler of the service: reads from users, writes to payments.
async fn checkout(up: Upstreams, user_id: u32) -> Result<String, Error> {
    let user: User = up.users.get_json(&format!("users/{user_id}")).await?;
    let paths: Vec<String> = (1..=3)
        .map(|i| format!("posts/{}", user_id * 10 + i))
        .collect();
    let posts: Vec<Post> = up.users.try_get_many(&paths).await?;
    let charge: Charge = up
        .payments
        .post("payments")
        .json(&serde_json::json!({ "user": user_id, "amount_cents": 1000 + user_id }))
        .send()
        .await?
        .error_for_status()
        .await?
        .json()
        .await?;
    Ok(format!(
        "{} read {} posts (first: {:?}) and paid: {}",
        user.name,
        posts.len(),
        posts[0].title,
        charge.charge
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .init();

    let api = demo_api::DemoApi::start_with_token_lifetime(Duration::from_secs(300));
    let runtime: Arc<dyn Runtime> = Arc::new(breakwater_tokio::TokioRuntime::new());
    // In a real service these come from configuration.
    let up = Upstreams::new(runtime, &api.base_url(), &api.base_url())?;

    // Five request handlers at once, all sharing the two clients.
    let handlers: Vec<_> = (1..=5)
        .map(|user_id| tokio::spawn(checkout(up.clone(), user_id)))
        .collect();
    for handler in handlers {
        match handler.await? {
            Ok(line) => println!("{line}"),
            Err(err) => println!("checkout failed after {} attempts: {err}", err.attempts()),
        }
    }

    for (name, client) in [("users", &up.users), ("payments", &up.payments)] {
        let stats = client.stats();
        if let Some(o) = stats.origin(client.base_origin()) {
            println!(
                "{name:>8}: p95 {}, breaker {:?}, {} connections opened, {} idle, retry budget {}",
                o.p95.map_or("n/a".to_owned(), |p| format!(
                    "{:.1} ms",
                    p.as_secs_f64() * 1e3
                )),
                o.breaker,
                o.pool.opened,
                o.pool.idle,
                o.retry_budget
            );
        }
    }
    let charges = api.charges();
    println!(
        "payments upstream: {} charges from {} requests (every payment's first answer was a 504; \
         the keyed retries were replayed, not charged again); {} token fetch for all of them",
        charges.len(),
        charges.iter().map(|c| c.requests).sum::<usize>(),
        api.token_fetches()
    );
    up.users.close().await;
    up.payments.close().await;
    Ok(())
}
