//! Property tests of the token cache against the token invariants of
//! docs/spec/invariants.md (`token-single-flight`, `token-fetches-accounted`,
//! `no-expired-token`, `one-auth-replay`, `no-refresh-thrash`).
//!
//! A small driver runs random sequences of steps (time passing, bursts of callers,
//! waiters resuming, token requests sent / answered with random lifetimes or errors /
//! cancelled, 401s for generations that were really handed out, stale `now`s) and checks
//! after every step:
//!
//! * `token-single-flight`: at most one token request in flight: a ticket is only ever issued while
//!   the driver holds none, and every waiter waits for the fetch in flight;
//! * `token-fetches-accounted` / `no-refresh-thrash`: every fetch is paid for by a credit: the
//!   cache being empty at the start or a token reaching its refresh window / expiry (one credit per
//!   token), a 401 invalidation, or an earlier failed or cancelled fetch (a retry); a fresh token
//!   is `Fresh` on receipt; background refreshes start no earlier than the oracle's refresh point;
//! * `no-expired-token`: no lease at or after its `expires_at`, and `expires_at` matches the oracle
//!   computed from the sending instant;
//! * `one-auth-replay`: after a 401 on generation g every later lease has a generation > g, and
//!   lease generations never go down;
//! * terminal errors reach every waiter of the failed fetch and nothing is fetched again
//!   until the failure is cleared; retryable errors reach the waiters of their fetch, fail
//!   newcomers only within the cooldown, and no fetch (background refresh included) starts
//!   inside the cooldown.
//!
//! Time jumps land on the oracle's refresh point and expiry ±1 ns so that the boundaries
//! (`at or after expires_at`) are exercised, not just approached.

use std::collections::BTreeMap;
use std::time::Duration;

use breakwater_core::policy::auth::{
    AccessToken, AuthError, FetchCompletion, FetchId, FetchTicket, TokenCache, TokenCacheConfig,
    TokenDecision, TokenFetchError, TokenGeneration, TokenLease, TokenResponse, TokenState,
    WaitTicket,
};
use breakwater_core::Instant;
use http::StatusCode;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Reply {
    /// A token with this lifetime in milliseconds (`None`: no `expires_in`).
    Token(Option<u64>),
    Retryable(TokenFetchError),
    Terminal(TokenFetchError),
}

#[derive(Clone, Debug)]
enum Step {
    Advance(u64),
    /// Jump to the held token's refresh point (false) or expiry (true), plus -1, 0 or +1 ns.
    AdvanceToEdge(bool, i8),
    Acquire(usize),
    /// An acquire whose `now` is earlier than the latest seen (a racing thread's clock).
    AcquireLate(u64),
    ResumeAll,
    Send,
    Answer(Reply),
    Cancel,
    /// A 401 for the generation handed out this many leases ago (or a made-up one).
    Unauthorized(usize),
    ClearFailure,
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        6 => prop_oneof![
            Just(None),
            Just(Some(0)),
            (1u64..300_000).prop_map(Some),
        ]
        .prop_map(Reply::Token),
        3 => prop_oneof![
            Just(TokenFetchError::Timeout),
            Just(TokenFetchError::Transport),
            Just(TokenFetchError::from_status(StatusCode::SERVICE_UNAVAILABLE)),
            Just(TokenFetchError::from_status(StatusCode::TOO_MANY_REQUESTS)),
        ]
        .prop_map(Reply::Retryable),
        1 => prop_oneof![
            Just(TokenFetchError::from_oauth_error("invalid_client", Some(StatusCode::UNAUTHORIZED))),
            Just(TokenFetchError::from_oauth_error("invalid_grant", Some(StatusCode::BAD_REQUEST))),
            Just(TokenFetchError::from_oauth_error("invalid_scope", None)),
        ]
        .prop_map(Reply::Terminal),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u64..2_000).prop_map(Step::Advance),
        2 => (0u64..120_000).prop_map(Step::Advance),
        1 => (0u64..700_000).prop_map(Step::Advance),
        2 => (any::<bool>(), -1i8..=1).prop_map(|(expiry, ns)| Step::AdvanceToEdge(expiry, ns)),
        5 => (1usize..6).prop_map(Step::Acquire),
        1 => (1u64..60_000).prop_map(Step::AcquireLate),
        3 => Just(Step::ResumeAll),
        2 => Just(Step::Send),
        4 => reply().prop_map(Step::Answer),
        1 => Just(Step::Cancel),
        2 => (0usize..4).prop_map(Step::Unauthorized),
        1 => Just(Step::ClearFailure),
    ]
}

fn config() -> impl Strategy<Value = TokenCacheConfig> {
    (0u64..120, 0u64..20, 1u64..600, 0u64..3_000).prop_map(
        |(refresh_before, margin, max_age, cooldown_ms)| {
            TokenCacheConfig::default()
                .with_refresh_before(Duration::from_secs(refresh_before))
                .with_expiry_margin(Duration::from_secs(margin))
                .with_max_token_age(Duration::from_secs(max_age))
                .with_retry_cooldown(Duration::from_millis(cooldown_ms))
        },
    )
}

/// What the oracle knows about a stored token.
struct TokenFacts {
    fetch: FetchId,
    sent_at: Instant,
    lifetime: Option<Duration>,
}

struct Outstanding {
    ticket: FetchTicket,
    issued_at: Instant,
    sent_at: Option<Instant>,
}

struct Driver {
    config: TokenCacheConfig,
    cache: TokenCache,
    now: Instant,
    /// The latest instant passed to the cache.
    seen: Instant,
    /// The instant the decision being checked was made at (the cache's view of `now`).
    at: Instant,
    outstanding: Option<Outstanding>,
    waiters: Vec<WaitTicket>,
    tokens: BTreeMap<TokenGeneration, TokenFacts>,
    leased: Vec<TokenGeneration>,
    highest_leased: Option<TokenGeneration>,
    /// Every lease from now on must have a generation above this (`one-auth-replay`).
    unauthorized_floor: Option<TokenGeneration>,
    /// The most recent failed fetch not yet superseded by a token or a clear.
    last_failure: Option<(FetchId, AuthError, Instant)>,
    /// After a retryable failure no fetch starts before this (the cooldown).
    retry_not_before: Instant,
    terminal: Option<AuthError>,
    // Credits that may pay for a fetch (`token-fetches-accounted`, `no-refresh-thrash`).
    due_credit: bool,
    invalidation_credits: u64,
    retry_credits: u64,
    fetches: u64,
}

impl Driver {
    fn new(config: TokenCacheConfig) -> Driver {
        Driver {
            cache: TokenCache::new(config.clone()),
            config,
            now: Instant::ZERO,
            seen: Instant::ZERO,
            at: Instant::ZERO,
            outstanding: None,
            waiters: Vec::new(),
            tokens: BTreeMap::new(),
            leased: Vec::new(),
            highest_leased: None,
            unauthorized_floor: None,
            last_failure: None,
            retry_not_before: Instant::ZERO,
            terminal: None,
            due_credit: true, // the empty cache may fetch once
            invalidation_credits: 0,
            retry_credits: 0,
            fetches: 0,
        }
    }

    fn run(&mut self, step: Step) -> Result<(), TestCaseError> {
        self.at = self.now;
        match step {
            Step::Advance(ms) => self.now += Duration::from_millis(ms),
            Step::AdvanceToEdge(expiry, ns) => {
                if let Some(facts) = self.cache.generation().and_then(|g| self.tokens.get(&g)) {
                    let (refresh_from, expires_at) = self.oracle(facts.sent_at, facts.lifetime);
                    let edge = if expiry { expires_at } else { refresh_from };
                    let edge = match ns {
                        -1 => edge - Duration::from_nanos(1),
                        0 => edge,
                        _ => edge + Duration::from_nanos(1),
                    };
                    if edge < Instant::MAX {
                        self.now = self.now.max(edge);
                    }
                }
            }
            Step::Acquire(callers) => {
                for _ in 0..callers {
                    let pre = self.cache.state(self.now);
                    let decision = self.cache.acquire(self.now);
                    self.seen = self.now;
                    self.on_decision(pre, decision, None)?;
                }
            }
            Step::AcquireLate(ms) => {
                let late = self.now - Duration::from_millis(ms);
                self.at = late.max(self.seen);
                let pre = self.cache.state(late);
                let decision = self.cache.acquire(late);
                self.on_decision(pre, decision, None)?;
                self.seen = self.at;
                return Ok(());
            }
            Step::ResumeAll => {
                for wait in std::mem::take(&mut self.waiters) {
                    let pre = self.cache.state(self.now);
                    let decision = self.cache.resume(self.now, wait);
                    self.seen = self.now;
                    self.on_decision(pre, decision, Some(wait))?;
                }
            }
            Step::Send => {
                if let Some(out) = &mut self.outstanding {
                    prop_assert!(self.cache.handle_fetch_sent(&out.ticket, self.now).is_ok());
                    out.sent_at = Some(self.now);
                    self.seen = self.now;
                }
            }
            Step::Answer(reply) => self.answer(reply)?,
            Step::Cancel => {
                if let Some(out) = self.outstanding.take() {
                    prop_assert!(self
                        .cache
                        .handle_fetch_cancelled(self.now, out.ticket)
                        .is_ok());
                    self.retry_credits += 1;
                    self.seen = self.now;
                }
            }
            Step::Unauthorized(back) => {
                let generation = match self.leased.len().checked_sub(back + 1) {
                    Some(index) => self.leased[index],
                    None => TokenGeneration::new(back as u64 * 1_000),
                };
                let held = self.cache.generation();
                let invalidated = self.cache.handle_unauthorized(self.now, generation);
                self.seen = self.now;
                prop_assert_eq!(invalidated, held == Some(generation));
                if invalidated {
                    self.invalidation_credits += 1;
                }
                if self.leased.contains(&generation) {
                    self.unauthorized_floor = self.unauthorized_floor.max(Some(generation));
                }
            }
            Step::ClearFailure => {
                self.cache.clear_failure();
                self.terminal = None;
                self.last_failure = None;
                self.retry_not_before = Instant::ZERO;
            }
        }
        let in_flight = self.outstanding.as_ref().map(|o| o.ticket.id());
        prop_assert_eq!(self.cache.fetch_in_flight(), in_flight);
        let stats = self.cache.stats();
        prop_assert_eq!(stats.fetches_started, self.fetches);
        Ok(())
    }

    fn answer(&mut self, reply: Reply) -> Result<(), TestCaseError> {
        let Some(out) = self.outstanding.take() else {
            return Ok(());
        };
        let id = out.ticket.id();
        let sent_at = out.sent_at.unwrap_or(out.issued_at);
        let (result, lifetime) = match reply {
            Reply::Token(ms) => {
                let lifetime = ms.map(Duration::from_millis);
                let response =
                    TokenResponse::new(AccessToken::new(format!("tok-{id:?}")), lifetime);
                (Ok(response), lifetime)
            }
            Reply::Retryable(error) | Reply::Terminal(error) => (Err(error), None),
        };
        let completion = self.cache.handle_fetch_result(self.now, out.ticket, result);
        self.seen = self.now;
        let completion = completion.map_err(|e| TestCaseError::fail(e.to_string()))?;
        match completion {
            FetchCompletion::Stored(generation) => {
                // `no-refresh-thrash`: never expired or stale at receipt.
                prop_assert_eq!(self.cache.state(self.now), TokenState::Fresh);
                prop_assert!(self.tokens.keys().all(|&g| g < generation));
                let facts = TokenFacts {
                    fetch: id,
                    sent_at,
                    lifetime,
                };
                self.tokens.insert(generation, facts);
                self.due_credit = true;
                self.last_failure = None;
                self.retry_not_before = Instant::ZERO;
            }
            FetchCompletion::Failed(error) => {
                if error.is_terminal() {
                    self.terminal = Some(error.clone());
                } else {
                    self.retry_not_before = self.now + self.config.retry_cooldown();
                }
                if error == AuthError::ExpiredOnArrival {
                    // Only a token whose oracle expiry had passed may be refused.
                    let (_, expires_at) = self.oracle(sent_at, lifetime);
                    prop_assert!(expires_at <= self.now);
                }
                self.last_failure = Some((id, error, self.now));
                self.retry_credits += 1;
            }
            _ => prop_assert!(false, "unknown completion"),
        }
        Ok(())
    }

    fn on_decision(
        &mut self,
        pre: TokenState,
        decision: TokenDecision,
        resumed: Option<WaitTicket>,
    ) -> Result<(), TestCaseError> {
        if let Some(wait) = resumed {
            let still_in_flight = self.outstanding.as_ref().map(|o| o.ticket.id());
            if still_in_flight == Some(wait.fetch_id()) {
                prop_assert!(matches!(decision, TokenDecision::Wait(w) if w == wait));
            }
            if let Some((failed, error, _)) = &self.last_failure {
                if *failed == wait.fetch_id() {
                    // Every waiter of a failed fetch gets its error.
                    prop_assert!(
                        matches!(&decision, TokenDecision::Failed(e) if e == error),
                        "waiter of failed fetch got {:?}",
                        decision
                    );
                }
            }
        }
        match decision {
            TokenDecision::Use(lease) => self.on_lease(&lease, false)?,
            TokenDecision::UseAndRefresh(lease, ticket) => {
                self.on_lease(&lease, true)?;
                self.on_fetch(pre, ticket)?;
            }
            TokenDecision::Fetch(ticket) => {
                self.waiters.push(ticket.wait_ticket());
                self.on_fetch(pre, ticket)?;
            }
            TokenDecision::Wait(wait) => {
                let in_flight = self.outstanding.as_ref().map(|o| o.ticket.id());
                prop_assert_eq!(Some(wait.fetch_id()), in_flight);
                self.waiters.push(wait);
            }
            TokenDecision::Failed(error) => {
                if let Some(terminal) = &self.terminal {
                    prop_assert_eq!(&error, terminal);
                } else if !self.waited_on_last_failure(resumed) {
                    // Without a terminal error, only the failure of the fetch a caller
                    // waited for, or a failure inside its cooldown, fails a caller.
                    let Some((_, failure, at)) = &self.last_failure else {
                        return Err(TestCaseError::fail("Failed without any failure"));
                    };
                    prop_assert_eq!(&error, failure);
                    prop_assert!(self.at < *at + self.config.retry_cooldown());
                }
            }
        }
        Ok(())
    }

    fn on_lease(&mut self, lease: &TokenLease, refresh: bool) -> Result<(), TestCaseError> {
        let generation = lease.generation();
        // `no-expired-token`: never at or after expires_at; expires_at as the oracle computes
        // it.
        prop_assert!(self.at < lease.expires_at());
        let facts = &self.tokens[&generation];
        let (refresh_from, expires_at) = self.oracle(facts.sent_at, facts.lifetime);
        prop_assert_eq!(lease.expires_at(), expires_at);
        if refresh {
            // Never refreshed earlier than the rule allows (and never without a lifetime).
            prop_assert!(facts.lifetime.is_some_and(|l| !l.is_zero()));
            prop_assert!(self.at >= refresh_from);
        }
        // `one-auth-replay`: newer than any generation a 401 was reported for; never going
        // back.
        prop_assert!(Some(generation) > self.unauthorized_floor);
        prop_assert!(Some(generation) >= self.highest_leased);
        self.highest_leased = Some(generation);
        self.leased.push(generation);
        prop_assert_eq!(lease.token().expose(), format!("tok-{:?}", facts.fetch));
        Ok(())
    }

    fn on_fetch(&mut self, pre: TokenState, ticket: FetchTicket) -> Result<(), TestCaseError> {
        // `token-single-flight`.
        prop_assert!(
            self.outstanding.is_none(),
            "second fetch while one is in flight"
        );
        prop_assert!(self.terminal.is_none(), "fetch after a terminal error");
        prop_assert!(
            self.at >= self.retry_not_before,
            "fetch inside the retry cooldown"
        );
        prop_assert!(matches!(
            pre,
            TokenState::Empty | TokenState::Stale | TokenState::Expired
        ));
        // `token-fetches-accounted` / `no-refresh-thrash`: each fetch is paid for.
        if self.due_credit {
            self.due_credit = false;
        } else if self.invalidation_credits > 0 {
            self.invalidation_credits -= 1;
        } else if self.retry_credits > 0 {
            self.retry_credits -= 1;
        } else {
            return Err(TestCaseError::fail(format!(
                "unpaid fetch in state {pre:?}"
            )));
        }
        self.fetches += 1;
        prop_assert_eq!(self.cache.stats().fetches_started, self.fetches);
        self.outstanding = Some(Outstanding {
            ticket,
            issued_at: self.at,
            sent_at: None,
        });
        Ok(())
    }

    fn waited_on_last_failure(&self, resumed: Option<WaitTicket>) -> bool {
        match (resumed, &self.last_failure) {
            (Some(wait), Some((failed, _, _))) => wait.fetch_id() == *failed,
            _ => false,
        }
    }

    /// (earliest allowed refresh, expires_at) for a token sent at `sent_at`.
    fn oracle(&self, sent_at: Instant, lifetime: Option<Duration>) -> (Instant, Instant) {
        match lifetime.filter(|l| !l.is_zero()) {
            Some(l) => (
                sent_at + l - self.config.refresh_before().min(l / 2),
                sent_at + l - self.config.expiry_margin().min(l / 4),
            ),
            None => (Instant::MAX, sent_at + self.config.max_token_age()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The token invariants over random runs (see the module docs for the list of checks).
    #[test]
    fn token_cache_keeps_its_invariants(
        config in config(),
        steps in prop::collection::vec(step(), 1..80),
    ) {
        let mut driver = Driver::new(config);
        for step in steps {
            driver.run(step)?;
        }
        // Drain: answer the last fetch with a good token and let every waiter through.
        driver.run(Step::ClearFailure)?;
        driver.run(Step::Answer(Reply::Token(Some(600_000))))?;
        driver.run(Step::ResumeAll)?;
    }

    /// `token-fetches-accounted`: a burst of N concurrent callers on an empty cache causes exactly
    /// one fetch, and all of them get the same token once it arrives.
    #[test]
    fn a_burst_on_an_empty_cache_fetches_once(
        config in config(),
        callers in 1usize..200,
        lifetime_ms in prop::option::of(1u64..10_000_000),
    ) {
        let mut cache = TokenCache::new(config);
        let now = Instant::from_nanos(1_000_000);
        let mut tickets = Vec::new();
        let mut waits = Vec::new();
        for _ in 0..callers {
            match cache.acquire(now) {
                TokenDecision::Fetch(ticket) => {
                    waits.push(ticket.wait_ticket());
                    tickets.push(ticket);
                }
                TokenDecision::Wait(wait) => waits.push(wait),
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        prop_assert_eq!(tickets.len(), 1);
        prop_assert_eq!(cache.stats().fetches_started, 1);
        let ticket = tickets.remove(0);
        prop_assert!(waits.iter().all(|w| w.fetch_id() == ticket.id()));
        let response = TokenResponse::new(
            AccessToken::new("burst-token"),
            lifetime_ms.map(Duration::from_millis),
        );
        let done = cache.handle_fetch_result(now, ticket, Ok(response));
        prop_assert_eq!(done, Ok(FetchCompletion::Stored(TokenGeneration::new(1))));
        for wait in waits {
            match cache.resume(now, wait) {
                TokenDecision::Use(lease) => {
                    prop_assert_eq!(lease.generation(), TokenGeneration::new(1));
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        prop_assert_eq!(cache.stats().fetches_started, 1);
    }

    /// `no-refresh-thrash`: with a healthy endpoint and steady traffic, tokens of any lifetime
    /// cause at most one fetch per token (no thrash), even when answers are slow.
    #[test]
    fn steady_traffic_fetches_at_most_once_per_token(
        config in config(),
        lifetime_ms in prop::option::of(0u64..400_000),
        latency_ms in 0u64..30_000,
        tick_ms in 1u64..5_000,
        ticks in 1usize..400,
    ) {
        let mut cache = TokenCache::new(config);
        let mut now = Instant::ZERO;
        let mut in_flight: Option<(FetchTicket, Instant)> = None;
        for _ in 0..ticks {
            now += Duration::from_millis(tick_ms);
            if let Some((ticket, sent)) = in_flight.take() {
                if now >= sent + Duration::from_millis(latency_ms) {
                    let response = TokenResponse::new(
                        AccessToken::new("t"),
                        lifetime_ms.map(Duration::from_millis),
                    );
                    let done = cache.handle_fetch_result(now, ticket, Ok(response));
                    prop_assert!(done.is_ok());
                } else {
                    in_flight = Some((ticket, sent));
                }
            }
            match cache.acquire(now) {
                TokenDecision::Fetch(ticket) | TokenDecision::UseAndRefresh(_, ticket) => {
                    prop_assert!(in_flight.is_none());
                    prop_assert!(cache.handle_fetch_sent(&ticket, now).is_ok());
                    in_flight = Some((ticket, now));
                }
                TokenDecision::Use(lease) => prop_assert!(lease.is_usable_at(now)),
                TokenDecision::Wait(_) | TokenDecision::Failed(_) => {}
            }
        }
        let stats = cache.stats();
        // Every fetch but the one in flight ended in a token or a failure (a token that
        // arrived expired, when the answer is slower than its lifetime).
        let in_flight = u64::from(in_flight.is_some());
        prop_assert_eq!(
            stats.fetches_started,
            stats.tokens_stored + stats.fetch_failures + in_flight
        );
        // Each token causes at most one further fetch: no refresh thrash.
        prop_assert!(stats.fetches_started <= 1 + stats.tokens_stored + stats.fetch_failures);
        prop_assert!(stats.tokens_stored <= stats.fetches_started);
    }
}
