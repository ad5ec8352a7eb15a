//! Chunked bodies: the chunk-size line by RFC 9112's grammar, CRLF-only
//! framing, and trailers checked as they arrive.
//!
//! Part of [`ResponseDecoder`](super::ResponseDecoder): the decoder hands its
//! read buffer here while a chunked body is being read. The rules, and the
//! leniencies refused here, are in `docs/spec/http1-framing.md`.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::decode::{clamp_to_buf, hex_value, trim_ows, DecodeError, DecoderConfig};

#[derive(Debug)]
pub(super) enum Chunk {
    /// Reading the chunk-size line: the size so far, how many hex digits it
    /// had, how many bytes of the line count against the limit, and where in
    /// the line's grammar the next byte falls.
    Line {
        size: u64,
        digits: usize,
        line: usize,
        at: SizeLine,
    },
    /// CR of the size line seen; LF must follow.
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// The trailer section, kept in the buffer until its blank line arrives;
    /// `scanned` bytes of it have been checked, and `at` says where the next
    /// one falls.
    Trailers {
        scanned: usize,
        at: TrailerLine,
    },
}

impl Chunk {
    pub(super) const FIRST_LINE: Chunk = Chunk::Line {
        size: 0,
        digits: 0,
        line: 0,
        at: SizeLine::Digits,
    };
}

/// Where a byte of a chunk-size line falls in RFC 9112's grammar:
///
/// ```text
/// chunk-size [ *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ) ] CRLF
/// ```
///
/// Each state lists what may come next; anything else is refused at once
/// (`docs/spec/http1-framing.md` says why no leniency is kept here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SizeLine {
    /// In the hex digits of the size.
    Digits,
    /// Whitespace after the size or after a value: only more of it or `;`.
    SpaceBeforeSemicolon,
    /// After `;` (and whitespace): an extension name must start.
    NameStart,
    /// In an extension name: token bytes, `=`, `;`, whitespace or CR.
    Name,
    /// Whitespace after a name: only more of it, `=` or `;`.
    SpaceAfterName,
    /// After `=` (and whitespace): a token or a quoted string must start.
    ValueStart,
    /// In a token value: token bytes, `;`, whitespace or CR.
    TokenValue,
    /// Inside a quoted string.
    Quoted,
    /// After a backslash inside a quoted string.
    QuotedPair,
    /// Right after a closing quote: `;`, whitespace or CR.
    AfterQuoted,
}

/// Where a byte of the trailer section falls: `*( field-line CRLF ) CRLF`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TrailerLine {
    /// At the start of a line: a field name, or CR for the blank line.
    Start,
    /// In a field name: token bytes up to `:`.
    Name,
    /// In a field value, up to CR.
    Value,
    /// CR ending a field line seen; LF must follow.
    FieldLf,
    /// CR of the blank line seen; LF ends the section.
    EndLf,
}

pub(super) enum ChunkStep {
    Data(Bytes),
    NeedMore,
    End(Option<HeaderMap>),
}

pub(super) fn poll_chunked(
    chunk: &mut Chunk,
    buf: &mut BytesMut,
    config: &DecoderConfig,
) -> Result<ChunkStep, DecodeError> {
    loop {
        if let Chunk::Data { remaining } = chunk {
            if buf.is_empty() {
                return Ok(ChunkStep::NeedMore);
            }
            let take = clamp_to_buf(*remaining, buf);
            *remaining -= take as u64;
            if *remaining == 0 {
                *chunk = Chunk::DataCr;
            }
            return Ok(ChunkStep::Data(buf.split_to(take).freeze()));
        }
        if let Chunk::Trailers { scanned, at } = chunk {
            return poll_trailers(scanned, at, buf, config);
        }
        // The common shapes whole, when they are in the buffer: the CRLF
        // after a chunk's data, and a size line of digits alone. Anything
        // else, or a line cut short, goes byte by byte below, which gives the
        // same result.
        match chunk {
            Chunk::DataCr if buf.starts_with(b"\r\n") => {
                buf.advance(2);
                *chunk = Chunk::FIRST_LINE;
                continue;
            }
            Chunk::Line {
                digits: 0,
                at: SizeLine::Digits,
                ..
            } => {
                if let Some((size, used)) = plain_size_line(buf, config.max_chunk_line) {
                    buf.advance(used);
                    *chunk = match size {
                        0 => Chunk::Trailers {
                            scanned: 0,
                            at: TrailerLine::Start,
                        },
                        size => Chunk::Data { remaining: size },
                    };
                    continue;
                }
            }
            _ => {}
        }
        let Some(&byte) = buf.first() else {
            return Ok(ChunkStep::NeedMore);
        };
        buf.advance(1);
        *chunk = match *chunk {
            Chunk::Line {
                size,
                digits,
                line,
                at,
            } => {
                let line = chunk_line(line, config)?;
                size_line_byte(byte, size, digits, line, at)?
            }
            Chunk::SizeLf { size } => match (byte, size) {
                (b'\n', 0) => Chunk::Trailers {
                    scanned: 0,
                    at: TrailerLine::Start,
                },
                (b'\n', size) => Chunk::Data { remaining: size },
                _ => return Err(DecodeError::InvalidChunkDelimiter),
            },
            Chunk::DataCr if byte == b'\r' => Chunk::DataLf,
            Chunk::DataLf if byte == b'\n' => Chunk::FIRST_LINE,
            Chunk::DataCr | Chunk::DataLf => return Err(DecodeError::InvalidChunkDelimiter),
            Chunk::Data { .. } | Chunk::Trailers { .. } => {
                return Err(DecodeError::WrongState {
                    state: "chunk data",
                })
            }
        };
    }
}

/// One byte of a chunk-size line, checked against the grammar on [`SizeLine`].
///
/// Extensions are read only to be checked and skipped: we asked for none.
/// A LF is always an error here, since a well-formed line's CR moves on to
/// [`Chunk::SizeLf`] and a bare LF ends nothing.
fn size_line_byte(
    byte: u8,
    size: u64,
    digits: usize,
    line: usize,
    at: SizeLine,
) -> Result<Chunk, DecodeError> {
    use SizeLine::*;
    if at == Digits {
        if let Some(digit) = hex_value(byte) {
            if size > u64::MAX >> 4 {
                return Err(DecodeError::ChunkSizeOverflow);
            }
            return Ok(Chunk::Line {
                size: size << 4 | u64::from(digit),
                digits: digits + 1,
                line,
                at: Digits,
            });
        }
        if digits == 0 {
            return Err(DecodeError::InvalidChunkSize);
        }
    }
    let whitespace = matches!(byte, b' ' | b'\t');
    let next = match (at, byte) {
        (_, b'\n') => return Err(DecodeError::InvalidChunkDelimiter),
        (Digits | Name | TokenValue | AfterQuoted, b'\r') => {
            return Ok(Chunk::SizeLf { size });
        }
        (
            Digits | SpaceBeforeSemicolon | Name | SpaceAfterName | TokenValue | AfterQuoted,
            b';',
        ) => NameStart,
        (Digits | TokenValue | AfterQuoted | SpaceBeforeSemicolon, _) if whitespace => {
            SpaceBeforeSemicolon
        }
        (NameStart, _) if whitespace => NameStart,
        (NameStart | Name, _) if is_tchar(byte) => Name,
        (Name | SpaceAfterName, _) if whitespace => SpaceAfterName,
        (Name | SpaceAfterName, b'=') => ValueStart,
        (ValueStart, _) if whitespace => ValueStart,
        (ValueStart, b'"') => Quoted,
        (ValueStart | TokenValue, _) if is_tchar(byte) => TokenValue,
        (Quoted, b'"') => AfterQuoted,
        (Quoted, b'\\') => QuotedPair,
        (Quoted, b'\t' | b' ' | b'!' | b'#'..=b'[' | b']'..=b'~' | 0x80..=0xff) => Quoted,
        (QuotedPair, b'\t' | b' '..=b'~' | 0x80..=0xff) => Quoted,
        // The size was followed by something other than digits and nothing
        // the extension grammar allows.
        (Digits, _) => return Err(DecodeError::InvalidChunkSize),
        _ => return Err(DecodeError::InvalidChunkExtension),
    };
    Ok(Chunk::Line {
        size,
        digits,
        line,
        at: next,
    })
}

/// A chunk-size line of hex digits and CRLF at the start of `buf`: the size
/// and the line's length. `None` for anything else (extensions, a line not
/// all here yet, more digits than fit in 64 bits, a line over the limit),
/// which the byte-by-byte path then reads, or refuses, exactly.
fn plain_size_line(buf: &[u8], max_line: usize) -> Option<(u64, usize)> {
    let digits = buf
        .iter()
        .take(17)
        .take_while(|b| b.is_ascii_hexdigit())
        .count();
    // The byte-by-byte path counts the digits and the CR against the limit.
    if digits == 0 || digits > 16 || digits + 1 > max_line {
        return None;
    }
    if buf.get(digits..digits + 2)? != b"\r\n" {
        return None;
    }
    let size = buf[..digits].iter().fold(0u64, |size, &b| {
        size << 4 | u64::from(hex_value(b).unwrap_or(0))
    });
    Some((size, digits + 2))
}

fn chunk_line(line: usize, config: &DecoderConfig) -> Result<usize, DecodeError> {
    let line = line + 1;
    if line > config.max_chunk_line {
        return Err(DecodeError::ChunkLineTooLong {
            limit: config.max_chunk_line,
        });
    }
    Ok(line)
}

/// The trailer section after the last chunk: a blank line, or field lines
/// ending in one.
///
/// Each byte is checked as it arrives, so a malformed line fails at once
/// rather than when the peer gets round to the blank line (or never does);
/// the section stays in the buffer until it is complete and is then parsed
/// in one go. Every line ends in CRLF: a bare LF is a delimiter error, as
/// everywhere in chunked framing.
fn poll_trailers(
    scanned: &mut usize,
    at: &mut TrailerLine,
    buf: &mut BytesMut,
    config: &DecoderConfig,
) -> Result<ChunkStep, DecodeError> {
    use TrailerLine::*;
    let mut end = None;
    for &byte in &buf[*scanned..] {
        // The blank line of an empty section passes whatever the limit.
        let empty_section = matches!((*at, *scanned), (Start, 0) | (EndLf, 1));
        if *scanned >= config.max_trailer_size && !empty_section {
            return Err(DecodeError::TrailersTooLarge {
                limit: config.max_trailer_size,
            });
        }
        *scanned += 1;
        *at = match (*at, byte) {
            (_, b'\n') if !matches!(*at, FieldLf | EndLf) => {
                return Err(DecodeError::InvalidChunkDelimiter)
            }
            (Start, b'\r') => EndLf,
            (Start | Name, _) if is_tchar(byte) => Name,
            (Name, b':') => Value,
            (Value, b'\r') => FieldLf,
            (Value, b'\t' | b' '..=b'~' | 0x80..=0xff) => Value,
            (FieldLf, b'\n') => Start,
            (EndLf, b'\n') => {
                end = Some(*scanned);
                break;
            }
            (FieldLf | EndLf, _) => return Err(DecodeError::InvalidChunkDelimiter),
            // An empty or malformed name, a folded line, or a control byte.
            (Start | Name | Value, _) => return Err(DecodeError::InvalidTrailers),
        };
    }
    let Some(end) = end else {
        return Ok(ChunkStep::NeedMore);
    };
    let section = buf.split_to(end);
    // Every line was checked above: `name:value` lines, then the blank one.
    let mut trailers = HeaderMap::new();
    for field in section[..end - 2].split(|&b| b == b'\n') {
        let Some(field) = field.strip_suffix(b"\r") else {
            continue;
        };
        let colon = field
            .iter()
            .position(|&b| b == b':')
            .ok_or(DecodeError::InvalidTrailers)?;
        let name =
            HeaderName::from_bytes(&field[..colon]).map_err(|_| DecodeError::InvalidTrailers)?;
        let value = HeaderValue::from_bytes(trim_ows(&field[colon + 1..]))
            .map_err(|_| DecodeError::InvalidTrailers)?;
        trailers.append(name, value);
    }
    Ok(ChunkStep::End((!trailers.is_empty()).then_some(trailers)))
}

/// A `tchar` of RFC 9110's token: the bytes allowed in header and extension names.
fn is_tchar(byte: u8) -> bool {
    matches!(byte,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.'
        | b'^' | b'_' | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}
