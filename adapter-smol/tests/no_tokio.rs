//! The smol adapter's normal dependency tree contains no tokio: smol and
//! async-std programs must not pull in a second runtime.

use std::process::Command;

#[test]
fn no_tokio_in_normal_dependencies() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "breakwater-smol",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).unwrap();
    // The tree is real: it names the crate and the runtime it does use.
    assert!(tree.lines().any(|l| l.starts_with("breakwater-smol ")));
    assert!(tree.lines().any(|l| l.starts_with("async-io ")));
    let tokio: Vec<_> = tree.lines().filter(|l| l.starts_with("tokio")).collect();
    assert!(tokio.is_empty(), "tokio in the normal tree: {tokio:?}");
}
