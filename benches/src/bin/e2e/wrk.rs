//! wrk against the same server: the ceiling of what the server and the
//! kernel can do here. One wrk thread, pinned like the clients; its CPU time
//! and peak RSS come from wait4's rusage.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::clients::RunResult;
use crate::workload::{Workload, ECHO_LEN};

fn script() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("breakwater-e2e-post-{}.lua", std::process::id()));
    let lua = format!(
        "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", {ECHO_LEN})\n\
         wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n"
    );
    std::fs::write(&path, lua).expect("write wrk script");
    path
}

/// `12.34us`, `1.50ms`, `2.00s` → microseconds.
fn micros(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => number,
        "ms" => number * 1e3,
        "s" => number * 1e6,
        "m" => number * 60e6,
        _ => return None,
    })
}

/// Runs wrk for `secs` with the workload's connection count.
pub fn run(port: u16, workload: Workload, secs: u32, pin: Option<&str>) -> Option<RunResult> {
    let url = format!("http://127.0.0.1:{port}{}", workload.path());
    let mut command = match pin {
        Some(core) => {
            let mut c = Command::new("taskset");
            c.args(["-c", core, "wrk"]);
            c
        }
        None => Command::new("wrk"),
    };
    let conns = workload.concurrency().to_string();
    command.args([
        "-t1",
        "-c",
        &conns,
        "-d",
        &format!("{secs}s"),
        "--latency",
        "--timeout",
        "5s",
    ]);
    let script = workload.is_post().then(script);
    if let Some(script) = &script {
        command.arg("-s").arg(script);
    }
    command
        .arg(&url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().ok()?;
    let mut output = String::new();
    child.stdout.take()?.read_to_string(&mut output).ok()?;
    let (status, usage) = wait4(child.id());
    if let Some(script) = script {
        let _ = std::fs::remove_file(script);
    }
    if status != 0 {
        eprintln!("wrk exited with status {status}:\n{output}");
        return None;
    }
    let mut r = RunResult {
        client: "wrk".into(),
        workload: workload.name().into(),
        ..RunResult::default()
    };
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => r.p50_us = micros(v)?,
            ["99%", v] => r.p99_us = micros(v)?,
            [n, "requests", "in", t, ..] => {
                r.requests = n.parse().ok()?;
                r.secs = micros(t.trim_end_matches(','))? / 1e6;
            }
            ["Requests/sec:", v] => r.rps = v.parse().ok()?,
            ["Socket", "errors:", ..] | ["Non-2xx", ..] => r.errors += 1,
            _ => {}
        }
    }
    r.cpu_s = tv(usage.ru_utime) + tv(usage.ru_stime);
    r.sys_s = tv(usage.ru_stime);
    r.cpu_per_10k = r.cpu_s / r.requests.max(1) as f64 * 10_000.0;
    r.max_rss_kib = usage.ru_maxrss as u64;
    r.allocs_per_req = f64::NAN;
    r.alloc_bytes_per_req = f64::NAN;
    Some(r)
}

fn tv(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

fn wait4(pid: u32) -> (i32, libc::rusage) {
    // SAFETY: wait4 on our own child's pid, writing into zeroed out-parameters.
    unsafe {
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage);
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        };
        (code, usage)
    }
}
