//! A Breakwater runtime written from first principles: std's threads and
//! blocking sockets, nothing else but rustls.
//!
//! It shows what [`breakwater::runtime::Runtime`] asks of a runtime, and that
//! an executor with no reactor at all can meet it. Every blocking operation
//! runs on a thread of its own and reports back through a waker:
//! - **timers**: one thread per process keeps the sleeping wakers in instant
//!   order and wakes each when its instant comes;
//! - **names and connects**: a thread per operation (the future waits for
//!   its answer; dropped, it abandons it);
//! - **connections**: a reader thread and a writer thread per socket, each
//!   with a small bounded queue, so a stalled peer blocks a thread, never the
//!   executor, and the client's timeouts still fire;
//! - **background tasks**: a thread per task, running [`block_on`].
//!
//! [`block_on`] is the whole executor: poll, park until woken, poll again.
//! TLS is futures-rustls over the threaded stream, through the client's own
//! [`dial`]. The testkit's conformance kit runs against this runtime in
//! `tests/conformance.rs`, on real sockets.
//!
//! It is an example, not a production runtime: a thread per connection and
//! per timer-free wait is cheap for a handful of upstreams, and costly for
//! thousands.
//!
//! ```no_run
//! use std::sync::Arc;
//! use breakwater_example_threads::{block_on, Threads};
//!
//! let client = breakwater::Client::builder(Arc::new(Threads::new()), "http://127.0.0.1:8080/")
//!     .build()
//!     .unwrap();
//! let body = block_on(async { client.get("health").send().await?.text().await }).unwrap();
//! println!("{body}");
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, SystemTime};

use breakwater::core::Instant;
use breakwater::runtime::{
    dial, BoxFuture, BoxTransport, ConnectError, ConnectTarget, Dialer, Runtime, Transport,
    TransportInfo,
};
use futures_rustls::pki_types::ServerName;

// ---------------------------------------------------------------------------
// The executor

/// Runs `future` to completion on the calling thread: poll it, park until a
/// waker unparks this thread, poll again.
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}

// ---------------------------------------------------------------------------
// The runtime

/// The runtime: a clock whose epoch is its creation.
#[derive(Clone, Copy, Debug)]
pub struct Threads {
    epoch: std::time::Instant,
}

impl Threads {
    /// A runtime whose clock starts now.
    pub fn new() -> Self {
        Threads {
            epoch: std::time::Instant::now(),
        }
    }

    fn to_std(self, at: Instant) -> std::time::Instant {
        self.epoch + Duration::from_nanos(at.as_nanos())
    }
}

impl Default for Threads {
    fn default() -> Self {
        Threads::new()
    }
}

impl Runtime for Threads {
    fn connect(
        &self,
        target: ConnectTarget,
    ) -> BoxFuture<'static, Result<BoxTransport, ConnectError>> {
        let this = *self;
        Box::pin(async move { dial(&this, target).await })
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        Box::pin(Sleep {
            at: self.to_std(deadline),
            timer: None,
        })
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn wall_clock(&self) -> SystemTime {
        SystemTime::now()
    }

    fn random_seed(&self) -> u64 {
        // Different in every process and every call, from std alone.
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(self.epoch.elapsed().as_nanos());
        hasher.finish()
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        // A thread per background task; if none can start, the task is
        // dropped, which the contract allows.
        let _ = thread::Builder::new()
            .name("breakwater-task".into())
            .spawn(move || block_on(task));
    }
}

// ---------------------------------------------------------------------------
// Timers: one thread, wakers in instant order

#[derive(Default)]
struct Timers {
    wakers: Mutex<BTreeMap<(std::time::Instant, u64), Waker>>,
    changed: Condvar,
    next_id: AtomicU64,
}

/// The process's timer thread, started on first use.
fn timers() -> &'static Timers {
    static TIMERS: OnceLock<&'static Timers> = OnceLock::new();
    TIMERS.get_or_init(|| {
        let timers: &'static Timers = Box::leak(Box::default());
        thread::Builder::new()
            .name("breakwater-timers".into())
            .spawn(move || timers.run())
            .expect("the timer thread could not start");
        timers
    })
}

impl Timers {
    fn run(&self) {
        let mut wakers = self.wakers.lock().unwrap();
        loop {
            let now = std::time::Instant::now();
            while let Some(entry) = wakers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                entry.remove().wake();
            }
            wakers = match wakers.keys().next() {
                Some(&(at, _)) => self.changed.wait_timeout(wakers, at - now).unwrap().0,
                None => self.changed.wait(wakers).unwrap(),
            };
        }
    }

    fn insert(&self, at: std::time::Instant, waker: Waker) -> (std::time::Instant, u64) {
        let key = (at, self.next_id.fetch_add(1, Ordering::Relaxed));
        self.wakers.lock().unwrap().insert(key, waker);
        self.changed.notify_one();
        key
    }

    fn remove(&self, key: (std::time::Instant, u64)) {
        self.wakers.lock().unwrap().remove(&key);
    }
}

/// A sleep until an instant; dropping it removes its timer.
struct Sleep {
    at: std::time::Instant,
    timer: Option<(std::time::Instant, u64)>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if std::time::Instant::now() >= self.at {
            return Poll::Ready(());
        }
        if let Some(key) = self.timer.take() {
            timers().remove(key);
        }
        self.timer = Some(timers().insert(self.at, cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.timer.take() {
            timers().remove(key);
        }
    }
}

// ---------------------------------------------------------------------------
// Blocking work on a thread, answered through a waker

/// A blocking operation's answer, and the waker of the future waiting for it.
type Answer<T> = (Option<io::Result<T>>, Option<Waker>);

/// Runs `work` on a new thread; the future completes with its answer.
/// Dropped early, the future abandons the answer (the thread finishes alone).
fn on_a_thread<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> impl Future<Output = io::Result<T>> + Send {
    let slot: Arc<Mutex<Answer<T>>> = Arc::default();
    let answer = slot.clone();
    let started = thread::Builder::new()
        .name("breakwater-blocking".into())
        .spawn(move || {
            let result = work();
            let waker = {
                let mut slot = answer.lock().unwrap();
                slot.0 = Some(result);
                slot.1.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        });
    std::future::poll_fn(move |cx| {
        if let Err(e) = &started {
            return Poll::Ready(Err(io::Error::new(e.kind(), e.to_string())));
        }
        let mut slot = slot.lock().unwrap();
        match slot.0.take() {
            Some(result) => Poll::Ready(result),
            None => {
                slot.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
}

// ---------------------------------------------------------------------------
// Connections: a reader and a writer thread per socket

impl Dialer for Threads {
    type Tcp = ThreadedStream;
    type Tls = futures_rustls::client::TlsStream<ThreadedStream>;

    fn now(&self) -> Instant {
        Runtime::now(self)
    }

    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let host = host.to_owned();
        on_a_thread(move || Ok((host.as_str(), port).to_socket_addrs()?.collect())).await
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<ThreadedStream> {
        let socket = on_a_thread(move || {
            let socket = TcpStream::connect(addr)?;
            socket.set_nodelay(true)?;
            Ok(socket)
        })
        .await?;
        ThreadedStream::new(socket)
    }

    fn peer_addr(tcp: &ThreadedStream) -> Option<SocketAddr> {
        tcp.socket.peer_addr().ok()
    }

    async fn handshake(
        &self,
        config: Arc<futures_rustls::rustls::ClientConfig>,
        name: ServerName<'static>,
        tcp: ThreadedStream,
    ) -> io::Result<Self::Tls> {
        futures_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    }

    async fn write_all(&self, tcp: &mut ThreadedStream, bytes: &[u8]) -> io::Result<()> {
        breakwater::runtime::write_all_to(tcp, bytes).await
    }

    async fn read(&self, tcp: &mut ThreadedStream, buf: &mut [u8]) -> io::Result<usize> {
        breakwater::runtime::read_from(tcp, buf).await
    }

    fn plain(tcp: ThreadedStream, info: TransportInfo) -> BoxTransport {
        Box::new(WithInfo { io: tcp, info })
    }

    fn secure(tls: Self::Tls, info: TransportInfo) -> BoxTransport {
        Box::new(WithInfo { io: tls, info })
    }
}

/// How many reads and writes may wait between a socket's thread and the client.
const QUEUE: usize = 4;

/// Where a thread leaves the waker it must wake when it made progress.
type WakerSlot = Arc<Mutex<Option<Waker>>>;

fn wake(slot: &WakerSlot) {
    if let Some(waker) = slot.lock().unwrap().take() {
        waker.wake();
    }
}

/// A TCP socket driven by two threads: one reads into a bounded queue, one
/// writes from another. Dropping it shuts the socket down, which ends both.
pub struct ThreadedStream {
    socket: TcpStream,
    reads: Receiver<io::Result<Vec<u8>>>,
    read_waker: WakerSlot,
    /// Bytes of the last read not yet handed to the client.
    unread: Vec<u8>,
    /// The reader thread said the stream ended (or failed).
    ended: bool,
    writes: SyncSender<Vec<u8>>,
    write_waker: WakerSlot,
    /// Bytes queued for the writer and not yet written.
    unwritten: Arc<AtomicUsize>,
    write_error: Arc<Mutex<Option<io::Error>>>,
}

impl ThreadedStream {
    fn new(socket: TcpStream) -> io::Result<Self> {
        let (read_tx, reads) = sync_channel(QUEUE);
        let (writes, write_rx) = sync_channel::<Vec<u8>>(QUEUE);
        let read_waker = WakerSlot::default();
        let write_waker = WakerSlot::default();
        let unwritten = Arc::new(AtomicUsize::new(0));
        let write_error = Arc::new(Mutex::new(None));

        let (mut reader, waker) = (socket.try_clone()?, read_waker.clone());
        thread::Builder::new()
            .name("breakwater-read".into())
            .spawn(move || loop {
                let mut buf = vec![0; 16 * 1024];
                let result = match reader.read(&mut buf) {
                    // The liveness check made the socket non-blocking for a moment.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) =>
                    {
                        thread::yield_now();
                        continue;
                    }
                    result => result.map(|n| {
                        buf.truncate(n);
                        buf
                    }),
                };
                let last = !matches!(&result, Ok(bytes) if !bytes.is_empty());
                let sent = read_tx.send(result).is_ok();
                wake(&waker);
                if last || !sent {
                    return;
                }
            })?;

        let mut writer = socket.try_clone()?;
        let (waker, left, error) = (write_waker.clone(), unwritten.clone(), write_error.clone());
        thread::Builder::new()
            .name("breakwater-write".into())
            .spawn(move || {
                for bytes in write_rx {
                    if let Err(e) = writer.write_all(&bytes) {
                        *error.lock().unwrap() = Some(e);
                        wake(&waker);
                        return;
                    }
                    left.fetch_sub(bytes.len(), Ordering::SeqCst);
                    wake(&waker);
                }
            })?;

        Ok(ThreadedStream {
            socket,
            reads,
            read_waker,
            unread: Vec::new(),
            ended: false,
            writes,
            write_waker,
            unwritten,
            write_error,
        })
    }

    fn write_failed(&self) -> Option<io::Error> {
        let error = self.write_error.lock().unwrap();
        error
            .as_ref()
            .map(|e| io::Error::new(e.kind(), e.to_string()))
    }

    /// The next read, if the reader thread has one; registers `cx` otherwise.
    fn poll_next_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Vec<u8>>> {
        loop {
            match self.reads.try_recv() {
                Ok(read) => return Poll::Ready(read),
                Err(TryRecvError::Disconnected) => return Poll::Ready(Ok(Vec::new())),
                Err(TryRecvError::Empty) => {}
            }
            let mut slot = self.read_waker.lock().unwrap();
            if slot.is_some() {
                // Registered already, and nothing came since: wait.
                *slot = Some(cx.waker().clone());
                return Poll::Pending;
            }
            // Register, then look once more: a read may have come meanwhile.
            *slot = Some(cx.waker().clone());
        }
    }
}

impl ThreadedStream {
    /// Whether the peer closed this idle connection or sent bytes nobody asked for.
    ///
    /// The reader thread's queue says so if the thread has run since; if it
    /// has not, the socket itself is asked, without waiting: the reader
    /// thread may not have been scheduled since the peer's FIN arrived, and
    /// a request written now would be lost on a closed connection.
    fn peer_closed_or_spoke(&mut self) -> bool {
        if !self.unread.is_empty() || self.ended {
            return true;
        }
        match self.reads.try_recv() {
            Ok(_) | Err(TryRecvError::Disconnected) => return true,
            Err(TryRecvError::Empty) => {}
        }
        // A read already blocked in the reader thread stays blocked; one
        // that starts in this window sees WouldBlock and tries again.
        if self.socket.set_nonblocking(true).is_err() {
            return true;
        }
        let mut byte = [0u8; 1];
        let spoke =
            !matches!(self.socket.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        spoke | self.socket.set_nonblocking(false).is_err()
    }
}

impl Drop for ThreadedStream {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

impl futures_io::AsyncRead for ThreadedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.unread.is_empty() && !this.ended {
            match this.poll_next_read(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(bytes)) if bytes.is_empty() => this.ended = true,
                Poll::Ready(Ok(bytes)) => this.unread = bytes,
                Poll::Ready(Err(e)) => {
                    this.ended = true;
                    return Poll::Ready(Err(e));
                }
            }
        }
        let n = buf.len().min(this.unread.len());
        buf[..n].copy_from_slice(&this.unread[..n]);
        this.unread.drain(..n);
        Poll::Ready(Ok(n))
    }
}

impl futures_io::AsyncWrite for ThreadedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.write_failed() {
            return Poll::Ready(Err(e));
        }
        // Counted before it is queued: the writer may finish it at once.
        self.unwritten.fetch_add(buf.len(), Ordering::SeqCst);
        match self.writes.try_send(buf.to_vec()) {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            Err(TrySendError::Full(_)) => {
                self.unwritten.fetch_sub(buf.len(), Ordering::SeqCst);
                *self.write_waker.lock().unwrap() = Some(cx.waker().clone());
                // The queue may have drained while the waker was stored.
                match self.writes.try_send(buf.to_vec()) {
                    Ok(()) => {
                        self.unwritten.fetch_add(buf.len(), Ordering::SeqCst);
                        Poll::Ready(Ok(buf.len()))
                    }
                    Err(_) => Poll::Pending,
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.unwritten.fetch_sub(buf.len(), Ordering::SeqCst);
                Poll::Ready(Err(self
                    .write_failed()
                    .unwrap_or_else(|| io::ErrorKind::BrokenPipe.into())))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if let Some(e) = self.write_failed() {
                return Poll::Ready(Err(e));
            }
            if self.unwritten.load(Ordering::SeqCst) == 0 {
                return Poll::Ready(Ok(()));
            }
            let mut slot = self.write_waker.lock().unwrap();
            if slot.is_some() {
                *slot = Some(cx.waker().clone());
                return Poll::Pending;
            }
            *slot = Some(cx.waker().clone());
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Everything queued goes out first; then the FIN.
        std::task::ready!(self.as_mut().poll_flush(cx))?;
        let _ = self.socket.shutdown(Shutdown::Write);
        Poll::Ready(Ok(()))
    }
}

/// A stream and the facts recorded while opening it.
struct WithInfo<S> {
    io: S,
    info: TransportInfo,
}

/// A stream over a [`ThreadedStream`], which can say whether its peer spoke.
trait OverThreads: futures_io::AsyncRead + futures_io::AsyncWrite + Send + Unpin + 'static {
    fn threaded(&mut self) -> &mut ThreadedStream;
}

impl OverThreads for ThreadedStream {
    fn threaded(&mut self) -> &mut ThreadedStream {
        self
    }
}

impl OverThreads for futures_rustls::client::TlsStream<ThreadedStream> {
    fn threaded(&mut self) -> &mut ThreadedStream {
        self.get_mut().0
    }
}

impl<S: OverThreads> Transport for WithInfo<S> {
    fn info(&self) -> TransportInfo {
        self.info.clone()
    }

    fn closed_while_idle(&mut self) -> bool {
        // A close_notify or plaintext may already sit above the socket (in
        // rustls): one read with a no-op waker finds it without waiting.
        let mut byte = [0u8; 1];
        let mut cx = Context::from_waker(Waker::noop());
        if Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut byte)
            .is_ready()
        {
            return true;
        }
        self.io.threaded().peer_closed_or_spoke()
    }
}

impl<S: futures_io::AsyncRead + Unpin> futures_io::AsyncRead for WithInfo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: futures_io::AsyncWrite + Unpin> futures_io::AsyncWrite for WithInfo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}
