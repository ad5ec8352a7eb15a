//! The embedded demo REST API that the tour and the `api_client` example run
//! against: a hyper 1.x server on 127.0.0.1, on its own tokio runtime in a
//! background thread, so that a client on any runtime (tokio, smol, ...) can
//! talk to it. It plays the upstreams a production client meets:
//!
//! | route | behaviour |
//! |---|---|
//! | `GET /users/{1..10}` | a user, JSONPlaceholder style (`/users/1` is Leanne Graham) |
//! | `GET /posts/{1..100}` | a post, after 2–12 ms of simulated work |
//! | `GET /slow?ms=N` | answers after N ms (default 2000) |
//! | `GET /flaky` | 503, 503, then 200, and again |
//! | `GET /limited` | every other call is a 429 with `Retry-After: 1` |
//! | `GET /outage` | down (503) for its first 3 calls, then recovered |
//! | `POST /payments` | records a charge per `Idempotency-Key` and replays it for a repeated key; the first attempt of every payment answers 504 *after* charging, like a gateway that timed out |
//! | `POST /oauth/token` | OAuth 2.0 client credentials; tokens live [`TOKEN_LIFETIME`] (1 s) |
//! | `GET /accounts/{id}` | needs a live bearer token from `/oauth/token`, else 401 |
//! | `GET /events?count=N` | N NDJSON records, streamed in chunks (`x-total-count: N`) |
//!
//! The counters ([`DemoApi::connections`], [`DemoApi::token_fetches`], ...)
//! let the caller show what happened on the server side.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};

/// How long the tokens of `/oauth/token` live, unless
/// [`DemoApi::start_with_token_lifetime`] says otherwise.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(1);
/// The client id and secret `/oauth/token` accepts.
pub const CLIENT_ID: &str = "tour-client";
/// See [`CLIENT_ID`].
pub const CLIENT_SECRET: &str = "tour-secret";

const NAMES: [(&str, &str); 10] = [
    ("Leanne Graham", "Bret"),
    ("Ervin Howell", "Antonette"),
    ("Clementine Bauch", "Samantha"),
    ("Patricia Lebsack", "Karianne"),
    ("Chelsey Dietrich", "Kamren"),
    ("Mrs. Dennis Schulist", "Leopoldo_Corkery"),
    ("Kurtis Weissnat", "Elwyn.Skiles"),
    ("Nicholas Runolfsdottir V", "Maxime_Nienow"),
    ("Glenna Reichert", "Delphine"),
    ("Clementina DuBuque", "Moriah.Stanton"),
];

/// A charge recorded by `POST /payments`.
#[derive(Clone, Debug)]
pub struct Charge {
    /// The charge id, `ch_1`, `ch_2`, ...
    pub id: String,
    /// The Idempotency-Key it was made under, if any.
    pub key: Option<String>,
    /// How many requests carried this key (the original and its retries).
    pub requests: usize,
    /// The request body.
    pub body: String,
}

struct State {
    token_lifetime: Duration,
    accepted: AtomicUsize,
    requests: AtomicUsize,
    flaky: AtomicUsize,
    limited: AtomicUsize,
    outage: AtomicUsize,
    token_fetches: AtomicUsize,
    tokens: Mutex<BTreeMap<String, Instant>>,
    charges: Mutex<Vec<Charge>>,
}

/// The running demo API. Dropping it stops the server.
pub struct DemoApi {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DemoApi {
    /// Starts the server on 127.0.0.1 (any free port) in a background thread.
    pub fn start() -> DemoApi {
        DemoApi::start_with_token_lifetime(TOKEN_LIFETIME)
    }

    /// Starts the server with tokens that live `token_lifetime`.
    pub fn start_with_token_lifetime(token_lifetime: Duration) -> DemoApi {
        let state = Arc::new(State {
            token_lifetime,
            accepted: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            flaky: AtomicUsize::new(0),
            limited: AtomicUsize::new(0),
            outage: AtomicUsize::new(0),
            token_fetches: AtomicUsize::new(0),
            tokens: Mutex::new(BTreeMap::new()),
            charges: Mutex::new(Vec::new()),
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let server_state = state.clone();
        let thread = std::thread::Builder::new()
            .name("demo-api".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for the demo API");
                runtime.block_on(serve(server_state, addr_tx, shutdown_rx));
            })
            .expect("a thread for the demo API");
        let addr = addr_rx.recv().expect("the demo API's address");
        DemoApi {
            addr,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The base URL, with a trailing slash so relative paths join under it.
    pub fn base_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Requests served so far, all routes.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests that reached `/outage`.
    pub fn outage_hits(&self) -> usize {
        self.state.outage.load(Ordering::SeqCst)
    }

    /// Tokens issued by `/oauth/token`.
    pub fn token_fetches(&self) -> usize {
        self.state.token_fetches.load(Ordering::SeqCst)
    }

    /// Charges recorded by `/payments`.
    pub fn charges(&self) -> Vec<Charge> {
        self.state.charges.lock().unwrap().clone()
    }
}

impl Drop for DemoApi {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn serve(
    state: Arc<State>,
    addr_tx: std::sync::mpsc::Sender<SocketAddr>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    addr_tx.send(listener.local_addr().unwrap()).unwrap();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = &mut shutdown => return,
        };
        state.accepted.fetch_add(1, Ordering::SeqCst);
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(io, service)
                .await;
        });
    }
}

async fn route(state: &State, req: Request<Incoming>) -> Response<Body> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().trim_start_matches('/');
    let segments: Vec<&str> = path.split('/').collect();
    match (parts.method.as_str(), segments.as_slice()) {
        ("GET", ["users", id]) => match id.parse::<usize>() {
            Ok(id @ 1..=10) => {
                let (name, username) = NAMES[id - 1];
                json(
                    StatusCode::OK,
                    serde_json::json!({
                        "id": id,
                        "name": name,
                        "username": username,
                        "email": format!("{}@example.com", username.to_lowercase()),
                    }),
                )
            }
            _ => not_found(),
        },
        ("GET", ["posts", id]) => match id.parse::<u64>() {
            Ok(id @ 1..=100) => {
                // Simulated work, so that the latency window has a spread.
                tokio::time::sleep(Duration::from_millis(2 + id * 7 % 11)).await;
                json(
                    StatusCode::OK,
                    serde_json::json!({
                        "id": id,
                        "userId": (id - 1) / 10 + 1,
                        "title": format!("post number {id}"),
                        "body": "quia et suscipit suscipit recusandae",
                    }),
                )
            }
            _ => not_found(),
        },
        ("GET", ["slow"]) => {
            let ms = parts
                .uri
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(2000u64)
                .min(60_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json(StatusCode::OK, serde_json::json!({ "slept_ms": ms }))
        }
        ("GET", ["flaky"]) => {
            let hit = state.flaky.fetch_add(1, Ordering::SeqCst) + 1;
            if hit % 3 == 0 {
                json(
                    StatusCode::OK,
                    serde_json::json!({ "ok": true, "hit": hit }),
                )
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "busy, try again")
            }
        }
        ("GET", ["limited"]) => {
            let hit = state.limited.fetch_add(1, Ordering::SeqCst) + 1;
            if hit % 2 == 1 {
                let mut response = text(StatusCode::TOO_MANY_REQUESTS, "slow down");
                response
                    .headers_mut()
                    .insert("retry-after", http::HeaderValue::from_static("1"));
                response
            } else {
                json(
                    StatusCode::OK,
                    serde_json::json!({ "ok": true, "hit": hit }),
                )
            }
        }
        ("GET", ["outage"]) => {
            let hit = state.outage.fetch_add(1, Ordering::SeqCst) + 1;
            if hit <= 3 {
                text(StatusCode::SERVICE_UNAVAILABLE, "down for maintenance")
            } else {
                json(
                    StatusCode::OK,
                    serde_json::json!({ "ok": true, "hit": hit }),
                )
            }
        }
        ("POST", ["payments"]) => payment(state, &parts.headers, &body),
        ("POST", ["oauth", "token"]) => token(state, &body),
        ("GET", ["accounts", id]) => {
            let bearer = parts
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let live = bearer.is_some_and(|token| {
                state
                    .tokens
                    .lock()
                    .unwrap()
                    .get(token)
                    .is_some_and(|expires| Instant::now() < *expires)
            });
            if live {
                json(
                    StatusCode::OK,
                    serde_json::json!({ "id": id, "balance_cents": 12_500 }),
                )
            } else {
                let mut response = json(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({ "error": "invalid_token" }),
                );
                response.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
                response
            }
        }
        ("GET", ["events"]) => {
            let count = parts
                .uri
                .query()
                .and_then(|q| q.strip_prefix("count="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(100usize)
                .min(100_000);
            Response::builder()
                .status(StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "application/x-ndjson")
                .header("x-total-count", count)
                .body(
                    NdjsonBody {
                        next: 0,
                        total: count,
                        pause: None,
                    }
                    .boxed(),
                )
                .unwrap()
        }
        _ => not_found(),
    }
}

/// `POST /payments`: one charge per Idempotency-Key, whatever the retries.
fn payment(state: &State, headers: &http::HeaderMap, body: &Bytes) -> Response<Body> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut charges = state.charges.lock().unwrap();
    if let Some(key) = &key {
        if let Some(charge) = charges.iter_mut().find(|c| c.key.as_ref() == Some(key)) {
            if charge.body != String::from_utf8_lossy(body) {
                // Stripe's rule: a key reused with another payload is a client bug.
                return json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    serde_json::json!({ "error": "idempotency key reused with another body" }),
                );
            }
            charge.requests += 1;
            let mut response = json(
                StatusCode::CREATED,
                serde_json::json!({ "charge": charge.id, "replayed": true }),
            );
            response.headers_mut().insert(
                "idempotent-replayed",
                http::HeaderValue::from_static("true"),
            );
            return response;
        }
    }
    let id = format!("ch_{}", charges.len() + 1);
    charges.push(Charge {
        id,
        key,
        requests: 1,
        body: String::from_utf8_lossy(body).into_owned(),
    });
    // The charge is made, but the answer is lost on the way back.
    text(StatusCode::GATEWAY_TIMEOUT, "gateway timeout")
}

/// `POST /oauth/token`: the client credentials grant.
fn token(state: &State, body: &Bytes) -> Response<Body> {
    // The demo's values need no percent-decoding.
    let body = String::from_utf8_lossy(body);
    let form: BTreeMap<&str, &str> = body.split('&').filter_map(|p| p.split_once('=')).collect();
    let field = |name: &str| form.get(name).copied();
    if field("grant_type") != Some("client_credentials") {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": "unsupported_grant_type" }),
        );
    }
    if field("client_id") != Some(CLIENT_ID) || field("client_secret") != Some(CLIENT_SECRET) {
        return json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "error": "invalid_client" }),
        );
    }
    let n = state.token_fetches.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("tok-{n}-{:08x}", fastrand::u32(..));
    state
        .tokens
        .lock()
        .unwrap()
        .insert(token.clone(), Instant::now() + state.token_lifetime);
    json(
        StatusCode::OK,
        serde_json::json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": state.token_lifetime.as_secs_f64(),
        }),
    )
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .unwrap()
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(body.as_bytes())).boxed())
        .unwrap()
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "not found")
}

/// NDJSON records, ten per chunk, with a short pause between chunks (a
/// chunked body: its length is not known in advance).
struct NdjsonBody {
    next: usize,
    total: usize,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::body::Body for NdjsonBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.next >= self.total {
            return Poll::Ready(None);
        }
        if let Some(pause) = self.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        let end = (self.next + 10).min(self.total);
        let mut chunk = String::new();
        for seq in self.next..end {
            let kind = ["signup", "login", "purchase", "logout"][seq % 4];
            chunk.push_str(&format!("{{\"seq\":{seq},\"kind\":\"{kind}\"}}\n"));
        }
        self.next = end;
        self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(2))));
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }
}
