//! Unit tests of the retry rules: Retry-After forms, directives, the safety rule, the ledger,
//! scheduling and the gate.

use super::*;
use crate::policy::outcome::{classify, AttemptOutcome, ClassifyContext, ConnectFailure};
use http::HeaderValue;

const SEC: Duration = Duration::from_secs(1);

fn at(secs: u64) -> Instant {
    Instant::ZERO + Duration::from_secs(secs)
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

#[test]
fn retry_after_forms() {
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // 08:49:37
    let ra = |v| parse_retry_after(&headers(&[("retry-after", v)]), wall);
    assert_eq!(ra("0"), Some(Duration::ZERO));
    assert_eq!(ra(" 7 "), Some(7 * SEC));
    assert_eq!(ra("-5"), None);
    assert_eq!(ra("1.5"), None);
    assert_eq!(ra("soon"), None);
    assert_eq!(
        ra("99999999999999999999999"),
        Some(Duration::from_secs(u64::MAX))
    );
    assert_eq!(ra("Sun, 06 Nov 1994 08:49:47 GMT"), Some(10 * SEC));
    assert_eq!(ra("Sunday, 06-Nov-94 08:49:57 GMT"), Some(20 * SEC));
    assert_eq!(ra("Sun Nov  6 08:50:07 1994"), Some(30 * SEC));
    assert_eq!(ra("Sun, 06 Nov 1994 08:00:00 GMT"), Some(Duration::ZERO));
    // The response's own Date cancels a skewed local clock.
    let skewed = wall + Duration::from_secs(3600);
    let h = headers(&[
        ("retry-after", "Sun, 06 Nov 1994 08:49:47 GMT"),
        ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ]);
    assert_eq!(parse_retry_after(&h, skewed), Some(10 * SEC));
    // A broken Date falls back to the wall clock.
    let h = headers(&[
        ("retry-after", "Sun, 06 Nov 1994 08:49:47 GMT"),
        ("date", "x"),
    ]);
    assert_eq!(parse_retry_after(&h, wall), Some(10 * SEC));
}

#[test]
fn directives_forbid_and_amz_hint() {
    let policy =
        RetryPolicy::default().with_dont_retry_header(HeaderName::from_static("x-should-retry"));
    let d = policy.directives(
        &headers(&[("stripe-should-retry", "False")]),
        SystemTime::UNIX_EPOCH,
    );
    assert!(d.forbid);
    let d = policy.directives(
        &headers(&[("x-should-retry", "true")]),
        SystemTime::UNIX_EPOCH,
    );
    assert!(!d.forbid);
    let d = policy.directives(
        &headers(&[("x-should-retry", "false")]),
        SystemTime::UNIX_EPOCH,
    );
    assert!(d.forbid);
    let d = policy.directives(
        &headers(&[("x-amz-retry-after", "1500")]),
        SystemTime::UNIX_EPOCH,
    );
    assert_eq!(d.retry_after, Some(Duration::from_millis(1500)));
    let d = policy.directives(
        &headers(&[("x-amz-retry-after", "1500"), ("retry-after", "3")]),
        SystemTime::UNIX_EPOCH,
    );
    assert_eq!(d.retry_after, Some(3 * SEC));
    let none = RetryPolicy::default().without_dont_retry_headers();
    assert!(
        !none
            .directives(
                &headers(&[("stripe-should-retry", "false")]),
                SystemTime::UNIX_EPOCH
            )
            .forbid
    );
}

fn facts(idempotent: bool, keyed: bool) -> RequestFacts {
    RequestFacts {
        idempotent,
        keyed,
        body_replayable: true,
    }
}

fn verdict(outcome: AttemptOutcome, request: RequestFacts, ledger: &AttemptLedger) -> RetryVerdict {
    let ctx = ClassifyContext {
        keyed: request.keyed,
        token_authenticated: true,
        ..ClassifyContext::default()
    };
    decide(
        &classify(&outcome, &ctx),
        &request,
        &ServerDirectives::default(),
        ledger,
    )
}

fn response(code: u16) -> AttemptOutcome {
    AttemptOutcome::Response {
        status: StatusCode::from_u16(code).unwrap(),
        elapsed: SEC,
    }
}

#[test]
fn safety_rule_and_kinds() {
    let ledger = AttemptLedger::new(3);
    let post = facts(false, false);
    let kind = |v: RetryVerdict| match v {
        RetryVerdict::Retry(p) => Ok(p.kind),
        RetryVerdict::GiveUp(r) => Err(r),
    };
    assert_eq!(
        kind(verdict(response(503), post, &ledger)),
        Err(GiveUpReason::UnsafeToResend)
    );
    assert_eq!(
        kind(verdict(response(503), facts(false, true), &ledger)),
        Ok(RetryKind::Ordinary)
    );
    assert_eq!(
        kind(verdict(
            AttemptOutcome::ConnectFailed(ConnectFailure::Refused),
            post,
            &ledger
        )),
        Ok(RetryKind::Ordinary)
    );
    assert_eq!(
        kind(verdict(
            AttemptOutcome::ConnectionDeadBeforeWrite { reused: true },
            post,
            &ledger
        )),
        Ok(RetryKind::Transparent)
    );
    assert_eq!(
        kind(verdict(
            AttemptOutcome::ClosedBeforeResponse { reused: true },
            post,
            &ledger
        )),
        Err(GiveUpReason::UnsafeToResend)
    );
    assert_eq!(
        kind(verdict(response(421), post, &ledger)),
        Ok(RetryKind::OneShot)
    );
    assert_eq!(
        kind(verdict(response(401), post, &ledger)),
        Ok(RetryKind::AuthReplay)
    );
    assert_eq!(
        kind(verdict(response(409), facts(false, true), &ledger)),
        Ok(RetryKind::KeyedConflict)
    );
    assert_eq!(
        kind(verdict(response(404), facts(true, false), &ledger)),
        Err(GiveUpReason::NotRetryable(NoRetryReason::Completed))
    );
    let mut no_body = facts(true, false);
    no_body.body_replayable = false;
    assert_eq!(
        kind(verdict(response(503), no_body, &ledger)),
        Err(GiveUpReason::BodyNotReplayable)
    );
    // Nothing of the body left: it can still be sent once more.
    let refused = AttemptOutcome::ConnectFailed(crate::policy::outcome::ConnectFailure::Refused);
    assert!(kind(verdict(refused, no_body, &ledger)).is_ok());
}

#[test]
fn ledger_limits() {
    let get = facts(true, false);
    let mut ledger = AttemptLedger::new(2);
    let v = verdict(response(503), get, &ledger);
    assert!(matches!(v, RetryVerdict::Retry(p) if p.kind == RetryKind::Ordinary));
    ledger.record(&v);
    assert_eq!(
        verdict(response(503), get, &ledger),
        RetryVerdict::GiveUp(GiveUpReason::AttemptsExhausted)
    );
    // Transparent retries do not count, but only one per counted attempt.
    let stale = AttemptOutcome::ConnectionDeadBeforeWrite { reused: true };
    let v = verdict(stale, get, &ledger);
    assert_eq!(v, RetryVerdict::Retry(RetryKind::Transparent.plan()));
    ledger.record(&v);
    assert_eq!(
        verdict(stale, get, &ledger),
        RetryVerdict::GiveUp(GiveUpReason::AttemptsExhausted)
    );
    let mut ledger = AttemptLedger::new(3);
    let v = verdict(response(408), get, &ledger);
    ledger.record(&v);
    assert_eq!(
        verdict(response(408), get, &ledger),
        RetryVerdict::GiveUp(GiveUpReason::OneShotUsed)
    );
    let v = verdict(response(401), get, &ledger);
    ledger.record(&v);
    assert_eq!(
        verdict(response(401), get, &ledger),
        RetryVerdict::GiveUp(GiveUpReason::AuthReplayUsed)
    );
    assert_eq!(ledger.counted_attempts(), 2);
}

#[test]
fn directive_wins_over_everything() {
    let c = classify(
        &AttemptOutcome::ConnectionDeadBeforeWrite { reused: true },
        &ClassifyContext::default(),
    );
    let forbid = ServerDirectives {
        retry_after: None,
        forbid: true,
    };
    assert_eq!(
        decide(&c, &facts(true, true), &forbid, &AttemptLedger::new(3)),
        RetryVerdict::GiveUp(GiveUpReason::DirectiveForbids)
    );
}

fn input(now: u64, deadline: u64, delay: Duration, ra: Option<Duration>) -> ScheduleInput {
    ScheduleInput {
        now: at(now),
        deadline: at(deadline),
        delay,
        min_delay: Duration::from_millis(500),
        retry_after: ra,
        retry_after_cap: Duration::from_secs(60),
        attempt_floor: Duration::ZERO,
    }
}

#[test]
fn schedule_rules() {
    assert_eq!(
        schedule(&input(0, 30, 2 * SEC, None)),
        Schedule::Proceed {
            delay: 2 * SEC,
            at: at(2)
        }
    );
    // Retry-After wins when longer.
    assert_eq!(
        schedule(&input(0, 30, 2 * SEC, Some(5 * SEC))),
        Schedule::Proceed {
            delay: 5 * SEC,
            at: at(5)
        }
    );
    // Above the cap, or past the deadline: rate limited at once, carrying the instant.
    assert_eq!(
        schedule(&input(0, 300, SEC, Some(61 * SEC))),
        Schedule::RateLimited { until: at(61) }
    );
    assert_eq!(
        schedule(&input(0, 30, SEC, Some(31 * SEC))),
        Schedule::RateLimited { until: at(31) }
    );
    // Clipped to the deadline, but never below the floor.
    assert_eq!(
        schedule(&input(0, 3, 5 * SEC, None)),
        Schedule::Proceed {
            delay: 3 * SEC,
            at: at(3)
        }
    );
    let mut late = input(0, 3, 5 * SEC, None);
    late.min_delay = 4 * SEC;
    assert_eq!(schedule(&late), Schedule::DeadlineExceeded);
    let mut floor = input(0, 3, SEC, None);
    floor.attempt_floor = 4 * SEC;
    assert_eq!(schedule(&floor), Schedule::DeadlineExceeded);
    assert_eq!(
        schedule(&input(40, 30, Duration::ZERO, None)),
        Schedule::DeadlineExceeded
    );
}

#[test]
fn gate_only_on_429_and_503_and_only_later() {
    let mut gate = RetryAfterGate::new();
    gate.handle_response(at(0), StatusCode::BAD_GATEWAY, Some(10 * SEC));
    assert_eq!(gate.remaining(at(0)), None);
    gate.handle_response(at(0), StatusCode::TOO_MANY_REQUESTS, Some(10 * SEC));
    gate.handle_response(at(1), StatusCode::SERVICE_UNAVAILABLE, Some(2 * SEC));
    assert_eq!(gate.not_before(), at(10));
    assert_eq!(gate.remaining(at(4)), Some(6 * SEC));
    assert_eq!(gate.remaining(at(10)), None);
}
