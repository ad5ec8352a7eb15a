//! User-space instructions per request, counted by valgrind (`--instructions`).
//!
//! CPU time on loopback is mostly the kernel's, and the kernel's share is the
//! same for every client that makes the same system calls; getrusage's split
//! between user and system time is also sampled at the scheduler tick, so
//! two runs of one client differ by more than the clients differ. An
//! instruction count is exact and leaves the kernel out: it is the work each
//! client itself does for a request.
//!
//! Each client child runs twice under `valgrind --tool=cachegrind`, once with
//! N measured requests and once with 2N, after the same warm-up. The
//! difference over N is the cost of one request, with start-up, the runtime's
//! construction and the warm-up cancelled out. What does not cancel is the
//! harness's own work per request (a clock read, a latency record, its share
//! of sorting the latencies): a few hundred instructions, the same for every
//! client. Valgrind runs the client far slower than the server answers, so
//! at 64 concurrent calls more replies are waiting at each read than in a
//! timed run.

use std::fmt::Write;
use std::process::Command;

use crate::workload::Workload;

/// Instructions one client child executes in user space for `requests`
/// measured requests (plus its warm-up and start-up).
fn count(client: &str, w: Workload, port: u16, requests: usize, pin: Option<&str>) -> Option<u64> {
    let exe = std::env::current_exe().expect("current exe");
    let mut command = match pin {
        Some(core) => {
            let mut c = Command::new("taskset");
            c.args(["-c", core, "valgrind"]);
            c
        }
        None => Command::new("valgrind"),
    };
    command
        .args([
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
        ])
        .arg(&exe)
        .args(["--client", client, "--workload", w.name(), "--port"])
        .arg(port.to_string())
        .args(["--quick", "--requests"])
        .arg(requests.to_string());
    let output = command.output().expect("run valgrind");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let refs = stderr
        .lines()
        .find_map(|line| line.split_once("I   refs:").or(line.split_once("I refs:")))
        .and_then(|(_, n)| n.trim().replace(',', "").parse().ok());
    if !output.status.success() || refs.is_none() {
        eprintln!(
            "{client} on {} under valgrind failed ({}): {stderr}",
            w.name(),
            output.status
        );
        return None;
    }
    refs
}

/// Instructions per request: the difference between N and 2N requests.
fn per_request(client: &str, w: Workload, port: u16, pin: Option<&str>) -> Option<f64> {
    let n = w.requests(true);
    let once = count(client, w, port, n, pin)?;
    let twice = count(client, w, port, 2 * n, pin)?;
    if twice <= once {
        eprintln!(
            "{client} on {}: {twice} instructions for {} requests, {once} for {n}: no figure",
            w.name(),
            2 * n
        );
        return None;
    }
    Some((twice - once) as f64 / n as f64)
}

/// Counts every client on every workload and renders the table.
pub fn run(port: u16, clients: &[String], workloads: &[Workload], pin: Option<&str>) -> String {
    let mut counts: Vec<(Workload, &str, Option<f64>)> = Vec::new();
    for &w in workloads {
        for client in clients {
            let per = per_request(client, w, port, pin);
            eprintln!(
                "{:>11} {:>16}: {} instructions/request",
                w.name(),
                client,
                per.map_or("–".to_string(), |p| format!("{p:.0}"))
            );
            counts.push((w, client, per));
        }
    }
    let find = |w: Workload, c: &str| {
        counts
            .iter()
            .find(|(cw, cc, _)| *cw == w && *cc == c)
            .and_then(|(_, _, p)| *p)
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## User-space instructions per request (valgrind)\n\n\
         (instructions for 2N requests − for N) ÷ N, N = the --quick count; \
         the kernel's work is not counted.\n"
    );
    let _ = writeln!(
        out,
        "| workload | client | instructions/request | ÷ reqwest | ÷ hyper-util |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    for &(w, c, per) in &counts {
        let ratio = |other: &str| match (per, find(w, other)) {
            (Some(a), Some(b)) if b > 0.0 && c != other => format!("{:.2}", a / b),
            _ => "–".to_string(),
        };
        let _ = writeln!(
            out,
            "| {} | {c} | {} | {} | {} |",
            w.name(),
            per.map_or("–".to_string(), |p| format!("{p:.0}")),
            ratio("reqwest"),
            ratio("hyper-util"),
        );
    }
    out
}

/// Where the recorded counts live, relative to the workspace.
pub const BASELINE: &str = "benches/instructions-baseline.txt";

/// The guarded workloads: a small GET and a 1 MiB GET on the tokio adapter.
pub const GUARDED: [(Workload, &str); 2] = [
    (Workload::SmallSeq, "breakwater-tokio"),
    (Workload::BigSeq, "breakwater-tokio"),
];

/// How much a guarded count may grow over its baseline before the guard fails.
pub const TOLERANCE: f64 = 1.10;

/// Counts the guarded workloads and compares them with the baseline at
/// `path`, or writes a new baseline there when `record` is set. Returns
/// whether every count is within [`TOLERANCE`] of its baseline.
///
/// Counts are deterministic for one binary on one kind of machine (unlike
/// timings), so a 10 % margin is wide enough for the small variation that
/// remains (how many reads a response takes) and narrow enough to catch a
/// real regression on the hot path.
pub fn guard(port: u16, path: &std::path::Path, record: bool, pin: Option<&str>) -> bool {
    let mut measured = Vec::new();
    for (w, client) in GUARDED {
        match per_request(client, w, port, pin) {
            Some(per) => measured.push((w, client, per)),
            None => {
                eprintln!("{client} on {} could not be counted", w.name());
                return false;
            }
        }
    }
    if record {
        let mut text = String::from(
            "# User-space instructions per request, counted by valgrind (e2e --instructions).\n\
             # CI fails when a count grows more than 10 % over its line here.\n\
             # After an intended change: cargo run --release -p breakwater-benches --bin e2e -- --record-baseline\n",
        );
        for (w, client, per) in &measured {
            let _ = writeln!(text, "{} {client} {per:.0}", w.name());
        }
        std::fs::write(path, text).expect("write the baseline");
        println!("recorded {}", path.display());
        return true;
    }
    let baseline = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read the baseline {}: {e}", path.display()));
    let recorded = |w: Workload, client: &str| {
        baseline.lines().find_map(|line| {
            let mut fields = line.split_whitespace();
            match (fields.next(), fields.next(), fields.next()) {
                (Some(name), Some(c), Some(n)) if name == w.name() && c == client => {
                    n.parse::<f64>().ok()
                }
                _ => None,
            }
        })
    };
    let mut within = true;
    println!("| workload | client | baseline | now | ratio |\n|---|---|---:|---:|---:|");
    for (w, client, per) in measured {
        let Some(base) = recorded(w, client) else {
            println!("| {} | {client} | – | {per:.0} | no baseline |", w.name());
            within = false;
            continue;
        };
        let ratio = per / base;
        let verdict = if ratio > TOLERANCE {
            " (over the 10 % margin)"
        } else {
            ""
        };
        println!(
            "| {} | {client} | {base:.0} | {per:.0} | {ratio:.3}{verdict} |",
            w.name()
        );
        within &= ratio <= TOLERANCE;
    }
    within
}
