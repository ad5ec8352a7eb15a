//! Work that belongs to no call, run on tasks of its own.
//!
//! Two things must happen on time even when no call is running:
//! - **The engine's shared timers** ([`Engine::poll_timeout`]): idle connections
//!   expire, old ones reach their lifetime, an open breaker's interval ends. The
//!   core's calling contract says to sleep until that instant and then call
//!   [`Engine::handle_timeout`]; the housekeeper is the task that does so. It is
//!   started the first time the engine has a timer and nobody is watching it,
//!   sleeps until the timer (or until woken for an earlier one), and ends when
//!   the engine has no timer left, when the client is closed or when the last
//!   handle to the client is dropped. A quiet client therefore closes an
//!   expired socket within one timer tick of its expiry, not at the next call.
//! - **Background token refreshes**: a call whose token is still valid but
//!   inside its refresh window uses it at once, and the refresh runs on its
//!   own task, bounded by the client's total timeout. If it fails, times out,
//!   or its task is dropped, the fetch is handed back so that a later call
//!   starts another one.
//!
//! Both tasks hold only a weak reference to the client while they wait, so
//! neither keeps a dropped client alive. They are spawned through
//! [`Runtime::spawn`](crate::runtime::Runtime::spawn); a runtime that cannot
//! spawn at that moment drops the task, and the work is then done by the
//! next call, as the engine's timers are also checked when a call starts.
//!
//! [`Engine::poll_timeout`]: breakwater_core::call::Engine::poll_timeout
//! [`Engine::handle_timeout`]: breakwater_core::call::Engine::handle_timeout

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};

use breakwater_core::policy::auth::FetchId;
use breakwater_core::Instant;

use crate::auth::{Credentials, TokenFetchError};
use crate::client::Inner;
use crate::io::with_deadline;

/// The housekeeper's state, kept beside the engine under the client's lock.
#[derive(Default)]
pub(crate) struct Housekeeping {
    /// Whether a housekeeping task exists (running, or sleeping).
    running: bool,
    /// The instant it will look at the engine again; `None` while it is
    /// working, or before it started.
    watching_until: Option<Instant>,
    /// Set when it must look again before `watching_until`.
    woken: bool,
    waker: Option<Waker>,
}

/// What the lock holder must do for the housekeeper once the lock is released.
#[must_use = "spawn or wake after releasing the engine lock"]
pub(crate) enum Nudge {
    Nothing,
    Spawn,
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
            return Nudge::Spawn;
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
            Nudge::Spawn => inner
                .runtime
                .spawn(Box::pin(housekeep(inner.weak_self.clone()))),
        }
    }
}

/// The housekeeping task: handle the engine's due timers, then sleep until
/// the next one. See the module documentation.
///
/// The flag guard is made before the task first runs, so that a runtime
/// that drops the task unpolled still clears the flag.
fn housekeep(client: Weak<Inner>) -> impl Future<Output = ()> + Send + 'static {
    let running = Running(client.clone());
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
            let next = engine.poll_timeout();
            let housekeeping = &mut shared.housekeeping;
            housekeeping.watching_until = next;
            housekeeping.woken = false;
            if next.is_none() {
                // Nothing left to watch: end, and let the next timer start a new task.
                housekeeping.running = false;
            }
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
struct Running(Weak<Inner>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            let mut shared = inner.lock();
            shared.housekeeping.running = false;
            shared.housekeeping.watching_until = None;
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

/// Starts the background refresh `fetch` on a task of its own.
///
/// The fetch is handed back (cancelled in the engine, so the next call that
/// needs a token starts another) if the task is dropped before it answers.
pub(crate) fn spawn_background_refresh(inner: &Arc<Inner>, fetch: FetchId) {
    let pending = PendingFetch {
        client: Arc::downgrade(inner),
        fetch: Some(fetch),
    };
    let Credentials::Tokens(source) = inner.credentials.clone() else {
        return; // dropping `pending` cancels the fetch
    };
    let runtime = inner.runtime.clone();
    let spawner = runtime.clone();
    let task = async move {
        let mut pending = pending;
        let Some(deadline) = pending.report(|inner, now| {
            let deadline = now + inner.lock().engine.config().total_timeout;
            inner.update(|shared| shared.engine.handle_token_fetch_sent(now, fetch).ok())?;
            Some(deadline)
        }) else {
            return;
        };
        let result = with_deadline(&runtime, deadline, source.fetch())
            .await
            .unwrap_or(Err(TokenFetchError::Timeout));
        pending.fetch = None;
        pending.report(|inner, now| {
            inner.update(|shared| {
                let _ = shared.engine.handle_token_fetched(now, fetch, result);
            });
            Some(())
        });
    };
    spawner.spawn(Box::pin(task));
}

/// A token fetch in flight; dropping it unanswered hands the fetch back.
pub(crate) struct PendingFetch {
    pub(crate) client: Weak<Inner>,
    pub(crate) fetch: Option<FetchId>,
}

impl PendingFetch {
    /// Runs `f` on the client at the runtime's current instant, if the client still exists.
    fn report<T>(&self, f: impl FnOnce(&Inner, Instant) -> Option<T>) -> Option<T> {
        let inner = self.client.upgrade()?;
        let now = inner.runtime.now();
        f(&inner, now)
    }
}

impl Drop for PendingFetch {
    fn drop(&mut self) {
        if let Some(fetch) = self.fetch.take() {
            let _ = self.report(|inner, now| {
                inner.update(|shared| {
                    let _ = shared.engine.cancel_token_fetch(now, fetch);
                });
                Some(())
            });
        }
    }
}
