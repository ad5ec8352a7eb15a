//! The safety rule of the swarm's third invariant: a POST without an
//! idempotency key is never sent again once its bytes may have reached the
//! server. Turn on a deliberate bug — an upload that breaks off midway is
//! reported as if nothing had been sent — and the soak, whose windowed seeds
//! have the server reset some uploads after reading their heads, must see a
//! second head of one POST within its first few hundred seeds.
//!
//! (Its own test binary, because the switch is process-wide.)

use breakwater::fault_injection::set_broken_uploads_look_unsent;
mod common;

#[test]
fn a_resent_unkeyed_post_is_caught_by_the_invariants() {
    set_broken_uploads_look_unsent(true);
    let caught = common::first_failing_swarm_run();
    set_broken_uploads_look_unsent(false);
    let report = caught.expect("300 seeds ran with unkeyed POSTs resent and no invariant noticed");
    println!("caught by seed {:?}: {:?}", report.seed, report.violations);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.starts_with("unkeyed POST") && v.contains("reached the server")),
        "{:?}",
        report.violations
    );
    assert!(report.faults.window.is_some(), "{:?}", report.faults);
}
