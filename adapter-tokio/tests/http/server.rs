//! An independent HTTP/1.1 peer for the client's integration tests: a hyper 1.x
//! server on 127.0.0.1, on its own tokio runtime in a background thread (so
//! that a client under any runtime can be tested against it), counting the
//! connections it accepts and the requests it serves.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

/// What a handler sees of a request, with its body read.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// 1 for the first request the server served.
    pub hit: usize,
}

type Handler = dyn Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync;

/// A running test server. Dropping it stops the server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    pub hits: Arc<AtomicUsize>,
    pub open: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Server options.
#[derive(Clone, Copy, Default)]
pub struct Options {
    /// Close idle keep-alive connections after this long (shorter than the client's).
    pub idle_close_after: Option<Duration>,
}

impl TestServer {
    pub fn start(handler: impl Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync + 'static) -> Self {
        Self::start_with(Options::default(), handler)
    }

    pub fn start_with(
        options: Options,
        handler: impl Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> Self {
        let handler: Arc<Handler> = Arc::new(handler);
        let accepted = Arc::new(AtomicUsize::new(0));
        let hits = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown, mut shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let (acc, hit, opn, sn) = (accepted.clone(), hits.clone(), open.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let (stream, _) = tokio::select! {
                        accepted = listener.accept() => accepted.unwrap(),
                        _ = &mut shutdown_rx => return,
                    };
                    acc.fetch_add(1, Ordering::SeqCst);
                    opn.fetch_add(1, Ordering::SeqCst);
                    let (handler, hit, opn, sn) =
                        (handler.clone(), hit.clone(), opn.clone(), sn.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let (handler, hit, sn) = (handler.clone(), hit.clone(), sn.clone());
                            async move {
                                use http_body_util::BodyExt;
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let n = hit.fetch_add(1, Ordering::SeqCst) + 1;
                                let seen = Seen {
                                    method: parts.method,
                                    uri: parts.uri,
                                    headers: parts.headers,
                                    body,
                                    hit: n,
                                };
                                sn.lock().unwrap().push(seen.clone());
                                Ok::<_, Infallible>(handler(&seen))
                            }
                        });
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let mut builder = hyper::server::conn::http1::Builder::new();
                        builder.keep_alive(true);
                        if let Some(idle) = options.idle_close_after {
                            builder.timer(hyper_util::rt::TokioTimer::new());
                            builder.header_read_timeout(idle);
                        }
                        let _ = builder.serve_connection(io, service).await;
                        opn.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            });
        });
        let addr = addr_rx.recv().unwrap();
        TestServer {
            addr,
            accepted,
            hits,
            open,
            seen,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
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

/// A response with a status and a body.
pub fn respond(status: u16, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap()
}
