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
//!   Hystrix do). [`Breaker::next_deadline`] reports `until`, and [`Breaker::handle_timeout`]
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
//! # Calling contract
//!
//! 1. Before dispatching an attempt, call [`Breaker::try_acquire`]. On `Err`, do not dispatch;
//!    [`BreakerRejected`] says when an admission may next succeed.
//! 2. Answer every permit exactly once: [`Breaker::record`] with the outcome's
//!    [`BreakerEffect`] (from the classification in [`crate::policy::outcome`]), or
//!    [`Breaker::release`] if the attempt was cancelled before it produced an outcome.
//! 3. Optionally arm a timer at [`Breaker::next_deadline`] and call [`Breaker::handle_timeout`]
//!    when it fires; an early or repeated tick is harmless.
//! 4. Drain [`Breaker::poll_event`] for the transitions, to log or publish them.
//!
//! `now` never needs to be exact: an earlier `now` than one already seen is treated as the
//! latest seen. Admission and recording are O(1) and allocation-free (the failure-rate window
//! rolls at most `buckets` buckets per call).
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

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// How a [`Breaker`] decides; validated by [`Breaker::new`].
///
/// Build it from [`BreakerConfig::default`] with the `with_*` setters:
///
/// ```
/// use breakwater_core::policy::breaker::{BreakerConfig, FailureRateRule};
/// use std::time::Duration;
///
/// let config = BreakerConfig::default()
///     .with_failure_rate(Some(FailureRateRule::default()))
///     .with_open_growth(true)
///     .with_open_jitter(true)
///     .with_half_open_probes(3);
/// assert_eq!(config.open_interval, Duration::from_secs(30));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Trip after this many consecutive failures; `None` turns the rule off. Default `Some(5)`.
    pub consecutive_failures: Option<u32>,
    /// The failure-rate rule; `None` (the default) turns it off.
    pub failure_rate: Option<FailureRateRule>,
    /// How long the first opening lasts, and every opening without growth. Default 30 s.
    pub open_interval: Duration,
    /// Whether the k-th consecutive opening lasts `open_interval · 2^(k−1)`. Default off.
    pub open_growth: bool,
    /// The cap on a grown open interval (before jitter). Default 300 s.
    pub max_open_interval: Duration,
    /// Jitter on each open interval, as a percentage: the interval is multiplied by a uniform
    /// factor in `[1 − p/100, 1 + p/100]`. Default 0 (off); [`with_open_jitter`] sets 20.
    ///
    /// [`with_open_jitter`]: BreakerConfig::with_open_jitter
    pub open_jitter_percent: u32,
    /// After the breaker has stayed Closed this long, the count of consecutive openings (k)
    /// returns to 0. Default 60 s.
    pub open_streak_reset_after: Duration,
    /// How many probes HalfOpen admits, and how many must succeed to close. Default 1.
    pub half_open_probes: u32,
    /// How long after the last probe admission an unanswered probe counts as failed; `None`
    /// waits forever. Default `Some(60 s)`; keep it above the longest attempt timeout.
    pub probe_timeout: Option<Duration>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: Some(5),
            failure_rate: None,
            open_interval: Duration::from_secs(30),
            open_growth: false,
            max_open_interval: Duration::from_secs(300),
            open_jitter_percent: 0,
            open_streak_reset_after: Duration::from_secs(60),
            half_open_probes: 1,
            probe_timeout: Some(Duration::from_secs(60)),
        }
    }
}

impl BreakerConfig {
    /// Trip after `threshold` consecutive failures, or never by this rule with `None`.
    pub fn with_consecutive_failures(mut self, threshold: Option<u32>) -> Self {
        self.consecutive_failures = threshold;
        self
    }

    /// Select the failure-rate rule (`Some`), or turn it off (`None`).
    pub fn with_failure_rate(mut self, rule: Option<FailureRateRule>) -> Self {
        self.failure_rate = rule;
        self
    }

    /// Set the (first) open interval.
    pub fn with_open_interval(mut self, open_interval: Duration) -> Self {
        self.open_interval = open_interval;
        self
    }

    /// Turn the doubling of the open interval per consecutive opening on or off.
    pub fn with_open_growth(mut self, growth: bool) -> Self {
        self.open_growth = growth;
        self
    }

    /// Set the cap on a grown open interval.
    pub fn with_max_open_interval(mut self, max_open_interval: Duration) -> Self {
        self.max_open_interval = max_open_interval;
        self
    }

    /// Turn the ±20 % jitter of the open interval on or off.
    pub fn with_open_jitter(mut self, jitter: bool) -> Self {
        self.open_jitter_percent = if jitter { 20 } else { 0 };
        self
    }

    /// Set the jitter of the open interval as a percentage (0 turns it off; below 100).
    pub fn with_open_jitter_percent(mut self, percent: u32) -> Self {
        self.open_jitter_percent = percent;
        self
    }

    /// Set how long the breaker must stay Closed before k returns to 0.
    pub fn with_open_streak_reset_after(mut self, after: Duration) -> Self {
        self.open_streak_reset_after = after;
        self
    }

    /// Set how many probes HalfOpen admits (and how many successes close it).
    pub fn with_half_open_probes(mut self, probes: u32) -> Self {
        self.half_open_probes = probes;
        self
    }

    /// Set (or, with `None`, remove) the time after which an unanswered probe counts as failed.
    pub fn with_probe_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// Check the configuration; [`Breaker::new`] calls this. Nonsense values are rejected, never
    /// clamped, so a typo does not silently become a different policy.
    pub fn validate(&self) -> Result<(), BreakerConfigError> {
        use BreakerConfigError as E;
        if self.consecutive_failures.is_none() && self.failure_rate.is_none() {
            return Err(E::NoTripRule);
        }
        if self.consecutive_failures == Some(0) {
            return Err(E::ZeroConsecutiveFailures);
        }
        if let Some(rule) = &self.failure_rate {
            rule.validate()?;
        }
        if self.open_interval.is_zero() {
            return Err(E::ZeroOpenInterval);
        }
        if self.open_growth && self.max_open_interval < self.open_interval {
            return Err(E::MaxOpenIntervalBelowOpenInterval);
        }
        if self.open_jitter_percent >= 100 {
            return Err(E::JitterOutOfRange {
                percent: self.open_jitter_percent,
            });
        }
        if self.half_open_probes == 0 {
            return Err(E::ZeroHalfOpenProbes);
        }
        if self.probe_timeout == Some(Duration::ZERO) {
            return Err(E::ZeroProbeTimeout);
        }
        Ok(())
    }
}

/// The failure-rate trip rule (docs/spec/breaker.md#closed): trip when a sliding window holds
/// at least `min_calls` counted calls and at least `failure_rate_percent` % of them failed.
///
/// The window is `window` long, kept as `buckets` equal buckets; at time `t` it holds the
/// bucket containing `t` and the `buckets − 1` before it. Defaults: 10 s, 10 buckets,
/// 20 calls, 50 %.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailureRateRule {
    /// Length of the sliding window. Default 10 s.
    pub window: Duration,
    /// Number of buckets the window is kept in (1 ..= [`MAX_WINDOW_BUCKETS`]). Default 10.
    pub buckets: u32,
    /// Fewest counted calls in the window before the rate is judged. Default 20.
    pub min_calls: u32,
    /// The failure percentage (1 ..= 100) at or above which the breaker trips. Default 50.
    pub failure_rate_percent: u32,
}

impl Default for FailureRateRule {
    fn default() -> Self {
        FailureRateRule {
            window: Duration::from_secs(10),
            buckets: 10,
            min_calls: 20,
            failure_rate_percent: 50,
        }
    }
}

impl FailureRateRule {
    /// Set the window length.
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Set the number of buckets.
    pub fn with_buckets(mut self, buckets: u32) -> Self {
        self.buckets = buckets;
        self
    }

    /// Set the minimum number of calls.
    pub fn with_min_calls(mut self, min_calls: u32) -> Self {
        self.min_calls = min_calls;
        self
    }

    /// Set the failure percentage threshold.
    pub fn with_failure_rate_percent(mut self, percent: u32) -> Self {
        self.failure_rate_percent = percent;
        self
    }

    fn validate(&self) -> Result<(), BreakerConfigError> {
        use BreakerConfigError as E;
        if self.min_calls == 0 {
            return Err(E::ZeroMinCalls);
        }
        if !(1..=100).contains(&self.failure_rate_percent) {
            return Err(E::FailureRateOutOfRange {
                percent: self.failure_rate_percent,
            });
        }
        if !(1..=MAX_WINDOW_BUCKETS).contains(&self.buckets) {
            return Err(E::BucketsOutOfRange {
                buckets: self.buckets,
            });
        }
        if duration_to_nanos(self.window) < u64::from(self.buckets) {
            return Err(E::WindowTooShort);
        }
        Ok(())
    }

    /// Whether `failures` out of `calls` trips the rule.
    fn holds(&self, calls: u64, failures: u64) -> bool {
        calls >= u64::from(self.min_calls)
            && failures * 100 >= u64::from(self.failure_rate_percent) * calls
    }
}

/// Why a [`BreakerConfig`] was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerConfigError {
    /// Both trip rules are off, so the breaker could never trip (use [`Breaker::disable`]).
    NoTripRule,
    /// `consecutive_failures` is `Some(0)`.
    ZeroConsecutiveFailures,
    /// The failure-rate rule's `min_calls` is 0.
    ZeroMinCalls,
    /// The failure-rate percentage is outside 1 ..= 100.
    FailureRateOutOfRange {
        /// The rejected percentage.
        percent: u32,
    },
    /// The window's bucket count is outside 1 ..= [`MAX_WINDOW_BUCKETS`].
    BucketsOutOfRange {
        /// The rejected bucket count.
        buckets: u32,
    },
    /// The window is shorter than one nanosecond per bucket.
    WindowTooShort,
    /// `open_interval` is zero.
    ZeroOpenInterval,
    /// Growth is on and `max_open_interval` is below `open_interval`.
    MaxOpenIntervalBelowOpenInterval,
    /// `open_jitter_percent` is 100 or more (an open interval could shrink to nothing).
    JitterOutOfRange {
        /// The rejected percentage.
        percent: u32,
    },
    /// `half_open_probes` is 0, so HalfOpen could never close.
    ZeroHalfOpenProbes,
    /// `probe_timeout` is `Some(0)`.
    ZeroProbeTimeout,
}

impl fmt::Display for BreakerConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use BreakerConfigError as E;
        match self {
            E::NoTripRule => f.write_str("breaker config has no trip rule"),
            E::ZeroConsecutiveFailures => f.write_str("consecutive_failures must be at least 1"),
            E::ZeroMinCalls => f.write_str("failure-rate min_calls must be at least 1"),
            E::FailureRateOutOfRange { percent } => {
                write!(f, "failure rate {percent}% is outside 1..=100")
            }
            E::BucketsOutOfRange { buckets } => {
                write!(
                    f,
                    "{buckets} window buckets is outside 1..={MAX_WINDOW_BUCKETS}"
                )
            }
            E::WindowTooShort => f.write_str("failure-rate window is shorter than its buckets"),
            E::ZeroOpenInterval => f.write_str("open_interval must not be zero"),
            E::MaxOpenIntervalBelowOpenInterval => {
                f.write_str("max_open_interval is below open_interval")
            }
            E::JitterOutOfRange { percent } => {
                write!(f, "open jitter {percent}% must be below 100")
            }
            E::ZeroHalfOpenProbes => f.write_str("half_open_probes must be at least 1"),
            E::ZeroProbeTimeout => f.write_str("probe_timeout must not be zero"),
        }
    }
}

impl std::error::Error for BreakerConfigError {}

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
    pub fn next_deadline(&self) -> Option<Instant> {
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
                if self.next_deadline().is_some_and(|deadline| now >= deadline) =>
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
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn at(secs: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(secs)
    }

    fn breaker(config: BreakerConfig) -> Breaker {
        Breaker::new(config, fastrand::Rng::with_seed(1)).expect("valid config")
    }

    fn fail(b: &mut Breaker, now: Instant, times: usize) {
        for _ in 0..times {
            let permit = b.try_acquire(now).expect("admitted");
            b.record(now, permit, BreakerEffect::Failure);
        }
    }

    fn events(b: &mut Breaker) -> Vec<(BreakerStateKind, BreakerStateKind, TransitionCause)> {
        std::iter::from_fn(|| b.poll_event())
            .map(|e| (e.from.kind(), e.to.kind(), e.cause))
            .collect()
    }

    #[test]
    fn defaults_match_the_issue() {
        let c = BreakerConfig::default();
        assert_eq!(c.consecutive_failures, Some(5));
        assert_eq!(c.failure_rate, None);
        assert_eq!(c.open_interval, 30 * SEC);
        assert!(!c.open_growth);
        assert_eq!(c.max_open_interval, 300 * SEC);
        assert_eq!(c.open_jitter_percent, 0);
        assert_eq!(c.open_streak_reset_after, 60 * SEC);
        assert_eq!(c.half_open_probes, 1);
        let r = FailureRateRule::default();
        assert_eq!(
            (r.window, r.buckets, r.min_calls, r.failure_rate_percent),
            (10 * SEC, 10, 20, 50)
        );
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn nonsense_configs_are_rejected() {
        use BreakerConfigError as E;
        let d = BreakerConfig::default;
        let cases = [
            (d().with_consecutive_failures(None), E::NoTripRule),
            (
                d().with_consecutive_failures(Some(0)),
                E::ZeroConsecutiveFailures,
            ),
            (d().with_open_interval(Duration::ZERO), E::ZeroOpenInterval),
            (
                d().with_open_growth(true).with_max_open_interval(SEC),
                E::MaxOpenIntervalBelowOpenInterval,
            ),
            (
                d().with_open_jitter_percent(100),
                E::JitterOutOfRange { percent: 100 },
            ),
            (d().with_half_open_probes(0), E::ZeroHalfOpenProbes),
            (
                d().with_probe_timeout(Some(Duration::ZERO)),
                E::ZeroProbeTimeout,
            ),
            (
                d().with_failure_rate(Some(FailureRateRule::default().with_min_calls(0))),
                E::ZeroMinCalls,
            ),
            (
                d().with_failure_rate(Some(
                    FailureRateRule::default().with_failure_rate_percent(101),
                )),
                E::FailureRateOutOfRange { percent: 101 },
            ),
            (
                d().with_failure_rate(Some(FailureRateRule::default().with_buckets(0))),
                E::BucketsOutOfRange { buckets: 0 },
            ),
            (
                d().with_failure_rate(Some(
                    FailureRateRule::default().with_window(Duration::from_nanos(3)),
                )),
                E::WindowTooShort,
            ),
        ];
        for (config, error) in cases {
            assert_eq!(
                Breaker::new(config, fastrand::Rng::with_seed(0)).err(),
                Some(error)
            );
        }
        // Without growth the cap is irrelevant, so a long fixed interval is fine.
        assert!(d().with_open_interval(600 * SEC).validate().is_ok());
    }

    #[test]
    fn five_consecutive_failures_trip_and_a_success_resets_the_count() {
        let mut b = breaker(BreakerConfig::default());
        fail(&mut b, at(0), 4);
        let p = b.try_acquire(at(0)).unwrap();
        assert_eq!(
            b.record(at(0), p, BreakerEffect::Success),
            Recorded::Counted
        );
        fail(&mut b, at(1), 4);
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 4
            }
        );
        let p = b.try_acquire(at(1)).unwrap();
        assert_eq!(
            b.record(at(1), p, BreakerEffect::Ignore),
            Recorded::NotCounted
        );
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 4
            }
        );
        fail(&mut b, at(2), 1);
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until: at(32),
                openings: 1
            }
        );
        assert_eq!(b.epoch(), 1);
        assert_eq!(
            events(&mut b),
            [(
                BreakerStateKind::Closed,
                BreakerStateKind::Open,
                TransitionCause::ConsecutiveFailures
            )]
        );
    }

    #[test]
    fn open_rejects_with_the_instant_and_moves_lazily_to_half_open() {
        let mut b = breaker(BreakerConfig::default());
        fail(&mut b, at(0), 5);
        let rejected = b.try_acquire(at(10)).unwrap_err();
        assert_eq!(rejected.reason, RejectReason::Open);
        assert_eq!(rejected.retry_at, Some(at(30)));
        assert_eq!(rejected.retry_after, Some(20 * SEC));
        assert_eq!(b.next_deadline(), Some(at(30)));
        // Still Open in the snapshot after `until`: the move is lazy.
        b.handle_timeout(at(29));
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        let probe = b.try_acquire(at(30)).unwrap();
        assert!(probe.is_probe());
        assert_eq!(probe.epoch(), 2);
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen {
                probes_admitted: 1,
                probes_succeeded: 0,
                probes_allowed: 1
            }
        );
        let busy = b.try_acquire(at(30)).unwrap_err();
        assert_eq!(busy.reason, RejectReason::HalfOpenProbesBusy);
        assert_eq!(busy.retry_at, None);
        b.record(at(31), probe, BreakerEffect::Success);
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 0
            }
        );
        assert_eq!(
            events(&mut b),
            [
                (
                    BreakerStateKind::Closed,
                    BreakerStateKind::Open,
                    TransitionCause::ConsecutiveFailures
                ),
                (
                    BreakerStateKind::Open,
                    BreakerStateKind::HalfOpen,
                    TransitionCause::OpenIntervalElapsed
                ),
                (
                    BreakerStateKind::HalfOpen,
                    BreakerStateKind::Closed,
                    TransitionCause::ProbesSucceeded
                ),
            ]
        );
    }

    #[test]
    fn handle_timeout_moves_to_half_open_so_a_driver_timer_does_not_spin() {
        let mut b = breaker(BreakerConfig::default());
        fail(&mut b, at(0), 5);
        b.handle_timeout(at(30));
        b.handle_timeout(at(30));
        assert!(matches!(
            b.state(),
            BreakerState::HalfOpen {
                probes_admitted: 0,
                ..
            }
        ));
        assert_eq!(b.next_deadline(), None);
    }

    #[test]
    fn a_failed_probe_reopens_with_the_next_opening() {
        let config = BreakerConfig::default().with_open_growth(true);
        let mut b = breaker(config);
        fail(&mut b, at(0), 5);
        let probe = b.try_acquire(at(30)).unwrap();
        b.record(at(31), probe, BreakerEffect::Failure);
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until: at(91),
                openings: 2
            }
        );
        let probe = b.try_acquire(at(91)).unwrap();
        b.record(at(91), probe, BreakerEffect::Failure);
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until: at(211),
                openings: 3
            }
        );
        let e: Vec<_> = events(&mut b).into_iter().map(|e| e.2).collect();
        assert_eq!(
            e,
            [
                TransitionCause::ConsecutiveFailures,
                TransitionCause::OpenIntervalElapsed,
                TransitionCause::ProbeFailed,
                TransitionCause::OpenIntervalElapsed,
                TransitionCause::ProbeFailed,
            ]
        );
    }

    #[test]
    fn growth_is_capped_and_k_returns_to_zero_after_a_calm_minute() {
        let config = BreakerConfig::default()
            .with_open_growth(true)
            .with_open_interval(100 * SEC)
            .with_max_open_interval(250 * SEC);
        let mut b = breaker(config);
        fail(&mut b, at(0), 5);
        let mut now = 100;
        for (openings, length) in [(2, 200), (3, 250), (4, 250)] {
            let probe = b.try_acquire(at(now)).unwrap();
            b.record(at(now), probe, BreakerEffect::Failure);
            assert_eq!(
                b.state(),
                BreakerState::Open {
                    until: at(now + length),
                    openings
                }
            );
            now += length;
        }
        // Close, fail again within 60 s: k keeps growing.
        let probe = b.try_acquire(at(now)).unwrap();
        b.record(at(now), probe, BreakerEffect::Success);
        fail(&mut b, at(now + 59), 5);
        assert!(matches!(b.state(), BreakerState::Open { openings: 5, .. }));
        // Close, stay closed 60 s: k starts over.
        now += 59 + 250;
        let probe = b.try_acquire(at(now)).unwrap();
        b.record(at(now), probe, BreakerEffect::Success);
        fail(&mut b, at(now + 60), 5);
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until: at(now + 160),
                openings: 1
            }
        );
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_comes_from_the_seed() {
        let config = BreakerConfig::default().with_open_jitter(true);
        let mut lengths = Vec::new();
        for seed in 0..200 {
            let mut b = Breaker::new(config.clone(), fastrand::Rng::with_seed(seed)).unwrap();
            fail(&mut b, at(0), 5);
            let BreakerState::Open { until, .. } = b.state() else {
                panic!("not open")
            };
            let length = until - at(0);
            assert!(length >= 24 * SEC && length <= 36 * SEC, "{length:?}");
            lengths.push(length);
        }
        assert!(lengths.iter().any(|l| *l < 27 * SEC) && lengths.iter().any(|l| *l > 33 * SEC));
        let mut again = Breaker::new(config, fastrand::Rng::with_seed(0)).unwrap();
        fail(&mut again, at(0), 5);
        assert!(
            matches!(again.state(), BreakerState::Open { until, .. } if until - at(0) == lengths[0])
        );
    }

    #[test]
    fn n_probes_must_all_succeed_and_an_ignored_probe_gives_its_slot_back() {
        let mut b = breaker(BreakerConfig::default().with_half_open_probes(3));
        fail(&mut b, at(0), 5);
        let p1 = b.try_acquire(at(30)).unwrap();
        let p2 = b.try_acquire(at(30)).unwrap();
        let p3 = b.try_acquire(at(30)).unwrap();
        assert!(b.try_acquire(at(30)).is_err());
        assert_eq!(b.release(at(31), p3), Recorded::NotCounted);
        let p4 = b.try_acquire(at(31)).unwrap();
        assert_eq!(
            b.record(at(31), p1, BreakerEffect::Ignore),
            Recorded::NotCounted
        );
        let p5 = b.try_acquire(at(31)).unwrap();
        b.record(at(32), p2, BreakerEffect::Success);
        b.record(at(32), p4, BreakerEffect::Success);
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen {
                probes_admitted: 3,
                probes_succeeded: 2,
                probes_allowed: 3
            }
        );
        b.record(at(33), p5, BreakerEffect::Success);
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 0
            }
        );
    }

    #[test]
    fn stale_outcomes_never_move_the_breaker() {
        let mut b = breaker(BreakerConfig::default());
        let old_success = b.try_acquire(at(0)).unwrap();
        let old_failure = b.try_acquire(at(0)).unwrap();
        fail(&mut b, at(0), 5);
        let probe = b.try_acquire(at(30)).unwrap();
        // A success from the Closed epoch does not close the HalfOpen breaker...
        assert_eq!(
            b.record(at(31), old_success, BreakerEffect::Success),
            Recorded::Stale
        );
        assert!(matches!(b.state(), BreakerState::HalfOpen { .. }));
        b.record(at(31), probe, BreakerEffect::Success);
        // ... and a failure from before the trip does not count against the fresh window.
        assert_eq!(
            b.record(at(32), old_failure, BreakerEffect::Failure),
            Recorded::Stale
        );
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 0
            }
        );
        assert_eq!(b.epoch(), 3);
    }

    #[test]
    fn an_unanswered_probe_times_out_as_a_failure() {
        let mut b = breaker(BreakerConfig::default().with_probe_timeout(Some(10 * SEC)));
        fail(&mut b, at(0), 5);
        let leaked = b.try_acquire(at(30)).unwrap();
        assert_eq!(b.next_deadline(), Some(at(40)));
        b.handle_timeout(at(39));
        assert!(matches!(b.state(), BreakerState::HalfOpen { .. }));
        b.handle_timeout(at(40));
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until: at(70),
                openings: 2
            }
        );
        assert_eq!(
            b.record(at(41), leaked, BreakerEffect::Success),
            Recorded::Stale
        );
        assert_eq!(
            events(&mut b).last().map(|e| e.2),
            Some(TransitionCause::ProbeTimedOut)
        );
    }

    #[test]
    fn the_failure_rate_rule_trips_at_half_of_twenty_calls() {
        let config = BreakerConfig::default()
            .with_consecutive_failures(None)
            .with_failure_rate(Some(FailureRateRule::default()));
        let mut b = breaker(config);
        // 10 successes and 9 failures: 19 calls, below the minimum volume.
        for i in 0..19 {
            let p = b.try_acquire(at(0)).unwrap();
            let effect = if i % 2 == 0 {
                BreakerEffect::Success
            } else {
                BreakerEffect::Failure
            };
            b.record(at(0), p, effect);
        }
        assert!(matches!(b.state(), BreakerState::Closed { .. }));
        // A 20th call that fails makes 10 failures of 20 = 50 %.
        let p = b.try_acquire(at(1)).unwrap();
        b.record(at(1), p, BreakerEffect::Failure);
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        assert_eq!(events(&mut b)[0].2, TransitionCause::FailureRate);
    }

    #[test]
    fn old_buckets_leave_the_failure_rate_window() {
        let config = BreakerConfig::default()
            .with_consecutive_failures(None)
            .with_failure_rate(Some(FailureRateRule::default()));
        let mut b = breaker(config);
        fail(&mut b, at(0), 19);
        // Ten seconds later the 19 failures have left the window; a twentieth call cannot trip.
        fail(&mut b, at(10), 1);
        assert!(matches!(b.state(), BreakerState::Closed { .. }));
        // At 9 s they are still in it.
        let mut b = breaker(
            BreakerConfig::default()
                .with_consecutive_failures(None)
                .with_failure_rate(Some(FailureRateRule::default())),
        );
        fail(&mut b, at(0), 19);
        let p = b.try_acquire(at(9)).unwrap();
        b.record(at(9), p, BreakerEffect::Success);
        assert!(matches!(b.state(), BreakerState::Open { .. }));
    }

    #[test]
    fn administrative_states() {
        let mut b = breaker(BreakerConfig::default());
        let before = b.try_acquire(at(0)).unwrap();
        b.force_open(at(1));
        b.force_open(at(1));
        let rejected = b.try_acquire(at(1000)).unwrap_err();
        assert_eq!(
            (rejected.reason, rejected.retry_at),
            (RejectReason::ForcedOpen, None)
        );
        assert_eq!(b.next_deadline(), None);
        b.disable(at(2));
        fail(&mut b, at(2), 50);
        assert_eq!(b.state(), BreakerState::Disabled);
        assert_eq!(
            b.record(at(3), before, BreakerEffect::Failure),
            Recorded::Stale
        );
        b.reset(at(4));
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 0
            }
        );
        assert_eq!(
            events(&mut b),
            [
                (
                    BreakerStateKind::Closed,
                    BreakerStateKind::ForcedOpen,
                    TransitionCause::ForcedOpen
                ),
                (
                    BreakerStateKind::ForcedOpen,
                    BreakerStateKind::Disabled,
                    TransitionCause::Disabled
                ),
                (
                    BreakerStateKind::Disabled,
                    BreakerStateKind::Closed,
                    TransitionCause::Reset
                ),
            ]
        );
        assert_eq!(b.epoch(), 3);
    }

    #[test]
    fn events_carry_snapshots_epochs_and_instants() {
        let mut b = breaker(BreakerConfig::default());
        fail(&mut b, at(5), 5);
        let event = b.poll_event().expect("trip event");
        assert_eq!(event.at, at(5));
        assert_eq!(
            event.from,
            BreakerState::Closed {
                consecutive_failures: 5
            }
        );
        assert_eq!(
            event.to,
            BreakerState::Open {
                until: at(35),
                openings: 1
            }
        );
        assert_eq!(event.epoch, 1);
        assert_eq!(b.poll_event(), None);
    }

    #[test]
    fn an_undrained_event_queue_stays_bounded() {
        let mut b = breaker(BreakerConfig::default());
        for i in 0..100 {
            b.force_open(at(i));
            b.reset(at(i));
        }
        assert_eq!(
            std::iter::from_fn(|| b.poll_event()).count(),
            EVENT_QUEUE_CAPACITY
        );
        assert_eq!(b.events_dropped(), 200 - EVENT_QUEUE_CAPACITY as u64);
    }

    #[test]
    fn time_going_backwards_counts_as_the_latest_instant() {
        let mut b = breaker(BreakerConfig::default());
        fail(&mut b, at(100), 5);
        let rejected = b.try_acquire(at(0)).unwrap_err();
        assert_eq!(rejected.retry_after, Some(30 * SEC));
        assert!(b.try_acquire(at(129)).is_err());
        assert!(b.try_acquire(at(130)).is_ok());
    }

    #[test]
    fn extreme_durations_saturate_instead_of_panicking() {
        let config = BreakerConfig::default()
            .with_open_interval(Duration::MAX)
            .with_open_growth(true)
            .with_max_open_interval(Duration::MAX)
            .with_open_jitter_percent(99);
        let mut b = breaker(config);
        fail(&mut b, Instant::MAX, 5);
        assert!(matches!(
            b.state(),
            BreakerState::Open {
                until: Instant::MAX,
                ..
            }
        ));
    }
}
