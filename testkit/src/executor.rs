//! A deterministic executor on a virtual clock.
//!
//! Tasks are polled one at a time, in the order they were woken (or in an
//! order drawn from the scheduler's seed stream, when shuffling is on).
//! When no task can run, the clock jumps straight to the earliest timer: a
//! backoff of thirty seconds costs nothing but a comparison. If no task can
//! run and no timer is set, the simulation is stuck, and says so.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use breakwater::core::Instant;

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The clock and the timers, shared by everything in one simulation.
#[derive(Default)]
pub(crate) struct Clock {
    now: Instant,
    timers: BTreeMap<(Instant, u64), Waker>,
    next_timer: u64,
}

/// A handle on the executor's shared state: the clock, the timers, the run
/// queue and newly spawned tasks. Cheap to clone; used by the runtime, the
/// network and the servers.
#[derive(Clone)]
pub(crate) struct Handle {
    clock: Arc<Mutex<Clock>>,
    ready: Arc<Mutex<VecDeque<usize>>>,
    spawned: Arc<Mutex<Vec<Task>>>,
}

impl Handle {
    pub(crate) fn now(&self) -> Instant {
        self.clock.lock().unwrap().now
    }

    /// Wakes `waker` when the clock reaches `at`. Returns the timer's key.
    pub(crate) fn wake_at(&self, at: Instant, waker: Waker) -> (Instant, u64) {
        let mut clock = self.clock.lock().unwrap();
        if at <= clock.now {
            drop(clock);
            waker.wake();
            return (at, u64::MAX);
        }
        let key = (at, clock.next_timer);
        clock.next_timer += 1;
        clock.timers.insert(key, waker);
        key
    }

    pub(crate) fn cancel_timer(&self, key: (Instant, u64)) {
        self.clock.lock().unwrap().timers.remove(&key);
    }

    /// Runs `future` as a task of the simulation.
    pub(crate) fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        self.spawned.lock().unwrap().push(Box::pin(future));
    }

    /// A future that completes when the virtual clock reaches `deadline`.
    pub(crate) fn sleep_until(&self, deadline: Instant) -> Sleep {
        Sleep {
            handle: self.clone(),
            deadline,
            timer: None,
        }
    }
}

/// A timer future on the virtual clock.
pub(crate) struct Sleep {
    handle: Handle,
    deadline: Instant,
    timer: Option<(Instant, u64)>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.handle.now() >= self.deadline {
            return Poll::Ready(());
        }
        if let Some(key) = self.timer.take() {
            self.handle.cancel_timer(key);
        }
        let key = self.handle.wake_at(self.deadline, cx.waker().clone());
        self.timer = Some(key);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.timer.take() {
            self.handle.cancel_timer(key);
        }
    }
}

struct TaskWaker {
    id: usize,
    queued: AtomicBool,
    ready: Arc<Mutex<VecDeque<usize>>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::SeqCst) {
            self.ready.lock().unwrap().push_back(self.id);
        }
    }
}

/// Why a simulation stopped before its main future completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stuck {
    /// Every task waits and no timer is set: nothing can ever happen again.
    Deadlock {
        /// The virtual time at which it happened.
        at: Instant,
    },
    /// The run went past its virtual-time limit.
    TimeLimit {
        /// The limit.
        limit: Duration,
    },
}

/// The executor: owns the tasks, polls them, moves the clock.
pub(crate) struct Executor {
    handle: Handle,
    tasks: Vec<Option<(Task, Arc<TaskWaker>)>>,
    shuffle: Option<crate::Choices>,
    pub(crate) polls: u64,
}

impl Executor {
    pub(crate) fn new(start: Instant, shuffle: Option<crate::Choices>) -> Self {
        let clock = Clock {
            now: start,
            ..Clock::default()
        };
        Executor {
            handle: Handle {
                clock: Arc::new(Mutex::new(clock)),
                ready: Arc::new(Mutex::new(VecDeque::new())),
                spawned: Arc::new(Mutex::new(Vec::new())),
            },
            tasks: Vec::new(),
            shuffle,
            polls: 0,
        }
    }

    pub(crate) fn handle(&self) -> Handle {
        self.handle.clone()
    }

    fn adopt_spawned(&mut self) {
        let spawned: Vec<Task> = std::mem::take(&mut *self.handle.spawned.lock().unwrap());
        for task in spawned {
            let id = self.tasks.len();
            let waker = Arc::new(TaskWaker {
                id,
                queued: AtomicBool::new(true),
                ready: self.handle.ready.clone(),
            });
            self.tasks.push(Some((task, waker)));
            self.handle.ready.lock().unwrap().push_back(id);
        }
    }

    /// Runs until `done()` says so, the clock passes `limit`, or nothing can happen.
    pub(crate) fn run(
        &mut self,
        limit: Instant,
        mut done: impl FnMut() -> bool,
    ) -> Result<(), Stuck> {
        loop {
            self.adopt_spawned();
            let next = {
                let mut ready = self.handle.ready.lock().unwrap();
                match &mut self.shuffle {
                    // The calmest choice is the queue's own order.
                    Some(choices) if ready.len() > 1 => {
                        let i = choices.index(ready.len());
                        ready.remove(i)
                    }
                    _ => ready.pop_front(),
                }
            };
            if let Some(id) = next {
                self.poll_task(id);
                if done() {
                    return Ok(());
                }
                continue;
            }
            if done() {
                return Ok(());
            }
            // Nothing can run: jump to the earliest timer and fire every timer due then.
            let mut clock = self.handle.clock.lock().unwrap();
            let Some((&(at, _), _)) = clock.timers.iter().next() else {
                return Err(Stuck::Deadlock { at: clock.now });
            };
            if at > limit {
                return Err(Stuck::TimeLimit {
                    limit: limit.saturating_duration_since(Instant::ZERO),
                });
            }
            clock.now = clock.now.max(at);
            let now = clock.now;
            let due: Vec<Waker> = {
                let later = clock.timers.split_off(&(now, u64::MAX));
                let due = std::mem::replace(&mut clock.timers, later);
                due.into_values().collect()
            };
            drop(clock);
            for waker in due {
                waker.wake();
            }
        }
    }

    fn poll_task(&mut self, id: usize) {
        let Some(slot) = self.tasks.get_mut(id) else {
            return;
        };
        let Some((task, waker)) = slot.as_mut() else {
            return;
        };
        waker.queued.store(false, Ordering::SeqCst);
        let std_waker = Waker::from(waker.clone());
        let mut cx = Context::from_waker(&std_waker);
        self.polls += 1;
        if task.as_mut().poll(&mut cx).is_ready() {
            *slot = None;
        }
    }

    /// Tasks that have not finished.
    pub(crate) fn live_tasks(&self) -> usize {
        self.tasks.iter().filter(|t| t.is_some()).count()
    }
}
