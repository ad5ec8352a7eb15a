//! The per-origin retry budget: how much extra load retries may add to an upstream
//! (docs/spec/budget.md).
//!
//! Retries multiply load exactly when an upstream can least take it. Every original attempt
//! deposits into its origin's [`RetryBudget`] when it is dispatched; every charged retry
//! withdraws from it and is refused ([`GiveUpReason::BudgetExhausted`]) when the balance
//! cannot pay. Which retries are charged is the retry policy's word
//! ([`RetryPlan::charge_budget`](crate::policy::retry::RetryPlan::charge_budget)): transparent retries and the auth replay
//! are free. Paying is the last step of placing a retry, so a retry that cannot happen costs
//! nothing (docs/spec/retry.md#deciding-a-retry).

use std::time::Duration;

use crate::policy::retry::{GiveUpReason, RetryVerdict};
use crate::time::duration_to_nanos;
use crate::Instant;

/// Settings of a [`RetryBudget`]. Defaults (Finagle, tower, reqwest): ttl 10 s, 10 retries
/// per second minimum, 20 % of original attempts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RetryBudgetConfig {
    /// How long a deposit counts. Must lie in 1..=60 s (Finagle's range).
    pub ttl: Duration,
    /// Retries per second always allowed, from a reserve that never expires.
    pub min_retries_per_sec: u32,
    /// Retries allowed per 100 original attempts; 0..=1000 (Finagle's range, ×100).
    pub retry_percent: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> RetryBudgetConfig {
        RetryBudgetConfig {
            ttl: Duration::from_secs(10),
            min_retries_per_sec: 10,
            retry_percent: 20,
        }
    }
}

impl RetryBudgetConfig {
    /// How long a deposit counts (1..=60 s).
    pub fn with_ttl(mut self, ttl: Duration) -> RetryBudgetConfig {
        self.ttl = ttl;
        self
    }

    /// Retries per second always allowed.
    pub fn with_min_retries_per_sec(mut self, min: u32) -> RetryBudgetConfig {
        self.min_retries_per_sec = min;
        self
    }

    /// Retries allowed per 100 original attempts (0..=1000).
    pub fn with_retry_percent(mut self, percent: u32) -> RetryBudgetConfig {
        self.retry_percent = percent;
        self
    }
}

/// A budget setting out of range.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum BudgetConfigError {
    /// `ttl` is outside 1..=60 s.
    TtlOutOfRange(Duration),
    /// `retry_percent` is above 1000.
    PercentOutOfRange(u32),
}

impl std::fmt::Display for BudgetConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BudgetConfigError::TtlOutOfRange(ttl) => {
                write!(f, "retry budget ttl {ttl:?} is outside 1 s..=60 s")
            }
            BudgetConfigError::PercentOutOfRange(p) => {
                write!(f, "retry budget percent {p} is above 1000")
            }
        }
    }
}

impl std::error::Error for BudgetConfigError {}

/// Number of time slots a budget's ttl is split into.
pub const BUDGET_SLOTS: usize = 10;

/// Units deposited per original attempt (Finagle's scale factor).
pub const DEPOSIT_UNITS: i64 = 1000;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
struct Slot {
    /// Absolute slot number (`now / slot_length`) the units belong to.
    index: u64,
    units: i64,
}

/// A per-origin retry budget with Finagle / tower semantics (docs/spec/budget.md).
///
/// Every original attempt deposits [`DEPOSIT_UNITS`] into the current slot; a charged retry
/// withdraws `⌊1000 × 100 / retry_percent⌋` units (5000 at 20 %) and succeeds iff
/// `reserve + Σ live deposits − Σ live withdrawals ≥ cost`; the reserve is
/// `min_retries_per_sec × ttl_secs × cost` and never expires. Time is cut into
/// [`BUDGET_SLOTS`] slots of `ttl / 10`, aligned on the caller's epoch; a slot is live while
/// it is one of the 10 most recent (the current one included). With `retry_percent = 0`,
/// deposits are worth nothing and a retry costs 1 unit, so only the reserve pays (as Finagle
/// and tower do). Fixed-size, allocation-free, integer-only.
///
/// ```
/// use breakwater_core::policy::budget::{RetryBudget, RetryBudgetConfig};
/// use breakwater_core::Instant;
///
/// let mut budget = RetryBudget::new(RetryBudgetConfig::default().with_min_retries_per_sec(0))
///     .unwrap();
/// let now = Instant::ZERO;
/// for _ in 0..5 {
///     budget.deposit(now);
/// }
/// assert!(budget.try_withdraw(now)); // 5 originals pay for 1 retry at 20 %
/// assert!(!budget.try_withdraw(now));
/// ```
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RetryBudget {
    slot_nanos: u64,
    deposit_units: i64,
    withdraw_units: i64,
    reserve: i64,
    latest_slot: u64,
    slots: [Slot; BUDGET_SLOTS],
}

impl Default for RetryBudget {
    fn default() -> RetryBudget {
        RetryBudget::from_valid(RetryBudgetConfig::default())
    }
}

impl RetryBudget {
    /// A budget, or an error naming the setting out of range.
    pub fn new(config: RetryBudgetConfig) -> Result<RetryBudget, BudgetConfigError> {
        if config.ttl < Duration::from_secs(1) || config.ttl > Duration::from_secs(60) {
            return Err(BudgetConfigError::TtlOutOfRange(config.ttl));
        }
        if config.retry_percent > 1000 {
            return Err(BudgetConfigError::PercentOutOfRange(config.retry_percent));
        }
        Ok(RetryBudget::from_valid(config))
    }

    fn from_valid(config: RetryBudgetConfig) -> RetryBudget {
        let (deposit_units, withdraw_units) = match config.retry_percent {
            0 => (0, 1),
            p => (DEPOSIT_UNITS, DEPOSIT_UNITS * 100 / i64::from(p)),
        };
        let ttl_secs = i64::try_from(config.ttl.as_secs()).unwrap_or(60);
        let reserve = i64::from(config.min_retries_per_sec)
            .saturating_mul(ttl_secs)
            .saturating_mul(withdraw_units);
        RetryBudget {
            slot_nanos: (duration_to_nanos(config.ttl) / BUDGET_SLOTS as u64).max(1),
            deposit_units,
            withdraw_units,
            reserve,
            latest_slot: 0,
            slots: [Slot::default(); BUDGET_SLOTS],
        }
    }

    /// Records the dispatch of an original attempt (never a retry), whatever its outcome.
    pub fn deposit(&mut self, now: Instant) {
        let amount = self.deposit_units;
        self.put(now, amount);
    }

    /// Withdraws the cost of one retry if the balance covers it.
    #[must_use = "a refused withdrawal means the retry must not be sent"]
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        if self.balance(now) >= self.withdraw_units {
            let amount = self.withdraw_units;
            self.put(now, -amount);
            true
        } else {
            false
        }
    }

    /// Pays for a retry the verdict plans: withdraws for a charged retry, or turns the verdict
    /// into [`GiveUpReason::BudgetExhausted`] when the balance cannot cover it. Free retries
    /// (transparent, auth replay) and give-ups pass unchanged and touch nothing.
    pub fn charge(&mut self, now: Instant, verdict: RetryVerdict) -> RetryVerdict {
        match verdict {
            RetryVerdict::Retry(plan) if plan.charge_budget => {
                if self.try_withdraw(now) {
                    verdict
                } else {
                    RetryVerdict::GiveUp(GiveUpReason::BudgetExhausted)
                }
            }
            other => other,
        }
    }

    /// Units available at `now`: reserve + live deposits − live withdrawals.
    pub fn balance(&self, now: Instant) -> i64 {
        let current = self.slot_index(now);
        self.slots
            .iter()
            .filter(|s| current - s.index < BUDGET_SLOTS as u64)
            .fold(self.reserve, |sum, s| sum.saturating_add(s.units))
    }

    /// Units one charged retry costs.
    pub fn withdrawal_cost(&self) -> i64 {
        self.withdraw_units
    }

    /// Units one original attempt deposits.
    pub fn deposit_amount(&self) -> i64 {
        self.deposit_units
    }

    /// The never-expiring reserve, in units.
    pub fn reserve(&self) -> i64 {
        self.reserve
    }

    /// The length of one slot.
    pub fn slot_length(&self) -> Duration {
        Duration::from_nanos(self.slot_nanos)
    }

    /// The absolute slot of `now`; an earlier `now` than seen before counts as the latest.
    fn slot_index(&self, now: Instant) -> u64 {
        (now.as_nanos() / self.slot_nanos).max(self.latest_slot)
    }

    fn put(&mut self, now: Instant, amount: i64) {
        let index = self.slot_index(now);
        self.latest_slot = index;
        let position = (index % BUDGET_SLOTS as u64) as usize;
        if let Some(slot) = self.slots.get_mut(position) {
            if slot.index != index {
                *slot = Slot { index, units: 0 };
            }
            slot.units = slot.units.saturating_add(amount);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::retry::RetryKind;

    fn at(secs: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(secs)
    }

    #[test]
    fn budget_defaults_follow_finagle() {
        let mut b = RetryBudget::default();
        assert_eq!(
            (b.deposit_amount(), b.withdrawal_cost(), b.reserve()),
            (1000, 5000, 500_000)
        );
        // The reserve alone pays for 100 retries in a window...
        assert_eq!((0..200).filter(|_| b.try_withdraw(at(0))).count(), 100);
        // ...and they expire with their slots, the reserve does not.
        assert!(!b.try_withdraw(at(9)));
        assert!(b.try_withdraw(at(10)));
        // An earlier `now` is treated as the latest seen.
        assert_eq!(b.balance(at(0)), b.balance(at(10)));
        assert_eq!(
            RetryBudget::new(RetryBudgetConfig::default().with_ttl(Duration::from_millis(500))),
            Err(BudgetConfigError::TtlOutOfRange(Duration::from_millis(500)))
        );
        assert_eq!(
            RetryBudget::new(RetryBudgetConfig::default().with_retry_percent(1001)),
            Err(BudgetConfigError::PercentOutOfRange(1001))
        );
        let zero = RetryBudget::new(RetryBudgetConfig::default().with_retry_percent(0)).unwrap();
        assert_eq!(
            (
                zero.deposit_amount(),
                zero.withdrawal_cost(),
                zero.reserve()
            ),
            (0, 1, 100)
        );
    }

    #[test]
    fn charge_is_free_for_transparent_and_auth() {
        let mut b =
            RetryBudget::new(RetryBudgetConfig::default().with_min_retries_per_sec(0)).unwrap();
        for kind in [RetryKind::Transparent, RetryKind::AuthReplay] {
            let v = RetryVerdict::Retry(kind.plan());
            assert_eq!(b.charge(at(0), v), v);
        }
        assert_eq!(
            b.charge(at(0), RetryVerdict::Retry(RetryKind::Ordinary.plan())),
            RetryVerdict::GiveUp(GiveUpReason::BudgetExhausted)
        );
        assert_eq!(b.balance(at(0)), 0);
    }
}
