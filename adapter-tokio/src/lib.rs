//! Breakwater on tokio: sockets, DNS, timers and rustls TLS.
//!
//! Breakwater is layered: `breakwater-core` makes every decision without
//! touching I/O, `breakwater` drives it and owns the public `Client`, and a
//! runtime adapter supplies the little I/O the driver asks for through
//! [`breakwater::runtime::Runtime`]. This crate is that adapter for tokio:
//! [`TokioRuntime`] resolves names with `tokio::net::lookup_host`, connects
//! `tokio::net::TcpStream`s with `TCP_NODELAY` (and peeks at the socket
//! itself when the client checks an idle one before reuse), performs the TLS handshake
//! with tokio-rustls using the client's [`TlsConfig`](breakwater::tls::TlsConfig), and sleeps on tokio's
//! timers. It holds no policy — no retries, no pooling, no timeouts of its
//! own — those belong to the client and the core.
//!
//! The runtime's futures use the tokio runtime that polls them, so construct
//! it anywhere and use it from inside tokio. The clock is tokio's: under a
//! paused test clock (`#[tokio::test(start_paused = true)]`) [`now`] and
//! [`sleep_until`] advance together, so a client under test sees
//! consistent time.
//!
//! [`now`]: breakwater::runtime::Runtime::now
//! [`sleep_until`]: breakwater::runtime::Runtime::sleep_until
//!
//! ```
//! use breakwater::core::{Origin, Scheme};
//! use breakwater::runtime::{ConnectTarget, Runtime};
//! use breakwater_tokio::TokioRuntime;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let port = listener.local_addr()?.port();
//!
//! let runtime = TokioRuntime::new();
//! let started = runtime.now();
//! let target = ConnectTarget::new(Origin::new(Scheme::Http, "127.0.0.1", port), None);
//! let transport = runtime.connect(target).await?;
//! assert_eq!(transport.info().peer_addr, Some(listener.local_addr()?));
//! assert!(runtime.now() >= started);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

// The README's Rust snippets compile as doctests of this crate, which has
// every crate they use among its dependencies.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeSnippets;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use breakwater::core::Instant;
use breakwater::runtime::{
    dial, BoxFuture, BoxTransport, ConnectError, ConnectTarget, Dialer, Runtime, Transport,
    TransportInfo,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;

pub use breakwater;

/// Starts building a [`breakwater::Client`] for `base_url` on tokio.
///
/// The one-liner for the common case; use [`breakwater::Client::builder`]
/// with a [`TokioRuntime`] to share one runtime value between clients.
pub fn client(base_url: impl Into<String>) -> breakwater::ClientBuilder {
    breakwater::Client::builder(std::sync::Arc::new(TokioRuntime::new()), base_url)
}

/// The [`Runtime`] for tokio: tokio sockets, DNS and timers, tokio-rustls TLS.
#[derive(Clone, Copy, Debug)]
pub struct TokioRuntime {
    /// The epoch of this runtime's [`Instant`]s.
    base: tokio::time::Instant,
}

impl TokioRuntime {
    /// A runtime whose clock starts now; its futures run on whichever tokio
    /// runtime polls them.
    pub fn new() -> Self {
        TokioRuntime {
            base: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioRuntime {
    fn default() -> Self {
        TokioRuntime::new()
    }
}

impl Runtime for TokioRuntime {
    fn connect(
        &self,
        target: ConnectTarget,
    ) -> BoxFuture<'static, Result<BoxTransport, ConnectError>> {
        let this = *self;
        Box::pin(async move { dial(&Sockets(this), target).await })
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        // `None` only past the end of tokio's clock (centuries away): never wake.
        let at = self
            .base
            .checked_add(Duration::from_nanos(deadline.as_nanos()));
        // The timer is created on first poll, inside the runtime that polls it.
        Box::pin(async move {
            match at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        })
    }

    fn now(&self) -> Instant {
        let nanos = tokio::time::Instant::now().saturating_duration_since(self.base);
        Instant::from_nanos(u64::try_from(nanos.as_nanos()).unwrap_or(u64::MAX))
    }

    fn wall_clock(&self) -> SystemTime {
        SystemTime::now()
    }

    fn random_seed(&self) -> u64 {
        fastrand::u64(..)
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        // On the tokio runtime the caller is in; outside one, the task is
        // dropped and the client does the work on its next call.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            drop(handle.spawn(task));
        }
    }
}

/// The runtime's sockets, resolver and TLS, as the client's [`dial`] uses them.
struct Sockets(TokioRuntime);

impl Dialer for Sockets {
    type Tcp = TcpStream;
    type Tls = tokio_rustls::client::TlsStream<TcpStream>;

    fn now(&self) -> Instant {
        self.0.now()
    }

    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    fn peer_addr(tcp: &TcpStream) -> Option<SocketAddr> {
        tcp.peer_addr().ok()
    }

    async fn handshake(
        &self,
        config: Arc<tokio_rustls::rustls::ClientConfig>,
        name: ServerName<'static>,
        tcp: TcpStream,
    ) -> io::Result<Self::Tls> {
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    }

    async fn write_all(&self, tcp: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
        tokio::io::AsyncWriteExt::write_all(tcp, bytes).await
    }

    async fn read(&self, tcp: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        tokio::io::AsyncReadExt::read(tcp, buf).await
    }

    fn plain(tcp: TcpStream, info: TransportInfo) -> BoxTransport {
        Box::new(Compat { io: tcp, info })
    }

    fn secure(tls: Self::Tls, info: TransportInfo) -> BoxTransport {
        Box::new(Compat { io: tls, info })
    }
}

/// A tokio stream seen through the futures-io traits the client reads and writes.
struct Compat<S> {
    io: S,
    info: TransportInfo,
}

impl<S: AsyncRead + AsyncWrite + OverTcp + Send + Unpin + 'static> Transport for Compat<S> {
    fn info(&self) -> TransportInfo {
        self.info.clone()
    }

    /// Peeks at the socket itself. tokio's reads answer from the readiness
    /// its driver last reported, so a close that reached the socket since
    /// (the driver runs when the runtime idles or every few dozen polls)
    /// would pass for an idle, live connection.
    fn closed_while_idle(&mut self) -> bool {
        if self.io.holds_unread() {
            return true;
        }
        let mut byte = [std::mem::MaybeUninit::uninit()];
        match socket2::SockRef::from(self.io.tcp()).peek(&mut byte) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                false
            }
            // A close (0 bytes), bytes nobody asked for, or an error. Under TLS
            // the bytes may be a close_notify or a late session ticket: either
            // way the connection is not worth the risk of reuse.
            _ => true,
        }
    }
}

/// A stream that runs over a tokio TCP socket, which `closed_while_idle` peeks at.
trait OverTcp {
    fn tcp(&self) -> &TcpStream;

    /// Whether something already read from the socket waits above it.
    fn holds_unread(&mut self) -> bool {
        false
    }
}

impl OverTcp for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl OverTcp for tokio_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }

    /// A close_notify, or plaintext, that came in the same records as the
    /// last response sits in rustls, not in the socket: one read with a
    /// no-op waker finds it without waiting.
    fn holds_unread(&mut self) -> bool {
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(self).poll_read(&mut cx, &mut buf).is_ready()
    }
}

impl<S: AsyncRead + Unpin> futures_io::AsyncRead for Compat<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> futures_io::AsyncWrite for Compat<S> {
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
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
