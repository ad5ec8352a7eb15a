//! Independent HTTP/1.1 peers for the client's integration tests, on 127.0.0.1,
//! each on its own tokio runtime in a background thread (so that a client
//! under any runtime can be tested against it):
//!
//! - [`TestServer`]: a hyper 1.x server (plain or over tokio-rustls) that
//!   counts the connections it accepts, the connections open right now (and
//!   their peak), and the requests it serves, and records every request.
//!   Handlers answer with full or streamed bodies, optionally after a delay.
//!   A test can tell it to close its idle keep-alive connections, and wait,
//!   blocking, until its open connections satisfy a condition: no timer and
//!   no polling stands in for either.
//! - [`RawServer`]: a hostile peer on a bare TCP socket that answers each
//!   request with canned bytes, for what hyper would never send.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body type handlers answer with: full or streamed.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// What a handler sees of a request, with its body read.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The method.
    pub method: http::Method,
    /// The request target.
    pub uri: http::Uri,
    /// The headers.
    pub headers: http::HeaderMap,
    /// The body, read whole.
    pub body: Bytes,
    /// 1 for the first request the server served.
    pub hit: usize,
}

impl Seen {
    /// A header's value as text, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// A response extension: the server waits this long before answering.
#[derive(Clone, Copy, Debug)]
pub struct Delay(pub Duration);

type Handler = dyn Fn(&Seen) -> Response<Body> + Send + Sync;

/// A running test server. Dropping it stops the server.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// Requests served so far.
    pub hits: Arc<AtomicUsize>,
    /// Connections open right now, as the server sees them.
    open: Arc<OpenConnections>,
    /// Tells every connection to close once it is idle.
    close_idle: tokio::sync::watch::Sender<u64>,
    /// The most connections that were ever open at once.
    pub peak_open: Arc<AtomicUsize>,
    /// Every request served, in order.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    tls: bool,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The count of open connections, with a signal for each change.
#[derive(Default)]
struct OpenConnections {
    count: Mutex<usize>,
    changed: Condvar,
}

impl OpenConnections {
    /// Counts one more; returns the new count.
    fn opened(&self) -> usize {
        let mut count = self.count.lock().unwrap();
        *count += 1;
        self.changed.notify_all();
        *count
    }

    fn closed(&self) {
        *self.count.lock().unwrap() -= 1;
        self.changed.notify_all();
    }

    fn count(&self) -> usize {
        *self.count.lock().unwrap()
    }
}

/// Server options.
#[derive(Clone, Default)]
pub struct Options {
    /// Serve HTTPS with this configuration.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

/// Runs `serve` on a fresh current-thread tokio runtime in a background
/// thread until the returned sender is dropped or fired.
fn spawn_server<F, Fut>(
    serve: F,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
)
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            tokio::select! {
                _ = serve(listener) => {}
                _ = shutdown_rx => {}
            }
        });
    });
    (addr_rx.recv().unwrap(), shutdown, thread)
}

/// Decrements a gauge when dropped, however the connection's task ends.
struct OpenGuard(Arc<OpenConnections>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.closed();
    }
}

impl TestServer {
    /// A plain-HTTP server on 127.0.0.1 that answers with `handler`.
    pub fn start(handler: impl Fn(&Seen) -> Response<Body> + Send + Sync + 'static) -> Self {
        Self::start_with(Options::default(), handler)
    }

    /// A server with `options` (TLS, delays) that answers with `handler`.
    pub fn start_with(
        options: Options,
        handler: impl Fn(&Seen) -> Response<Body> + Send + Sync + 'static,
    ) -> Self {
        let handler: Arc<Handler> = Arc::new(handler);
        let accepted = Arc::new(AtomicUsize::new(0));
        let hits = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(OpenConnections::default());
        let peak_open = Arc::new(AtomicUsize::new(0));
        let (close_idle, close_idle_rx) = tokio::sync::watch::channel(0u64);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tls = options.tls.is_some();
        let (acc, hit, opn, peak, sn) = (
            accepted.clone(),
            hits.clone(),
            open.clone(),
            peak_open.clone(),
            seen.clone(),
        );
        let (addr, shutdown, thread) = spawn_server(move |listener| async move {
            let acceptor = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
            while let Ok((stream, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                let now_open = opn.opened();
                peak.fetch_max(now_open, Ordering::SeqCst);
                let guard = OpenGuard(opn.clone());
                let (handler, hit, sn, acceptor) =
                    (handler.clone(), hit.clone(), sn.clone(), acceptor.clone());
                // Only a close asked for after this connection was accepted.
                let mut close_idle = close_idle_rx.clone();
                close_idle.borrow_and_update();
                tokio::spawn(async move {
                    let _guard = guard;
                    match acceptor {
                        // A refused handshake is the point of several tests: drop it.
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve_http(stream, close_idle, handler, hit, sn).await;
                            }
                        }
                        None => serve_http(stream, close_idle, handler, hit, sn).await,
                    }
                });
            }
        });
        TestServer {
            addr,
            accepted,
            hits,
            open,
            close_idle,
            peak_open,
            seen,
            tls,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The URL of `path` on this server (`https://localhost:…` when it serves TLS).
    pub fn url(&self, path: &str) -> String {
        if self.tls {
            format!("https://localhost:{}{}", self.addr.port(), path)
        } else {
            format!("http://{}{}", self.addr, path)
        }
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections open right now.
    pub fn open(&self) -> usize {
        self.open.count()
    }

    /// Closes every keep-alive connection that is idle now, and each busy
    /// one once its response is sent.
    pub fn close_idle_connections(&self) {
        self.close_idle.send_modify(|n| *n += 1);
    }

    /// Blocks the calling thread (its runtime does not run meanwhile) until
    /// the open-connection count satisfies `condition`, checked again at each
    /// change of the count. Panics after 10 s.
    pub fn wait_until_open(&self, what: &str, condition: impl Fn(usize) -> bool) {
        let limit = std::time::Instant::now() + Duration::from_secs(10);
        let mut count = self.open.count.lock().unwrap();
        while !condition(*count) {
            let left = limit.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "gave up waiting for: {what}");
            count = self.open.changed.wait_timeout(count, left).unwrap().0;
        }
    }

    /// The most connections open at once so far.
    pub fn peak_open(&self) -> usize {
        self.peak_open.load(Ordering::SeqCst)
    }

    /// Every request served, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve_http<I>(
    io: I,
    mut close_idle: tokio::sync::watch::Receiver<u64>,
    handler: Arc<Handler>,
    hit: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (handler, hit, seen) = (handler.clone(), hit.clone(), seen.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let n = hit.fetch_add(1, Ordering::SeqCst) + 1;
            let request = Seen {
                method: parts.method,
                uri: parts.uri,
                headers: parts.headers,
                body,
                hit: n,
            };
            seen.lock().unwrap().push(request.clone());
            let response = handler(&request);
            if let Some(Delay(delay)) = response.extensions().get::<Delay>().copied() {
                tokio::time::sleep(delay).await;
            }
            Ok::<_, Infallible>(response)
        }
    });
    let io = hyper_util::rt::TokioIo::new(io);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = close_idle.changed() => {}
    }
    // An idle connection ends at once; a busy one after its response.
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Responses

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).map_err(|e| match e {}).boxed()
}

/// A response with a status and a body.
pub fn respond(status: u16, body: &str) -> Response<Body> {
    respond_with(status, &[("content-type", "application/json")], body)
}

/// A response with a status, extra headers and a body.
pub fn respond_with(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Body> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(full(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap()
}

/// A 200 response with a `Content-Length` body of these bytes.
pub fn respond_bytes(body: Bytes) -> Response<Body> {
    Response::builder().status(200).body(full(body)).unwrap()
}

/// A response answered only after `delay`.
pub fn delayed(mut response: Response<Body>, delay: Duration) -> Response<Body> {
    response.extensions_mut().insert(Delay(delay));
    response
}

/// A chunked 200 response sending `frames` one by one, `gap` apart (each
/// frame is flushed on its own, so they reach the client as separate reads).
pub fn chunked(frames: Vec<Bytes>, gap: Duration) -> Response<Body> {
    let stream = futures_lite::stream::unfold(
        (frames.into_iter(), true),
        move |(mut frames, first)| async move {
            let frame = frames.next()?;
            if !first && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            Some((Ok(Frame::data(frame)), (frames, false)))
        },
    );
    Response::builder()
        .status(200)
        .body(StreamBody::new(stream).boxed())
        .unwrap()
}

/// A 200 response with a `Content-Length` of all `frames` together, sent
/// frame by frame, `gap` apart.
pub fn streamed_with_length(frames: Vec<Bytes>, gap: Duration) -> Response<Body> {
    let length: usize = frames.iter().map(Bytes::len).sum();
    let mut response = chunked(frames, gap);
    response
        .headers_mut()
        .insert("content-length", length.to_string().parse().unwrap());
    response
}

/// A chunked 200 response of `total` bytes in frames of `frame` bytes,
/// produced as it is sent (the server never holds the whole body either).
pub fn big_chunked(total: usize, frame: usize) -> Response<Body> {
    let piece = Bytes::from(vec![b'x'; frame]);
    let stream = futures_lite::stream::unfold(0usize, move |sent| {
        let piece = piece.clone();
        async move {
            if sent >= total {
                return None;
            }
            let n = frame.min(total - sent);
            Some((Ok(Frame::data(piece.slice(..n))), sent + n))
        }
    });
    Response::builder()
        .status(200)
        .body(StreamBody::new(stream).boxed())
        .unwrap()
}

// ---------------------------------------------------------------------------
// The hostile server

/// How the raw server answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Write these bytes and keep the connection open for the next request.
    Write(Vec<u8>),
    /// Write these bytes, then close the connection.
    WriteThenClose(Vec<u8>),
    /// Reset the connection (RST) once the head is read, without reading the body.
    ResetBeforeBody,
}

/// A request as the raw server read it: recorded, and its reply chosen,
/// once its head is read, before its body arrives.
#[derive(Clone, Debug)]
pub struct RawRequest {
    /// The request head, as text.
    pub head: String,
    /// 1 for the first request the server read.
    pub hit: usize,
    /// 1 for the first connection the server accepted.
    pub connection: usize,
}

impl RawRequest {
    /// The request target of the request line.
    pub fn path(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }
}

type Script = dyn Fn(&RawRequest) -> Reply + Send + Sync;

/// A bare TCP server that answers each request with whatever its script says.
pub struct RawServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// Every request read, in order.
    pub requests: Arc<Mutex<Vec<RawRequest>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RawServer {
    /// A raw server on 127.0.0.1 that answers each request with what `script` says.
    pub fn start(script: impl Fn(&RawRequest) -> Reply + Send + Sync + 'static) -> Self {
        let script: Arc<Script> = Arc::new(script);
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (acc, reqs) = (accepted.clone(), requests.clone());
        let (addr, shutdown, thread) = spawn_server(move |listener| async move {
            while let Ok((stream, _)) = listener.accept().await {
                let connection = acc.fetch_add(1, Ordering::SeqCst) + 1;
                let (script, reqs) = (script.clone(), reqs.clone());
                tokio::spawn(async move {
                    let _ = serve_raw(stream, connection, script, reqs).await;
                });
            }
        });
        RawServer {
            addr,
            accepted,
            requests,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Every request read, in order.
    pub fn requests(&self) -> Vec<RawRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve_raw(
    mut stream: tokio::net::TcpStream,
    connection: usize,
    script: Arc<Script>,
    requests: Arc<Mutex<Vec<RawRequest>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        // Read one request head, then its Content-Length body.
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let body_len = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let request = {
            let mut requests = requests.lock().unwrap();
            let request = RawRequest {
                head,
                hit: requests.len() + 1,
                connection,
            };
            requests.push(request.clone());
            request
        };
        let (bytes, close) = match script(&request) {
            Reply::ResetBeforeBody => {
                // SO_LINGER 0: closing sends RST instead of FIN.
                socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO))?;
                return Ok(());
            }
            Reply::Write(bytes) => (bytes, false),
            Reply::WriteThenClose(bytes) => (bytes, true),
        };
        while buf.len() < head_end + body_len {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..head_end + body_len);
        stream.write_all(&bytes).await?;
        stream.flush().await?;
        if close {
            return Ok(());
        }
    }
}
