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
//! # Inputs and outputs
//!
//! The cache follows the crate's [run loop](crate#the-run-loop); it has no timer and no
//! events, and answers each input with a [`TokenDecision`]. What is particular to it:
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

use std::time::Duration;

use http::header::{HeaderValue, InvalidHeaderValue};

use crate::Instant;

mod config;
mod error;

pub use config::{AccessToken, Secret, TokenCacheConfig};
pub use error::{AuthError, OAuthErrorCode, TokenCacheError, TokenFetchError};

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

/// What a request that needs a token does next (see "Inputs and outputs" in the
/// [module documentation](self)).
#[must_use = "the decision says whether to send, fetch, wait or fail"]
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
                let expires_at = end - self.config.expiry_margin().min(lifetime / 4);
                let refresh_at = end - self.config.refresh_before().min(lifetime / 2);
                (refresh_at.min(expires_at), expires_at)
            }
            // Lifetime unknown: no proactive refresh, replaced at max_token_age.
            None => {
                let expires_at = sent_at + self.config.max_token_age();
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
            .filter(|f| !f.error.is_terminal() && now < f.at + self.config.retry_cooldown())
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
mod tests;
