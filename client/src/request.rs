//! A request being built, and what `send` hands to the driver.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use breakwater_core::h1::BodyLength;
use breakwater_core::policy::idempotency::{Idempotence, IdempotencyKey};
use breakwater_core::redirect::RedirectPolicy;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;
use url::Url;

use breakwater_core::request::{is_credential, plan_headers, HeaderLayers};

use crate::driver::{self, CallOverrides, Prepared};
use crate::error::{Error, ErrorKind};
use crate::io::BodyStream;
use crate::response::Response;
use crate::state::Inner;
use crate::urls::{origin_of, MAX_URL_LEN};

/// A header name and value from anything `http` converts, or the builder error.
pub(crate) fn header_pair<K, V>(name: K, value: V) -> Result<(HeaderName, HeaderValue), Error>
where
    HeaderName: TryFrom<K>,
    <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
    HeaderValue: TryFrom<V>,
    <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
{
    let name = HeaderName::try_from(name)
        .map_err(|e| Error::new(ErrorKind::Builder).with_source(e.into()))?;
    let value = HeaderValue::try_from(value).map_err(|e| {
        Error::new(ErrorKind::Builder)
            .with_message(format!("the value of {name} is not a valid header value"))
            .with_source(e.into())
    })?;
    Ok((name, value))
}

/// A request being built; [`send`](RequestBuilder::send) runs it.
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    inner: Arc<Inner>,
    method: Method,
    url: Result<Url, Error>,
    /// Headers set: each name replaces the client's defaults of that name.
    headers: HeaderMap,
    /// Headers appended: added to whatever else is sent.
    appended: HeaderMap,
    /// The `Content-Type` of the body helper used, if any.
    body_type: Option<HeaderValue>,
    body: Bytes,
    has_body: bool,
    stream: Option<BodyStream>,
    timeout: Option<Duration>,
    attempts: Option<u32>,
    key: Option<IdempotencyKey>,
    idempotence: Idempotence,
    redirects: Option<RedirectPolicy>,
    decompress: bool,
    error: Option<Error>,
}

impl fmt::Debug for RequestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("method", &self.method)
            .field(
                "url",
                &self.url.as_ref().map(crate::error::redacted_url).ok(),
            )
            .field("headers", &self.headers)
            .field("appended", &self.appended)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl RequestBuilder {
    /// A request for `method` to `url` (already joined onto the base URL) on the client `inner`.
    pub(crate) fn new(inner: Arc<Inner>, method: Method, url: Result<Url, Error>) -> Self {
        RequestBuilder {
            inner,
            method,
            url,
            headers: HeaderMap::new(),
            appended: HeaderMap::new(),
            body_type: None,
            body: Bytes::new(),
            has_body: false,
            stream: None,
            timeout: None,
            attempts: None,
            key: None,
            idempotence: Idempotence::ByMethod,
            redirects: None,
            decompress: true,
            error: None,
        }
    }

    /// Sets a header: it replaces the client's default of the same name (and
    /// an earlier `header` call's). A per-request `Authorization` wins over
    /// the client's credentials for this request. Names and values may be
    /// `&str`; an invalid one fails [`send`](Self::send).
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        match header_pair(name, value) {
            Ok((name, value)) => {
                self.headers
                    .insert(name.clone(), sensitive_if_credential(&name, value));
            }
            Err(e) => self.fail(e),
        }
        self
    }

    /// Adds a header value without replacing anything: for a deliberate
    /// repeat of a header the client or the request already sends.
    pub fn header_append<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        match header_pair(name, value) {
            Ok((name, value)) => {
                self.appended
                    .append(name.clone(), sensitive_if_credential(&name, value));
            }
            Err(e) => self.fail(e),
        }
        self
    }

    /// The method and URL this request will name in its errors, if its URL parsed.
    pub(crate) fn names(&self) -> Option<(Method, Url)> {
        self.url
            .as_ref()
            .ok()
            .map(|url| (self.method.clone(), url.clone()))
    }

    /// Fails [`send`](Self::send) with `error`, unless an earlier mistake
    /// already will: for body helpers that live in other modules.
    pub(crate) fn fail_with(mut self, error: Error) -> Self {
        self.error.get_or_insert(error);
        self
    }

    /// Keeps the first mistake, for `send` to report.
    fn fail(&mut self, error: Error) {
        let error = Error::new(ErrorKind::Request)
            .with_message(error.to_string())
            .with_source(error);
        self.error.get_or_insert(error);
    }

    /// Adds query pairs, percent-encoded.
    pub fn query<K: AsRef<str>, V: AsRef<str>>(mut self, pairs: &[(K, V)]) -> Self {
        if let Ok(url) = &mut self.url {
            let mut query = url.query_pairs_mut();
            for (k, v) in pairs {
                query.append_pair(k.as_ref(), v.as_ref());
            }
        }
        self
    }

    /// Sends `value` as a JSON body (`Content-Type: application/json`).
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => {
                self.set_body(body.into());
                self.body_type = Some(HeaderValue::from_static("application/json"));
            }
            Err(e) => {
                self.error = Some(
                    Error::new(ErrorKind::Request)
                        .with_message("JSON body")
                        .with_source(e),
                )
            }
        }
        self
    }

    /// Sends `pairs` as an `application/x-www-form-urlencoded` body.
    pub fn form<K: AsRef<str>, V: AsRef<str>>(mut self, pairs: &[(K, V)]) -> Self {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
            .finish();
        self.set_body(body.into());
        self.body_type = Some(HeaderValue::from_static(
            "application/x-www-form-urlencoded",
        ));
        self
    }

    /// Sends these bytes as the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.set_body(body.into());
        self
    }

    /// Streams the body from `stream`, with chunked framing, as it is produced.
    ///
    /// A streamed body cannot be sent twice, so the call is retried only on
    /// evidence that no byte of it left (a refused connect, a stale pooled
    /// connection found dead before writing), whatever the method; a body
    /// that must survive retries should be buffered with [`body`](Self::body).
    pub fn body_stream<S>(mut self, stream: S) -> Self
    where
        S: futures_lite::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        self.stream = Some(Box::pin(stream));
        self.has_body = true;
        self.body_type = None;
        self
    }

    fn set_body(&mut self, body: Bytes) {
        self.body = body;
        self.stream = None;
        self.has_body = true;
        self.body_type = None;
    }

    /// The total time this call may take (overrides the client's).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The most attempts this call may make (1 disables retries; capped at 10).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = Some(attempts);
        self
    }

    /// Sends this idempotency key on every attempt, making a POST safe to retry.
    pub fn idempotency_key(mut self, key: &str) -> Self {
        match IdempotencyKey::new(key) {
            Ok(key) => self.key = Some(key),
            Err(e) => {
                self.error = Some(
                    Error::new(ErrorKind::Request).with_message(format!("idempotency key: {e}")),
                )
            }
        }
        self
    }

    /// Declares this request idempotent (safe to resend) whatever its method.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotence = if idempotent {
            Idempotence::Idempotent
        } else {
            Idempotence::NonIdempotent
        };
        self
    }

    /// How this request follows redirects, instead of the client's or its
    /// origin's policy; [`RedirectPolicy::NONE`] delivers a redirect as it is.
    pub fn redirects(mut self, policy: RedirectPolicy) -> Self {
        self.redirects = Some(policy);
        self
    }

    /// Whether this response's body is decoded, when the client decodes
    /// bodies (on by default). Off, the body comes as the server sent it,
    /// with its `Content-Encoding`: for a proxy, or a download kept compressed.
    pub fn decompress(mut self, on: bool) -> Self {
        self.decompress = on;
        self
    }

    /// Sends the request and returns the response head; read the body from it.
    ///
    /// An HTTP error status is a response, not an error: use
    /// [`Response::error_for_status`] to turn it into one.
    pub async fn send(self) -> Result<Response, Error> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let url = self.url?;
        // http::Uri's limit, checked here for every origin: a longer URL is
        // refused before it takes a permit or a connection.
        if url.as_str().len() > MAX_URL_LEN {
            return Err(Error::new(ErrorKind::Request).with_message(format!(
                "URL of {} bytes (the limit is {MAX_URL_LEN})",
                url.as_str().len()
            )));
        }
        let inner = self.inner;
        // Most calls go to the base origin: recognise it without building a new one.
        let base = &inner.base_origin;
        let same_origin = url.scheme() == base.scheme().as_str()
            && url
                .host_str()
                .is_some_and(|h| h.eq_ignore_ascii_case(base.host()))
            && url.port_or_known_default() == Some(base.port());
        let origin = if same_origin {
            base.clone()
        } else {
            origin_of(&url)?
        };
        // A request that sets no header of its own sends the client's
        // planned headers as they are, shared, not copied.
        let plain = self.headers.is_empty() && self.appended.is_empty() && self.body_type.is_none();
        let (headers, caller_authorized) = if plain {
            let shared = if same_origin {
                &inner.base_headers
            } else {
                &inner.foreign_headers
            };
            (shared.clone(), false)
        } else {
            let planned = plan_headers(HeaderLayers {
                defaults: &inner.default_headers,
                credentials: &inner.credentials.headers,
                body_type: self.body_type.as_ref(),
                set: &self.headers,
                appended: &self.appended,
                to_base_origin: same_origin,
            })
            .map_err(|e| {
                Error::new(ErrorKind::Request)
                    .with_message(e.to_string())
                    .with_source(e)
                    .with_origin(origin.clone())
            })?;
            (Arc::new(planned.headers), planned.caller_authorized)
        };
        // A request that brought its own Authorization is the caller's: the
        // client's tokens neither replace it nor answer its 401.
        let tokens = same_origin && inner.credentials.tokens.is_some() && !caller_authorized;
        let body_length = match (&self.stream, self.has_body) {
            (Some(_), _) => BodyLength::Streamed,
            (None, true) => BodyLength::Known(self.body.len() as u64),
            (None, false) => BodyLength::None,
        };
        let proxy_form = inner.http_proxy_form(&origin);
        let request = Prepared {
            method: self.method,
            url,
            origin,
            headers,
            body: self.body,
            body_replayable: self.stream.is_none(),
            stream: self.stream,
            body_length,
            tokens,
            decompress: self.decompress,
            proxy_form,
        };
        let overrides = CallOverrides {
            body_replayable: request.body_replayable,
            idempotence: self.idempotence,
            key: self.key,
            timeout: self.timeout,
            attempts: self.attempts,
        };
        // Logs name the URL with its query values redacted (they may hold keys).
        let shown = crate::error::redacted_url(&request.url);
        let span = tracing::debug_span!("call", method = %request.method, url = %shown);
        tracing::Instrument::instrument(
            driver::run(inner, request, overrides, self.redirects),
            span,
        )
        .await
    }
}

/// `value`, marked sensitive if `name` carries a credential, so that the
/// request's `Debug` never shows it.
fn sensitive_if_credential(name: &HeaderName, mut value: HeaderValue) -> HeaderValue {
    if is_credential(name) {
        value.set_sensitive(true);
    }
    value
}
