//! The client child process: one client, one workload, one JSON line out.
//!
//! The child warms up (pool filled, caches hot), then measures: wall time,
//! per-request latency, its own CPU time (getrusage RUSAGE_SELF, user + sys,
//! all threads), its allocations (the counting global allocator) and, at the
//! end, its peak RSS.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use breakwater::core::pool::PoolConfig;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};

use crate::alloc;
use crate::workload::{echo_body, Item, Workload, CONCURRENCY, LIST_LEN};

/// The clients, by the names used on the command line.
pub const CLIENTS: [&str; 4] = [
    "breakwater-tokio",
    "breakwater-smol",
    "reqwest",
    "hyper-util",
];

/// One run's figures, as printed by the child (and, for wrk, by the parent).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunResult {
    pub client: String,
    pub workload: String,
    pub requests: u64,
    pub errors: u64,
    pub secs: f64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub cpu_s: f64,
    pub cpu_per_10k: f64,
    /// The kernel's part of `cpu_s` (system time), in seconds.
    pub sys_s: f64,
    pub max_rss_kib: u64,
    pub allocs_per_req: f64,
    pub alloc_bytes_per_req: f64,
    /// Filled in by the parent from the server's accept counter.
    pub connections: u64,
    /// Breakwater's own count of connections opened (cross-check), if known.
    pub client_opened: Option<u64>,
}

/// The client under test, ready to send one request of a workload.
enum Target {
    Breakwater(breakwater::Client),
    Reqwest(reqwest::Client, String),
    Hyper(
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            Full<Bytes>,
        >,
        http::Uri,
    ),
}

impl Target {
    /// One request; the body is read whole (and decoded for JSON).
    async fn one(&self, w: Workload, payload: &Bytes) -> Result<usize, String> {
        let payload = payload.clone();
        {
            match self {
                Target::Breakwater(client) => {
                    let builder = if w.is_post() {
                        client.post(w.path()).body(payload)
                    } else {
                        client.get(w.path())
                    };
                    let response = builder.send().await.map_err(|e| e.to_string())?;
                    if w.is_json() {
                        let items: Vec<Item> = response.json().await.map_err(|e| e.to_string())?;
                        Ok(items.len())
                    } else {
                        Ok(response.bytes().await.map_err(|e| e.to_string())?.len())
                    }
                }
                Target::Reqwest(client, url) => {
                    let builder = if w.is_post() {
                        client.post(url).body(payload)
                    } else {
                        client.get(url)
                    };
                    let response = builder.send().await.map_err(|e| e.to_string())?;
                    if w.is_json() {
                        let items: Vec<Item> = response.json().await.map_err(|e| e.to_string())?;
                        Ok(items.len())
                    } else {
                        Ok(response.bytes().await.map_err(|e| e.to_string())?.len())
                    }
                }
                Target::Hyper(client, uri) => {
                    let method = if w.is_post() {
                        http::Method::POST
                    } else {
                        http::Method::GET
                    };
                    let request = http::Request::builder()
                        .header(http::header::ACCEPT_ENCODING, "gzip")
                        .method(method)
                        .uri(uri.clone())
                        .body(Full::new(if w.is_post() { payload } else { Bytes::new() }))
                        .map_err(|e| e.to_string())?;
                    let response = client.request(request).await.map_err(|e| e.to_string())?;
                    let mut body = response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| e.to_string())?
                        .to_bytes();
                    if w == Workload::GzipSeq {
                        // hyper-util decodes nothing itself: flate2, as its users would.
                        let mut decoded = Vec::new();
                        std::io::Read::read_to_end(
                            &mut flate2::read::GzDecoder::new(&body[..]),
                            &mut decoded,
                        )
                        .map_err(|e| e.to_string())?;
                        body = Bytes::from(decoded);
                    }
                    if w.is_json() {
                        let items: Vec<Item> =
                            serde_json::from_slice(&body).map_err(|e| e.to_string())?;
                        Ok(items.len())
                    } else {
                        Ok(body.len())
                    }
                }
            }
        }
    }
}

/// The shared state of one phase (warm-up or measured): the next request
/// to claim, each request's latency, the errors.
struct Phase {
    target: Arc<Target>,
    workload: Workload,
    payload: Bytes,
    next: AtomicUsize,
    latency_ns: Vec<AtomicU64>,
    errors: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl Phase {
    fn new(target: &Arc<Target>, workload: Workload, requests: usize) -> Arc<Phase> {
        Arc::new(Phase {
            target: target.clone(),
            workload,
            payload: echo_body(),
            next: AtomicUsize::new(0),
            latency_ns: (0..requests).map(|_| AtomicU64::new(0)).collect(),
            errors: AtomicUsize::new(0),
            first_error: Mutex::new(None),
        })
    }
}

/// A closed-loop worker: claims requests until none are left.
async fn worker(phase: Arc<Phase>) {
    let w = phase.workload;
    loop {
        let i = phase.next.fetch_add(1, Ordering::Relaxed);
        if i >= phase.latency_ns.len() {
            return;
        }
        let start = Instant::now();
        let outcome = phase.target.one(w, &phase.payload).await;
        let elapsed = start.elapsed().as_nanos() as u64;
        phase.latency_ns[i].store(elapsed, Ordering::Relaxed);
        let error = match outcome {
            Ok(n) if w.is_json() && n != LIST_LEN => Some(format!("{n} items")),
            Ok(n) if w.expected_len().is_some_and(|len| len != n) => Some(format!("{n} bytes")),
            Ok(_) => None,
            Err(e) => Some(e),
        };
        if let Some(e) = error {
            phase.errors.fetch_add(1, Ordering::Relaxed);
            phase.first_error.lock().unwrap().get_or_insert(e);
        }
    }
}

struct Snapshot {
    at: Instant,
    cpu_s: f64,
    sys_s: f64,
    allocs: u64,
    bytes: u64,
}

fn rusage() -> libc::rusage {
    // SAFETY: getrusage writes into the zeroed struct we pass; RUSAGE_SELF is valid.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    }
}

fn timeval_secs(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

fn snapshot() -> Snapshot {
    let usage = rusage();
    let (allocs, bytes) = alloc::counts();
    Snapshot {
        at: Instant::now(),
        cpu_s: timeval_secs(usage.ru_utime) + timeval_secs(usage.ru_stime),
        sys_s: timeval_secs(usage.ru_stime),
        allocs,
        bytes,
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1e3
}

fn result(
    client: &str,
    phase: &Phase,
    before: &Snapshot,
    after: &Snapshot,
    client_opened: Option<u64>,
) -> RunResult {
    let requests = phase.latency_ns.len() as u64;
    let secs = (after.at - before.at).as_secs_f64();
    let cpu_s = after.cpu_s - before.cpu_s;
    let mut latencies: Vec<u64> = phase
        .latency_ns
        .iter()
        .map(|l| l.load(Ordering::Relaxed))
        .collect();
    latencies.sort_unstable();
    if let Some(e) = phase.first_error.lock().unwrap().as_ref() {
        eprintln!("{client}: first error: {e}");
    }
    RunResult {
        client: client.to_string(),
        workload: phase.workload.name().to_string(),
        requests,
        errors: phase.errors.load(Ordering::Relaxed) as u64,
        secs,
        rps: requests as f64 / secs,
        p50_us: percentile(&latencies, 50.0),
        p99_us: percentile(&latencies, 99.0),
        cpu_s,
        cpu_per_10k: cpu_s / requests as f64 * 10_000.0,
        sys_s: after.sys_s - before.sys_s,
        max_rss_kib: rusage().ru_maxrss as u64,
        allocs_per_req: (after.allocs - before.allocs) as f64 / requests as f64,
        alloc_bytes_per_req: (after.bytes - before.bytes) as f64 / requests as f64,
        connections: 0,
        client_opened,
    }
}

fn breakwater_client(builder: breakwater::ClientBuilder) -> breakwater::Client {
    builder
        .max_concurrency(CONCURRENCY)
        .configure(|c| {
            c.with_pool(
                PoolConfig::default()
                    .with_max_connections(CONCURRENCY)
                    .with_max_idle_per_origin(CONCURRENCY),
            )
        })
        .build()
        .expect("breakwater client")
}

fn opened(target: &Target) -> Option<u64> {
    match target {
        Target::Breakwater(client) => Some(client.stats().pool.opened),
        _ => None,
    }
}

/// Runs one client on one workload and prints its [`RunResult`] as a JSON
/// line. `requests` replaces the workload's measured count when given.
pub fn run(client: &str, workload: Workload, port: u16, quick: bool, requests: Option<usize>) {
    let base = format!("http://127.0.0.1:{port}");
    let url = format!("{base}{}", workload.path());
    let requests = requests.unwrap_or(workload.requests(quick));
    let warmup = workload.warmup(quick);
    let conc = workload.concurrency();

    let result = match client {
        "breakwater-smol" => {
            let ex = smol::LocalExecutor::new();
            smol::block_on(ex.run(async {
                let target = Arc::new(Target::Breakwater(breakwater_client(
                    breakwater_smol::client(format!("{base}/")),
                )));
                let warm = Phase::new(&target, workload, warmup);
                let measured = Phase::new(&target, workload, requests);
                for phase in [&warm, &measured] {
                    let before = snapshot();
                    if conc == 1 {
                        worker(phase.clone()).await;
                    } else {
                        let tasks: Vec<_> =
                            (0..conc).map(|_| ex.spawn(worker(phase.clone()))).collect();
                        for task in tasks {
                            task.await;
                        }
                    }
                    let after = snapshot();
                    if Arc::ptr_eq(phase, &measured) {
                        return result(client, phase, &before, &after, opened(&target));
                    }
                }
                unreachable!()
            }))
        }
        _ => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async {
                let target = Arc::new(match client {
                    "breakwater-tokio" => Target::Breakwater(breakwater_client(
                        breakwater_tokio::client(format!("{base}/")),
                    )),
                    "reqwest" => Target::Reqwest(reqwest::Client::new(), url.clone()),
                    "hyper-util" => Target::Hyper(
                        hyper_util::client::legacy::Client::builder(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .build_http(),
                        url.parse().expect("uri"),
                    ),
                    other => panic!("unknown client {other:?}; known: {CLIENTS:?}"),
                });
                let warm = Phase::new(&target, workload, warmup);
                let measured = Phase::new(&target, workload, requests);
                for phase in [&warm, &measured] {
                    let before = snapshot();
                    if conc == 1 {
                        worker(phase.clone()).await;
                    } else {
                        let tasks: Vec<_> = (0..conc)
                            .map(|_| tokio::spawn(worker(phase.clone())))
                            .collect();
                        for task in tasks {
                            task.await.expect("worker");
                        }
                    }
                    let after = snapshot();
                    if Arc::ptr_eq(phase, &measured) {
                        return result(client, phase, &before, &after, opened(&target));
                    }
                }
                unreachable!()
            })
        }
    };
    println!("{}", serde_json::to_string(&result).expect("result JSON"));
}
