//! A mixed-fault scenario for seed sweeps ("swarm testing").
//!
//! Each seed picks its own fault mix — rates of 503s, 429s with
//! `Retry-After`, resets and closes mid-exchange, slow replies, stalled
//! bodies, keep-alive closes racing reuse, an outage window, the link's
//! round trip, sometimes a window with long uploads, some reset by the
//! server right after their head, sometimes responses longer than the
//! client's read buffer, cut by those resets and stalls mid-body — then runs
//! a workload of GETs, unkeyed
//! POSTs and keyed POSTs
//! (some cancelled at random points) through one client, heals every fault,
//! and checks the invariants that must hold whatever happened:
//!
//! 1. pool accounting is exact: nothing active, connecting or waiting; every
//!    connection opened is closed or idle; the server holds no connection
//!    the client has let go of (no leak on either side);
//! 2. limits were never exceeded (sampled throughout the run);
//! 3. no unkeyed POST's head reached the server twice (its body complete or not);
//! 4. every keyed POST carried one key on all its attempts, and no two calls shared one;
//! 5. every call ended (success or typed error) by its deadline, plus the body timeout;
//! 6. no call reached the server more often than its attempts allow;
//! 7. liveness: once faults heal, every new call succeeds;
//! 8. every 200's body is, byte for byte, the one the server sent.
//!
//! Probes record which rare branches the run reached (breaker opened, a 429
//! honoured, rate limited, pool exhausted, a call cancelled in flight...), so
//! a sweep that never reaches one is visible.
//!
//! A run's choices come from its seed or from a [`Tape`]; its report carries
//! the tape that replays it ([`run_tape`]), and a failing run can be cut down
//! to the choices its failure needs ([`shrink_failure`]), which
//! [`SwarmReport::assert_clean`] does before it panics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use breakwater::core::policy::breaker::{BreakerConfig, BreakerStateKind};
use breakwater::core::policy::budget::RetryBudgetConfig;
use breakwater::core::pool::PoolConfig;
use breakwater::core::Instant;
use breakwater::ErrorKind;

use crate::{Choices, Fault, Link, Reply, RequestBodies, ServerConfig, Shrunk, Sim, Tape};

/// Every probe a run can report, so that a sweep can name the ones it never
/// reached as well as those it did.
pub const PROBES: &[&str] = &[
    "429 with retry-after in play",
    "breaker half-open",
    "breaker opened",
    "call cancelled",
    "call cancelled while half-open",
    "circuit open error",
    "connect error",
    "other error",
    "protocol error",
    "pool exhausted error",
    "rate limited error",
    "request retried",
    "retry budget exhausted",
    "stale connection replaced",
    "timeout error",
    "upload reset after its head",
    "long body read",
];

/// The faults one seed chose.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FaultMix {
    /// Share of requests answered 503.
    pub p_503: f64,
    /// Share of requests answered 429.
    pub p_429: f64,
    /// The `Retry-After` of those 429s, in seconds (`None`: no header).
    pub retry_after_secs: Option<u64>,
    /// Share of requests whose connection is reset or closed instead of answered.
    pub p_broken: f64,
    /// Share of replies delayed by a slow-response distribution.
    pub p_slow: f64,
    /// Share of bodies that stall halfway.
    pub p_stall: f64,
    /// The server closes idle keep-alive connections after this long.
    pub idle_timeout: Option<Duration>,
    /// An outage of new connections between these instants.
    pub outage: Option<(Duration, Duration)>,
    /// What the outage does to new connections.
    pub outage_kind: OutageKind,
    /// The link's round trip.
    pub rtt: Duration,
    /// The client's retry budget: the default, or one tight enough to run out.
    pub retry_budget: RetryBudgetConfig,
    /// Share of calls whose caller gives up at a random point.
    pub p_cancel: f64,
    /// The client's pool size: the default 50, or a small pool that callers
    /// can find exhausted.
    pub pool_max_connections: usize,
    /// How long a caller waits for a connection or a permit (default 5 s).
    pub pool_timeout: Duration,
    /// How long the breaker stays open: the default 30 s, or 2 s, so that
    /// it goes half-open while the workload still runs.
    pub breaker_open_interval: Duration,
    /// The link's window, if it has one. With one, POST bodies are four
    /// windows long, so uploads wait on the server, and the server resets
    /// one upload in ten after reading its head.
    pub window: Option<u64>,
    /// Bytes the server adds to the body of every echo (its 200s): 0, or
    /// more than the client's 16 KiB read buffer, so that a body is gathered
    /// from several reads and a reset or a stall can fall in its middle.
    pub response_padding: usize,
    /// Share of requests answered with bytes that are not HTTP (a garbage
    /// head, or a chunked body with a malformed trailer line).
    pub p_malformed: f64,
}

impl FaultMix {
    /// Draws a mix from the run's `faults` stream. Every option list starts
    /// with its calmest entry, so an empty tape draws the calmest mix.
    pub fn draw(choices: &mut Choices) -> FaultMix {
        FaultMix {
            p_503: choices.pick(&[0.0, 0.1, 0.3, 0.7]),
            p_429: choices.pick(&[0.0, 0.05, 0.2]),
            retry_after_secs: choices.pick(&[None, Some(1), Some(3), Some(120)]),
            p_broken: choices.pick(&[0.0, 0.05, 0.15]),
            p_slow: choices.pick(&[0.0, 0.1, 0.3]),
            p_stall: choices.pick(&[0.0, 0.0, 0.02]),
            idle_timeout: choices.pick(&[
                None,
                Some(Duration::from_millis(50)),
                Some(Duration::from_secs(2)),
            ]),
            outage: choices.chance(0.5).then(|| {
                let start = Duration::from_millis(choices.in_range(0..10_000));
                (
                    start,
                    start + Duration::from_millis(choices.in_range(1_000..40_000)),
                )
            }),
            outage_kind: choices.pick(&[
                OutageKind::Refuse,
                OutageKind::Stall,
                OutageKind::ResetOnAccept,
            ]),
            rtt: choices.pick(&[
                Duration::from_millis(1),
                Duration::from_millis(20),
                Duration::from_millis(80),
            ]),
            retry_budget: if choices.chance(0.25) {
                RetryBudgetConfig {
                    ttl: Duration::from_secs(10),
                    min_retries_per_sec: 1,
                    retry_percent: 5,
                }
            } else {
                RetryBudgetConfig::default()
            },
            p_cancel: choices.pick(&[0.1, 0.1, 0.4]),
            pool_max_connections: MAX_CONNECTIONS,
            pool_timeout: Duration::from_secs(5),
            breaker_open_interval: BreakerConfig::default().open_interval,
            window: None,
            response_padding: 0,
            p_malformed: 0.0,
        }
        .with_small_pool_if(choices.chance(0.25))
        .with_short_breaker_if(choices.chance(0.25))
        .with_window_if(choices.chance(0.25))
        // Drawn last, so that the draws before it are what they were.
        .with_long_responses_if(choices.chance(0.25))
        .with_malformed_responses(choices.pick(&[0.0, 0.0, 0.03]))
    }

    fn with_malformed_responses(self, p_malformed: f64) -> FaultMix {
        FaultMix {
            p_malformed,
            ..self
        }
    }

    fn with_long_responses_if(self, long: bool) -> FaultMix {
        FaultMix {
            response_padding: if long { LONG_RESPONSE_PADDING } else { 0 },
            ..self
        }
    }

    fn with_window_if(self, windowed: bool) -> FaultMix {
        FaultMix {
            window: windowed.then_some(UPLOAD_WINDOW),
            ..self
        }
    }

    fn with_short_breaker_if(self, short: bool) -> FaultMix {
        if !short {
            return self;
        }
        FaultMix {
            breaker_open_interval: Duration::from_secs(2),
            ..self
        }
    }

    fn with_small_pool_if(self, small: bool) -> FaultMix {
        if !small {
            return self;
        }
        FaultMix {
            pool_max_connections: 3,
            pool_timeout: Duration::from_millis(300),
            ..self
        }
    }
}

/// How an outage treats new connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutageKind {
    /// Connections are refused.
    Refuse,
    /// Connects never complete (the client's connect timeout ends them).
    Stall,
    /// Connections are accepted, then reset before any request is read.
    ResetOnAccept,
}

/// What one seed's run found.
#[derive(Debug)]
#[non_exhaustive]
pub struct SwarmReport {
    /// The seed, or `None` for a run replayed from a tape.
    pub seed: Option<u64>,
    /// The faults it chose.
    pub faults: FaultMix,
    /// Broken invariants (empty when the run is clean).
    pub violations: Vec<String>,
    /// Rare branches the run reached.
    pub probes: BTreeSet<&'static str>,
    /// Calls made (workload and liveness).
    pub calls: usize,
    /// The trace hash, for determinism checks.
    pub trace_hash: u64,
    /// Every call's outcome, in call order, for determinism checks.
    pub outcomes: Vec<String>,
    /// The choices the run made: replaying it ([`run_tape`]) makes the same run.
    pub tape: Tape,
}

impl SwarmReport {
    /// How the run failed, for telling one failure from another: its first
    /// violation with the numbers taken out (ids and counts vary as a run
    /// shrinks). `None` if the run is clean.
    pub fn failure(&self) -> Option<String> {
        let first = self.violations.first()?;
        Some(first.chars().filter(|c| !c.is_ascii_digit()).collect())
    }

    /// Panics with the seed, its fault mix, the violations and the replay
    /// command; the run is first shrunk, and the shrunk tape saved, with the
    /// command that replays it.
    pub fn assert_clean(&self) {
        if self.violations.is_empty() {
            return;
        }
        let (run, replay) = match self.seed {
            Some(seed) => (
                format!("seed {seed}"),
                format!("{}={seed}", crate::SEED_VAR),
            ),
            None => (
                "the tape".to_owned(),
                format!("{}=<the tape's file>", crate::TAPE_VAR),
            ),
        };
        let shrunk = match shrink_failure(self, 1_000) {
            Some(shrunk) => {
                // Named after what it came from, so no run overwrites another's.
                let name = match self.seed {
                    Some(seed) => format!("breakwater-seed-{seed}.tape"),
                    None => format!(
                        "breakwater-tape-{:016x}.tape",
                        crate::stream_seed(0, &self.tape.to_text())
                    ),
                };
                let path = std::env::temp_dir().join(name);
                let saved = match shrunk.tape.save(&path) {
                    Ok(()) => format!(
                        "replay the shrunk run with: {}={} cargo test -p breakwater-testkit --test soak",
                        crate::TAPE_VAR,
                        path.display()
                    ),
                    Err(e) => format!("the shrunk tape could not be saved: {e}"),
                };
                format!(
                    "shrunk in {} runs to {} bytes ({:?}), fault mix {:?}\n{saved}",
                    shrunk.runs,
                    shrunk.tape.len(),
                    shrunk.tape,
                    FaultMix::draw(&mut Choices::replaying(shrunk.tape.stream("faults"))),
                )
            }
            None => "it did not fail again when replayed from its tape".to_owned(),
        };
        panic!(
            "{run} broke invariants:\n  {}\nfault mix: {:?}\nreplay with: {replay} cargo test -p breakwater-testkit --test soak\n{shrunk}",
            self.violations.join("\n  "),
            self.faults,
        );
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Get,
    Post,
    KeyedPost,
}

#[derive(Debug)]
struct CallRecord {
    kind: Kind,
    started: Instant,
    ended: Option<Instant>,
    outcome: String,
}

const CALLS: usize = 40;
const LIVENESS_CALLS: usize = 10;
const TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONCURRENCY: usize = 20;
const MAX_CONNECTIONS: usize = 50;
/// The window of a seed that draws one; POST bodies are then four times as long.
const UPLOAD_WINDOW: u64 = 8 * 1024;
/// Three times the client's read buffer.
const LONG_RESPONSE_PADDING: usize = 48 * 1024;

/// The body the swarm's server sends for a request with this body.
fn echo(request_body: &str, padding: usize) -> String {
    if padding == 0 {
        format!("{{\"echo\":{request_body:?}}}")
    } else {
        format!(
            "{{\"echo\":{request_body:?},\"pad\":\"{}\"}}",
            "x".repeat(padding)
        )
    }
}

/// Runs the mixed-fault scenario for `seed` and checks its invariants.
pub fn run_seed(seed: u64) -> SwarmReport {
    run(Sim::shuffled(seed, false)).0
}

/// Runs the mixed-fault scenario with its choices read from `tape` (the
/// calmest ones where it runs out), and checks its invariants. A report's
/// own tape replays its run exactly.
pub fn run_tape(tape: &Tape) -> SwarmReport {
    run(Sim::shuffled_from_tape(tape.clone(), false)).0
}

/// Shrinks a failing run: the smallest tape found, within `max_runs` runs,
/// on which the scenario still fails the same way ([`SwarmReport::failure`]).
/// `None` if the report is clean or its tape does not fail again.
pub fn shrink_failure(report: &SwarmReport, max_runs: usize) -> Option<Shrunk> {
    crate::shrink(report.tape.clone(), max_runs, |tape| {
        let report = run_tape(tape);
        (report.failure(), report.tape)
    })
}

/// Where two runs of one seed first went different ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// The seed.
    pub seed: u64,
    /// The index of the first differing trace event.
    pub step: usize,
    /// That event in the first run (with its virtual time), if it had one.
    pub first: Option<String>,
    /// That event in the second run, if it had one.
    pub second: Option<String>,
}

/// Runs `seed` twice, keeping every trace line, and reports the first event
/// at which the two runs differ (with its step and virtual time). With
/// `BREAKWATER_DUMP_TRACE` set, the last 60 events of the first run are printed.
pub fn check_determinism(seed: u64) -> Result<(), Divergence> {
    let (_, first) = run(Sim::shuffled(seed, true));
    if std::env::var("BREAKWATER_DUMP_TRACE").is_ok() {
        for line in first.iter().rev().take(60).rev() {
            eprintln!("{line}");
        }
    }
    let (_, second) = run(Sim::shuffled(seed, true));
    match first_divergence(&first, &second) {
        None => Ok(()),
        Some(step) => Err(Divergence {
            seed,
            step,
            first: first.get(step).cloned(),
            second: second.get(step).cloned(),
        }),
    }
}

/// The index of the first event at which two traces differ.
fn first_divergence(first: &[String], second: &[String]) -> Option<usize> {
    match first.iter().zip(second).position(|(a, b)| a != b) {
        Some(step) => Some(step),
        None if first.len() == second.len() => None,
        None => Some(first.len().min(second.len())),
    }
}

fn run(mut sim: Sim) -> (SwarmReport, Vec<String>) {
    let seed = (!sim.replays_a_tape()).then(|| sim.seed());
    let faults = FaultMix::draw(&mut sim.choices("faults"));
    let link = Link::rtt(faults.rtt);
    sim.set_default_link(match faults.window {
        Some(window) => link.with_window(window),
        None => link,
    });
    // With a window, a POST body is long enough to wait on the server.
    let padding = faults.window.map_or(0, |w| 4 * w as usize);
    let healthy = Arc::new(Mutex::new(false));
    let mix = faults.clone();
    let heal = healthy.clone();
    let server = sim.server("https://api.test", move |request, ctx| {
        let body = echo(
            &String::from_utf8_lossy(&request.body),
            mix.response_padding,
        );
        if *heal.lock().unwrap() {
            return Reply::json(body);
        }
        let choices = &mut *ctx.choices;
        let trouble = choices.weighted(&[mix.p_503, mix.p_429, mix.p_broken, mix.p_stall]);
        let mut reply = Reply::json(body.clone());
        if choices.chance(mix.p_slow) {
            // A long-tailed service time: mostly tens of milliseconds, sometimes seconds.
            let ms = (-(1.0 - choices.unit()).ln() * 150.0) as u64;
            reply = reply.delayed(Duration::from_millis(ms.min(15_000)));
        }
        // Drawn after the others, and only in mixes that have malformed
        // replies, so that every other mix draws what it drew before.
        if mix.p_malformed > 0.0 && choices.chance(mix.p_malformed) {
            return reply.fault(if choices.chance(0.5) {
                Fault::MalformedHead
            } else {
                Fault::MalformedTrailer
            });
        }
        match trouble {
            None => reply,
            Some(0) => Reply::new(503, "busy").delayed(reply.delay),
            Some(1) => {
                let mut limited = Reply::new(429, "slow down");
                if let Some(secs) = mix.retry_after_secs {
                    limited = limited.header("retry-after", &secs.to_string());
                }
                limited
            }
            Some(2) => {
                let fault = match choices.below(3) {
                    0 => Fault::ResetBeforeResponse,
                    1 => Fault::CloseBeforeResponse,
                    // Within the head, or anywhere in a long body.
                    _ => Fault::ResetAfterBytes(
                        choices.in_range(1..40 + mix.response_padding as u64),
                    ),
                };
                reply.fault(fault)
            }
            // A long body stalls halfway through its announced length.
            Some(_) if mix.response_padding > 0 => reply.fault(Fault::StallMidBody),
            Some(_) => reply
                .chunks(vec![body.clone().into(), "padding".into()])
                .fault(Fault::StallMidBody),
        }
    });
    server.set_config(ServerConfig {
        idle_timeout: faults.idle_timeout,
        request_bodies: match faults.window {
            Some(_) => RequestBodies::SometimesResetAfterHead { percent: 10 },
            None => RequestBodies::Read,
        },
        ..ServerConfig::default()
    });

    // Two sends of one call with the same attempt number are a transparent
    // retry: a stale pooled connection replaced for free.
    let sends: Arc<Mutex<BTreeMap<String, Vec<u32>>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let send_log = sends.clone();
    let client = sim
        .client_builder("https://api.test/")
        .on_request(move |info| {
            send_log
                .lock()
                .unwrap()
                .entry(info.url.to_string())
                .or_default()
                .push(info.attempt);
        })
        .max_concurrency(MAX_CONCURRENCY)
        .configure(|config| {
            config
                .with_budget(faults.retry_budget)
                .with_pool(
                    PoolConfig::default()
                        .with_max_connections(faults.pool_max_connections)
                        .with_pool_timeout(faults.pool_timeout),
                )
                .with_breaker(
                    BreakerConfig::default().with_open_interval(faults.breaker_open_interval),
                )
        })
        .timeout(TOTAL_TIMEOUT)
        .body_timeout(BODY_TIMEOUT)
        .build()
        .expect("client builds");

    let records: Arc<Mutex<Vec<CallRecord>>> = Arc::new(Mutex::new(Vec::new()));
    let violations: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let probes: Arc<Mutex<BTreeSet<&'static str>>> = Arc::new(Mutex::new(BTreeSet::new()));

    // The outage: connections refused for a while.
    if let Some((from, to)) = faults.outage {
        let (server, runtime, kind) = (server.clone(), sim.runtime(), faults.outage_kind);
        sim.spawn(async move {
            runtime.sleep_until(Instant::ZERO + from).await;
            let set = |on: bool| {
                let config = server.config();
                server.set_config(match kind {
                    OutageKind::Refuse => ServerConfig {
                        refuse_connections: on,
                        ..config
                    },
                    OutageKind::Stall => ServerConfig {
                        stall_connections: on,
                        ..config
                    },
                    OutageKind::ResetOnAccept => ServerConfig {
                        reset_connections: on,
                        ..config
                    },
                });
            };
            set(true);
            runtime.sleep_until(Instant::ZERO + to).await;
            // Only the outage's own switch: healing may have changed the rest.
            set(false);
        });
    }

    // A monitor: limits are never exceeded, and the breaker's states are seen.
    let stop_monitor = Arc::new(Mutex::new(false));
    let max_connections = faults.pool_max_connections;
    {
        let (client, runtime, violations, probes, stop) = (
            client.clone(),
            sim.runtime(),
            violations.clone(),
            probes.clone(),
            stop_monitor.clone(),
        );
        sim.spawn(async move {
            while !*stop.lock().unwrap() {
                let stats = client.stats();
                if stats.pool.active + stats.pool.connecting + stats.pool.idle > max_connections {
                    violations
                        .lock()
                        .unwrap()
                        .push(format!("pool over its limit: {:?}", stats.pool));
                }
                if stats.in_flight > MAX_CONCURRENCY {
                    violations
                        .lock()
                        .unwrap()
                        .push(format!("{} calls in flight", stats.in_flight));
                }
                for origin in &stats.origins {
                    match origin.breaker {
                        BreakerStateKind::Open => probes.lock().unwrap().insert("breaker opened"),
                        BreakerStateKind::HalfOpen => {
                            probes.lock().unwrap().insert("breaker half-open")
                        }
                        _ => false,
                    };
                    // The budget no longer pays for one more retry.
                    if origin.retry_budget < 1 {
                        probes.lock().unwrap().insert("retry budget exhausted");
                    }
                }
                runtime
                    .sleep_until(runtime.now() + Duration::from_millis(100))
                    .await;
            }
        });
    }

    // The workload.
    let mut workload = sim.choices("workload");
    let mut tasks = Vec::new();
    for n in 0..CALLS {
        let kind = match workload.below(10) {
            0..=5 => Kind::Get,
            6..=7 => Kind::Post,
            _ => Kind::KeyedPost,
        };
        let start = Duration::from_millis(workload.in_range(0..20_000));
        let cancel_after = workload
            .chance(faults.p_cancel)
            .then(|| Duration::from_millis(workload.in_range(0..3_000)));
        tasks.push((n, kind, start, cancel_after));
    }
    let finished = Arc::new(Mutex::new(0usize));
    for (n, kind, start, cancel_after) in tasks {
        let (client, runtime, records, probes, violations, finished) = (
            client.clone(),
            sim.runtime(),
            records.clone(),
            probes.clone(),
            violations.clone(),
            finished.clone(),
        );
        let response_padding = faults.response_padding;
        sim.spawn(async move {
            runtime.sleep_until(Instant::ZERO + start).await;
            let started = runtime.now();
            let index = {
                let mut records = records.lock().unwrap();
                records.push(CallRecord {
                    kind,
                    started,
                    ended: None,
                    outcome: String::new(),
                });
                records.len() - 1
            };
            let body = format!("call-{n}{}", " ".repeat(padding));
            let call = async {
                let request = match kind {
                    Kind::Get => client.get(&format!("items/{n}")),
                    Kind::Post => client.post(&format!("orders?call={n}")).body(body.clone()),
                    Kind::KeyedPost => client
                        .post(&format!("orders?call={n}"))
                        .body(body.clone())
                        .idempotency_key(&format!("key-{n}")),
                };
                let response = request.send().await?;
                let status = response.status();
                let received = response.bytes().await?;
                Ok::<_, breakwater::Error>((status, received))
            };
            let outcome = match cancel_after {
                Some(after) => {
                    let (rt, observer, probes) = (runtime.clone(), client.clone(), probes.clone());
                    futures_lite::future::or(async { Some(call.await) }, async move {
                        rt.sleep_until(started + after).await;
                        // Looked at before the call is dropped: the drop hands
                        // back whatever the call held, a half-open probe slot included.
                        let half_open = observer
                            .stats()
                            .origins
                            .iter()
                            .any(|o| o.breaker == BreakerStateKind::HalfOpen);
                        if half_open {
                            probes
                                .lock()
                                .unwrap()
                                .insert("call cancelled while half-open");
                        }
                        None
                    })
                    .await
                }
                None => Some(call.await),
            };
            let text = match &outcome {
                None => {
                    probes.lock().unwrap().insert("call cancelled");
                    "cancelled".to_owned()
                }
                Some(Ok((status, received))) => {
                    if *status == 200 {
                        let sent =
                            echo(if kind == Kind::Get { "" } else { &body }, response_padding);
                        if received[..] != *sent.as_bytes() {
                            violations.lock().unwrap().push(format!(
                                "call {n}: a 200's body is not the one sent ({} bytes, {} sent)",
                                received.len(),
                                sent.len()
                            ));
                        }
                        if received.len() > 16 * 1024 {
                            probes.lock().unwrap().insert("long body read");
                        }
                    }
                    format!("status {}", status.as_u16())
                }
                Some(Err(err)) => {
                    let probe = match err.kind() {
                        ErrorKind::CircuitOpen => "circuit open error",
                        ErrorKind::RateLimited => "rate limited error",
                        ErrorKind::PoolExhausted => "pool exhausted error",
                        ErrorKind::Timeout(_) => "timeout error",
                        ErrorKind::Connect => "connect error",
                        ErrorKind::Protocol => "protocol error",
                        _ => "other error",
                    };
                    probes.lock().unwrap().insert(probe);
                    format!("error {:?}", err.kind())
                }
            };
            let mut records = records.lock().unwrap();
            records[index].ended = Some(runtime.now());
            records[index].outcome = text;
            *finished.lock().unwrap() += 1;
        });
    }

    // Wait for the workload, heal, wait out any open breaker, then check liveness.
    let (runtime, heal, done) = (sim.runtime(), healthy.clone(), finished.clone());
    let liveness_client = client.clone();
    let server_for_heal = server.clone();
    let liveness = sim.try_run(async move {
        while *done.lock().unwrap() < CALLS {
            runtime
                .sleep_until(runtime.now() + Duration::from_millis(250))
                .await;
        }
        *heal.lock().unwrap() = true;
        server_for_heal.set_config(ServerConfig {
            idle_timeout: Some(Duration::from_secs(60)),
            ..ServerConfig::default()
        });
        runtime
            .sleep_until(runtime.now() + Duration::from_secs(400))
            .await;
        let mut failures = Vec::new();
        for n in 0..LIVENESS_CALLS {
            match liveness_client.get(&format!("healthy/{n}")).send().await {
                Ok(response) if response.status() == 200 => {
                    let _ = response.bytes().await;
                }
                Ok(response) => {
                    failures.push(format!("liveness call {n}: status {}", response.status()))
                }
                Err(err) => failures.push(format!("liveness call {n}: {err}")),
            }
        }
        // Let every close reach the other side before counting connections.
        runtime
            .sleep_until(runtime.now() + Duration::from_secs(1))
            .await;
        failures
    });
    *stop_monitor.lock().unwrap() = true;

    let mut violations = std::mem::take(&mut *violations.lock().unwrap());
    match liveness {
        Ok(failures) => violations.extend(failures),
        Err(stuck) => violations.push(format!("simulation stuck: {stuck:?}")),
    }

    // 1. Accounting and leaks.
    let stats = client.stats();
    let pool = stats.pool;
    if pool.active != 0
        || pool.connecting != 0
        || pool.waiting != 0
        || stats.in_flight != 0
        || stats.waiting_for_permit != 0
    {
        violations.push(format!(
            "leaked: {pool:?}, in flight {}, waiting {}",
            stats.in_flight, stats.waiting_for_permit
        ));
    }
    if pool.opened != pool.closed + pool.idle as u64 {
        violations.push(format!(
            "accounting drift: opened {} != closed {} + idle {}",
            pool.opened, pool.closed, pool.idle
        ));
    }
    // Every connection the client still holds is one its pool counts idle:
    // none is kept alive anywhere else (a forgotten task, a lost response).
    let held = sim.client_connection_ids();
    if held.len() != pool.idle {
        violations.push(format!(
            "client holds connections {held:?}, its pool counts {} idle",
            pool.idle
        ));
    }
    // The server may already have closed some of the client's idle
    // connections (the client learns that when it next uses them), but it
    // must never hold one the client has let go of.
    let orphaned: Vec<u64> = server
        .open_connection_ids()
        .into_iter()
        .filter(|id| !held.contains(id))
        .collect();
    if !orphaned.is_empty() {
        violations.push(format!(
            "server holds connections {orphaned:?}, which the client let go of"
        ));
    }

    // 3, 4, 6. What the server saw: every head it read, whether or not the
    // body followed, since a POST whose upload broke off may still have
    // been acted on.
    let records = std::mem::take(&mut *records.lock().unwrap());
    let mut receipts: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for request in server.heads() {
        receipts
            .entry(request.target.clone())
            .or_default()
            .push(request.header("idempotency-key").map(str::to_owned));
    }
    let mut keys_seen = BTreeMap::new();
    for (id, keys) in &receipts {
        if keys.len() > 6 {
            violations.push(format!("{id} reached the server {} times", keys.len()));
        }
        match keys.first().cloned().flatten() {
            None if id.starts_with("/orders") && keys.len() > 1 => violations.push(format!(
                "unkeyed POST {id} reached the server {} times",
                keys.len()
            )),
            Some(key) => {
                if keys.iter().any(|k| k.as_deref() != Some(key.as_str())) {
                    violations.push(format!("{id} changed its idempotency key: {keys:?}"));
                }
                if let Some(other) = keys_seen.insert(key.clone(), id.clone()) {
                    violations.push(format!("{id} and {other} share key {key}"));
                }
            }
            None => {}
        }
        if keys.len() > 1 {
            probes.lock().unwrap().insert("request retried");
        }
    }

    if server.heads().len() > server.requests().len() {
        probes.lock().unwrap().insert("upload reset after its head");
    }

    // 5. Deadlines. The body timeout runs from the last read, so a long body
    // on a windowed link may spend a few round trips arriving before it
    // stalls: one window's worth per round trip.
    let transfer = match faults.window {
        Some(window) if faults.response_padding > 0 => {
            let longest = faults.response_padding as u64 + 8 * window;
            faults.rtt * (longest.div_ceil(window) as u32 + 1)
        }
        _ => Duration::ZERO,
    };
    for (n, record) in records.iter().enumerate() {
        match record.ended {
            None => violations.push(format!("call {n} never ended")),
            Some(ended) => {
                let took = ended.saturating_duration_since(record.started);
                if took > TOTAL_TIMEOUT + BODY_TIMEOUT + transfer + Duration::from_millis(1) {
                    violations.push(format!(
                        "call {n} ({:?}) took {took:?}: {}",
                        record.kind, record.outcome
                    ));
                }
            }
        }
    }
    if faults.retry_after_secs.is_some_and(|s| s <= 3)
        && records.iter().any(|r| r.outcome == "status 200")
        && faults.p_429 > 0.0
    {
        probes
            .lock()
            .unwrap()
            .insert("429 with retry-after in play");
    }

    for attempts in sends.lock().unwrap().values() {
        if attempts.windows(2).any(|w| w[0] == w[1]) {
            probes.lock().unwrap().insert("stale connection replaced");
        }
    }

    let outcomes = records
        .iter()
        .map(|r| format!("{:?} {}", r.kind, r.outcome))
        .collect();
    let probes = std::mem::take(&mut *probes.lock().unwrap());
    let report = SwarmReport {
        seed,
        faults,
        violations,
        probes,
        calls: CALLS + LIVENESS_CALLS,
        trace_hash: sim.trace().hash(),
        outcomes,
        tape: sim.tape(),
    };
    (report, sim.trace().lines())
}

#[cfg(test)]
mod tests {
    use super::first_divergence;

    #[test]
    fn the_first_difference_is_found_whatever_its_kind() {
        let a: Vec<String> = ["x", "y", "z"].map(String::from).to_vec();
        assert_eq!(first_divergence(&a, &a), None);
        let b: Vec<String> = ["x", "Y", "z"].map(String::from).to_vec();
        assert_eq!(first_divergence(&a, &b), Some(1));
        assert_eq!(
            first_divergence(&a, &a[..2]),
            Some(2),
            "a run that stops early diverges"
        );
    }
}
