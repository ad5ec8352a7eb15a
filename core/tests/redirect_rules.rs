//! The redirect rule (docs/spec/redirect.md) as a table over status ×
//! method × body × same or other origin × scheme change, and a property:
//! whatever the chain, a credential never reaches an origin other than the
//! first.

use breakwater_core::redirect::{
    decide, next_headers, BodyKind, DeliverReason, Hop, NextHop, RedirectDecision, RedirectError,
    RedirectPolicy,
};
use breakwater_core::{Origin, Scheme};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use proptest::prelude::*;

fn origin(scheme: Scheme, host: &str) -> Origin {
    let port = if scheme == Scheme::Https { 443 } else { 80 };
    Origin::new(scheme, host, port)
}

/// What a row expects: follow with (method, keep body, strip credentials,
/// keep key), deliver, or fail.
#[derive(Debug, PartialEq)]
enum Want {
    Follow(&'static str, bool, bool, bool),
    Deliver(DeliverReason),
    Fail(RedirectError),
}

use BodyKind::{None as NoBody, OneShot, Replayable};

#[test]
fn the_redirect_table() {
    let api = origin(Scheme::Https, "api.test");
    let other = origin(Scheme::Https, "other.test");
    let plain = origin(Scheme::Http, "api.test");
    #[rustfmt::skip]
    let rows: Vec<(u16, Method, BodyKind, &Origin, Want)> = vec![
        // 301 and 302: POST becomes GET without its body, as browsers and reqwest do.
        (301, Method::POST, Replayable, &api, Want::Follow("GET", false, false, false)),
        (302, Method::POST, Replayable, &api, Want::Follow("GET", false, false, false)),
        (302, Method::POST, OneShot, &api, Want::Follow("GET", false, false, false)),
        (301, Method::GET, NoBody, &api, Want::Follow("GET", false, false, false)),
        (302, Method::PUT, Replayable, &api, Want::Follow("PUT", true, false, false)),
        // A kept method keeps its body: a streamed one cannot go again.
        (301, Method::PUT, OneShot, &api, Want::Deliver(DeliverReason::BodyNotReplayable)),
        (302, Method::PATCH, OneShot, &other, Want::Deliver(DeliverReason::BodyNotReplayable)),
        (301, Method::DELETE, NoBody, &api, Want::Follow("DELETE", false, false, false)),
        (302, Method::HEAD, NoBody, &other, Want::Follow("HEAD", false, true, false)),
        // 303: GET without a body, except HEAD.
        (303, Method::POST, Replayable, &api, Want::Follow("GET", false, false, false)),
        (303, Method::PUT, Replayable, &other, Want::Follow("GET", false, true, false)),
        (303, Method::DELETE, NoBody, &api, Want::Follow("GET", false, false, false)),
        (303, Method::HEAD, NoBody, &api, Want::Follow("HEAD", false, false, false)),
        (303, Method::POST, OneShot, &api, Want::Follow("GET", false, false, false)),
        // 307 and 308: the same method and body, if the body can go again.
        (307, Method::POST, Replayable, &api, Want::Follow("POST", true, false, true)),
        (308, Method::PUT, Replayable, &api, Want::Follow("PUT", true, false, true)),
        (307, Method::GET, NoBody, &api, Want::Follow("GET", false, false, true)),
        (307, Method::POST, Replayable, &other, Want::Follow("POST", true, true, false)),
        (308, Method::PATCH, Replayable, &other, Want::Follow("PATCH", true, true, false)),
        (307, Method::POST, OneShot, &api, Want::Deliver(DeliverReason::BodyNotReplayable)),
        (308, Method::PUT, OneShot, &other, Want::Deliver(DeliverReason::BodyNotReplayable)),
        // Other statuses are responses.
        (300, Method::GET, NoBody, &api, Want::Deliver(DeliverReason::NotFollowed)),
        (304, Method::GET, NoBody, &api, Want::Deliver(DeliverReason::NotFollowed)),
        (305, Method::GET, NoBody, &api, Want::Deliver(DeliverReason::NotFollowed)),
        (200, Method::GET, NoBody, &api, Want::Deliver(DeliverReason::NotFollowed)),
        // https to http is refused, whatever the status.
        (301, Method::GET, NoBody, &plain, Want::Fail(RedirectError::Downgrade)),
        (307, Method::POST, Replayable, &plain, Want::Fail(RedirectError::Downgrade)),
    ];
    for (status, method, body, to, want) in rows {
        let hop = Hop {
            status: StatusCode::from_u16(status).unwrap(),
            method: &method,
            body,
            from: &api,
            to,
            hops_so_far: 0,
            visited_with: &[],
            sets_kept_cookie: false,
        };
        let got = match decide(&hop, &RedirectPolicy::default()) {
            RedirectDecision::Follow(NextHop {
                method,
                keep_body,
                strip_credentials,
                keep_idempotency_key,
            }) => {
                let method: &'static str = Box::leak(method.to_string().into_boxed_str());
                Want::Follow(method, keep_body, strip_credentials, keep_idempotency_key)
            }
            RedirectDecision::Deliver(reason) => Want::Deliver(reason),
            RedirectDecision::Fail(error) => Want::Fail(error),
        };
        assert_eq!(got, want, "{status} after {method} {body:?} to {to}");
    }
}

#[test]
fn limits_loops_and_policy() {
    let api = origin(Scheme::Https, "api.test");
    let plain = origin(Scheme::Http, "api.test");
    let get = [Method::GET];
    let hop = |hops_so_far, visited_before: bool, to| Hop {
        status: StatusCode::FOUND,
        method: &Method::GET,
        body: NoBody,
        from: &api,
        to,
        hops_so_far,
        visited_with: if visited_before { &get[..] } else { &[] },
        sets_kept_cookie: false,
    };
    let policy = RedirectPolicy::default();
    assert!(matches!(
        decide(&hop(9, false, &api), &policy),
        RedirectDecision::Follow(_)
    ));
    assert_eq!(
        decide(&hop(10, false, &api), &policy),
        RedirectDecision::Fail(RedirectError::TooManyHops { limit: 10 })
    );
    assert_eq!(
        decide(&hop(1, true, &api), &policy),
        RedirectDecision::Fail(RedirectError::Loop)
    );
    let off = RedirectPolicy {
        max_hops: 0,
        ..policy
    };
    assert_eq!(
        decide(&hop(0, false, &api), &off),
        RedirectDecision::Deliver(DeliverReason::Disabled)
    );
    let lax = RedirectPolicy {
        allow_https_to_http: true,
        ..policy
    };
    assert!(matches!(
        decide(&hop(0, false, &plain), &lax),
        RedirectDecision::Follow(_)
    ));
}

#[test]
fn a_dropped_body_takes_its_headers_with_it() {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("accept", HeaderValue::from_static("application/json"));
    let next = NextHop {
        method: Method::GET,
        keep_body: false,
        strip_credentials: false,
        keep_idempotency_key: false,
    };
    headers.insert("idempotency-key", HeaderValue::from_static("k-1"));
    let key = HeaderName::from_static("idempotency-key");
    let out = next_headers(&headers, &next, &[], &key);
    assert!(out.get("content-type").is_none());
    assert!(
        out.get("idempotency-key").is_none(),
        "the key's rule drops a plain key too"
    );
    assert_eq!(out["accept"], "application/json");
    let same = NextHop {
        keep_idempotency_key: true,
        ..next
    };
    assert_eq!(
        next_headers(&headers, &same, &[], &key)["idempotency-key"],
        "k-1"
    );
}

#[test]
fn a_loop_is_the_same_method_to_the_same_url_unless_a_kept_cookie_changed_it() {
    let api = origin(Scheme::Https, "api.test");
    let hop = |status: u16, method, visited_with, sets_kept_cookie| Hop {
        status: StatusCode::from_u16(status).unwrap(),
        method,
        body: NoBody,
        from: &api,
        to: &api,
        hops_so_far: 1,
        visited_with,
        sets_kept_cookie,
    };
    let policy = RedirectPolicy::default();
    let post = [Method::POST];
    let get = [Method::GET];
    // A POST answered 303 to its own URL becomes a GET there: a new request.
    assert!(matches!(
        decide(&hop(303, &Method::POST, &post, false), &policy),
        RedirectDecision::Follow(_)
    ));
    assert_eq!(
        decide(&hop(302, &Method::GET, &get, false), &policy),
        RedirectDecision::Fail(RedirectError::Loop)
    );
    assert!(matches!(
        decide(&hop(302, &Method::GET, &get, true), &policy),
        RedirectDecision::Follow(_)
    ));
}

fn hosts() -> impl Strategy<Value = (bool, u8)> {
    // (https?, which of three hosts)
    (any::<bool>(), 0u8..3)
}

proptest! {
    /// A chain of redirects across origins: once the chain has left the
    /// first origin, no credential header (Authorization, Cookie,
    /// Proxy-Authorization, a name marked sensitive, a value marked
    /// sensitive) is sent again, even if the chain comes back.
    #[test]
    fn credentials_never_cross_an_origin(
        chain in prop::collection::vec((hosts(), prop::sample::select(vec![301u16, 302, 303, 307, 308])), 1..8),
    ) {
        let start = origin(Scheme::Https, "h0.test");
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer s3cret"));
        headers.insert("cookie", HeaderValue::from_static("s=s3cret"));
        headers.insert("x-api-key", HeaderValue::from_static("s3cret"));
        let mut marked = HeaderValue::from_static("s3cret");
        marked.set_sensitive(true);
        headers.insert("x-other-secret", marked);
        let sensitive = [HeaderName::from_static("x-api-key")];
        let policy = RedirectPolicy { allow_https_to_http: true, ..RedirectPolicy::default() };
        let mut at = start.clone();
        let mut left = false;
        for (i, ((https, host), status)) in chain.into_iter().enumerate() {
            let scheme = if https { Scheme::Https } else { Scheme::Http };
            let to = origin(scheme, &format!("h{host}.test"));
            let hop = Hop {
                status: StatusCode::from_u16(status).unwrap(),
                method: &Method::GET,
                body: NoBody,
                from: &at,
                to: &to,
                hops_so_far: i as u32,
                visited_with: &[],
                sets_kept_cookie: false,
            };
            let RedirectDecision::Follow(next) = decide(&hop, &policy) else { break };
            headers = next_headers(&headers, &next, &sensitive, &HeaderName::from_static("idempotency-key"));
            left |= to != start;
            if left {
                for (name, value) in &headers {
                    prop_assert!(value != "s3cret" && value != "Bearer s3cret" && value != "s=s3cret",
                        "{name} reached {to} after the chain left {start}");
                }
            }
            at = to;
        }
    }
}
