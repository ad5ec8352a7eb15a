//! The one error type: what happened, to which origin, after how many attempts.

use std::fmt;
use std::time::Duration;

use breakwater_core::Origin;
use http::StatusCode;

/// A boxed underlying error.
type Source = Box<dyn std::error::Error + Send + Sync>;

/// Why a call failed. [`Error::kind`] says what happened; the rest says
/// where, how often it was tried, and (for HTTP errors) what the server said.
///
/// Its `Display` is written for a person who has to act on it:
///
/// ```
/// # use breakwater::{Error, ErrorKind};
/// # use std::time::Duration;
/// let origin = breakwater::core::Origin::from_uri(&"https://api.example.com".parse().unwrap()).unwrap();
/// let err = Error::circuit_open(origin, Some(Duration::from_millis(12_300)));
/// assert_eq!(err.to_string(), "circuit open for https://api.example.com, retry in 12.3 s");
/// let soon = Error::circuit_open(err.origin().unwrap().clone(), Some(Duration::from_millis(40)));
/// assert_eq!(soon.to_string(), "circuit open for https://api.example.com, retry in 40 ms");
/// assert_eq!(err.kind(), ErrorKind::CircuitOpen);
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    origin: Option<Origin>,
    /// The call's method and URL (query values redacted), when it had one.
    request: Option<(http::Method, String)>,
    /// The call's total deadline ended it.
    deadline_exceeded: bool,
    attempts: u32,
    status: Option<StatusCode>,
    body_snippet: Option<String>,
    retry_after: Option<Duration>,
    message: Option<String>,
    source: Option<Source>,
}

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The client was configured wrongly (bad base URL, bad header, TLS files).
    Builder,
    /// The request could not be built (bad URL, header that would split the request).
    Request,
    /// No connection could be made (DNS, refused, unreachable).
    Connect,
    /// The TLS handshake failed; [`Error::is_certificate`] tells certificate problems apart.
    Tls,
    /// A phase took too long.
    Timeout(TimeoutPhase),
    /// No connection slot or concurrency permit became free within the pool timeout.
    PoolExhausted,
    /// The origin's circuit breaker is open; [`Error::retry_after`] says for how long.
    CircuitOpen,
    /// The server asked us to wait longer than we may (Retry-After over the cap or past the deadline).
    RateLimited,
    /// The server answered with an error status ([`Response::error_for_status`](crate::Response::error_for_status)).
    Status,
    /// The server broke HTTP/1.1 (malformed or ambiguous framing) or the connection broke mid-exchange.
    Protocol,
    /// Reading the response body failed.
    Body,
    /// The body could not be decoded (JSON, UTF-8, a corrupt or truncated
    /// compressed body).
    Decode,
    /// A compressed body expanded beyond the client's decode limits (a
    /// decompression bomb, or a body over the size limit).
    BodyLimit,
    /// No credentials could be obtained (token endpoint refused or unavailable).
    Auth,
    /// A redirect could not be followed: too many, a loop, `https` to plain
    /// `http`, or a `Location` that is not an http(s) URL. The message names
    /// the chain.
    Redirect,
    /// A proxy could not be reached, or refused the way to the origin (407
    /// for credentials, a refusal by its rules); the message names the
    /// proxy. It says nothing of the origin, whose breaker ignores it.
    Proxy,
    /// The client was closed.
    Closed,
}

/// Which phase of a call ran out of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutPhase {
    /// Opening the connection (TCP and TLS).
    Connect,
    /// Writing the request: no byte could be written for the attempt timeout
    /// (the server stopped reading an upload).
    Send,
    /// Waiting for the response head after sending.
    Response,
    /// Waiting for the next piece of the body.
    Body,
    /// The call's total deadline, when its last attempt did not itself time
    /// out: the error then says what that attempt ran into, its
    /// [`status`](Error::status) if a response arrived (a 503 whose retry
    /// would have started too late), or its failure as the
    /// [`source`](std::error::Error::source), itself a
    /// [`breakwater::Error`](Error). When the last attempt did time out, the
    /// kind names its phase instead and [`Error::deadline_exceeded`] is true.
    Total,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                origin: None,
                request: None,
                deadline_exceeded: false,
                attempts: 0,
                status: None,
                body_snippet: None,
                retry_after: None,
                message: None,
                source: None,
            }),
        }
    }

    /// The error a breaker rejection gives: which origin, and when to try again.
    pub fn circuit_open(origin: Origin, retry_after: Option<Duration>) -> Self {
        Error::new(ErrorKind::CircuitOpen)
            .with_origin(origin)
            .with_retry_after(retry_after)
    }

    /// Names the call this error ended: its method and its URL, with query
    /// values redacted.
    pub(crate) fn with_request(mut self, method: &http::Method, url: &url::Url) -> Self {
        if self.inner.request.is_none() {
            self.inner.request = Some((method.clone(), redacted_url(url)));
        }
        self
    }

    pub(crate) fn with_deadline_exceeded(mut self) -> Self {
        self.inner.deadline_exceeded = true;
        self
    }

    pub(crate) fn with_origin(mut self, origin: Origin) -> Self {
        self.inner.origin = Some(origin);
        self
    }

    /// This error as the cause of another that names the origin already.
    pub(crate) fn into_cause(mut self) -> Self {
        self.inner.origin = None;
        self
    }

    pub(crate) fn with_attempts(mut self, attempts: u32) -> Self {
        self.inner.attempts = attempts;
        self
    }

    pub(crate) fn with_status(mut self, status: StatusCode, snippet: Option<String>) -> Self {
        self.inner.status = Some(status);
        self.inner.body_snippet = snippet;
        self
    }

    pub(crate) fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.inner.retry_after = retry_after;
        self
    }

    pub(crate) fn with_message(mut self, message: impl Into<String>) -> Self {
        let message = message.into();
        self.inner.message = Some(match self.inner.message.take() {
            Some(previous) => format!("{previous}; {message}"),
            None => message,
        });
        self
    }

    pub(crate) fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    /// The method of the call that failed, if the error came from a call.
    pub fn method(&self) -> Option<&http::Method> {
        self.inner.request.as_ref().map(|(method, _)| method)
    }

    /// The URL of the call that failed, query values replaced by `…` (an API
    /// key in a query string is never shown), if the error came from a call.
    pub fn url(&self) -> Option<&str> {
        self.inner.request.as_ref().map(|(_, url)| url.as_str())
    }

    /// Whether the call's total deadline ended it. [`kind`](Self::kind) then
    /// names the phase the last attempt timed out in
    /// (`Timeout(Connect)`, `Timeout(Response)`, ...), or `Timeout(Total)`
    /// when the last attempt failed some other way (a 503, a refused
    /// connect: see [`status`](Self::status) and the source).
    pub fn deadline_exceeded(&self) -> bool {
        self.inner.deadline_exceeded
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The origin the call was for, when it got that far.
    pub fn origin(&self) -> Option<&Origin> {
        self.inner.origin.as_ref()
    }

    /// How many attempts reached the wire or the pool (transparent replacements of stale
    /// connections included).
    pub fn attempts(&self) -> u32 {
        self.inner.attempts
    }

    /// The response status, for [`ErrorKind::Status`].
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// The first bytes of the error response's body, as text. Not part of
    /// the error's `Display` (a body may echo a credential): log it where
    /// you know what the upstream puts in it.
    pub fn body_snippet(&self) -> Option<&str> {
        self.inner.body_snippet.as_deref()
    }

    /// How long to wait before trying again, for circuit-open and rate-limited errors.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// Whether the TLS failure was the server's certificate (never retried, never trips the breaker).
    pub fn is_certificate(&self) -> bool {
        self.inner.kind == ErrorKind::Tls
            && self.source_chain().any(|e| {
                e.downcast_ref::<crate::runtime::ConnectError>()
                    .is_some_and(|c| {
                        matches!(c.kind(), crate::runtime::ConnectErrorKind::Certificate(_))
                    })
            })
    }

    /// The certificate problem, when [`is_certificate`](Self::is_certificate).
    pub fn certificate_error(&self) -> Option<crate::runtime::CertificateErrorKind> {
        if !self.is_certificate() {
            return None;
        }
        self.source_chain().find_map(|e| {
            match e.downcast_ref::<crate::runtime::ConnectError>()?.kind() {
                crate::runtime::ConnectErrorKind::Certificate(kind) => Some(kind),
                _ => None,
            }
        })
    }

    /// Whether a timeout ended the call.
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, ErrorKind::Timeout(_))
    }

    fn source_chain(&self) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
        let mut next: Option<&(dyn std::error::Error + 'static)> =
            self.inner.source.as_deref().map(|e| e as _);
        std::iter::from_fn(move || {
            let current = next?;
            next = current.source();
            Some(current)
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        let what = match inner.kind {
            ErrorKind::Builder => "invalid client configuration",
            ErrorKind::Request => "invalid request",
            ErrorKind::Connect => "could not connect",
            ErrorKind::Tls => "TLS handshake failed",
            ErrorKind::Timeout(TimeoutPhase::Connect) => "connect timed out",
            ErrorKind::Timeout(TimeoutPhase::Send) => "timed out sending the request",
            ErrorKind::Timeout(TimeoutPhase::Response) => "timed out waiting for the response",
            ErrorKind::Timeout(TimeoutPhase::Body) => "timed out reading the response body",
            ErrorKind::Timeout(TimeoutPhase::Total) => "call deadline exceeded",
            ErrorKind::PoolExhausted => "no connection available in time (pool exhausted)",
            ErrorKind::CircuitOpen => "circuit open",
            ErrorKind::RateLimited => "rate limited",
            ErrorKind::Status => "HTTP error",
            ErrorKind::Protocol => "protocol error",
            ErrorKind::Body => "error reading the response body",
            ErrorKind::Decode => "could not decode the response body",
            ErrorKind::BodyLimit => "the response body went over its decode limit",
            ErrorKind::Auth => "could not obtain credentials",
            ErrorKind::Redirect => "could not follow the redirect",
            ErrorKind::Proxy => "could not go through the proxy",
            ErrorKind::Closed => "client is closed",
        };
        f.write_str(what)?;
        if let Some(status) = inner.status {
            write!(f, " {status}")?;
        }
        match (&inner.request, &inner.origin) {
            (Some((method, url)), _) => write!(f, " for {method} {url}")?,
            (None, Some(origin)) => write!(f, " for {origin}")?,
            (None, None) => {}
        }
        if let Some(after) = inner.retry_after {
            if after < Duration::from_secs(1) {
                // "retry in 0.0 s" would read as "now"; a short wait is shown in ms.
                write!(f, ", retry in {} ms", after.as_millis().max(1))?;
            } else {
                write!(f, ", retry in {:.1} s", after.as_secs_f64())?;
            }
        }
        if inner.attempts > 1 {
            write!(f, " after {} attempts", inner.attempts)?;
        }
        if let Some(message) = &inner.message {
            write!(f, ": {message}")?;
        }
        // The body is not shown: an error body may echo what the request
        // carried (a 401 that quotes the token). `body_snippet` has it.
        if let Some(source) = &inner.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("Error")
            .field("kind", &inner.kind)
            .field("origin", &inner.origin)
            .field("request", &inner.request)
            .field("attempts", &inner.attempts)
            .field("status", &inner.status)
            .field("retry_after", &inner.retry_after)
            .field("message", &inner.message)
            .field("source", &inner.source)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source.as_deref().map(|e| e as _)
    }
}

/// `url` as errors and logs show it: query values replaced by `…`, so that
/// an API key or a token in a query string (`?api_key=...`) is never printed;
/// no user information (the client refuses it) and no fragment.
pub(crate) fn redacted_url(url: &url::Url) -> String {
    let mut shown = url[..url::Position::AfterPath].to_owned();
    if let Some(query) = url.query() {
        let keys: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
            .map(|(key, _)| format!("{key}=…"))
            .collect();
        if !keys.is_empty() || !query.is_empty() {
            shown.push('?');
            shown.push_str(&keys.join("&"));
        }
    }
    shown
}
