//! The cache's settings, and [`Secret`], the type every token value is kept in.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------

/// A secret string (access token, API key, client secret) that never prints itself.
///
/// `Debug` shows `Secret(<redacted>)`; there is no `Display` and no `PartialEq` (a
/// comparison would invite non-constant-time checks). Read the value with
/// [`Secret::expose`], at the one place that writes it into a request. Cloning is cheap
/// (a reference count), so leases can carry the token without copying it.
///
/// ```
/// use breakwater_core::policy::auth::Secret;
///
/// let secret = Secret::new("hunter2");
/// assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
/// assert_eq!(secret.expose(), "hunter2");
/// ```
#[derive(Clone)]
pub struct Secret(Arc<str>);

/// An OAuth 2.0 access token (or any bearer credential): a [`Secret`].
pub type AccessToken = Secret;

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<Arc<str>>) -> Secret {
        Secret(value.into())
    }

    /// The secret value. Call this only where the value is written into a request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret::new(value)
    }
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// When tokens are refreshed and how failures pause fetching. See the module docs for the
/// timeline these settings shape.
///
/// ```
/// use breakwater_core::policy::auth::TokenCacheConfig;
/// use std::time::Duration;
///
/// let config = TokenCacheConfig::default()
///     .with_refresh_before(Duration::from_secs(120))
///     .with_max_token_age(Duration::from_secs(600));
/// assert_eq!(config.refresh_before(), Duration::from_secs(120));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenCacheConfig {
    refresh_before: Duration,
    expiry_margin: Duration,
    max_token_age: Duration,
    retry_cooldown: Duration,
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        TokenCacheConfig {
            refresh_before: Duration::from_secs(60),
            expiry_margin: Duration::from_secs(10),
            max_token_age: Duration::from_secs(3600),
            retry_cooldown: Duration::from_secs(1),
        }
    }
}

impl TokenCacheConfig {
    /// The smallest accepted `max_token_age`: below it every token without `expires_in`
    /// would be expired before it could be used.
    pub const MIN_MAX_TOKEN_AGE: Duration = Duration::from_secs(1);

    /// How long before the end of its lifetime a token is refreshed in the background
    /// (default 60 s). Whatever the setting, a token is never refreshed before half its
    /// lifetime has passed.
    pub fn with_refresh_before(mut self, refresh_before: Duration) -> Self {
        self.refresh_before = refresh_before;
        self
    }

    /// How long before the end of its lifetime a token stops being handed out (default
    /// 10 s, golang/oauth2's expiry delta), capped at a quarter of the lifetime so that a
    /// short-lived token is not born expired. Zero uses tokens until the last nanosecond.
    pub fn with_expiry_margin(mut self, expiry_margin: Duration) -> Self {
        self.expiry_margin = expiry_margin;
        self
    }

    /// Lifetime assumed for a token whose response carried no (or a zero) `expires_in`
    /// (default 1 h). Values below [`Self::MIN_MAX_TOKEN_AGE`] are raised to it.
    pub fn with_max_token_age(mut self, max_token_age: Duration) -> Self {
        self.max_token_age = max_token_age.max(Self::MIN_MAX_TOKEN_AGE);
        self
    }

    /// After a retryable fetch failure, how long callers without a usable token fail at
    /// once instead of starting another fetch (default 1 s; zero lets the next caller fetch
    /// right away).
    pub fn with_retry_cooldown(mut self, retry_cooldown: Duration) -> Self {
        self.retry_cooldown = retry_cooldown;
        self
    }

    /// See [`Self::with_refresh_before`].
    pub fn refresh_before(&self) -> Duration {
        self.refresh_before
    }

    /// See [`Self::with_expiry_margin`].
    pub fn expiry_margin(&self) -> Duration {
        self.expiry_margin
    }

    /// See [`Self::with_max_token_age`].
    pub fn max_token_age(&self) -> Duration {
        self.max_token_age
    }

    /// See [`Self::with_retry_cooldown`].
    pub fn retry_cooldown(&self) -> Duration {
        self.retry_cooldown
    }
}
