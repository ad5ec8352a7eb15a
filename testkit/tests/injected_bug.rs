//! The invariants are only worth something if they catch a real bug. Turn on
//! a deliberate one — a cancelled call that forgets to give its connection
//! and permits back, the phantom-connection bug of httpcore — and the soak
//! must catch it within its first few hundred seeds.
//!
//! (Its own test binary, because the switch is process-wide.)

use breakwater::fault_injection::set_forget_cancelled_calls;
use breakwater_testkit::swarm::run_seed;

#[test]
fn a_leak_on_cancel_is_caught_by_the_invariants() {
    set_forget_cancelled_calls(true);
    let caught = (1..=300u64).find_map(|seed| {
        let report = run_seed(seed);
        (!report.violations.is_empty()).then_some((seed, report.violations))
    });
    set_forget_cancelled_calls(false);
    let (seed, violations) =
        caught.expect("300 seeds ran with a connection leak and no invariant noticed");
    println!("leak caught by seed {seed}: {violations:?}");
    assert!(violations
        .iter()
        .any(|v| v.contains("leaked") || v.contains("drift") || v.contains("holds")));
}
