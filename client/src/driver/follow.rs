//! Following redirects: each hop a call of its own, the chain under one deadline.
//!
//! The rule (follow or not, which method, which headers and body go on) is
//! the core's [`redirect::decide`] and [`redirect::next_headers`]
//! (docs/spec/redirect.md); this module does what it says. Each hop is a
//! whole call of [`run`](super::run)'s loop: the target origin's breaker,
//! pool, concurrency cap and retry policy apply to it, and it has its own
//! timings. The first hop's deadline bounds every later one, so the chain
//! as a whole keeps the call's total timeout.

use std::fmt::Write as _;
use std::sync::Arc;

use breakwater_core::h1::BodyLength;
use breakwater_core::policy::idempotency::Idempotence;
use breakwater_core::redirect::{
    self, BodyKind, DeliverReason, Hop, RedirectDecision, RedirectPolicy,
};
use breakwater_core::{Instant, Origin};
use bytes::Bytes;
use http::header::LOCATION;
use http::Method;
use url::Url;

use super::{CallOverrides, Prepared};
use crate::error::{redacted_url, Error, ErrorKind, TimeoutPhase};
use crate::response::{Redirect, Response};
use crate::state::Inner;
use crate::urls::{origin_of, without_userinfo, MAX_URL_LEN};

/// What a chain of redirects has done so far.
#[derive(Default)]
pub(super) struct Chain {
    /// When the chain started: read at its first redirect, so that a call
    /// that is not redirected reads no clock for it.
    started: Option<Instant>,
    history: Vec<Redirect>,
    /// Whether the chain has left the first origin: its credentials (and the
    /// client's tokens) are then gone for good, even if the chain comes back.
    left_origin: bool,
}

impl Chain {
    /// Whether no redirect has been followed yet.
    pub(super) fn is_empty(&self) -> bool {
        self.started.is_none()
    }
}

/// Whether `response` is a redirect that could be followed.
pub(super) fn is_redirect(response: &Response) -> bool {
    response.status().is_redirection() && response.headers().contains_key(LOCATION)
}

/// What the next hop may need of the request a response answered: the
/// parts [`Response`] does not keep.
pub(super) struct Answered {
    pub(super) headers: Arc<http::HeaderMap>,
    pub(super) body: Bytes,
    pub(super) body_length: BodyLength,
    pub(super) origin: Origin,
    pub(super) tokens: bool,
    pub(super) decompress: bool,
    pub(super) idempotence: Idempotence,
    pub(super) attempts: Option<u32>,
}

/// Where a response leaves the call.
// Deliver, the large variant, is the common one and is moved out at once:
// boxing it would cost every call an allocation to save a redirect a copy.
#[allow(clippy::large_enum_variant)]
pub(super) enum Next {
    /// The call ends with this response.
    Deliver(Response),
    /// The call goes on with this request.
    Follow(Prepared, CallOverrides),
}

/// Whether `response` ends the call or is a redirect to follow, as the
/// policy allows (the request's own, else the answering origin's); a
/// followed redirect's response is let go before its next hop is made.
pub(super) async fn next(
    inner: &Inner,
    chain: &mut Chain,
    response: Response,
    answered: Answered,
    policy: Option<RedirectPolicy>,
) -> Result<Next, Error> {
    if !is_redirect(&response) {
        return Ok(Next::Deliver(finish(inner, response, chain)));
    }
    let Answered {
        headers,
        body,
        body_length,
        origin: from,
        tokens,
        decompress,
        idempotence,
        attempts,
    } = answered;
    let body_kind = match body_length {
        BodyLength::None => BodyKind::None,
        BodyLength::Streamed => BodyKind::OneShot,
        BodyLength::Known(_) => BodyKind::Replayable,
    };
    chain
        .started
        .get_or_insert_with(|| inner.runtime.now().saturating_sub(response.timings().total));
    let policy = policy.unwrap_or_else(|| inner.decide(|s| s.engine.config().redirects_for(&from)));
    let to_url = match location(&response) {
        Ok(url) => url,
        Err(message) => return Err(chain_error(&chain.history, &response, message)),
    };
    let to = origin_of(&to_url).map_err(|_| {
        chain_error(
            &chain.history,
            &response,
            format!(
                "the redirect points to {}, which names no origin",
                redacted_url(&to_url)
            ),
        )
    })?;
    // The methods with which the chain has requested `Location`'s URL.
    let visited_with: Vec<Method> = chain
        .history
        .iter()
        .map(|hop| (hop.method(), hop.url()))
        .chain([(response.method(), response.url())])
        .filter(|(_, url)| **url == to_url)
        .map(|(method, _)| method.clone())
        .collect();
    let hop = Hop {
        status: response.status(),
        method: response.method(),
        body: body_kind,
        from: &from,
        to: &to,
        hops_so_far: chain.history.len() as u32,
        visited_with: &visited_with,
        sets_kept_cookie: inner.cookies.is_some()
            && response.headers().contains_key(http::header::SET_COOKIE),
    };
    let next = match redirect::decide(&hop, &policy) {
        RedirectDecision::Follow(next) => next,
        RedirectDecision::Deliver(reason) => {
            let mut response = finish(inner, response, chain);
            if reason == DeliverReason::BodyNotReplayable {
                tracing::debug!(status = %response.status(), "redirect not followed: streamed body");
                response.set_note(format!(
                    "this {} was not followed: the request's body was streamed, and a \
                     streamed body cannot be sent again",
                    response.status()
                ));
            }
            return Ok(Next::Deliver(response));
        }
        RedirectDecision::Fail(error) => {
            return Err(
                chain_error(&chain.history, &response, error.to_string()).with_source(error)
            );
        }
    };
    chain.left_origin |= next.strip_credentials;
    let key = next
        .keep_idempotency_key
        .then(|| response.call_key().cloned())
        .flatten();
    let deadline = response.call_deadline();
    let total_for_target = inner.decide(|s| s.engine.config().total_timeout_for(&to));
    tracing::debug!(
        status = %response.status(),
        to = %redacted_url(&to_url),
        method = %next.method,
        "following a redirect"
    );
    let status = response.status();
    let (method, from_url, timings) = response.discard_for_redirect().await;
    let keep_method = next.method == method;
    chain
        .history
        .push(Redirect::new(method, from_url, status, timings));
    let remaining = deadline.saturating_duration_since(inner.runtime.now());
    if remaining.is_zero() {
        return Err(Error::new(ErrorKind::Timeout(TimeoutPhase::Total))
            .with_deadline_exceeded()
            .with_origin(to.clone())
            .with_request(&next.method, &to_url)
            .with_message(format!(
                "the deadline passed while following redirects: {}",
                describe_chain(&chain.history, None)
            )));
    }
    let (body, body_length) = if next.keep_body {
        (body, body_length)
    } else {
        (Bytes::new(), BodyLength::None)
    };
    let key_header = inner.decide(|s| s.engine.config().idempotency.header().clone());
    let next_headers = redirect::next_headers(&headers, &next, &inner.sensitive, &key_header);
    let proxy_form = inner.http_proxy_form(&to);
    let request = Prepared {
        headers: Arc::new(next_headers),
        method: next.method,
        url: to_url,
        origin: to,
        body,
        stream: None,
        body_replayable: true,
        body_length,
        tokens: tokens && !chain.left_origin,
        decompress,
        proxy_form,
    };
    let overrides = CallOverrides {
        body_replayable: true,
        // A declaration about the method holds while the method does.
        idempotence: if keep_method {
            idempotence
        } else {
            Idempotence::ByMethod
        },
        key,
        timeout: Some(remaining.min(total_for_target)),
        attempts,
    };
    Ok(Next::Follow(request, overrides))
}

/// The chain's last response, with its history, and its total time counted
/// from the chain's start.
fn finish(inner: &Inner, response: Response, chain: &mut Chain) -> Response {
    match chain.started {
        None => response,
        Some(started) => {
            let total = inner.runtime.now().saturating_duration_since(started);
            response.with_history(std::mem::take(&mut chain.history), total)
        }
    }
}

/// The URL a redirect response points to, resolved against the request's.
fn location(response: &Response) -> Result<Url, String> {
    let value = response
        .headers()
        .get(LOCATION)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .ok_or_else(|| "the redirect's Location is not UTF-8 text".to_owned())?;
    if value.len() > MAX_URL_LEN {
        return Err(format!(
            "the redirect's Location is {} bytes long (the limit is {MAX_URL_LEN})",
            value.len()
        ));
    }
    let mut url = response
        .url()
        .join(value.trim())
        .map_err(|e| format!("the redirect's Location is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the redirect points to a {} URL, and only http and https are followed",
            url.scheme()
        ));
    }
    // A fragment is never sent; two URLs that differ only by one are one request.
    url.set_fragment(None);
    without_userinfo(url, ErrorKind::Redirect).map_err(|e| e.to_string())
}

/// The error that ends a chain, naming every hop of it.
fn chain_error(history: &[Redirect], last: &Response, reason: String) -> Error {
    let mut error = Error::new(ErrorKind::Redirect)
        .with_message(format!("{reason}: {}", describe_chain(history, Some(last))))
        .with_request(last.method(), last.url());
    if let Ok(origin) = origin_of(last.url()) {
        error = error.with_origin(origin);
    }
    error
}

/// `GET https://a.test/x (302) → https://a.test/y (302) → …`, with query
/// values redacted.
fn describe_chain(history: &[Redirect], last: Option<&Response>) -> String {
    let mut out = String::new();
    let hops = history
        .iter()
        .map(|hop| (hop.method(), hop.url(), hop.status()))
        .chain(last.map(|r| (r.method(), r.url(), r.status())));
    for (i, (method, url, status)) in hops.enumerate() {
        if i > 0 {
            out.push_str(" → ");
        }
        let _ = write!(out, "{method} {} ({})", redacted_url(url), status.as_u16());
    }
    out
}
