//! The circuit breaker: whether an attempt to one origin may be dispatched at all.
//!
//! One [`Breaker`] guards one scope — an origin, or a per-origin profile. It is a pure state
//! machine: every input carries `now`, randomness (for the optional jitter) comes from a
//! [`fastrand::Rng`] the caller seeds, and the breaker never reads a clock. The rules are
//! specified in docs/spec/breaker.md; the invariants it is tested against are the breaker
//! invariants of docs/spec/invariants.md (`probes-bounded` to `half-open-decides`).
//!
//! # States
//!
//! - **Closed**: every attempt is admitted. Outcomes are counted, and the breaker **trips** to
//!   Open when a trip rule holds after a counted outcome:
//!   - *consecutive failures* (on by default): 5 [`BreakerEffect::Failure`]s with no
//!     [`BreakerEffect::Success`] between them (Finagle's and Envoy's rule, so that a
//!     low-traffic client still trips);
//!   - *failure rate* (off by default, [`BreakerConfig::with_failure_rate`]): at least
//!     `min_calls` (20) counted calls in a 10 s window of ten 1 s buckets, of which at least
//!     50 % failed (Hystrix's volume and threshold, resilience4j's bucketed window, "≥" as in
//!     both). As in resilience4j the rule is evaluated after *every* counted outcome, so the
//!     call that completes the minimum volume trips the breaker even if it succeeded.
//!
//!   When both rules are on, either one trips the breaker (docs/spec/breaker.md#closed).
//! - **Open** until an instant `until`: every admission is rejected with that instant. The k-th
//!   consecutive opening lasts `open_interval` (30 s) by default; with growth on it lasts
//!   `open_interval · 2^(k−1)` capped at `max_open_interval` (300 s), and with jitter on it is
//!   then multiplied by a uniform factor in `[0.8, 1.2]` (docs/spec/breaker.md#open). k returns
//!   to 0 once the breaker has stayed Closed for 60 s. The move to HalfOpen is **lazy**: the first
//!   [`Breaker::try_acquire`] at or after `until` performs it (as resilience4j, Polly and
//!   Hystrix do). [`Breaker::poll_timeout`] reports `until`, and [`Breaker::handle_timeout`]
//!   performs the move for a driver that armed a timer.
//! - **HalfOpen**: at most `half_open_probes` (1) probes are admitted. Any probe failure
//!   re-opens the breaker (k + 1); once that many probes have succeeded it closes with a fresh
//!   window and no consecutive failures. A probe whose outcome is [`BreakerEffect::Ignore`], or
//!   that is [released](Breaker::release) because it was cancelled, gives its slot back.
//!   A probe that has not reported within `probe_timeout` (60 s) of the last probe admission
//!   counts as failed (resilience4j's `maxWaitDurationInHalfOpenState`), so a leaked permit
//!   cannot wedge the breaker half-open forever.
//! - **ForcedOpen** and **Disabled**: administrative states ([`Breaker::force_open`],
//!   [`Breaker::disable`]); only [`Breaker::reset`] (or the other administrative call) leaves
//!   them. ForcedOpen rejects everything; Disabled admits everything and counts nothing.
//!
//! # Epochs
//!
//! Every state change increments the breaker's **epoch** (docs/spec/breaker.md#epochs), and
//! every admission returns a [`BreakerPermit`] stamped with the epoch it was admitted under. An
//! outcome recorded with a permit from another epoch is *stale*: it never moves the breaker,
//! never counts, and is never a probe result. So a success from an attempt admitted while Closed
//! can never close a HalfOpen breaker, and a late failure from before a trip cannot count
//! against the fresh window.
//!
//! # Inputs and outputs
//!
//! The breaker follows the crate's [run loop](crate#the-run-loop). What is particular to it:
//!
//! 1. Before dispatching an attempt, call [`Breaker::try_acquire`]. On `Err`, do not dispatch;
//!    [`BreakerRejected`] says when an admission may next succeed.
//! 2. Answer every permit exactly once: [`Breaker::record`] with the outcome's
//!    [`BreakerEffect`] (from the classification in [`crate::policy::outcome`]), or
//!    [`Breaker::release`] if the attempt was cancelled before it produced an outcome.
//! 3. Its timer ([`Breaker::poll_timeout`], [`Breaker::handle_timeout`]) is optional: the
//!    move to HalfOpen also happens lazily at the next admission.
//! 4. Its events ([`Breaker::poll_event`]) are its transitions, to log or publish.
//!
//! Admission and recording are O(1) and allocation-free (the failure-rate window rolls at
//! most `buckets` buckets per call).
//!
//! # Scope of an event
//!
//! A breaker does not know which origin it guards: it is stored in the caller's map keyed by
//! origin or profile, and [`BreakerTransition`] carries the old and new state, the cause, the new
//! epoch and the instant. The owner attaches the origin when it publishes the event.
//!
//! # Not implemented
//!
//! A slow-call trip rule (resilience4j has one, off by default) is not implemented: an attempt
//! that runs past its timeout already reports a [`BreakerEffect::Failure`].
//!
//! # Example
//!
//! ```
//! use breakwater_core::policy::breaker::{Breaker, BreakerConfig, BreakerState};
//! use breakwater_core::policy::outcome::BreakerEffect;
//! use breakwater_core::Instant;
//! use std::time::Duration;
//!
//! let mut breaker = Breaker::new(BreakerConfig::default(), fastrand::Rng::with_seed(7))?;
//! let now = Instant::ZERO;
//! for _ in 0..5 {
//!     let permit = breaker.try_acquire(now).expect("closed admits");
//!     breaker.record(now, permit, BreakerEffect::Failure);
//! }
//! let rejected = breaker.try_acquire(now).unwrap_err();
//! assert_eq!(rejected.retry_at, Some(now + Duration::from_secs(30)));
//!
//! // 30 s later the first admission is the half-open probe; its success closes the breaker.
//! let later = now + Duration::from_secs(30);
//! let probe = breaker.try_acquire(later).expect("probe admitted");
//! assert!(probe.is_probe());
//! breaker.record(later, probe, BreakerEffect::Success);
//! assert!(matches!(breaker.state(), BreakerState::Closed { .. }));
//! # Ok::<(), breakwater_core::policy::breaker::BreakerConfigError>(())
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::policy::outcome::BreakerEffect;
use crate::time::duration_to_nanos;
use crate::Instant;

/// How many transitions [`Breaker::poll_event`] keeps when nobody drains them; older ones are
/// dropped (and counted) so that an undrained breaker stays bounded.
const EVENT_QUEUE_CAPACITY: usize = 32;

/// The most buckets a failure-rate window may have, so a roll stays cheap.
pub const MAX_WINDOW_BUCKETS: u32 = 1_000;

mod config;

pub use config::{BreakerConfig, BreakerConfigError, FailureRateRule};

// ---------------------------------------------------------------------------------------------
// Public vocabulary: state snapshots, permits, rejections, events
// ---------------------------------------------------------------------------------------------

/// A snapshot of a breaker's state, from [`Breaker::state`] and in every [`BreakerTransition`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Admitting everything and counting outcomes.
    Closed {
        /// Failures since the last success.
        consecutive_failures: u32,
    },
    /// Rejecting everything until `until` (the move to HalfOpen happens lazily at or after it).
    Open {
        /// When the next admission becomes a half-open probe.
        until: Instant,
        /// k: how many consecutive openings this one is (1 for the first).
        openings: u32,
    },
    /// Admitting a bounded number of probes.
    HalfOpen {
        /// Probe slots in use (admitted and not given back).
        probes_admitted: u32,
        /// Probes that have succeeded.
        probes_succeeded: u32,
        /// The configured number of probes.
        probes_allowed: u32,
    },
    /// Administratively open: rejecting everything until [`Breaker::reset`].
    ForcedOpen,
    /// Administratively off: admitting everything, counting nothing, until [`Breaker::reset`].
    Disabled,
}

impl BreakerState {
    /// The state's name without its data.
    pub fn kind(&self) -> BreakerStateKind {
        match self {
            BreakerState::Closed { .. } => BreakerStateKind::Closed,
            BreakerState::Open { .. } => BreakerStateKind::Open,
            BreakerState::HalfOpen { .. } => BreakerStateKind::HalfOpen,
            BreakerState::ForcedOpen => BreakerStateKind::ForcedOpen,
            BreakerState::Disabled => BreakerStateKind::Disabled,
        }
    }
}

/// The name of a [`BreakerState`], for logs and metrics labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum BreakerStateKind {
    /// See [`BreakerState::Closed`].
    Closed,
    /// See [`BreakerState::Open`].
    Open,
    /// See [`BreakerState::HalfOpen`].
    HalfOpen,
    /// See [`BreakerState::ForcedOpen`].
    ForcedOpen,
    /// See [`BreakerState::Disabled`].
    Disabled,
}

/// Permission to dispatch one attempt, stamped with the epoch it was admitted under.
///
/// Answer it exactly once, with [`Breaker::record`] or [`Breaker::release`]. It is neither
/// `Clone` nor `Copy`, so it cannot be answered twice. A permit that is dropped unanswered
/// while Closed costs nothing; a dropped half-open probe holds its slot until `probe_timeout`.
#[must_use = "answer the permit with Breaker::record or Breaker::release"]
#[derive(Debug, PartialEq, Eq)]
pub struct BreakerPermit {
    epoch: u64,
    probe: bool,
}

impl BreakerPermit {
    /// The breaker epoch this permit was admitted under.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether this is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// Why [`Breaker::try_acquire`] refused, and when an admission may next succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerRejected {
    /// Why the attempt was refused.
    pub reason: RejectReason,
    /// The instant from which an admission may succeed, when the breaker knows it: `until` for
    /// Open; `None` for ForcedOpen and for HalfOpen with every probe slot in use (that depends
    /// on the probes' outcomes).
    pub retry_at: Option<Instant>,
    /// `retry_at − now`, for a `Retry-After`-style answer.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for BreakerRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.reason, self.retry_after) {
            (RejectReason::Open, Some(after)) => {
                write!(f, "circuit open; retry after {after:?}")
            }
            (RejectReason::HalfOpenProbesBusy, _) => {
                f.write_str("circuit half-open and every probe slot is in use")
            }
            (RejectReason::ForcedOpen, _) => f.write_str("circuit forced open"),
            _ => f.write_str("circuit open"),
        }
    }
}

impl std::error::Error for BreakerRejected {}

/// The state that refused an admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// Open, and `now < until`.
    Open,
    /// HalfOpen with every probe slot in use.
    HalfOpenProbesBusy,
    /// Administratively forced open.
    ForcedOpen,
}

/// What [`Breaker::record`] did with an outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Recorded {
    /// The outcome was counted (and may have moved the breaker).
    Counted,
    /// The outcome says nothing about health ([`BreakerEffect::Ignore`], a release, or the
    /// breaker is Disabled): no count changed; a probe gave its slot back.
    NotCounted,
    /// The permit was admitted under another epoch: the outcome was dropped.
    Stale,
}

/// Why a breaker changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransitionCause {
    /// Closed → Open: the consecutive-failure rule held.
    ConsecutiveFailures,
    /// Closed → Open: the failure-rate rule held.
    FailureRate,
    /// Open → HalfOpen: the open interval elapsed.
    OpenIntervalElapsed,
    /// HalfOpen → Open: a probe failed.
    ProbeFailed,
    /// HalfOpen → Open: a probe did not report within `probe_timeout`.
    ProbeTimedOut,
    /// HalfOpen → Closed: every probe succeeded.
    ProbesSucceeded,
    /// → ForcedOpen by [`Breaker::force_open`].
    ForcedOpen,
    /// → Disabled by [`Breaker::disable`].
    Disabled,
    /// → Closed by [`Breaker::reset`].
    Reset,
}

/// One state change, drained with [`Breaker::poll_event`].
///
/// It does not name the origin: the owner of the breaker (keyed by origin or profile) adds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerTransition {
    /// When the change happened.
    pub at: Instant,
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
    /// Why.
    pub cause: TransitionCause,
    /// The epoch the breaker entered.
    pub epoch: u64,
}

// ---------------------------------------------------------------------------------------------
// The breaker
// ---------------------------------------------------------------------------------------------

/// A circuit breaker for one origin or profile. See the [module documentation](self).
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    rng: fastrand::Rng,
    state: State,
    epoch: u64,
    /// The latest `now` seen, so an earlier `now` counts as this one.
    latest_now: Instant,
    /// k: consecutive openings since the breaker last stayed Closed for
    /// `open_streak_reset_after`.
    openings: u32,
    /// When the breaker last entered Closed, to decide whether k returns to 0.
    closed_since: Instant,
    consecutive_failures: u32,
    window: Option<Window>,
    events: VecDeque<BreakerTransition>,
    events_dropped: u64,
}

/// The private state; counters of the Closed state live on [`Breaker`] so that they survive
/// without a copy on every outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        admitted: u32,
        succeeded: u32,
        last_admitted_at: Instant,
    },
    ForcedOpen,
    Disabled,
}

impl Breaker {
    /// A Closed breaker at epoch 0, with `rng` as its only source of randomness (for jitter).
    pub fn new(config: BreakerConfig, rng: fastrand::Rng) -> Result<Breaker, BreakerConfigError> {
        config.validate()?;
        let window = config.failure_rate.as_ref().map(Window::new);
        Ok(Breaker {
            config,
            rng,
            state: State::Closed,
            epoch: 0,
            latest_now: Instant::ZERO,
            openings: 0,
            closed_since: Instant::ZERO,
            consecutive_failures: 0,
            window,
            events: VecDeque::with_capacity(EVENT_QUEUE_CAPACITY),
            events_dropped: 0,
        })
    }

    /// Ask to dispatch one attempt at `now`.
    ///
    /// Closed and Disabled admit; Open rejects until `until`, and the first call at or after it
    /// moves to HalfOpen and admits the first probe; HalfOpen admits while a probe slot is free.
    pub fn try_acquire(&mut self, now: Instant) -> Result<BreakerPermit, BreakerRejected> {
        let now = self.observe(now);
        self.apply_due_timers(now);
        match self.state {
            State::Closed | State::Disabled => Ok(self.permit(false)),
            State::Open { until } => Err(BreakerRejected {
                reason: RejectReason::Open,
                retry_at: Some(until),
                retry_after: Some(until.saturating_duration_since(now)),
            }),
            State::HalfOpen {
                admitted,
                succeeded,
                ..
            } => {
                if admitted >= self.config.half_open_probes {
                    return Err(BreakerRejected {
                        reason: RejectReason::HalfOpenProbesBusy,
                        retry_at: None,
                        retry_after: None,
                    });
                }
                self.state = State::HalfOpen {
                    admitted: admitted + 1,
                    succeeded,
                    last_admitted_at: now,
                };
                Ok(self.permit(true))
            }
            State::ForcedOpen => Err(BreakerRejected {
                reason: RejectReason::ForcedOpen,
                retry_at: None,
                retry_after: None,
            }),
        }
    }

    /// Report the outcome of the attempt `permit` admitted.
    ///
    /// An outcome from another epoch is dropped ([`Recorded::Stale`]).
    pub fn record(
        &mut self,
        now: Instant,
        permit: BreakerPermit,
        effect: BreakerEffect,
    ) -> Recorded {
        let now = self.observe(now);
        // A probe timeout that fell due before this outcome arrived has already decided.
        self.apply_due_timers(now);
        if permit.epoch != self.epoch {
            return Recorded::Stale;
        }
        match self.state {
            State::Closed => self.record_closed(now, effect),
            State::HalfOpen {
                admitted,
                succeeded,
                last_admitted_at,
            } => self.record_probe(now, effect, admitted, succeeded, last_admitted_at),
            // No permit is issued under these epochs except while Disabled, which counts nothing.
            State::Open { .. } | State::ForcedOpen | State::Disabled => Recorded::NotCounted,
        }
    }

    /// Give back a permit whose attempt was cancelled before it had an outcome; the same as
    /// recording [`BreakerEffect::Ignore`].
    pub fn release(&mut self, now: Instant, permit: BreakerPermit) -> Recorded {
        self.record(now, permit, BreakerEffect::Ignore)
    }

    /// Apply whatever time-driven change is due at `now`: Open → HalfOpen at `until`, and a
    /// half-open probe timeout. Early or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.observe(now);
        self.apply_due_timers(now);
    }

    /// The next instant at which [`Breaker::handle_timeout`] would change something: `until`
    /// while Open, the probe timeout while HalfOpen with a probe in flight, otherwise `None`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            State::HalfOpen {
                admitted,
                succeeded,
                last_admitted_at,
            } if admitted > succeeded => self
                .config
                .probe_timeout
                .map(|timeout| last_admitted_at.saturating_add(timeout)),
            _ => None,
        }
    }

    /// The next transition not yet drained, oldest first.
    pub fn poll_event(&mut self) -> Option<BreakerTransition> {
        self.events.pop_front()
    }

    /// How many transitions were dropped because more than 32 were left undrained.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// A snapshot of the current state. An Open state whose `until` has passed stays Open here
    /// until the next [`Breaker::try_acquire`] or [`Breaker::handle_timeout`].
    pub fn state(&self) -> BreakerState {
        self.snapshot()
    }

    /// The current epoch; it increases by one on every state change.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The configuration this breaker was built with.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Open the breaker administratively until [`Breaker::reset`]; permits outstanding become
    /// stale. Does nothing if already ForcedOpen.
    pub fn force_open(&mut self, now: Instant) {
        let now = self.observe(now);
        if self.state != State::ForcedOpen {
            self.transition(now, State::ForcedOpen, TransitionCause::ForcedOpen);
        }
    }

    /// Turn the breaker off until [`Breaker::reset`]: admit everything, count nothing.
    /// Does nothing if already Disabled.
    pub fn disable(&mut self, now: Instant) {
        let now = self.observe(now);
        if self.state != State::Disabled {
            self.transition(now, State::Disabled, TransitionCause::Disabled);
        }
    }

    /// Close the breaker from any state with a fresh window, no consecutive failures and k = 0.
    /// Always a transition (even Closed → Closed), so permits outstanding become stale.
    pub fn reset(&mut self, now: Instant) {
        let now = self.observe(now);
        self.transition(now, State::Closed, TransitionCause::Reset);
        self.openings = 0;
    }

    // -- transitions ---------------------------------------------------------------------------

    fn record_closed(&mut self, now: Instant, effect: BreakerEffect) -> Recorded {
        let failed = match effect {
            BreakerEffect::Success => false,
            BreakerEffect::Failure => true,
            BreakerEffect::Ignore => return Recorded::NotCounted,
        };
        self.consecutive_failures = if failed {
            self.consecutive_failures.saturating_add(1)
        } else {
            0
        };
        let consecutive_trip = self
            .config
            .consecutive_failures
            .is_some_and(|threshold| self.consecutive_failures >= threshold);
        let rate_trip = match (&mut self.window, &self.config.failure_rate) {
            (Some(window), Some(rule)) => {
                window.add(now, failed);
                rule.holds(window.calls, window.failures)
            }
            _ => false,
        };
        if consecutive_trip || rate_trip {
            if now.saturating_duration_since(self.closed_since)
                >= self.config.open_streak_reset_after
            {
                self.openings = 0;
            }
            let cause = if consecutive_trip {
                TransitionCause::ConsecutiveFailures
            } else {
                TransitionCause::FailureRate
            };
            self.open(now, cause);
        }
        Recorded::Counted
    }

    fn record_probe(
        &mut self,
        now: Instant,
        effect: BreakerEffect,
        admitted: u32,
        succeeded: u32,
        last_admitted_at: Instant,
    ) -> Recorded {
        match effect {
            BreakerEffect::Failure => {
                self.open(now, TransitionCause::ProbeFailed);
                Recorded::Counted
            }
            BreakerEffect::Success => {
                let succeeded = succeeded + 1;
                if succeeded >= self.config.half_open_probes {
                    self.transition(now, State::Closed, TransitionCause::ProbesSucceeded);
                } else {
                    self.state = State::HalfOpen {
                        admitted,
                        succeeded,
                        last_admitted_at,
                    };
                }
                Recorded::Counted
            }
            BreakerEffect::Ignore => {
                self.state = State::HalfOpen {
                    admitted: admitted.saturating_sub(1),
                    succeeded,
                    last_admitted_at,
                };
                Recorded::NotCounted
            }
        }
    }

    /// Open for the next consecutive opening (k + 1).
    fn open(&mut self, now: Instant, cause: TransitionCause) {
        self.openings = self.openings.saturating_add(1);
        let until = now.saturating_add(self.open_duration(self.openings));
        self.transition(now, State::Open { until }, cause);
    }

    fn apply_due_timers(&mut self, now: Instant) {
        match self.state {
            State::Open { until } if now >= until => {
                self.transition(
                    now,
                    State::HalfOpen {
                        admitted: 0,
                        succeeded: 0,
                        last_admitted_at: now,
                    },
                    TransitionCause::OpenIntervalElapsed,
                );
            }
            State::HalfOpen { .. }
                if self.poll_timeout().is_some_and(|deadline| now >= deadline) =>
            {
                self.open(now, TransitionCause::ProbeTimedOut);
            }
            _ => {}
        }
    }

    /// The one place the state changes: bump the epoch, reset what the new state starts from,
    /// and queue the event.
    fn transition(&mut self, now: Instant, to: State, cause: TransitionCause) {
        let from = self.snapshot();
        self.state = to;
        self.epoch = self.epoch.wrapping_add(1);
        if to == State::Closed {
            self.closed_since = now;
            self.consecutive_failures = 0;
            if let Some(window) = &mut self.window {
                window.clear();
            }
        }
        if self.events.len() >= EVENT_QUEUE_CAPACITY {
            self.events.pop_front();
            self.events_dropped = self.events_dropped.saturating_add(1);
        }
        self.events.push_back(BreakerTransition {
            at: now,
            from,
            to: self.snapshot(),
            cause,
            epoch: self.epoch,
        });
    }

    // -- helpers -------------------------------------------------------------------------------

    fn observe(&mut self, now: Instant) -> Instant {
        self.latest_now = self.latest_now.max(now);
        self.latest_now
    }

    fn permit(&self, probe: bool) -> BreakerPermit {
        BreakerPermit {
            epoch: self.epoch,
            probe,
        }
    }

    fn snapshot(&self) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed {
                consecutive_failures: self.consecutive_failures,
            },
            State::Open { until } => BreakerState::Open {
                until,
                openings: self.openings,
            },
            State::HalfOpen {
                admitted,
                succeeded,
                ..
            } => BreakerState::HalfOpen {
                probes_admitted: admitted,
                probes_succeeded: succeeded,
                probes_allowed: self.config.half_open_probes,
            },
            State::ForcedOpen => BreakerState::ForcedOpen,
            State::Disabled => BreakerState::Disabled,
        }
    }

    /// How long the `openings`-th consecutive opening lasts (docs/spec/breaker.md#open).
    fn open_duration(&mut self, openings: u32) -> Duration {
        let base = duration_to_nanos(self.config.open_interval);
        let nominal = if self.config.open_growth {
            let doubling = openings.saturating_sub(1);
            let grown = 1_u64
                .checked_shl(doubling)
                .and_then(|factor| base.checked_mul(factor))
                .unwrap_or(u64::MAX);
            grown.min(duration_to_nanos(self.config.max_open_interval))
        } else {
            base
        };
        let percent = u64::from(self.config.open_jitter_percent);
        if percent == 0 {
            return Duration::from_nanos(nominal);
        }
        // nominal · (1 ± p/100), uniform over whole nanoseconds.
        let spread = (u128::from(nominal) * u128::from(percent) / 100) as u64;
        let low = nominal - spread;
        let offset = self.rng.u64(0..=spread.saturating_mul(2));
        Duration::from_nanos(low.saturating_add(offset))
    }
}

/// The failure-rate rule's sliding window: `buckets` counters and their running totals.
#[derive(Clone, Debug)]
struct Window {
    bucket_nanos: u64,
    /// Counters per bucket, indexed by bucket number modulo their count.
    buckets: Box<[Bucket]>,
    /// The bucket number (`now / bucket_nanos`) of the newest bucket written.
    newest: u64,
    calls: u64,
    failures: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    calls: u64,
    failures: u64,
}

impl Window {
    fn new(rule: &FailureRateRule) -> Window {
        // Validation guarantees 1 ≤ buckets ≤ window in nanoseconds.
        let count = u64::from(rule.buckets.max(1));
        Window {
            bucket_nanos: (duration_to_nanos(rule.window) / count).max(1),
            buckets: vec![Bucket::default(); count as usize].into_boxed_slice(),
            newest: 0,
            calls: 0,
            failures: 0,
        }
    }

    fn add(&mut self, now: Instant, failed: bool) {
        let number = now.as_nanos() / self.bucket_nanos;
        self.roll_to(number);
        let len = self.buckets.len() as u64;
        if let Some(bucket) = self.buckets.get_mut((number % len) as usize) {
            bucket.calls += 1;
            bucket.failures += u64::from(failed);
            self.calls += 1;
            self.failures += u64::from(failed);
        }
    }

    /// Empty every bucket that falls out of the window when bucket `number` becomes the newest.
    fn roll_to(&mut self, number: u64) {
        if number <= self.newest {
            return;
        }
        let len = self.buckets.len() as u64;
        let expired = (number - self.newest).min(len);
        for step in 1..=expired {
            let index = ((self.newest + step) % len) as usize;
            if let Some(bucket) = self.buckets.get_mut(index) {
                self.calls = self.calls.saturating_sub(bucket.calls);
                self.failures = self.failures.saturating_sub(bucket.failures);
                *bucket = Bucket::default();
            }
        }
        self.newest = number;
    }

    fn clear(&mut self) {
        self.buckets.fill(Bucket::default());
        self.calls = 0;
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests;
