//! The client's concurrency cap, a FIFO of permits shared by every call of an engine.

use std::collections::VecDeque;

/// The client's concurrency cap: at most `max` permits out, the rest wait in FIFO order.
///
/// Non-barging: while anyone waits, a newcomer queues behind them, and a released permit
/// passes straight to the oldest waiter ([`ConcurrencyLimit::release`] names it), so a waiter
/// is never overtaken. Pure and allocation-free once its queue has grown.
///
/// ```
/// use breakwater_core::call::ConcurrencyLimit;
///
/// let mut limit = ConcurrencyLimit::new(1);
/// assert!(limit.try_acquire('a'));
/// assert!(!limit.try_acquire('b')); // queued
/// assert!(!limit.try_acquire('c'));
/// assert!(limit.cancel(&'b'));      // b gives up its place
/// assert_eq!(limit.release(), Some('c')); // the permit passes to c
/// assert_eq!(limit.in_use(), 1);
/// ```
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit<K> {
    max: usize,
    in_use: usize,
    waiting: VecDeque<K>,
}

impl<K: PartialEq> ConcurrencyLimit<K> {
    /// A limit of `max` permits (at least 1).
    pub fn new(max: usize) -> Self {
        ConcurrencyLimit {
            max: max.max(1),
            in_use: 0,
            waiting: VecDeque::new(),
        }
    }

    /// Takes a permit for `who` if one is free and nobody waits (`true`); otherwise queues
    /// `who` (`false`): a later [`release`](Self::release) names it when its permit is ready.
    pub fn try_acquire(&mut self, who: K) -> bool {
        if self.waiting.is_empty() && self.in_use < self.max {
            self.in_use += 1;
            true
        } else {
            self.waiting.push_back(who);
            false
        }
    }

    /// Gives a permit back. If someone waits, the permit passes to the oldest waiter, who is
    /// returned and now holds it.
    #[must_use = "the returned waiter now holds a permit and must be told"]
    pub fn release(&mut self) -> Option<K> {
        match self.waiting.pop_front() {
            Some(next) => Some(next),
            None => {
                self.in_use = self.in_use.saturating_sub(1);
                None
            }
        }
    }

    /// Removes `who` from the queue; `false` if it was not waiting.
    pub fn cancel(&mut self, who: &K) -> bool {
        match self.waiting.iter().position(|w| w == who) {
            Some(i) => self.waiting.remove(i).is_some(),
            None => false,
        }
    }

    /// Permits out.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Waiters in line.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }
}
