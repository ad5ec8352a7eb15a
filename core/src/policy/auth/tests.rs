//! Unit tests of the token cache: the timeline, single flight, fetch failures, 401s and
//! cancellation.

use http::StatusCode;

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
    let error = TokenFetchError::from_oauth_error("invalid_client", Some(StatusCode::UNAUTHORIZED));
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
    assert!(matches!(cache.resume(at(5), wait), TokenDecision::Failed(ref e) if *e == expected));
    // Within the cooldown a newcomer fails fast without a fetch.
    assert!(matches!(cache.acquire(at_ms(5_999)), TokenDecision::Failed(ref e) if *e == expected));
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
