//! The core stays pure: no async runtime, no sockets, no threads, no clock.
//!
//! Everything that makes simulation and replay possible rests on this: the
//! same inputs must give the same decisions. These checks fail the build the
//! moment a dependency or a line of code would break that.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates the core may depend on, directly or through another dependency.
/// Each is pure: no I/O, no threads, no clocks, no global state.
const ALLOWED_CRATES: &[&str] = &[
    "breakwater-core",
    "http",
    "bytes",
    "httparse",
    "fastrand",
    "httpdate",
    // Pulled in by `http` for number formatting.
    "itoa",
];

/// Text that has no place in the core's code (comments are not checked).
const FORBIDDEN_CODE: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "UNIX_EPOCH.elapsed",
    "std::net",
    "std::thread",
    "std::fs",
    "std::process",
    "std::env",
    "tokio",
    "async_io",
    "async-io",
    "smol",
    "async fn",
    "async move",
    ".await",
    "thread_local!",
    "static mut",
    // The global RNG is seeded from the OS; randomness must come from a seeded `fastrand::Rng`.
    "fastrand::u",
    "fastrand::i",
    "fastrand::f",
    "fastrand::bool",
    "fastrand::alphanumeric",
    "fastrand::shuffle",
    "fastrand::choice",
    "fastrand::Rng::new()",
    "Rng::new()",
    // std's hash maps iterate in a different order on every run.
    "HashMap",
    "HashSet",
];

fn core_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_crate_the_core_depends_on_is_allowlisted() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let tree_args = [
        "tree",
        "-p",
        "breakwater-core",
        "-e",
        "normal",
        "--prefix",
        "none",
        "--format",
        "{p}",
    ];
    // Offline first (the build has fetched everything); online if the cache is incomplete.
    let run = |offline: bool| {
        let mut command = Command::new(&cargo);
        command.args(tree_args).current_dir(core_dir());
        if offline {
            command.arg("--offline");
        }
        command.output().expect("cargo tree runs")
    };
    let mut output = run(true);
    if !output.status.success() {
        output = run(false);
    }
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).unwrap();
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(
        crates.contains(&"http"),
        "cargo tree output looks wrong:\n{tree}"
    );
    let foreign: Vec<&str> = crates
        .iter()
        .copied()
        .filter(|c| !ALLOWED_CRATES.contains(c))
        .collect();
    assert!(
        foreign.is_empty(),
        "breakwater-core must stay pure, but depends on {foreign:?}. \
         Runtimes, I/O and clocks belong in the client or the adapters."
    );
}

#[test]
fn the_core_manifest_declares_no_features_that_could_pull_in_io() {
    let manifest = std::fs::read_to_string(core_dir().join("Cargo.toml")).unwrap();
    assert!(
        !manifest.contains("[features]"),
        "the core has no optional features"
    );
    assert!(
        !manifest.contains("[build-dependencies]"),
        "the core has no build script dependencies"
    );
    assert!(
        !core_dir().join("build.rs").exists(),
        "the core has no build script"
    );
}

#[test]
fn the_core_source_has_no_runtime_socket_thread_or_clock() {
    let mut violations = Vec::new();
    let mut files = Vec::new();
    visit(&core_dir().join("src"), &mut |path, text| {
        files.push(path.to_path_buf());
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for needle in FORBIDDEN_CODE {
                if line.contains(needle) {
                    violations.push(format!(
                        "{}:{}: `{needle}` in `{}`",
                        path.display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    });
    assert!(
        files.len() >= 5,
        "found only {} source files; is the path right?",
        files.len()
    );
    // The modules are folders, some inside folders (policy/retry/): the check must reach
    // every level, not only the top one.
    for nested in ["call/engine.rs", "pool/machine.rs", "policy/retry/mod.rs"] {
        assert!(
            files.iter().any(|f| f.ends_with(nested)),
            "the source check never read {nested}"
        );
    }
    assert!(
        violations.is_empty(),
        "the core must stay pure:\n{}",
        violations.join("\n")
    );
}

fn visit(dir: &Path, f: &mut dyn FnMut(&Path, &str)) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, f);
        } else if path.extension().is_some_and(|e| e == "rs") {
            f(&path, &std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The checks above only mean something if they can fail: feed them a line
/// that breaks the rules and make sure they notice.
#[test]
fn the_source_check_catches_a_clock_call() {
    let line = "    let now = std::time::Instant::now();";
    assert!(FORBIDDEN_CODE.iter().any(|needle| line.contains(needle)));
    let line = "    let x = fastrand::u64(..);";
    assert!(FORBIDDEN_CODE.iter().any(|needle| line.contains(needle)));
}
