//! The invariants are only worth something if they catch a real bug. Turn on
//! a deliberate one — a cancelled call that forgets to give its connection
//! and permits back, the phantom-connection bug of httpcore — and the soak
//! must catch it within its first few hundred seeds. The failing run is
//! then shrunk: cut down to the few choices the failure needs.
//!
//! (Its own test binary, because the switch is process-wide.)

mod common;

use std::panic::AssertUnwindSafe;
use std::path::Path;

use breakwater::fault_injection::set_forget_cancelled_calls;
use breakwater_testkit::swarm::run_tape;
use breakwater_testkit::{Tape, TAPE_VAR};

#[test]
fn a_leak_on_cancel_is_caught_by_the_invariants() {
    set_forget_cancelled_calls(true);
    let Some(failing) = common::first_failing_swarm_run() else {
        set_forget_cancelled_calls(false);
        panic!("300 seeds ran with a connection leak and no invariant noticed");
    };
    println!(
        "leak caught by seed {:?}: {:?}",
        failing.seed, failing.violations
    );
    assert!(failing
        .violations
        .iter()
        .any(|v| v.contains("leaked") || v.contains("drift") || v.contains("holds")));

    // What a failing soak prints: the run is shrunk, and the shrunk tape saved
    // with the command that replays it.
    let message = std::panic::catch_unwind(AssertUnwindSafe(|| failing.assert_clean()))
        .expect_err("a failing run panics");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    let path = message
        .split(&format!("{TAPE_VAR}="))
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|path| Path::new(path).to_owned());
    let shrunk = path.map(|path| Tape::load(&path).expect("the saved tape loads"));
    let replayed = shrunk.as_ref().map(run_tape);
    set_forget_cancelled_calls(false);
    let (shrunk, replayed) = (
        shrunk.unwrap_or_else(|| panic!("no replay command for a tape in: {message}")),
        replayed.unwrap(),
    );
    println!(
        "{message}\nshrunk from {} to {} bytes:\n{}fault mix {:?}\n{:?}",
        failing.tape.len(),
        shrunk.len(),
        shrunk.to_text(),
        replayed.faults,
        replayed.outcomes,
    );
    assert!(shrunk.len() * 4 < failing.tape.len(), "{shrunk:?}");
    assert_eq!(
        replayed.failure(),
        failing.failure(),
        "{:?}",
        replayed.violations
    );
    assert_eq!(replayed.tape, shrunk, "the shrunk tape replays itself");
    // The leak needs a cancelled call, not an unhealthy server.
    assert_eq!(
        (
            replayed.faults.p_503,
            replayed.faults.p_429,
            replayed.faults.p_broken
        ),
        (0.0, 0.0, 0.0)
    );
    assert_eq!(replayed.faults.outage, None);
}
