//! The response decoder against generated responses, split at random points,
//! and against a table of hostile responses.

use breakwater_core::h1::{
    DecodeError, DecoderConfig, EndOfResponse, RequestContext, ResponseDecoder, ResponseEvent,
    ReuseBlocker,
};
use bytes::BytesMut;
use proptest::prelude::*;

/// Everything a caller can observe of one response, with the body joined up
/// (the decoder may cut it into differently sized pieces depending on how the
/// bytes arrived; everything else must be identical).
#[derive(Debug, PartialEq)]
struct Decoded {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body_length: Option<u64>,
    body: Vec<u8>,
    end: EndOfResponse,
}

/// Feeds `wire` in pieces ending at `cuts`, then closes the stream if the
/// response has not ended by itself.
fn decode_in_pieces(
    wire: &[u8],
    cuts: &[usize],
    request: RequestContext,
    config: DecoderConfig,
) -> Result<Decoded, DecodeError> {
    let mut decoder = ResponseDecoder::with_config(config, request);
    let mut buf = BytesMut::new();
    let mut head = None;
    let mut body = Vec::new();
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(wire.len())).collect();
    bounds.push(wire.len());
    bounds.sort_unstable();
    let mut fed = 0;
    let mut closed = false;
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps < 1_000_000, "decoder did not make progress");
        match decoder.poll_event(&mut buf)? {
            Some(ResponseEvent::Head(h)) => {
                assert!(head.is_none(), "two heads");
                head = Some(h);
            }
            Some(ResponseEvent::Body(piece)) => {
                assert!(!piece.is_empty(), "empty body piece");
                body.extend_from_slice(&piece);
            }
            Some(ResponseEvent::End(end)) => {
                let head = head.expect("end before head");
                let mut headers: Vec<_> = head
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                    .collect();
                headers.sort();
                return Ok(Decoded {
                    status: head.status.as_u16(),
                    headers,
                    body_length: head.body_length,
                    body,
                    end,
                });
            }
            None => {
                assert!(!closed, "Ok(None) after end of stream");
                match bounds.iter().find(|&&b| b > fed) {
                    Some(&next) => {
                        buf.extend_from_slice(&wire[fed..next]);
                        fed = next;
                    }
                    None => {
                        decoder.handle_eof();
                        closed = true;
                    }
                }
            }
        }
    }
}

fn decode_whole(wire: &[u8], request: RequestContext) -> Result<Decoded, DecodeError> {
    decode_in_pieces(wire, &[], request, DecoderConfig::default())
}

// ---------------------------------------------------------------------------
// Generated responses
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Framing {
    Length,
    /// Chunk sizes (the body is cut at them), extensions on, trailers.
    Chunked {
        cuts: Vec<usize>,
        extensions: bool,
        trailers: Vec<(String, String)>,
    },
    UntilClose,
}

#[derive(Clone, Debug)]
struct Generated {
    interim: Vec<u16>,
    status: u16,
    http10: bool,
    close: bool,
    headers: Vec<(String, String)>,
    framing: Framing,
    body: Vec<u8>,
    head_request: bool,
}

impl Generated {
    fn has_body(&self) -> bool {
        !(self.head_request || self.status == 204 || self.status == 304)
    }

    fn wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for code in &self.interim {
            out.extend_from_slice(
                format!("HTTP/1.1 {code} Interim\r\nx-interim: 1\r\n\r\n").as_bytes(),
            );
        }
        let version = if self.http10 { "1.0" } else { "1.1" };
        out.extend_from_slice(format!("HTTP/{version} {} Whatever\r\n", self.status).as_bytes());
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if self.http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        match &self.framing {
            Framing::Length => {
                out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes())
            }
            Framing::Chunked { .. } => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            Framing::UntilClose => {}
        }
        out.extend_from_slice(b"\r\n");
        if !self.has_body() {
            return out;
        }
        match &self.framing {
            Framing::Length | Framing::UntilClose => out.extend_from_slice(&self.body),
            Framing::Chunked {
                cuts,
                extensions,
                trailers,
            } => {
                let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(self.body.len())).collect();
                bounds.push(self.body.len());
                bounds.sort_unstable();
                bounds.dedup();
                let mut start = 0;
                for end in bounds {
                    if end == start {
                        continue;
                    }
                    out.extend_from_slice(format!("{:X}", end - start).as_bytes());
                    if *extensions {
                        out.extend_from_slice(b" ;name=\"va;lue\";flag");
                    }
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(&self.body[start..end]);
                    out.extend_from_slice(b"\r\n");
                    start = end;
                }
                out.extend_from_slice(b"0\r\n");
                for (name, value) in trailers {
                    out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }

    fn expected_body(&self) -> &[u8] {
        if self.has_body() {
            &self.body
        } else {
            &[]
        }
    }

    fn expected_reusable(&self) -> bool {
        if self.close || (self.has_body() && matches!(self.framing, Framing::UntilClose)) {
            return false;
        }
        true
    }
}

fn header_name() -> impl Strategy<Value = String> {
    "x-[a-z0-9-]{1,12}"
}

fn header_value() -> impl Strategy<Value = String> {
    // Visible ASCII with inner spaces; parsers trim the ends, so no edge spaces.
    "[!-~]([ -~]{0,30}[!-~])?"
}

fn generated() -> impl Strategy<Value = Generated> {
    let framing = prop_oneof![
        Just(Framing::Length),
        (
            prop::collection::vec(0usize..3000, 0..8),
            any::<bool>(),
            prop::collection::vec((header_name(), header_value()), 0..3)
        )
            .prop_map(|(cuts, extensions, trailers)| Framing::Chunked {
                cuts,
                extensions,
                trailers
            }),
        Just(Framing::UntilClose),
    ];
    (
        prop::collection::vec(prop::sample::select(vec![100u16, 102, 103]), 0..3),
        prop::sample::select(vec![200u16, 201, 204, 206, 304, 404, 429, 500, 503]),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec((header_name(), header_value()), 0..12),
        framing,
        prop::collection::vec(any::<u8>(), 0..3000),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(interim, status, http10, close, headers, framing, body, head_request)| {
                // HTTP/1.0 has no chunked coding.
                let framing = match framing {
                    Framing::Chunked { .. } if http10 => Framing::Length,
                    other => other,
                };
                Generated {
                    interim,
                    status,
                    http10,
                    close,
                    headers,
                    framing,
                    body,
                    head_request,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pieces_of_any_size_decode_like_the_whole(
        response in generated(),
        cuts in prop::collection::vec(0usize..4000, 0..40),
    ) {
        let wire = response.wire();
        let request = RequestContext { head_request: response.head_request, expects_upgrade: false };
        let whole = decode_whole(&wire, request).expect("a well-formed response decodes");
        let pieces = decode_in_pieces(&wire, &cuts, request, DecoderConfig::default()).unwrap();
        prop_assert_eq!(&pieces, &whole);
        prop_assert_eq!(&whole.body[..], response.expected_body());
        prop_assert_eq!(whole.end.is_reusable(), response.expected_reusable());
        prop_assert_eq!(whole.status, response.status);
        if let Framing::Chunked { trailers, .. } = &response.framing {
            if response.has_body() && !trailers.is_empty() {
                let got = whole.end.trailers.as_ref().expect("trailers");
                for (name, value) in trailers {
                    prop_assert!(got.get_all(name.as_str()).iter().any(|v| v.as_bytes() == value.as_bytes()));
                }
            }
        }
        for (name, value) in &response.headers {
            prop_assert!(whole.headers.contains(&(name.clone(), value.as_bytes().to_vec())));
        }
    }

    #[test]
    fn one_byte_at_a_time_decodes_like_the_whole(response in generated()) {
        let wire = response.wire();
        let request = RequestContext { head_request: response.head_request, expects_upgrade: false };
        let cuts: Vec<usize> = (1..wire.len()).collect();
        let whole = decode_whole(&wire, request).unwrap();
        let bytewise = decode_in_pieces(&wire, &cuts, request, DecoderConfig::default()).unwrap();
        prop_assert_eq!(bytewise, whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_decode_the_same_in_pieces(
        wire in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(0usize..600, 0..10),
    ) {
        assert_same_outcome(&wire, &cuts)?;
    }

    #[test]
    fn damaged_responses_decode_the_same_in_pieces_and_errors_are_sticky(
        response in generated(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        cuts in prop::collection::vec(0usize..4000, 0..20),
    ) {
        let mut wire = response.wire();
        for (at, byte, how) in damage {
            let i = at.index(wire.len() + 1);
            match how {
                0 if i < wire.len() => wire[i] = byte,
                1 => wire.insert(i, byte),
                _ => wire.truncate(i),
            }
        }
        assert_same_outcome(&wire, &cuts)?;
        // Sticky errors: once refused, the decoder keeps refusing.
        let mut decoder = ResponseDecoder::new(RequestContext::default());
        let mut buf = BytesMut::from(&wire[..]);
        decoder.handle_eof();
        for _ in 0..100_000 {
            match decoder.poll_event(&mut buf) {
                Ok(Some(ResponseEvent::End(_))) => break,
                Ok(Some(_)) => continue,
                Ok(None) => prop_assert!(false, "Ok(None) after end of stream"),
                Err(first) => {
                    prop_assert_eq!(decoder.poll_event(&mut buf).unwrap_err(), first);
                    break;
                }
            }
        }
    }
}

/// Whole or in pieces, a response decodes to the same status and body, or
/// fails with the same error. (Bytes after a complete response can only be
/// noticed when they arrive with it, so reuse is not compared.)
fn assert_same_outcome(wire: &[u8], cuts: &[usize]) -> Result<(), TestCaseError> {
    let whole = decode_whole(wire, RequestContext::default());
    let pieces = decode_in_pieces(
        wire,
        cuts,
        RequestContext::default(),
        DecoderConfig::default(),
    );
    match (whole, pieces) {
        (Ok(a), Ok(b)) => {
            prop_assert_eq!(a.status, b.status);
            prop_assert_eq!(a.headers, b.headers);
            prop_assert_eq!(a.body, b.body);
        }
        (Err(a), Err(b)) => prop_assert_eq!(a, b),
        (a, b) => prop_assert!(false, "whole gave {:?}, pieces gave {:?}", a, b),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Hostile responses
// ---------------------------------------------------------------------------

/// What a hostile response must produce.
enum Expect {
    Error(DecodeError),
    /// Decoded, but the connection must not be reused, for this reason.
    NotReusable(ReuseBlocker, &'static [u8]),
}

#[test]
fn hostile_responses_get_typed_errors_and_never_reuse() {
    let big_head = format!(
        "HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let header_flood = format!("HTTP/1.1 200 OK\r\n{}\r\n", "x-h: 1\r\n".repeat(101));
    let interim_flood = format!(
        "{}HTTP/1.1 200 OK\r\n\r\n",
        "HTTP/1.1 103 Early Hints\r\n\r\n".repeat(17)
    );
    let long_ext = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\na\r\n0\r\n\r\n",
        "e".repeat(5000)
    );
    let big_trailers = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx-t: {}\r\n\r\n",
        "t".repeat(17 * 1024)
    );
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("conflicting Content-Length fields",
         b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(),
         Expect::Error(DecodeError::ConflictingContentLength)),
        ("conflicting Content-Length list",
         b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!".to_vec(),
         Expect::Error(DecodeError::ConflictingContentLength)),
        ("signed Content-Length",
         b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello".to_vec(),
         Expect::Error(DecodeError::InvalidContentLength)),
        ("negative Content-Length",
         b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n".to_vec(),
         Expect::Error(DecodeError::InvalidContentLength)),
        ("hex Content-Length",
         b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello".to_vec(),
         Expect::Error(DecodeError::InvalidContentLength)),
        ("empty Content-Length",
         b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n".to_vec(),
         Expect::Error(DecodeError::InvalidContentLength)),
        ("overflowing Content-Length",
         b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n".to_vec(),
         Expect::Error(DecodeError::InvalidContentLength)),
        ("space inside header name (smuggling classic)",
         b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello".to_vec(),
         Expect::Error(DecodeError::InvalidHead { reason: "invalid header name" })),
        ("obs-fold continuation line",
         b"HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\nContent-Length: 0\r\n\r\n".to_vec(),
         Expect::Error(DecodeError::InvalidHead { reason: "invalid header name" })),
        ("Content-Length with Transfer-Encoding",
         b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
         Expect::Error(DecodeError::ContentLengthWithTransferEncoding)),
        ("Transfer-Encoding in HTTP/1.0",
         b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n".to_vec(),
         Expect::NotReusable(ReuseBlocker::TransferEncodingInHttp10, b"hi")),
        ("chunked applied twice",
         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n".to_vec(),
         Expect::Error(DecodeError::UnsupportedTransferCoding)),
        ("chunked not last",
         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n".to_vec(),
         Expect::Error(DecodeError::UnsupportedTransferCoding)),
        ("obfuscated chunked",
         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n".to_vec(),
         Expect::Error(DecodeError::UnsupportedTransferCoding)),
        ("non-hex chunk size",
         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec(),
         Expect::Error(DecodeError::InvalidChunkSize)),
        ("signed chunk size",
         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n".to_vec(),
         Expect::Error(DecodeError::InvalidChunkSize)),
        ("overflowing chunk size",
         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n".to_vec(),
         Expect::Error(DecodeError::ChunkSizeOverflow)),
        ("bare LF after chunk size",
         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n".to_vec(),
         Expect::Error(DecodeError::InvalidChunkDelimiter)),
        ("chunk data longer than its size",
         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n".to_vec(),
         Expect::Error(DecodeError::InvalidChunkDelimiter)),
        // The chunk-size line follows RFC 9112's grammar and nothing else
        // (docs/spec/http1-framing.md): these are the shapes a lax parser lets by.
        ("spaces after the chunk size with no extension", chunked(b"25  \r\n"),
         Expect::Error(DecodeError::InvalidChunkExtension)),
        ("text after the chunk size with no semicolon", chunked(b"2 erfrferferf\r\nhi\r\n0\r\n\r\n"),
         Expect::Error(DecodeError::InvalidChunkExtension)),
        ("a semicolon with no extension name", chunked(b"2;\r\nhi\r\n0\r\n\r\n"),
         Expect::Error(DecodeError::InvalidChunkExtension)),
        ("an unbalanced quoted extension value",
         chunked(b"5;a=\"abc\";b=\"def; ghi\r\nhello\r\n0\r\n\r\n"),
         Expect::Error(DecodeError::InvalidChunkExtension)),
        ("whitespace after an extension value", chunked(b"2;a=b \r\nhi\r\n0\r\n\r\n"),
         Expect::Error(DecodeError::InvalidChunkExtension)),
        ("an equals sign with no value", chunked(b"2;a=\r\nhi\r\n0\r\n\r\n"),
         Expect::Error(DecodeError::InvalidChunkExtension)),
        ("an extension name that is not a token", chunked(b"2;a@b\r\nhi\r\n0\r\n\r\n"),
         Expect::Error(DecodeError::InvalidChunkExtension)),
        ("a control byte in a quoted extension value", chunked(b"2;a=\"\x01\"\r\nhi\r\n0\r\n\r\n"),
         Expect::Error(DecodeError::InvalidChunkExtension)),
        ("text straight after the hex digits", chunked(b"2x\r\nhi\r\n0\r\n\r\n"),
         Expect::Error(DecodeError::InvalidChunkSize)),
        ("bare LF after chunk-size whitespace", chunked(b"2 \nhi\r\n0\r\n\r\n"),
         Expect::Error(DecodeError::InvalidChunkDelimiter)),
        ("bare LF after a chunk extension", chunked(b"2;a=b\nhi\r\n0\r\n\r\n"),
         Expect::Error(DecodeError::InvalidChunkDelimiter)),
        ("bare LF after chunk data", chunked(b"2\r\nhi\n0\r\n\r\n"),
         Expect::Error(DecodeError::InvalidChunkDelimiter)),
        ("bare LF ending the last chunk", chunked(b"0\n\r\n"),
         Expect::Error(DecodeError::InvalidChunkDelimiter)),
        ("bare LF as the blank line after the last chunk", chunked(b"0\r\n\n"),
         Expect::Error(DecodeError::InvalidChunkDelimiter)),
        // The same shapes inside the trailer section.
        ("bare LF ending a trailer line", chunked(b"0\r\nx-t: 1\n\r\n"),
         Expect::Error(DecodeError::InvalidChunkDelimiter)),
        ("bare LF as the blank line after trailers", chunked(b"0\r\nx-t: 1\r\n\n"),
         Expect::Error(DecodeError::InvalidChunkDelimiter)),
        ("CR without LF in the trailers", chunked(b"0\r\nx-t: 1\rx-u: 2\r\n\r\n"),
         Expect::Error(DecodeError::InvalidChunkDelimiter)),
        ("a trailer line with no colon", chunked(b"0\r\nerfrferferf\r\n\r\n"),
         Expect::Error(DecodeError::InvalidTrailers)),
        ("spaces before a trailer's colon", chunked(b"0\r\nx-t  : 1\r\n\r\n"),
         Expect::Error(DecodeError::InvalidTrailers)),
        ("a trailer line that is a bare semicolon", chunked(b"0\r\n;\r\n\r\n"),
         Expect::Error(DecodeError::InvalidTrailers)),
        ("a trailer line with an unbalanced quote and no colon",
         chunked(b"0\r\na=\"abc\r\n\r\n"),
         Expect::Error(DecodeError::InvalidTrailers)),
        ("a trailer with an empty name", chunked(b"0\r\n: 1\r\n\r\n"),
         Expect::Error(DecodeError::InvalidTrailers)),
        ("a folded trailer line", chunked(b"0\r\nx-t: 1\r\n folded\r\n\r\n"),
         Expect::Error(DecodeError::InvalidTrailers)),
        ("a NUL in a trailer value", chunked(b"0\r\nx-t: a\x00b\r\n\r\n"),
         Expect::Error(DecodeError::InvalidTrailers)),
        ("0xFF in a trailer name", chunked(b"0\r\nx-\xfft: 1\r\n\r\n"),
         Expect::Error(DecodeError::InvalidTrailers)),
        ("chunk extension without bound", long_ext.into_bytes(),
         Expect::Error(DecodeError::ChunkLineTooLong { limit: 4096 })),
        ("trailer section without bound", big_trailers.into_bytes(),
         Expect::Error(DecodeError::TrailersTooLarge { limit: 16 * 1024 })),
        ("truncated Content-Length body",
         b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello".to_vec(),
         Expect::Error(DecodeError::TruncatedBody)),
        ("truncated chunked body (no last chunk)",
         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
         Expect::Error(DecodeError::TruncatedBody)),
        ("closed mid-head",
         b"HTTP/1.1 200 OK\r\nContent-Le".to_vec(),
         Expect::Error(DecodeError::IncompleteHead)),
        ("closed before any byte", Vec::new(), Expect::Error(DecodeError::ClosedBeforeResponse)),
        ("head larger than 64 KiB", big_head.into_bytes(),
         Expect::Error(DecodeError::HeadTooLarge { limit: 64 * 1024 })),
        ("header flood", header_flood.into_bytes(),
         Expect::Error(DecodeError::TooManyHeaders { limit: 100 })),
        ("endless interim responses", interim_flood.into_bytes(),
         Expect::Error(DecodeError::TooManyInterimResponses { limit: 16 })),
        ("101 without an upgrade request",
         b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec(),
         Expect::Error(DecodeError::UnexpectedSwitchingProtocols)),
        ("garbage status line",
         b"HTTP/1.1 2OO OK\r\n\r\n".to_vec(),
         Expect::Error(DecodeError::InvalidHead { reason: "invalid status" })),
        ("not HTTP at all",
         b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec(),
         Expect::Error(DecodeError::InvalidHead { reason: "invalid HTTP version" })),
        ("a second response smuggled after the first",
         b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
         Expect::NotReusable(ReuseBlocker::UnsolicitedBytes, b"hi")),
        ("a body on a 204",
         b"HTTP/1.1 204 No Content\r\n\r\nsurprise".to_vec(),
         Expect::NotReusable(ReuseBlocker::UnsolicitedBytes, b"")),
        ("no framing at all reads to close",
         b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec(),
         Expect::NotReusable(ReuseBlocker::ReadUntilClose, b"until close")),
        ("HTTP/1.0 without keep-alive",
         b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
         Expect::NotReusable(ReuseBlocker::Http10, b"ok")),
        ("Connection: close among other tokens",
         b"HTTP/1.1 200 OK\r\nConnection: upgrade, CLOSE\r\nContent-Length: 2\r\n\r\nok".to_vec(),
         Expect::NotReusable(ReuseBlocker::ConnectionClose, b"ok")),
    ];
    for (name, wire, expect) in cases {
        // Whole and byte by byte must agree on hostile input too.
        let cuts: Vec<usize> = (1..wire.len().min(300)).collect();
        for result in [
            decode_whole(&wire, RequestContext::default()),
            decode_in_pieces(
                &wire,
                &cuts,
                RequestContext::default(),
                DecoderConfig::default(),
            ),
        ] {
            match (&expect, result) {
                (Expect::Error(want), Err(got)) => assert_eq!(&got, want, "{name}"),
                (Expect::NotReusable(want, body), Ok(decoded)) => {
                    if *want == ReuseBlocker::UnsolicitedBytes && cuts.len() + 1 >= wire.len() {
                        // Fed byte by byte, the response ends before the extra
                        // bytes arrive; they are found when the idle connection
                        // is checked, not by this decoder.
                        assert_eq!(&decoded.body[..], *body, "{name}");
                        continue;
                    }
                    assert_eq!(decoded.end.reuse_blocker, Some(*want), "{name}");
                    assert_eq!(&decoded.body[..], *body, "{name}");
                }
                (_, other) => panic!("{name}: unexpected {other:?}"),
            }
        }
    }
}

/// A chunked response whose body section is `body`, as it is on the wire.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    wire.extend_from_slice(body);
    wire
}

#[test]
fn well_formed_chunk_extensions_still_decode() {
    let forms: [(&str, &[u8]); 10] = [
        ("a name alone", b"5;name\r\n"),
        ("a token value", b"5;name=value\r\n"),
        (
            "a quoted value",
            b"5;name=\"quoted value; with a semicolon\"\r\n",
        ),
        (
            "an escaped quote in a quoted value",
            b"5;name=\"a \\\"b\\\" c\"\r\n",
        ),
        ("an empty quoted value", b"5;name=\"\"\r\n"),
        ("spaces around ; and =", b"5 ; name = value\r\n"),
        ("tabs around ; and =", b"5\t;\tname\t=\t\"v\"\r\n"),
        ("several extensions", b"5;a=1;b=\"2\";c ;d = e\r\n"),
        ("space after a quoted value, then more", b"5;a=\"x\" ;b\r\n"),
        ("obs-text in a quoted value", b"5;a=\"caf\xc3\xa9\"\r\n"),
    ];
    for (form, size_line) in forms {
        let mut body = size_line.to_vec();
        body.extend_from_slice(b"hello\r\n2;last\r\n!!\r\n0;end=\"\"\r\n\r\n");
        let wire = chunked(&body);
        let cuts: Vec<usize> = (1..wire.len()).collect();
        for decoded in [
            decode_whole(&wire, RequestContext::default()),
            decode_in_pieces(
                &wire,
                &cuts,
                RequestContext::default(),
                DecoderConfig::default(),
            ),
        ] {
            let decoded = decoded.unwrap_or_else(|err| panic!("{form}: {err}"));
            assert_eq!(decoded.body, b"hello!!", "{form}");
            assert!(decoded.end.is_reusable(), "{form}");
        }
    }
}

#[test]
fn an_empty_trailer_section_passes_whatever_the_limit() {
    let wire = chunked(b"2\r\nhi\r\n0\r\n\r\n");
    let config = DecoderConfig::default().with_max_trailer_size(0);
    let cuts: Vec<usize> = (1..wire.len()).collect();
    let decoded = decode_in_pieces(&wire, &cuts, RequestContext::default(), config).unwrap();
    assert_eq!(decoded.body, b"hi");
}

#[test]
fn trailers_are_parsed_from_their_checked_lines() {
    let wire = chunked(b"2\r\nhi\r\n0\r\nx-checksum: abc \r\nx-empty:\r\nx-obs: caf\xe9\r\n\r\n");
    let cuts: Vec<usize> = (1..wire.len()).collect();
    let decoded = decode_in_pieces(
        &wire,
        &cuts,
        RequestContext::default(),
        DecoderConfig::default(),
    )
    .unwrap();
    assert!(decoded.end.is_reusable());
    let trailers = decoded.end.trailers.expect("trailers");
    assert_eq!(trailers.len(), 3);
    assert_eq!(trailers["x-checksum"], "abc");
    assert_eq!(trailers["x-empty"], "");
    assert_eq!(trailers["x-obs"].as_bytes(), b"caf\xe9");
}

/// A malformed framing line fails as soon as its first bad byte arrives: a
/// peer that sends one and then falls silent must not hold the call until a
/// timeout, and the connection is never polled for more.
#[test]
fn malformed_chunked_framing_fails_at_the_first_bad_byte() {
    let shapes: [(&[u8], DecodeError); 7] = [
        (b"25  \r", DecodeError::InvalidChunkExtension),
        (b"2 e", DecodeError::InvalidChunkExtension),
        (b"2;\r", DecodeError::InvalidChunkExtension),
        (
            b"5;a=\"abc\";b=\"def; ghi\r",
            DecodeError::InvalidChunkExtension,
        ),
        (b"0\r\nerfrferferf\r", DecodeError::InvalidTrailers),
        (b"0\r\nx-t: a\x00", DecodeError::InvalidTrailers),
        (b"0\r\nx-t: 1\n", DecodeError::InvalidChunkDelimiter),
    ];
    for (body, want) in shapes {
        let mut decoder = ResponseDecoder::new(RequestContext::default());
        let mut buf = BytesMut::from(&chunked(body)[..]);
        let mut result = Ok(None);
        for _ in 0..4 {
            result = decoder.poll_event(&mut buf);
            if !matches!(result, Ok(Some(_))) {
                break;
            }
        }
        assert_eq!(
            result.err(),
            Some(want.clone()),
            "{:?} must fail without more bytes",
            String::from_utf8_lossy(body)
        );
        assert_eq!(decoder.poll_event(&mut buf).err(), Some(want), "sticky");
    }
}

#[test]
fn interim_responses_are_skipped_and_101_is_delivered_when_asked_for() {
    let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let decoded = decode_whole(wire, RequestContext::default()).unwrap();
    assert_eq!(decoded.status, 200);
    assert!(
        decoded.headers.iter().all(|(n, _)| n != "link"),
        "interim headers leaked"
    );

    let wire = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n\x81\x05hello";
    let mut decoder = ResponseDecoder::new(RequestContext {
        head_request: false,
        expects_upgrade: true,
    });
    let mut buf = BytesMut::from(&wire[..]);
    let Some(ResponseEvent::Head(head)) = decoder.poll_event(&mut buf).unwrap() else {
        panic!()
    };
    assert_eq!(head.status, 101);
    let Some(ResponseEvent::End(end)) = decoder.poll_event(&mut buf).unwrap() else {
        panic!()
    };
    assert_eq!(end.reuse_blocker, Some(ReuseBlocker::Upgraded));
    assert_eq!(
        &buf[..],
        b"\x81\x05hello",
        "the upgraded stream's bytes are left for the caller"
    );
}

#[test]
fn head_responses_have_no_body_whatever_the_headers_say() {
    let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n";
    let decoded = decode_whole(
        wire,
        RequestContext {
            head_request: true,
            expects_upgrade: false,
        },
    )
    .unwrap();
    assert!(decoded.body.is_empty());
    assert_eq!(decoded.body_length, Some(0));
    assert!(decoded.end.is_reusable());
}

#[test]
fn body_pieces_are_slices_of_the_read_buffer_not_copies() {
    let mut buf = BytesMut::with_capacity(1024);
    buf.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello");
    let region = buf.as_ptr() as usize..buf.as_ptr() as usize + 1024;
    let mut decoder = ResponseDecoder::new(RequestContext::default());
    let Some(ResponseEvent::Head(head)) = decoder.poll_event(&mut buf).unwrap() else {
        panic!()
    };
    let value = head.headers.get("content-length").unwrap();
    assert!(
        region.contains(&(value.as_bytes().as_ptr() as usize)),
        "header value was copied"
    );
    let Some(ResponseEvent::Body(body)) = decoder.poll_event(&mut buf).unwrap() else {
        panic!()
    };
    assert!(
        region.contains(&(body.as_ptr() as usize)),
        "body was copied"
    );
}

#[test]
fn a_decoder_is_reset_for_the_next_response_on_the_connection() {
    let mut decoder = ResponseDecoder::new(RequestContext::default());
    let mut buf = BytesMut::new();
    for round in 0..3 {
        buf.extend_from_slice(
            format!("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n{round}").as_bytes(),
        );
        let mut ended = false;
        while let Some(event) = decoder.poll_event(&mut buf).unwrap() {
            if let ResponseEvent::End(end) = event {
                assert!(end.is_reusable());
                ended = true;
                break;
            }
        }
        assert!(ended);
        assert!(matches!(
            decoder.poll_event(&mut buf),
            Err(DecodeError::WrongState { state: "done" })
        ));
        decoder.reset(RequestContext::default());
    }
}
