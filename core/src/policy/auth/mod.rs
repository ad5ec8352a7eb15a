//! Token cache for expiring credentials: refresh early, fetch once for many callers,
//! replace the token a 401 proved bad.
//!
//! One [`TokenCache`] per credential (token endpoint + client id + scope set) decides, for
//! every request that needs a bearer token, whether to use the cached token, to fetch a new
//! one, or to wait for the fetch already running. It never fetches anything itself: the
//! driver performs the token request (an OAuth 2.0 client credentials grant, or a
//! user-supplied token source) and reports what happened. The rules are specified in
//! docs/spec/auth.md; the invariants it keeps are the token invariants of
//! docs/spec/invariants.md (`token-single-flight`, `token-fetches-accounted`,
//! `no-expired-token`, `one-auth-replay`, `no-refresh-thrash`).
//!
//! # A token's timeline
//!
//! A token request is *sent* at `t_sent`; the server answers with a lifetime `L`
//! (`expires_in`). Times are measured from the sending instant on the caller's monotonic
//! clock, which is conservative (the server starts counting later) and immune to
//! wall-clock skew (docs/spec/auth.md#a-tokens-timeline).
//!
//! ```text
//!   t_sent            refresh_at                expires_at      t_sent + L
//!     |---- Fresh ------|-------- Stale ------------|-- unusable --|
//!                       ^ one background refresh    ^ never handed out from here on
//!   refresh_at = t_sent + L − min(refresh_before, L/2)      (60 s early, at most half)
//!   expires_at = t_sent + L − min(expiry_margin, L/4)       (golang/oauth2's 10 s margin)
//! ```
//!
//! So a one-hour token refreshes at 59 min and is usable until 59 min 50 s; a 30 s token
//! refreshes 15 s in and is usable until 22.5 s. While `Stale`, callers proceed with the
//! current token and at most one background refresh runs (docs/spec/auth.md#single-flight).
//! If that refresh fails, the stale token stays in use until `expires_at`
//! (docs/spec/auth.md#fetch-failures).
//!
//! # Defaults ([`TokenCacheConfig`])
//!
//! | setting          | default | rule                                                         |
//! |------------------|---------|--------------------------------------------------------------|
//! | `refresh_before` | 60 s    | as early as the httpx tutorial's client; at most half of L   |
//! | `expiry_margin`  | 10 s    | golang/oauth2's `defaultExpiryDelta`; capped at L/4          |
//! | `max_token_age`  | 1 h     | lifetime of a token without `expires_in`                     |
//! | `retry_cooldown` | 1 s     | pause after a retryable fetch failure (see below)            |
//!
//! # Cases worth spelling out (docs/spec/auth.md#special-cases)
//!
//! * **No `expires_in`, or `expires_in` = 0**: the lifetime is unknown.
//!   There is no proactive refresh; the token is replaced after a 401 or once
//!   `max_token_age` has passed since it was requested. golang/oauth2 treats
//!   `expires_in <= 0` exactly like a missing value, so a zero never makes a token that is
//!   born expired and never starts a refresh loop. Drivers map a negative value to `None`.
//! * **A token that arrives already past its `expires_at`** (the fetch took longer than the
//!   token lives) is never handed out: the fetch fails with the retryable
//!   [`AuthError::ExpiredOnArrival`].
//! * **A token that arrives inside its refresh window** (slow fetch, short lifetime) has its
//!   refresh point moved to halfway through its remaining usable life, so a fresh token is
//!   never `Stale` on receipt (invariant `no-refresh-thrash`) and each token causes at most
//!   one refresh.
//! * **Retryable endpoint errors** (network, timeout, 5xx, 429, 408, `server_error`,
//!   `temporarily_unavailable`, a malformed success body): the retries of *one* token request
//!   (under the token client's own retry policy, backoff and breaker) belong to the driver and
//!   happen inside one fetch. When the fetch finally fails, every caller that waited for it gets
//!   [`AuthError::Unavailable`]; for `retry_cooldown` afterwards a caller without a usable token
//!   fails at once with the same error and no fetch starts; after that the next caller starts a new
//!   fetch (single flight as always). So during an outage the endpoint sees at most one fetch per
//!   fetch duration plus cooldown, and nothing is retried without a caller asking.
//! * **Terminal endpoint errors** (`invalid_request`, `invalid_client`, `invalid_grant`,
//!   `unauthorized_client`, `unsupported_grant_type`, `invalid_scope`, and statuses other
//!   than 5xx/429/408): [`AuthError::Rejected`] reaches every waiter and every later caller
//!   without a usable token; no fetch starts again until [`TokenCache::clear_failure`]
//!   (new credentials). `invalid_request` is terminal too: repeating a malformed request
//!   cannot succeed (google-auth also refuses to retry it). A token that is still usable keeps
//!   being used until its `expires_at`, without refresh (docs/spec/auth.md#fetch-failures).
//! * **A 401** for generation `g` ([`TokenCache::handle_unauthorized`]) discards the cached
//!   token only if it is still `g`; the next lease then has a generation greater than `g`
//!   (docs/spec/auth.md#a-401, invariant `one-auth-replay`). Replaying a request at most once
//!   is the call orchestrator's rule.
//! * **Cancellation**: a fetch abandoned by the driver
//!   ([`TokenCache::handle_fetch_cancelled`]) is neither a failure nor a token; its waiters
//!   resume and one of them starts the next fetch.
//!
//! # Calling contract
//!
//! 1. A request that needs a token calls [`TokenCache::acquire`] and acts on the
//!    [`TokenDecision`]:
//!    * `Use(lease)`: send with [`TokenLease::token`], remembering [`TokenLease::generation`];
//!    * `UseAndRefresh(lease, ticket)`: the same, and start the token request for `ticket`
//!      in the background;
//!    * `Fetch(ticket)`: start the token request; this request waits for it like a waiter
//!      holding [`FetchTicket::wait_ticket`];
//!    * `Wait(wait)`: park until the fetch [`WaitTicket::fetch_id`] is answered, then call
//!      [`TokenCache::resume`] (an early or repeated resume just says `Wait` again);
//!    * `Failed(error)`: fail the request with `error`.
//! 2. Each time the token request leaves the client, report
//!    [`TokenCache::handle_fetch_sent`]; the latest report counts. Without one, the instant
//!    of the `acquire` that issued the ticket is used (earlier, so still conservative).
//! 3. When it ends, report [`TokenCache::handle_fetch_result`] (or
//!    [`TokenCache::handle_fetch_cancelled`]) and wake every request parked on that fetch id.
//! 4. On a 401 from a request sent with generation `g`, call
//!    [`TokenCache::handle_unauthorized`], then acquire again for the one replay.
//!
//! `now` never goes backwards: an earlier `now` is treated as the latest one seen.
//!
//! # Secrets
//!
//! Token values live in [`Secret`] (alias [`AccessToken`]), whose `Debug` prints
//! `Secret(<redacted>)` and which has no `Display`; the value is read only through the
//! explicit [`Secret::expose`]. Every type here that holds a token derives its `Debug`
//! from that, so logging a cache, a lease or a decision never prints a token.
//!
//! # Example
//!
//! ```
//! use breakwater_core::policy::auth::{AccessToken, TokenCache, TokenCacheConfig, TokenDecision,
//!     TokenResponse};
//! use breakwater_core::Instant;
//! use std::time::Duration;
//!
//! let mut cache = TokenCache::new(TokenCacheConfig::default());
//! let t0 = Instant::ZERO;
//! let TokenDecision::Fetch(ticket) = cache.acquire(t0) else { panic!("empty cache fetches") };
//! // A second caller finds the fetch in flight and waits for it.
//! let TokenDecision::Wait(wait) = cache.acquire(t0) else { panic!("single flight") };
//!
//! cache.handle_fetch_sent(&ticket, t0).unwrap();
//! let response = TokenResponse::new(AccessToken::new("s3cr3t"), Some(Duration::from_secs(3600)));
//! cache.handle_fetch_result(t0, ticket, Ok(response)).unwrap();
//!
//! let TokenDecision::Use(lease) = cache.resume(t0, wait) else { panic!("token stored") };
//! assert_eq!(lease.token().expose(), "s3cr3t");
//! assert!(!format!("{lease:?}").contains("s3cr3t"));
//!
//! // 59 minutes in, the token is stale: use it, and refresh once in the background.
//! let later = t0 + Duration::from_secs(59 * 60);
//! assert!(matches!(cache.acquire(later), TokenDecision::UseAndRefresh(..)));
//! assert!(matches!(cache.acquire(later), TokenDecision::Use(_)));
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, InvalidHeaderValue};
use http::StatusCode;

use crate::Instant;

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

// ---------------------------------------------------------------------------------------
// Identifiers, tickets, leases, decisions
// ---------------------------------------------------------------------------------------

/// The number of a token within one cache: 1 for the first token stored, one more for each
/// token after it. A request remembers the generation it was sent with so that a 401 can
/// name the token it proved bad.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct TokenGeneration(u64);

impl TokenGeneration {
    /// A generation from its number (for drivers that persist or log generations).
    pub const fn new(number: u64) -> TokenGeneration {
        TokenGeneration(number)
    }

    /// The generation's number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// The number of a token request within one cache, starting at 1.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct FetchId(u64);

impl FetchId {
    /// The fetch's number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// The right and duty to run the one token request in flight for this credential.
///
/// It must be answered exactly once, with [`TokenCache::handle_fetch_result`] or
/// [`TokenCache::handle_fetch_cancelled`]: until then every caller without a usable token
/// waits. It is neither `Clone` nor `Copy`, so it cannot be answered twice.
#[must_use = "a fetch ticket must be answered, or every waiter waits forever"]
#[derive(Debug, PartialEq, Eq)]
pub struct FetchTicket {
    id: FetchId,
}

impl FetchTicket {
    /// The fetch this ticket runs; callers parked on a [`WaitTicket`] with this id are
    /// woken when it is answered.
    pub fn id(&self) -> FetchId {
        self.id
    }

    /// A place in line behind this very fetch, for the request that got
    /// [`TokenDecision::Fetch`]: after answering the ticket it resumes like any waiter.
    pub fn wait_ticket(&self) -> WaitTicket {
        WaitTicket { fetch: self.id }
    }
}

/// A place in line behind the token request in flight.
#[must_use = "a waiter must resume once the fetch it waits for is answered"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitTicket {
    fetch: FetchId,
}

impl WaitTicket {
    /// The fetch to wait for.
    pub fn fetch_id(&self) -> FetchId {
        self.fetch
    }
}

/// A token handed to one request, with the generation to report if the request gets a 401.
#[derive(Clone, Debug)]
pub struct TokenLease {
    generation: TokenGeneration,
    token: AccessToken,
    expires_at: Instant,
}

impl TokenLease {
    /// The token's generation; pass it to [`TokenCache::handle_unauthorized`] on a 401.
    pub fn generation(&self) -> TokenGeneration {
        self.generation
    }

    /// The token itself.
    pub fn token(&self) -> &AccessToken {
        &self.token
    }

    /// The first instant at which the token must no longer be sent (invariant
    /// `no-expired-token`).
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// Whether a request may still be dispatched with this token at `now`. A driver that
    /// held a lease while waiting (for a connection, say) checks this before sending and
    /// acquires again if it is false.
    pub fn is_usable_at(&self, now: Instant) -> bool {
        now < self.expires_at
    }

    /// The RFC 6750 `Authorization: Bearer <token>` value, marked sensitive so that `http`
    /// and its users keep it out of logs. Fails only if the token holds bytes that a header
    /// may not carry.
    pub fn bearer_header(&self) -> Result<HeaderValue, InvalidHeaderValue> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.token.expose()))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// What a request that needs a token does next (see the calling contract in the module
/// docs).
#[must_use = "the decision says whether to send, fetch, wait or fail"]
#[non_exhaustive]
#[derive(Debug)]
pub enum TokenDecision {
    /// Send with this token.
    Use(TokenLease),
    /// The token is in its refresh window: send with it, and run this background refresh.
    UseAndRefresh(TokenLease, FetchTicket),
    /// No usable token and no fetch in flight: run this fetch (the single flight), then
    /// wait for it like any waiter of [`FetchTicket::id`].
    Fetch(FetchTicket),
    /// A fetch is in flight: wait until it is answered, then [`TokenCache::resume`].
    Wait(WaitTicket),
    /// No token can be had: the endpoint rejected the credential, or the fetch this request
    /// waited for failed, or one failed moments ago.
    Failed(AuthError),
}

/// A successful answer from the token endpoint or token source.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct TokenResponse {
    /// The token.
    pub access_token: AccessToken,
    /// Its lifetime from when the request was sent (`expires_in`); `None` or zero when the
    /// server did not say (then `max_token_age` applies).
    pub expires_in: Option<Duration>,
}

impl TokenResponse {
    /// A response carrying `access_token`, valid for `expires_in` if known.
    pub fn new(access_token: AccessToken, expires_in: Option<Duration>) -> TokenResponse {
        TokenResponse {
            access_token,
            expires_in,
        }
    }
}

/// What [`TokenCache::handle_fetch_result`] did with the answer. Either way the driver
/// wakes every request waiting on that fetch.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchCompletion {
    /// The token is cached under this generation.
    Stored(TokenGeneration),
    /// No token: waiters get this error.
    Failed(AuthError),
}

/// Where the cache stands for a given instant (docs/spec/auth.md#a-tokens-timeline).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenState {
    /// No token and no fetch yet (or the last one was discarded by a 401, a failure or a
    /// cancellation).
    Empty,
    /// No usable token; a fetch is in flight and callers wait for it.
    Fetching,
    /// A usable token before its refresh point.
    Fresh,
    /// A usable token in its refresh window (a background refresh may be in flight).
    Stale,
    /// The cached token reached its `expires_at` and no fetch is in flight.
    Expired,
    /// The endpoint rejected the credential; nothing is fetched until
    /// [`TokenCache::clear_failure`].
    Failed,
}

/// Counters for dashboards and tests.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCacheStats {
    /// Token requests started (including background refreshes).
    pub fetches_started: u64,
    /// Of those, background refreshes of a stale token.
    pub background_refreshes: u64,
    /// Tokens stored.
    pub tokens_stored: u64,
    /// Fetches that ended without a usable token (errors and expired-on-arrival).
    pub fetch_failures: u64,
    /// Fetches the driver abandoned.
    pub fetches_cancelled: u64,
    /// Tokens discarded because a 401 proved them bad.
    pub invalidations: u64,
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// An RFC 6749 §5.2 `error` code from a token endpoint (plus the two retryable codes of
/// RFC 6749 §4.1.2.1 that some token endpoints also send).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OAuthErrorCode {
    /// `invalid_request`: malformed request.
    InvalidRequest,
    /// `invalid_client`: client authentication failed.
    InvalidClient,
    /// `invalid_grant`: the grant or refresh token is invalid, expired or revoked.
    InvalidGrant,
    /// `unauthorized_client`: the client may not use this grant type.
    UnauthorizedClient,
    /// `unsupported_grant_type`.
    UnsupportedGrantType,
    /// `invalid_scope`.
    InvalidScope,
    /// `server_error`: the server failed; retryable.
    ServerError,
    /// `temporarily_unavailable`: overload or maintenance; retryable.
    TemporarilyUnavailable,
    /// Any other code (an extension); classified by the HTTP status it came with. The
    /// text is not kept, so a server cannot smuggle anything into logs through it.
    Other,
}

impl OAuthErrorCode {
    /// Parses an `error` value (ASCII case-insensitive, surrounding whitespace ignored).
    pub fn parse(code: &str) -> OAuthErrorCode {
        const CODES: [(&str, OAuthErrorCode); 8] = [
            ("invalid_request", OAuthErrorCode::InvalidRequest),
            ("invalid_client", OAuthErrorCode::InvalidClient),
            ("invalid_grant", OAuthErrorCode::InvalidGrant),
            ("unauthorized_client", OAuthErrorCode::UnauthorizedClient),
            (
                "unsupported_grant_type",
                OAuthErrorCode::UnsupportedGrantType,
            ),
            ("invalid_scope", OAuthErrorCode::InvalidScope),
            ("server_error", OAuthErrorCode::ServerError),
            (
                "temporarily_unavailable",
                OAuthErrorCode::TemporarilyUnavailable,
            ),
        ];
        let code = code.trim();
        CODES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(code))
            .map_or(OAuthErrorCode::Other, |&(_, parsed)| parsed)
    }

    /// The code as the RFC spells it (`"other"` for an unrecognised one).
    pub const fn as_str(self) -> &'static str {
        match self {
            OAuthErrorCode::InvalidRequest => "invalid_request",
            OAuthErrorCode::InvalidClient => "invalid_client",
            OAuthErrorCode::InvalidGrant => "invalid_grant",
            OAuthErrorCode::UnauthorizedClient => "unauthorized_client",
            OAuthErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorCode::InvalidScope => "invalid_scope",
            OAuthErrorCode::ServerError => "server_error",
            OAuthErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            OAuthErrorCode::Other => "other",
        }
    }
}

/// Why a token request produced no token, as the driver reports it.
///
/// [`TokenFetchError::is_retryable`] splits these into retryable and terminal
/// (docs/spec/auth.md#fetch-failures).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenFetchError {
    /// The endpoint answered with an RFC 6749 §5.2 error body.
    OAuth {
        /// The `error` code.
        code: OAuthErrorCode,
        /// The status it came with, if the driver knows it.
        status: Option<StatusCode>,
    },
    /// The endpoint answered with an error status and no recognisable error body.
    Status(StatusCode),
    /// Connecting, TLS or the exchange failed before a complete response.
    Transport,
    /// No complete response before the token request's deadline.
    Timeout,
    /// A success status whose body was not a usable token response (a proxy's error page,
    /// a truncated body, no `access_token`).
    MalformedResponse,
    /// A user-supplied token source failed; it says whether asking again may help.
    Source {
        /// Whether a later fetch may succeed.
        retryable: bool,
    },
}

impl TokenFetchError {
    /// Classifies an RFC 6749 §5.2 error body by its `error` code and the HTTP status it
    /// came with.
    ///
    /// ```
    /// use breakwater_core::policy::auth::TokenFetchError;
    /// use http::StatusCode;
    ///
    /// assert!(!TokenFetchError::from_oauth_error("invalid_client", Some(StatusCode::UNAUTHORIZED))
    ///     .is_retryable());
    /// assert!(TokenFetchError::from_oauth_error("temporarily_unavailable", None).is_retryable());
    /// ```
    pub fn from_oauth_error(code: &str, status: Option<StatusCode>) -> TokenFetchError {
        TokenFetchError::OAuth {
            code: OAuthErrorCode::parse(code),
            status,
        }
    }

    /// Classifies a failed token response by its status alone.
    pub fn from_status(status: StatusCode) -> TokenFetchError {
        TokenFetchError::Status(status)
    }

    /// Whether a later fetch may succeed: network errors, timeouts, 5xx, 429 and 408,
    /// `server_error`, `temporarily_unavailable` and malformed success bodies. Everything
    /// else (the six RFC 6749 §5.2 codes, other statuses) is terminal.
    pub fn is_retryable(&self) -> bool {
        match *self {
            TokenFetchError::OAuth { code, status } => match code {
                OAuthErrorCode::ServerError | OAuthErrorCode::TemporarilyUnavailable => true,
                OAuthErrorCode::Other => status.is_some_and(status_is_retryable),
                _ => false,
            },
            TokenFetchError::Status(status) => status_is_retryable(status),
            TokenFetchError::Transport
            | TokenFetchError::Timeout
            | TokenFetchError::MalformedResponse => true,
            TokenFetchError::Source { retryable } => retryable,
        }
    }
}

fn status_is_retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

impl fmt::Display for TokenFetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenFetchError::OAuth {
                code,
                status: Some(status),
            } => write!(
                f,
                "token endpoint answered {} (HTTP {})",
                code.as_str(),
                status
            ),
            TokenFetchError::OAuth { code, status: None } => {
                write!(f, "token endpoint answered {}", code.as_str())
            }
            TokenFetchError::Status(status) => write!(f, "token endpoint answered HTTP {status}"),
            TokenFetchError::Transport => f.write_str("token request failed in transport"),
            TokenFetchError::Timeout => f.write_str("token request timed out"),
            TokenFetchError::MalformedResponse => f.write_str("token response was malformed"),
            TokenFetchError::Source { retryable: true } => {
                f.write_str("token source failed (retryable)")
            }
            TokenFetchError::Source { retryable: false } => f.write_str("token source failed"),
        }
    }
}

impl std::error::Error for TokenFetchError {}

/// Why a request gets no token. Carries no token bytes.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// Terminal: the endpoint rejected the credential. Not retried until
    /// [`TokenCache::clear_failure`].
    Rejected(TokenFetchError),
    /// The token request failed in a way a later one may not; see `retry_cooldown`.
    Unavailable(TokenFetchError),
    /// The endpoint issued a token that had expired by the time it arrived (the fetch took
    /// longer than the token lives). Retryable, like [`AuthError::Unavailable`].
    ExpiredOnArrival,
}

impl AuthError {
    /// Whether nothing will be fetched again until [`TokenCache::clear_failure`].
    pub fn is_terminal(&self) -> bool {
        matches!(self, AuthError::Rejected(_))
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Rejected(cause) => write!(f, "credential rejected: {cause}"),
            AuthError::Unavailable(cause) => write!(f, "no token available: {cause}"),
            AuthError::ExpiredOnArrival => f.write_str("token expired before it arrived"),
        }
    }
}

impl std::error::Error for AuthError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AuthError::Rejected(cause) | AuthError::Unavailable(cause) => Some(cause),
            AuthError::ExpiredOnArrival => None,
        }
    }
}

/// Caller misuse of a [`TokenCache`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenCacheError {
    /// The ticket does not name the fetch in flight (it belongs to another cache).
    UnknownTicket {
        /// The ticket's fetch.
        ticket: FetchId,
        /// The fetch actually in flight, if any.
        in_flight: Option<FetchId>,
        /// The state the cache was in.
        state: TokenState,
    },
}

impl fmt::Display for TokenCacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenCacheError::UnknownTicket {
                ticket,
                in_flight,
                state,
            } => write!(
                f,
                "fetch ticket {} is not in flight (in flight: {:?}, state {:?})",
                ticket.get(),
                in_flight.map(FetchId::get),
                state
            ),
        }
    }
}

impl std::error::Error for TokenCacheError {}

// ---------------------------------------------------------------------------------------
// The cache
// ---------------------------------------------------------------------------------------

/// The token cache of one credential. See the module docs for the rules and the calling
/// contract.
#[derive(Debug)]
pub struct TokenCache {
    config: TokenCacheConfig,
    held: Option<HeldToken>,
    in_flight: Option<InFlight>,
    /// A terminal rejection: sticky until `clear_failure`.
    rejected: Option<AuthError>,
    /// The most recent failed fetch, for its waiters and for the retry cooldown. Cleared
    /// when a token is stored.
    last_failure: Option<Failure>,
    last_generation: u64,
    last_fetch: u64,
    latest_now: Instant,
    stats: TokenCacheStats,
}

#[derive(Debug)]
struct HeldToken {
    token: AccessToken,
    generation: TokenGeneration,
    refresh_at: Instant,
    expires_at: Instant,
}

#[derive(Debug)]
struct InFlight {
    id: FetchId,
    /// When the ticket was issued; stands in for the sending instant until one is reported.
    issued_at: Instant,
    sent_at: Option<Instant>,
}

#[derive(Debug)]
struct Failure {
    fetch: FetchId,
    error: AuthError,
    at: Instant,
}

impl TokenCache {
    /// An empty cache.
    pub fn new(config: TokenCacheConfig) -> TokenCache {
        TokenCache {
            config,
            held: None,
            in_flight: None,
            rejected: None,
            last_failure: None,
            last_generation: 0,
            last_fetch: 0,
            latest_now: Instant::ZERO,
            stats: TokenCacheStats::default(),
        }
    }

    /// Decides what a request that needs a token does now.
    pub fn acquire(&mut self, now: Instant) -> TokenDecision {
        let now = self.observe(now);
        if let Some(held) = &self.held {
            if now < held.expires_at {
                let lease = held.lease();
                let refresh_due = now >= held.refresh_at;
                if refresh_due && self.may_start_fetch(now) {
                    self.stats.background_refreshes += 1;
                    return TokenDecision::UseAndRefresh(lease, self.start_fetch(now));
                }
                return TokenDecision::Use(lease);
            }
        }
        if let Some(error) = &self.rejected {
            return TokenDecision::Failed(error.clone());
        }
        if let Some(flight) = &self.in_flight {
            return TokenDecision::Wait(WaitTicket { fetch: flight.id });
        }
        if let Some(failure) = self.cooling_failure(now) {
            return TokenDecision::Failed(failure.error.clone());
        }
        TokenDecision::Fetch(self.start_fetch(now))
    }

    /// Decides again for a request that waited on `wait`: `Wait` while that fetch is still
    /// in flight, its error if it failed, and otherwise what [`Self::acquire`] says.
    pub fn resume(&mut self, now: Instant, wait: WaitTicket) -> TokenDecision {
        let now = self.observe(now);
        if self.in_flight.as_ref().is_some_and(|f| f.id == wait.fetch) {
            return TokenDecision::Wait(wait);
        }
        if let Some(failure) = &self.last_failure {
            if failure.fetch == wait.fetch {
                return TokenDecision::Failed(failure.error.clone());
            }
        }
        self.acquire(now)
    }

    /// Reports that the token request for `ticket` was sent (again) at `now`. Lifetimes are
    /// measured from the latest report.
    pub fn handle_fetch_sent(
        &mut self,
        ticket: &FetchTicket,
        now: Instant,
    ) -> Result<(), TokenCacheError> {
        let now = self.observe(now);
        match &mut self.in_flight {
            Some(flight) if flight.id == ticket.id => {
                flight.sent_at = Some(now);
                Ok(())
            }
            _ => Err(self.unknown_ticket(ticket.id)),
        }
    }

    /// Reports how the token request for `ticket` ended. The driver then wakes every
    /// request waiting on [`FetchTicket::id`].
    pub fn handle_fetch_result(
        &mut self,
        now: Instant,
        ticket: FetchTicket,
        result: Result<TokenResponse, TokenFetchError>,
    ) -> Result<FetchCompletion, TokenCacheError> {
        let now = self.observe(now);
        let flight = self.take_in_flight(&ticket)?;
        let sent_at = flight.sent_at.unwrap_or(flight.issued_at).min(now);
        let error = match result {
            Ok(response) => match self.timeline(sent_at, now, response.expires_in) {
                Some((refresh_at, expires_at)) => {
                    return Ok(FetchCompletion::Stored(self.store(
                        response.access_token,
                        refresh_at,
                        expires_at,
                    )));
                }
                None => AuthError::ExpiredOnArrival,
            },
            Err(cause) if cause.is_retryable() => AuthError::Unavailable(cause),
            Err(cause) => {
                let error = AuthError::Rejected(cause);
                self.rejected = Some(error.clone());
                error
            }
        };
        self.stats.fetch_failures += 1;
        self.last_failure = Some(Failure {
            fetch: flight.id,
            error: error.clone(),
            at: now,
        });
        Ok(FetchCompletion::Failed(error))
    }

    /// Reports that the driver abandoned the token request for `ticket` (its task was
    /// dropped, the client is shutting down). Not a failure: the waiters resume and one of
    /// them starts the next fetch.
    pub fn handle_fetch_cancelled(
        &mut self,
        now: Instant,
        ticket: FetchTicket,
    ) -> Result<(), TokenCacheError> {
        self.observe(now);
        self.take_in_flight(&ticket)?;
        self.stats.fetches_cancelled += 1;
        Ok(())
    }

    /// Reports a 401 from a request sent with `generation`. If the cache still holds that
    /// generation, the token is discarded and `true` is returned: the next acquire fetches
    /// (or waits for the fetch in flight) and its lease has a greater generation. A 401 for
    /// an older (or unknown) generation changes nothing: the cached token is already newer.
    pub fn handle_unauthorized(&mut self, now: Instant, generation: TokenGeneration) -> bool {
        self.observe(now);
        if self
            .held
            .as_ref()
            .is_some_and(|h| h.generation == generation)
        {
            self.held = None;
            self.stats.invalidations += 1;
            return true;
        }
        false
    }

    /// Forgets a terminal rejection and any retry cooldown, for when the credential was
    /// fixed. The cached token and the fetch in flight are kept.
    pub fn clear_failure(&mut self) {
        self.rejected = None;
        self.last_failure = None;
    }

    /// Where the cache stands at `now` (an earlier `now` than seen before counts as the
    /// latest one).
    pub fn state(&self, now: Instant) -> TokenState {
        let now = now.max(self.latest_now);
        match &self.held {
            Some(held) if now < held.expires_at && now >= held.refresh_at => TokenState::Stale,
            Some(held) if now < held.expires_at => TokenState::Fresh,
            _ if self.rejected.is_some() => TokenState::Failed,
            _ if self.in_flight.is_some() => TokenState::Fetching,
            Some(_) => TokenState::Expired,
            None => TokenState::Empty,
        }
    }

    /// The generation of the cached token, usable or not.
    pub fn generation(&self) -> Option<TokenGeneration> {
        self.held.as_ref().map(|h| h.generation)
    }

    /// The fetch in flight, if any.
    pub fn fetch_in_flight(&self) -> Option<FetchId> {
        self.in_flight.as_ref().map(|f| f.id)
    }

    /// The instant the cached token enters its refresh window, if there is a token that
    /// has not reached it yet; a driver may refresh proactively then, without traffic.
    pub fn refresh_at(&self) -> Option<Instant> {
        self.held
            .as_ref()
            .map(|h| h.refresh_at)
            .filter(|&at| at > self.latest_now)
    }

    /// Counters since the cache was created.
    pub fn stats(&self) -> TokenCacheStats {
        self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &TokenCacheConfig {
        &self.config
    }

    // -- transitions ----------------------------------------------------------------------

    fn start_fetch(&mut self, now: Instant) -> FetchTicket {
        self.last_fetch += 1;
        let id = FetchId(self.last_fetch);
        self.in_flight = Some(InFlight {
            id,
            issued_at: now,
            sent_at: None,
        });
        self.stats.fetches_started += 1;
        FetchTicket { id }
    }

    fn store(
        &mut self,
        token: AccessToken,
        refresh_at: Instant,
        expires_at: Instant,
    ) -> TokenGeneration {
        self.last_generation += 1;
        let generation = TokenGeneration(self.last_generation);
        self.held = Some(HeldToken {
            token,
            generation,
            refresh_at,
            expires_at,
        });
        self.last_failure = None;
        self.stats.tokens_stored += 1;
        generation
    }

    fn take_in_flight(&mut self, ticket: &FetchTicket) -> Result<InFlight, TokenCacheError> {
        match self.in_flight.take() {
            Some(flight) if flight.id == ticket.id => Ok(flight),
            other => {
                self.in_flight = other;
                Err(self.unknown_ticket(ticket.id))
            }
        }
    }

    // -- helpers --------------------------------------------------------------------------

    /// Refresh point and expiry of a token requested at `sent_at` and received at `now`, or
    /// `None` if it is already unusable.
    fn timeline(
        &self,
        sent_at: Instant,
        now: Instant,
        expires_in: Option<Duration>,
    ) -> Option<(Instant, Instant)> {
        let (refresh_at, expires_at) = match expires_in.filter(|lifetime| !lifetime.is_zero()) {
            Some(lifetime) => {
                let end = sent_at + lifetime;
                let expires_at = end - self.config.expiry_margin.min(lifetime / 4);
                let refresh_at = end - self.config.refresh_before.min(lifetime / 2);
                (refresh_at.min(expires_at), expires_at)
            }
            // Lifetime unknown: no proactive refresh, replaced at max_token_age.
            None => {
                let expires_at = sent_at + self.config.max_token_age;
                (expires_at, expires_at)
            }
        };
        if expires_at <= now {
            return None;
        }
        // No refresh thrash (invariant `no-refresh-thrash`): a token that arrives inside its
        // refresh window would start a refresh at once, and a slow endpoint would then refresh
        // back to back. Refresh halfway through its remaining usable life instead (the ceiling
        // keeps it after `now`).
        let refresh_at = if refresh_at <= now {
            let remaining = expires_at - now;
            now + (remaining - remaining / 2)
        } else {
            refresh_at
        };
        Some((refresh_at, expires_at))
    }

    fn may_start_fetch(&self, now: Instant) -> bool {
        self.rejected.is_none() && self.in_flight.is_none() && self.cooling_failure(now).is_none()
    }

    /// The retryable failure whose cooldown still runs at `now`.
    fn cooling_failure(&self, now: Instant) -> Option<&Failure> {
        self.last_failure
            .as_ref()
            .filter(|f| !f.error.is_terminal() && now < f.at + self.config.retry_cooldown)
    }

    fn observe(&mut self, now: Instant) -> Instant {
        self.latest_now = self.latest_now.max(now);
        self.latest_now
    }

    fn unknown_ticket(&self, ticket: FetchId) -> TokenCacheError {
        TokenCacheError::UnknownTicket {
            ticket,
            in_flight: self.fetch_in_flight(),
            state: self.state(self.latest_now),
        }
    }
}

impl HeldToken {
    fn lease(&self) -> TokenLease {
        TokenLease {
            generation: self.generation,
            token: self.token.clone(),
            expires_at: self.expires_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "tok-3f9a7c1e-SECRET-bytes";

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn at(s: u64) -> Instant {
        Instant::ZERO + secs(s)
    }

    fn at_ms(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    fn response(lifetime: Option<Duration>) -> Result<TokenResponse, TokenFetchError> {
        Ok(TokenResponse::new(AccessToken::new(TOKEN), lifetime))
    }

    fn expect_fetch(decision: TokenDecision) -> FetchTicket {
        match decision {
            TokenDecision::Fetch(ticket) => ticket,
            other => panic!("expected Fetch, got {other:?}"),
        }
    }

    fn expect_use(decision: TokenDecision) -> TokenLease {
        match decision {
            TokenDecision::Use(lease) => lease,
            other => panic!("expected Use, got {other:?}"),
        }
    }

    /// A cache holding one token of `lifetime`, requested and received at `sent`.
    fn cache_with_token(
        config: TokenCacheConfig,
        sent: Instant,
        lifetime: Option<Duration>,
    ) -> TokenCache {
        let mut cache = TokenCache::new(config);
        let ticket = expect_fetch(cache.acquire(sent));
        cache.handle_fetch_sent(&ticket, sent).unwrap();
        let done = cache.handle_fetch_result(sent, ticket, response(lifetime));
        assert_eq!(done, Ok(FetchCompletion::Stored(TokenGeneration::new(1))));
        cache
    }

    #[test]
    fn an_hour_token_refreshes_sixty_seconds_early_and_expires_ten_seconds_early() {
        let mut cache = cache_with_token(TokenCacheConfig::default(), at(100), Some(secs(3600)));
        assert_eq!(cache.state(at(100 + 3539)), TokenState::Fresh);
        expect_use(cache.acquire(at(100 + 3539)));
        assert_eq!(cache.refresh_at(), Some(at(100 + 3540)));
        assert_eq!(cache.state(at(100 + 3540)), TokenState::Stale);
        match cache.acquire(at(100 + 3540)) {
            TokenDecision::UseAndRefresh(lease, _ticket) => {
                assert_eq!(lease.expires_at(), at(100 + 3590));
            }
            other => panic!("expected UseAndRefresh, got {other:?}"),
        }
        // The refresh is in flight: the stale token is used, no second refresh starts.
        let lease = expect_use(cache.acquire(at(100 + 3589)));
        assert!(lease.is_usable_at(at(100 + 3589)));
        assert!(!lease.is_usable_at(at(100 + 3590)));
        // At expires_at the token is never handed out: callers wait for the refresh.
        assert!(matches!(
            cache.acquire(at(100 + 3590)),
            TokenDecision::Wait(_)
        ));
        assert_eq!(cache.stats().fetches_started, 2);
        assert_eq!(cache.stats().background_refreshes, 1);
    }

    #[test]
    fn a_short_token_refreshes_at_half_its_lifetime() {
        // 30 s token: refresh 15 s in (half-life cap), usable until 22.5 s (margin L/4).
        let mut cache = cache_with_token(TokenCacheConfig::default(), at(0), Some(secs(30)));
        expect_use(cache.acquire(at_ms(14_999)));
        let TokenDecision::UseAndRefresh(lease, _ticket) = cache.acquire(at(15)) else {
            panic!("a 30 s token refreshes 15 s in");
        };
        assert_eq!(lease.expires_at(), at_ms(22_500));
    }

    #[test]
    fn expiry_is_measured_from_the_reported_sending_instant() {
        let mut cache = TokenCache::new(TokenCacheConfig::default());
        let ticket = expect_fetch(cache.acquire(at(0)));
        cache.handle_fetch_sent(&ticket, at(2)).unwrap();
        cache
            .handle_fetch_result(at(5), ticket, response(Some(secs(100))))
            .unwrap();
        // 2 + 100 − min(10, 25) = 92; refresh at 2 + 100 − min(60, 50) = 52.
        let lease = expect_use(cache.acquire(at(5)));
        assert_eq!(lease.expires_at(), at(92));
        assert_eq!(cache.refresh_at(), Some(at(52)));
    }

    #[test]
    fn without_a_sent_report_the_issuing_instant_is_used() {
        let mut cache = TokenCache::new(TokenCacheConfig::default());
        let ticket = expect_fetch(cache.acquire(at(1)));
        cache
            .handle_fetch_result(at(4), ticket, response(Some(secs(100))))
            .unwrap();
        assert_eq!(expect_use(cache.acquire(at(4))).expires_at(), at(91));
    }

    #[test]
    fn a_burst_of_callers_causes_exactly_one_fetch() {
        let mut cache = TokenCache::new(TokenCacheConfig::default());
        let ticket = expect_fetch(cache.acquire(at(0)));
        let waits: Vec<WaitTicket> = (0..10)
            .map(|_| match cache.acquire(at(0)) {
                TokenDecision::Wait(wait) => wait,
                other => panic!("expected Wait, got {other:?}"),
            })
            .collect();
        assert!(waits.iter().all(|w| w.fetch_id() == ticket.id()));
        // An early resume keeps waiting.
        assert!(matches!(
            cache.resume(at(0), waits[0]),
            TokenDecision::Wait(_)
        ));
        cache
            .handle_fetch_result(at(1), ticket, response(Some(secs(600))))
            .unwrap();
        for wait in waits {
            assert_eq!(
                expect_use(cache.resume(at(1), wait)).generation(),
                TokenGeneration::new(1)
            );
        }
        assert_eq!(cache.stats().fetches_started, 1);
    }

    #[test]
    fn debug_output_never_contains_the_token() {
        let mut cache = cache_with_token(TokenCacheConfig::default(), at(0), Some(secs(600)));
        let decision = cache.acquire(at(1));
        let lease = match &decision {
            TokenDecision::Use(lease) => lease.clone(),
            other => panic!("expected Use, got {other:?}"),
        };
        let printed = [
            format!("{decision:?}"),
            format!("{lease:?}"),
            format!("{:#?}", cache),
            format!("{:?}", lease.token()),
            format!("{:?}", TokenResponse::new(AccessToken::new(TOKEN), None)),
            format!("{:?}", lease.bearer_header().unwrap()),
        ];
        for text in printed {
            assert!(!text.contains(TOKEN), "token leaked in {text}");
            assert!(!text.contains("SECRET"), "token leaked in {text}");
        }
        assert_eq!(lease.token().expose(), TOKEN);
        assert!(lease.bearer_header().unwrap().is_sensitive());
        assert_eq!(
            lease.bearer_header().unwrap().to_str().unwrap(),
            format!("Bearer {TOKEN}")
        );
    }

    #[test]
    fn a_401_discards_only_the_generation_it_names() {
        let mut cache = cache_with_token(TokenCacheConfig::default(), at(0), Some(secs(600)));
        let first = expect_use(cache.acquire(at(1))).generation();
        assert!(!cache.handle_unauthorized(at(1), TokenGeneration::new(0)));
        assert!(cache.handle_unauthorized(at(1), first));
        // A second 401 for the same generation (another request that used it) is a no-op.
        assert!(!cache.handle_unauthorized(at(1), first));
        let ticket = expect_fetch(cache.acquire(at(1)));
        assert!(matches!(cache.acquire(at(1)), TokenDecision::Wait(_)));
        cache
            .handle_fetch_result(at(2), ticket, response(Some(secs(600))))
            .unwrap();
        let second = expect_use(cache.acquire(at(2))).generation();
        assert!(second > first);
        // A late 401 from the old generation leaves the new token alone.
        assert!(!cache.handle_unauthorized(at(3), first));
        assert_eq!(expect_use(cache.acquire(at(3))).generation(), second);
        assert_eq!(cache.stats().invalidations, 1);
    }

    #[test]
    fn a_terminal_error_reaches_every_waiter_and_is_not_retried() {
        let mut cache = TokenCache::new(TokenCacheConfig::default());
        let ticket = expect_fetch(cache.acquire(at(0)));
        let TokenDecision::Wait(wait) = cache.acquire(at(0)) else {
            panic!("expected Wait");
        };
        let error =
            TokenFetchError::from_oauth_error("invalid_client", Some(StatusCode::UNAUTHORIZED));
        let done = cache
            .handle_fetch_result(at(1), ticket, Err(error.clone()))
            .unwrap();
        let expected = AuthError::Rejected(error);
        assert_eq!(done, FetchCompletion::Failed(expected.clone()));
        assert!(matches!(cache.resume(at(1), wait), TokenDecision::Failed(e) if e == expected));
        // Much later, still no fetch.
        assert!(matches!(cache.acquire(at(10_000)), TokenDecision::Failed(e) if e.is_terminal()));
        assert_eq!(cache.state(at(10_000)), TokenState::Failed);
        assert_eq!(cache.stats().fetches_started, 1);
        // New credentials: fetching resumes.
        cache.clear_failure();
        let _ticket = expect_fetch(cache.acquire(at(10_000)));
    }

    #[test]
    fn a_terminal_refresh_error_keeps_the_stale_token_until_it_expires() {
        let mut cache = cache_with_token(TokenCacheConfig::default(), at(0), Some(secs(600)));
        let TokenDecision::UseAndRefresh(_, ticket) = cache.acquire(at(540)) else {
            panic!("stale");
        };
        let rejected = TokenFetchError::from_oauth_error("invalid_grant", None);
        cache
            .handle_fetch_result(at(541), ticket, Err(rejected))
            .unwrap();
        expect_use(cache.acquire(at(589)));
        assert!(matches!(cache.acquire(at(590)), TokenDecision::Failed(e) if e.is_terminal()));
        assert_eq!(cache.stats().fetches_started, 2);
    }

    #[test]
    fn a_retryable_error_fails_the_waiters_then_cools_down_then_fetches_again() {
        let mut cache = TokenCache::new(TokenCacheConfig::default());
        let ticket = expect_fetch(cache.acquire(at(0)));
        let TokenDecision::Wait(wait) = cache.acquire(at(0)) else {
            panic!("expected Wait");
        };
        let outage = TokenFetchError::from_status(StatusCode::SERVICE_UNAVAILABLE);
        cache
            .handle_fetch_result(at(5), ticket, Err(outage.clone()))
            .unwrap();
        let expected = AuthError::Unavailable(outage);
        assert!(
            matches!(cache.resume(at(5), wait), TokenDecision::Failed(ref e) if *e == expected)
        );
        // Within the cooldown a newcomer fails fast without a fetch.
        assert!(
            matches!(cache.acquire(at_ms(5_999)), TokenDecision::Failed(ref e) if *e == expected)
        );
        assert_eq!(cache.state(at(5)), TokenState::Empty);
        // Afterwards the next caller starts the next fetch.
        let ticket = expect_fetch(cache.acquire(at(6)));
        cache
            .handle_fetch_result(at(6), ticket, response(None))
            .unwrap();
        expect_use(cache.acquire(at(6)));
        assert_eq!(cache.stats().fetches_started, 2);
        assert_eq!(cache.stats().fetch_failures, 1);
    }

    #[test]
    fn a_failed_background_refresh_keeps_the_stale_token_and_retries_after_the_cooldown() {
        let mut cache = cache_with_token(TokenCacheConfig::default(), at(0), Some(secs(600)));
        let TokenDecision::UseAndRefresh(_, ticket) = cache.acquire(at(540)) else {
            panic!("stale");
        };
        cache
            .handle_fetch_result(at(541), ticket, Err(TokenFetchError::Timeout))
            .unwrap();
        expect_use(cache.acquire(at_ms(541_999)));
        assert!(matches!(
            cache.acquire(at(542)),
            TokenDecision::UseAndRefresh(..)
        ));
    }

    #[test]
    fn a_zero_or_missing_lifetime_means_no_proactive_refresh_and_max_token_age() {
        for lifetime in [None, Some(Duration::ZERO)] {
            let config = TokenCacheConfig::default().with_max_token_age(secs(100));
            let mut cache = cache_with_token(config, at(0), lifetime);
            assert_eq!(cache.state(at(0)), TokenState::Fresh);
            let lease = expect_use(cache.acquire(at(99)));
            assert_eq!(lease.expires_at(), at(100));
            assert_eq!(cache.state(at(100)), TokenState::Expired);
            let _ticket = expect_fetch(cache.acquire(at(100)));
            assert_eq!(cache.stats().fetches_started, 2);
        }
    }

    #[test]
    fn a_token_that_arrives_expired_is_never_handed_out() {
        let mut cache =
            TokenCache::new(TokenCacheConfig::default().with_retry_cooldown(Duration::ZERO));
        let ticket = expect_fetch(cache.acquire(at(0)));
        cache.handle_fetch_sent(&ticket, at(0)).unwrap();
        // 8 s token, usable until 6 s; the answer comes at 6 s.
        let done = cache.handle_fetch_result(at(6), ticket, response(Some(secs(8))));
        assert_eq!(
            done,
            Ok(FetchCompletion::Failed(AuthError::ExpiredOnArrival))
        );
        assert_eq!(cache.generation(), None);
        let _next = expect_fetch(cache.acquire(at(6)));
    }

    #[test]
    fn a_token_that_arrives_in_its_refresh_window_is_fresh_and_refreshes_later() {
        let mut cache = TokenCache::new(TokenCacheConfig::default());
        let ticket = expect_fetch(cache.acquire(at(0)));
        cache.handle_fetch_sent(&ticket, at(0)).unwrap();
        // 100 s token: refresh at 50, expires at 90; it arrives at 70.
        cache
            .handle_fetch_result(at(70), ticket, response(Some(secs(100))))
            .unwrap();
        assert_eq!(cache.state(at(70)), TokenState::Fresh);
        assert_eq!(cache.refresh_at(), Some(at(80)));
        expect_use(cache.acquire(at(79)));
        assert!(matches!(
            cache.acquire(at(80)),
            TokenDecision::UseAndRefresh(..)
        ));
    }

    #[test]
    fn a_cancelled_fetch_lets_a_waiter_start_the_next_one() {
        let mut cache = TokenCache::new(TokenCacheConfig::default());
        let ticket = expect_fetch(cache.acquire(at(0)));
        let TokenDecision::Wait(wait) = cache.acquire(at(0)) else {
            panic!("expected Wait");
        };
        cache.handle_fetch_cancelled(at(1), ticket).unwrap();
        let _ticket = expect_fetch(cache.resume(at(1), wait));
        assert_eq!(cache.stats().fetches_cancelled, 1);
    }

    #[test]
    fn a_ticket_from_another_cache_is_a_typed_error_naming_the_state() {
        let mut other = TokenCache::new(TokenCacheConfig::default());
        let _first = expect_fetch(other.acquire(at(0)));
        other.handle_fetch_cancelled(at(0), _first).unwrap();
        let foreign = expect_fetch(other.acquire(at(0)));

        let mut cache = TokenCache::new(TokenCacheConfig::default());
        let own = expect_fetch(cache.acquire(at(0)));
        let err = cache.handle_fetch_sent(&foreign, at(0)).unwrap_err();
        assert_eq!(
            err,
            TokenCacheError::UnknownTicket {
                ticket: foreign.id(),
                in_flight: Some(own.id()),
                state: TokenState::Fetching,
            }
        );
        assert!(cache
            .handle_fetch_result(at(0), foreign, response(None))
            .is_err());
        // The real fetch is untouched.
        assert_eq!(cache.fetch_in_flight(), Some(own.id()));
        cache
            .handle_fetch_result(at(0), own, response(None))
            .unwrap();
    }

    #[test]
    fn time_going_backwards_counts_as_the_latest_instant() {
        let mut cache = cache_with_token(TokenCacheConfig::default(), at(0), Some(secs(100)));
        let TokenDecision::UseAndRefresh(_, _ticket) = cache.acquire(at(50)) else {
            panic!("stale at 50");
        };
        assert_eq!(cache.state(at(10)), TokenState::Stale);
        assert!(matches!(cache.acquire(at(10)), TokenDecision::Use(_)));
    }

    #[test]
    fn config_setters_and_clamps() {
        let config = TokenCacheConfig::default()
            .with_refresh_before(secs(5))
            .with_expiry_margin(secs(1))
            .with_max_token_age(Duration::ZERO)
            .with_retry_cooldown(secs(2));
        assert_eq!(config.refresh_before(), secs(5));
        assert_eq!(config.expiry_margin(), secs(1));
        assert_eq!(config.max_token_age(), TokenCacheConfig::MIN_MAX_TOKEN_AGE);
        assert_eq!(config.retry_cooldown(), secs(2));
        // refresh_before below the margin: the refresh point never passes expires_at.
        let config = TokenCacheConfig::default().with_refresh_before(Duration::ZERO);
        let cache = cache_with_token(config, at(0), Some(secs(100)));
        assert_eq!(cache.refresh_at(), Some(at(90)));
        assert_eq!(cache.state(at(90)), TokenState::Expired);
    }

    #[test]
    fn endpoint_errors_are_classified_per_rfc_6749_and_issue_3() {
        use StatusCode as S;
        let terminal_codes = [
            "invalid_request",
            "invalid_client",
            "INVALID_GRANT",
            "unauthorized_client",
            "unsupported_grant_type",
            " invalid_scope ",
        ];
        for code in terminal_codes {
            for status in [None, Some(S::BAD_REQUEST), Some(S::SERVICE_UNAVAILABLE)] {
                let error = TokenFetchError::from_oauth_error(code, status);
                assert!(!error.is_retryable(), "{code} {status:?}");
            }
        }
        for code in ["server_error", "temporarily_unavailable"] {
            assert!(TokenFetchError::from_oauth_error(code, Some(S::BAD_REQUEST)).is_retryable());
        }
        let unknown = |status| TokenFetchError::from_oauth_error("slow_down_please", status);
        assert_eq!(
            OAuthErrorCode::parse("slow_down_please"),
            OAuthErrorCode::Other
        );
        assert!(unknown(Some(S::TOO_MANY_REQUESTS)).is_retryable());
        assert!(!unknown(Some(S::BAD_REQUEST)).is_retryable());
        assert!(!unknown(None).is_retryable());

        for status in [500, 502, 503, 504, 429, 408] {
            let status = S::from_u16(status).unwrap();
            assert!(
                TokenFetchError::from_status(status).is_retryable(),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 302, 200] {
            let status = S::from_u16(status).unwrap();
            assert!(
                !TokenFetchError::from_status(status).is_retryable(),
                "{status}"
            );
        }
        assert!(TokenFetchError::Transport.is_retryable());
        assert!(TokenFetchError::Timeout.is_retryable());
        assert!(TokenFetchError::MalformedResponse.is_retryable());
        assert!(!TokenFetchError::Source { retryable: false }.is_retryable());
        assert!(TokenFetchError::Source { retryable: true }.is_retryable());
        assert_eq!(
            AuthError::Rejected(TokenFetchError::from_oauth_error(
                "invalid_client",
                Some(S::UNAUTHORIZED)
            ))
            .to_string(),
            "credential rejected: token endpoint answered invalid_client (HTTP 401 Unauthorized)"
        );
    }
}
