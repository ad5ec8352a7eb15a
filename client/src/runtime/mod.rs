//! The runtime trait: the only I/O the client needs, supplied by an adapter.
//!
//! A [`Runtime`] connects a byte stream to an origin (with TLS when the origin
//! is `https`), sleeps until an instant, reads the clock, and runs the
//! client's few background tasks. That is all: the client does every read
//! and write itself, on the task that awaits the call, and the core makes
//! every decision. `breakwater-tokio` and `breakwater-smol`
//! implement it with their ecosystems' sockets and rustls wrappers; the
//! testkit implements it with a simulated network and a virtual clock. A user
//! with another executor can implement it in about a hundred lines.
//!
//! The client holds its runtime as `Arc<dyn Runtime>`, so application code
//! names one concrete `Client` type whatever runs under it.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use breakwater_core::{Instant, Origin};
use futures_io::{AsyncRead, AsyncWrite};
use rustls::pki_types::ServerName;

use crate::tls::TlsConfig;

mod proxied;

pub use breakwater_core::proxy::ProxyUrl;

/// A boxed, sendable future, as the runtime trait returns them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the client needs from an async runtime.
///
/// Implement it to run the client on an executor of your own; the
/// conformance suite (`breakwater_testkit::conformance`) checks an
/// implementation against every rule below with real sockets.
///
/// # Contract
/// - **One clock.** [`now`](Runtime::now) is monotonic and never goes
///   backwards, and [`sleep_until`](Runtime::sleep_until) reads instants on
///   the same clock with the same epoch: `sleep_until(now() + d)` completes
///   about `d` later. The epoch is the runtime's choice (its creation is
///   usual). The client re-reads the clock when it wakes and trusts the
///   clock, not the timer, so an early or spurious wake-up is harmless; a
///   late one only delays. A paused or virtual clock is fine as long as the
///   two move together.
/// - **Cancel safety.** The client drops any future it got from the runtime
///   when it no longer needs it: a connect whose deadline passed, a sleep a
///   wake-up made moot, a call the caller abandoned. Dropping must release
///   everything (a half-open socket, a timer registration) and must not
///   block.
/// - **Connecting.** [`connect`](Runtime::connect) returns a stream ready for
///   HTTP/1.1 bytes: for an `https` origin the TLS handshake has completed
///   with the given configuration (ALPN `http/1.1`) and verified the server
///   as the origin's host. Name resolution must not block the executor's
///   threads. Set `TCP_NODELAY`: requests are written whole, and Nagle's
///   algorithm would hold a small request back for a delayed ACK. The
///   client enforces the connect timeout itself by dropping the future.
///   [`dial`] does all of this given a runtime's sockets ([`Dialer`]).
/// - **Errors that decide policy.** A failed connect is a [`ConnectError`]
///   whose kind the core classifies: a certificate failure is never retried
///   and never counts against the upstream, a refused connection is retried
///   on any method. So the `rustls::Error` of a failed handshake must stay
///   reachable inside the `io::Error` (as tokio-rustls and futures-rustls
///   leave it; [`ConnectError::from_tls_io`] finds it there): flattened to
///   text, a bad certificate would be retried and trip the breaker.
/// - **`Send` everywhere.** Every future and transport is `Send`: calls move
///   between a multi-threaded executor's threads. A thread-per-core runtime
///   whose sockets are `!Send` (glommio, monoio, tokio-uring) cannot be
///   served as it is; it can run the client on a `Send` runtime beside it.
/// - **Background tasks.** [`spawn`](Runtime::spawn) runs the client's
///   housekeeping (idle expiry) and token refreshes to completion, on the
///   runtime whose timers and sockets they use, or drops them when it
///   cannot; nothing is lost either way.
/// - **Randomness.** [`random_seed`](Runtime::random_seed) seeds jitter and
///   generated idempotency keys; a simulation derives it from its own seed
///   so that a run replays exactly.
pub trait Runtime: Send + Sync + 'static {
    /// Opens a connection to `target`, with TLS when `target.tls` is set.
    fn connect(
        &self,
        target: ConnectTarget,
    ) -> BoxFuture<'static, Result<BoxTransport, ConnectError>>;

    /// Completes at or after `deadline` on this runtime's clock.
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()>;

    /// The current instant on this runtime's monotonic clock.
    fn now(&self) -> Instant;

    /// The wall clock, used only to read HTTP dates (`Retry-After`, `Date`).
    fn wall_clock(&self) -> SystemTime;

    /// A seed for the client's random choices (jitter, idempotency keys).
    ///
    /// Production runtimes draw it from the operating system; a simulation
    /// derives it from its root seed so a run replays exactly.
    fn random_seed(&self) -> u64;

    /// Runs `task` in the background, detached, to completion.
    ///
    /// The client uses it for work that belongs to no call: watching the
    /// engine's shared timers (closing idle connections when they expire)
    /// and refreshing a token while calls go on with the old one. The task
    /// uses this runtime's timers and sockets, so it must run where they
    /// work. At most one housekeeping task per client, plus one per token
    /// refresh, exists at a time; they hold the client only weakly.
    ///
    /// A runtime that cannot spawn at this moment (tokio outside a runtime,
    /// say) may drop the task instead: the work is then done when a call
    /// next runs, and nothing is lost.
    fn spawn(&self, task: BoxFuture<'static, ()>);

    /// An environment variable, read once when a client is built (the
    /// proxy variables, docs/spec/proxy.md). The default reads the
    /// process's environment; a simulation answers from its own, so that a
    /// test does not depend on the machine it runs on.
    fn env_var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Where to connect, and how.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectTarget {
    /// The origin: scheme, host and port.
    pub origin: Origin,
    /// TLS settings when the origin is `https`; `None` for plain `http`.
    pub tls: Option<TlsConfig>,
    /// The proxy to go through, if any (docs/spec/proxy.md): an HTTP proxy
    /// is dialled for a plain `http` origin (the requests then name the
    /// origin in absolute form) and tunnels to an `https` one with
    /// `CONNECT`; a SOCKS5 proxy is asked to connect to the origin. TLS, for
    /// an `https` origin, runs through the proxy, verified against the
    /// origin's name.
    pub proxy: Option<ProxyUrl>,
}

impl ConnectTarget {
    /// A direct connection to `origin`, with TLS when `tls` is given.
    pub fn new(origin: Origin, tls: Option<TlsConfig>) -> Self {
        ConnectTarget {
            origin,
            tls,
            proxy: None,
        }
    }

    /// The same connection, through `proxy`.
    pub fn via(mut self, proxy: Option<ProxyUrl>) -> Self {
        self.proxy = proxy;
        self
    }

    /// The host as a resolver wants it: IPv6 literals without their brackets.
    pub fn resolver_host(&self) -> &str {
        self.origin
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
    }

    /// The TLS configuration and the server name to verify, for an `https`
    /// target; `None` for plain `http`. A host that cannot be a TLS server
    /// name fails here, before any packet is sent.
    #[allow(clippy::type_complexity)]
    pub fn tls_parts(&self) -> Result<Option<(TlsConfig, ServerName<'static>)>, ConnectError> {
        let Some(config) = &self.tls else {
            return Ok(None);
        };
        let name = TlsConfig::server_name(&self.origin)
            .map_err(|e| ConnectError::new(ConnectErrorKind::TlsHandshake, e))?;
        Ok(Some((config.clone(), name)))
    }
}

/// The socket-level steps of opening a connection, as one runtime performs them.
///
/// [`dial`] runs them in order for a [`ConnectTarget`]: resolve the name,
/// connect to each address in turn until one answers, then (for `https`) the
/// TLS handshake; it times each step and classifies each failure, so every
/// runtime reports DNS, TCP and TLS timings and errors the same way. An
/// adapter implements only what differs between runtimes: its own sockets,
/// resolver and rustls wrapper.
pub trait Dialer: Send + Sync {
    /// A connected TCP stream.
    type Tcp: Send + 'static;
    /// A TLS session over [`Self::Tcp`].
    type Tls: Send + 'static;

    /// This runtime's clock, for the timings.
    fn now(&self) -> Instant;

    /// Resolves `host` (an IPv6 literal comes without brackets) to socket
    /// addresses, without blocking the executor's threads.
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;

    /// Opens a TCP connection to `addr`, with `TCP_NODELAY` set: requests
    /// are written whole, so Nagle's algorithm would only delay them.
    fn connect_tcp(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Tcp>> + Send;

    /// The peer's address of a connected stream, if it can be told.
    fn peer_addr(tcp: &Self::Tcp) -> Option<SocketAddr>;

    /// Runs the TLS handshake over `tcp`, verifying the server as `name`
    /// with `config`. A rustls error must stay inside the returned
    /// `io::Error` (as tokio-rustls and futures-rustls leave it), or a
    /// certificate failure would be taken for a handshake failure: retried,
    /// and counted against the upstream's breaker.
    fn handshake(
        &self,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        tcp: Self::Tcp,
    ) -> impl Future<Output = io::Result<Self::Tls>> + Send;

    /// Writes all of `bytes` to `tcp`: a proxy's handshake, before the
    /// stream is handed to the client.
    fn write_all<'a>(
        &'a self,
        tcp: &'a mut Self::Tcp,
        bytes: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a;

    /// Reads some bytes from `tcp` into `buf` (0 at the end of the stream):
    /// a proxy's answers during its handshake.
    fn read<'a>(
        &'a self,
        tcp: &'a mut Self::Tcp,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;

    /// The client's view of a plain connection.
    fn plain(tcp: Self::Tcp, info: TransportInfo) -> BoxTransport;

    /// The client's view of a TLS connection.
    fn secure(tls: Self::Tls, info: TransportInfo) -> BoxTransport;
}

/// Opens a connection to `target` with `dialer`'s sockets: the steps every
/// runtime shares (see [`Dialer`]).
///
/// A host that cannot be a TLS server name fails before any packet is sent;
/// a name that resolves to no address is a DNS failure; when every address
/// refuses, the last failure is the one classified.
pub async fn dial<D: Dialer>(
    dialer: &D,
    target: ConnectTarget,
) -> Result<BoxTransport, ConnectError> {
    let tls = target.tls_parts()?;
    let elapsed = |start: Instant| dialer.now().saturating_duration_since(start);
    let (mut tcp, dns, connect, tunnel) = match &target.proxy {
        None => {
            let (tcp, dns, connect) =
                open_tcp(dialer, target.resolver_host(), target.origin.port()).await?;
            (tcp, dns, connect, None)
        }
        Some(proxy) => {
            // The proxy's own failures are the proxy's, not the origin's.
            let (tcp, dns, connect) = open_tcp(dialer, proxy.host(), proxy.port())
                .await
                .map_err(|e| ConnectError::new(ConnectErrorKind::ProxyUnreachable, e))?;
            (tcp, dns, connect, Some(proxy))
        }
    };
    let mut proxy_handshake = None;
    if let Some(proxy) = tunnel {
        let start = dialer.now();
        proxied::handshake(dialer, &mut tcp, proxy, &target).await?;
        proxy_handshake = Some(elapsed(start));
    }
    let peer = D::peer_addr(&tcp);
    let Some((config, name)) = tls else {
        let info = TransportInfo::new(peer, false)
            .with_timings(Some(dns), Some(connect), None)
            .with_proxy_handshake(proxy_handshake);
        return Ok(D::plain(tcp, info));
    };
    let start = dialer.now();
    let session = dialer
        .handshake(config.rustls_config(), name, tcp)
        .await
        .map_err(ConnectError::from_tls_io)?;
    let info = TransportInfo::new(peer, true)
        .with_timings(Some(dns), Some(connect), Some(elapsed(start)))
        .with_proxy_handshake(proxy_handshake);
    Ok(D::secure(session, info))
}

/// Writes all of `bytes` to a futures-io stream and flushes it: a
/// [`Dialer::write_all`] for runtimes whose streams speak futures-io.
pub async fn write_all_to<T: AsyncWrite + Unpin + ?Sized>(
    io: &mut T,
    bytes: &[u8],
) -> io::Result<()> {
    let mut written = 0;
    while written < bytes.len() {
        let n =
            std::future::poll_fn(|cx| Pin::new(&mut *io).poll_write(cx, &bytes[written..])).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        written += n;
    }
    std::future::poll_fn(|cx| Pin::new(&mut *io).poll_flush(cx)).await
}

/// Reads some bytes from a futures-io stream: a [`Dialer::read`] for
/// runtimes whose streams speak futures-io.
pub async fn read_from<T: AsyncRead + Unpin + ?Sized>(
    io: &mut T,
    buf: &mut [u8],
) -> io::Result<usize> {
    std::future::poll_fn(|cx| Pin::new(&mut *io).poll_read(cx, buf)).await
}

/// Resolves `host` and connects to each address in turn until one answers:
/// the stream, and the time resolving and connecting took.
async fn open_tcp<D: Dialer>(
    dialer: &D,
    host: &str,
    port: u16,
) -> Result<(D::Tcp, Duration, Duration), ConnectError> {
    let elapsed = |start: Instant| dialer.now().saturating_duration_since(start);
    let start = dialer.now();
    let addrs = dialer
        .resolve(host, port)
        .await
        .map_err(|e| ConnectError::new(ConnectErrorKind::Dns, e))?;
    let dns = elapsed(start);
    let start = dialer.now();
    let mut last_error = None;
    for addr in addrs {
        match dialer.connect_tcp(addr).await {
            Ok(stream) => return Ok((stream, dns, elapsed(start))),
            Err(e) => last_error = Some(e),
        }
    }
    Err(match last_error {
        Some(e) => ConnectError::from_io(e),
        None => ConnectError::from_kind(ConnectErrorKind::Dns),
    })
}

/// A connected byte stream, as the runtime hands it to the client.
pub type BoxTransport = Box<dyn Transport>;

/// A byte stream to an origin: futures-io traits plus what the client reports about it.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// Facts about this connection, for response timings and stats.
    fn info(&self) -> TransportInfo {
        TransportInfo::default()
    }

    /// Whether the peer closed this idle connection, or sent bytes nobody
    /// asked for, as far as can be told without waiting. The client asks
    /// before it reuses a pooled connection: a request written to a closed
    /// one fails, and one that may not be resent (a POST without an
    /// idempotency key) fails for good.
    ///
    /// The default polls [`poll_read`](AsyncRead::poll_read) once with a
    /// no-op waker and a one-byte buffer (a byte read is lost, but the
    /// connection is not reused then). That is right for a transport whose
    /// reads try the socket first. One whose reads answer from readiness a
    /// reactor last reported (tokio's) should look at the socket itself:
    /// a close that arrived since the reactor last ran would go unseen.
    fn closed_while_idle(&mut self) -> bool {
        let mut probe = [0u8; 1];
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        Pin::new(self).poll_read(&mut cx, &mut probe).is_ready()
    }
}

/// Facts a runtime knows about a connection it opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportInfo {
    /// The peer's address, when the transport has one.
    pub peer_addr: Option<SocketAddr>,
    /// Whether TLS protects the stream.
    pub tls: bool,
    /// Time spent resolving the host name.
    pub dns: Option<Duration>,
    /// Time spent establishing the TCP connection.
    pub tcp_connect: Option<Duration>,
    /// Time spent in the TLS handshake.
    pub tls_handshake: Option<Duration>,
    /// Time spent in a proxy's handshake, after the TCP connection to it.
    pub proxy_handshake: Option<Duration>,
}

impl TransportInfo {
    /// Facts about a plain or TLS connection; the timings start empty.
    pub fn new(peer_addr: Option<SocketAddr>, tls: bool) -> Self {
        TransportInfo {
            peer_addr,
            tls,
            ..TransportInfo::default()
        }
    }

    /// Records how long each connection phase took.
    pub fn with_timings(
        mut self,
        dns: Option<Duration>,
        tcp_connect: Option<Duration>,
        tls_handshake: Option<Duration>,
    ) -> Self {
        self.dns = dns;
        self.tcp_connect = tcp_connect;
        self.tls_handshake = tls_handshake;
        self
    }

    /// Records how long the proxy's handshake (a `CONNECT` tunnel, a SOCKS5
    /// negotiation) took, when there was one.
    pub fn with_proxy_handshake(mut self, proxy_handshake: Option<Duration>) -> Self {
        self.proxy_handshake = proxy_handshake;
        self
    }
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub struct ConnectError {
    kind: ConnectErrorKind,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// The kind of a [`ConnectError`]; it decides how the failure is classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectErrorKind {
    /// The host name did not resolve.
    Dns,
    /// The peer refused the connection.
    Refused,
    /// The network or host is unreachable, or the connection was reset during setup.
    Unreachable,
    /// The connection attempt took too long (reported by runtimes with their own limits).
    TimedOut,
    /// The TLS handshake failed for a reason other than the certificate.
    TlsHandshake,
    /// The server's certificate failed verification.
    Certificate(CertificateErrorKind),
    /// Any other I/O error.
    Io,
    /// The proxy could not be reached, or broke off its handshake: the
    /// origin was never asked.
    ProxyUnreachable,
    /// The proxy answered and would not open the way to the origin (407, a
    /// refusal by its rules, an answer that is not its protocol).
    ProxyRefused,
}

/// Why a server certificate was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CertificateErrorKind {
    /// The chain does not lead to a trusted root (self-signed, unknown CA).
    UnknownIssuer,
    /// The certificate has expired (or is not yet valid).
    Expired,
    /// The certificate is not valid for the host name that was dialled.
    WrongHost,
    /// The certificate was revoked.
    Revoked,
    /// Any other verification failure.
    Other,
}

impl ConnectError {
    /// A connect error of `kind`, with the underlying error as its source.
    pub fn new(
        kind: ConnectErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        ConnectError {
            kind,
            source: Some(source.into()),
        }
    }

    /// A connect error of `kind` with no further detail.
    pub fn from_kind(kind: ConnectErrorKind) -> Self {
        ConnectError { kind, source: None }
    }

    /// Classifies an I/O error from a socket connect.
    pub fn from_io(err: io::Error) -> Self {
        let kind = match err.kind() {
            io::ErrorKind::ConnectionRefused => ConnectErrorKind::Refused,
            io::ErrorKind::TimedOut => ConnectErrorKind::TimedOut,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::AddrNotAvailable => ConnectErrorKind::Unreachable,
            _ => ConnectErrorKind::Io,
        };
        ConnectError::new(kind, err)
    }

    /// Classifies a failed TLS handshake: certificate problems are told
    /// apart, because they are never retried and never trip the breaker.
    pub fn from_tls_io(err: io::Error) -> Self {
        let kind = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map_or(ConnectErrorKind::TlsHandshake, classify_rustls_error);
        ConnectError::new(kind, err)
    }

    /// What went wrong.
    pub fn kind(&self) -> ConnectErrorKind {
        self.kind
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ConnectErrorKind::Dns => "host name did not resolve",
            ConnectErrorKind::Refused => "connection refused",
            ConnectErrorKind::Unreachable => "host unreachable",
            ConnectErrorKind::TimedOut => "connect timed out",
            ConnectErrorKind::TlsHandshake => "TLS handshake failed",
            ConnectErrorKind::Certificate(CertificateErrorKind::UnknownIssuer) => {
                "server certificate is not signed by a trusted authority"
            }
            ConnectErrorKind::Certificate(CertificateErrorKind::Expired) => {
                "server certificate has expired or is not yet valid"
            }
            ConnectErrorKind::Certificate(CertificateErrorKind::WrongHost) => {
                "server certificate is not valid for this host name"
            }
            ConnectErrorKind::Certificate(CertificateErrorKind::Revoked) => {
                "server certificate was revoked"
            }
            ConnectErrorKind::Certificate(CertificateErrorKind::Other) => {
                "server certificate failed verification"
            }
            ConnectErrorKind::Io => "I/O error while connecting",
            ConnectErrorKind::ProxyUnreachable => "could not reach the proxy",
            ConnectErrorKind::ProxyRefused => "the proxy refused the connection",
        };
        match &self.source {
            Some(source) => write!(f, "{what}: {source}"),
            None => f.write_str(what),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// Maps a rustls handshake error to the connect error kinds the core classifies.
fn classify_rustls_error(err: &rustls::Error) -> ConnectErrorKind {
    use CertificateErrorKind as K;
    let rustls::Error::InvalidCertificate(cert) = err else {
        return ConnectErrorKind::TlsHandshake;
    };
    ConnectErrorKind::Certificate(match cert {
        rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature => {
            K::UnknownIssuer
        }
        rustls::CertificateError::Expired
        | rustls::CertificateError::ExpiredContext { .. }
        | rustls::CertificateError::NotValidYet
        | rustls::CertificateError::NotValidYetContext { .. } => K::Expired,
        rustls::CertificateError::NotValidForName
        | rustls::CertificateError::NotValidForNameContext { .. } => K::WrongHost,
        rustls::CertificateError::Revoked => K::Revoked,
        _ => K::Other,
    })
}
