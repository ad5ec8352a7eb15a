//! The client's builder: every setting, checked once in `build`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use breakwater_core::call::{Engine, EngineConfig, OriginProfile};
use breakwater_core::content::{accept_encoding, DecodeLimits};
use breakwater_core::proxy::{NoProxy, ProxyEnv, ProxySettings, ProxyUrl};
use breakwater_core::redirect::RedirectPolicy;
use breakwater_core::Origin;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Uri;
use url::Url;

use breakwater_core::request::{is_credential, plan_headers, HeaderLayers};
use http::header::{ACCEPT_ENCODING, USER_AGENT};

use crate::auth::{Credentials, Secret, TokenSource};
use crate::client::Client;
use crate::cookies::CookieJar;
use crate::error::{Error, ErrorKind};
use crate::request::header_pair;
use crate::runtime::Runtime;
use crate::state::{Counters, Hooks, Housekeeping, Inner, RequestInfo, ResponseInfo, Shared};
use crate::tls::TlsOptions;
use crate::urls::{origin_of, without_userinfo};

/// The `User-Agent` a client sends unless told otherwise.
const DEFAULT_USER_AGENT: &str = concat!("breakwater/", env!("CARGO_PKG_VERSION"));

/// Builds a [`Client`]; every setting has a production default.
#[must_use]
pub struct ClientBuilder {
    runtime: Arc<dyn Runtime>,
    base_url: String,
    default_headers: HeaderMap,
    credentials: Credentials,
    /// Header names the caller marked as carrying credentials.
    sensitive: Vec<HeaderName>,
    /// `None` until the caller chooses: then `breakwater/<version>`.
    user_agent: Option<Option<HeaderValue>>,
    engine: EngineConfig,
    /// `None` until the caller gives settings. `build` then loads the
    /// defaults only for an https base URL; otherwise they wait for the
    /// first https call, so a plain-http client never reads the certificate store.
    tls: Option<TlsOptions>,
    body_timeout: Option<Duration>,
    cookies: Option<Arc<CookieJar>>,
    /// `None` until the caller chooses: then the environment's, read in `build`.
    proxies: Option<ProxySettings>,
    /// Whether bodies are decoded, and within which limits.
    decompress: bool,
    decode_limits: DecodeLimits,
    seed: Option<u64>,
    hooks: Hooks,
    /// The first invalid setting, reported by `build`.
    error: Option<Error>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("credentials", &self.credentials)
            .field("tls", &self.tls)
            .field("proxies", &self.proxies)
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
            credentials: Credentials::default(),
            sensitive: Vec::new(),
            user_agent: None,
            engine: EngineConfig::default(),
            tls: None,
            body_timeout: None,
            cookies: None,
            proxies: None,
            decompress: true,
            decode_limits: DecodeLimits::default(),
            seed: None,
            hooks: Hooks::default(),
            error: None,
        }
    }
}

impl ClientBuilder {
    /// Adds a header sent on every request, unless the request sets the
    /// same name (it then replaces this one).
    ///
    /// A header that carries a credential (`Authorization`,
    /// `Proxy-Authorization`, `Cookie`, or a name given to
    /// [`sensitive_header`](Self::sensitive_header)) is treated like
    /// [`api_key`](Self::api_key): sent to the base origin only, and redacted
    /// everywhere. Names and values may be given as `&str`; an invalid one
    /// fails [`build`](Self::build).
    pub fn default_header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        match header_pair(name, value) {
            Ok((name, value)) => {
                self.default_headers.append(name, value);
            }
            Err(e) => self.fail(e.with_message("a default header is not a valid header")),
        }
        self
    }

    /// Marks `name` as carrying a credential, like `Authorization`: a default
    /// header of that name goes to the base origin only, and its values are
    /// redacted in every `Debug`.
    pub fn sensitive_header<K>(mut self, name: K) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
    {
        match HeaderName::try_from(name) {
            Ok(name) => self.sensitive.push(name),
            Err(e) => self.fail(
                Error::new(ErrorKind::Builder)
                    .with_message("a sensitive header name is not a valid header name")
                    .with_source(e.into()),
            ),
        }
        self
    }

    /// The `User-Agent` sent on every request: `Some(value)` to choose one,
    /// `None` to send none. Default: `breakwater/<version>`.
    pub fn user_agent(mut self, agent: Option<&str>) -> Self {
        match agent.map(HeaderValue::from_str).transpose() {
            Ok(agent) => self.user_agent = Some(agent),
            Err(e) => self.fail(
                Error::new(ErrorKind::Builder)
                    .with_message("the User-Agent is not a valid header value")
                    .with_source(e),
            ),
        }
        self
    }

    /// Sends an API key in `header` on requests to the base origin. It
    /// coexists with a bearer token or another key in another header.
    pub fn api_key<K>(mut self, header: K, key: impl Into<Secret>) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
    {
        let key = key.into();
        match header_pair(header, key.expose()) {
            Ok((name, value)) => self.credentials.set(name, value),
            Err(e) => self.fail(e.with_message("the API key's header is not a valid header")),
        }
        self
    }

    /// Sends `Authorization: Bearer <token>` on requests to the base origin.
    pub fn bearer_token(mut self, token: impl Into<Secret>) -> Self {
        match Credentials::bearer_value(&token.into()) {
            Ok(value) => self.credentials.set(http::header::AUTHORIZATION, value),
            Err(e) => self.fail(
                Error::new(ErrorKind::Builder)
                    .with_message("the token is not a valid header value")
                    .with_source(e),
            ),
        }
        self
    }

    /// Keeps the first invalid setting, for `build` to report.
    fn fail(&mut self, error: Error) {
        self.error.get_or_insert(error);
    }

    /// Authenticates requests to the base origin with expiring tokens from
    /// `source`: fetched once for many waiters, refreshed early, replaced
    /// once after a 401.
    pub fn token_source(mut self, source: impl TokenSource) -> Self {
        self.credentials.tokens = Some(Arc::new(source));
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

    /// How redirects are followed (default: up to 10, never from `https` to
    /// plain `http`); [`RedirectPolicy::NONE`] turns them off. An origin's
    /// profile and a request can set their own.
    pub fn redirects(mut self, policy: RedirectPolicy) -> Self {
        self.engine = self.engine.with_redirects(policy);
        self
    }

    /// Whether response bodies are decoded (default: yes, for the codings
    /// compiled in: gzip and deflate, and br and zstd with their features).
    ///
    /// When on, `Accept-Encoding` offers those codings (unless a default
    /// header sets it), and a body in one of them is decoded as it streams,
    /// with `Content-Encoding` and `Content-Length` removed from the headers
    /// the response shows. Off, bodies come as the server sent them. A
    /// request can turn decoding off for itself with
    /// [`RequestBuilder::decompress`](crate::RequestBuilder::decompress).
    pub fn decompress(mut self, on: bool) -> Self {
        self.decompress = on;
        self
    }

    /// Sends every request through the proxy at `url` (`http://`,
    /// `socks5://` or `socks5h://`, credentials in its user information),
    /// instead of what the environment says, except for the hosts
    /// `no_proxy` lists (the `NO_PROXY` syntax, docs/spec/proxy.md; `""`
    /// for none). A URL that does not parse fails [`build`](Self::build).
    pub fn proxy(mut self, url: &str, no_proxy: &str) -> Self {
        match ProxyUrl::parse(url) {
            Ok(proxy) => self.proxies = Some(ProxySettings::all(proxy, NoProxy::parse(no_proxy))),
            Err(reason) => {
                self.error.get_or_insert(
                    Error::new(ErrorKind::Builder)
                        .with_message(format!("the proxy given to `proxy`: {reason}")),
                );
            }
        }
        self
    }

    /// Reaches every origin directly, whatever the environment's proxy
    /// variables say.
    pub fn no_proxy(mut self) -> Self {
        self.proxies = Some(ProxySettings::none());
        self
    }

    /// Keeps cookies in a jar of this client's own (off by default): each
    /// response's `Set-Cookie` is stored and sent back by RFC 6265's rules
    /// (docs/spec/cookies.md). [`Client::cookie_jar`] reaches it.
    pub fn cookie_store(mut self, on: bool) -> Self {
        self.cookies = on.then(|| Arc::new(CookieJar::new()));
        self
    }

    /// Keeps cookies in `jar`, which other clients given the same jar share:
    /// a session set through one is sent by all.
    pub fn cookie_jar(mut self, jar: Arc<CookieJar>) -> Self {
        self.cookies = Some(jar);
        self
    }

    /// How far a compressed body may expand before the read fails with
    /// [`ErrorKind::BodyLimit`] (default: 1000 times beyond its first MiB,
    /// no size limit).
    pub fn decode_limits(mut self, limits: DecodeLimits) -> Self {
        self.decode_limits = limits;
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
        // Default headers that carry a credential become credentials: the
        // base origin only, redacted (docs/spec/request.md).
        let mut credentials = self.credentials;
        let mut default_headers = HeaderMap::new();
        // A map's owned iterator names each header once, before its first value.
        let mut last: Option<HeaderName> = None;
        for (name, value) in self.default_headers {
            let Some(name) = name.or_else(|| last.clone()) else {
                continue;
            };
            last = Some(name.clone());
            if is_credential(&name) || self.sensitive.contains(&name) {
                credentials.add(name, value);
            } else {
                default_headers.append(name, value);
            }
        }
        match self.user_agent {
            Some(Some(agent)) => {
                default_headers.insert(USER_AGENT, agent);
            }
            Some(None) => {
                default_headers.remove(USER_AGENT);
            }
            None if !default_headers.contains_key(USER_AGENT) => {
                default_headers.insert(USER_AGENT, HeaderValue::from_static(DEFAULT_USER_AGENT));
            }
            None => {}
        }
        if self.decompress
            && !crate::decompress::SUPPORTED.is_empty()
            && !default_headers.contains_key(ACCEPT_ENCODING)
        {
            let offer = accept_encoding(crate::decompress::SUPPORTED);
            if let Ok(value) = HeaderValue::from_str(&offer) {
                default_headers.insert(ACCEPT_ENCODING, value);
            }
        }
        let planned = |to_base_origin| {
            plan_headers(HeaderLayers {
                defaults: &default_headers,
                credentials: &credentials.headers,
                body_type: None,
                set: &HeaderMap::new(),
                appended: &HeaderMap::new(),
                to_base_origin,
            })
            .map(|planned| Arc::new(planned.headers))
            .map_err(|e| {
                Error::new(ErrorKind::Builder)
                    .with_message(e.to_string())
                    .with_source(e)
            })
        };
        let (base_headers, foreign_headers) = (planned(true)?, planned(false)?);
        // The proxy variables are read once, here, through the runtime (a
        // simulation answers from its own environment): curl's rules.
        let proxies = match self.proxies {
            Some(settings) => settings,
            None => {
                let runtime = &self.runtime;
                let env = ProxyEnv::from_lookup(|name| runtime.env_var(name));
                ProxySettings::from_env(&env).map_err(|e| {
                    Error::new(ErrorKind::Builder)
                        .with_message(e.to_string())
                        .with_source(e)
                })?
            }
        };
        let proxy_choices = self
            .engine
            .profiles
            .iter()
            .filter_map(|(origin, profile)| Some((origin.clone(), profile.proxy.clone()?)))
            .collect();
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
                default_headers,
                base_headers,
                foreign_headers,
                credentials,
                sensitive: self.sensitive,
                tls_options,
                tls,
                body_timeout,
                cookies: self.cookies,
                proxies,
                proxy_choices,
                decompress: self.decompress.then_some(self.decode_limits),
                hooks: self.hooks,
                counters: Counters::default(),
            }),
        })
    }
}
