//! Medians over rounds, ratios, and the performance targets, as Markdown.

use std::fmt::Write;

use crate::clients::RunResult;
use crate::workload::Workload;

/// One line of progress for a finished run.
pub fn brief(r: &RunResult) -> String {
    format!(
        "{:>9.0} req/s  p50 {:>7.1} µs  p99 {:>8.1} µs  cpu {:.3} s/10k  rss {:>5.1} MiB  conns {:>3}  allocs/req {:>6.1}{}",
        r.rps,
        r.p50_us,
        r.p99_us,
        r.cpu_per_10k,
        r.max_rss_kib as f64 / 1024.0,
        r.connections,
        r.allocs_per_req,
        if r.errors > 0 { format!("  ERRORS {}", r.errors) } else { String::new() }
    )
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

struct Runs<'a> {
    runs: &'a [(usize, RunResult)],
}

impl Runs<'_> {
    fn of<'b>(
        &'b self,
        w: &'b str,
        client: &'b str,
    ) -> impl Iterator<Item = &'b (usize, RunResult)> + 'b {
        self.runs
            .iter()
            .filter(move |(_, r)| r.workload == w && r.client == client)
    }

    fn median(&self, w: &str, client: &str, metric: fn(&RunResult) -> f64) -> Option<f64> {
        median(self.of(w, client).map(|(_, r)| metric(r)).collect())
    }

    fn max(&self, w: &str, client: &str, metric: fn(&RunResult) -> f64) -> Option<f64> {
        self.of(w, client).map(|(_, r)| metric(r)).reduce(f64::max)
    }

    /// The median over rounds of `a`'s metric divided by `b`'s in the same round.
    fn ratio(&self, w: &str, a: &str, b: &str, metric: fn(&RunResult) -> f64) -> Option<f64> {
        let ratios = self
            .of(w, a)
            .filter_map(|(round, ra)| {
                self.of(w, b)
                    .find(|(rb_round, _)| rb_round == round)
                    .map(|(_, rb)| metric(ra) / metric(rb))
            })
            .collect();
        median(ratios)
    }
}

fn rps(r: &RunResult) -> f64 {
    r.rps
}
fn cpu(r: &RunResult) -> f64 {
    r.cpu_per_10k
}

/// How much of the CPU time was spent in the kernel, in percent.
fn kernel_share(r: &RunResult) -> f64 {
    r.sys_s / r.cpu_s * 100.0
}

fn show(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.decimals$}"))
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISS"
    }
}

/// The whole report.
pub fn render(
    runs: &[(usize, RunResult)],
    workloads: &[&str],
    clients: &[String],
    rounds: usize,
    quick: bool,
    pinned: bool,
) -> String {
    let runs = Runs { runs };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## End to end on loopback\n\n{cores} cores; server (hyper 1, one tokio worker) {}; \
         {rounds} alternating round(s), medians; {}.\n",
        if pinned {
            "on core 0, each client child and wrk (1 thread) on core 1"
        } else {
            "unpinned (no taskset)"
        },
        if quick {
            "--quick counts (a tenth)"
        } else {
            "full counts"
        }
    );
    let _ = writeln!(
        out,
        "| workload | client | req/s | vs wrk | p50 µs | p99 µs | CPU s/10k req | kernel % of CPU | peak RSS MiB | conns | allocs/req | KiB alloc/req |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut all_clients: Vec<&str> = clients.iter().map(String::as_str).collect();
    all_clients.push("wrk");
    for &w in workloads {
        for &c in &all_clients {
            if runs.of(w, c).next().is_none() {
                continue;
            }
            let vs_wrk = if c == "wrk" {
                None
            } else {
                runs.ratio(w, c, "wrk", rps)
            };
            let errors: u64 = runs.of(w, c).map(|(_, r)| r.errors).sum();
            let _ = writeln!(
                out,
                "| {w} | {c}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                if errors > 0 {
                    format!(" ({errors} errors)")
                } else {
                    String::new()
                },
                show(runs.median(w, c, rps), 0),
                show(vs_wrk, 2),
                show(runs.median(w, c, |r| r.p50_us), 1),
                show(runs.median(w, c, |r| r.p99_us), 1),
                show(runs.median(w, c, cpu), 3),
                show(runs.median(w, c, kernel_share), 0),
                show(runs.median(w, c, |r| r.max_rss_kib as f64 / 1024.0), 1),
                show(runs.max(w, c, |r| r.connections as f64), 0),
                show(runs.median(w, c, |r| r.allocs_per_req), 1),
                show(runs.median(w, c, |r| r.alloc_bytes_per_req / 1024.0), 1),
            );
        }
    }
    let _ = writeln!(
        out,
        "\nconns: TCP connections the server accepted during the client's run (most over rounds). kernel %: system time's share of the client's CPU time (getrusage); the rest is user space.\n"
    );

    let breakwaters: Vec<&str> = clients
        .iter()
        .map(String::as_str)
        .filter(|c| c.starts_with("breakwater"))
        .collect();
    let _ = writeln!(out, "### Ratios (median of each round's ratio)\n");
    let _ = writeln!(
        out,
        "| workload | client | req/s ÷ reqwest | req/s ÷ hyper-util | CPU ÷ reqwest | CPU ÷ hyper-util | targets |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---|");
    for &w in workloads {
        let workload = Workload::parse(w).expect("known workload");
        for &b in &breakwaters {
            let rr = runs.ratio(w, b, "reqwest", rps);
            let rh = runs.ratio(w, b, "hyper-util", rps);
            let cr = runs.ratio(w, b, "reqwest", cpu);
            let ch = runs.ratio(w, b, "hyper-util", cpu);
            let mut targets = Vec::new();
            match workload {
                Workload::BigSeq => {
                    let best = ["reqwest", "hyper-util"]
                        .iter()
                        .filter_map(|c| runs.median(w, c, rps))
                        .reduce(f64::max);
                    if let (Some(best), Some(own)) = (best, runs.median(w, b, rps)) {
                        targets.push(format!("≥0.95×best {}", mark(own >= 0.95 * best)));
                    }
                }
                Workload::EchoSeq => {}
                _ => {
                    if let Some(v) = rr {
                        targets.push(format!("≥1.2×reqwest {}", mark(v >= 1.2)));
                    }
                    if let Some(v) = rh {
                        targets.push(format!("≥1×hyper {}", mark(v >= 1.0)));
                    }
                    if workload.concurrency() == 1 {
                        if let Some(v) = runs.ratio(w, b, "wrk", rps) {
                            targets.push(format!("≥0.9×wrk {}", mark(v >= 0.9)));
                        }
                    }
                    if let Some(v) = cr {
                        targets.push(format!("CPU≤0.7×reqwest {}", mark(v <= 0.7)));
                    }
                    if let Some(v) = ch {
                        targets.push(format!("CPU≤0.9×hyper {}", mark(v <= 0.9)));
                    }
                }
            }
            if let Some(conns) = runs.max(w, b, |r| r.connections as f64) {
                targets.push(format!(
                    "conns≤{} {}",
                    workload.concurrency(),
                    mark(conns <= workload.concurrency() as f64)
                ));
            }
            let _ = writeln!(
                out,
                "| {w} | {b} | {} | {} | {} | {} | {} |",
                show(rr, 2),
                show(rh, 2),
                show(cr, 2),
                show(ch, 2),
                targets.join(", ")
            );
        }
    }
    out
}
