//! `multipart/form-data` bodies (RFC 7578): form fields and file uploads.
//!
//! A [`Form`] is a list of named [`Part`]s. Each part is text, bytes held in
//! memory, or a stream read as the request is written;
//! [`RequestBuilder::multipart`] sends a form with its `Content-Type`.
//!
//! - A form whose parts are all in memory is sent as one buffered body with a
//!   `Content-Length`: a retry can send it again, so a keyed or idempotent
//!   call survives a 503 like any other buffered body.
//! - A form with a streamed part is sent chunked, as it is produced, and like
//!   every streamed body it is not sent twice (see
//!   [`RequestBuilder::body_stream`](crate::RequestBuilder::body_stream)).
//!
//! Field names and file names are written the way the WHATWG HTML standard
//! (and so every browser) writes them: `"` becomes `%22`, CR `%0D`, LF
//! `%0A`, and anything else, non-ASCII included, is sent as raw UTF-8.
//!
//! ```
//! use breakwater::multipart::{Form, FormBody, Part};
//!
//! let form = Form::new()
//!     .text("title", "Beach, day \"one\"")
//!     .part(
//!         "photo",
//!         Part::bytes(&b"\x89PNG\r\n..."[..])
//!             .file_name("beach.png")
//!             .content_type("image/png"),
//!     );
//! let content_type = form.content_type();
//! assert_eq!(content_type, format!("multipart/form-data; boundary={}", form.boundary()));
//!
//! let length = form.content_length();
//! let FormBody::Buffered(body) = form.into_body()? else {
//!     unreachable!("every part is in memory")
//! };
//! assert_eq!(length, Some(body.len() as u64));
//! let text = String::from_utf8_lossy(&body);
//! assert!(text.contains("Content-Disposition: form-data; name=\"title\"\r\n\r\nBeach, day \"one\"\r\n"));
//! assert!(text.contains("name=\"photo\"; filename=\"beach.png\"\r\nContent-Type: image/png\r\n"));
//! # Ok::<(), breakwater::multipart::InvalidContentType>(())
//! ```
//!
//! Sending it, with a streamed part:
//!
//! ```no_run
//! # async fn example(client: breakwater::Client) -> Result<(), breakwater::Error> {
//! use breakwater::bytes::Bytes;
//! use breakwater::multipart::{Form, Part};
//!
//! let chunks = futures_lite::stream::iter([Ok(Bytes::from("a,b\n")), Ok(Bytes::from("1,2\n"))]);
//! let form = Form::new()
//!     .text("table", "scores")
//!     .part("data", Part::stream(chunks, Some(8)).file_name("scores.csv").content_type("text/csv"));
//! let response = client.post("imports").multipart(form).send().await?;
//! response.error_for_status().await?;
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, ErrorKind};
use crate::io::BodyStream;
use crate::request::RequestBuilder;

/// What every boundary starts with, so that a body can be recognised as ours.
const BOUNDARY_PREFIX: &str = "breakwater-";

/// Random `[A-Za-z0-9]` characters after the prefix: about 190 bits.
const BOUNDARY_RANDOM_CHARS: usize = 32;

/// Buffered parts up to this size are copied in with the framing around
/// them when a form streams; larger ones are sent as pieces of their own
/// without a copy.
const INLINE_PART_BYTES: usize = 8 * 1024;

/// A `multipart/form-data` body being built: named parts in order, and the
/// boundary between them.
///
/// Build it with [`text`](Self::text), [`bytes`](Self::bytes) and
/// [`part`](Self::part); send it with [`RequestBuilder::multipart`], or take
/// its body with [`into_body`](Self::into_body).
#[must_use = "a form does nothing until it is sent"]
pub struct Form {
    /// Never found inside a buffered part (see [`Form::push`]).
    boundary: String,
    parts: Vec<(String, Part)>,
}

/// One part of a [`Form`]: its content, and optionally a file name and a
/// content type.
#[must_use = "a part does nothing until it is added to a Form"]
pub struct Part {
    content: Content,
    file_name: Option<String>,
    /// As the caller gave it: `Err` holds a value that is not a media type,
    /// reported when the body is built.
    content_type: Option<Result<String, String>>,
}

/// A part's bytes.
enum Content {
    Text(Bytes),
    Bytes(Bytes),
    Stream {
        stream: BodyStream,
        length: Option<u64>,
    },
}

/// A form's body, as [`Form::into_body`] builds it.
#[non_exhaustive]
pub enum FormBody {
    /// Every part was in memory: the whole body, which can be sent again.
    Buffered(Bytes),
    /// A part streams: the body as it is produced, which can be sent once.
    Streamed(FormStream),
}

/// The body of a form with a streamed part: the framing and the in-memory
/// parts interleaved with the streamed parts' pieces, in order.
///
/// A streamed part that declared its length and yields more or fewer bytes
/// ends the stream with an [`io::ErrorKind::InvalidData`] error, so that a
/// truncated file fails the upload instead of arriving as a shorter part.
pub struct FormStream {
    segments: VecDeque<Segment>,
}

enum Segment {
    Bytes(Bytes),
    Stream {
        field: String,
        stream: BodyStream,
        declared: Option<u64>,
        sent: u64,
    },
}

/// A part's content type that is not a media type; naming the field it was
/// given for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidContentType {
    field: String,
    value: String,
}

impl Form {
    /// An empty form with a fresh random boundary: `breakwater-` and 32
    /// random letters and digits.
    pub fn new() -> Form {
        Form::with_boundary(random_boundary())
    }

    fn with_boundary(boundary: String) -> Form {
        Form {
            boundary,
            parts: Vec::new(),
        }
    }

    /// Adds a text field.
    pub fn text(self, name: impl Into<String>, value: impl Into<String>) -> Form {
        self.part(name, Part::text(value))
    }

    /// Adds a field of bytes held in memory (with no file name, so no
    /// `Content-Type` unless given through [`part`](Self::part)).
    pub fn bytes(self, name: impl Into<String>, bytes: impl Into<Bytes>) -> Form {
        self.part(name, Part::bytes(bytes))
    }

    /// Adds `part` as the field `name`.
    pub fn part(self, name: impl Into<String>, part: Part) -> Form {
        self.push(name.into(), part)
    }

    /// The boundary between the parts, as the body and
    /// [`content_type`](Self::content_type) will name it.
    pub fn boundary(&self) -> &str {
        &self.boundary
    }

    /// The request's `Content-Type`: `multipart/form-data; boundary=...`.
    pub fn content_type(&self) -> String {
        // The boundary is letters, digits and `-`: no quotes needed.
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The body's length in bytes, if it can be known in advance: `None`
    /// when a streamed part did not declare its length, or when a part's
    /// content type is invalid (then there is no body to measure).
    pub fn content_length(&self) -> Option<u64> {
        let mut total = 0u64;
        for (name, part) in &self.parts {
            let content_type = part.wire_content_type().ok()?;
            let mut head = BytesMut::new();
            write_head(&mut head, &self.boundary, name, part, content_type);
            let content = match &part.content {
                Content::Text(bytes) | Content::Bytes(bytes) => bytes.len() as u64,
                Content::Stream { length, .. } => (*length)?,
            };
            total += head.len() as u64 + content + 2;
        }
        Some(total + closing_len(&self.boundary) as u64)
    }

    /// The body: one buffer when every part is in memory, otherwise a
    /// stream.
    ///
    /// # Errors
    /// If a part was given a content type that is not a media type (the
    /// first such part is named).
    pub fn into_body(self) -> Result<FormBody, InvalidContentType> {
        let mut content_types = Vec::with_capacity(self.parts.len());
        for (name, part) in &self.parts {
            let content_type = part
                .wire_content_type()
                .map_err(|value| InvalidContentType {
                    field: name.clone(),
                    value: value.to_owned(),
                })?;
            content_types.push(content_type.map(str::to_owned));
        }
        let streams = self
            .parts
            .iter()
            .any(|(_, part)| matches!(part.content, Content::Stream { .. }));
        if !streams {
            // Known: every part is in memory and every content type valid.
            let length = self.content_length().unwrap_or(0);
            let mut body = BytesMut::with_capacity(length as usize);
            for ((name, part), content_type) in self.parts.iter().zip(&content_types) {
                write_head(
                    &mut body,
                    &self.boundary,
                    name,
                    part,
                    content_type.as_deref(),
                );
                if let Content::Text(bytes) | Content::Bytes(bytes) = &part.content {
                    body.put_slice(bytes);
                }
                body.put_slice(b"\r\n");
            }
            write_closing(&mut body, &self.boundary);
            return Ok(FormBody::Buffered(body.freeze()));
        }
        let mut segments = VecDeque::new();
        let mut framing = BytesMut::new();
        for ((name, part), content_type) in self.parts.into_iter().zip(content_types) {
            write_head(
                &mut framing,
                &self.boundary,
                &name,
                &part,
                content_type.as_deref(),
            );
            match part.content {
                Content::Text(bytes) | Content::Bytes(bytes)
                    if bytes.len() <= INLINE_PART_BYTES =>
                {
                    framing.put_slice(&bytes);
                }
                Content::Text(bytes) | Content::Bytes(bytes) => {
                    segments.push_back(Segment::Bytes(framing.split().freeze()));
                    segments.push_back(Segment::Bytes(bytes));
                }
                Content::Stream { stream, length } => {
                    segments.push_back(Segment::Bytes(framing.split().freeze()));
                    segments.push_back(Segment::Stream {
                        field: name,
                        stream,
                        declared: length,
                        sent: 0,
                    });
                }
            }
            framing.put_slice(b"\r\n");
        }
        write_closing(&mut framing, &self.boundary);
        segments.push_back(Segment::Bytes(framing.freeze()));
        Ok(FormBody::Streamed(FormStream { segments }))
    }

    /// Adds a part, keeping the boundary out of every part in memory.
    ///
    /// A delimiter is the boundary at the start of a line, so a part that
    /// held it would end early, and the rest of its bytes would be read as
    /// parts the caller never sent. A buffered part is checked as it is
    /// added, and if it holds the boundary (anywhere, not only at a line's
    /// start: cheaper to check, and as rare), a new boundary is drawn that
    /// no part holds; [`boundary`](Self::boundary) is therefore always the
    /// one the body will use. The heads cannot hold a delimiter: every
    /// line of them starts with `Content-`, and names, file names and
    /// content types carry no CR or LF.
    ///
    /// A streamed part cannot be checked: its bytes are read as the request
    /// is written, after the request's head and the delimiters before the
    /// part, which name the boundary, have left; by then it cannot change.
    /// Nor does it need to be, short of a caller who plants the boundary on
    /// purpose: 32 characters of 62 are about 190 random bits, so the chance
    /// that an upload of `n` bytes holds the boundary by accident is below
    /// `n / 2^190`.
    fn push(mut self, name: String, part: Part) -> Form {
        let collides = part
            .in_memory()
            .is_some_and(|bytes| contains(bytes, self.boundary.as_bytes()));
        self.parts.push((name, part));
        if collides {
            self.boundary = loop {
                let boundary = random_boundary();
                let held = self.parts.iter().any(|(_, part)| {
                    part.in_memory()
                        .is_some_and(|bytes| contains(bytes, boundary.as_bytes()))
                });
                if !held {
                    break boundary;
                }
            };
        }
        self
    }
}

impl Default for Form {
    /// [`Form::new`].
    fn default() -> Form {
        Form::new()
    }
}

impl fmt::Debug for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Form")
            .field("boundary", &self.boundary)
            .field("parts", &self.parts)
            .finish()
    }
}

impl Part {
    /// A text part (sent as UTF-8; with a file name its content type is
    /// `text/plain; charset=utf-8` unless set).
    pub fn text(value: impl Into<String>) -> Part {
        Part::new(Content::Text(Bytes::from(value.into())))
    }

    /// A part of bytes held in memory (with a file name its content type
    /// is `application/octet-stream` unless set).
    pub fn bytes(bytes: impl Into<Bytes>) -> Part {
        Part::new(Content::Bytes(bytes.into()))
    }

    /// A part read from `stream` as the request is written, such as a file
    /// too large to hold in memory. Its content type, with a file name, is
    /// `application/octet-stream` unless set.
    ///
    /// `length`, if given, is checked: a stream that yields more or fewer
    /// bytes fails the upload (see [`FormStream`]). It also lets
    /// [`Form::content_length`] know the body's length.
    ///
    /// A form with a streamed part is sent once, never retried after any of
    /// it has left (see [`RequestBuilder::body_stream`](crate::RequestBuilder::body_stream)).
    pub fn stream<S>(stream: S, length: Option<u64>) -> Part
    where
        S: futures_lite::Stream<Item = io::Result<Bytes>> + Send + 'static,
    {
        Part::new(Content::Stream {
            stream: Box::pin(stream),
            length,
        })
    }

    fn new(content: Content) -> Part {
        Part {
            content,
            file_name: None,
            content_type: None,
        }
    }

    /// Sets the file name, as a file upload carries it (`filename="..."`).
    pub fn file_name(mut self, file_name: impl Into<String>) -> Part {
        self.file_name = Some(file_name.into());
        self
    }

    /// Sets the part's `Content-Type`: a media type such as `image/png` or
    /// `text/plain; charset=utf-8`. A value that is not one (a bare word,
    /// spaces inside a name, a CR or LF, non-ASCII) does not panic here:
    /// sending the form fails with an [`ErrorKind::Request`] error, and
    /// [`Form::into_body`] with [`InvalidContentType`].
    pub fn content_type(mut self, content_type: &str) -> Part {
        self.content_type = Some(if is_media_type(content_type) {
            Ok(content_type.to_owned())
        } else {
            Err(content_type.to_owned())
        });
        self
    }

    /// The bytes of a part held in memory.
    fn in_memory(&self) -> Option<&Bytes> {
        match &self.content {
            Content::Text(bytes) | Content::Bytes(bytes) => Some(bytes),
            Content::Stream { .. } => None,
        }
    }

    /// The `Content-Type` line's value, if the part has one, or the
    /// invalid value given.
    fn wire_content_type(&self) -> Result<Option<&str>, &str> {
        match &self.content_type {
            Some(Ok(content_type)) => Ok(Some(content_type)),
            Some(Err(invalid)) => Err(invalid),
            // A field without a file name is text by default (RFC 7578
            // section 4.4), as browsers send it: no line.
            None if self.file_name.is_none() => Ok(None),
            None => Ok(Some(match self.content {
                Content::Text(_) => "text/plain; charset=utf-8",
                Content::Bytes(_) | Content::Stream { .. } => "application/octet-stream",
            })),
        }
    }
}

impl fmt::Debug for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Part");
        match &self.content {
            Content::Text(bytes) => debug.field("text_len", &bytes.len()),
            Content::Bytes(bytes) => debug.field("bytes_len", &bytes.len()),
            Content::Stream { length, .. } => debug.field("stream_len", length),
        };
        debug
            .field("file_name", &self.file_name)
            .field("content_type", &self.content_type)
            .finish()
    }
}

impl fmt::Debug for FormBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormBody::Buffered(bytes) => f.debug_tuple("Buffered").field(&bytes.len()).finish(),
            FormBody::Streamed(stream) => f.debug_tuple("Streamed").field(stream).finish(),
        }
    }
}

impl futures_lite::Stream for FormStream {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let Some(segment) = this.segments.front_mut() else {
                return Poll::Ready(None);
            };
            let Segment::Stream {
                field,
                stream,
                declared,
                sent,
            } = segment
            else {
                let Some(Segment::Bytes(bytes)) = this.segments.pop_front() else {
                    unreachable!("the front segment is bytes");
                };
                if bytes.is_empty() {
                    continue;
                }
                return Poll::Ready(Some(Ok(bytes)));
            };
            match ready!(stream.as_mut().poll_next(cx)) {
                Some(Ok(piece)) => {
                    *sent += piece.len() as u64;
                    if let Some(declared) = *declared {
                        if *sent > declared {
                            let error = wrong_length(field, declared, "more than");
                            this.segments.clear();
                            return Poll::Ready(Some(Err(error)));
                        }
                    }
                    if piece.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(piece)));
                }
                Some(Err(error)) => {
                    // The body is broken: nothing after it may be sent.
                    this.segments.clear();
                    return Poll::Ready(Some(Err(error)));
                }
                None => {
                    if let Some(declared) = *declared {
                        if *sent < declared {
                            let error = wrong_length(field, declared, "fewer than");
                            this.segments.clear();
                            return Poll::Ready(Some(Err(error)));
                        }
                    }
                    this.segments.pop_front();
                }
            }
        }
    }
}

impl fmt::Debug for FormStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FormStream")
            .field("segments_left", &self.segments.len())
            .finish()
    }
}

fn wrong_length(field: &str, declared: u64, how: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the stream of multipart field {field:?} gave {how} the {declared} bytes it declared"
        ),
    )
}

impl InvalidContentType {
    /// The name of the field the content type was given for.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The value given.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for InvalidContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the content type {:?} of multipart field {:?} is not a media type",
            self.value, self.field
        )
    }
}

impl std::error::Error for InvalidContentType {}

impl RequestBuilder {
    /// Sends `form` as a `multipart/form-data` body, with its
    /// `Content-Type` (which a later [`header`](Self::header) call may
    /// replace).
    ///
    /// A form whose parts are all in memory is buffered and retried like
    /// [`body`](Self::body); one with a streamed part is sent chunked and
    /// once, like [`body_stream`](Self::body_stream). A part whose content
    /// type is invalid fails [`send`](Self::send) with an
    /// [`ErrorKind::Request`] error whose source is the
    /// [`InvalidContentType`].
    pub fn multipart(self, form: Form) -> Self {
        let content_type = form.content_type();
        match form.into_body() {
            // `body` and `body_stream` clear any helper's content type, so
            // the header set after them is the one sent.
            Ok(FormBody::Buffered(bytes)) => self
                .body(bytes)
                .header(http::header::CONTENT_TYPE, content_type),
            Ok(FormBody::Streamed(stream)) => self
                .body_stream(stream)
                .header(http::header::CONTENT_TYPE, content_type),
            Err(invalid) => self.fail_with(
                Error::new(ErrorKind::Request)
                    .with_message("multipart form")
                    .with_source(invalid),
            ),
        }
    }
}

/// A fresh boundary. Its length never varies, so neither does a form's
/// length: the simulation's timings (which depend on bytes sent) stay a
/// function of its seed though the boundary comes from the thread's RNG.
fn random_boundary() -> String {
    let mut boundary = String::with_capacity(BOUNDARY_PREFIX.len() + BOUNDARY_RANDOM_CHARS);
    boundary.push_str(BOUNDARY_PREFIX);
    boundary.extend(std::iter::repeat_with(fastrand::alphanumeric).take(BOUNDARY_RANDOM_CHARS));
    boundary
}

/// A part's delimiter and head, up to and including the blank line.
fn write_head(
    out: &mut BytesMut,
    boundary: &str,
    name: &str,
    part: &Part,
    content_type: Option<&str>,
) {
    out.put_slice(b"--");
    out.put_slice(boundary.as_bytes());
    out.put_slice(b"\r\nContent-Disposition: form-data; name=\"");
    put_escaped(out, name);
    out.put_slice(b"\"");
    if let Some(file_name) = &part.file_name {
        out.put_slice(b"; filename=\"");
        put_escaped(out, file_name);
        out.put_slice(b"\"");
    }
    out.put_slice(b"\r\n");
    if let Some(content_type) = content_type {
        out.put_slice(b"Content-Type: ");
        out.put_slice(content_type.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

fn write_closing(out: &mut BytesMut, boundary: &str) {
    out.put_slice(b"--");
    out.put_slice(boundary.as_bytes());
    out.put_slice(b"--\r\n");
}

fn closing_len(boundary: &str) -> usize {
    boundary.len() + 6
}

/// `value` as a quoted name in a `Content-Disposition`, escaped as the
/// WHATWG HTML standard's multipart/form-data encoding does: `"` as `%22`,
/// CR as `%0D`, LF as `%0A`, every other character as its UTF-8. A `%`
/// is sent as it is, as browsers send it: a name that holds `%22` itself
/// reads back as `"`, an ambiguity the standard accepts for compatibility.
/// (RFC 7578's `filename*=` and RFC 2047 encodings are not used: servers
/// read what browsers send.) Working on bytes is safe: the three never occur
/// inside a multi-byte UTF-8 sequence.
fn put_escaped(out: &mut BytesMut, value: &str) {
    for &byte in value.as_bytes() {
        match byte {
            b'"' => out.put_slice(b"%22"),
            b'\r' => out.put_slice(b"%0D"),
            b'\n' => out.put_slice(b"%0A"),
            _ => out.put_u8(byte),
        }
    }
}

/// Whether `value` is a media type (RFC 9110 section 8.3.1):
/// `type "/" subtype *( OWS ";" OWS [ token "=" ( token / quoted-string ) ] )`,
/// in ASCII.
fn is_media_type(value: &str) -> bool {
    let bytes = value.as_bytes();
    let token =
        |at: usize| -> usize { at + bytes[at..].iter().take_while(|&&b| is_tchar(b)).count() };
    let ows = |at: usize| -> usize {
        at + bytes[at..]
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count()
    };
    let type_end = token(0);
    if type_end == 0 || bytes.get(type_end) != Some(&b'/') {
        return false;
    }
    let subtype_end = token(type_end + 1);
    if subtype_end == type_end + 1 {
        return false;
    }
    let mut at = subtype_end;
    loop {
        at = ows(at);
        if at == bytes.len() {
            return true;
        }
        if bytes[at] != b';' {
            return false;
        }
        at = ows(at + 1);
        if at == bytes.len() || bytes[at] == b';' {
            // An empty parameter is allowed.
            continue;
        }
        let name_end = token(at);
        if name_end == at || bytes.get(name_end) != Some(&b'=') {
            return false;
        }
        at = name_end + 1;
        if bytes.get(at) == Some(&b'"') {
            at += 1;
            loop {
                match bytes.get(at) {
                    Some(b'"') => break,
                    Some(b'\\') if bytes.get(at + 1).is_some_and(|&b| is_quoted_pair_char(b)) => {
                        at += 2
                    }
                    Some(&b) if is_qdtext(b) => at += 1,
                    _ => return false,
                }
            }
            at += 1;
        } else {
            let value_end = token(at);
            if value_end == at {
                return false;
            }
            at = value_end;
        }
    }
}

/// RFC 9110's `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110's `qdtext`, in ASCII.
fn is_qdtext(b: u8) -> bool {
    b == b'\t' || b == b' ' || b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b)
}

/// What may follow a `\` in a quoted string, in ASCII.
fn is_quoted_pair_char(b: u8) -> bool {
    b == b'\t' || (0x20..=0x7E).contains(&b)
}

/// Whether `needle` (not empty) occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((first, rest)) = needle.split_first() else {
        return true;
    };
    let mut from = 0;
    // Find each candidate's first byte with a tight scan, then compare.
    while let Some(offset) = haystack[from..].iter().position(|b| b == first) {
        let start = from + offset;
        if haystack[start + 1..].starts_with(rest) {
            return true;
        }
        from = start + 1;
    }
    false
}

#[cfg(test)]
mod tests;
