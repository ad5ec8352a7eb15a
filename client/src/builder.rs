//! The client's builder: every setting, checked once in `build`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use breakwater_core::call::{Engine, EngineConfig, OriginProfile};
use breakwater_core::Origin;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Uri;
use url::Url;

use crate::auth::{Credentials, Secret, TokenSource};
use crate::client::Client;
use crate::error::{Error, ErrorKind};
use crate::runtime::Runtime;
use crate::state::{Counters, Hooks, Housekeeping, Inner, RequestInfo, ResponseInfo, Shared};
use crate::tls::TlsOptions;
use crate::urls::{origin_of, without_userinfo};

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
