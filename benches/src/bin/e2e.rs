//! End to end on loopback: Breakwater (tokio and smol) against reqwest and
//! hyper-util's legacy client, with wrk as the ceiling, on one hyper server.
//!
//! ```text
//! cargo run --release -p breakwater-benches --bin e2e            # 5 rounds, full counts
//! cargo run --release -p breakwater-benches --bin e2e -- --quick # a fast check
//! ```
//!
//! Options: `--quick` (a tenth of the requests, 1 round, 1 s of wrk),
//! `--rounds N`, `--clients a,b`, `--workloads x,y`, `--no-wrk`,
//! `--json FILE` (every run's raw figures), `--instructions` (instead of
//! the timed rounds, each client's user-space instructions per request,
//! counted by valgrind; see `e2e/instructions.rs`), `--guard-instructions`
//! (CI's check: a small and a 1 MiB GET on tokio against
//! `benches/instructions-baseline.txt`, failing past 10 % growth) and
//! `--record-baseline` (writes that file anew).
//!
//! The parent process starts the server (this binary with `--server`, pinned
//! to core 0 with `taskset`), then, round after round, one child process per
//! client and workload (`--client NAME --workload W --port P`, pinned to
//! core 1), so that CPU time and peak RSS are the client's alone. Clients
//! alternate within each round (the order rotates every round); the report
//! gives medians over rounds, and ratios as the median of each round's ratio.

#[path = "e2e/alloc.rs"]
mod alloc;
#[path = "e2e/clients.rs"]
mod clients;
#[path = "e2e/instructions.rs"]
mod instructions;
#[path = "e2e/report.rs"]
mod report;
#[path = "e2e/server.rs"]
mod server;
#[path = "e2e/workload.rs"]
mod workload;
#[path = "e2e/wrk.rs"]
mod wrk;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use clients::{RunResult, CLIENTS};
use workload::Workload;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if flag("--server") {
        server::run();
        return;
    }
    let quick = flag("--quick");
    if let Some(client) = value("--client") {
        let workload = value("--workload")
            .and_then(|w| Workload::parse(&w))
            .expect("--workload NAME");
        let port = value("--port")
            .and_then(|p| p.parse().ok())
            .expect("--port N");
        let requests = value("--requests").map(|n| n.parse().expect("--requests N"));
        clients::run(&client, workload, port, quick, requests);
        return;
    }

    let rounds: usize = value("--rounds")
        .map(|r| r.parse().expect("--rounds N"))
        .unwrap_or(if quick { 1 } else { 5 });
    let clients: Vec<String> = value("--clients")
        .map(|c| c.split(',').map(String::from).collect())
        .unwrap_or_else(|| CLIENTS.iter().map(|c| c.to_string()).collect());
    let workloads: Vec<Workload> = value("--workloads")
        .map(|w| {
            w.split(',')
                .map(|name| {
                    Workload::parse(name).unwrap_or_else(|| panic!("unknown workload {name}"))
                })
                .collect()
        })
        .unwrap_or_else(|| Workload::ALL.to_vec());
    let use_wrk = !flag("--no-wrk") && {
        let found = can_run("wrk");
        if !found {
            println!("wrk is not installed: skipping the wrk ceiling (apt-get install wrk).");
        }
        found
    };
    let wrk_secs = if quick { 1 } else { 5 };

    let pinned = Command::new("taskset")
        .args(["-c", "0", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !pinned {
        println!("taskset is not available: processes are not pinned to cores.");
    }
    let (server_pin, client_pin) = if pinned {
        (Some("0"), Some("1"))
    } else {
        (None, None)
    };

    let mut server = Server::start(server_pin);
    let port = server.port;
    if flag("--guard-instructions") || flag("--record-baseline") {
        if !can_run("valgrind") {
            server.stop();
            panic!("the instruction guard needs valgrind (apt-get install valgrind)");
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let path = root.join(instructions::BASELINE);
        let within = instructions::guard(port, &path, flag("--record-baseline"), client_pin);
        server.stop();
        if !within {
            eprintln!(
                "user-space instructions per request grew more than 10 % over {}",
                instructions::BASELINE
            );
            std::process::exit(1);
        }
        return;
    }
    if flag("--instructions") {
        if !can_run("valgrind") {
            println!("valgrind is not installed (apt-get install valgrind): nothing to count.");
            server.stop();
            return;
        }
        let table = instructions::run(port, &clients, &workloads, client_pin);
        server.stop();
        print!("{table}");
        return;
    }
    eprintln!(
        "server on 127.0.0.1:{port}{}; {rounds} round(s), {}",
        if pinned {
            " (core 0), clients on core 1"
        } else {
            ""
        },
        if quick { "quick counts" } else { "full counts" }
    );

    let mut runs: Vec<(usize, RunResult)> = Vec::new();
    for round in 0..rounds {
        for &w in &workloads {
            let mut order: Vec<&str> = clients.iter().map(String::as_str).collect();
            let turn = round % order.len().max(1);
            order.rotate_left(turn);
            for client in order {
                let before = server.accepted();
                let result = run_child(client, w, port, quick, client_pin);
                std::thread::sleep(Duration::from_millis(100));
                let after = server.accepted();
                if let Some(mut r) = result {
                    r.connections = after - before;
                    eprintln!(
                        "round {}/{rounds} {:>11} {:>16}: {}",
                        round + 1,
                        w.name(),
                        client,
                        report::brief(&r)
                    );
                    runs.push((round, r));
                }
            }
            if use_wrk {
                let before = server.accepted();
                let result = wrk::run(port, w, wrk_secs, client_pin);
                std::thread::sleep(Duration::from_millis(100));
                let after = server.accepted();
                if let Some(mut r) = result {
                    r.connections = after - before;
                    eprintln!(
                        "round {}/{rounds} {:>11} {:>16}: {}",
                        round + 1,
                        w.name(),
                        "wrk",
                        report::brief(&r)
                    );
                    runs.push((round, r));
                }
            }
        }
    }
    server.stop();

    if let Some(path) = value("--json") {
        let lines: Vec<String> = runs
            .iter()
            .map(|(round, r)| {
                format!(
                    "{{\"round\":{round},\"run\":{}}}",
                    serde_json::to_string(r).expect("JSON")
                )
            })
            .collect();
        std::fs::write(&path, lines.join("\n") + "\n").expect("write --json file");
    }
    let workload_names: Vec<&str> = workloads.iter().map(|w| w.name()).collect();
    print!(
        "{}",
        report::render(&runs, &workload_names, &clients, rounds, quick, pinned)
    );
}

/// Whether `program` can be started (wrk, valgrind).
fn can_run(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Runs one client child and parses its JSON line.
fn run_child(
    client: &str,
    w: Workload,
    port: u16,
    quick: bool,
    pin: Option<&str>,
) -> Option<RunResult> {
    let exe = std::env::current_exe().expect("current exe");
    let mut command = match pin {
        Some(core) => {
            let mut c = Command::new("taskset");
            c.args(["-c", core]).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    command.args([
        "--client",
        client,
        "--workload",
        w.name(),
        "--port",
        &port.to_string(),
    ]);
    if quick {
        command.arg("--quick");
    }
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .expect("run client child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    match line.map(serde_json::from_str::<RunResult>) {
        Some(Ok(r)) if output.status.success() => Some(r),
        _ => {
            eprintln!(
                "{client} on {}: child failed ({}): {stdout}",
                w.name(),
                output.status
            );
            None
        }
    }
}

/// The server child process and its control pipe.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    port: u16,
}

impl Server {
    fn start(pin: Option<&str>) -> Server {
        let exe = std::env::current_exe().expect("current exe");
        let mut command = match pin {
            Some(core) => {
                let mut c = Command::new("taskset");
                c.args(["-c", core]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let mut child = command
            .arg("--server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start server");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("server stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("server port line");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("server said {line:?}"));
        Server {
            child,
            stdin,
            stdout,
            port,
        }
    }

    /// The server's accepted-connection counter.
    fn accepted(&mut self) -> u64 {
        let stdin = self.stdin.as_mut().expect("server stdin");
        stdin.write_all(b"stats\n").expect("server control");
        stdin.flush().expect("server control");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("server stats");
        line.trim()
            .strip_prefix("accepted ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("server said {line:?}"))
    }

    fn stop(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
