//! Property tests of idempotency keys: invariants `one-key-per-call`, `no-undeclared-keys` and
//! `keyed-409-and-422` of docs/spec/invariants.md.

use std::collections::BTreeSet;
use std::time::Duration;

use breakwater_core::policy::budget::{RetryBudget, RetryBudgetConfig};
use breakwater_core::policy::idempotency::{
    key_for_call, CallKey, IdempotencyConfig, IdempotencyKey, KeyWireFormat,
};
use breakwater_core::policy::outcome::{
    classify, AttemptOutcome, ClassifyContext, ConnectFailure, NoRetryReason,
};
use breakwater_core::policy::retry::{
    decide, schedule, AttemptLedger, GiveUpReason, RequestFacts, RetryKind, RetryVerdict, Schedule,
    ScheduleInput, ServerDirectives,
};
use breakwater_core::Instant;
use http::{HeaderValue, Method, StatusCode};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ])
}

fn retryable_outcome() -> impl Strategy<Value = AttemptOutcome> {
    let response = |code| AttemptOutcome::Response {
        status: StatusCode::from_u16(code).unwrap(),
        elapsed: Duration::from_millis(30),
    };
    prop::sample::select(vec![
        AttemptOutcome::ConnectFailed(ConnectFailure::Refused),
        AttemptOutcome::ConnectionDeadBeforeWrite { reused: true },
        AttemptOutcome::ClosedBeforeResponse { reused: true },
        AttemptOutcome::ExchangeFailed,
        AttemptOutcome::AttemptTimedOut {
            elapsed: Duration::from_secs(10),
        },
        response(401),
        response(408),
        response(409),
        response(421),
        response(429),
        response(500),
        response(503),
    ])
}

/// A visible-ASCII caller key of 1..=40 characters.
fn caller_key() -> impl Strategy<Value = IdempotencyKey> {
    "[!-~]{1,40}".prop_map(|s| IdempotencyKey::new(&s).unwrap())
}

/// Whether `s` is a lowercase hyphenated version-4 UUID with the RFC 9562 variant.
fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

proptest! {
    #![proptest_config(config(128))]

    /// `one-key-per-call`: every dispatch of a logical call carries the same key (and the key
    /// header value is byte-identical), whatever kinds of retry happen; two calls never share a
    /// generated key; generated keys are UUIDv4; the same seed replays the same keys.
    #[test]
    fn one_key_per_call_unique_across_calls(
        seed in any::<u64>(),
        calls in prop::collection::vec(
            (method(), prop::option::of(caller_key()), prop::collection::vec(retryable_outcome(), 0..8)),
            1..30,
        ),
        sf in any::<bool>(),
    ) {
        let format = if sf { KeyWireFormat::SfString } else { KeyWireFormat::Raw };
        let config = IdempotencyConfig::default().with_auto_keys(true).with_wire_format(format);
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut generated = BTreeSet::new();
        let mut replay = Vec::new();
        for (method, caller, outcomes) in &calls {
            let call_key = key_for_call(&config, method, caller.clone(), &mut rng);
            if let CallKey::Generated(key) = &call_key {
                prop_assert!(is_uuid_v4(key.as_str()), "{}", key);
                prop_assert!(generated.insert(key.as_str().to_owned()), "key reused: {}", key);
                replay.push(key.clone());
            }
            let request = RequestFacts {
                idempotent: breakwater_core::policy::idempotency::is_idempotent(method),
                keyed: call_key.is_keyed(),
                body_replayable: true,
            };
            // Every dispatch builds its header from the call's key; collect what was sent.
            let header = |k: &CallKey| k.key().map(|k| k.header_value(format));
            let mut sent: Vec<Option<HeaderValue>> = vec![header(&call_key)];
            let ctx = ClassifyContext { keyed: request.keyed, token_authenticated: true, ..ClassifyContext::default() };
            let mut ledger = AttemptLedger::new(10);
            for outcome in outcomes {
                let v = decide(&classify(outcome, &ctx), &request, &ServerDirectives::default(), &ledger);
                if let RetryVerdict::Retry(_) = v {
                    ledger.record(&v);
                    sent.push(header(&call_key));
                } else {
                    break;
                }
            }
            prop_assert!(sent.windows(2).all(|w| w[0] == w[1]));
            if let Some(mine) = caller {
                prop_assert_eq!(call_key.key(), Some(mine));
            }
        }
        // The same seed replays the same keys.
        let mut again = fastrand::Rng::with_seed(seed);
        let replayed: Vec<IdempotencyKey> = calls
            .iter()
            .filter_map(|(m, c, _)| match key_for_call(&config, m, c.clone(), &mut again) {
                CallKey::Generated(k) => Some(k),
                _ => None,
            })
            .collect();
        prop_assert_eq!(replayed, replay);
    }

    /// `no-undeclared-keys`: without a declaration and without a caller's key, no
    /// call is keyed; with the declaration only POST and PATCH get a generated key.
    #[test]
    fn no_key_without_declaration(m in method(), seed in any::<u64>()) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let undeclared = IdempotencyConfig::default();
        prop_assert_eq!(key_for_call(&undeclared, &m, None, &mut rng), CallKey::None);
        let declared = IdempotencyConfig::default().with_auto_keys(true);
        let keyed = key_for_call(&declared, &m, None, &mut rng).is_keyed();
        prop_assert_eq!(keyed, m == Method::POST || m == Method::PATCH);
    }

    /// `keyed-409-and-422`: 422 on a keyed request is terminal whatever the call's state; 409 on a
    /// keyed request is retried only when the budget pays and the deadline leaves room.
    #[test]
    fn keyed_409_within_budget_and_deadline_422_terminal(
        idempotent in any::<bool>(),
        retries_used in 0u32..4,
        deposits in 0u32..12,
        left_ms in 0u64..5_000,
        delay_ms in 0u64..5_000,
    ) {
        let request = RequestFacts { idempotent, keyed: true, body_replayable: true };
        let ctx = ClassifyContext { keyed: true, ..ClassifyContext::default() };
        let mut ledger = AttemptLedger::new(3);
        for _ in 0..retries_used {
            ledger.record(&RetryVerdict::Retry(RetryKind::Ordinary.plan()));
        }
        let response = |code| AttemptOutcome::Response {
            status: StatusCode::from_u16(code).unwrap(),
            elapsed: Duration::from_millis(30),
        };
        let none = ServerDirectives::default();

        let v = decide(&classify(&response(422), &ctx), &request, &none, &ledger);
        prop_assert_eq!(
            v,
            RetryVerdict::GiveUp(GiveUpReason::NotRetryable(NoRetryReason::IdempotencyKeyMismatch))
        );

        let now = Instant::ZERO + Duration::from_secs(100);
        let mut budget =
            RetryBudget::new(RetryBudgetConfig::default().with_min_retries_per_sec(0)).unwrap();
        for _ in 0..deposits {
            budget.deposit(now);
        }
        let before = budget.balance(now);
        let c = classify(&response(409), &ctx);
        prop_assert_eq!(c.breaker, breakwater_core::policy::outcome::BreakerEffect::Ignore);
        let v = decide(&c, &request, &none, &ledger);
        let sched = schedule(&ScheduleInput {
            now,
            deadline: now + Duration::from_millis(left_ms),
            delay: Duration::from_millis(delay_ms),
            min_delay: Duration::from_millis(delay_ms),
            retry_after: None,
            retry_after_cap: Duration::from_secs(60),
            attempt_floor: Duration::ZERO,
        });
        let retried = match (v, sched) {
            (RetryVerdict::Retry(plan), Schedule::Proceed { at, .. }) => {
                prop_assert_eq!(plan.kind, RetryKind::KeyedConflict);
                prop_assert!(plan.counts_as_attempt && plan.charge_budget);
                prop_assert!(at <= now + Duration::from_millis(left_ms));
                matches!(budget.charge(now, v), RetryVerdict::Retry(_))
            }
            _ => false,
        };
        if retried {
            prop_assert!(before >= budget.withdrawal_cost());
            prop_assert_eq!(before - budget.balance(now), budget.withdrawal_cost());
            prop_assert!(ledger.counted_attempts() < 3);
            prop_assert!(delay_ms <= left_ms);
        } else {
            let possible = ledger.counted_attempts() < 3
                && delay_ms <= left_ms
                && before >= budget.withdrawal_cost();
            prop_assert!(!possible, "a 409 that every limit allowed was not retried");
        }
    }
}
