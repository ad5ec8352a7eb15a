//! The simulated network: byte pipes with latency between the client and
//! the simulated servers.
//!
//! Every connection is two one-way pipes. A write becomes a segment that the
//! other side may read once the clock reaches its delivery time: one-way
//! latency after the link has put it on the wire, behind the segments queued
//! before it, at the link's bandwidth. Segments are delivered in order; a
//! close is an end-of-stream segment, a fault can be a reset segment (which
//! also waits behind queued data, where TCP would drop it). Nothing touches
//! a socket.
//!
//! A link carries one segment at a time at its bandwidth. It may also have
//! a window, as TCP's buffers give one: the bytes a writer may have sent
//! that its peer has not read yet (as far as the writer has heard, one
//! latency after each read). A writer that fills it waits, so a slow link or
//! a peer that stops reading holds a large upload back, as it would on a
//! socket.
//!
//! Closing follows TCP too. A peer that closes with bytes it has received
//! and not read resets the connection; bytes that reach a closed peer draw
//! a reset back; and once a reset reaches a writer, its writes fail, as
//! `send` does.

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use breakwater::core::Instant;
use breakwater::runtime::{Transport, TransportInfo};
use bytes::Bytes;
use futures_io::{AsyncRead, AsyncWrite};

use crate::executor::Handle;

/// The speed of a simulated link. Build one with [`Link::rtt`] and the
/// `with_` methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Link {
    /// One-way latency (half the round trip).
    pub latency: Duration,
    /// Bytes per second, or `None` for unlimited.
    pub bandwidth: Option<u64>,
    /// The most bytes a writer may have sent that its peer has not yet
    /// read, as far as the writer has heard, or `None` for unlimited.
    pub window: Option<u64>,
}

impl Link {
    /// A link with this round-trip time, unlimited bandwidth and no window.
    pub fn rtt(rtt: Duration) -> Self {
        Link {
            latency: rtt / 2,
            bandwidth: None,
            window: None,
        }
    }

    /// This link, carrying at most `bytes_per_sec`.
    pub fn with_bandwidth(self, bytes_per_sec: u64) -> Self {
        Link {
            bandwidth: Some(bytes_per_sec),
            ..self
        }
    }

    /// This link, with a window of `bytes` (unread bytes a writer may have outstanding).
    ///
    /// # Panics
    /// If `bytes` is 0: no writer could send anything.
    pub fn with_window(self, bytes: u64) -> Self {
        assert!(bytes > 0, "a window of 0 bytes lets nothing through");
        Link {
            window: Some(bytes),
            ..self
        }
    }
}

impl Default for Link {
    fn default() -> Self {
        Link::rtt(Duration::from_millis(1))
    }
}

enum Segment {
    Data(Bytes),
    Eof,
    Reset,
}

#[derive(Default)]
struct PipeState {
    segments: VecDeque<(Instant, Segment)>,
    /// When the link has finished putting queued segments on the wire.
    busy_until: Instant,
    reader: Option<Waker>,
    timer: Option<(Instant, u64)>,
    /// The reading side has gone away: bytes sent are lost.
    reader_closed: bool,
    /// When a reset reaches the writer (the reader reset, closed with bytes
    /// unread, or was sent bytes after it closed); from then on writes fail.
    reset_reaches_writer: Option<Instant>,
    /// Bytes sent that, as far as the writer has heard, are not read yet.
    unread: u64,
    /// Reads the writer has not heard of yet: when it will, and how many bytes.
    credits: VecDeque<(Instant, u64)>,
    /// A writer waiting for the window to open (or a reset to arrive).
    writer: Option<Waker>,
    /// The timer a waiting writer set for the next read it will hear of,
    /// or for the reset.
    writer_timer: Option<(Instant, u64)>,
}

impl PipeState {
    /// Applies the reads the writer has heard of by `now`.
    fn hear_of_reads(&mut self, now: Instant) {
        while let Some(&(at, bytes)) = self.credits.front() {
            if at > now {
                break;
            }
            self.unread = self.unread.saturating_sub(bytes);
            self.credits.pop_front();
        }
    }
}

/// One direction of a connection.
#[derive(Clone)]
struct Pipe {
    state: Arc<Mutex<PipeState>>,
    link: Link,
}

impl Pipe {
    fn new(link: Link) -> Self {
        Pipe {
            state: Arc::new(Mutex::new(PipeState::default())),
            link,
        }
    }

    fn send(&self, handle: &Handle, segment: Segment) {
        let now = handle.now();
        let mut state = self.state.lock().unwrap();
        let transfer = match (&segment, self.link.bandwidth) {
            (Segment::Data(bytes), Some(bps)) if bps > 0 => {
                Duration::from_nanos((bytes.len() as u64).saturating_mul(1_000_000_000) / bps)
            }
            _ => Duration::ZERO,
        };
        // Segments share the link: each goes on the wire after the last.
        let on_wire = now.max(state.busy_until) + transfer;
        state.busy_until = on_wire;
        let at = on_wire + self.link.latency;
        state.segments.push_back((at, segment));
        if let Some(waker) = state.reader.take() {
            // Wake the reader when the bytes arrive, not before.
            state.timer = Some(handle.wake_at(at, waker));
        }
    }
}

/// One end of a simulated connection.
pub(crate) struct SimStream {
    handle: Handle,
    inbound: Pipe,
    outbound: Pipe,
    /// Bytes of a segment not yet read.
    partial: Option<Bytes>,
    /// This end has sent its end-of-stream: it writes no more.
    fin_sent: bool,
    /// This end has reset the connection.
    reset_sent: bool,
    info: TransportInfo,
    /// Fault: after this many bytes written, the stream resets instead.
    reset_after_written: Option<u64>,
    written: u64,
    /// For a client end: the network's set of live client ends, which this
    /// end leaves when it is dropped.
    live: Option<(LiveEnds, u64)>,
}

/// The ids of the client ends not yet dropped, kept by the network so a run
/// can check that nothing outside the client's pool still holds one.
pub(crate) type LiveEnds = Arc<Mutex<BTreeSet<u64>>>;

/// A connected pair: (client end, server end).
pub(crate) fn connection(
    handle: &Handle,
    link: Link,
    info: TransportInfo,
) -> (SimStream, SimStream) {
    let up = Pipe::new(link);
    let down = Pipe::new(link);
    let client = SimStream::new(handle, down.clone(), up.clone(), info);
    let server = SimStream::new(handle, up, down, TransportInfo::default());
    (client, server)
}

impl SimStream {
    fn new(handle: &Handle, inbound: Pipe, outbound: Pipe, info: TransportInfo) -> Self {
        SimStream {
            handle: handle.clone(),
            inbound,
            outbound,
            partial: None,
            fin_sent: false,
            reset_sent: false,
            info,
            reset_after_written: None,
            written: 0,
            live: None,
        }
    }

    /// Enters this (client) end in `live` as connection `id` until it is dropped.
    pub(crate) fn track(&mut self, live: &LiveEnds, id: u64) {
        live.lock().unwrap().insert(id);
        self.live = Some((live.clone(), id));
    }

    /// Makes this end reset the connection once it has written `bytes` more bytes.
    pub(crate) fn reset_after(&mut self, bytes: u64) {
        self.reset_after_written = Some(self.written + bytes);
    }

    /// Resets the connection now (after an end-of-stream too): the peer's
    /// next read fails, unless it reads that end first, and so do its writes
    /// once the reset reaches it.
    pub(crate) fn reset(&mut self) {
        if !self.reset_sent {
            self.reset_sent = true;
            self.outbound.send(&self.handle, Segment::Reset);
            self.reset_the_writer(self.handle.now() + self.inbound.link.latency);
        }
    }

    /// Fails the peer's writes from `at`, when a reset reaches it.
    fn reset_the_writer(&self, at: Instant) {
        let mut inbound = self.inbound.state.lock().unwrap();
        let at = *inbound.reset_reaches_writer.get_or_insert(at);
        if let Some(writer) = inbound.writer.take() {
            self.handle.wake_at(at, writer);
        }
    }

    /// Counts `n` bytes as read: the window opens by as much once the
    /// writer hears of it, one latency later.
    fn consumed(&self, n: usize) {
        if self.inbound.link.window.is_none() || n == 0 {
            return;
        }
        let heard = self.handle.now() + self.inbound.link.latency;
        let mut state = self.inbound.state.lock().unwrap();
        state.credits.push_back((heard, n as u64));
        if let Some(writer) = state.writer.take() {
            self.handle.wake_at(heard, writer);
        }
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(mut partial) = this.partial.take() {
            let n = partial.len().min(buf.len());
            buf[..n].copy_from_slice(&partial.split_to(n));
            if !partial.is_empty() {
                this.partial = Some(partial);
            }
            this.consumed(n);
            return Poll::Ready(Ok(n));
        }
        let now = this.handle.now();
        let mut state = this.inbound.state.lock().unwrap();
        match state.segments.front() {
            Some((at, _)) if *at <= now => {}
            Some((at, _)) => {
                let at = *at;
                if let Some(key) = state.timer.take() {
                    this.handle.cancel_timer(key);
                }
                state.timer = Some(this.handle.wake_at(at, cx.waker().clone()));
                return Poll::Pending;
            }
            None => {
                state.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        let Some((_, segment)) = state.segments.pop_front() else {
            return Poll::Pending;
        };
        drop(state);
        match segment {
            Segment::Data(mut bytes) => {
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes.split_to(n));
                if !bytes.is_empty() {
                    this.partial = Some(bytes);
                }
                this.consumed(n);
                Poll::Ready(Ok(n))
            }
            Segment::Eof => {
                // Keep reporting the end on later reads.
                this.inbound
                    .state
                    .lock()
                    .unwrap()
                    .segments
                    .push_front((Instant::ZERO, Segment::Eof));
                Poll::Ready(Ok(0))
            }
            Segment::Reset => {
                this.inbound
                    .state
                    .lock()
                    .unwrap()
                    .segments
                    .push_front((Instant::ZERO, Segment::Reset));
                Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
            }
        }
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.fin_sent || this.reset_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if buf.is_empty() {
            // An empty segment would read as the end of the stream.
            return Poll::Ready(Ok(0));
        }
        let now = this.handle.now();
        let mut n = buf.len();
        {
            let mut outbound = this.outbound.state.lock().unwrap();
            if outbound.reader_closed && outbound.reset_reaches_writer.is_none() {
                // Like TCP, a write to a peer that has closed succeeds
                // locally and the bytes are lost; the peer answers them with
                // a reset, which fails the writes after it.
                let latency = this.outbound.link.latency;
                outbound.reset_reaches_writer = Some(now.max(outbound.busy_until) + latency * 2);
            }
            if outbound.reset_reaches_writer.is_some_and(|at| at <= now) {
                return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
            }
            if let Some(window) = this.outbound.link.window {
                outbound.hear_of_reads(now);
                let room = window.saturating_sub(outbound.unread);
                if room == 0 {
                    // Woken when the next read is heard of or a reset
                    // arrives, or, if neither is on its way, by the reader.
                    let next_read = outbound.credits.front().map(|&(at, _)| at);
                    if let Some(key) = outbound.writer_timer.take() {
                        this.handle.cancel_timer(key);
                    }
                    match next_read
                        .into_iter()
                        .chain(outbound.reset_reaches_writer)
                        .min()
                    {
                        Some(at) => {
                            let timer = this.handle.wake_at(at, cx.waker().clone());
                            outbound.writer_timer = Some(timer);
                        }
                        None => outbound.writer = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
                n = n.min(room as usize);
            }
        }
        if let Some(limit) = this.reset_after_written {
            let room = limit.saturating_sub(this.written) as usize;
            if room == 0 {
                this.reset();
                return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
            }
            n = n.min(room);
        }
        this.written += n as u64;
        let delivered = {
            // Bytes a closed peer never reads still fill the window.
            let mut outbound = this.outbound.state.lock().unwrap();
            if this.outbound.link.window.is_some() {
                outbound.unread += n as u64;
            }
            !outbound.reader_closed
        };
        if delivered {
            this.outbound.send(
                &this.handle,
                Segment::Data(Bytes::copy_from_slice(&buf[..n])),
            );
        }
        if this
            .reset_after_written
            .is_some_and(|limit| this.written >= limit)
        {
            this.reset();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.fin_sent && !this.reset_sent {
            this.fin_sent = true;
            this.outbound.send(&this.handle, Segment::Eof);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        let now = self.handle.now();
        let (received_unread, first_in_flight) = {
            let inbound = self.inbound.state.lock().unwrap();
            let data = inbound
                .segments
                .iter()
                .filter(|(_, segment)| matches!(segment, Segment::Data(_)));
            let received = self.partial.is_some() || data.clone().any(|&(at, _)| at <= now);
            let in_flight = data.map(|&(at, _)| at).filter(|&at| at > now).min();
            (received, in_flight)
        };
        if received_unread {
            // Closing with bytes received and not read resets the
            // connection, as TCP does.
            self.reset();
        } else {
            if !self.fin_sent && !self.reset_sent {
                self.fin_sent = true;
                self.outbound.send(&self.handle, Segment::Eof);
            }
            if let Some(arrives) = first_in_flight {
                // Bytes still on their way draw a reset when they arrive.
                self.reset_the_writer(arrives + self.inbound.link.latency);
            }
        }
        let mut inbound = self.inbound.state.lock().unwrap();
        inbound.reader_closed = true;
        if let Some(key) = inbound.timer.take() {
            self.handle.cancel_timer(key);
        }
        // A writer waiting on the window goes on: what it sends from now on
        // is lost, and draws a reset that fails its later writes.
        if let Some(writer) = inbound.writer.take() {
            writer.wake();
        }
        drop(inbound);
        if let Some((live, id)) = self.live.take() {
            live.lock().unwrap().remove(&id);
        }
    }
}

impl Transport for SimStream {
    fn info(&self) -> TransportInfo {
        self.info.clone()
    }
}
