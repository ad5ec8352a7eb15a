//! The testkit's transport scenarios on `SmolRuntime`, each under three
//! executors: `smol::block_on`, a multi-threaded `async_executor::Executor`,
//! and plain `futures_lite::future::block_on`.
//!
//! The peer servers run on tokio in a background thread; the client under
//! test never does.

use breakwater_testkit::conformance::sockets::transport as common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use breakwater::runtime::Runtime;
use breakwater_smol::SmolRuntime;

/// Runs `scenario` to completion on each executor in turn, with a fresh runtime each time.
fn on_every_executor<F, Fut>(scenario: F)
where
    F: Fn(Arc<dyn Runtime>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    smol::block_on(scenario(runtime()));
    futures_lite::future::block_on(scenario(runtime()));
    on_two_workers(Box::pin(scenario(runtime())));
}

// Each transport scenario on each executor: a module per executor.
mod smol_block_on {
    breakwater_testkit::socket_transport_tests!(super::runtime(), |future| smol::block_on(future));
}

mod futures_lite_block_on {
    breakwater_testkit::socket_transport_tests!(super::runtime(), |future| {
        futures_lite::future::block_on(future)
    });
}

mod two_worker_threads {
    breakwater_testkit::socket_transport_tests!(super::runtime(), super::on_two_workers);
}

fn runtime() -> Arc<dyn Runtime> {
    Arc::new(SmolRuntime::new())
}

/// Runs `future` on an `async_executor::Executor` driven by two worker
/// threads; this thread only waits for the result, so the scenario runs
/// (and may hop) on the workers alone.
fn on_two_workers(future: breakwater::runtime::BoxFuture<'static, ()>) {
    let executor = async_executor::Executor::new();
    let (stop, stopped) = smol::channel::bounded::<()>(1);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            let stopped = stopped.clone();
            let executor = &executor;
            scope.spawn(move || futures_lite::future::block_on(executor.run(stopped.recv())));
        }
        let task = executor.spawn(future);
        futures_lite::future::block_on(task);
        drop(stop); // wakes the workers: `recv` fails once the sender is gone
    });
}

/// async-io's timer against the runtime's own clock, without sleeping for
/// real (smol has no paused clock): a deadline already reached completes at
/// once, one an hour away does not.
#[test]
fn sleep_follows_the_runtime_clock() {
    on_every_executor(|rt| common::sleep_fires_only_once_due(rt, Duration::from_secs(3600)));
}
