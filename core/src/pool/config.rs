//! The pool's settings: limits for all origins, and per-origin limits that override them.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::Origin;

/// Limits and timeouts of a [`Pool`](super::Pool), with per-origin overrides.
///
/// Limits of zero connections are clamped to one (a pool that can open nothing would turn
/// every request into a pool timeout); every other value is taken as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    max_connections: usize,
    max_connections_per_origin: Option<usize>,
    max_idle_per_origin: usize,
    idle_expiry: Duration,
    max_lifetime: Option<Duration>,
    max_pending: usize,
    pool_timeout: Duration,
    plain_http_forbidden: bool,
    origin_limits: BTreeMap<Origin, OriginLimits>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: 50,
            max_connections_per_origin: None,
            max_idle_per_origin: 20,
            idle_expiry: Duration::from_secs(30),
            max_lifetime: None,
            max_pending: 1024,
            pool_timeout: Duration::from_secs(5),
            plain_http_forbidden: false,
            origin_limits: BTreeMap::new(),
        }
    }
}

impl PoolConfig {
    /// Connections (active, idle and being opened) across all origins. Default 50; at least 1.
    pub fn with_max_connections(mut self, max_connections: usize) -> Self {
        self.max_connections = max_connections.max(1);
        self
    }

    /// Connections per origin unless a profile says otherwise. Default: the total limit;
    /// at least 1.
    pub fn with_max_connections_per_origin(mut self, max_connections: usize) -> Self {
        self.max_connections_per_origin = Some(max_connections.max(1));
        self
    }

    /// Idle connections kept per origin; beyond it the least recently used is closed.
    /// Default 20; 0 disables keep-alive.
    pub fn with_max_idle_per_origin(mut self, max_idle: usize) -> Self {
        self.max_idle_per_origin = max_idle;
        self
    }

    /// How long a connection may sit idle before it is closed instead of reused. Default 30 s.
    pub fn with_idle_expiry(mut self, idle_expiry: Duration) -> Self {
        self.idle_expiry = idle_expiry;
        self
    }

    /// The age (since connected) past which a connection is closed when it next comes back
    /// instead of being reused, so that DNS and scale-out changes are picked up. Default none.
    pub fn with_max_lifetime(mut self, max_lifetime: Option<Duration>) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }

    /// Requests waiting for a connection, across all origins (and per origin unless a profile
    /// says otherwise). Default 1024; 0 refuses instead of queueing.
    pub fn with_max_pending(mut self, max_pending: usize) -> Self {
        self.max_pending = max_pending;
        self
    }

    /// How long a request may wait for a connection or a slot. Default 5 s.
    pub fn with_pool_timeout(mut self, pool_timeout: Duration) -> Self {
        self.pool_timeout = pool_timeout;
        self
    }

    /// Refuse plain `http` origins unless their profile allows it. Default false.
    pub fn with_plain_http_forbidden(mut self, forbidden: bool) -> Self {
        self.plain_http_forbidden = forbidden;
        self
    }

    /// A profile for one origin: its own limits and timeouts, so that a slow partner API
    /// cannot take the slots of a fast internal one. A later call for the same origin
    /// replaces the earlier profile.
    pub fn with_origin_limits(mut self, origin: Origin, limits: OriginLimits) -> Self {
        self.origin_limits.insert(origin, limits);
        self
    }

    /// The total connection limit.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// The total bound on waiting requests.
    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// The limits that apply to `origin`: its profile over the pool-wide defaults.
    pub fn limits_for(&self, origin: &Origin) -> EffectiveLimits {
        let profile = self.origin_limits.get(origin);
        let pick = |f: fn(&OriginLimits) -> Option<usize>, default: usize| {
            profile.and_then(f).unwrap_or(default)
        };
        EffectiveLimits {
            max_connections: pick(
                |p| p.max_connections,
                self.max_connections_per_origin
                    .unwrap_or(self.max_connections),
            )
            .max(1),
            max_idle: pick(|p| p.max_idle, self.max_idle_per_origin),
            max_pending: pick(|p| p.max_pending, self.max_pending),
            idle_expiry: profile
                .and_then(|p| p.idle_expiry)
                .unwrap_or(self.idle_expiry),
            max_lifetime: profile
                .and_then(|p| p.max_lifetime)
                .unwrap_or(self.max_lifetime),
            pool_timeout: profile
                .and_then(|p| p.pool_timeout)
                .unwrap_or(self.pool_timeout),
            plain_http_forbidden: profile
                .and_then(|p| p.plain_http_forbidden)
                .unwrap_or(self.plain_http_forbidden),
        }
    }
}

/// A per-origin profile: each setting left unset inherits the pool-wide value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginLimits {
    max_connections: Option<usize>,
    max_idle: Option<usize>,
    max_pending: Option<usize>,
    idle_expiry: Option<Duration>,
    max_lifetime: Option<Option<Duration>>,
    pool_timeout: Option<Duration>,
    plain_http_forbidden: Option<bool>,
}

impl OriginLimits {
    /// Connections (active, idle and being opened) to this origin; at least 1.
    pub fn with_max_connections(mut self, max_connections: usize) -> Self {
        self.max_connections = Some(max_connections.max(1));
        self
    }

    /// Idle connections kept for this origin.
    pub fn with_max_idle(mut self, max_idle: usize) -> Self {
        self.max_idle = Some(max_idle);
        self
    }

    /// Requests waiting for this origin (the pool-wide bound still applies).
    pub fn with_max_pending(mut self, max_pending: usize) -> Self {
        self.max_pending = Some(max_pending);
        self
    }

    /// Idle expiry for this origin.
    pub fn with_idle_expiry(mut self, idle_expiry: Duration) -> Self {
        self.idle_expiry = Some(idle_expiry);
        self
    }

    /// Maximum connection lifetime for this origin (`None`: connections never age out).
    pub fn with_max_lifetime(mut self, max_lifetime: Option<Duration>) -> Self {
        self.max_lifetime = Some(max_lifetime);
        self
    }

    /// Pool timeout for requests to this origin.
    pub fn with_pool_timeout(mut self, pool_timeout: Duration) -> Self {
        self.pool_timeout = Some(pool_timeout);
        self
    }

    /// Whether a plain `http` origin is refused ([`AcquireError::PlainHttpForbidden`](super::AcquireError::PlainHttpForbidden)).
    pub fn with_plain_http_forbidden(mut self, forbidden: bool) -> Self {
        self.plain_http_forbidden = Some(forbidden);
        self
    }
}

/// The limits in force for one origin, after its profile is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EffectiveLimits {
    /// Connections (active, idle and being opened) to this origin.
    pub max_connections: usize,
    /// Idle connections kept.
    pub max_idle: usize,
    /// Requests waiting.
    pub max_pending: usize,
    /// Idle time after which a connection is closed.
    pub idle_expiry: Duration,
    /// Age after which a connection is closed instead of reused.
    pub max_lifetime: Option<Duration>,
    /// How long a request may wait.
    pub pool_timeout: Duration,
    /// Plain `http` is refused.
    pub plain_http_forbidden: bool,
}
