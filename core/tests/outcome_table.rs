//! The outcome table of docs/spec/outcomes.md, rule by rule: every rule's evidence, breaker
//! effect, retry eligibility and latency sample. Rules are identified here by
//! `OutcomeRow::number()`, their position in the table.

use std::time::Duration;

use breakwater_core::policy::outcome::{
    classify, AttemptOutcome, BreakerEffect, ClassifyContext, ConnectFailure, Evidence,
    LocalExhaustion, NoRetryReason, OutcomePolicy, OutcomeRow, RetryEligibility,
};
use http::StatusCode;

use BreakerEffect::{Failure, Ignore, Success};
use Evidence::{MaybeProcessed, NotProcessed, NotSent, Processed};
use RetryEligibility as R;

const ELAPSED: Duration = Duration::from_millis(250);

fn response(code: u16) -> AttemptOutcome {
    AttemptOutcome::Response {
        status: StatusCode::from_u16(code).unwrap(),
        elapsed: ELAPSED,
    }
}

/// One row of the expected table.
struct Row {
    number: u8,
    outcome: AttemptOutcome,
    ctx: ClassifyContext,
    evidence: Evidence,
    breaker: BreakerEffect,
    retry: RetryEligibility,
    latency: Option<Duration>,
}

fn plain() -> ClassifyContext {
    ClassifyContext::default()
}

fn keyed() -> ClassifyContext {
    ClassifyContext {
        keyed: true,
        ..ClassifyContext::default()
    }
}

fn token() -> ClassifyContext {
    ClassifyContext {
        token_authenticated: true,
        ..ClassifyContext::default()
    }
}

#[rustfmt::skip]
fn expected_table() -> Vec<Row> {
    let s = Some(ELAPSED);
    let never = R::Never;
    let row = |number, outcome, ctx, evidence, breaker, retry, latency| Row { number, outcome, ctx, evidence, breaker, retry, latency };
    vec![
        row(1, AttemptOutcome::ConnectFailed(ConnectFailure::Dns), plain(), NotSent, Failure, R::AnyMethod, None),
        row(1, AttemptOutcome::ConnectFailed(ConnectFailure::Refused), plain(), NotSent, Failure, R::AnyMethod, None),
        row(1, AttemptOutcome::ConnectFailed(ConnectFailure::Timeout), plain(), NotSent, Failure, R::AnyMethod, None),
        row(1, AttemptOutcome::ConnectFailed(ConnectFailure::TlsHandshake), plain(), NotSent, Failure, R::AnyMethod, None),
        row(1, AttemptOutcome::ConnectionDeadBeforeWrite { reused: false }, plain(), NotSent, Failure, R::AnyMethod, None),
        row(2, AttemptOutcome::CertificateInvalid, plain(), NotSent, Ignore, never(NoRetryReason::CertificateInvalid), None),
        row(3, AttemptOutcome::LocalExhaustion(LocalExhaustion::PoolTimeout), plain(), NotSent, Ignore, never(NoRetryReason::LocalExhaustion), None),
        row(3, AttemptOutcome::LocalExhaustion(LocalExhaustion::QueueFull), plain(), NotSent, Ignore, never(NoRetryReason::LocalExhaustion), None),
        row(3, AttemptOutcome::LocalExhaustion(LocalExhaustion::ConcurrencyLimit), plain(), NotSent, Ignore, never(NoRetryReason::LocalExhaustion), None),
        row(4, AttemptOutcome::BreakerRejected, plain(), NotSent, Ignore, never(NoRetryReason::CircuitOpen), None),
        row(5, AttemptOutcome::ConnectionDeadBeforeWrite { reused: true }, plain(), NotSent, Ignore, R::Transparent, None),
        row(6, AttemptOutcome::RefusedStream, plain(), NotProcessed, Ignore, R::Transparent, None),
        row(7, response(421), plain(), NotProcessed, Ignore, R::OneShot, None),
        row(7, response(425), plain(), NotProcessed, Ignore, R::OneShot, None),
        row(8, response(408), plain(), NotProcessed, Ignore, R::OneShot, None),
        row(9, response(401), token(), NotProcessed, Ignore, R::AuthReplay, s),
        row(10, AttemptOutcome::ClosedBeforeResponse { reused: true }, plain(), MaybeProcessed, Ignore, R::TransparentIfIdempotentOrKeyed, None),
        row(11, AttemptOutcome::ClosedBeforeResponse { reused: false }, plain(), MaybeProcessed, Failure, R::IdempotentOrKeyed, None),
        row(11, AttemptOutcome::ExchangeFailed, plain(), MaybeProcessed, Failure, R::IdempotentOrKeyed, None),
        row(12, AttemptOutcome::AttemptTimedOut { elapsed: Duration::from_secs(10) }, plain(), MaybeProcessed, Failure, R::IdempotentOrKeyed, Some(Duration::from_secs(10))),
        row(13, response(502), plain(), MaybeProcessed, Failure, R::IdempotentOrKeyed, s),
        row(13, response(503), plain(), MaybeProcessed, Failure, R::IdempotentOrKeyed, s),
        row(13, response(504), plain(), MaybeProcessed, Failure, R::IdempotentOrKeyed, s),
        row(14, response(429), plain(), MaybeProcessed, Ignore, R::IdempotentOrKeyed, s),
        row(15, response(409), keyed(), MaybeProcessed, Ignore, R::KeyedConflict, s),
        // Rule `server-error`: 500 is retried by default, and is not a breaker failure by default.
        row(16, response(500), plain(), Processed, Ignore, R::IdempotentOrKeyed, s),
        row(16, response(507), plain(), Processed, Ignore, never(NoRetryReason::StatusNotRetried), s),
        row(17, response(501), plain(), Processed, Success, never(NoRetryReason::Completed), s),
        row(17, response(505), plain(), Processed, Success, never(NoRetryReason::Completed), s),
        row(17, response(400), plain(), Processed, Success, never(NoRetryReason::Completed), s),
        row(17, response(403), plain(), Processed, Success, never(NoRetryReason::Completed), s),
        row(17, response(404), plain(), Processed, Success, never(NoRetryReason::Completed), s),
        row(17, response(422), plain(), Processed, Success, never(NoRetryReason::Completed), s),
        row(17, response(422), keyed(), Processed, Success, never(NoRetryReason::IdempotencyKeyMismatch), s),
        row(17, response(409), plain(), Processed, Success, never(NoRetryReason::Completed), s),
        row(17, response(401), plain(), Processed, Success, never(NoRetryReason::Completed), s),
        row(18, response(200), plain(), Processed, Success, never(NoRetryReason::Completed), s),
        row(18, response(204), plain(), Processed, Success, never(NoRetryReason::Completed), s),
        row(18, response(304), plain(), Processed, Success, never(NoRetryReason::Completed), s),
        row(19, AttemptOutcome::BodyReadFailed, plain(), Processed, Failure, never(NoRetryReason::ResponseDelivered), None),
        row(20, AttemptOutcome::Cancelled, plain(), MaybeProcessed, Ignore, never(NoRetryReason::Cancelled), None),
        row(21, AttemptOutcome::MalformedResponse, plain(), MaybeProcessed, Failure, never(NoRetryReason::MalformedResponse), None),
        row(22, AttemptOutcome::ConnectFailed(ConnectFailure::ProxyUnreachable), plain(), NotSent, Ignore, R::AnyMethod, None),
        row(23, AttemptOutcome::ConnectFailed(ConnectFailure::ProxyRefused), plain(), NotSent, Ignore, never(NoRetryReason::ProxyRefused), None),
    ]
}

#[test]
fn every_row_of_the_table() {
    let table = expected_table();
    for r in &table {
        let c = classify(&r.outcome, &r.ctx);
        let got = (
            c.row.number(),
            c.evidence,
            c.breaker,
            c.retry,
            c.latency_sample,
        );
        let want = (r.number, r.evidence, r.breaker, r.retry, r.latency);
        assert_eq!(got, want, "outcome {:?} in {:?}", r.outcome, r.ctx);
    }
    // Every one of the 23 rows is exercised.
    let mut seen: Vec<u8> = table.iter().map(|r| r.number).collect();
    seen.dedup();
    assert_eq!(seen, (1..=23).collect::<Vec<u8>>());
}

#[test]
fn the_users_switches() {
    // 500 as a breaker failure only when the user says so.
    let policy = OutcomePolicy::default().with_server_error_is_breaker_failure(true);
    let c = classify(&response(500), &policy.context(false, false));
    assert_eq!((c.row, c.breaker), (OutcomeRow::ServerError, Failure));
    // Retrying 500 can be switched off; 500 is then terminal.
    let policy = OutcomePolicy::default().with_retry_500(false);
    let c = classify(&response(500), &policy.context(false, false));
    assert_eq!(c.retry, R::Never(NoRetryReason::StatusNotRetried));
    // Removing a gateway status keeps it a breaker failure but stops retrying it.
    let policy = OutcomePolicy::default().with_retried_statuses(
        breakwater_core::policy::outcome::StatusSet::default()
            .without(StatusCode::SERVICE_UNAVAILABLE),
    );
    let c = classify(&response(503), &policy.context(false, false));
    assert_eq!(
        (c.breaker, c.retry),
        (Failure, R::Never(NoRetryReason::StatusNotRetried))
    );
    // Counting local exhaustion as a failure is an option.
    let policy = OutcomePolicy::default().with_local_exhaustion_is_breaker_failure(true);
    let c = classify(
        &AttemptOutcome::LocalExhaustion(LocalExhaustion::PoolTimeout),
        &policy.context(false, false),
    );
    assert_eq!(c.breaker, Failure);
}

#[test]
fn only_the_sampled_rows_add_latency() {
    // Invariant `sampled-outcomes-only`: rules 9 (`unauthorized`) and 12–18 (`attempt-timeout`
    // to `completed`) are samples, all others never.
    for r in expected_table() {
        let c = classify(&r.outcome, &r.ctx);
        let sampled = matches!(c.row.number(), 9 | 12..=18);
        assert_eq!(
            c.latency_sample.is_some(),
            sampled,
            "row {}",
            c.row.number()
        );
    }
}
