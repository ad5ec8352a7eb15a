//! The breaker's settings: trip rules, the open interval and its growth, half-open probes,
//! and the errors a setting is refused with.

use std::fmt;
use std::time::Duration;

use super::MAX_WINDOW_BUCKETS;
use crate::time::duration_to_nanos;

/// How a [`Breaker`](super::Breaker) decides; validated by [`Breaker::new`](super::Breaker::new).
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

    /// Check the configuration; [`Breaker::new`](super::Breaker::new) calls this. Nonsense values are rejected, never
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
    pub(super) fn holds(&self, calls: u64, failures: u64) -> bool {
        calls >= u64::from(self.min_calls)
            && failures * 100 >= u64::from(self.failure_rate_percent) * calls
    }
}

/// Why a [`BreakerConfig`] was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerConfigError {
    /// Both trip rules are off, so the breaker could never trip (use [`Breaker::disable`](super::Breaker::disable)).
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
