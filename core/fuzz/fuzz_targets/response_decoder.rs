//! Feeds arbitrary bytes to the response decoder, cut at points the input
//! chooses, and checks the decoder's promises: no panic, progress on every
//! call, sticky errors, and the same outcome as decoding the bytes whole.

#![no_main]

use breakwater_core::h1::{DecodeError, RequestContext, ResponseDecoder, ResponseEvent};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
enum Outcome {
    Complete { status: u16, body: Vec<u8>, reusable: bool },
    Failed(DecodeError),
}

fn run(wire: &[u8], piece: usize, request: RequestContext) -> Outcome {
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
                return Outcome::Complete { status, body, reusable: end.is_reusable() }
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
                assert_eq!(decoder.poll_event(&mut buf).err(), Some(err.clone()), "errors are sticky");
                return Outcome::Failed(err);
            }
        }
    }
    panic!("decoder made no progress");
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, wire)) = data.split_first() else { return };
    let request = RequestContext { head_request: control & 1 == 1, expects_upgrade: control & 2 == 2 };
    let whole = run(wire, wire.len(), request);
    let piecewise = run(wire, usize::from(control >> 2) + 1, request);
    match (&whole, &piecewise) {
        // Bytes after a complete response are seen only if they arrive with it.
        (Outcome::Complete { status: a, body: x, .. }, Outcome::Complete { status: b, body: y, .. }) => {
            assert_eq!((a, x), (b, y))
        }
        _ => assert_eq!(whole, piecewise),
    }
});
