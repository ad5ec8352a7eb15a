//! Token fetches: the one a call waits for, and background refreshes that no call waits for.
//!
//! A call whose token is still valid but inside its refresh window uses it at
//! once, and the refresh runs on its own task
//! ([`Runtime::spawn`](crate::runtime::Runtime::spawn)), bounded by the
//! client's total timeout. Either kind of fetch is handed back (cancelled in
//! the engine, so that the next call that needs a token starts another) if
//! its future is dropped before it answers; a background one also when it
//! fails or times out, through the engine's report.

use std::sync::{Arc, Weak};

use breakwater_core::policy::auth::FetchId;
use breakwater_core::Instant;

use crate::auth::TokenFetchError;
use crate::guard::CallGuard;
use crate::io::with_deadline;
use crate::state::Inner;

/// Runs the token fetch the call waits for, by the call's deadline.
pub(super) async fn fetch_for_call(guard: &mut CallGuard, fetch: FetchId) {
    let Some(source) = guard.inner.credentials.tokens.clone() else {
        let _ = guard.report(|_, now, engine| engine.cancel_token_fetch(now, fetch));
        return;
    };
    let _ = guard.report(|_, now, engine| engine.handle_token_fetch_sent(now, fetch));
    // If this future is dropped mid-fetch, the fetch is handed back so that
    // the next caller starts one.
    let mut pending = PendingFetch {
        client: Arc::downgrade(&guard.inner),
        fetch: Some(fetch),
    };
    let runtime = guard.inner.runtime.clone();
    let result = with_deadline(&runtime, guard.call.deadline(), source.fetch())
        .await
        .unwrap_or(Err(TokenFetchError::Timeout));
    pending.fetch = None;
    let _ = guard.report(|_, now, engine| engine.handle_token_fetched(now, fetch, result));
}

/// Starts the background refresh `fetch` on a task of its own.
///
/// The fetch is handed back (cancelled in the engine, so the next call that
/// needs a token starts another) if the task is dropped before it answers.
pub(super) fn spawn_background_refresh(inner: &Arc<Inner>, fetch: FetchId) {
    let pending = PendingFetch {
        client: Arc::downgrade(inner),
        fetch: Some(fetch),
    };
    let Some(source) = inner.credentials.tokens.clone() else {
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
struct PendingFetch {
    client: Weak<Inner>,
    fetch: Option<FetchId>,
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
