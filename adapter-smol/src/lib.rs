//! Breakwater on async-io, under any executor.
//!
//! Breakwater is layered: `breakwater-core` makes every decision without
//! touching I/O, `breakwater` drives it and owns the public `Client`, and a
//! runtime adapter supplies the little I/O the driver asks for through
//! [`breakwater::runtime::Runtime`]. This crate is that adapter for the smol
//! ecosystem: [`SmolRuntime`] resolves names with async-net (on the blocking
//! thread pool, so DNS never stalls an executor), connects async-io TCP
//! streams with `TCP_NODELAY` (whose first read after a request asks the
//! reactor rather than an empty socket), performs the TLS handshake with futures-rustls
//! using the client's [`TlsConfig`](breakwater::tls::TlsConfig), and sleeps on async-io timers. It holds
//! no policy — no retries, no pooling, no timeouts of its own — those belong
//! to the client and the core.
//!
//! async-io drives its own reactor, so the runtime works under any executor:
//! `smol::block_on`, a multi-threaded `async_executor::Executor`, plain
//! `futures_lite::future::block_on`, or async-std. Nothing here depends on
//! tokio.
//!
//! A smol program using the client (here against a one-response server on
//! a thread, so the example runs anywhere):
//!
//! ```
//! use std::io::{Read, Write};
//!
//! #[derive(serde::Deserialize)]
//! struct User {
//!     name: String,
//! }
//!
//! let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let base = format!("http://{}/", listener.local_addr().unwrap());
//! std::thread::spawn(move || {
//!     let (mut socket, _) = listener.accept().unwrap();
//!     let mut request = [0u8; 1024];
//!     let _ = socket.read(&mut request).unwrap();
//!     let body = r#"{"name":"Leanne Graham"}"#;
//!     write!(socket, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).unwrap();
//! });
//!
//! smol::block_on(async {
//!     let client = breakwater_smol::client(base).build()?;
//!     let user: User = client.get_json("users/1").await?;
//!     assert_eq!(user.name, "Leanne Graham");
//!     Ok::<(), breakwater::Error>(())
//! })
//! .unwrap();
//! ```
//!
//! The runtime alone, on the simplest executor there is:
//!
//! ```
//! use breakwater::core::{Origin, Scheme};
//! use breakwater::runtime::{ConnectTarget, Runtime};
//! use breakwater_smol::SmolRuntime;
//!
//! let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let port = listener.local_addr().unwrap().port();
//!
//! let runtime = SmolRuntime::new();
//! let target = ConnectTarget::new(Origin::new(Scheme::Http, "127.0.0.1", port), None);
//! let transport = futures_lite::future::block_on(runtime.connect(target)).unwrap();
//! assert_eq!(transport.info().peer_addr, Some(listener.local_addr().unwrap()));
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use async_io::{Async, Timer};
use breakwater::core::Instant;
use breakwater::runtime::{
    dial, BoxFuture, BoxTransport, ConnectError, ConnectTarget, Dialer, Runtime, Transport,
    TransportInfo,
};
use futures_io::{AsyncRead, AsyncWrite};
use futures_rustls::pki_types::ServerName;

pub use breakwater;

/// Starts building a [`breakwater::Client`] for `base_url` on smol.
///
/// The one-liner for the common case; use [`breakwater::Client::builder`]
/// with a [`SmolRuntime`] to share one runtime value between clients.
pub fn client(base_url: impl Into<String>) -> breakwater::ClientBuilder {
    breakwater::Client::builder(std::sync::Arc::new(SmolRuntime::new()), base_url)
}

/// The [`Runtime`] for async-io: async-net sockets and DNS, async-io timers,
/// futures-rustls TLS. Works under any executor.
#[derive(Clone, Copy, Debug)]
pub struct SmolRuntime {
    /// The epoch of this runtime's [`Instant`]s.
    base: std::time::Instant,
}

impl SmolRuntime {
    /// A runtime whose clock starts now.
    pub fn new() -> Self {
        SmolRuntime {
            base: std::time::Instant::now(),
        }
    }
}

impl Default for SmolRuntime {
    fn default() -> Self {
        SmolRuntime::new()
    }
}

impl Runtime for SmolRuntime {
    fn connect(
        &self,
        target: ConnectTarget,
    ) -> BoxFuture<'static, Result<BoxTransport, ConnectError>> {
        let this = *self;
        Box::pin(async move { dial(&Sockets(this), target).await })
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        let at = self
            .base
            .checked_add(Duration::from_nanos(deadline.as_nanos()));
        // Past the end of the platform's clock (centuries away): never wake.
        let timer = at.map_or_else(Timer::never, Timer::at);
        Box::pin(async move {
            timer.await;
        })
    }

    fn now(&self) -> Instant {
        let nanos = self.base.elapsed().as_nanos();
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn wall_clock(&self) -> SystemTime {
        SystemTime::now()
    }

    fn random_seed(&self) -> u64 {
        fastrand::u64(..)
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        // Calls run on whatever executor awaits them; the client's own
        // background tasks (housekeeping, token refreshes) run on one thread
        // for the whole process, started on first use, which drives
        // async-io's reactor while it waits. If that thread cannot start,
        // the task is dropped and the client does the work on its next call.
        static BACKGROUND: async_executor::Executor<'static> = async_executor::Executor::new();
        static STARTED: OnceLock<bool> = OnceLock::new();
        let started = *STARTED.get_or_init(|| {
            std::thread::Builder::new()
                .name("breakwater-background".into())
                .spawn(|| async_io::block_on(BACKGROUND.run(std::future::pending::<()>())))
                .is_ok()
        });
        if started {
            BACKGROUND.spawn(task).detach();
        }
    }
}

/// The runtime's sockets, resolver and TLS, as the client's [`dial`] uses them.
struct Sockets(SmolRuntime);

impl Dialer for Sockets {
    type Tcp = ReplyAwareTcp;
    type Tls = futures_rustls::client::TlsStream<ReplyAwareTcp>;

    fn now(&self) -> Instant {
        self.0.now()
    }

    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        async_net::resolve((host, port)).await
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<ReplyAwareTcp> {
        let stream = Async::<TcpStream>::connect(addr).await?;
        stream.get_ref().set_nodelay(true)?;
        Ok(ReplyAwareTcp {
            io: stream,
            wrote: false,
            read_since_wait: false,
        })
    }

    fn peer_addr(tcp: &ReplyAwareTcp) -> Option<SocketAddr> {
        tcp.io.get_ref().peer_addr().ok()
    }

    async fn handshake(
        &self,
        config: Arc<futures_rustls::rustls::ClientConfig>,
        name: ServerName<'static>,
        tcp: ReplyAwareTcp,
    ) -> io::Result<Self::Tls> {
        futures_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    }

    async fn write_all(&self, tcp: &mut ReplyAwareTcp, bytes: &[u8]) -> io::Result<()> {
        breakwater::runtime::write_all_to(tcp, bytes).await
    }

    async fn read(&self, tcp: &mut ReplyAwareTcp, buf: &mut [u8]) -> io::Result<usize> {
        breakwater::runtime::read_from(tcp, buf).await
    }

    fn plain(tcp: ReplyAwareTcp, info: TransportInfo) -> BoxTransport {
        Box::new(Conn { io: tcp, info })
    }

    fn secure(tls: Self::Tls, info: TransportInfo) -> BoxTransport {
        Box::new(Conn { io: tls, info })
    }
}

/// A TCP stream that asks the socket only when there can be something to read.
///
/// async-io's reads try the socket first and ask the reactor only once it is
/// empty. Two of those reads find nothing on every request: the first read
/// after the request is written (the server has not answered yet), and the
/// second try of an empty socket, which async-io makes because the reactor
/// still holds the readiness event the last successful read already used
/// up. That was 2 of the 3 `recvfrom` calls per request at 64 concurrent
/// calls (`perf stat`). This stream skips the first and discards the stale
/// event instead of acting on it.
///
/// Every other read tries the socket first, as async-io's do, and so does
/// every poll after a wake-up. Two things depend on that:
/// - The liveness check of an idle connection must see a close that has
///   reached the socket even if no reactor has run since.
/// - A registration made while another thread waits in `epoll_wait` has that
///   wait's event ignored by `poll_readable` (async-io compares reactor
///   ticks), and only a real read notices the bytes it announced.
///
/// One gap is known: a write TLS makes by itself while reading (the answer
/// to a peer's key update) also counts as a write, so the liveness check
/// that follows asks the reactor rather than the socket. It is rare, and the
/// reactor reports a close it has seen.
struct ReplyAwareTcp {
    io: Async<TcpStream>,
    /// A write has completed since the last read.
    wrote: bool,
    /// A read has returned since this stream last registered interest, so
    /// any readiness the reactor recorded before it is used up.
    read_since_wait: bool,
}

impl ReplyAwareTcp {
    /// Registers interest in readability, or reports an event recorded since
    /// the last registration that no read has used up yet.
    fn poll_news(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if std::mem::take(&mut self.read_since_wait) {
            match self.io.poll_readable(cx) {
                // Cleared. Usually stale; rarely an event that a registration
                // left armed by a read on a spurious wake-up fired. Either way
                // the call below re-arms interest, which is level-checked, so
                // bytes waiting now are reported again.
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        self.io.poll_readable(cx)
    }
}

impl AsyncRead for ReplyAwareTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if std::mem::take(&mut this.wrote) {
            // Pending: interest is armed and this task will be woken. Ready:
            // an event is already recorded. Either way a real read comes next.
            ready!(this.poll_news(cx))?;
        }
        loop {
            match this.io.get_ref().read(buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => ready!(this.poll_news(cx))?,
                result => {
                    this.read_since_wait = true;
                    return Poll::Ready(result);
                }
            }
        }
    }
}

impl AsyncWrite for ReplyAwareTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote |= matches!(written, Poll::Ready(Ok(n)) if n > 0);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote |= matches!(written, Poll::Ready(Ok(n)) if n > 0);
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}

/// A connected stream and the facts recorded while opening it.
struct Conn<S> {
    io: S,
    info: TransportInfo,
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for Conn<S> {
    fn info(&self) -> TransportInfo {
        self.info.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}
