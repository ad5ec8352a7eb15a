//! Whether to follow a redirect, and what the next request carries: the rule
//! decided here, a pure function of the response and the request
//! (docs/spec/redirect.md). Following it is the driver's work.
//!
//! ```
//! use breakwater_core::redirect::{decide, BodyKind, Hop, RedirectDecision, RedirectPolicy};
//! use breakwater_core::{Origin, Scheme};
//! use http::{Method, StatusCode};
//!
//! let api = Origin::new(Scheme::Https, "api.example.com", 443);
//! let cdn = Origin::new(Scheme::Https, "cdn.example.com", 443);
//! let hop = Hop {
//!     status: StatusCode::SEE_OTHER,
//!     method: &Method::POST,
//!     body: BodyKind::Replayable,
//!     from: &api,
//!     to: &cdn,
//!     hops_so_far: 0,
//!     visited_with: &[],
//!     sets_kept_cookie: false,
//! };
//! let RedirectDecision::Follow(next) = decide(&hop, &RedirectPolicy::default()) else { panic!() };
//! assert_eq!(next.method, Method::GET);
//! assert!(!next.keep_body && next.strip_credentials && !next.keep_idempotency_key);
//! ```

use std::fmt;

use http::header::{
    HeaderMap, HeaderName, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING,
};
use http::{Method, StatusCode};

use crate::request::is_credential;
use crate::{Origin, Scheme};

/// How redirects are followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedirectPolicy {
    /// The most redirects one call follows (default 10; 0 follows none).
    pub max_hops: u32,
    /// Whether an `https` page may send the call to plain `http` (default no).
    pub allow_https_to_http: bool,
}

impl RedirectPolicy {
    /// Redirects are not followed: a redirect response is delivered as it is.
    pub const NONE: RedirectPolicy = RedirectPolicy {
        max_hops: 0,
        allow_https_to_http: false,
    };

    /// Follows up to `max_hops` redirects, never from `https` to `http`.
    pub fn limited(max_hops: u32) -> RedirectPolicy {
        RedirectPolicy {
            max_hops,
            ..RedirectPolicy::default()
        }
    }

    /// Allows (or refuses) a redirect from `https` to plain `http`.
    pub fn with_https_to_http(mut self, allow: bool) -> RedirectPolicy {
        self.allow_https_to_http = allow;
        self
    }
}

impl Default for RedirectPolicy {
    fn default() -> Self {
        RedirectPolicy {
            max_hops: 10,
            allow_https_to_http: false,
        }
    }
}

/// What the request's body can do again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    None,
    /// Bytes the client keeps (bytes, JSON, a form): sendable again.
    Replayable,
    /// A stream consumed by its first sending.
    OneShot,
}

/// One redirect response, and the request it answered.
#[derive(Clone, Copy, Debug)]
pub struct Hop<'a> {
    /// The response's status.
    pub status: StatusCode,
    /// The request's method.
    pub method: &'a Method,
    /// The request's body.
    pub body: BodyKind,
    /// The origin the request went to.
    pub from: &'a Origin,
    /// The origin `Location` points to (resolved against the request's URL).
    pub to: &'a Origin,
    /// Redirects this call has followed already.
    pub hops_so_far: u32,
    /// The methods with which the chain has already requested `Location`'s URL.
    pub visited_with: &'a [Method],
    /// Whether the redirect set a cookie the client's jar keeps: the same
    /// request again is then not the same (a login or consent step).
    pub sets_kept_cookie: bool,
}

/// The next request of a followed redirect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// Its method.
    pub method: Method,
    /// Whether the body goes again (307 and 308 only).
    pub keep_body: bool,
    /// The target is another origin: every credential header is removed,
    /// and stays removed for the rest of the chain.
    pub strip_credentials: bool,
    /// The idempotency key goes on: a 307 or 308 to the same origin, the
    /// same request again.
    pub keep_idempotency_key: bool,
}

/// What to do with a redirect response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedirectDecision {
    /// Follow it with this request.
    Follow(NextHop),
    /// Deliver the response as it is.
    Deliver(DeliverReason),
    /// Fail the call.
    Fail(RedirectError),
}

/// Why a redirect response is delivered rather than followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliverReason {
    /// Not a redirect that is followed (300, 304, 305, any other status).
    NotFollowed,
    /// Redirects are off (`max_hops` is 0).
    Disabled,
    /// The next request must send the body again (a 307 or 308, or a 301
    /// or 302 that keeps a method such as `PUT`), and a streamed body cannot be.
    BodyNotReplayable,
}

/// Why a chain of redirects fails the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectError {
    /// More redirects than `max_hops`.
    TooManyHops {
        /// The limit.
        limit: u32,
    },
    /// The chain came back to a URL it had requested already.
    Loop,
    /// From `https` to plain `http`, which the policy refuses.
    Downgrade,
}

impl fmt::Display for RedirectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedirectError::TooManyHops { limit } => {
                write!(f, "the server redirected more than {limit} times")
            }
            RedirectError::Loop => f.write_str("the redirects went round in a loop"),
            RedirectError::Downgrade => {
                f.write_str("a redirect from https to plain http was refused")
            }
        }
    }
}

impl std::error::Error for RedirectError {}

/// Whether to follow `hop`, and how (docs/spec/redirect.md#the-rule).
pub fn decide(hop: &Hop<'_>, policy: &RedirectPolicy) -> RedirectDecision {
    let keeps_method = match hop.status.as_u16() {
        301 | 302 => *hop.method != Method::POST,
        303 => *hop.method == Method::HEAD,
        307 | 308 => true,
        _ => return RedirectDecision::Deliver(DeliverReason::NotFollowed),
    };
    if policy.max_hops == 0 {
        return RedirectDecision::Deliver(DeliverReason::Disabled);
    }
    if hop.hops_so_far >= policy.max_hops {
        return RedirectDecision::Fail(RedirectError::TooManyHops {
            limit: policy.max_hops,
        });
    }
    let method = if keeps_method {
        hop.method.clone()
    } else {
        Method::GET
    };
    // Coming back to a request the chain made already is a loop, unless a
    // kept cookie changed it; the hop limit bounds such a chain.
    if !hop.sets_kept_cookie && hop.visited_with.contains(&method) {
        return RedirectDecision::Fail(RedirectError::Loop);
    }
    if hop.from.scheme() == Scheme::Https
        && hop.to.scheme() == Scheme::Http
        && !policy.allow_https_to_http
    {
        return RedirectDecision::Fail(RedirectError::Downgrade);
    }
    // A kept method keeps its body, whatever the status: a `PUT` answered
    // 301 is the same `PUT` again, body included.
    let keep_body = keeps_method && hop.body != BodyKind::None;
    if keep_body && hop.body == BodyKind::OneShot {
        return RedirectDecision::Deliver(DeliverReason::BodyNotReplayable);
    }
    let resends_body = matches!(hop.status.as_u16(), 307 | 308);
    let cross_origin = hop.from != hop.to;
    RedirectDecision::Follow(NextHop {
        method,
        keep_body,
        strip_credentials: cross_origin,
        keep_idempotency_key: resends_body && !cross_origin,
    })
}

/// The headers the next request carries: without its body's headers when
/// the body is dropped, without any credential (and any header in
/// `sensitive`) when it leaves the origin, and without an idempotency key
/// the caller set as a plain header (`key_header`) when the key's rule
/// drops it.
pub fn next_headers(
    headers: &HeaderMap,
    next: &NextHop,
    sensitive: &[HeaderName],
    key_header: &HeaderName,
) -> HeaderMap {
    let mut out = headers.clone();
    if !next.keep_idempotency_key {
        out.remove(key_header);
    }
    if !next.keep_body {
        for name in [
            CONTENT_TYPE,
            CONTENT_LENGTH,
            TRANSFER_ENCODING,
            CONTENT_ENCODING,
        ] {
            out.remove(name);
        }
    }
    if next.strip_credentials {
        // A `Host` the caller set named the first origin, not this one.
        out.remove(http::header::HOST);
        let doomed: Vec<HeaderName> = out
            .keys()
            .filter(|name| is_credential(name) || sensitive.contains(name))
            .cloned()
            .collect();
        for name in doomed {
            out.remove(name);
        }
        // A value marked sensitive is a credential whatever its name.
        let marked: Vec<HeaderName> = out
            .iter()
            .filter(|(_, value)| value.is_sensitive())
            .map(|(name, _)| name.clone())
            .collect();
        for name in marked {
            out.remove(name);
        }
    }
    out
}
