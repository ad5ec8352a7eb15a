//! Responses and their bodies.
//!
//! A [`Response`] owns the call until its body ends: the connection goes
//! back to the pool when the body has been read to its end, and is closed
//! when the response is dropped with body bytes still unread on the wire
//! (only what already sits in the read buffer is drained; an unbounded
//! remainder is never read just to save a connection).

use std::time::Duration;

use breakwater_core::call::BodyEnd;
use breakwater_core::content::{body_coding, DecodeLimits};
use breakwater_core::h1::{ResponseEvent, ResponseHead};
use breakwater_core::policy::idempotency::IdempotencyKey;
use breakwater_core::Instant;
use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncWrite, AsyncWriteExt, Stream};
use http::{HeaderMap, Method, StatusCode, Version};
use url::Url;

use crate::decompress::{Decoder, SUPPORTED};
use crate::error::{Error, ErrorKind, TimeoutPhase};
use crate::guard::CallGuard;
use crate::io::{Pieces, Prefetched};

/// How long each phase of a call took, and whether its connection was reused.
///
/// Phases that did not happen (no new connection, no TLS) are `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timings {
    /// Time spent waiting: for a concurrency permit, a pool slot, a token, backoff.
    pub queued: Duration,
    /// DNS resolution, when a connection was opened.
    pub dns: Option<Duration>,
    /// Opening the connection (DNS, TCP and TLS together).
    pub connect: Option<Duration>,
    /// The TLS handshake, when one happened.
    pub tls_handshake: Option<Duration>,
    /// A proxy's handshake (a `CONNECT` tunnel, a SOCKS5 negotiation), when
    /// the connection went through one.
    pub proxy_handshake: Option<Duration>,
    /// From sending the request to the response head (of the delivered attempt).
    pub first_byte: Option<Duration>,
    /// From the call's start to the response head.
    pub total: Duration,
    /// Whether the delivered attempt used a pooled connection.
    pub reused: bool,
}

/// A redirect the call followed on its way to the response.
#[derive(Clone)]
pub struct Redirect {
    method: Method,
    url: Url,
    status: StatusCode,
    timings: Timings,
}

impl std::fmt::Debug for Redirect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redirect")
            .field("method", &self.method)
            .field("url", &crate::error::redacted_url(&self.url))
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Redirect {
    pub(crate) fn new(method: Method, url: Url, status: StatusCode, timings: Timings) -> Self {
        Redirect {
            method,
            url,
            status,
            timings,
        }
    }

    /// The method of the request that was redirected.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The URL that was requested, and answered with a redirect.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The redirect's status (301, 302, 303, 307 or 308).
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// That hop's own timings.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }
}

/// The most a body read reserves in advance, whatever the server announced.
const MAX_RESERVATION: usize = 16 * 1024 * 1024;

/// The most body bytes an HTTP error carries as a snippet.
const SNIPPET_LIMIT: usize = 512;

/// A response: status and headers at once, the body on demand.
pub struct Response {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    url: Url,
    /// The request's method, for the errors this response turns into.
    method: Method,
    timings: Timings,
    /// Attempts the call made before this response was delivered.
    attempts: u32,
    /// The redirects followed to get here, first first.
    history: Vec<Redirect>,
    /// Why a redirect response was delivered rather than followed, when it
    /// was for a reason the caller may not expect.
    note: Option<String>,
    /// The call's deadline and key, which a redirect's next hop inherits.
    call_deadline: Instant,
    call_key: Option<IdempotencyKey>,
    /// Decodes a compressed body as it is read.
    decoder: Option<Box<Decoder>>,
    body: BodyReader,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("url", &crate::error::redacted_url(&self.url))
            .field("headers", &self.headers)
            .field("timings", &self.timings)
            .field("redirects", &self.history.len())
            .finish_non_exhaustive()
    }
}

struct BodyReader {
    /// Pieces decoded before delivery, handed out first.
    prefetched: Pieces,
    guard: Option<CallGuard>,
    trailers: Option<HeaderMap>,
    received: u64,
    expected: Option<u64>,
    /// A deadline no read may pass, besides the body timeout.
    read_deadline: Option<Instant>,
    /// The read buffer was grown to hold the whole body: it is given back
    /// when the body ends, so that an idle connection does not keep it.
    grown_for_body: bool,
}

impl Response {
    pub(crate) fn new(
        guard: CallGuard,
        head: ResponseHead,
        prefetched: Prefetched,
        method: Method,
        url: Url,
        timings: Timings,
        decode: Option<DecodeLimits>,
    ) -> Self {
        let attempts = guard.call.counted_attempts();
        let call_deadline = guard.call.deadline();
        let call_key = guard.call.key().key().cloned();
        let mut body = BodyReader {
            prefetched: prefetched.pieces,
            guard: Some(guard),
            trailers: None,
            received: 0,
            expected: head.body_length,
            read_deadline: None,
            grown_for_body: false,
        };
        if let Some(end) = prefetched.end {
            // The whole body is in memory: the connection can go back now.
            body.trailers = end.trailers;
            body.finish(BodyEnd::Complete {
                reusable: end.reuse_blocker.is_none(),
            });
        }
        let mut headers = head.headers;
        // A body the response has not (a HEAD's, a 204's) is not decoded.
        // Nor is a range of a coded representation, which only the whole
        // decodes: it is delivered as it came, for a download to resume.
        let decoder = decode
            .filter(|_| head.body_length != Some(0) && head.status != StatusCode::PARTIAL_CONTENT)
            .and_then(|limits| Decoder::new(body_coding(&headers, SUPPORTED), limits))
            .map(Box::new);
        if decoder.is_some() {
            // What the caller reads is the decoded body: these described the coded one.
            headers.remove(http::header::CONTENT_ENCODING);
            headers.remove(http::header::CONTENT_LENGTH);
        }
        Response {
            status: head.status,
            version: head.version,
            headers,
            url,
            method,
            timings,
            attempts,
            history: Vec::new(),
            note: None,
            call_deadline,
            call_key,
            decoder,
            body,
        }
    }

    /// This response at the end of a chain of redirects, which took `total`.
    pub(crate) fn with_history(mut self, history: Vec<Redirect>, total: Duration) -> Self {
        self.history = history;
        self.timings.total = total;
        self
    }

    pub(crate) fn set_note(&mut self, note: String) {
        self.note = Some(note);
    }

    pub(crate) fn method(&self) -> &Method {
        &self.method
    }

    pub(crate) fn call_deadline(&self) -> Instant {
        self.call_deadline
    }

    pub(crate) fn call_key(&self) -> Option<&IdempotencyKey> {
        self.call_key.as_ref()
    }

    /// Lets a redirect response go before its next hop: a small body of
    /// announced length is read to its end so that the connection goes back
    /// to the pool; anything longer is dropped with the connection.
    pub(crate) async fn discard_for_redirect(mut self) -> (Method, Url, Timings) {
        const READ_AT_MOST: u64 = 64 * 1024;
        // No read may outlast the chain's deadline.
        self.body.read_deadline = Some(self.call_deadline);
        if self.body.expected.is_some_and(|n| n <= READ_AT_MOST) {
            while let Ok(Some(_)) = self.body.next_chunk().await {}
        }
        let Response {
            method,
            url,
            timings,
            ..
        } = self;
        (method, url, timings)
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The HTTP version of the response.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The URL this response came from: the last of a chain of redirects.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The redirects followed on the way to this response, first first
    /// (empty when there were none).
    pub fn history(&self) -> &[Redirect] {
        &self.history
    }

    /// Why this redirect response was delivered rather than followed, when
    /// the reason is not the policy's (a 307 or 308 whose streamed body
    /// could not be sent again).
    pub fn redirect_note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// How long each phase took, and whether the connection was reused.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// How many counted attempts the call made (1 when it was not retried).
    /// A stale pooled connection replaced for free is not counted, unlike in
    /// [`Error::attempts`](crate::Error::attempts), which tells every send.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The length of the body to come, as `Content-Length` announced it.
    ///
    /// `Some(0)` for a response that has no body whatever its headers say
    /// (the answer to a HEAD, a 204, a 304); a HEAD's announced length is in
    /// its `content-length` header.
    /// `None` for a body being decoded: its decoded length is not known.
    pub fn content_length(&self) -> Option<u64> {
        match self.decoder {
            Some(_) => None,
            None => self.body.expected,
        }
    }

    /// The trailer fields of a chunked body, once the body has been read.
    pub fn trailers(&self) -> Option<&HeaderMap> {
        self.body.trailers.as_ref()
    }

    /// The next piece of the body, or `None` at its end.
    ///
    /// Each read waits at most the client's body timeout.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        let Some(decoder) = self.decoder.as_mut() else {
            return self.body.next_chunk().await;
        };
        loop {
            let decoded = if decoder.has_pending() {
                // `None`: the codec needs more input than is pending.
                decoder.decode()
            } else {
                Ok(None)
            };
            let decoded = match decoded {
                Ok(None) => match self.body.next_chunk().await? {
                    Some(raw) => {
                        decoder.push(raw);
                        continue;
                    }
                    None => decoder.finish(),
                },
                other => other,
            };
            return match decoded {
                Err(error) => {
                    self.decoder = None;
                    self.body.drain_after_decode_error().await;
                    Err(error)
                }
                piece => piece,
            };
        }
    }

    /// The whole body.
    pub async fn bytes(mut self) -> Result<Bytes, Error> {
        // A body of announced length is gathered in the read buffer first, so
        // it comes out as one piece, without a second copy to join pieces.
        self.body.gather_announced_length().await?;
        if self.decoder.is_some() {
            // Decoded pieces are joined once, at their total size: the coded
            // length says nothing of the decoded one, so growing as they
            // come would copy the body several times.
            let mut pieces = Vec::new();
            while let Some(piece) = self.chunk().await? {
                pieces.push(piece);
            }
            if pieces.len() <= 1 {
                return Ok(pieces.pop().unwrap_or_default());
            }
            let mut joined = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
            pieces
                .iter()
                .for_each(|piece| joined.extend_from_slice(piece));
            return Ok(joined.freeze());
        }
        let mut first = None;
        let mut joined = BytesMut::new();
        while let Some(piece) = self.chunk().await? {
            match first.take() {
                None if joined.is_empty() => first = Some(piece),
                previous => {
                    if let Some(previous) = previous {
                        // Room for both pieces and the rest announced, at once:
                        // reserving only the rest made the join grow twice.
                        joined.reserve(previous.len() + piece.len() + self.body.reservation());
                        joined.extend_from_slice(&previous);
                    }
                    joined.extend_from_slice(&piece);
                }
            }
        }
        // A body that arrived in one piece is returned without a copy.
        Ok(first.unwrap_or_else(|| joined.freeze()))
    }

    /// The whole body as UTF-8 text.
    pub async fn text(self) -> Result<String, Error> {
        let bytes = self.bytes().await?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            Error::new(ErrorKind::Decode)
                .with_message("body is not UTF-8")
                .with_source(e)
        })
    }

    /// The whole body, decoded from JSON.
    ///
    /// The error of a body that is not JSON says so when the response was a
    /// redirect that was not followed, the usual reason for it.
    pub async fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, Error> {
        let hint = self.unfollowed_redirect_hint();
        let bytes = self.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            let error = Error::new(ErrorKind::Decode).with_source(e);
            match hint {
                Some(hint) => error.with_message(hint),
                None => error,
            }
        })
    }

    /// For a redirect response, a sentence on why it was not followed.
    fn unfollowed_redirect_hint(&self) -> Option<String> {
        if !self.status.is_redirection() {
            return None;
        }
        // Only a redirect with somewhere to go; and only its path, since a
        // query may carry a signature or a code.
        let location = self
            .headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())?;
        let location = location.split(['?', '#']).next().unwrap_or_default();
        Some(match &self.note {
            Some(note) => format!("the response is a redirect to {location}; {note}"),
            None => format!(
                "the response is a {} redirect to {location}, not followed (redirects are off \
                 or it is not a status that is followed)",
                self.status
            ),
        })
    }

    /// Turns a 4xx or 5xx response into an [`ErrorKind::Status`] error
    /// carrying the status and the first bytes of the body.
    pub async fn error_for_status(mut self) -> Result<Response, Error> {
        if !(self.status.is_client_error() || self.status.is_server_error()) {
            return Ok(self);
        }
        let mut snippet = Vec::new();
        while snippet.len() < SNIPPET_LIMIT {
            match self.chunk().await {
                Ok(Some(piece)) => snippet.extend_from_slice(&piece),
                _ => break,
            }
        }
        snippet.truncate(SNIPPET_LIMIT);
        let snippet = String::from_utf8_lossy(&snippet).into_owned();
        let origin = self
            .body
            .guard
            .as_ref()
            .map(|g| g.inner.base_origin.clone());
        let mut err = Error::new(ErrorKind::Status)
            .with_attempts(self.attempts)
            .with_status(self.status, (!snippet.is_empty()).then_some(snippet));
        if let Some(origin) = crate::urls::origin_of(&self.url).ok().or(origin) {
            err = err.with_origin(origin);
        }
        err = err.with_request(&self.method, &self.url);
        Err(err)
    }

    /// The body as a stream of pieces.
    pub fn bytes_stream(self) -> impl Stream<Item = Result<Bytes, Error>> + Send {
        futures_lite::stream::unfold(self, |mut response| async move {
            match response.chunk().await {
                Ok(Some(piece)) => Some((Ok(piece), response)),
                Ok(None) => None,
                Err(e) => Some((Err(e), response)),
            }
        })
    }

    /// The body as a stream of text lines (without their line endings),
    /// split correctly across chunk boundaries.
    pub fn lines(self) -> impl Stream<Item = Result<String, Error>> + Send {
        let state = LineReader {
            response: self,
            pending: Vec::new(),
            start: 0,
            scanned: 0,
            ended: false,
        };
        futures_lite::stream::unfold(state, |mut reader| async move {
            let line = reader.next_line().await?;
            Some((line, reader))
        })
    }

    /// The body as newline-delimited JSON records; blank lines are skipped.
    pub fn ndjson<T>(self) -> impl Stream<Item = Result<T, Error>> + Send
    where
        T: serde::de::DeserializeOwned + Send,
    {
        use futures_lite::StreamExt;
        self.lines().filter_map(|line| match line {
            Ok(line) if line.trim().is_empty() => None,
            Ok(line) => Some(
                serde_json::from_str(&line)
                    .map_err(|e| Error::new(ErrorKind::Decode).with_source(e)),
            ),
            Err(e) => Some(Err(e)),
        })
    }

    /// Copies the body into `writer` (a file, for a download), calling
    /// `progress(bytes_so_far, total_if_known)` after every piece. Returns
    /// the number of bytes written.
    pub async fn copy_to<W>(
        mut self,
        mut writer: W,
        mut progress: impl FnMut(u64, Option<u64>),
    ) -> Result<u64, Error>
    where
        W: AsyncWrite + Unpin,
    {
        let total = self.content_length();
        let mut written = 0u64;
        while let Some(piece) = self.chunk().await? {
            writer.write_all(&piece).await.map_err(|e| {
                Error::new(ErrorKind::Body)
                    .with_message("writing the body")
                    .with_source(e)
            })?;
            written += piece.len() as u64;
            progress(written, total);
        }
        writer.flush().await.map_err(|e| {
            Error::new(ErrorKind::Body)
                .with_message("flushing the body")
                .with_source(e)
        })?;
        Ok(written)
    }
}

/// The longest line [`Response::lines`] accepts: a server that never sends a
/// newline must not make the client buffer without bound.
const MAX_LINE: usize = 1024 * 1024;

/// Splits a body into lines in linear time: each byte is scanned once, and
/// consumed lines are dropped from the buffer in bulk, not one by one.
struct LineReader {
    response: Response,
    pending: Vec<u8>,
    /// Where the next line starts in `pending`.
    start: usize,
    /// How far `pending` is known to hold no newline.
    scanned: usize,
    ended: bool,
}

impl LineReader {
    async fn next_line(&mut self) -> Option<Result<String, Error>> {
        loop {
            let from = self.scanned.max(self.start);
            if let Some(offset) = self.pending[from..].iter().position(|&b| b == b'\n') {
                let end = from + offset;
                let mut line = &self.pending[self.start..end];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                let line = utf8_line(line.to_vec());
                self.start = end + 1;
                self.scanned = self.start;
                return Some(line);
            }
            self.scanned = self.pending.len();
            if self.ended {
                if self.start >= self.pending.len() {
                    return None;
                }
                let line = utf8_line(self.pending[self.start..].to_vec());
                self.start = self.pending.len();
                return Some(line);
            }
            if self.pending.len() - self.start > MAX_LINE {
                self.ended = true;
                self.pending.clear();
                self.start = 0;
                self.scanned = 0;
                return Some(Err(Error::new(ErrorKind::Decode)
                    .with_message(format!("a line longer than {MAX_LINE} bytes"))));
            }
            // Drop consumed lines before growing the buffer.
            if self.start > 0 {
                self.pending.drain(..self.start);
                self.scanned -= self.start;
                self.start = 0;
            }
            match self.response.chunk().await {
                Ok(Some(piece)) => self.pending.extend_from_slice(&piece),
                Ok(None) => self.ended = true,
                Err(e) => {
                    self.ended = true;
                    self.pending.clear();
                    self.start = 0;
                    self.scanned = 0;
                    return Some(Err(e));
                }
            }
        }
    }
}

fn utf8_line(line: Vec<u8>) -> Result<String, Error> {
    String::from_utf8(line).map_err(|e| {
        Error::new(ErrorKind::Decode)
            .with_message("line is not UTF-8")
            .with_source(e)
    })
}

impl BodyReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        if let Some(piece) = self.prefetched.pop_front() {
            self.received += piece.len() as u64;
            return Ok(Some(piece));
        }
        loop {
            let Some(guard) = self.guard.as_mut() else {
                return Ok(None);
            };
            let runtime = guard.inner.runtime.clone();
            let body_timeout = guard.inner.body_timeout;
            let Some(conn) = guard.call.connection_mut() else {
                self.finish(BodyEnd::Failed);
                return Err(Error::new(ErrorKind::Body).with_message("connection lost"));
            };
            match conn.decode_buffered() {
                Ok(Some(ResponseEvent::Body(piece))) => {
                    self.received += piece.len() as u64;
                    return Ok(Some(piece));
                }
                Ok(Some(ResponseEvent::End(end))) => {
                    let reusable = end.is_reusable();
                    self.trailers = end.trailers;
                    self.finish(BodyEnd::Complete { reusable });
                    return Ok(None);
                }
                Ok(Some(ResponseEvent::Head(_))) => {
                    self.finish(BodyEnd::Failed);
                    return Err(
                        Error::new(ErrorKind::Protocol).with_message("a second response head")
                    );
                }
                Ok(None) => {
                    let mut deadline = runtime.now() + body_timeout;
                    if let Some(cap) = self.read_deadline {
                        deadline = deadline.min(cap);
                    }
                    match conn.fill_by(&runtime, deadline).await {
                        Some(Ok(())) => {}
                        Some(Err(e)) => {
                            self.finish(BodyEnd::Failed);
                            return Err(Error::new(ErrorKind::Body).with_source(e));
                        }
                        None => {
                            self.finish(BodyEnd::Failed);
                            return Err(Error::new(ErrorKind::Timeout(TimeoutPhase::Body)));
                        }
                    }
                }
                Err(e) => {
                    self.finish(BodyEnd::Failed);
                    return Err(Error::new(ErrorKind::Protocol).with_source(e));
                }
            }
        }
    }

    /// How much to reserve for the rest of the body: what the server
    /// announced, but never more than a bound, since a hostile
    /// `Content-Length` must not make us allocate terabytes up front.
    fn reservation(&self) -> usize {
        let remaining = self.expected.unwrap_or(0).saturating_sub(self.received);
        usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(MAX_RESERVATION)
    }

    /// Reads an announced-length body (up to [`MAX_RESERVATION`]) into the
    /// read buffer before decoding it, so that it is split off in one piece.
    async fn gather_announced_length(&mut self) -> Result<(), Error> {
        let (Some(expected), true) = (self.expected, self.prefetched.is_empty()) else {
            return Ok(());
        };
        let remaining = expected.saturating_sub(self.received);
        let Some(guard) = self.guard.as_mut() else {
            return Ok(());
        };
        if remaining == 0 || remaining > MAX_RESERVATION as u64 {
            return Ok(());
        }
        let remaining = remaining as usize;
        let runtime = guard.inner.runtime.clone();
        let body_timeout = guard.inner.body_timeout;
        let Some(conn) = guard.call.connection_mut() else {
            return Ok(());
        };
        // The buffer may already hold the start of the body.
        let missing = remaining.saturating_sub(conn.read_buf.len());
        self.grown_for_body = conn.grow_read_buf(missing);
        while conn.read_buf.len() < remaining && !conn.eof_seen() {
            let deadline = runtime.now() + body_timeout;
            match conn.fill_by(&runtime, deadline).await {
                Some(Ok(())) => {}
                // I/O errors are reported by the ordinary reads that follow.
                Some(Err(_)) => break,
                None => {
                    self.finish(BodyEnd::Failed);
                    return Err(Error::new(ErrorKind::Timeout(TimeoutPhase::Body)));
                }
            }
        }
        Ok(())
    }

    /// Reads what is left of a body that failed to decode, so that its
    /// connection, whose framing was right, can go back to the pool; a
    /// remainder over 1 MiB is not worth reading and closes it instead.
    async fn drain_after_decode_error(&mut self) {
        const DRAIN_AT_MOST: u64 = 1024 * 1024;
        let mut drained = 0u64;
        while drained <= DRAIN_AT_MOST {
            match self.next_chunk().await {
                Ok(Some(piece)) => drained += piece.len() as u64,
                Ok(None) | Err(_) => return,
            }
        }
        self.finish(BodyEnd::Abandoned);
    }

    /// Tells the core how the body ended and lets the call go.
    fn finish(&mut self, end: BodyEnd) {
        if let Some(mut guard) = self.guard.take() {
            // Only a connection that goes back to the pool needs its buffer
            // back to size; any other is about to be closed.
            let kept = matches!(end, BodyEnd::Complete { reusable: true });
            if std::mem::take(&mut self.grown_for_body) && kept {
                if let Some(conn) = guard.call.connection_mut() {
                    conn.shrink_read_buf();
                }
            }
            let _ = guard.report(|call, now, engine| call.handle_body_finished(now, engine, end));
        }
    }
}

impl Drop for BodyReader {
    fn drop(&mut self) {
        let Some(guard) = self.guard.as_mut() else {
            return;
        };
        // Drain what is already buffered, without any I/O: a small body that
        // arrived with its head still lets the connection be reused.
        let end = match guard.call.connection_mut() {
            Some(conn) => loop {
                match conn.decode_buffered() {
                    Ok(Some(ResponseEvent::Body(_))) => continue,
                    Ok(Some(ResponseEvent::End(end))) => {
                        break BodyEnd::Complete {
                            reusable: end.is_reusable(),
                        }
                    }
                    Ok(Some(ResponseEvent::Head(_))) | Err(_) => break BodyEnd::Failed,
                    Ok(None) => break BodyEnd::Abandoned,
                }
            },
            None => BodyEnd::Abandoned,
        };
        self.finish(end);
    }
}
