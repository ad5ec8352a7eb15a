//! How long to wait before retry `n`: exponential backoff with jitter, floored at the
//! origin's p95.
//!
//! A retry that fires sooner than the upstream usually answers only adds load while the first
//! attempt may still be in progress, so the delay has a *floor* taken from the origin's p95
//! ([`crate::policy::latency`]); and retries from many clients that failed together must not fire
//! together again, so every delay carries random *jitter*. This module computes one delay;
//! whether to retry at all, Retry-After parsing and the per-origin Retry-After gate belong to
//! [`crate::policy::retry`].
//!
//! # The default (docs/spec/backoff.md#the-default)
//!
//! For retry `n` (0-based: `n` retries happened before this one):
//!
//! ```text
//! delay = min(floor · 2^n + U(0, floor), cap)
//! floor = clamp(p95, min_floor, max_floor)   when an estimate exists and adaptive flooring is on
//!       = base_floor                          otherwise
//! ```
//!
//! with `min_floor` 0.5 s, `max_floor` 5 s, `base_floor` 1 s and `cap` 30 s. The jitter is added
//! on top of the floor, never clamped to it, so no probability piles up on one instant
//! (invariant `no-atom-at-floor`: a clamp such as `max(F, U(0, E))` would re-synchronise
//! clients on the floor).
//!
//! # Other strategies ([`BackoffStrategy`])
//!
//! With `f` the floor above used as the base of the exponential (AWS's "Exponential Backoff and
//! Jitter" names):
//!
//! | strategy | delay for retry `n` |
//! |---|---|
//! | [`FlooredExponential`](BackoffStrategy::FlooredExponential) (default) | `min(f·2^n + U(0, f), cap)` |
//! | [`FullJitter`](BackoffStrategy::FullJitter) | `U(0, min(cap, f·2^n))` |
//! | [`EqualJitter`](BackoffStrategy::EqualJitter) | `t/2 + U(0, t − t/2)`, `t = min(cap, f·2^n)` |
//! | [`DecorrelatedJitter`](BackoffStrategy::DecorrelatedJitter) | `U(f, min(cap, 3·previous))`, `previous` defaulting to `f` |
//! | [`Envelope`](BackoffStrategy::Envelope) | `F + U(0, min(E_n, max_delay − F))` |
//!
//! The envelope: `E_n = min(max_delay, envelope_base · 2^n)` with `envelope_base` 100 ms and
//! `max_delay` 5 s (`n` 0-based, as everywhere here); `F = min(p95, max_delay / 2)` when an
//! estimate exists and adaptive flooring is on, else 0. Every strategy's result is finally
//! capped at `cap` (docs/spec/backoff.md#other-strategies).
//!
//! # Retry-After and deadlines
//!
//! [`BackoffPolicy::apply_retry_after`] applies the server's Retry-After as a band
//! (docs/spec/backoff.md#retry-after): the delay becomes `max(delay, U(RA, 1.5·RA))`, never
//! earlier than the server asked and not capped by `cap` (the decision to give up on a
//! too-long Retry-After is [`crate::policy::retry`]'s). [`clip_to_deadline`] fits a delay to the
//! deadline (docs/spec/backoff.md#deadline-clipping): a delay that would break the deadline is
//! shortened to the latest acceptable one, but never below the strategy's earliest delay or the
//! Retry-After; if that is impossible, there is no retry.
//!
//! # Determinism and cost
//!
//! All arithmetic is on integer nanoseconds with saturation: `2^n` saturates for any `n` up to
//! `u32::MAX`, so nothing overflows or panics. The only randomness is one `rng.u64(lo..=hi)`
//! draw per call from the caller's seeded [`fastrand::Rng`]: the same seed gives the same
//! delays on every platform. No call allocates.
//!
//! ```
//! use breakwater_core::policy::backoff::BackoffPolicy;
//! use std::time::Duration;
//!
//! let policy = BackoffPolicy::default();
//! let mut rng = fastrand::Rng::with_seed(7);
//! let p95 = Some(Duration::from_millis(800));
//! assert_eq!(policy.floor(p95), Duration::from_millis(800));
//! // Retry 2: 0.8 s · 4 = 3.2 s, plus up to 0.8 s of jitter.
//! let delay = policy.delay(2, p95, None, &mut rng);
//! assert!(delay >= Duration::from_millis(3200) && delay <= Duration::from_millis(4000));
//! // No estimate yet: the 1 s base floor.
//! assert_eq!(policy.floor(None), Duration::from_secs(1));
//! ```

use std::time::Duration;

use crate::time::duration_to_nanos;

/// Which formula turns a retry count into a delay; see the [module documentation](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum BackoffStrategy {
    /// `min(floor · 2^n + U(0, floor), cap)`: the default, the adaptive backoff of the httpx
    /// tutorial the design started from.
    #[default]
    FlooredExponential,
    /// `U(0, min(cap, floor · 2^n))`: AWS "full jitter"; the delay may be zero.
    FullJitter,
    /// `t/2 + U(0, t − t/2)` with `t = min(cap, floor · 2^n)`: AWS "equal jitter".
    EqualJitter,
    /// `U(floor, min(cap, 3 · previous))`: AWS "decorrelated jitter"; it ignores `n` and needs
    /// the previous delay (the floor when there was none).
    DecorrelatedJitter,
    /// A short capped envelope: `F + U(0, min(E_n, max_delay − F))`,
    /// `E_n = min(max_delay, base · 2^n)`.
    Envelope,
}

/// The backoff configuration of a client or call: a strategy and its parameters.
///
/// | setting | default | used by |
/// |---|---|---|
/// | `strategy` | [`BackoffStrategy::FlooredExponential`] | all |
/// | `cap` | 30 s | all: no delay exceeds it (Retry-After aside) |
/// | `adaptive_floor` | on | all: whether the floor follows the origin's p95 |
/// | `base_floor` | 1 s | all but `Envelope`: the floor without an estimate |
/// | `min_floor`, `max_floor` | 0.5 s, 5 s | all but `Envelope`: bounds of the p95 floor |
/// | `envelope_base` | 100 ms | `Envelope` |
/// | `envelope_max_delay` | 5 s | `Envelope` |
///
/// No setting is rejected: if `min_floor > max_floor`, `max_floor` wins; a floor above `cap` is
/// lowered to `cap`; zero durations are allowed (they mean "do not wait").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    strategy: BackoffStrategy,
    cap: Duration,
    adaptive_floor: bool,
    base_floor: Duration,
    min_floor: Duration,
    max_floor: Duration,
    envelope_base: Duration,
    envelope_max_delay: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            strategy: BackoffStrategy::FlooredExponential,
            cap: Duration::from_secs(30),
            adaptive_floor: true,
            base_floor: Duration::from_secs(1),
            min_floor: Duration::from_millis(500),
            max_floor: Duration::from_secs(5),
            envelope_base: Duration::from_millis(100),
            envelope_max_delay: Duration::from_secs(5),
        }
    }
}

impl BackoffPolicy {
    /// Chooses the formula.
    pub fn with_strategy(mut self, strategy: BackoffStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The longest delay any strategy returns.
    pub fn with_cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// Whether the floor follows the origin's p95 (`true`) or stays at `base_floor` (or 0 for
    /// the envelope).
    pub fn with_adaptive_floor(mut self, adaptive_floor: bool) -> Self {
        self.adaptive_floor = adaptive_floor;
        self
    }

    /// The floor when there is no p95 estimate or adaptive flooring is off.
    pub fn with_base_floor(mut self, base_floor: Duration) -> Self {
        self.base_floor = base_floor;
        self
    }

    /// The bounds the p95 is clamped to before it becomes the floor.
    pub fn with_floor_bounds(mut self, min_floor: Duration, max_floor: Duration) -> Self {
        self.min_floor = min_floor;
        self.max_floor = max_floor;
        self
    }

    /// The envelope's first step, `E_0`.
    pub fn with_envelope_base(mut self, envelope_base: Duration) -> Self {
        self.envelope_base = envelope_base;
        self
    }

    /// The envelope's ceiling; its floor is at most half of it.
    pub fn with_envelope_max_delay(mut self, envelope_max_delay: Duration) -> Self {
        self.envelope_max_delay = envelope_max_delay;
        self
    }

    /// The chosen strategy.
    pub fn strategy(&self) -> BackoffStrategy {
        self.strategy
    }

    /// The longest delay any strategy returns.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// Whether the floor follows the origin's p95.
    pub fn adaptive_floor(&self) -> bool {
        self.adaptive_floor
    }

    /// The floor without an estimate.
    pub fn base_floor(&self) -> Duration {
        self.base_floor
    }

    /// The bounds `(min_floor, max_floor)` of a p95-derived floor.
    pub fn floor_bounds(&self) -> (Duration, Duration) {
        (self.min_floor, self.max_floor)
    }

    /// The envelope's first step.
    pub fn envelope_base(&self) -> Duration {
        self.envelope_base
    }

    /// The envelope's ceiling.
    pub fn envelope_max_delay(&self) -> Duration {
        self.envelope_max_delay
    }

    /// The floor this policy derives from the origin's p95 (`None`: no estimate yet), never
    /// above `cap`.
    ///
    /// For [`Envelope`](BackoffStrategy::Envelope) this is the envelope's `F`:
    /// `min(p95, max_delay / 2)`, or zero without an estimate. For every other strategy it is
    /// the default floor, `clamp(p95, min_floor, max_floor)`, or `base_floor` without an
    /// estimate; it is also the base of their exponential.
    pub fn floor(&self, p95: Option<Duration>) -> Duration {
        let estimate = p95.filter(|_| self.adaptive_floor);
        let floor = match (self.strategy, estimate) {
            (BackoffStrategy::Envelope, Some(p95)) => p95.min(self.envelope_max_delay / 2),
            (BackoffStrategy::Envelope, None) => Duration::ZERO,
            // max then min: no panic if the bounds are inverted, and max_floor wins.
            (_, Some(p95)) => p95.max(self.min_floor).min(self.max_floor),
            (_, None) => self.base_floor,
        };
        floor.min(self.cap)
    }

    /// The shortest delay [`delay`](Self::delay) can return for retry `retry`: the part of the
    /// draw that is not random. Deadline clipping ([`clip_to_deadline`]) must not go below it.
    ///
    /// `floor · 2^n` (capped) for the default, `F` for the envelope, `t/2` for equal jitter,
    /// the floor for decorrelated jitter and zero for full jitter.
    pub fn earliest_delay(&self, retry: u32, p95: Option<Duration>) -> Duration {
        let floor = duration_to_nanos(self.floor(p95));
        let cap = duration_to_nanos(self.cap);
        let earliest = match self.strategy {
            BackoffStrategy::FlooredExponential => times_pow2(floor, retry).min(cap),
            BackoffStrategy::FullJitter => 0,
            BackoffStrategy::EqualJitter => times_pow2(floor, retry).min(cap) / 2,
            BackoffStrategy::DecorrelatedJitter | BackoffStrategy::Envelope => floor,
        };
        Duration::from_nanos(earliest)
    }

    /// The delay before retry `retry` (0-based), given the origin's p95 (`None`: no estimate)
    /// and, for decorrelated jitter, the previous delay (`None` on the first retry; the other
    /// strategies ignore it). Draws exactly once from `rng`.
    #[must_use]
    pub fn delay(
        &self,
        retry: u32,
        p95: Option<Duration>,
        previous: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        let floor = duration_to_nanos(self.floor(p95));
        let cap = duration_to_nanos(self.cap);
        let nanos = match self.strategy {
            BackoffStrategy::FlooredExponential => {
                let jitter = uniform(rng, 0, floor);
                times_pow2(floor, retry).saturating_add(jitter)
            }
            BackoffStrategy::FullJitter => uniform(rng, 0, times_pow2(floor, retry).min(cap)),
            BackoffStrategy::EqualJitter => {
                let ceiling = times_pow2(floor, retry).min(cap);
                let half = ceiling / 2;
                half + uniform(rng, 0, ceiling - half)
            }
            BackoffStrategy::DecorrelatedJitter => {
                let previous = previous.map_or(floor, duration_to_nanos);
                let ceiling = previous.saturating_mul(3).min(cap);
                uniform(rng, floor, ceiling)
            }
            BackoffStrategy::Envelope => {
                let max_delay = duration_to_nanos(self.envelope_max_delay);
                let envelope = times_pow2(duration_to_nanos(self.envelope_base), retry);
                let range = envelope.min(max_delay).min(max_delay.saturating_sub(floor));
                floor.saturating_add(uniform(rng, 0, range))
            }
        };
        Duration::from_nanos(nanos.min(cap))
    }

    /// Honours a valid Retry-After `retry_after` (docs/spec/backoff.md#retry-after):
    /// `max(delay, U(RA, 1.5·RA))`.
    ///
    /// The band spreads clients that were all told the same instant; the result is never
    /// earlier than the server asked, and is not capped by `cap` (refusing a Retry-After that is
    /// too long is [`crate::policy::retry`]'s decision). Draws exactly once from `rng`.
    #[must_use]
    pub fn apply_retry_after(
        &self,
        delay: Duration,
        retry_after: Duration,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        let retry_after = duration_to_nanos(retry_after);
        let banded = uniform(
            rng,
            retry_after,
            retry_after.saturating_add(retry_after / 2),
        );
        delay.max(Duration::from_nanos(banded))
    }
}

/// Deadline clipping (docs/spec/backoff.md#deadline-clipping): fits a drawn `delay` under
/// `latest`, the longest delay the deadline rule allows, without going below `earliest`, the
/// shortest acceptable one (the strategy's [`earliest_delay`](BackoffPolicy::earliest_delay),
/// or the Retry-After when it applied, whichever is larger).
///
/// Returns `None` when no delay satisfies both (`earliest > latest`): there is no retry. A delay
/// already in `[earliest, latest]` is returned unchanged; a longer one is shortened to `latest`,
/// which only removes part of its random component. A delay below `earliest` (a caller error)
/// is raised to it.
///
/// ```
/// use breakwater_core::policy::backoff::clip_to_deadline;
/// use std::time::Duration;
///
/// let s = Duration::from_secs;
/// assert_eq!(clip_to_deadline(s(4), s(2), s(10)), Some(s(4)));
/// assert_eq!(clip_to_deadline(s(4), s(2), s(3)), Some(s(3)));
/// assert_eq!(clip_to_deadline(s(4), s(2), s(1)), None);
/// ```
#[must_use]
pub fn clip_to_deadline(delay: Duration, earliest: Duration, latest: Duration) -> Option<Duration> {
    if earliest > latest {
        return None;
    }
    Some(delay.max(earliest).min(latest))
}

/// `nanos · 2^exponent`, saturating at `u64::MAX` for any exponent.
fn times_pow2(nanos: u64, exponent: u32) -> u64 {
    if nanos == 0 {
        return 0;
    }
    if exponent >= u64::BITS {
        return u64::MAX;
    }
    nanos.saturating_mul(1u64 << exponent)
}

/// A uniform draw from `lo..=hi`; `hi` below `lo` is treated as `lo` (so the draw cannot panic).
fn uniform(rng: &mut fastrand::Rng, lo: u64, hi: u64) -> u64 {
    rng.u64(lo..=hi.max(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn defaults_are_the_issue_3_values() {
        let policy = BackoffPolicy::default();
        assert_eq!(policy.strategy(), BackoffStrategy::FlooredExponential);
        assert_eq!(policy.cap(), ms(30_000));
        assert!(policy.adaptive_floor());
        assert_eq!(policy.base_floor(), ms(1000));
        assert_eq!(policy.floor_bounds(), (ms(500), ms(5000)));
        assert_eq!(policy.envelope_base(), ms(100));
        assert_eq!(policy.envelope_max_delay(), ms(5000));
    }

    #[test]
    fn floor_clamps_the_p95_or_falls_back_to_the_base() {
        let policy = BackoffPolicy::default();
        assert_eq!(policy.floor(Some(ms(20))), ms(500));
        assert_eq!(policy.floor(Some(ms(1234))), ms(1234));
        assert_eq!(policy.floor(Some(ms(60_000))), ms(5000));
        assert_eq!(policy.floor(None), ms(1000));
        let fixed = policy.clone().with_adaptive_floor(false);
        assert_eq!(fixed.floor(Some(ms(3000))), ms(1000));
        // Inverted bounds: max_floor wins, no panic.
        let inverted = policy.clone().with_floor_bounds(ms(900), ms(100));
        assert_eq!(inverted.floor(Some(ms(10))), ms(100));
        // Never above the cap.
        let tight = policy.with_cap(ms(200));
        assert_eq!(tight.floor(Some(ms(3000))), ms(200));
    }

    #[test]
    fn envelope_floor_is_the_p95_up_to_half_the_max_delay() {
        let policy = BackoffPolicy::default().with_strategy(BackoffStrategy::Envelope);
        assert_eq!(policy.floor(None), Duration::ZERO);
        assert_eq!(policy.floor(Some(ms(300))), ms(300));
        assert_eq!(policy.floor(Some(ms(9000))), ms(2500));
        let fixed = policy.with_adaptive_floor(false);
        assert_eq!(fixed.floor(Some(ms(300))), Duration::ZERO);
    }

    #[test]
    fn default_delay_doubles_and_reaches_the_cap() {
        let policy = BackoffPolicy::default();
        let mut rng = fastrand::Rng::with_seed(1);
        for retry in 0..5u32 {
            let low = ms(1000 << retry);
            let delay = policy.delay(retry, None, None, &mut rng);
            assert!(
                delay >= low && delay <= low + ms(1000),
                "{retry}: {delay:?}"
            );
            assert_eq!(policy.earliest_delay(retry, None), low);
        }
        assert_eq!(policy.delay(5, None, None, &mut rng), ms(30_000));
        assert_eq!(policy.delay(u32::MAX, None, None, &mut rng), ms(30_000));
        assert_eq!(policy.earliest_delay(u32::MAX, None), ms(30_000));
    }

    #[test]
    fn full_and_equal_jitter_stay_in_their_ranges() {
        let mut rng = fastrand::Rng::with_seed(2);
        let full = BackoffPolicy::default().with_strategy(BackoffStrategy::FullJitter);
        let equal = BackoffPolicy::default().with_strategy(BackoffStrategy::EqualJitter);
        for _ in 0..1000 {
            assert!(full.delay(2, None, None, &mut rng) <= ms(4000));
            let delay = equal.delay(2, None, None, &mut rng);
            assert!(delay >= ms(2000) && delay <= ms(4000));
        }
        assert_eq!(full.earliest_delay(2, None), Duration::ZERO);
        assert_eq!(equal.earliest_delay(2, None), ms(2000));
    }

    #[test]
    fn decorrelated_jitter_grows_from_the_previous_delay() {
        let policy = BackoffPolicy::default().with_strategy(BackoffStrategy::DecorrelatedJitter);
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..1000 {
            let first = policy.delay(0, None, None, &mut rng);
            assert!(first >= ms(1000) && first <= ms(3000));
            let next = policy.delay(1, None, Some(ms(8000)), &mut rng);
            assert!(next >= ms(1000) && next <= ms(24_000));
            let capped = policy.delay(1, None, Some(ms(20_000)), &mut rng);
            assert!(capped <= ms(30_000));
        }
    }

    #[test]
    fn envelope_matches_section_8_4() {
        let policy = BackoffPolicy::default().with_strategy(BackoffStrategy::Envelope);
        let mut rng = fastrand::Rng::with_seed(4);
        for _ in 0..1000 {
            // No estimate: F = 0, E_0 = 100 ms.
            assert!(policy.delay(0, None, None, &mut rng) <= ms(100));
            // F = 300 ms, E_2 = 400 ms.
            let delay = policy.delay(2, Some(ms(300)), None, &mut rng);
            assert!(delay >= ms(300) && delay <= ms(700), "{delay:?}");
            // F = 2.5 s, E_10 = 5 s but only 2.5 s of room remains.
            let delay = policy.delay(10, Some(ms(9000)), None, &mut rng);
            assert!(delay >= ms(2500) && delay <= ms(5000), "{delay:?}");
        }
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_banded_upward() {
        let policy = BackoffPolicy::default();
        let mut rng = fastrand::Rng::with_seed(5);
        let mut seen_above = false;
        for _ in 0..1000 {
            let delay = policy.apply_retry_after(ms(1000), ms(10_000), &mut rng);
            assert!(delay >= ms(10_000) && delay <= ms(15_000));
            seen_above |= delay > ms(10_000);
            let delay = policy.apply_retry_after(ms(20_000), ms(10_000), &mut rng);
            assert!(delay >= ms(20_000));
        }
        assert!(seen_above, "the band must jitter upward");
        assert_eq!(
            policy.apply_retry_after(ms(5), Duration::ZERO, &mut rng),
            ms(5)
        );
        assert_eq!(
            policy.apply_retry_after(ms(5), Duration::MAX, &mut rng),
            Duration::from_nanos(u64::MAX)
        );
    }

    #[test]
    fn clipping_only_shortens_and_never_goes_below_the_earliest() {
        assert_eq!(clip_to_deadline(ms(5), ms(2), ms(9)), Some(ms(5)));
        assert_eq!(clip_to_deadline(ms(5), ms(2), ms(4)), Some(ms(4)));
        assert_eq!(clip_to_deadline(ms(5), ms(2), ms(2)), Some(ms(2)));
        assert_eq!(clip_to_deadline(ms(5), ms(3), ms(2)), None);
        assert_eq!(clip_to_deadline(ms(1), ms(3), ms(9)), Some(ms(3)));
    }

    #[test]
    fn powers_of_two_saturate() {
        assert_eq!(times_pow2(0, u32::MAX), 0);
        assert_eq!(times_pow2(1, 63), 1 << 63);
        assert_eq!(times_pow2(1, 64), u64::MAX);
        assert_eq!(times_pow2(3, 63), u64::MAX);
        assert_eq!(times_pow2(u64::MAX, 1), u64::MAX);
    }
}
