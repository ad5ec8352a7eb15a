//! The loopback server: hyper 1.x, HTTP/1.1 with keep-alive, on a
//! current-thread tokio runtime (one worker). It prints `PORT <n>` once it
//! listens, answers `stats` on stdin with `accepted <n>` on stdout (the
//! accepted-connection counter; asking does not open a connection), and
//! exits when stdin closes, so it never outlives the parent.

use std::convert::Infallible;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::workload::{big_body, gzipped, json_mib, list_body, SMALL_BODY};

static ACCEPTED: AtomicU64 = AtomicU64::new(0);

struct Bodies {
    small: Bytes,
    list: Bytes,
    big: Bytes,
    /// [`json_mib`], gzipped once.
    big_gz: Bytes,
}

fn bodies() -> &'static Bodies {
    static BODIES: OnceLock<Bodies> = OnceLock::new();
    BODIES.get_or_init(|| Bodies {
        small: Bytes::from_static(SMALL_BODY),
        list: list_body(),
        big: big_body(),
        big_gz: gzipped(&json_mib()),
    })
}

/// Runs the server until stdin closes.
pub fn run() {
    bodies();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("server runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "PORT {port}").expect("stdout");
            out.flush().expect("stdout");
        }
        std::thread::spawn(control);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            ACCEPTED.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    });
}

/// The control channel on stdin/stdout.
fn control() {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "stats" {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "accepted {}", ACCEPTED.load(Ordering::Relaxed));
            let _ = out.flush();
        }
    }
    std::process::exit(0);
}

fn reply(body: Bytes, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let bodies = bodies();
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/small") => reply(bodies.small.clone(), "application/json"),
        (&Method::GET, "/list") => reply(bodies.list.clone(), "application/json"),
        (&Method::GET, "/big") => reply(bodies.big.clone(), "application/octet-stream"),
        // Every client here offers gzip (hyper-util's is given the header);
        // the body is compressed once, as a static file's would be.
        (&Method::GET, "/big.json.gz") => {
            let mut response = reply(bodies.big_gz.clone(), "application/json");
            response.headers_mut().insert(
                header::CONTENT_ENCODING,
                header::HeaderValue::from_static("gzip"),
            );
            response
        }
        (&Method::POST, "/echo") => match req.into_body().collect().await {
            Ok(body) => reply(body.to_bytes(), "application/octet-stream"),
            Err(_) => status(StatusCode::BAD_REQUEST),
        },
        (&Method::GET, "/stats") => reply(
            Bytes::from(format!(
                "{{\"accepted\":{}}}",
                ACCEPTED.load(Ordering::Relaxed)
            )),
            "application/json",
        ),
        _ => status(StatusCode::NOT_FOUND),
    };
    Ok(response)
}

fn status(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
