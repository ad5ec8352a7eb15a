//! The engine's settings: every policy's configuration, per-origin profiles, and the errors
//! a configuration can be refused with.

use std::fmt;
use std::time::Duration;

use crate::policy::auth::TokenCacheConfig;
use crate::policy::backoff::BackoffPolicy;
use crate::policy::breaker::{BreakerConfig, BreakerConfigError};
use crate::policy::budget::{BudgetConfigError, RetryBudgetConfig};
use crate::policy::idempotency::IdempotencyConfig;
use crate::policy::latency::LatencyConfig;
use crate::policy::retry::RetryPolicy;
use crate::pool::{OriginLimits, PoolConfig};
use crate::proxy::ProxyChoice;
use crate::redirect::RedirectPolicy;
use crate::Origin;

#[cfg(doc)]
use super::Engine;

/// Every policy of an [`Engine`], with their defaults (docs/spec/call.md#defaults).
///
/// | setting | default |
/// |---|---|
/// | `max_concurrency` | 20 calls in flight (below the pool's 50 connections) |
/// | `total_timeout` | 30 s per call, all attempts and waits included |
/// | `attempt_timeout` | 10 s from connection obtained to response headers |
/// | `connect_timeout` | 5 s |
/// | `redirects` | followed, up to 10 hops, never from `https` to `http` |
/// | `retry`, `backoff`, `breaker`, `budget`, `latency`, `pool`, `idempotency` | their modules' defaults |
/// | `tokens` | none (no authenticated calls) |
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Pool limits and timeouts.
    pub pool: PoolConfig,
    /// Attempts, retried statuses, Retry-After cap, "do not retry" headers.
    pub retry: RetryPolicy,
    /// Backoff delays.
    pub backoff: BackoffPolicy,
    /// Idempotency-key header and automatic keys.
    pub idempotency: IdempotencyConfig,
    /// The per-origin breaker.
    pub breaker: BreakerConfig,
    /// The per-origin retry budget.
    pub budget: RetryBudgetConfig,
    /// The per-origin latency window.
    pub latency: LatencyConfig,
    /// The token cache, for calls marked authenticated.
    pub tokens: Option<TokenCacheConfig>,
    /// Calls in flight at once; at least 1.
    pub max_concurrency: usize,
    /// A call's total deadline, from its start.
    pub total_timeout: Duration,
    /// An attempt's timeout, from the connection obtained to the response headers.
    pub attempt_timeout: Duration,
    /// The time allowed to open a connection.
    pub connect_timeout: Duration,
    /// How redirects are followed (the driver follows them; the rule is
    /// [`redirect::decide`](crate::redirect::decide)).
    pub redirects: RedirectPolicy,
    /// Origins with settings of their own (see [`OriginProfile`]).
    pub profiles: Vec<(Origin, OriginProfile)>,
}

/// Settings one origin uses instead of the engine's: httpx's `mounts`, so
/// that a slow partner API gets its own limits, timeouts and breaker and
/// cannot take the capacity or the patience meant for a fast internal one.
///
/// Every field left `None` falls back to the engine's setting. Pool limits
/// (connections, idle, pending, pool timeout, forbidding plain `http`) are
/// the pool's [`OriginLimits`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct OriginProfile {
    /// Connection limits and the pool timeout for this origin.
    pub limits: Option<OriginLimits>,
    /// This origin's breaker settings.
    pub breaker: Option<BreakerConfig>,
    /// A call's total deadline.
    pub total_timeout: Option<Duration>,
    /// An attempt's timeout.
    pub attempt_timeout: Option<Duration>,
    /// The connect timeout.
    pub connect_timeout: Option<Duration>,
    /// How redirects from this origin's responses are followed.
    pub redirects: Option<RedirectPolicy>,
    /// Whether this origin is reached through a proxy, whatever the
    /// client's proxy settings say.
    pub proxy: Option<ProxyChoice>,
}

impl OriginProfile {
    /// Connection limits and the pool timeout for this origin.
    pub fn with_limits(mut self, limits: OriginLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// This origin's breaker settings.
    pub fn with_breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// A call's total deadline.
    pub fn with_total_timeout(mut self, timeout: Duration) -> Self {
        self.total_timeout = Some(timeout);
        self
    }

    /// An attempt's timeout.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// The connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How redirects from this origin's responses are followed.
    pub fn with_redirects(mut self, redirects: RedirectPolicy) -> Self {
        self.redirects = Some(redirects);
        self
    }

    /// Reaches this origin directly or through this proxy, whatever the
    /// client's proxy settings say.
    pub fn with_proxy(mut self, proxy: ProxyChoice) -> Self {
        self.proxy = Some(proxy);
        self
    }
}

/// The timeouts in force for one origin.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timeouts {
    pub(super) total: Duration,
    pub(super) attempt: Duration,
    pub(super) connect: Duration,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            pool: PoolConfig::default(),
            retry: RetryPolicy::default(),
            backoff: BackoffPolicy::default(),
            idempotency: IdempotencyConfig::default(),
            breaker: BreakerConfig::default(),
            budget: RetryBudgetConfig::default(),
            latency: LatencyConfig::default(),
            tokens: None,
            max_concurrency: 20,
            total_timeout: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            redirects: RedirectPolicy::default(),
            profiles: Vec::new(),
        }
    }
}

impl EngineConfig {
    /// Gives `origin` settings of its own.
    pub fn with_profile(mut self, origin: Origin, profile: OriginProfile) -> Self {
        if let Some(limits) = profile.limits.clone() {
            self.pool = self.pool.with_origin_limits(origin.clone(), limits);
        }
        self.profiles.retain(|(o, _)| *o != origin);
        self.profiles.push((origin, profile));
        self
    }

    pub(super) fn profile(&self, origin: &Origin) -> Option<&OriginProfile> {
        self.profiles
            .iter()
            .find(|(o, _)| o == origin)
            .map(|(_, p)| p)
    }

    /// How redirects from `origin`'s responses are followed: its profile's
    /// policy, else the engine's.
    pub fn redirects_for(&self, origin: &Origin) -> RedirectPolicy {
        self.profile(origin)
            .and_then(|p| p.redirects)
            .unwrap_or(self.redirects)
    }

    /// A call's total deadline for `origin`: its profile's, else the engine's.
    pub fn total_timeout_for(&self, origin: &Origin) -> Duration {
        self.profile(origin)
            .and_then(|p| p.total_timeout)
            .unwrap_or(self.total_timeout)
    }

    /// How redirects are followed.
    pub fn with_redirects(mut self, redirects: RedirectPolicy) -> Self {
        self.redirects = redirects;
        self
    }

    /// The pool's configuration.
    pub fn with_pool(mut self, pool: PoolConfig) -> Self {
        self.pool = pool;
        self
    }
    /// The retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
    /// The backoff policy.
    pub fn with_backoff(mut self, backoff: BackoffPolicy) -> Self {
        self.backoff = backoff;
        self
    }
    /// The idempotency-key settings.
    pub fn with_idempotency(mut self, idempotency: IdempotencyConfig) -> Self {
        self.idempotency = idempotency;
        self
    }
    /// The breaker settings (one breaker per origin).
    pub fn with_breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }
    /// The retry budget settings (one budget per origin).
    pub fn with_budget(mut self, budget: RetryBudgetConfig) -> Self {
        self.budget = budget;
        self
    }
    /// The latency window settings (one window per origin).
    pub fn with_latency(mut self, latency: LatencyConfig) -> Self {
        self.latency = latency;
        self
    }
    /// A token cache for authenticated calls.
    pub fn with_tokens(mut self, tokens: Option<TokenCacheConfig>) -> Self {
        self.tokens = tokens;
        self
    }
    /// Calls in flight at once (clamped to at least 1).
    pub fn with_max_concurrency(mut self, max: usize) -> Self {
        self.max_concurrency = max.max(1);
        self
    }
    /// A call's total deadline.
    pub fn with_total_timeout(mut self, timeout: Duration) -> Self {
        self.total_timeout = timeout;
        self
    }
    /// An attempt's timeout.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }
    /// The connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

/// A setting of [`EngineConfig`] that its policy rejects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineConfigError {
    /// The breaker configuration is invalid.
    Breaker(BreakerConfigError),
    /// The retry budget configuration is invalid.
    Budget(BudgetConfigError),
}

impl fmt::Display for EngineConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineConfigError::Breaker(e) => write!(f, "invalid breaker configuration: {e}"),
            EngineConfigError::Budget(e) => write!(f, "invalid retry budget: {e}"),
        }
    }
}

impl std::error::Error for EngineConfigError {}
