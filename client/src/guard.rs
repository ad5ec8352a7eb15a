//! The guard that holds a live call, and the future that waits for the engine to wake it.
//!
//! Dropping a call's future at any await point cancels the call: the
//! [`CallGuard`] it owns gives every permit, slot and connection back to the
//! engine, in every state. The response keeps the guard while its body is
//! read, so the same holds for a dropped body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use breakwater_core::call::{self, CallId, Engine, Step};
use breakwater_core::Instant;

use crate::io::Connection;
use crate::state::Inner;

/// Holds a live call; dropping it cancels the call and returns everything it holds.
pub(crate) struct CallGuard {
    pub(crate) inner: Arc<Inner>,
    pub(crate) call: call::Call<Connection>,
    /// Whether other calls of this client were in flight at the last step.
    others_in_flight: bool,
}

impl CallGuard {
    /// Guards `call`, a call of the client `inner`.
    pub(crate) fn new(inner: Arc<Inner>, call: call::Call<Connection>) -> Self {
        CallGuard {
            inner,
            call,
            others_in_flight: false,
        }
    }

    /// Whether other calls of this client were in flight at the last step.
    pub(crate) fn others_in_flight(&self) -> bool {
        self.others_in_flight
    }

    /// The call's next step, decided at `now` (the driver's latest clock reading).
    pub(crate) fn poll_step(&mut self, now: Instant) -> Step {
        self.inner.decide(|shared| {
            self.others_in_flight = shared.wake_slots.len() > 1;
            self.call.poll_step(now, &mut shared.engine)
        })
    }

    /// Runs a report against the engine under the lock, then applies its events.
    pub(crate) fn report<T>(
        &mut self,
        f: impl FnOnce(&mut call::Call<Connection>, Instant, &mut Engine<Connection>) -> T,
    ) -> T {
        let now = self.inner.runtime.now();
        self.report_at(now, f)
    }

    /// [`report`](Self::report) at an instant the driver has just read.
    pub(crate) fn report_at<T>(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut call::Call<Connection>, Instant, &mut Engine<Connection>) -> T,
    ) -> T {
        self.inner
            .update(|shared| f(&mut self.call, now, &mut shared.engine))
    }

    pub(crate) async fn wait(&mut self, until: Option<Instant>) {
        let wake = WaitForWake {
            inner: self.inner.clone(),
            id: self.call.id(),
        };
        match until {
            Some(until) => {
                let runtime = self.inner.runtime.clone();
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
            self.inner.lock().wake_slots.remove(&id);
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
        let now = (self.call.phase() != call::CallPhase::Ended).then(|| self.inner.runtime.now());
        self.inner.update(|shared| {
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
