// The response decoder's fuzz check, shared by the fuzz target
// (`fuzz_targets/response_decoder.rs`, under cargo-fuzz on nightly) and by
// `tests/fuzz_corpus.rs`, which replays the checked-in corpus on stable in
// every `cargo test`. Included with `include!`, so it names its imports.

use breakwater_core::h1::{DecodeError, RequestContext, ResponseDecoder, ResponseEvent};
use bytes::BytesMut;

/// What decoding one input came to.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// A whole response.
    Complete {
        /// Its status code.
        status: u16,
        /// Its body, joined up.
        body: Vec<u8>,
        /// Whether the connection could carry another request.
        reusable: bool,
    },
    /// A typed error.
    Failed(DecodeError),
}

/// Decodes `wire` fed in pieces of `piece` bytes, then closes the stream.
///
/// Panics if the decoder breaks a promise: an empty body piece, an event
/// after the end of the stream, an error that is not sticky, or no progress.
pub fn run(wire: &[u8], piece: usize, request: RequestContext) -> Outcome {
    let mut decoder = ResponseDecoder::new(request);
    let mut buf = BytesMut::new();
    let mut pieces = wire.chunks(piece.max(1));
    let mut status = 0;
    let mut body = Vec::new();
    let mut closed = false;
    for _ in 0..(wire.len() * 4 + 64) {
        match decoder.poll_event(&mut buf) {
            Ok(Some(ResponseEvent::Head(head))) => status = head.status.as_u16(),
            Ok(Some(ResponseEvent::Body(bytes))) => {
                assert!(!bytes.is_empty());
                body.extend_from_slice(&bytes);
            }
            Ok(Some(ResponseEvent::End(end))) => {
                return Outcome::Complete {
                    status,
                    body,
                    reusable: end.is_reusable(),
                }
            }
            Ok(None) => {
                assert!(!closed, "no event after end of stream");
                match pieces.next() {
                    Some(p) => buf.extend_from_slice(p),
                    None => {
                        decoder.handle_eof();
                        closed = true;
                    }
                }
            }
            Err(err) => {
                assert_eq!(
                    decoder.poll_event(&mut buf).err(),
                    Some(err.clone()),
                    "errors are sticky"
                );
                return Outcome::Failed(err);
            }
        }
    }
    panic!("decoder made no progress");
}

/// The whole check for one fuzz input: its first byte chooses the request
/// (bit 0: HEAD, bit 1: upgrade expected) and the piece size (the rest, plus
/// one); the other bytes are the wire. Decoded whole and in pieces, both
/// must agree. Returns the whole decoding's outcome.
pub fn check(data: &[u8]) -> Option<Outcome> {
    let (&control, wire) = data.split_first()?;
    let request = RequestContext {
        head_request: control & 1 == 1,
        expects_upgrade: control & 2 == 2,
    };
    let whole = run(wire, wire.len(), request);
    let piecewise = run(wire, usize::from(control >> 2) + 1, request);
    match (&whole, &piecewise) {
        // Bytes after a complete response are seen only if they arrive with it.
        (
            Outcome::Complete { status: a, body: x, .. },
            Outcome::Complete { status: b, body: y, .. },
        ) => assert_eq!((a, x), (b, y)),
        _ => assert_eq!(whole, piecewise),
    }
    Some(whole)
}
