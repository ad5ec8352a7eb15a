//! A subtler deliberate bug than `injected_bug.rs`: a cancelled call gives
//! its connection back, so the pool's every count stays right, but keeps the
//! socket open. Only the check of which connections are still alive, by id,
//! against the pool's idle count, can see it.
//!
//! (Its own test binary, because the switch is process-wide.)

use breakwater::fault_injection::set_keep_cancelled_sockets;
mod common;

#[test]
fn a_socket_kept_by_a_cancelled_call_is_caught_by_the_invariants() {
    set_keep_cancelled_sockets(true);
    let caught = common::first_failing_swarm_run();
    set_keep_cancelled_sockets(false);
    let report = caught.expect("300 seeds ran with a socket leak and no invariant noticed");
    let violations = report.violations;
    println!(
        "socket leak caught by seed {:?}: {violations:?}",
        report.seed
    );
    assert!(
        violations.iter().any(|v| v.contains("client holds")),
        "{violations:?}"
    );
}
