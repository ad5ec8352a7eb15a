//! The state a client's clones share, and the housekeeper that watches its timers.
//!
//! One [`Inner`] per client: the runtime, the settings fixed at build time,
//! and, behind one mutex, the core's [`Engine`] with the wake-up slots of the
//! calls that wait on it. The mutex is held only for the few hundred
//! nanoseconds a decision takes; every change goes through
//! [`Inner::update`], which applies the engine's events (wake-ups,
//! connections to close) once the lock is released.
//!
//! Work that belongs to no call is started from here too:
//! - **The engine's shared timers** ([`Engine::poll_timeout`]): idle
//!   connections expire, old ones reach their lifetime, an open breaker's
//!   interval ends. The core's run loop says to sleep until that instant and
//!   then call [`Engine::handle_timeout`]; the housekeeper is the task that
//!   does so. It is started the first time the engine has a timer and nobody
//!   is watching it, sleeps until the timer (or until woken for an earlier
//!   one), and ends when the engine has no timer left, when the client is
//!   closed or when the last handle to the client is dropped. A quiet client
//!   therefore closes an expired socket within one timer tick of its expiry,
//!   not at the next call.
//! - **Background token refreshes** run on tasks of their own
//!   (`driver::token`).
//!
//! Both hold only a weak reference to the client while they wait, so
//! neither keeps a dropped client alive. They are spawned through
//! [`Runtime::spawn`]; a runtime that cannot spawn at that moment drops the
//! task, and the work is then done by the next call, as the engine's timers
//! are also checked when a call starts.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use breakwater_core::call::{CallId, Engine, EngineEvent};
use breakwater_core::proxy::{ProxyChoice, ProxyKind, ProxyUrl, Route};
use breakwater_core::{Instant, Origin};
use http::header::{HeaderMap, HeaderValue};
use http::Method;
use url::Url;

use crate::auth::Credentials;
use crate::error::{Error, ErrorKind};
use crate::io::Connection;
use crate::runtime::Runtime;
use crate::tls::{TlsConfig, TlsOptions};

/// What every clone of a client shares.
pub(crate) struct Inner {
    pub(crate) runtime: Arc<dyn Runtime>,
    /// This client, for the background tasks it starts, which must not keep it alive.
    pub(crate) weak_self: Weak<Inner>,
    pub(crate) shared: Mutex<Shared>,
    pub(crate) base_url: Url,
    pub(crate) base_origin: Origin,
    pub(crate) default_headers: HeaderMap,
    /// What a request that sets no header of its own sends to the base
    /// origin (defaults and credentials), and to any other (defaults).
    pub(crate) base_headers: Arc<HeaderMap>,
    pub(crate) foreign_headers: Arc<HeaderMap>,
    pub(crate) credentials: Credentials,
    /// Header names the caller marked as carrying credentials: they never
    /// follow a redirect to another origin.
    pub(crate) sensitive: Vec<http::header::HeaderName>,
    pub(crate) tls_options: TlsOptions,
    pub(crate) tls: OnceLock<Result<TlsConfig, crate::tls::TlsError>>,
    pub(crate) body_timeout: Duration,
    /// Which requests go through which proxy, read once at `build`.
    pub(crate) proxies: breakwater_core::proxy::ProxySettings,
    /// Origins whose profile chose their route.
    pub(crate) proxy_choices: Vec<(Origin, ProxyChoice)>,
    /// The cookie jar, when the client keeps cookies.
    pub(crate) cookies: Option<Arc<crate::cookies::CookieJar>>,
    /// The bounds of decoded bodies; `None` when the client decodes none.
    pub(crate) decompress: Option<breakwater_core::content::DecodeLimits>,
    pub(crate) hooks: Hooks,
    pub(crate) counters: Counters,
}

/// How a plain `http` request is written for an HTTP proxy between it and
/// its origin: its target in absolute form, with the proxy's credentials.
#[derive(Clone, Debug, Default)]
pub(crate) struct HttpProxyForm {
    /// The request target names the origin (`http://host:port/path`).
    pub(crate) absolute: bool,
    /// `Proxy-Authorization` for the proxy, never for the origin.
    pub(crate) authorization: Option<HeaderValue>,
}

/// Running totals for [`Client::stats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) calls: std::sync::atomic::AtomicU64,
    pub(crate) attempts: std::sync::atomic::AtomicU64,
    pub(crate) retries: std::sync::atomic::AtomicU64,
    pub(crate) failures: std::sync::atomic::AtomicU64,
    pub(crate) stale_connections: std::sync::atomic::AtomicU64,
}

/// The engine, the wake-up slots of the calls that wait on it, and the
/// housekeeper that watches its shared timers.
pub(crate) struct Shared {
    pub(crate) engine: Engine<Connection>,
    pub(crate) wake_slots: BTreeMap<CallId, WakeSlot>,
    pub(crate) closed: bool,
    pub(crate) housekeeping: Housekeeping,
}

#[derive(Default)]
pub(crate) struct WakeSlot {
    pub(crate) woken: bool,
    pub(crate) waker: Option<Waker>,
}

/// Callbacks on requests and responses, for logs and metrics. They run on
/// the calling task, outside any lock, and must not block.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) on_request: Vec<RequestHook>,
    pub(crate) on_response: Vec<ResponseHook>,
}

type RequestHook = Arc<dyn Fn(&RequestInfo<'_>) + Send + Sync>;
type ResponseHook = Arc<dyn Fn(&ResponseInfo<'_>) + Send + Sync>;

/// What an `on_request` hook sees: one attempt about to be sent.
///
/// Its `Debug` shows the URL with query values redacted; `url` itself is
/// the whole URL, for a hook that knows what it may log.
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
///
/// Its `Debug` shows the URL with query values redacted, and `Set-Cookie`
/// values are marked sensitive, so `http`'s `Debug` hides them.
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

impl fmt::Debug for RequestInfo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestInfo")
            .field("method", self.method)
            .field("url", &crate::error::redacted_url(self.url))
            .field("attempt", &self.attempt)
            .field("reused_connection", &self.reused_connection)
            .finish()
    }
}

impl fmt::Debug for ResponseInfo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseInfo")
            .field("method", self.method)
            .field("url", &crate::error::redacted_url(self.url))
            .field("status", &self.status)
            .field("headers", self.headers)
            .field("attempt", &self.attempt)
            .field("elapsed", &self.elapsed)
            .finish()
    }
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock cannot leave the engine half-updated
        // in a way that matters more than losing the client: keep going.
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Like [`update`](Self::update), without looking at the engine's shared
    /// timers afterwards: for the decisions on a call's hot path
    /// (starting a call, polling its next step), which take idle connections
    /// and permits but add no timer the housekeeper must be woken for. The
    /// one timer they can add, a half-open breaker's probe timeout, guards
    /// against a probe that never reports, and calls always report or
    /// cancel; the next report, or the next call's start, handles it.
    pub(crate) fn decide<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        let mut shared = self.lock();
        let result = f(&mut shared);
        let drained = shared.drain_events();
        drop(shared);
        drop(drained);
        result
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
    /// The proxy a connection to `origin` goes through, if any.
    pub(crate) fn proxy_for(&self, origin: &Origin) -> Option<ProxyUrl> {
        if let Some((_, choice)) = self.proxy_choices.iter().find(|(o, _)| o == origin) {
            return match choice {
                ProxyChoice::Direct => None,
                ProxyChoice::Through(proxy) => Some(proxy.clone()),
            };
        }
        if self.proxies.is_none() {
            return None;
        }
        match self
            .proxies
            .route(origin.scheme(), origin.host(), origin.port())
        {
            Route::Direct => None,
            Route::Proxy(proxy) => Some(proxy.clone()),
        }
    }

    /// For a plain `http` request through an HTTP proxy: the proxy's
    /// `Proxy-Authorization` value (if it has credentials), and the fact
    /// that the request names its origin in absolute form.
    pub(crate) fn http_proxy_form(&self, origin: &Origin) -> HttpProxyForm {
        if origin.scheme() != breakwater_core::Scheme::Http
            || (self.proxies.is_none() && self.proxy_choices.is_empty())
        {
            return HttpProxyForm::default();
        }
        let Some(proxy) = self
            .proxy_for(origin)
            .filter(|p| p.kind() == ProxyKind::Http)
        else {
            return HttpProxyForm::default();
        };
        let authorization = proxy.credentials().and_then(|(user, password)| {
            let mut value = HeaderValue::from_str(
                &breakwater_core::proxy::tunnel::basic_credentials(user, password),
            )
            .ok()?;
            value.set_sensitive(true);
            Some(value)
        });
        HttpProxyForm {
            absolute: true,
            authorization,
        }
    }

    pub(crate) fn tls(&self) -> Result<TlsConfig, Error> {
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

/// The housekeeper's state, kept beside the engine under the client's lock.
#[derive(Default)]
pub(crate) struct Housekeeping {
    /// Whether a housekeeping task exists (running, or sleeping).
    running: bool,
    /// The instant it will look at the engine again; `None` while it is
    /// working, or before it started.
    watching_until: Option<Instant>,
    /// How many looks in a row found no timer to watch.
    empty_looks: u32,
    /// Counts housekeeping tasks started, so that one that ended does not
    /// clear the state of the next.
    generation: u64,
    /// Set when it must look again before `watching_until`.
    woken: bool,
    waker: Option<Waker>,
}

/// What the lock holder must do for the housekeeper once the lock is released.
#[must_use = "spawn or wake after releasing the engine lock"]
pub(crate) enum Nudge {
    Nothing,
    /// Start a housekeeper of this generation.
    Spawn(u64),
    Wake(Waker),
}

impl Housekeeping {
    /// Called under the lock after every change to the engine, with the
    /// engine's next shared timer: starts or wakes the housekeeper if nobody
    /// watches that timer yet. The common case (a timer no earlier than the
    /// one being watched) is a comparison.
    pub(crate) fn after_update(&mut self, next_timer: Option<Instant>) -> Nudge {
        let Some(next) = next_timer else {
            return Nudge::Nothing;
        };
        if !self.running {
            self.running = true;
            self.watching_until = Some(next);
            self.empty_looks = 0;
            self.generation += 1;
            return Nudge::Spawn(self.generation);
        }
        if self.watching_until.is_some_and(|watched| watched <= next) {
            return Nudge::Nothing;
        }
        // Count the timer as watched from now on, so that the updates before
        // the housekeeper runs again do not wake it once each.
        self.watching_until = Some(next);
        self.woken = true;
        self.waker.take().map_or(Nudge::Nothing, Nudge::Wake)
    }

    /// The client was dropped: a sleeping housekeeper must see it and end.
    pub(crate) fn take_waker(&mut self) -> Option<Waker> {
        self.woken = true;
        self.waker.take()
    }
}

impl Nudge {
    /// Carries the nudge out; call it with the lock released, since a waker
    /// may run a task inline and a spawn may poll it at once.
    pub(crate) fn apply(self, inner: &Inner) {
        match self {
            Nudge::Nothing => {}
            Nudge::Wake(waker) => waker.wake(),
            Nudge::Spawn(generation) => inner
                .runtime
                .spawn(Box::pin(housekeep(inner.weak_self.clone(), generation))),
        }
    }
}

/// How long the housekeeper waits before looking again when it found no timer.
const EMPTY_LOOK_INTERVAL: Duration = Duration::from_secs(1);

/// How many looks in a row may find no timer before the housekeeper ends.
const EMPTY_LOOKS_BEFORE_ENDING: u32 = 60;

/// The housekeeping task: handle the engine's due timers, then sleep until
/// the next one. See the module documentation.
///
/// The flag guard is made before the task first runs, so that a runtime
/// that drops the task unpolled still clears the flag.
fn housekeep(client: Weak<Inner>, generation: u64) -> impl Future<Output = ()> + Send + 'static {
    let running = Running(client.clone(), generation);
    async move {
        let _running = running;
        watch_timers(client).await;
    }
}

async fn watch_timers(client: Weak<Inner>) {
    loop {
        let Some(inner) = client.upgrade() else {
            return;
        };
        let runtime = inner.runtime.clone();
        let now = runtime.now();
        let next = inner.update(|shared| {
            if shared.closed {
                return None;
            }
            let engine = &mut shared.engine;
            if engine.poll_timeout().is_some_and(|due| due <= now) {
                engine.handle_timeout(now);
            }
            let housekeeping = &mut shared.housekeeping;
            housekeeping.woken = false;
            let next = match engine.poll_timeout() {
                Some(next) => {
                    housekeeping.empty_looks = 0;
                    Some(next)
                }
                // Nothing to watch for a minute: end, and let the next timer
                // start a new task.
                None if housekeeping.empty_looks >= EMPTY_LOOKS_BEFORE_ENDING => {
                    housekeeping.running = false;
                    None
                }
                // Nothing to watch now, on a client that is likely busy (its
                // connection was checked out as we looked). Look again in a
                // second rather than end: a task started and ended around
                // every call would cost more than the call's own work, and a
                // timer made meanwhile for later than that needs no wake-up.
                None => {
                    housekeeping.empty_looks += 1;
                    Some(now + EMPTY_LOOK_INTERVAL)
                }
            };
            housekeeping.watching_until = next;
            next
        });
        drop(inner);
        let Some(next) = next else {
            return;
        };
        futures_lite::future::or(
            Woken {
                client: client.clone(),
            },
            runtime.sleep_until(next),
        )
        .await;
    }
}

/// Clears the `running` flag if the housekeeping task ends for any reason
/// other than finding nothing to watch (a runtime that dropped it, a closed
/// client), so that a later timer can start a new one.
struct Running(Weak<Inner>, u64);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            let mut shared = inner.lock();
            // A task that ended on its own cleared the flag already; a
            // newer task may have started since, and its state is its own.
            if shared.housekeeping.generation == self.1 {
                shared.housekeeping.running = false;
                shared.housekeeping.watching_until = None;
            }
        }
    }
}

/// Completes when the housekeeper is woken, or when the client is gone.
struct Woken {
    client: Weak<Inner>,
}

impl Future for Woken {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(inner) = self.client.upgrade() else {
            return Poll::Ready(());
        };
        let mut shared = inner.lock();
        if std::mem::take(&mut shared.housekeeping.woken) {
            return Poll::Ready(());
        }
        shared.housekeeping.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
