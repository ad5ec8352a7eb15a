//! Helpers the testkit's own test files share.

// Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

/// A GET whose body is read whole.
pub async fn fetch(client: &breakwater::Client, path: &str) -> bytes::Bytes {
    client
        .get(path)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
}

/// A client with the default configuration on `sim`'s runtime.
pub fn client(sim: &breakwater_testkit::Sim, base: &str) -> breakwater::Client {
    breakwater::Client::builder(sim.runtime(), base)
        .build()
        .unwrap()
}

/// How many seeds a deliberate bug gets to show itself in.
pub const SEEDS_TO_CATCH_A_BUG: u64 = 300;

/// The first swarm run, of seeds 1 to [`SEEDS_TO_CATCH_A_BUG`], that broke
/// an invariant.
pub fn first_failing_swarm_run() -> Option<breakwater_testkit::swarm::SwarmReport> {
    (1..=SEEDS_TO_CATCH_A_BUG)
        .map(breakwater_testkit::swarm::run_seed)
        .find(|report| !report.violations.is_empty())
}
