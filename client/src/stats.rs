//! Gauges and counters for dashboards: pools, breakers, latency, budgets.

use std::time::Duration;

use breakwater_core::call::Engine;
use breakwater_core::policy::breaker::BreakerStateKind;
use breakwater_core::pool::PoolStats;
use breakwater_core::{Instant, Origin};

use crate::io::Connection;

/// A snapshot of a client's state, from [`Client::stats`](crate::Client::stats).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientStats {
    /// The pool across all origins.
    pub pool: PoolStats,
    /// Calls holding a concurrency permit.
    pub in_flight: usize,
    /// Calls waiting for a concurrency permit.
    pub waiting_for_permit: usize,
    /// One entry per origin the client has talked to, in first-use order.
    pub origins: Vec<OriginStats>,
    /// Calls started.
    pub calls: u64,
    /// Attempts sent (originals, retries and transparent replacements).
    pub attempts: u64,
    /// Attempts that were retries of an earlier one.
    pub retries: u64,
    /// Calls that ended in an error before a response was delivered.
    pub failures: u64,
    /// Token requests started (foreground and background refreshes).
    pub token_fetches: u64,
    /// Pooled connections found closed by the server before a request was
    /// written on them, and replaced: not attempts, since nothing was sent.
    pub stale_connections: u64,
}

/// The state of one origin.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OriginStats {
    /// The origin.
    pub origin: Origin,
    /// Its connections: active, idle, connecting, waiting, opened, closed.
    pub pool: PoolStats,
    /// Its circuit breaker's state.
    pub breaker: BreakerStateKind,
    /// The p95 of its recent response times, once there are enough samples.
    pub p95: Option<Duration>,
    /// Recent response times in its window.
    pub latency_samples: usize,
    /// Its retry budget's balance, in retries that could be paid now.
    pub retry_budget: i64,
}

impl ClientStats {
    /// The entry for `origin`, if the client has talked to it.
    pub fn origin(&self, origin: &Origin) -> Option<&OriginStats> {
        self.origins.iter().find(|o| &o.origin == origin)
    }
}

pub(crate) fn snapshot(
    engine: &Engine<Connection>,
    counters: &crate::state::Counters,
    now: Instant,
) -> ClientStats {
    use std::sync::atomic::Ordering::Relaxed;
    let pool = engine.pool();
    let origins = pool
        .origin_ids()
        .filter_map(|id| {
            let health = engine.origin_health(id)?;
            let budget = health.budget();
            Some(OriginStats {
                origin: pool.origin(id)?.clone(),
                pool: pool.origin_stats(id)?,
                breaker: health.breaker().state().kind(),
                p95: health.latency().p95(now),
                latency_samples: health.latency().len(now),
                retry_budget: budget.balance(now) / budget.withdrawal_cost().max(1),
            })
        })
        .collect();
    ClientStats {
        pool: pool.stats(),
        in_flight: engine.concurrency_in_use(),
        waiting_for_permit: engine.concurrency_waiting(),
        origins,
        calls: counters.calls.load(Relaxed),
        attempts: counters.attempts.load(Relaxed),
        retries: counters.retries.load(Relaxed),
        failures: counters.failures.load(Relaxed),
        stale_connections: counters.stale_connections.load(Relaxed),
        token_fetches: engine
            .token_cache()
            .map_or(0, |cache| cache.stats().fetches_started),
    }
}
