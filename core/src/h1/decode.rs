//! Incremental response decoding.
//!
//! A [`ResponseDecoder`] reads one response out of the caller's read buffer.
//! The caller appends whatever the socket gave it to a [`BytesMut`] and calls
//! [`ResponseDecoder::poll_event`] until it returns `Ok(None)` (more bytes are
//! needed) or the [`ResponseEvent::End`]; when the peer closes the
//! connection it calls [`ResponseDecoder::handle_eof`] and polls again. The
//! events are the same whether the bytes arrive at once or one at a time,
//! except that body bytes may be delivered in differently sized pieces.
//!
//! Framing follows RFC 9112 §6.3, in this order: no body for a response to
//! HEAD or for 1xx, 204 and 304; chunked when `Transfer-Encoding` is present;
//! `Content-Length` otherwise; read until close when neither. Interim 1xx
//! responses (100, 103, ...) are skipped; 101 is an error unless the request
//! asked for an upgrade.
//!
//! Every error is sticky: once [`poll_event`](ResponseDecoder::poll_event)
//! has failed it keeps returning the same error, and the connection must be
//! closed.

use std::fmt;
use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};

use super::chunked::{poll_chunked, Chunk, ChunkStep};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

/// Limits that keep a hostile or broken server from exhausting memory.
#[derive(Clone, Debug)]
pub struct DecoderConfig {
    max_head_size: usize,
    max_headers: usize,
    pub(super) max_chunk_line: usize,
    pub(super) max_trailer_size: usize,
    max_interim_responses: usize,
}

/// The largest header count any configuration may ask for: the parser's
/// header slots live on the stack.
const MAX_HEADERS_CEILING: usize = 256;

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            max_head_size: 64 * 1024,
            max_headers: 100,
            max_chunk_line: 4 * 1024,
            max_trailer_size: 16 * 1024,
            max_interim_responses: 16,
        }
    }
}

impl DecoderConfig {
    /// The largest response head (status line and headers), in bytes. Default 64 KiB.
    pub fn with_max_head_size(mut self, bytes: usize) -> Self {
        self.max_head_size = bytes;
        self
    }

    /// The most headers a head may have. Default 100; values above 256 are lowered to 256.
    pub fn with_max_headers(mut self, count: usize) -> Self {
        self.max_headers = count.min(MAX_HEADERS_CEILING);
        self
    }

    /// The longest chunk-size line, extensions included. Default 4 KiB.
    pub fn with_max_chunk_line(mut self, bytes: usize) -> Self {
        self.max_chunk_line = bytes;
        self
    }

    /// The largest trailer section of a chunked body. Default 16 KiB.
    pub fn with_max_trailer_size(mut self, bytes: usize) -> Self {
        self.max_trailer_size = bytes;
        self
    }

    /// How many interim (1xx) responses may precede the final one. Default 16.
    pub fn with_max_interim_responses(mut self, count: usize) -> Self {
        self.max_interim_responses = count;
        self
    }
}

/// What the decoder must know about the request the response answers.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct RequestContext {
    /// The request was a HEAD: the response has no body whatever its headers say.
    pub head_request: bool,
    /// The request asked for a protocol upgrade, so `101 Switching Protocols` is expected.
    pub expects_upgrade: bool,
}

impl RequestContext {
    /// The context of an ordinary request with this method.
    pub fn for_method(method: &Method) -> Self {
        RequestContext {
            head_request: *method == Method::HEAD,
            expects_upgrade: false,
        }
    }
}

/// The status line and headers of the final response.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    /// The status code.
    pub status: StatusCode,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: Version,
    /// The headers; values are slices of the read buffer, not copies.
    pub headers: HeaderMap,
    /// The exact body length when it is known in advance: the `Content-Length`
    /// of a length-delimited body, or 0 when the response has no body.
    pub body_length: Option<u64>,
}

/// One step of a response.
#[derive(Clone, Debug)]
pub enum ResponseEvent {
    /// The final response's head. Interim 1xx responses are skipped and never appear.
    Head(ResponseHead),
    /// A piece of the body, split off the read buffer.
    Body(Bytes),
    /// The response is complete.
    End(EndOfResponse),
}

/// The end of a response, and what it means for the connection.
#[derive(Clone, Debug, PartialEq)]
pub struct EndOfResponse {
    /// The trailer section of a chunked body, if it had any fields.
    pub trailers: Option<HeaderMap>,
    /// Why the connection may not carry another request, or `None` if it may.
    pub reuse_blocker: Option<ReuseBlocker>,
}

impl EndOfResponse {
    /// Whether the connection may go back to the pool for another request.
    pub fn is_reusable(&self) -> bool {
        self.reuse_blocker.is_none()
    }
}

/// Why a connection that delivered a complete response must still be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReuseBlocker {
    /// The server sent `Connection: close`.
    ConnectionClose,
    /// An HTTP/1.0 response without `Connection: keep-alive`.
    Http10,
    /// The body had no length and was read until the server closed the connection.
    ReadUntilClose,
    /// An HTTP/1.0 response used `Transfer-Encoding`, which HTTP/1.0 does not have.
    TransferEncodingInHttp10,
    /// The server switched protocols; the connection belongs to the new protocol.
    Upgraded,
    /// Bytes followed the complete response; nothing asked for them.
    UnsolicitedBytes,
}

/// A response the decoder refuses. The connection must be closed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The head grew past the configured limit before it ended.
    HeadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The head has more header fields than the configured limit.
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// The status line or a header line is malformed.
    InvalidHead {
        /// What the parser found wrong.
        reason: &'static str,
    },
    /// A `Content-Length` value is not a plain decimal number that fits in 64 bits.
    InvalidContentLength,
    /// Several `Content-Length` values disagree.
    ConflictingContentLength,
    /// `Transfer-Encoding` names a coding other than a single, final `chunked`.
    UnsupportedTransferCoding,
    /// The response has both `Content-Length` and `Transfer-Encoding`. RFC
    /// 9112 says such a message "ought to be handled as an error": two
    /// parsers may frame it two ways, which is how responses are smuggled.
    ContentLengthWithTransferEncoding,
    /// A chunk-size line does not start with a hexadecimal size.
    InvalidChunkSize,
    /// A chunk size does not fit in 64 bits.
    ChunkSizeOverflow,
    /// A chunk-size line (with its extensions) is longer than the configured limit.
    ChunkLineTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// After the size, a chunk-size line holds something other than
    /// well-formed extensions (`;name`, `;name=token`, `;name="quoted"`),
    /// such as whitespace before the line's end or text without a `;`.
    InvalidChunkExtension,
    /// A line of chunked framing (a chunk-size line, the end of chunk data,
    /// the last chunk or a trailer line) was not ended by exactly CRLF.
    InvalidChunkDelimiter,
    /// The trailer section is longer than the configured limit.
    TrailersTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A trailer line is not a well-formed field: no colon, an empty or
    /// invalid name, a folded line, or a control byte in the value.
    InvalidTrailers,
    /// More interim (1xx) responses than the configured limit.
    TooManyInterimResponses {
        /// The limit.
        limit: usize,
    },
    /// `101 Switching Protocols` to a request that asked for no upgrade.
    UnexpectedSwitchingProtocols,
    /// The connection closed before any byte of the response arrived. On a
    /// reused connection this is the keep-alive race: the server closed the
    /// idle connection as the request was sent.
    ClosedBeforeResponse,
    /// The connection closed in the middle of the head.
    IncompleteHead,
    /// The connection closed before the body was complete.
    TruncatedBody,
    /// The decoder was polled in a state that cannot take the call.
    WrongState {
        /// The state it was in.
        state: &'static str,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::HeadTooLarge { limit } => {
                write!(f, "response head exceeds the limit of {limit} bytes")
            }
            DecodeError::TooManyHeaders { limit } => {
                write!(f, "response has more than {limit} headers")
            }
            DecodeError::InvalidHead { reason } => write!(f, "malformed response head: {reason}"),
            DecodeError::InvalidContentLength => f.write_str("invalid Content-Length"),
            DecodeError::ConflictingContentLength => {
                f.write_str("conflicting Content-Length values")
            }
            DecodeError::ContentLengthWithTransferEncoding => {
                f.write_str("the response has both Content-Length and Transfer-Encoding")
            }
            DecodeError::UnsupportedTransferCoding => {
                f.write_str("Transfer-Encoding other than a single final `chunked`")
            }
            DecodeError::InvalidChunkSize => f.write_str("invalid chunk size"),
            DecodeError::ChunkSizeOverflow => f.write_str("chunk size overflows 64 bits"),
            DecodeError::ChunkLineTooLong { limit } => {
                write!(f, "chunk-size line exceeds the limit of {limit} bytes")
            }
            DecodeError::InvalidChunkExtension => {
                f.write_str("the chunk-size line has malformed bytes after the size")
            }
            DecodeError::InvalidChunkDelimiter => {
                f.write_str("a line of the chunked body does not end in CRLF")
            }
            DecodeError::TrailersTooLarge { limit } => {
                write!(f, "trailer section exceeds the limit of {limit} bytes")
            }
            DecodeError::InvalidTrailers => {
                f.write_str("a trailer line is not a valid header field")
            }
            DecodeError::TooManyInterimResponses { limit } => {
                write!(f, "more than {limit} interim (1xx) responses")
            }
            DecodeError::UnexpectedSwitchingProtocols => {
                f.write_str("101 Switching Protocols without an upgrade request")
            }
            DecodeError::ClosedBeforeResponse => {
                f.write_str("connection closed before any response byte")
            }
            DecodeError::IncompleteHead => f.write_str("connection closed in the response head"),
            DecodeError::TruncatedBody => f.write_str("connection closed before the body ended"),
            DecodeError::WrongState { state } => {
                write!(f, "response decoder polled in state `{state}`")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one HTTP/1.1 response; see the [`h1`](crate::h1) module documentation.
#[derive(Debug)]
pub struct ResponseDecoder {
    config: DecoderConfig,
    request: RequestContext,
    state: State,
    /// The peer closed the connection: what is in the buffer is all there is.
    eof: bool,
    /// Why the connection cannot be reused, decided from the head.
    reuse_blocker: Option<ReuseBlocker>,
    /// Header positions found by the parser, kept to avoid an allocation per response.
    header_spans: Vec<(HeaderName, usize, usize)>,
}

#[derive(Debug)]
enum State {
    /// Reading a head; `scanned` bytes are known not to end it.
    Head { scanned: usize, interim_seen: usize },
    /// The final head has been returned; the body comes next.
    Body(BodyState),
    /// Everything has been returned.
    Done,
    /// A sticky error.
    Failed(DecodeError),
}

#[derive(Debug)]
enum BodyState {
    Empty,
    Length { remaining: u64 },
    Chunked(Chunk),
    UntilClose,
}

impl ResponseDecoder {
    /// A decoder with the default limits for a response to `request`.
    pub fn new(request: RequestContext) -> Self {
        Self::with_config(DecoderConfig::default(), request)
    }

    /// A decoder with the given limits.
    pub fn with_config(config: DecoderConfig, request: RequestContext) -> Self {
        ResponseDecoder {
            config,
            request,
            state: State::Head {
                scanned: 0,
                interim_seen: 0,
            },
            eof: false,
            reuse_blocker: None,
            header_spans: Vec::new(),
        }
    }

    /// Prepares the decoder for the next response on the same connection,
    /// keeping its allocations.
    pub fn reset(&mut self, request: RequestContext) {
        self.request = request;
        self.state = State::Head {
            scanned: 0,
            interim_seen: 0,
        };
        self.eof = false;
        self.reuse_blocker = None;
    }

    /// Tells the decoder that the peer closed the connection (a read returned 0).
    pub fn handle_eof(&mut self) {
        self.eof = true;
    }

    /// Whether the final head has been decoded.
    pub fn head_received(&self) -> bool {
        matches!(self.state, State::Body(_) | State::Done)
    }

    /// Whether the whole response has been returned.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The next event from the bytes in `buf`, consuming what it used.
    ///
    /// `Ok(None)` means more bytes are needed (or, after
    /// [`handle_eof`](Self::handle_eof), cannot happen: the end of the stream
    /// always yields an event or an error).
    pub fn poll_event(&mut self, buf: &mut BytesMut) -> Result<Option<ResponseEvent>, DecodeError> {
        let result = match &mut self.state {
            State::Failed(err) => return Err(err.clone()),
            State::Done => Err(DecodeError::WrongState { state: "done" }),
            State::Head { .. } => self.poll_head(buf),
            State::Body(_) => self.poll_body(buf),
        };
        if let Err(err) = &result {
            self.state = State::Failed(err.clone());
        }
        result
    }

    fn poll_head(&mut self, buf: &mut BytesMut) -> Result<Option<ResponseEvent>, DecodeError> {
        loop {
            let State::Head { scanned, .. } = &mut self.state else {
                return Err(DecodeError::WrongState { state: "body" });
            };
            // Re-parse only when new bytes could have completed the head, so
            // that a head trickling in one byte at a time costs linear time;
            // and once more at the end of the stream or past the size limit,
            // so that a malformed head gets the same error however it arrived.
            let final_look = self.eof || buf.len() > self.config.max_head_size;
            if *scanned > 0 && !final_look && !ends_head_after(buf, *scanned) {
                *scanned = buf.len();
                return self.head_needs_more(buf);
            }
            let Some(parsed) = self.parse_head(buf)? else {
                if let State::Head { scanned, .. } = &mut self.state {
                    *scanned = buf.len();
                }
                return self.head_needs_more(buf);
            };
            let State::Head { interim_seen, .. } = &mut self.state else {
                return Err(DecodeError::WrongState { state: "body" });
            };
            let status = parsed.status;
            if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                *interim_seen += 1;
                if *interim_seen > self.config.max_interim_responses {
                    return Err(DecodeError::TooManyInterimResponses {
                        limit: self.config.max_interim_responses,
                    });
                }
                buf.advance(parsed.len);
                self.state = State::Head {
                    scanned: 0,
                    interim_seen: *interim_seen,
                };
                continue;
            }
            let head_bytes = buf.split_to(parsed.len).freeze();
            return self.finish_head(parsed, head_bytes).map(Some);
        }
    }

    fn head_needs_more(&self, buf: &BytesMut) -> Result<Option<ResponseEvent>, DecodeError> {
        if buf.len() > self.config.max_head_size {
            return Err(DecodeError::HeadTooLarge {
                limit: self.config.max_head_size,
            });
        }
        if self.eof {
            let interim_seen = matches!(
                self.state,
                State::Head {
                    interim_seen: 1..,
                    ..
                }
            );
            return Err(if buf.is_empty() && !interim_seen {
                DecodeError::ClosedBeforeResponse
            } else {
                DecodeError::IncompleteHead
            });
        }
        Ok(None)
    }

    /// Parses a complete head at the start of `buf` without consuming it.
    fn parse_head(&mut self, buf: &BytesMut) -> Result<Option<ParsedHead>, DecodeError> {
        let mut slots =
            [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CEILING];
        let slots = &mut slots[..self.config.max_headers];
        let mut response = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            slots,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(DecodeError::TooManyHeaders {
                    limit: self.config.max_headers,
                })
            }
            Err(err) => {
                return Err(DecodeError::InvalidHead {
                    reason: httparse_reason(err),
                })
            }
        };
        if len > self.config.max_head_size {
            return Err(DecodeError::HeadTooLarge {
                limit: self.config.max_head_size,
            });
        }
        let code = response.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| DecodeError::InvalidHead {
            reason: "status code out of range",
        })?;
        let version = if response.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        self.header_spans.clear();
        let base = buf.as_ptr() as usize;
        for header in response.headers.iter() {
            let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| {
                DecodeError::InvalidHead {
                    reason: "invalid header name",
                }
            })?;
            let start = header.value.as_ptr() as usize - base;
            self.header_spans
                .push((name, start, start + header.value.len()));
        }
        Ok(Some(ParsedHead {
            len,
            status,
            version,
        }))
    }

    fn finish_head(
        &mut self,
        parsed: ParsedHead,
        head_bytes: Bytes,
    ) -> Result<ResponseEvent, DecodeError> {
        let mut headers = HeaderMap::with_capacity(self.header_spans.len());
        for (name, start, end) in self.header_spans.drain(..) {
            let value =
                HeaderValue::from_maybe_shared(head_bytes.slice(start..end)).map_err(|_| {
                    DecodeError::InvalidHead {
                        reason: "invalid header value",
                    }
                })?;
            headers.append(name, value);
        }
        let framing = Framing::of(&parsed, &headers, self.request)?;
        self.reuse_blocker = framing
            .reuse_blocker
            .or_else(|| keep_alive_blocker(parsed.version, &headers));
        let body_length = match framing.body {
            BodyState::Empty => Some(0),
            BodyState::Length { remaining } => Some(remaining),
            _ => None,
        };
        self.state = State::Body(framing.body);
        Ok(ResponseEvent::Head(ResponseHead {
            status: parsed.status,
            version: parsed.version,
            headers,
            body_length,
        }))
    }

    fn poll_body(&mut self, buf: &mut BytesMut) -> Result<Option<ResponseEvent>, DecodeError> {
        let State::Body(body) = &mut self.state else {
            return Err(DecodeError::WrongState { state: "head" });
        };
        let trailers = match body {
            BodyState::Empty => None,
            BodyState::Length { remaining } => {
                if *remaining > 0 {
                    if buf.is_empty() {
                        return if self.eof {
                            Err(DecodeError::TruncatedBody)
                        } else {
                            Ok(None)
                        };
                    }
                    let take = clamp_to_buf(*remaining, buf);
                    *remaining -= take as u64;
                    return Ok(Some(ResponseEvent::Body(buf.split_to(take).freeze())));
                }
                None
            }
            BodyState::UntilClose => {
                if !buf.is_empty() {
                    let piece = buf.split().freeze();
                    return Ok(Some(ResponseEvent::Body(piece)));
                }
                if !self.eof {
                    return Ok(None);
                }
                None
            }
            BodyState::Chunked(chunk) => match poll_chunked(chunk, buf, &self.config)? {
                ChunkStep::Data(piece) => return Ok(Some(ResponseEvent::Body(piece))),
                ChunkStep::NeedMore if self.eof => return Err(DecodeError::TruncatedBody),
                ChunkStep::NeedMore => return Ok(None),
                ChunkStep::End(trailers) => trailers,
            },
        };
        let mut reuse_blocker = self.reuse_blocker;
        if reuse_blocker.is_none() && !buf.is_empty() {
            reuse_blocker = Some(ReuseBlocker::UnsolicitedBytes);
        }
        self.state = State::Done;
        Ok(Some(ResponseEvent::End(EndOfResponse {
            trailers,
            reuse_blocker,
        })))
    }
}

struct ParsedHead {
    len: usize,
    status: StatusCode,
    version: Version,
}

/// How the body of a response is delimited, decided once from its head.
struct Framing {
    body: BodyState,
    reuse_blocker: Option<ReuseBlocker>,
}

impl Framing {
    /// RFC 9112 §6.3, in its order.
    fn of(
        parsed: &ParsedHead,
        headers: &HeaderMap,
        request: RequestContext,
    ) -> Result<Framing, DecodeError> {
        let status = parsed.status;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            if !request.expects_upgrade {
                return Err(DecodeError::UnexpectedSwitchingProtocols);
            }
            return Ok(Framing {
                body: BodyState::Empty,
                reuse_blocker: Some(ReuseBlocker::Upgraded),
            });
        }
        let content_length = content_length(headers)?;
        let chunked = transfer_encoding_is_chunked(headers)?;
        if chunked && content_length.is_some() {
            return Err(DecodeError::ContentLengthWithTransferEncoding);
        }
        if request.head_request
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok(Framing {
                body: BodyState::Empty,
                reuse_blocker: None,
            });
        }
        if chunked {
            let reuse_blocker = if parsed.version == Version::HTTP_10 {
                Some(ReuseBlocker::TransferEncodingInHttp10)
            } else {
                None
            };
            let body = BodyState::Chunked(Chunk::FIRST_LINE);
            return Ok(Framing {
                body,
                reuse_blocker,
            });
        }
        Ok(match content_length {
            Some(len) => Framing {
                body: BodyState::Length { remaining: len },
                reuse_blocker: None,
            },
            None => Framing {
                body: BodyState::UntilClose,
                reuse_blocker: Some(ReuseBlocker::ReadUntilClose),
            },
        })
    }
}

/// The single length all `Content-Length` values agree on, if there are any.
///
/// Repeated identical values (`5, 5` or two fields) are allowed (RFC 9110,
/// section 8.6); anything that is not a plain run of digits is refused, since
/// parsers that accept `+5` or ` 5 x` differently are how responses get
/// smuggled.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, DecodeError> {
    let mut agreed = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let digits = trim_ows(item);
            if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
                return Err(DecodeError::InvalidContentLength);
            }
            let len = digits
                .iter()
                .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            match agreed {
                Some(previous) if previous != len => {
                    return Err(DecodeError::ConflictingContentLength)
                }
                _ => agreed = Some(len),
            }
        }
    }
    Ok(agreed)
}

/// Whether `Transfer-Encoding` is present; it must then be exactly one `chunked`.
///
/// We never send `TE`, so a server has no business applying any other
/// transfer coding; refusing them also refuses `chunked, chunked` and
/// `chunked, gzip`, which different parsers read differently.
fn transfer_encoding_is_chunked(headers: &HeaderMap) -> Result<bool, DecodeError> {
    let mut codings = 0;
    for value in headers.get_all(http::header::TRANSFER_ENCODING) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let coding = trim_ows(item);
            if !coding.eq_ignore_ascii_case(b"chunked") {
                return Err(DecodeError::UnsupportedTransferCoding);
            }
            codings += 1;
        }
    }
    match codings {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::UnsupportedTransferCoding),
    }
}

/// Keep-alive per RFC 9112 §9.3: HTTP/1.1 unless `close`, HTTP/1.0 only with `keep-alive`.
fn keep_alive_blocker(version: Version, headers: &HeaderMap) -> Option<ReuseBlocker> {
    let mut close = false;
    let mut keep_alive = false;
    for value in headers.get_all(http::header::CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = trim_ows(token);
            close |= token.eq_ignore_ascii_case(b"close");
            keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    if close {
        Some(ReuseBlocker::ConnectionClose)
    } else if version == Version::HTTP_10 && !keep_alive {
        Some(ReuseBlocker::Http10)
    } else {
        None
    }
}

/// Whether the bytes from `scanned` on could end a head (a blank line).
///
/// httparse accepts both CRLF and bare LF line endings, so both `\n\n` and
/// `\n\r\n` are candidates; a false positive only costs one parse.
///
/// One pass that stops at the first candidate, so that finding a head that
/// arrived with its body costs the head's length, not the body's.
fn ends_head_after(buf: &[u8], scanned: usize) -> bool {
    let from = scanned.saturating_sub(2);
    let Some(tail) = buf.get(from..) else {
        return false;
    };
    tail.iter().enumerate().any(|(i, &byte)| {
        byte == b'\n' && matches!(tail.get(i + 1..), Some([b'\n', ..] | [b'\r', b'\n', ..]))
    })
}

pub(super) fn clamp_to_buf(remaining: u64, buf: &BytesMut) -> usize {
    usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()))
}

pub(super) fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

pub(super) fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

fn httparse_reason(err: httparse::Error) -> &'static str {
    match err {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}
