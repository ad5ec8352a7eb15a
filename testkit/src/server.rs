//! Simulated upstreams: handlers that speak real HTTP/1.1 bytes.
//!
//! A server reads requests off its end of a simulated connection, parses
//! them (httparse), asks its handler for a [`Reply`], and writes the reply
//! as HTTP/1.1 bytes — so the client's codec, pool and retries run exactly
//! as they would against a real server. A reply can carry a fault: a reset
//! before or partway through the response, a close before any byte, a
//! stall in the middle of the body.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use breakwater::core::Instant;
use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use crate::executor::Handle;
use crate::net::SimStream;

/// A request as a simulated server received it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The request target: path and query.
    pub target: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// Which connection (per server, from 1) carried it.
    pub connection: u64,
    /// When the server had read it.
    pub received_at: Instant,
}

impl Request {
    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a handler answers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// Headers besides the framing, which the server writes itself.
    pub headers: HeaderMap,
    /// The body, written as these chunks (chunked encoding when there is more than one).
    pub body: Vec<Bytes>,
    /// How long the server takes before answering.
    pub delay: Duration,
    /// A fault to inject instead of (or while) answering.
    pub fault: Option<Fault>,
}

/// Ways a server can misbehave while answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Reset the connection after reading the request, without answering.
    ResetBeforeResponse,
    /// Close the connection after reading the request, without answering.
    CloseBeforeResponse,
    /// Write this many bytes of the response, then reset.
    ResetAfterBytes(u64),
    /// Write the head and half the body, then stop forever (a stalled stream).
    StallMidBody,
    /// Answer with bytes that are not an HTTP response (a status line of
    /// another protocol), then wait for the client to close.
    MalformedHead,
    /// Answer with a chunked body whose trailer section holds a line with no
    /// colon, then send nothing more: the client must fail at once, not wait.
    MalformedTrailer,
}

impl Reply {
    /// A reply with a status and a body.
    pub fn new(status: u16, body: impl Into<Bytes>) -> Self {
        Reply {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers: HeaderMap::new(),
            body: vec![body.into()],
            delay: Duration::ZERO,
            fault: None,
        }
    }

    /// A 200 with a JSON body.
    pub fn json(body: impl Into<Bytes>) -> Self {
        Reply::new(200, body).header("content-type", "application/json")
    }

    /// A redirect: `status` (301, 302, 303, 307, 308) to `location`, with a
    /// short body as servers send.
    pub fn redirect(status: u16, location: &str) -> Self {
        Reply::new(status, "moved").header("location", location)
    }

    /// The body compressed with gzip, and `Content-Encoding: gzip`, as a
    /// server that compresses its answers sends it (whatever the request offered).
    pub fn gzipped(mut self) -> Self {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for piece in &self.body {
            // Writing into a Vec cannot fail.
            let _ = encoder.write_all(piece);
        }
        self.body = vec![Bytes::from(encoder.finish().unwrap_or_default())];
        self.header("content-encoding", "gzip")
    }

    /// Sets a cookie: adds a `Set-Cookie` header with this value.
    pub fn set_cookie(self, cookie: &str) -> Self {
        self.header("set-cookie", cookie)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            self.headers.append(name, value);
        }
        self
    }

    /// Answers after `delay` of server time.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sends the body as these chunks (chunked transfer encoding).
    pub fn chunks(mut self, chunks: Vec<Bytes>) -> Self {
        self.body = chunks;
        self
    }

    /// Injects a fault.
    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }
}

/// What a handler can see besides the request.
pub struct Context<'a> {
    /// The virtual time.
    pub now: Instant,
    /// How many requests this server had served before this one.
    pub hits: usize,
    /// The server's own random stream (its choices are on the run's tape).
    pub choices: &'a mut crate::Choices,
}

pub(crate) type Handler = dyn FnMut(&Request, &mut Context<'_>) -> Reply + Send;

/// How a server treats connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Close a kept-alive connection after this long without a request.
    pub idle_timeout: Option<Duration>,
    /// Refuse new connections (an outage).
    pub refuse_connections: bool,
    /// Accept, but never finish the handshake (connect stalls).
    pub stall_connections: bool,
    /// Accept, then reset each new connection before reading any request.
    pub reset_connections: bool,
    /// What becomes of a request's body once its head is read.
    pub request_bodies: RequestBodies,
}

/// What a server does with request bodies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestBodies {
    /// Read them, and answer.
    #[default]
    Read,
    /// Stop reading after the head, for good (a hung upstream): an upload
    /// fills the link's window, then waits.
    StopAfterHead,
    /// Reset the connection after the head (an upstream refusing uploads).
    ResetAfterHead,
    /// Reset after the head of this share of requests with a body, drawn
    /// from the server's stream (an upstream that drops some uploads).
    SometimesResetAfterHead {
        /// The share, in percent.
        percent: u8,
    },
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            idle_timeout: Some(Duration::from_secs(60)),
            refuse_connections: false,
            stall_connections: false,
            reset_connections: false,
            request_bodies: RequestBodies::Read,
        }
    }
}

/// The shared record of one simulated server.
pub(crate) struct ServerState {
    pub(crate) name: String,
    pub(crate) handler: Mutex<Box<Handler>>,
    pub(crate) config: Mutex<ServerConfig>,
    pub(crate) choices: Mutex<crate::Choices>,
    pub(crate) requests: Mutex<Vec<Request>>,
    /// Every head read, whether or not its body followed.
    pub(crate) heads: Mutex<Vec<Request>>,
    pub(crate) accepted: AtomicU64,
    /// The network-wide ids of the connections this server has not closed.
    pub(crate) open: Mutex<BTreeSet<u64>>,
    pub(crate) hits: AtomicUsize,
}

/// A handle on a simulated server, for assertions and for changing its behaviour mid-run.
#[derive(Clone)]
pub struct ServerHandle {
    pub(crate) state: Arc<ServerState>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("name", &self.state.name)
            .field("accepted", &self.accepted())
            .field("hits", &self.hits())
            .finish()
    }
}

impl ServerHandle {
    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connections open right now (server side).
    pub fn open_connections(&self) -> usize {
        self.state.open.lock().unwrap().len()
    }

    /// The network-wide ids (the trace's `conn=`) of the connections open
    /// right now, server side.
    pub fn open_connection_ids(&self) -> Vec<u64> {
        self.state.open.lock().unwrap().iter().copied().collect()
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Every request head read, in order, whether or not its body followed
    /// (their bodies are empty): what reached the server of requests that
    /// broke off mid-upload too.
    pub fn heads(&self) -> Vec<Request> {
        self.state.heads.lock().unwrap().clone()
    }

    /// Replaces the handler.
    pub fn set_handler(
        &self,
        handler: impl FnMut(&Request, &mut Context<'_>) -> Reply + Send + 'static,
    ) {
        *self.state.handler.lock().unwrap() = Box::new(handler);
    }

    /// Changes how connections are treated (outages, stalls, idle timeout).
    pub fn set_config(&self, config: ServerConfig) {
        *self.state.config.lock().unwrap() = config;
    }

    /// The current connection settings.
    pub fn config(&self) -> ServerConfig {
        *self.state.config.lock().unwrap()
    }
}

impl ServerState {
    pub(crate) fn new(name: String, handler: Box<Handler>, choices: crate::Choices) -> Self {
        ServerState {
            name,
            handler: Mutex::new(handler),
            config: Mutex::new(ServerConfig::default()),
            choices: Mutex::new(choices),
            requests: Mutex::new(Vec::new()),
            heads: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
            open: Mutex::new(Default::default()),
            hits: AtomicUsize::new(0),
        }
    }
}

/// Serves one connection until either side closes it.
pub(crate) async fn serve(
    handle: Handle,
    server: Arc<ServerState>,
    mut stream: SimStream,
    ids: ConnectionIds,
    trace: crate::trace::Trace,
) {
    let ConnectionIds {
        network: id,
        per_server: connection,
    } = ids;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let config = *server.config.lock().unwrap();
        let (idle_timeout, bodies) = (config.idle_timeout, config.request_bodies);
        let reading = Reading {
            idle_timeout,
            bodies,
            connection,
            heads: &server.heads,
            choices: &server.choices,
        };
        let request = read_request(&handle, &mut stream, &mut buf, reading);
        let Some(request) = request.await else {
            break;
        };
        let hits = server.hits.fetch_add(1, Ordering::SeqCst);
        server.requests.lock().unwrap().push(request.clone());
        let reply = {
            let mut choices = server.choices.lock().unwrap();
            let mut handler = server.handler.lock().unwrap();
            let mut ctx = Context {
                now: handle.now(),
                hits,
                choices: &mut choices,
            };
            handler(&request, &mut ctx)
        };
        trace.event(
            handle.now(),
            &server.name,
            &format!(
                "request {} {} conn={} -> {}{}",
                request.method,
                request.target,
                id,
                reply.status.as_u16(),
                reply
                    .fault
                    .map(|f| format!(" fault={f:?}"))
                    .unwrap_or_default()
            ),
        );
        if !reply.delay.is_zero() {
            handle.sleep_until(handle.now() + reply.delay).await;
        }
        let head_request = request.method == Method::HEAD;
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        match reply.fault {
            Some(Fault::ResetBeforeResponse) => {
                stream.reset();
                break;
            }
            Some(Fault::CloseBeforeResponse) => break,
            Some(Fault::ResetAfterBytes(n)) => {
                stream.reset_after(n);
                let _ = stream.write_all(&encode_reply(&reply, head_request)).await;
                break;
            }
            Some(fault @ (Fault::MalformedHead | Fault::MalformedTrailer)) => {
                let _ = stream.write_all(malformed_bytes(fault)).await;
                let mut sink = [0u8; 512];
                while let Ok(1..) = stream.read(&mut sink).await {}
                break;
            }
            Some(Fault::StallMidBody) => {
                let bytes = encode_reply(&reply, head_request);
                let cut = bytes.len() - reply.body.iter().map(Bytes::len).sum::<usize>() / 2;
                let _ = stream.write_all(&bytes[..cut]).await;
                // Stalled: send nothing more, until the client gives up and closes.
                let mut sink = [0u8; 512];
                while let Ok(1..) = stream.read(&mut sink).await {}
                break;
            }
            None => {
                if stream
                    .write_all(&encode_reply(&reply, head_request))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        if close {
            break;
        }
    }
    server.open.lock().unwrap().remove(&id);
    let _ = stream.close().await;
}

/// The two numbers a server connection goes by.
pub(crate) struct ConnectionIds {
    /// Unique across the network: the trace's `conn=` and the live-ends set's.
    pub(crate) network: u64,
    /// From 1 per server: [`Request::connection`].
    pub(crate) per_server: u64,
}

/// How a request is read off a connection.
struct Reading<'a> {
    idle_timeout: Option<Duration>,
    bodies: RequestBodies,
    /// The connection's number, per server.
    connection: u64,
    /// Where each head read is recorded.
    heads: &'a Mutex<Vec<Request>>,
    /// The server's random stream.
    choices: &'a Mutex<crate::Choices>,
}

/// Reads one request; `None` when the connection closed, broke, idled out or sent garbage.
async fn read_request(
    handle: &Handle,
    stream: &mut SimStream,
    buf: &mut BytesMut,
    reading: Reading<'_>,
) -> Option<Request> {
    let Reading {
        idle_timeout,
        bodies,
        connection,
        heads,
        choices,
    } = reading;
    let idle_deadline = idle_timeout.map(|t| handle.now() + t);
    loop {
        let head = match parse_head(buf) {
            Ok(head) => head,
            Err(BadRequest) => return None,
        };
        if let Some(RequestHead {
            len: head_len,
            method,
            target,
            headers,
        }) = head
        {
            let (chunked, length) = body_framing(&headers);
            heads.lock().unwrap().push(Request {
                method: method.clone(),
                target: target.clone(),
                headers: headers.clone(),
                body: Bytes::new(),
                connection,
                received_at: handle.now(),
            });
            if chunked || length > 0 {
                let reset = match bodies {
                    RequestBodies::Read => false,
                    RequestBodies::StopAfterHead => futures_lite::future::pending().await,
                    RequestBodies::ResetAfterHead => true,
                    RequestBodies::SometimesResetAfterHead { percent } => {
                        let share = f64::from(percent) / 100.0;
                        choices.lock().unwrap().chance(share)
                    }
                };
                if reset {
                    stream.reset();
                    return None;
                }
            }
            let body = if chunked {
                let _ = buf.split_to(head_len);
                read_chunked_body(stream, buf).await?
            } else {
                while buf.len() < head_len + length {
                    if !fill(stream, buf).await {
                        return None;
                    }
                }
                let _ = buf.split_to(head_len);
                buf.split_to(length).freeze()
            };
            let received_at = handle.now();
            return Some(Request {
                method,
                target,
                headers,
                body,
                connection,
                received_at,
            });
        }
        let idle = buf.is_empty();
        let read = fill(stream, buf);
        let more = match idle_deadline {
            Some(deadline) if idle => {
                futures_lite::future::or(read, async {
                    handle.sleep_until(deadline).await;
                    false
                })
                .await
            }
            _ => read.await,
        };
        if !more {
            return None;
        }
    }
}

/// Reads a chunked request body; `None` if the connection ends first or the framing is bad.
async fn read_chunked_body(stream: &mut SimStream, buf: &mut BytesMut) -> Option<Bytes> {
    loop {
        match parse_chunked_body(buf) {
            Ok(Some((used, body))) => {
                let _ = buf.split_to(used);
                return Some(body);
            }
            Ok(None) => {
                if !fill(stream, buf).await {
                    return None;
                }
            }
            Err(BadRequest) => return None,
        }
    }
}

/// A request the server cannot read: the connection is dropped.
#[derive(Debug)]
pub(crate) struct BadRequest;

/// A request head, parsed.
pub(crate) struct RequestHead {
    /// Its length in bytes, blank line included.
    pub(crate) len: usize,
    pub(crate) method: Method,
    pub(crate) target: String,
    pub(crate) headers: HeaderMap,
}

/// The request head at the start of `buf`, or `Ok(None)` if it is not all there yet.
///
/// Shared by the simulated servers and the loopback servers of the
/// conformance kit, which read the same requests off different sockets.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<RequestHead>, BadRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BadRequest),
    };
    let method = parsed
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or(BadRequest)?;
    let mut target = parsed.path.ok_or(BadRequest)?.to_owned();
    // A request in absolute form came through a simulated HTTP proxy, which
    // forwards it in origin form and keeps its own credentials, as a real
    // one does.
    let proxied = target.starts_with("http://");
    if proxied {
        let after_scheme = &target["http://".len()..];
        let path = after_scheme
            .find(['/', '?'])
            .map_or("/", |i| &after_scheme[i..]);
        target = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
    }
    let mut map = HeaderMap::new();
    for h in parsed.headers.iter() {
        if proxied && h.name.eq_ignore_ascii_case("proxy-authorization") {
            continue;
        }
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| BadRequest)?;
        map.append(
            name,
            HeaderValue::from_bytes(h.value).map_err(|_| BadRequest)?,
        );
    }
    Ok(Some(RequestHead {
        len,
        method,
        target,
        headers: map,
    }))
}

/// Whether a request's body is chunked, and its length if it is not.
pub(crate) fn body_framing(headers: &HeaderMap) -> (bool, usize) {
    let chunked = headers
        .get(http::header::TRANSFER_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    (chunked, length)
}

/// A chunked body at the start of `buf` (the client sends no extensions and
/// no trailers): the bytes it took and the body, or `Ok(None)` if it is not
/// all there yet.
pub(crate) fn parse_chunked_body(buf: &[u8]) -> Result<Option<(usize, Bytes)>, BadRequest> {
    let mut body = BytesMut::new();
    let mut at = 0;
    loop {
        let Some(line_end) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size = std::str::from_utf8(&buf[at..at + line_end]).map_err(|_| BadRequest)?;
        let size = usize::from_str_radix(size.trim(), 16).map_err(|_| BadRequest)?;
        let data = at + line_end + 2;
        let Some(end) = buf.get(data + size..data + size + 2) else {
            return Ok(None);
        };
        if end != b"\r\n" {
            return Err(BadRequest);
        }
        body.extend_from_slice(&buf[data..data + size]);
        at = data + size + 2;
        if size == 0 {
            return Ok(Some((at, body.freeze())));
        }
    }
}

async fn fill(stream: &mut SimStream, buf: &mut BytesMut) -> bool {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// What a server sends for a malformed-response fault.
pub(crate) fn malformed_bytes(fault: Fault) -> &'static [u8] {
    match fault {
        Fault::MalformedTrailer => {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nnot a field\r\n"
        }
        _ => b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    }
}

/// A reply as HTTP/1.1 bytes: chunked when it has several pieces of body.
pub(crate) fn encode_reply(reply: &Reply, head_request: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + reply.body.iter().map(Bytes::len).sum::<usize>());
    let reason = reply.status.canonical_reason().unwrap_or("Status");
    out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", reply.status.as_u16(), reason).as_bytes());
    for (name, value) in &reply.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let no_body = head_request
        || reply.status == StatusCode::NO_CONTENT
        || reply.status == StatusCode::NOT_MODIFIED;
    if reply.body.len() > 1 {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
        if !no_body {
            for chunk in reply.body.iter().filter(|c| !c.is_empty()) {
                out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
    } else {
        let body = reply.body.first().cloned().unwrap_or_default();
        out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        if !no_body {
            out.extend_from_slice(&body);
        }
    }
    out
}
