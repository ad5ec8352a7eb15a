//! The client's own I/O: one HTTP/1.1 exchange on a pooled connection, with
//! deadlines measured on the runtime's clock.
//!
//! Nothing here decides anything. It writes a request, reads a response head
//! or a piece of body, and reports precisely what happened — whether any
//! request byte left, whether any response byte arrived — so that the core
//! can classify the outcome.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};

use breakwater_core::call::AttemptPlan;
use breakwater_core::h1::{DecodeError, RequestContext, ResponseDecoder, ResponseEvent};
use breakwater_core::policy::outcome::AttemptOutcome;
use breakwater_core::Instant;
use bytes::BytesMut;
use futures_io::AsyncRead;
use futures_lite::{AsyncWriteExt, StreamExt};

use crate::runtime::{BoxFuture, BoxTransport, Runtime, TransportInfo};

/// The stall clock's mark while the caller's body stream is awaited.
const AWAITING_BODY: u64 = u64::MAX;

/// How much of a buffered body is written at a time: progress between
/// pieces is what tells a slow upload from a stalled one.
const WRITE_PIECE: usize = 64 * 1024;

/// How much a single read asks of the socket.
const READ_CHUNK: usize = 16 * 1024;

/// A connection as the pool keeps it: the stream, its buffers and its
/// decoder, behind one pointer. The pool and the call move a connection at
/// every checkout and return; a pointer moves for less than the state does.
pub(crate) struct Connection(Box<ConnectionState>);

impl std::ops::Deref for Connection {
    type Target = ConnectionState;

    fn deref(&self) -> &ConnectionState {
        &self.0
    }
}

impl std::ops::DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut ConnectionState {
        &mut self.0
    }
}

/// What a [`Connection`] holds.
pub(crate) struct ConnectionState {
    io: BoxTransport,
    pub(crate) read_buf: BytesMut,
    write_buf: Vec<u8>,
    /// Where reads land before they are appended to `read_buf`.
    scratch: Box<[u8]>,
    /// A read returned 0: the peer closed its end.
    eof: bool,
    pub(crate) decoder: ResponseDecoder,
    pub(crate) info: TransportInfo,
    /// Requests this connection has carried, for the "reused" flag of timings.
    pub(crate) requests: u32,
    /// The timer that bounds this connection's waits, kept between them.
    alarm: Alarm,
}

impl std::fmt::Debug for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("info", &self.info)
            .field("requests", &self.requests)
            .finish()
    }
}

/// An error from the caller's request-body stream (not from the network).
#[derive(Debug)]
pub(crate) struct BodySourceError(pub(crate) io::Error);

impl std::fmt::Display for BodySourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body stream failed: {}", self.0)
    }
}

impl std::error::Error for BodySourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A stream of request-body pieces, sent with chunked framing.
pub(crate) type BodyStream =
    std::pin::Pin<Box<dyn futures_lite::Stream<Item = io::Result<bytes::Bytes>> + Send>>;

/// What follows a request head on the wire.
pub(crate) enum RequestBody<'a> {
    /// Bytes known in advance (`Content-Length`), sent again on a retry.
    Buffered(&'a [u8]),
    /// A stream of unknown length (`Transfer-Encoding: chunked`), sent once.
    Streamed(&'a mut Option<BodyStream>),
}

/// Body pieces in arrival order. A body that came with its head is usually
/// one piece, kept without a heap allocation.
#[derive(Default)]
pub(crate) struct Pieces {
    first: Option<bytes::Bytes>,
    rest: std::collections::VecDeque<bytes::Bytes>,
}

impl Pieces {
    pub(crate) fn push(&mut self, piece: bytes::Bytes) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(piece);
        } else {
            self.rest.push_back(piece);
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<bytes::Bytes> {
        self.first.take().or_else(|| self.rest.pop_front())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }
}

/// Body pieces decoded from the read buffer right after the head.
#[derive(Default)]
pub(crate) struct Prefetched {
    pub(crate) pieces: Pieces,
    pub(crate) end: Option<breakwater_core::h1::EndOfResponse>,
}

/// When an attempt started, and the core's plan, whose instants bound it.
pub(crate) struct AttemptTimes<'a> {
    /// When the attempt began, for the elapsed time the core records.
    pub(crate) started: Instant,
    /// The plan: the call's deadline bounds the write, and the plan says when
    /// the wait for the head ends once the write is done.
    pub(crate) plan: &'a AttemptPlan,
}

/// What happened to one attempt on the wire, in the terms the core classifies.
pub(crate) enum Exchange {
    /// A response head arrived.
    Head {
        head: breakwater_core::h1::ResponseHead,
        /// When the request had been written: the wait for the head
        /// started then (the upstream's latency, not the upload's).
        written_at: Instant,
    },
    /// The attempt failed; `outcome` is what the core is told, `detail` what the user is told.
    Failed {
        outcome: AttemptOutcome,
        detail: ExchangeError,
    },
}

/// The precise failure of an exchange, kept for the error the caller sees.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    Io(io::Error),
    /// The TLS layer failed (an alert from the peer, a bad record).
    Tls(io::Error),
    Protocol(DecodeError),
    /// No response head (or body bytes) within the attempt's time.
    TimedOut,
    /// The request was still being written when the call's deadline came.
    WriteOutlastedCall,
    /// No byte of the request could be written for the attempt timeout: the
    /// peer stopped reading.
    WriteStalled,
    /// The caller's request-body stream failed.
    Body(io::Error),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Connection {
    pub(crate) fn new(io: BoxTransport) -> Self {
        let info = io.info();
        Connection(Box::new(ConnectionState {
            io,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: Vec::with_capacity(1024),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            eof: false,
            decoder: ResponseDecoder::new(RequestContext::default()),
            info,
            requests: 0,
            alarm: Alarm::default(),
        }))
    }
}

impl ConnectionState {
    /// The deliberate bug of [`crate::fault_injection::set_keep_cancelled_sockets`]:
    /// the socket is leaked and the connection left with an ended stream.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn leak_socket(&mut self) {
        let socket = std::mem::replace(&mut self.io, Box::new(crate::fault_injection::Gone));
        std::mem::forget(socket);
    }

    /// The decoder's next event from the bytes already read.
    pub(crate) fn decode_buffered(&mut self) -> Result<Option<ResponseEvent>, DecodeError> {
        self.decoder.poll_event(&mut self.read_buf)
    }

    /// Whether an idle connection still looks usable: nothing buffered and,
    /// by the transport's own check, no close or unsolicited bytes waiting.
    pub(crate) fn looks_alive(&mut self) -> bool {
        self.read_buf.is_empty() && !self.io.closed_while_idle()
    }

    /// The buffer the request head is encoded into, emptied for reuse.
    pub(crate) fn write_buf(&mut self) -> &mut Vec<u8> {
        self.write_buf.clear();
        &mut self.write_buf
    }

    /// Sends the encoded head and the body, then reads the response head,
    /// within the bounds of `times`.
    pub(crate) async fn exchange(
        &mut self,
        runtime: &Arc<dyn Runtime>,
        body: RequestBody<'_>,
        request: RequestContext,
        reused: bool,
        times: AttemptTimes<'_>,
    ) -> Exchange {
        // The alarm is lent out for the exchange, which borrows the rest of
        // the connection; a cancelled exchange just loses it.
        let mut alarm = std::mem::take(&mut self.alarm);
        let exchange = self
            .exchange_with(&mut alarm, runtime, body, request, reused, times)
            .await;
        self.alarm = alarm;
        exchange
    }

    async fn exchange_with(
        &mut self,
        alarm: &mut Alarm,
        runtime: &Arc<dyn Runtime>,
        body: RequestBody<'_>,
        request: RequestContext,
        reused: bool,
        times: AttemptTimes<'_>,
    ) -> Exchange {
        let AttemptTimes { started, plan } = times;
        self.requests += 1;
        self.decoder.reset(request);

        // A reused connection was checked for a close while idle by the
        // driver, before the attempt was announced (driver/exchange.rs).
        let head = std::mem::take(&mut self.write_buf);
        // When a piece of the body was last written, so that a write that
        // makes no progress for the attempt timeout can be told from a long
        // upload that does. The head counts as written at the start.
        let last_progress = AtomicU64::new(started.as_nanos());
        let progressed = || last_progress.store(runtime.now().as_nanos(), Ordering::Relaxed);
        let write = async {
            let mut written_any = false;
            let result = async {
                self.io.write_all(&head).await?;
                written_any = true;
                match body {
                    RequestBody::Buffered(bytes) if !bytes.is_empty() => {
                        for piece in bytes.chunks(WRITE_PIECE) {
                            self.io.write_all(piece).await?;
                            progressed();
                        }
                    }
                    RequestBody::Buffered(_) => {}
                    RequestBody::Streamed(stream) => {
                        // A streamed body is consumed by the one attempt that sends it;
                        // the core never resends it once a byte has left.
                        let mut stream = stream.take().ok_or_else(|| {
                            io::Error::other("the streamed request body was already sent")
                        })?;
                        let mut prefix = Vec::with_capacity(20);
                        loop {
                            // Time spent waiting for the caller's stream is
                            // not the server's stall: no stall clock runs
                            // meanwhile, and it restarts once a piece comes.
                            last_progress.store(AWAITING_BODY, Ordering::Relaxed);
                            let Some(piece) = stream.next().await else {
                                break;
                            };
                            progressed();
                            // The caller's own failure, told apart from the network's.
                            let piece = piece.map_err(|e| io::Error::other(BodySourceError(e)))?;
                            if piece.is_empty() {
                                continue;
                            }
                            prefix.clear();
                            breakwater_core::h1::encode_chunk_prefix(&mut prefix, piece.len());
                            self.io.write_all(&prefix).await?;
                            for part in piece.chunks(WRITE_PIECE) {
                                self.io.write_all(part).await?;
                                progressed();
                            }
                            self.io.write_all(b"\r\n").await?;
                        }
                        self.io.write_all(breakwater_core::h1::LAST_CHUNK).await?;
                    }
                }
                self.io.flush().await
            }
            .await;
            (result, written_any)
        };
        // An upload may take longer than the wait for a head is allowed to:
        // writing is bounded by the call's own deadline, and by the attempt
        // timeout without progress (a peer that stopped reading must not
        // hold the connection until the call's deadline).
        let mut write_waited = false;
        let outcome = {
            let mut write = std::pin::pin!(write);
            let mut write = std::pin::pin!(std::future::poll_fn(|cx| {
                let poll = write.as_mut().poll(cx);
                write_waited |= poll.is_pending();
                poll
            }));
            let stalls_at = || match last_progress.load(Ordering::Relaxed) {
                AWAITING_BODY => plan.call_deadline,
                at => Instant::from_nanos(at) + plan.attempt_timeout,
            };
            loop {
                let deadline = stalls_at().min(plan.call_deadline);
                match alarm.run(runtime, deadline, write.as_mut()).await {
                    Some(done) => break Ok(done),
                    None if runtime.now() >= plan.call_deadline => {
                        break Err(ExchangeError::WriteOutlastedCall)
                    }
                    None if runtime.now() >= stalls_at() => break Err(ExchangeError::WriteStalled),
                    // A piece went out since: wait again from then.
                    None => {}
                }
            }
        };
        // A write that never waited took no time on the runtime's clock.
        let written_at = if write_waited { runtime.now() } else { started };
        let head_deadline = plan.head_deadline(written_at);
        self.write_buf = head;
        match outcome {
            Err(detail) => {
                // The upload took the time, not the upstream's answer: a
                // failed exchange, which gives the latency estimate no sample.
                return Exchange::Failed {
                    outcome: AttemptOutcome::ExchangeFailed,
                    detail,
                };
            }
            Ok((Err(err), _)) if err.get_ref().is_some_and(|e| e.is::<BodySourceError>()) => {
                // Not the upstream's fault: no breaker effect, no retry.
                return Exchange::Failed {
                    outcome: AttemptOutcome::Cancelled,
                    detail: ExchangeError::Body(err),
                };
            }
            Ok((Err(err), written_any)) => {
                #[cfg(feature = "fault-injection")]
                let written_any =
                    written_any && !crate::fault_injection::broken_uploads_look_unsent();
                let outcome = if written_any {
                    AttemptOutcome::ExchangeFailed
                } else {
                    AttemptOutcome::ConnectionDeadBeforeWrite { reused }
                };
                return Exchange::Failed {
                    outcome,
                    detail: ExchangeError::Io(err),
                };
            }
            Ok((Ok(()), _)) => {}
        }

        // The whole wait for the head runs under one timer, armed only if
        // the head is not already there.
        let read_head = async {
            loop {
                match self.decode_buffered() {
                    Ok(Some(ResponseEvent::Head(head))) => {
                        return Exchange::Head { head, written_at }
                    }
                    // The decoder always yields the head first; were it ever not
                    // to, the connection is not to be trusted, not a reason to panic.
                    Ok(Some(_)) => {
                        return Exchange::Failed {
                            outcome: AttemptOutcome::ExchangeFailed,
                            detail: ExchangeError::Protocol(DecodeError::WrongState {
                                state: "body before head",
                            }),
                        }
                    }
                    Ok(None) => {}
                    Err(DecodeError::ClosedBeforeResponse) => {
                        return Exchange::Failed {
                            outcome: AttemptOutcome::ClosedBeforeResponse { reused },
                            detail: ExchangeError::Protocol(DecodeError::ClosedBeforeResponse),
                        }
                    }
                    // The peer closed in the middle of the head: a broken
                    // exchange, as a reset would be.
                    Err(err @ DecodeError::IncompleteHead) => {
                        return Exchange::Failed {
                            outcome: AttemptOutcome::ExchangeFailed,
                            detail: ExchangeError::Protocol(err),
                        }
                    }
                    // Bytes that are not an HTTP response: reported at once,
                    // never retried (docs/spec/outcomes.md#malformed-response).
                    Err(err) => {
                        return Exchange::Failed {
                            outcome: AttemptOutcome::MalformedResponse,
                            detail: ExchangeError::Protocol(err),
                        }
                    }
                }
                match self.fill().await {
                    Ok(()) => {}
                    Err(err) if tls_error(&err).is_some() => {
                        // Not a close: the TLS peer ended the session with an alert
                        // (in TLS 1.3 a refused client certificate arrives this way,
                        // after the handshake looked complete to us).
                        let outcome = match tls_error(&err) {
                            Some(tls) if refuses_our_credentials(tls) => {
                                AttemptOutcome::CertificateInvalid
                            }
                            _ => AttemptOutcome::ExchangeFailed,
                        };
                        return Exchange::Failed {
                            outcome,
                            detail: ExchangeError::Tls(err),
                        };
                    }
                    Err(_) if self.read_buf.is_empty() && !self.decoder.head_received() => {
                        // A reset before any response byte is the same evidence as an EOF.
                        self.decoder.handle_eof();
                    }
                    Err(err) => {
                        return Exchange::Failed {
                            outcome: AttemptOutcome::ExchangeFailed,
                            detail: ExchangeError::Io(err),
                        }
                    }
                }
            }
        };
        match alarm.run(runtime, head_deadline, read_head).await {
            Some(exchange) => exchange,
            None => Exchange::Failed {
                outcome: AttemptOutcome::AttemptTimedOut {
                    elapsed: runtime.now().saturating_duration_since(written_at),
                },
                detail: ExchangeError::TimedOut,
            },
        }
    }

    /// Decodes the body if it already sits whole in the read buffer, without
    /// any I/O. Small bodies usually arrive with their head; reading them at
    /// once lets the connection go back to the pool even when the response
    /// is retried or never read by the caller.
    ///
    /// The start of a longer body of announced length stays in the buffer,
    /// undecoded: [`Response::bytes`](crate::Response::bytes) reads the rest
    /// in after it and takes the body as one piece. Split off here, that
    /// start would have to be joined to the rest by copying the whole body.
    pub(crate) fn prefetch(&mut self, body_length: Option<u64>) -> Prefetched {
        let mut prefetched = Prefetched::default();
        if body_length.is_some_and(|length| (self.read_buf.len() as u64) < length) {
            return prefetched;
        }
        while !self.read_buf.is_empty() || self.decoder.head_received() && !self.decoder.is_done() {
            match self.decode_buffered() {
                Ok(Some(ResponseEvent::Body(piece))) => prefetched.pieces.push(piece),
                Ok(Some(ResponseEvent::End(end))) => {
                    prefetched.end = Some(end);
                    break;
                }
                // Errors stay in the decoder (they are sticky) for the body reader to report.
                Ok(Some(ResponseEvent::Head(_))) | Ok(None) | Err(_) => break,
            }
        }
        prefetched
    }

    /// Makes room for `additional` more bytes in the read buffer; true if
    /// that grew it past its usual size.
    pub(crate) fn grow_read_buf(&mut self, additional: usize) -> bool {
        self.read_buf.reserve(additional);
        self.read_buf.capacity() > READ_CHUNK
    }

    /// Replaces a read buffer grown for one large body with one of the usual
    /// size. Splitting the body off leaves the buffer a view of the body's
    /// allocation, so the allocation would live as long as the connection,
    /// and once the caller dropped the body the buffer would take it over.
    pub(crate) fn shrink_read_buf(&mut self) {
        let mut fresh = BytesMut::with_capacity(READ_CHUNK.max(self.read_buf.len()));
        fresh.extend_from_slice(&self.read_buf);
        self.read_buf = fresh;
    }

    /// Whether the peer has closed the connection (a read returned 0).
    pub(crate) fn eof_seen(&self) -> bool {
        self.eof
    }

    /// [`fill`](Self::fill), bounded by `deadline`: `None` if it passed first.
    pub(crate) async fn fill_by(
        &mut self,
        runtime: &Arc<dyn Runtime>,
        deadline: Instant,
    ) -> Option<io::Result<()>> {
        let mut alarm = std::mem::take(&mut self.alarm);
        let read = alarm.run(runtime, deadline, self.fill()).await;
        self.alarm = alarm;
        read
    }

    /// Reads once from the socket into the read buffer; EOF is told to the decoder.
    ///
    /// Cancel-safe: the buffer is grown and trimmed back within each poll, so
    /// a read dropped while pending (a timeout, a dropped body future) leaves
    /// the buffer exactly as it was. Growing it across the await once left
    /// 16 KiB of zeros behind that a later drain took for body bytes.
    pub(crate) async fn fill(&mut self) -> io::Result<()> {
        // Read into a scratch buffer zeroed once per connection, then copy
        // the bytes read: cheaper than zero-filling the read buffer's spare
        // room on every read, and a cancelled read leaves nothing behind.
        let read = std::future::poll_fn(|cx| {
            let poll = Pin::new(&mut self.io).poll_read(cx, &mut self.scratch[..]);
            if let Poll::Ready(Ok(n)) = &poll {
                self.read_buf.extend_from_slice(&self.scratch[..*n]);
            }
            poll
        })
        .await;
        match read {
            Ok(0) => {
                self.eof = true;
                self.decoder.handle_eof();
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

/// The TLS error behind an I/O error, when the TLS layer raised it.
fn tls_error(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Whether the peer's alert says it refused our credentials (mutual TLS
/// without an acceptable client certificate). Like a server certificate that
/// fails verification, this is a configuration problem: it is reported as
/// [`AttemptOutcome::CertificateInvalid`], which is never retried and never
/// counts against the origin's breaker.
fn refuses_our_credentials(err: &rustls::Error) -> bool {
    use rustls::AlertDescription as A;
    matches!(
        err,
        rustls::Error::AlertReceived(
            A::CertificateRequired
                | A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied
        )
    )
}

/// Runs `future` until it completes or the runtime's clock reaches `deadline`.
///
/// For a one-off wait (a connect, a token fetch); a connection's waits share
/// its [`Alarm`].
pub(crate) async fn with_deadline<F: Future>(
    runtime: &Arc<dyn Runtime>,
    deadline: Instant,
    future: F,
) -> Option<F::Output> {
    Alarm::default().run(runtime, deadline, future).await
}

/// A timer kept armed from one wait to the next.
///
/// Each wait has its own deadline, and deadlines mostly move later: every
/// request's is "now + its timeout". Arming a new timer for each wait cost
/// an allocation, and on async-io a wake-up of the reactor: seven system
/// calls per request on top of the three that do the work (counted with
/// `perf stat`). So a timer that fires no later than the deadline now
/// wanted is kept. If it fires first, the clock is read and the timer is
/// armed again for the real deadline, which happens about once per timeout
/// period rather than once per request.
///
/// A timer is kept only while the waker that armed it polls it: a task, or
/// a `block_on` of one runtime. A runtime's timer belongs to that runtime
/// (tokio's fires only while its runtime is driven, and panics if polled
/// after it shut down), and a pooled connection can be picked up by another
/// runtime's caller, whose waker differs.
///
/// An idle pooled connection keeps its timer and that waker until the
/// connection is used again or dropped; if the timer fires meanwhile, it
/// wakes that task once for nothing.
///
/// The clock decides, not the timer: a timer that fires early (or a
/// cooperative scheduler that reports it late) is checked against `now()`.
#[derive(Default)]
pub(crate) struct Alarm {
    armed: Option<Armed>,
}

/// Whether two wakers wake the same task.
///
/// `will_wake` alone says no for a tokio `block_on` future and its own
/// clone: the clone carries another copy of the vtable. The data pointers
/// agree, and since the clone kept in [`Armed`] holds the task's allocation,
/// that pointer cannot be reused by another task meanwhile.
fn same_task(kept: &Waker, current: &Waker) -> bool {
    kept.will_wake(current) || (!kept.data().is_null() && kept.data() == current.data())
}

/// A timer set for `at`, armed while polled by the task `waker` wakes.
struct Armed {
    at: Instant,
    waker: Waker,
    sleep: BoxFuture<'static, ()>,
}

impl Alarm {
    /// Runs `future` until it completes or the runtime's clock reaches `deadline`.
    pub(crate) async fn run<F: Future>(
        &mut self,
        runtime: &Arc<dyn Runtime>,
        deadline: Instant,
        future: F,
    ) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            // Most writes, and reads of bytes already received, finish at
            // once: the timer is only looked at when there is a wait.
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            loop {
                let armed = match &mut self.armed {
                    Some(armed) if armed.at <= deadline && same_task(&armed.waker, cx.waker()) => {
                        armed
                    }
                    _ => {
                        if runtime.now() >= deadline {
                            return Poll::Ready(None);
                        }
                        self.armed.insert(Armed {
                            at: deadline,
                            waker: cx.waker().clone(),
                            sleep: runtime.sleep_until(deadline),
                        })
                    }
                };
                match armed.sleep.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    // Fired (and never to be polled again): the clock decides
                    // whether this wait's deadline has come, or re-arms.
                    Poll::Ready(()) => self.armed = None,
                }
            }
        })
        .await
    }
}
