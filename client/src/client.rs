//! The client, its builder, and the driver loop that runs a call.
//!
//! The driver asks the core's [`Engine`] what to do next and does exactly
//! that: wait, fetch a token, connect, send, deliver. It holds no policy of
//! its own. The engine lives behind one mutex, held only for the few hundred
//! nanoseconds a decision takes; all I/O happens outside it, on the task
//! that awaits the call, on the connection the call checked out. Dropping
//! the call's future at any point cancels it: the [`CallGuard`] gives every
//! permit, slot and connection back to the engine.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use breakwater_core::call::{
    self, CallErrorKind, CallId, CallSpec, Engine, EngineConfig, EngineEvent, OriginProfile, Step,
};
use breakwater_core::h1::{encode_request_head_for_target, BodyLength, RequestContext};
use breakwater_core::policy::idempotency::{Idempotence, IdempotencyKey};
use breakwater_core::policy::outcome::ConnectFailure;
use breakwater_core::pool::OriginId;
use breakwater_core::{Instant, Origin};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};
use url::Url;

use crate::auth::{Credentials, Secret, TokenFetchError, TokenSource};
use crate::error::{Error, ErrorKind, TimeoutPhase};
use crate::housekeeping::{spawn_background_refresh, Housekeeping, PendingFetch};
use crate::io::{
    with_deadline, AttemptTimes, BodyStream, Connection, Exchange, ExchangeError, RequestBody,
};
use crate::response::{Response, Timings};
use crate::runtime::{ConnectErrorKind, ConnectTarget, Runtime};
use crate::tls::{TlsConfig, TlsOptions};

/// A resilient HTTP/1.1 client for one upstream (and any other origin it is pointed at).
///
/// Cheap to clone: clones share the pool, breakers, budgets and token cache.
/// Build one per upstream with [`Client::builder`] on an adapter's runtime
/// (`breakwater_tokio::runtime()`, `breakwater_smol::runtime()`, or the
/// testkit's simulation).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) runtime: Arc<dyn Runtime>,
    /// This client, for the background tasks it starts, which must not keep it alive.
    pub(crate) weak_self: Weak<Inner>,
    shared: Mutex<Shared>,
    base_url: Url,
    base_origin: Origin,
    default_headers: HeaderMap,
    pub(crate) credentials: Credentials,
    tls_options: TlsOptions,
    tls: OnceLock<Result<TlsConfig, crate::tls::TlsError>>,
    pub(crate) body_timeout: Duration,
    hooks: Hooks,
    pub(crate) counters: Counters,
}

/// Running totals for [`Client::stats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) calls: std::sync::atomic::AtomicU64,
    pub(crate) attempts: std::sync::atomic::AtomicU64,
    pub(crate) retries: std::sync::atomic::AtomicU64,
    pub(crate) failures: std::sync::atomic::AtomicU64,
}

/// The engine, the wake-up slots of the calls that wait on it, and the
/// housekeeper that watches its shared timers.
pub(crate) struct Shared {
    pub(crate) engine: Engine<Connection>,
    wake_slots: BTreeMap<CallId, WakeSlot>,
    pub(crate) closed: bool,
    pub(crate) housekeeping: Housekeeping,
}

#[derive(Default)]
struct WakeSlot {
    woken: bool,
    waker: Option<Waker>,
}

/// Callbacks on requests and responses, for logs and metrics. They run on
/// the calling task, outside any lock, and must not block.
#[derive(Clone, Default)]
struct Hooks {
    on_request: Vec<RequestHook>,
    on_response: Vec<ResponseHook>,
}

type RequestHook = Arc<dyn Fn(&RequestInfo<'_>) + Send + Sync>;
type ResponseHook = Arc<dyn Fn(&ResponseInfo<'_>) + Send + Sync>;

/// What an `on_request` hook sees: one attempt about to be sent.
#[derive(Debug)]
#[non_exhaustive]
pub struct RequestInfo<'a> {
    /// The method.
    pub method: &'a Method,
    /// The full URL.
    pub url: &'a Url,
    /// The attempt number (1 for the original).
    pub attempt: u32,
    /// Whether the connection was reused from the pool.
    pub reused_connection: bool,
}

/// What an `on_response` hook sees: a response head that arrived.
#[derive(Debug)]
#[non_exhaustive]
pub struct ResponseInfo<'a> {
    /// The method.
    pub method: &'a Method,
    /// The full URL.
    pub url: &'a Url,
    /// The status.
    pub status: http::StatusCode,
    /// The response headers (`Retry-After`, rate-limit headers, ...).
    pub headers: &'a HeaderMap,
    /// The attempt number.
    pub attempt: u32,
    /// Time from sending to the response head.
    pub elapsed: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url.as_str())
            .field("credentials", &self.inner.credentials)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`]; every setting has a production default.
#[must_use]
pub struct ClientBuilder {
    runtime: Arc<dyn Runtime>,
    base_url: String,
    default_headers: HeaderMap,
    credentials: Result<Credentials, Error>,
    engine: EngineConfig,
    /// `None` until the caller gives settings. `build` then loads the
    /// defaults only for an https base URL; otherwise they wait for the
    /// first https call, so a plain-http client never reads the certificate store.
    tls: Option<TlsOptions>,
    body_timeout: Option<Duration>,
    seed: Option<u64>,
    hooks: Hooks,
    /// The first invalid setting, reported by `build`.
    error: Option<Error>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("credentials", &self.credentials.as_ref().ok())
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts building a client for `base_url` on `runtime`.
    pub fn builder(runtime: Arc<dyn Runtime>, base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            runtime,
            base_url: base_url.into(),
            default_headers: HeaderMap::new(),
            credentials: Ok(Credentials::None),
            engine: EngineConfig::default(),
            tls: None,
            body_timeout: None,
            seed: None,
            hooks: Hooks::default(),
            error: None,
        }
    }

    /// A GET request to `url` (relative to the base URL, or absolute).
    pub fn get(&self, url: &str) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    /// A POST request.
    pub fn post(&self, url: &str) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    /// A PUT request.
    pub fn put(&self, url: &str) -> RequestBuilder {
        self.request(Method::PUT, url)
    }

    /// A PATCH request.
    pub fn patch(&self, url: &str) -> RequestBuilder {
        self.request(Method::PATCH, url)
    }

    /// A DELETE request.
    pub fn delete(&self, url: &str) -> RequestBuilder {
        self.request(Method::DELETE, url)
    }

    /// A request with any method. Relative URLs join onto the base URL the
    /// way [`Url::join`] does (`users/1` under `https://h/v1/` is
    /// `https://h/v1/users/1`; `/users/1` replaces the path).
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let url = self
            .inner
            .base_url
            .join(url)
            .map_err(|e| {
                Error::new(ErrorKind::Request)
                    .with_message("bad URL")
                    .with_source(e)
            })
            .and_then(|url| without_userinfo(url, ErrorKind::Request));
        RequestBuilder {
            client: self.clone(),
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

    /// GETs `url` and decodes its JSON body, failing on an error status.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, Error> {
        self.get(url)
            .send()
            .await?
            .error_for_status()
            .await?
            .json()
            .await
    }

    /// Closes the client: idle connections are closed, waiting calls fail
    /// with [`ErrorKind::Closed`], and later calls fail at once. Connections
    /// in use close when their calls end.
    pub async fn close(&self) {
        self.close_now();
    }

    fn close_now(&self) {
        let now = self.inner.runtime.now();
        self.inner.update(|shared| {
            shared.closed = true;
            shared.engine.close(now);
        });
    }

    /// A snapshot of the client's gauges and counters.
    pub fn stats(&self) -> crate::ClientStats {
        let now = self.inner.runtime.now();
        let shared = self.inner.lock();
        crate::stats::snapshot(&shared.engine, &self.inner.counters, now)
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// The origin of the base URL.
    pub fn base_origin(&self) -> &Origin {
        &self.inner.base_origin
    }
}

impl ClientBuilder {
    /// Adds a header sent on every request.
    pub fn default_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.default_headers.append(name, value);
        self
    }

    /// Sends an API key in `header` on requests to the base origin.
    pub fn api_key(mut self, header: HeaderName, key: impl Into<Secret>) -> Self {
        self.credentials = Credentials::api_key(header, &key.into()).map_err(|e| {
            Error::new(ErrorKind::Builder)
                .with_message("API key is not a valid header value")
                .with_source(e)
        });
        self
    }

    /// Sends `Authorization: Bearer <token>` on requests to the base origin.
    pub fn bearer_token(mut self, token: impl Into<Secret>) -> Self {
        self.credentials = Credentials::bearer(&token.into()).map_err(|e| {
            Error::new(ErrorKind::Builder)
                .with_message("token is not a valid header value")
                .with_source(e)
        });
        self
    }

    /// Authenticates requests to the base origin with expiring tokens from
    /// `source`: fetched once for many waiters, refreshed early, replaced
    /// once after a 401.
    pub fn token_source(mut self, source: impl TokenSource) -> Self {
        self.credentials = Ok(Credentials::Tokens(Arc::new(source)));
        if self.engine.tokens.is_none() {
            self.engine.tokens = Some(Default::default());
        }
        self
    }

    /// Sets every policy of the core at once (retries, backoff, breaker,
    /// budget, pool, timeouts, idempotency, concurrency).
    pub fn policies(mut self, config: EngineConfig) -> Self {
        let tokens = self.engine.tokens.take();
        self.engine = config;
        if self.engine.tokens.is_none() {
            self.engine.tokens = tokens;
        }
        self
    }

    /// Changes the core's policies in place.
    pub fn configure(mut self, f: impl FnOnce(EngineConfig) -> EngineConfig) -> Self {
        self.engine = f(self.engine);
        self
    }

    /// Gives one origin (`"https://partner.example.com"`) settings of its own —
    /// pool limits, timeouts, breaker — like httpx's `mounts`, so that a slow
    /// partner cannot take the capacity or patience meant for another upstream.
    pub fn profile(mut self, origin: &str, profile: OriginProfile) -> Self {
        let parsed = origin
            .parse::<Uri>()
            .ok()
            .and_then(|uri| Origin::from_uri(&uri).ok());
        match parsed {
            Some(origin) => self.engine = self.engine.with_profile(origin, profile),
            None => {
                self.error
                    .get_or_insert(Error::new(ErrorKind::Builder).with_message(format!(
                        "profile origin {origin:?} is not an http(s) origin"
                    )));
            }
        }
        self
    }

    /// The most calls in flight at once (default 20); further calls wait their turn.
    pub fn max_concurrency(mut self, max: usize) -> Self {
        self.engine = self.engine.with_max_concurrency(max);
        self
    }

    /// The total time a call may take, all attempts and waits included (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.engine = self.engine.with_total_timeout(timeout);
        self
    }

    /// The connect timeout, TCP and TLS together (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.engine = self.engine.with_connect_timeout(timeout);
        self
    }

    /// How long one attempt may wait for its response head (default 10 s).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.engine = self.engine.with_attempt_timeout(timeout);
        self
    }

    /// How long a body read may wait for the next bytes (default: the attempt timeout).
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = Some(timeout);
        self
    }

    /// TLS settings for `https` origins.
    ///
    /// They are checked by [`build`](Self::build): a CA or client certificate
    /// that cannot be used fails there as [`ErrorKind::Builder`], not on the
    /// first call.
    pub fn tls(mut self, options: TlsOptions) -> Self {
        self.tls = Some(options);
        self
    }

    /// Seeds the client's random choices (jitter, generated keys); by default the runtime's seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Calls `hook` before every attempt is sent.
    pub fn on_request(mut self, hook: impl Fn(&RequestInfo<'_>) + Send + Sync + 'static) -> Self {
        self.hooks.on_request.push(Arc::new(hook));
        self
    }

    /// Calls `hook` when a response head arrives (retried ones included).
    pub fn on_response(mut self, hook: impl Fn(&ResponseInfo<'_>) + Send + Sync + 'static) -> Self {
        self.hooks.on_response.push(Arc::new(hook));
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<Client, Error> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let base_url = Url::parse(&self.base_url).map_err(|e| {
            Error::new(ErrorKind::Builder)
                .with_message(format!("bad base URL {:?}", self.base_url))
                .with_source(e)
        })?;
        let base_url = without_userinfo(base_url, ErrorKind::Builder)?;
        let base_origin = origin_of(&base_url)?;
        let credentials = self.credentials?;
        let seed = self.seed.unwrap_or_else(|| self.runtime.random_seed());
        let body_timeout = self.body_timeout.unwrap_or(self.engine.attempt_timeout);
        let engine = Engine::new(self.engine, fastrand::Rng::with_seed(seed))
            .map_err(|e| Error::new(ErrorKind::Builder).with_message(e.to_string()))?;
        // Settings the caller gave are checked now; so are the defaults when
        // the base URL is https, since the first call will need them anyway.
        let tls = OnceLock::new();
        let tls_given = self.tls.is_some();
        let tls_options = self.tls.unwrap_or_default();
        if tls_given || base_origin.scheme() == breakwater_core::Scheme::Https {
            let config = tls_options.build().map_err(|e| {
                Error::new(ErrorKind::Builder)
                    .with_message("invalid TLS settings")
                    .with_source(e)
            })?;
            let _ = tls.set(Ok(config));
        }
        Ok(Client {
            inner: Arc::new_cyclic(|weak_self| Inner {
                runtime: self.runtime,
                weak_self: weak_self.clone(),
                shared: Mutex::new(Shared {
                    engine,
                    wake_slots: BTreeMap::new(),
                    closed: false,
                    housekeeping: Housekeeping::default(),
                }),
                base_url,
                base_origin,
                default_headers: self.default_headers,
                credentials,
                tls_options,
                tls,
                body_timeout,
                hooks: self.hooks,
                counters: Counters::default(),
            }),
        })
    }
}

/// Refuses URLs that carry a user name or password: they would be printed
/// wherever the URL is (logs, errors, Debug) and are not sent as credentials.
/// Use [`ClientBuilder::api_key`] or a header instead.
fn without_userinfo(url: Url, kind: ErrorKind) -> Result<Url, Error> {
    if url.username().is_empty() && url.password().is_none() {
        Ok(url)
    } else {
        Err(Error::new(kind).with_message(
            "URLs with a user name or password are refused (they would leak into logs); \
             send credentials in a header",
        ))
    }
}

pub(crate) fn origin_of_url(url: &Url) -> Result<Origin, Error> {
    origin_of(url)
}

fn origin_of(url: &Url) -> Result<Origin, Error> {
    Origin::from_uri(&parse_uri(url)?).map_err(|e| {
        Error::new(ErrorKind::Request)
            .with_message(format!("{url}"))
            .with_source(e)
    })
}

/// The longest URL sent, as `http::Uri` accepts them.
const MAX_URL_LEN: usize = 65_534;

fn parse_uri(url: &Url) -> Result<Uri, Error> {
    url.as_str().parse().map_err(|e: http::uri::InvalidUri| {
        Error::new(ErrorKind::Request)
            .with_message(format!("bad URL {url}"))
            .with_source(e)
    })
}

/// A request being built; [`send`](RequestBuilder::send) runs it.
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    client: Client,
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
        let client = self.client;
        // Most calls go to the base origin: recognise it without building a new one.
        let base = &client.inner.base_origin;
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
        let tokens = same_origin && matches!(client.inner.credentials, Credentials::Tokens(_));

        let mut headers = client.inner.default_headers.clone();
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        if let (true, Credentials::Header(name, value)) = (same_origin, &client.inner.credentials) {
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
        tracing::Instrument::instrument(run(client, request, overrides), span).await
    }
}

/// What a request changes about its call.
struct CallOverrides {
    body_replayable: bool,
    idempotence: Idempotence,
    key: Option<IdempotencyKey>,
    timeout: Option<Duration>,
    attempts: Option<u32>,
}

impl CallOverrides {
    fn spec(self, method: Method, origin: OriginId, authenticated: bool) -> CallSpec {
        let mut spec = CallSpec::new(method, origin)
            .with_idempotence(self.idempotence)
            .with_body_replayable(self.body_replayable)
            .with_authenticated(authenticated);
        if let Some(key) = self.key {
            spec = spec.with_key(key);
        }
        if let Some(timeout) = self.timeout {
            spec = spec.with_total_timeout(timeout);
        }
        if let Some(attempts) = self.attempts {
            spec = spec.with_max_attempts(attempts);
        }
        spec
    }
}

/// A request ready for the wire.
struct Prepared {
    method: Method,
    url: Url,
    origin: Origin,
    headers: HeaderMap,
    body: Bytes,
    /// A streamed body, taken by the attempt that sends it.
    stream: Option<BodyStream>,
    body_replayable: bool,
    body_length: BodyLength,
    tokens: bool,
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock cannot leave the engine half-updated
        // in a way that matters more than losing the client: keep going.
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the shared state under the lock, then applies the
    /// engine's events (wake-ups, connections to close) once it is released,
    /// and makes sure the engine's next shared timer is watched.
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        let mut shared = self.lock();
        let result = f(&mut shared);
        let drained = shared.drain_events();
        let next_timer = shared.engine.poll_timeout();
        let nudge = shared.housekeeping.after_update(next_timer);
        drop(shared);
        drop(drained);
        nudge.apply(self);
        result
    }

    /// The TLS configuration for https origins. `ClientBuilder::build` made
    /// it if the caller gave settings or the base URL is https; otherwise the
    /// defaults are built here, on the first https call.
    fn tls(&self) -> Result<TlsConfig, Error> {
        self.tls
            .get_or_init(|| self.tls_options.build())
            .clone()
            .map_err(|e| {
                Error::new(ErrorKind::Tls)
                    .with_message("the default TLS settings could not be loaded")
                    .with_source(e)
            })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A housekeeper asleep with no timer would never learn that the client is gone.
        let shared = self
            .shared
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(waker) = shared.housekeeping.take_waker() {
            waker.wake();
        }
    }
}

impl Shared {
    /// Applies the engine's events: wakes waiting calls, hands back
    /// connections to close (dropped by the caller, outside the lock), logs
    /// breaker transitions.
    fn drain_events(&mut self) -> Drained {
        let mut drained = Drained::default();
        while let Some(event) = self.engine.poll_event() {
            match event {
                EngineEvent::Wake(id) => {
                    if let Some(slot) = self.wake_slots.get_mut(&id) {
                        slot.woken = true;
                        drained.wakers.extend(slot.waker.take());
                    }
                }
                EngineEvent::Close { conn, reason } => {
                    tracing::debug!(?reason, "closing connection");
                    drained.closing.push(conn);
                }
                EngineEvent::Breaker { origin, transition } => {
                    let origin = self.engine.pool().origin(origin).map(ToString::to_string);
                    tracing::warn!(
                        origin = origin.as_deref().unwrap_or("?"),
                        from = ?transition.from.kind(),
                        to = ?transition.to.kind(),
                        cause = ?transition.cause,
                        "circuit breaker transition"
                    );
                }
            }
        }
        drained
    }
}

/// What draining the engine's events left to do once the lock is released:
/// wake the calls it names and close the connections it hands back. Both
/// happen when this is dropped, which callers do after unlocking, so that a
/// waker that runs a task inline can never find the lock held.
#[derive(Default)]
#[must_use = "drop it after releasing the engine lock"]
pub(crate) struct Drained {
    wakers: Vec<Waker>,
    closing: Vec<Connection>,
}

impl Drop for Drained {
    fn drop(&mut self) {
        self.closing.clear();
        for waker in self.wakers.drain(..) {
            waker.wake();
        }
    }
}

/// Holds a live call; dropping it cancels the call and returns everything it holds.
pub(crate) struct CallGuard {
    pub(crate) client: Client,
    pub(crate) call: call::Call<Connection>,
    /// Whether other calls of this client were in flight at the last step.
    others_in_flight: bool,
}

impl CallGuard {
    /// The call's next step, decided at `now` (the driver's latest clock reading).
    fn poll_step(&mut self, now: Instant) -> Step {
        self.client.inner.update(|shared| {
            self.others_in_flight = shared.wake_slots.len() > 1;
            self.call.poll_step(now, &mut shared.engine)
        })
    }

    /// Runs a report against the engine under the lock, then applies its events.
    pub(crate) fn report<T>(
        &mut self,
        f: impl FnOnce(&mut call::Call<Connection>, Instant, &mut Engine<Connection>) -> T,
    ) -> T {
        let now = self.client.inner.runtime.now();
        self.report_at(now, f)
    }

    /// [`report`](Self::report) at an instant the driver has just read.
    fn report_at<T>(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut call::Call<Connection>, Instant, &mut Engine<Connection>) -> T,
    ) -> T {
        self.client
            .inner
            .update(|shared| f(&mut self.call, now, &mut shared.engine))
    }

    async fn wait(&mut self, until: Option<Instant>) {
        let wake = WaitForWake {
            inner: self.client.inner.clone(),
            id: self.call.id(),
        };
        match until {
            Some(until) => {
                let runtime = self.client.inner.runtime.clone();
                futures_lite::future::or(wake, async move { runtime.sleep_until(until).await })
                    .await
            }
            None => wake.await,
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let id = self.call.id();
        #[cfg(feature = "fault-injection")]
        if crate::fault_injection::forget_cancelled_calls() && self.call.connection_mut().is_some()
        {
            // The deliberate bug the testkit's invariants must catch.
            self.client.inner.lock().wake_slots.remove(&id);
            return;
        }
        #[cfg(feature = "fault-injection")]
        if crate::fault_injection::keep_cancelled_sockets() {
            if let Some(connection) = self.call.connection_mut() {
                // The other deliberate bug: every count stays right.
                connection.leak_socket();
            }
        }
        // An ended call holds nothing: only its wake-up slot goes.
        let now =
            (self.call.phase() != call::CallPhase::Ended).then(|| self.client.inner.runtime.now());
        self.client.inner.update(|shared| {
            if let Some(now) = now {
                self.call.cancel(now, &mut shared.engine);
            }
            shared.wake_slots.remove(&id);
        });
    }
}

/// Completes when the engine wakes this call.
struct WaitForWake {
    inner: Arc<Inner>,
    id: CallId,
}

impl Future for WaitForWake {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut shared = self.inner.lock();
        let slot = shared.wake_slots.entry(self.id).or_default();
        if std::mem::take(&mut slot.woken) {
            return Poll::Ready(());
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

async fn run(
    client: Client,
    mut request: Prepared,
    overrides: CallOverrides,
) -> Result<Response, Error> {
    let runtime = client.inner.runtime.clone();
    // The clock is read once after each await and that reading serves every
    // decision until the next one: a call reads it about five times.
    let started = runtime.now();
    let mut now = started;
    let call = client.inner.update(|shared| {
        if shared.closed {
            return Err(Error::new(ErrorKind::Closed).with_origin(request.origin.clone()));
        }
        if shared.engine.poll_timeout().is_some_and(|t| t <= now) {
            shared.engine.handle_timeout(now);
        }
        let origin = shared.engine.origin_id(&request.origin);
        let spec = overrides.spec(request.method.clone(), origin, request.tokens);
        let call = shared.engine.start_call(now, spec);
        let call = call.map_err(|e| Error::new(ErrorKind::Builder).with_message(e.to_string()));
        if let Ok(call) = &call {
            shared.wake_slots.insert(call.id(), WakeSlot::default());
        }
        call
    })?;
    client
        .inner
        .counters
        .calls
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut guard = CallGuard {
        client: client.clone(),
        call,
        others_in_flight: false,
    };
    let mut head = None;
    let mut last_failure: Option<Error> = None;
    let mut timings = Timings::default();
    loop {
        match guard.poll_step(now) {
            Step::Wait { until } => {
                tracing::trace!(
                    ?until,
                    "waiting (permit, pool slot, token, backoff or Retry-After)"
                );
                let wait_started = now;
                guard.wait(until).await;
                now = runtime.now();
                timings.queued += now.saturating_duration_since(wait_started);
            }
            // A refresh while the token is still valid: the call goes on with it.
            Step::FetchToken {
                fetch,
                background: true,
            } => spawn_background_refresh(&client.inner, fetch),
            Step::FetchToken {
                fetch,
                background: false,
            } => {
                fetch_token(&mut guard, fetch).await;
                now = runtime.now();
            }
            Step::Connect { connect_deadline } => {
                // A new attempt: an earlier one's response is not its outcome.
                head = None;
                let connect_started = now;
                let connected = connect(&client, &request.origin, connect_deadline).await;
                now = runtime.now();
                let failure = match connected {
                    Ok(io) => {
                        let conn = Connection::new(io);
                        timings.dns = conn.info.dns;
                        timings.tls_handshake = conn.info.tls_handshake;
                        timings.connect = Some(now.saturating_duration_since(connect_started));
                        guard
                            .report_at(now, |call, now, engine| {
                                call.handle_connected(now, engine, conn)
                            })
                            .err()
                            .map(|e| Error::new(ErrorKind::Connect).with_message(format!("{e:?}")))
                    }
                    Err((kind, err)) => {
                        let _ = guard.report_at(now, |call, now, engine| {
                            call.handle_connect_failed(now, engine, kind)
                        });
                        Some(err)
                    }
                };
                last_failure = failure.map(|e| e.with_origin(request.origin.clone()));
            }
            Step::Send(plan) => {
                // Whatever an earlier attempt received, failed with or measured
                // is not this one's.
                head = None;
                last_failure = None;
                if plan.reused {
                    (timings.dns, timings.connect, timings.tls_handshake) = (None, None, None);
                }
                let Some(conn) = guard.call.connection_mut() else {
                    return Err(
                        Error::new(ErrorKind::Protocol).with_message("no connection for a send")
                    );
                };
                // The key is the same on every attempt and a newer token replaces
                // an older one, so the call's own header map is updated in place.
                if let Some((name, value)) = &plan.idempotency_key {
                    request.headers.insert(name.clone(), value.clone());
                }
                match &plan.authorization {
                    Some(value) => {
                        request
                            .headers
                            .insert(http::header::AUTHORIZATION, value.clone());
                    }
                    // No token for this attempt: an earlier attempt's must not go out.
                    None if request.tokens => {
                        request.headers.remove(http::header::AUTHORIZATION);
                    }
                    None => {}
                }
                let reused = plan.reused;
                let counters = &client.inner.counters;
                counters
                    .attempts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if plan.kind != call::AttemptKind::Original {
                    counters
                        .retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                for hook in &client.inner.hooks.on_request {
                    hook(&RequestInfo {
                        method: &request.method,
                        url: &request.url,
                        attempt: plan.number,
                        reused_connection: reused,
                    });
                }
                tracing::debug!(attempt = plan.number, reused, kind = ?plan.kind, "sending");
                // The target is the URL's own text: no `Uri` is built per request.
                let target = &request.url[url::Position::BeforePath..url::Position::AfterQuery];
                if let Err(e) = encode_request_head_for_target(
                    conn.write_buf(),
                    &request.method,
                    target,
                    &request.origin,
                    &request.headers,
                    request.body_length,
                ) {
                    return Err(Error::new(ErrorKind::Request)
                        .with_source(e)
                        .with_origin(request.origin.clone()));
                }
                let context = RequestContext::for_method(&request.method);
                // The attempt's clock started at checkout, in the core; the
                // yield spends the attempt's time and is counted in it.
                let sent_at = now;
                // With other calls in flight, let every ready task run first:
                // concurrent requests then leave together and the peer is
                // woken once for the burst rather than once per request, which
                // is most of the cost of a send where the peer sleeps between them.
                if guard.others_in_flight {
                    futures_lite::future::yield_now().await;
                }
                let exchange = conn
                    .exchange(
                        &runtime,
                        // Chosen by the framing the head announces, not by whether the
                        // stream is still there: a taken stream must fail, not go out
                        // as an empty body under a chunked head.
                        if matches!(request.body_length, BodyLength::Streamed) {
                            RequestBody::Streamed(&mut request.stream)
                        } else {
                            RequestBody::Buffered(&request.body)
                        },
                        context,
                        reused,
                        AttemptTimes {
                            started: sent_at,
                            plan: &plan,
                        },
                    )
                    .await;
                now = runtime.now();
                timings.reused = reused;
                match exchange {
                    Exchange::Head {
                        head: response_head,
                        written_at,
                    } => {
                        let elapsed = now.saturating_duration_since(sent_at);
                        timings.first_byte = Some(elapsed);
                        // The upstream's latency, for the core's estimate:
                        // from the end of the upload, which may have been long.
                        let latency = now.saturating_duration_since(written_at);
                        for hook in &client.inner.hooks.on_response {
                            hook(&ResponseInfo {
                                method: &request.method,
                                url: &request.url,
                                status: response_head.status,
                                headers: &response_head.headers,
                                attempt: plan.number,
                                elapsed,
                            });
                        }
                        let wall = runtime.wall_clock();
                        let status = response_head.status;
                        let pre = conn.prefetch(response_head.body_length);
                        let read_whole = pre.end.as_ref().map(|end| end.is_reusable());
                        let headers = &response_head.headers;
                        let _ = guard.report_at(now, |call, now, engine| match read_whole {
                            Some(reusable) => call.handle_response_read(
                                now, engine, status, latency, headers, wall, reusable,
                            ),
                            None => call.handle_attempt_outcome(
                                now,
                                engine,
                                breakwater_core::policy::outcome::AttemptOutcome::Response {
                                    status,
                                    elapsed: latency,
                                },
                                headers,
                                wall,
                            ),
                        });
                        head = Some((response_head, pre));
                    }
                    Exchange::Failed { outcome, detail } => {
                        tracing::debug!(attempt = plan.number, ?outcome, "attempt failed");
                        last_failure =
                            Some(exchange_error(detail).with_origin(request.origin.clone()));
                        let wall = runtime.wall_clock();
                        let _ = guard.report_at(now, |call, now, engine| {
                            call.handle_attempt_outcome(
                                now,
                                engine,
                                outcome,
                                &HeaderMap::new(),
                                wall,
                            )
                        });
                    }
                }
            }
            Step::Deliver => {
                let Some(head) = head.take() else {
                    return Err(
                        Error::new(ErrorKind::Protocol).with_message("delivery without a head")
                    );
                };
                timings.total = now.saturating_duration_since(started);
                let (head, pre) = head;
                return Ok(Response::new(guard, head, pre, request.url, timings));
            }
            Step::Done => {
                return Err(
                    Error::new(ErrorKind::Protocol).with_message("call ended without a response")
                );
            }
            Step::Fail(error) => {
                client
                    .inner
                    .counters
                    .failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(call_error(
                    error,
                    &request.origin,
                    last_failure,
                    head.as_ref().map(|(h, _)| h),
                ));
            }
        }
    }
}

async fn connect(
    client: &Client,
    origin: &Origin,
    deadline: Instant,
) -> Result<crate::runtime::BoxTransport, (call::ConnectError, Error)> {
    let runtime = &client.inner.runtime;
    let tls = match origin.scheme() {
        breakwater_core::Scheme::Https => match client.inner.tls() {
            Ok(tls) => Some(tls),
            // Only the defaults can fail here (the caller's settings were
            // checked by `build`), and they fall back to the bundled roots, so
            // this is not expected. If it happens, retrying will not help and it
            // says nothing about the upstream's health: the core's
            // never-retried, breaker-neutral outcome is the certificate's.
            Err(e) => return Err((call::ConnectError::CertificateInvalid, e)),
        },
        breakwater_core::Scheme::Http => None,
    };
    let target = ConnectTarget {
        origin: origin.clone(),
        tls,
    };
    match with_deadline(runtime, deadline, runtime.connect(target)).await {
        Some(Ok(io)) => Ok(io),
        Some(Err(err)) => {
            let (core, kind) = match err.kind() {
                ConnectErrorKind::Dns => (ConnectFailure::Dns, ErrorKind::Connect),
                ConnectErrorKind::TimedOut => (
                    ConnectFailure::Timeout,
                    ErrorKind::Timeout(TimeoutPhase::Connect),
                ),
                ConnectErrorKind::TlsHandshake => (ConnectFailure::TlsHandshake, ErrorKind::Tls),
                ConnectErrorKind::Certificate(_) => {
                    return Err((
                        call::ConnectError::CertificateInvalid,
                        Error::new(ErrorKind::Tls).with_source(err),
                    ))
                }
                _ => (ConnectFailure::Refused, ErrorKind::Connect),
            };
            Err((
                call::ConnectError::Failed(core),
                Error::new(kind).with_source(err),
            ))
        }
        None => Err((
            call::ConnectError::Failed(ConnectFailure::Timeout),
            Error::new(ErrorKind::Timeout(TimeoutPhase::Connect)),
        )),
    }
}

/// Runs the token fetch the call waits for, by the call's deadline.
async fn fetch_token(guard: &mut CallGuard, fetch: breakwater_core::policy::auth::FetchId) {
    let Credentials::Tokens(source) = guard.client.inner.credentials.clone() else {
        let _ = guard.report(|_, now, engine| engine.cancel_token_fetch(now, fetch));
        return;
    };
    let _ = guard.report(|_, now, engine| engine.handle_token_fetch_sent(now, fetch));
    // If this future is dropped mid-fetch, the fetch is handed back so that
    // the next caller starts one.
    let mut pending = PendingFetch {
        client: Arc::downgrade(&guard.client.inner),
        fetch: Some(fetch),
    };
    let runtime = guard.client.inner.runtime.clone();
    let result = with_deadline(&runtime, guard.call.deadline(), source.fetch())
        .await
        .unwrap_or(Err(TokenFetchError::Timeout));
    pending.fetch = None;
    let _ = guard.report(|_, now, engine| engine.handle_token_fetched(now, fetch, result));
}

fn exchange_error(detail: ExchangeError) -> Error {
    match detail {
        ExchangeError::Io(e) => Error::new(ErrorKind::Protocol)
            .with_message("connection failed mid-exchange")
            .with_source(e),
        ExchangeError::Tls(e) => Error::new(ErrorKind::Tls)
            .with_message("the server ended the TLS session")
            .with_source(e),
        ExchangeError::Protocol(e) => Error::new(ErrorKind::Protocol).with_source(e),
        ExchangeError::TimedOut => Error::new(ErrorKind::Timeout(TimeoutPhase::Response)),
        ExchangeError::WriteOutlastedCall => Error::new(ErrorKind::Timeout(TimeoutPhase::Total))
            .with_message("the request was still being sent when the call's deadline came"),
        ExchangeError::Body(e) => Error::new(ErrorKind::Request).with_source(e),
    }
}

fn call_error(
    error: call::CallError,
    origin: &Origin,
    last_failure: Option<Error>,
    head: Option<&breakwater_core::h1::ResponseHead>,
) -> Error {
    let attempts = error.attempts.len() as u32;
    let base = match error.kind {
        CallErrorKind::CircuitOpen { retry_after, .. } => {
            Error::new(ErrorKind::CircuitOpen).with_retry_after(retry_after)
        }
        CallErrorKind::PoolExhausted(why) => {
            Error::new(ErrorKind::PoolExhausted).with_message(why.to_string())
        }
        CallErrorKind::PoolClosed => Error::new(ErrorKind::Closed),
        CallErrorKind::PlainHttpForbidden => {
            Error::new(ErrorKind::Request).with_message("plain http is forbidden for this origin")
        }
        CallErrorKind::RateLimited { until } => {
            let mut err = Error::new(ErrorKind::RateLimited)
                .with_message(format!("server asked to wait until {until:?}"));
            if let Some(head) = head {
                err = err.with_status(head.status, None);
            }
            err
        }
        // The deadline is what ended the call; what the last attempt ran into
        // says why it had not succeeded by then.
        // The last attempt ended in a response (a 503 whose retry would start
        // too late) or a failure; either way the caller learns which.
        CallErrorKind::DeadlineExceeded => {
            let err = match last_failure {
                Some(last) if last.kind() == ErrorKind::Timeout(TimeoutPhase::Total) => last,
                Some(last) => Error::new(ErrorKind::Timeout(TimeoutPhase::Total))
                    .with_source(last.into_cause()),
                None => Error::new(ErrorKind::Timeout(TimeoutPhase::Total)),
            };
            match head {
                Some(head) => err.with_status(head.status, None),
                None => err,
            }
        }
        // A call the driver ended itself (its request body stream failed) says why.
        CallErrorKind::Cancelled => last_failure
            .unwrap_or_else(|| Error::new(ErrorKind::Closed).with_message("call cancelled")),
        CallErrorKind::Auth(e) => Error::new(ErrorKind::Auth).with_message(e.to_string()),
        _ => match last_failure {
            Some(err) => err,
            None => Error::new(ErrorKind::Protocol).with_message(error.kind.to_string()),
        },
    };
    let base = if let Some(reason) = error.give_up {
        base.with_message(format!("not retried: {reason}"))
    } else {
        base
    };
    base.with_origin(origin.clone()).with_attempts(attempts)
}
