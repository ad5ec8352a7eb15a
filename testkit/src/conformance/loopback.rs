//! The simulated servers' handlers, served on real sockets.
//!
//! A [`LoopbackServer`] listens on 127.0.0.1 and serves each connection on a
//! plain thread with blocking reads and writes, so that it shares nothing
//! with the runtime under test: not its executor, not its reactor, not its
//! timers. It reads requests with the same parser as the simulated servers,
//! asks the same kind of handler for a [`Reply`], and writes the same bytes,
//! faults included; its [`ServerHandle`] counts the same things. A reply's
//! delay is a real sleep of the server's thread, so the conformance
//! scenarios keep delays to a few milliseconds.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use breakwater::core::Instant;
use bytes::{Buf, Bytes, BytesMut};
use http::Method;

use crate::server::{
    body_framing, encode_reply, malformed_bytes, parse_chunked_body, parse_head, Context, Fault,
    Handler, Reply, Request, RequestHead, ServerHandle, ServerState,
};
use crate::Choices;

/// A server on 127.0.0.1 that answers with a handler; stops when dropped.
pub(crate) struct LoopbackServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl LoopbackServer {
    /// Listens on a free port of 127.0.0.1 and serves with `handler`.
    pub(crate) fn start(handler: Box<Handler>, seed: u64) -> io::Result<(Self, ServerHandle)> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ServerState::new(
            addr.to_string(),
            handler,
            Choices::seeded(seed),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = std::time::Instant::now();
        let (accepting, stopping) = (state.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("loopback {addr}"))
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let id = accepting.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                    accepting.open.lock().unwrap().insert(id);
                    let state = accepting.clone();
                    let _ = std::thread::Builder::new()
                        .name(format!("loopback {addr} #{id}"))
                        .spawn(move || {
                            let _ = serve(&state, stream, id, epoch);
                            state.open.lock().unwrap().remove(&id);
                        });
                }
            })?;
        let handle = ServerHandle { state };
        Ok((LoopbackServer { addr, stop }, handle))
    }

    /// The server's base URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Serves one connection until either side closes it, or a fault ends it.
fn serve(
    state: &ServerState,
    mut stream: TcpStream,
    connection: u64,
    epoch: std::time::Instant,
) -> io::Result<()> {
    let now = || Instant::from_nanos(u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX));
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        let idle_timeout = state.config.lock().unwrap().idle_timeout;
        let head = loop {
            match parse_head(&buf) {
                Ok(Some(head)) => break head,
                Ok(None) => {
                    // A kept-alive connection idle for too long is closed, as servers do.
                    stream.set_read_timeout(if buf.is_empty() { idle_timeout } else { None })?;
                    if !fill(&mut stream, &mut buf)? {
                        return Ok(());
                    }
                }
                Err(_) => return Ok(()),
            }
        };
        let RequestHead {
            len,
            method,
            target,
            headers,
        } = head;
        state.heads.lock().unwrap().push(Request {
            method: method.clone(),
            target: target.clone(),
            headers: headers.clone(),
            body: Bytes::new(),
            connection,
            received_at: now(),
        });
        buf.advance(len);
        let body = read_body(&mut stream, &mut buf, &headers)?;
        let Some(body) = body else { return Ok(()) };
        let request = Request {
            method,
            target,
            headers,
            body,
            connection,
            received_at: now(),
        };
        let hits = state.hits.fetch_add(1, Ordering::SeqCst);
        state.requests.lock().unwrap().push(request.clone());
        let reply: Reply = {
            let mut choices = state.choices.lock().unwrap();
            let mut handler = state.handler.lock().unwrap();
            handler(
                &request,
                &mut Context {
                    now: now(),
                    hits,
                    choices: &mut choices,
                },
            )
        };
        if !reply.delay.is_zero() {
            std::thread::sleep(reply.delay);
        }
        let bytes = encode_reply(&reply, request.method == Method::HEAD);
        match reply.fault {
            Some(Fault::ResetBeforeResponse) => return reset(stream),
            Some(Fault::CloseBeforeResponse) => return Ok(()),
            Some(Fault::ResetAfterBytes(n)) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX).min(bytes.len());
                stream.write_all(&bytes[..n])?;
                return reset(stream);
            }
            Some(fault @ (Fault::MalformedHead | Fault::MalformedTrailer)) => {
                stream.write_all(malformed_bytes(fault))?;
                stream.set_read_timeout(None)?;
                let mut sink = [0u8; 512];
                while let Ok(1..) = stream.read(&mut sink) {}
                return Ok(());
            }
            Some(Fault::StallMidBody) => {
                let body: usize = reply.body.iter().map(Bytes::len).sum();
                stream.write_all(&bytes[..bytes.len() - body / 2])?;
                // Stalled: nothing more, until the client gives up and closes.
                stream.set_read_timeout(None)?;
                let mut sink = [0u8; 512];
                while let Ok(1..) = stream.read(&mut sink) {}
                return Ok(());
            }
            None => stream.write_all(&bytes)?,
        }
        if request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            stream.shutdown(Shutdown::Both)?;
            return Ok(());
        }
    }
}

/// Reads the body the head announced; `None` if the connection ended first.
fn read_body(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    headers: &http::HeaderMap,
) -> io::Result<Option<Bytes>> {
    let (chunked, length) = body_framing(headers);
    if chunked {
        loop {
            match parse_chunked_body(buf) {
                Ok(Some((used, body))) => {
                    buf.advance(used);
                    return Ok(Some(body));
                }
                Ok(None) if fill(stream, buf)? => {}
                _ => return Ok(None),
            }
        }
    }
    while buf.len() < length {
        if !fill(stream, buf)? {
            return Ok(None);
        }
    }
    Ok(Some(buf.split_to(length).freeze()))
}

/// Reads more bytes; `false` at the end of the stream or an idle timeout.
fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk) {
        Ok(0) => Ok(false),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(false),
        Err(e) => Err(e),
    }
}

/// Closes with a reset (RST), not an orderly FIN.
fn reset(stream: TcpStream) -> io::Result<()> {
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
    drop(stream);
    Ok(())
}
