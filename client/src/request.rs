//! A request being built, and what `send` hands to the driver.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use breakwater_core::h1::BodyLength;
use breakwater_core::policy::idempotency::{Idempotence, IdempotencyKey};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;
use url::Url;

use crate::auth::Credentials;
use crate::driver::{self, CallOverrides, Prepared};
use crate::error::{Error, ErrorKind};
use crate::io::BodyStream;
use crate::response::Response;
use crate::state::Inner;
use crate::urls::{origin_of, MAX_URL_LEN};

/// A request being built; [`send`](RequestBuilder::send) runs it.
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    inner: Arc<Inner>,
    method: Method,
    url: Result<Url, Error>,
    headers: HeaderMap,
    body: Bytes,
    has_body: bool,
    stream: Option<BodyStream>,
    timeout: Option<Duration>,
    attempts: Option<u32>,
    key: Option<IdempotencyKey>,
    idempotence: Idempotence,
    error: Option<Error>,
}

impl fmt::Debug for RequestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("method", &self.method)
            .field("url", &self.url.as_ref().map(Url::as_str).ok())
            .field("headers", &self.headers)
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
            body: Bytes::new(),
            has_body: false,
            stream: None,
            timeout: None,
            attempts: None,
            key: None,
            idempotence: Idempotence::ByMethod,
            error: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
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
                self.headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                self.set_body(body.into());
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
        self.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        self.set_body(body.into());
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
        self
    }

    fn set_body(&mut self, body: Bytes) {
        self.body = body;
        self.stream = None;
        self.has_body = true;
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
        let tokens = same_origin && matches!(inner.credentials, Credentials::Tokens(_));

        let mut headers = inner.default_headers.clone();
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        if let (true, Credentials::Header(name, value)) = (same_origin, &inner.credentials) {
            headers.insert(name.clone(), value.clone());
        }
        let body_length = match (&self.stream, self.has_body) {
            (Some(_), _) => BodyLength::Streamed,
            (None, true) => BodyLength::Known(self.body.len() as u64),
            (None, false) => BodyLength::None,
        };
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
        };
        let overrides = CallOverrides {
            body_replayable: request.body_replayable,
            idempotence: self.idempotence,
            key: self.key,
            timeout: self.timeout,
            attempts: self.attempts,
        };
        let span = tracing::debug_span!("call", method = %request.method, url = %request.url);
        tracing::Instrument::instrument(driver::run(inner, request, overrides), span).await
    }
}
