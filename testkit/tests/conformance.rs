//! The conformance kit on the simulation: the same scenarios the adapters
//! and the example runtime pass on real sockets, here on the virtual clock.

breakwater_testkit::conformance_tests!(breakwater_testkit::conformance::SimHarness::new(7));

/// The kit catches broken runtimes: the simulation's runtime with one
/// promise broken fails the scenario that relies on it.
mod broken_runtimes {
    use std::sync::Arc;

    use breakwater::core::Instant;
    use breakwater::runtime::{BoxFuture, BoxTransport, ConnectError, ConnectTarget, Runtime};
    use breakwater_testkit::conformance::{scenarios, Handler, Harness, Peer, SimHarness};

    /// How the wrapped runtime breaks its contract.
    #[derive(Clone, Copy)]
    enum Broken {
        /// Drops every background task.
        Spawn,
        /// Ends every sleep at once.
        Timers,
    }

    struct BrokenRuntime {
        inner: Arc<dyn Runtime>,
        broken: Broken,
    }

    impl Runtime for BrokenRuntime {
        fn connect(
            &self,
            target: ConnectTarget,
        ) -> BoxFuture<'static, Result<BoxTransport, ConnectError>> {
            self.inner.connect(target)
        }

        fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
            match self.broken {
                Broken::Timers => Box::pin(async {}),
                Broken::Spawn => self.inner.sleep_until(deadline),
            }
        }

        fn now(&self) -> Instant {
            self.inner.now()
        }

        fn wall_clock(&self) -> std::time::SystemTime {
            self.inner.wall_clock()
        }

        fn random_seed(&self) -> u64 {
            self.inner.random_seed()
        }

        fn spawn(&self, task: BoxFuture<'static, ()>) {
            match self.broken {
                Broken::Spawn => drop(task),
                Broken::Timers => self.inner.spawn(task),
            }
        }
    }

    /// The simulation, with its runtime broken.
    struct BrokenHarness {
        sim: SimHarness,
        broken: Broken,
    }

    impl Harness for BrokenHarness {
        fn runtime(&self) -> Arc<dyn Runtime> {
            Arc::new(BrokenRuntime {
                inner: self.sim.runtime(),
                broken: self.broken,
            })
        }

        fn serve(&mut self, handler: Handler) -> Peer {
            self.sim.serve(handler)
        }

        fn unreachable(&mut self) -> String {
            self.sim.unreachable()
        }

        fn run(&mut self, future: BoxFuture<'static, ()>) {
            self.sim.run(future)
        }
    }

    fn fails(broken: Broken, scenario: fn(&mut dyn Harness)) -> bool {
        let mut harness = BrokenHarness {
            sim: SimHarness::new(7),
            broken,
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&mut harness))).is_err()
    }

    #[test]
    fn a_runtime_that_drops_background_tasks_fails() {
        assert!(fails(
            Broken::Spawn,
            scenarios::idle_connections_expire_without_a_call
        ));
    }

    #[test]
    fn a_runtime_whose_sleeps_end_early_fails() {
        assert!(fails(
            Broken::Timers,
            scenarios::the_clock_and_the_timers_agree
        ));
    }
}
